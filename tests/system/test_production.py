"""Production topology on one machine: `prefect deployment run story/generate` through
a Prefect server, pools with their workers and limits, children on their own pools."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from storyloom.models import parse_story
from storyloom.store.repository import StoryStore
from tests.fakes.stack import peak_in_flight, peak_overlap
from tests.system.cluster import POOLS, Cluster, cluster, flow_run_id

SAMPLE = Path(__file__).parents[2] / "storyloom" / "samples" / "life-story.json"
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
pytestmark = pytest.mark.timeout(900)


# Small per-API limits, so that six stories at once press against them; rates high
# enough not to slow the test down.
API_LIMITS = {"gemini_text": 2, "gemini_image": 1, "sarvam": 2, "cloudinary": 2}
LIMITS_ENV = {
    **{f"STORYLOOM_{api.upper()}_IN_FLIGHT": str(n) for api, n in API_LIMITS.items()},
    **{f"STORYLOOM_{api.upper()}_PER_SECOND": "50" for api in API_LIMITS},
}


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("cluster"), LIMITS_ENV) as running:
        first = running.run("storyloom", "setup")
        assert first.returncode == 0, first.stdout + first.stderr
        for pool in POOLS:
            running.start_worker(pool)
        yield running


def add_story(production: Cluster, story_id: str) -> None:
    # A title of its own: paid work is cached by its inputs, and the same story twice
    # would cost (and call) nothing the second time.
    raw = (
        SAMPLE.read_text()
        .replace('"asha-verma"', f'"{story_id}"')
        .replace("The Mango Tree at Number Nine", f"The Mango Tree ({story_id})")
    )
    with StoryStore.open(production.story_db) as store:
        store.add_story(parse_story(raw), replace=True)


def read_runs(production: Cluster, **filters: Any) -> list[FlowRun]:
    async def read() -> list[FlowRun]:
        async with get_client() as client:
            return await client.read_flow_runs(**filters)

    with temporary_settings(updates={PREFECT_API_URL: production.api_url}):
        return asyncio.run(read())


def wait_final(production: Cluster, ids: list[UUID], timeout: float = 600) -> list[FlowRun]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = read_runs(production, flow_run_filter=FlowRunFilter(id={"any_": ids}))
        if len(runs) == len(ids) and all(r.state_type in FINAL for r in runs):
            return runs
        time.sleep(2)
    raise AssertionError(f"runs not finished in {timeout} s; see {production.logs}")


def children_of(production: Cluster, parent: UUID) -> list[FlowRun]:
    return read_runs(
        production,
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
        ),
    )


def max_overlap(runs: list[FlowRun]) -> int:
    """The most runs of the list that were running at the same moment."""
    spans = [(r.start_time, r.end_time) for r in runs]
    assert all(start and end for start, end in spans), "a run without start or end time"
    return peak_overlap(spans)


def test_setup_twice_changes_nothing(production: Cluster) -> None:
    again = production.run("storyloom", "setup")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created" not in again.stdout
    assert "updated" not in again.stdout
    assert "unchanged" in again.stdout


def test_deployment_run_from_the_prefect_cli(production: Cluster) -> None:
    add_story(production, "cli-run")
    started = production.run(
        "prefect", "deployment", "run", "story/generate",
        "-p", "story_id=cli-run", "-p", "pages=4", "-p", "image_count=2",
        "-p", 'narration_languages=["hi-IN"]',
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    parent_id = flow_run_id(started.stdout)

    [parent] = wait_final(production, [parent_id])
    assert parent.state_type == StateType.COMPLETED, parent.state
    assert parent.work_pool_name == "story"

    children = children_of(production, parent_id)
    assert sorted((c.work_pool_name or "") for c in children) == ["audio", "images"]
    assert all(c.state_type == StateType.COMPLETED for c in children)

    with StoryStore.open(production.story_db) as store:
        book = store.book("cli-run")
    assert book is not None
    assert book.status == "complete"
    assert len(book.pages) == 4
    assert len(book.illustrations) == 2
    assert book.chapters["hi-IN"]


def test_six_stories_at_once_stay_within_every_limit(production: Cluster) -> None:
    for fake in (production.fakes.gemini, production.fakes.sarvam, production.fakes.cloudinary):
        fake.reset()
        fake.latency = 0.05
    ids = []
    for n in range(6):
        story_id = f"busy-{n}"
        add_story(production, story_id)
        started = production.run(
            "prefect", "deployment", "run", "story/generate",
            "-p", f"story_id={story_id}", "-p", "pages=4", "-p", "image_count=2",
            "-p", 'narration_languages=["hi-IN"]',
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        ids.append(flow_run_id(started.stdout))

    parents = wait_final(production, ids)
    assert all(p.state_type == StateType.COMPLETED for p in parents), [p.state for p in parents]
    children = [c for p in parents for c in children_of(production, p.id)]
    assert len(children) == 12

    # Runs in progress per pool never went over the pool's limit.
    runs = parents + children
    for pool, limit in POOLS.items():
        in_pool = [r for r in runs if r.work_pool_name == pool]
        assert in_pool, pool
        assert max_overlap(in_pool) <= limit, pool
    assert max_overlap([r for r in runs if r.work_pool_name == "images"]) == 1

    # Calls in flight per external API never went over its limit.
    image_calls = [c for c in production.fakes.gemini.calls if "image" in c.path]
    text_calls = [c for c in production.fakes.gemini.calls if "image" not in c.path]
    assert len(image_calls) == 12
    assert peak_in_flight(text_calls) <= API_LIMITS["gemini_text"]
    assert peak_in_flight(image_calls) <= API_LIMITS["gemini_image"]
    assert peak_in_flight(production.fakes.sarvam.calls) <= API_LIMITS["sarvam"]
    assert peak_in_flight(production.fakes.cloudinary.calls) <= API_LIMITS["cloudinary"]
    # ...and the limits were pressed against, or the check above proves nothing.
    assert peak_in_flight(text_calls) == API_LIMITS["gemini_text"]

    with StoryStore.open(production.story_db) as store:
        for n in range(6):
            book = store.book(f"busy-{n}")
            assert book is not None
            assert len(book.pages) == 4


def test_cancelling_the_parent_cancels_its_children(production: Cluster) -> None:
    add_story(production, "cancel-me")
    production.fakes.gemini.reset()
    production.fakes.gemini.latency = 4.0  # every call slow: the children are mid-flight
    try:
        started = production.run(
            "prefect", "deployment", "run", "story/generate",
            "-p", "story_id=cancel-me", "-p", "pages=4", "-p", "image_count=4",
            "-p", "narration_languages=[]",
        )  # fmt: skip
        parent_id = flow_run_id(started.stdout)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            children = children_of(production, parent_id)
            if any(c.state_type == StateType.RUNNING for c in children):
                break
            time.sleep(1)
        else:
            raise AssertionError("the illustrations child never started")

        cancelled = production.run("prefect", "flow-run", "cancel", str(parent_id))
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr

        [parent] = wait_final(production, [parent_id], timeout=180)
        [child] = wait_final(production, [c.id for c in children], timeout=180)
    finally:
        production.fakes.gemini.latency = 0.0
    assert parent.state_type == StateType.CANCELLED
    assert child.state_type == StateType.CANCELLED
    with StoryStore.open(production.story_db) as store:
        assert store.book("cancel-me") is None

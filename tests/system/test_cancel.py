"""Cancelling a story during narration, on the production topology (a Prefect server on
PostgreSQL, `storyloom setup`, a worker per pool, the real clients against the fakes):
no paid call starts once the cancel is seen, every run ends Cancelled, the generation
says cancelled, and the book published before is untouched."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from storyloom.store.records import StoryBook
from storyloom.store.repository import StoryStore
from tests.fakes.server import Call, Fault
from tests.system.cluster import (
    Cluster,
    add_story,
    flow_run_id,
    working_cluster,
)

STORY = "cancel-during-narration"
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
# A call that passed its check (one API read, right before the call) just before the
# cancel was set may still start: the time from the check to the request reaching the
# fake is milliseconds, plus however long a loaded two-core machine delays the thread.
# Nothing else may start: the check reads the run's (and its parent's) state.
GRACE_SECONDS = 2.0
SPEECH_LATENCY = 2.0  # narration takes a while: the cancel lands while it speaks
IMAGE_DELAY = 12.0  # the images child is still drawing when the cancel lands


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with working_cluster(tmp_path_factory.mktemp("cancel")) as running:
        yield running


def runs(production: Cluster, flow_run_filter: FlowRunFilter) -> list[FlowRun]:
    with (
        temporary_settings(updates={PREFECT_API_URL: production.api_url}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_runs(flow_run_filter=flow_run_filter)


def children_of(production: Cluster, parent: UUID) -> list[FlowRun]:
    return runs(
        production,
        FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])),
    )


def wait_final(production: Cluster, ids: list[UUID], timeout: float) -> dict[UUID, float]:
    """When (time.monotonic) each run was first seen in a final state."""
    seen: dict[UUID, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(ids):
        if time.monotonic() > deadline:
            raise AssertionError(f"runs not final in {timeout} s; see {production.logs}")
        for run in runs(production, FlowRunFilter(id={"any_": ids})):
            if run.state_type in FINAL:
                seen.setdefault(run.id, time.monotonic())
        time.sleep(0.5)
    return seen


def timeline(production: Cluster, parent: UUID, final: list[FlowRun]) -> dict[str, str]:
    """For the report: seconds from the parent's Cancelling to each run's Cancelling and
    Cancelled, by the server's clock."""
    with (
        temporary_settings(updates={PREFECT_API_URL: production.api_url}),
        get_client(sync_client=True) as client,
    ):
        history = {r.id: client.read_flow_run_states(r.id) for r in final}
    start = next(s.timestamp for s in history[parent] if s.type == StateType.CANCELLING)
    said = {}
    for run in final:
        when = {s.type: (s.timestamp - start).total_seconds() for s in history[run.id]}
        kind = "parent" if run.id == parent else str(run.work_pool_name)
        said[kind] = (
            f"Cancelling {when.get(StateType.CANCELLING, float('nan')):.1f}, "
            f"Cancelled {when.get(StateType.CANCELLED, float('nan')):.1f}"
        )
    return said


def generate(production: Cluster, *params: str) -> UUID:
    started = production.run(
        "prefect", "deployment", "run", "story/generate", "-p", f"story_id={STORY}",
        *(arg for param in params for arg in ("-p", param)),
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    return flow_run_id(started.stdout)


def paid_calls(production: Cluster) -> list[Call]:
    """Every call that costs: Gemini and Sarvam calls, Cloudinary uploads (deleting a
    cancelled generation's uploads is cleanup, not spending)."""
    fakes = production.fakes
    uploads = [c for c in fakes.cloudinary.calls if c.path.endswith("/upload")]
    return [*fakes.gemini.calls, *fakes.sarvam.calls, *uploads]


def media_of(production: Cluster, book: StoryBook) -> dict[str, tuple[int, str]]:
    """Each stored file of the book (pictures, chapters, the book's files): its version
    and the hash of its bytes."""
    wanted = (
        {i.public_id for i in book.illustrations}
        | {c.public_id for chapters in book.chapters.values() for c in chapters}
        | {e.public_id for e in book.exports}
    )
    return {
        public_id: (asset.version, hashlib.sha256(asset.data).hexdigest())
        for (_, public_id), asset in list(production.fakes.cloudinary.assets.items())
        if public_id in wanted
    }


@pytest.mark.timeout(900)
def test_cancel_during_narration_stops_every_paid_call(production: Cluster) -> None:
    add_story(production, STORY)

    # A published book first.
    first = generate(production, "pages=4", "image_count=1", 'narration_languages=["hi-IN"]')
    wait_final(production, [first], timeout=300)
    with StoryStore.open(production.story_db) as store:
        published = store.book(STORY)
    assert published is not None
    assert published.status == "complete"
    published_media = media_of(production, published)
    assert len(published_media) == len(published.illustrations) + len(
        published.chapters["hi-IN"]
    ) + len(published.exports)
    assert {e.format for e in published.exports} == {"html", "epub", "pdf"}

    # A regeneration with another config (so nothing comes from the cache), slow where
    # it matters.
    fakes = production.fakes
    fakes.sarvam.latency = SPEECH_LATENCY
    fakes.gemini.schedule(
        *[Fault(status=None, delay=IMAGE_DELAY, path_contains="-image:") for _ in range(4)]
    )
    spoken_before = len(fakes.sarvam.calls_to("text-to-speech"))
    parent = generate(
        production, "pages=6", "tone=nostalgic", "image_count=4", 'narration_languages=["hi-IN"]'
    )

    # Wait until narration speaks: a chapter spoken, more in flight, both children running.
    deadline = time.monotonic() + 400
    while True:
        assert time.monotonic() < deadline, f"narration never started; see {production.logs}"
        spoke = len(fakes.sarvam.calls_to("text-to-speech")) > spoken_before
        if spoke and fakes.sarvam.in_flight > 0:
            children = children_of(production, parent)
            assert len(children) == 2, children
            assert all(c.state_type == StateType.RUNNING for c in children), [
                (c.name, c.state_name) for c in children
            ]
            break
        time.sleep(0.05)

    # Cancel the parent as `prefect flow-run cancel` does.
    cancelled_at = time.monotonic()
    with (
        temporary_settings(updates={PREFECT_API_URL: production.api_url}),
        get_client(sync_client=True) as client,
    ):
        client.set_flow_run_state(parent, Cancelling(message="cancelled by the test"))

    ended = wait_final(production, [parent, *(c.id for c in children)], timeout=180)
    final = runs(production, FlowRunFilter(id={"any_": list(ended)}))
    # Calls in flight at the cancel end on their own; wait for them to be logged.
    while any(fake.in_flight for fake in fakes.all):
        assert time.monotonic() < cancelled_at + 120, "a fake call never ended"
        time.sleep(0.2)
    fakes.sarvam.latency = 0.0

    after = sorted(
        (round(c.started - cancelled_at, 2), c.path)
        for c in paid_calls(production)
        if c.started > cancelled_at
    )
    print(f"paid calls started after the cancel (s, path): {after}")
    assert [(when, path) for when, path in after if when > GRACE_SECONDS] == []
    print(f"seconds from the cancel: {timeline(production, parent, final)}")
    assert {r.name: r.state_type for r in final} == {r.name: StateType.CANCELLED for r in final}

    with StoryStore.open(production.story_db) as store:
        assert store.book(STORY) == published
        latest = store.latest_generation(STORY)
    assert media_of(production, published) == published_media
    assert latest is not None
    assert latest.status == "cancelled"
    # What the cancelled run stored is deleted again: the story's files are the book's.
    stored = {pid for _, pid in fakes.cloudinary.assets if pid.startswith(f"stories/{STORY}/")}
    assert stored == set(published_media)

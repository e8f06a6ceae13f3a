"""Workers stopped with SIGTERM while a story's children run, on the production topology
(a Prefect server on PostgreSQL, `storyloom setup`, a worker per pool, the real clients
against the fakes): the story's worker hands the parent back, later the audio worker
hands narration back, replacement workers take both up, and the book completes as if
nothing happened: the same flow run, one run of each child, the generation the first
attempt started, and the paid calls of a clean run of the same book, no more."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from storyloom.store.repository import StoryStore
from tests.fakes.cloudinary import parse_multipart
from tests.fakes.server import Call, Fault
from tests.fakes.stack import Fakes
from tests.system.cluster import (
    POOLS,
    Cluster,
    add_story,
    flow_run_id,
    working_cluster,
)

pytestmark = pytest.mark.timeout(600)

# Two stories with the same material and config: one run clean, one run through the
# hand-backs. Titles of their own (and of one length), so neither reuses the other's
# cached calls.
CLEAN, STORY = "handback-clean", "handback-twice"
# Eight pages: the sample's material fits its budget, so the model's own words (which
# differ with the title) fill each section, and the two books share no page.
PARAMS = ("pages=8", "image_count=2", 'narration_languages=["hi-IN"]')
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
# Every Sarvam call takes a while, so narration is still speaking after the story's
# worker has handed its run back; each image longer still.
SPEECH_LATENCY = 5.0
IMAGE_DELAY = 15.0
# High rates (the defaults pace Sarvam at 0.5 calls/s): the latencies set the pace here.
RATES_ENV = {
    f"STORYLOOM_{api}_PER_SECOND": "50"
    for api in ("GEMINI_TEXT", "GEMINI_IMAGE", "SARVAM", "CLOUDINARY")
}
# A call whose answer reached the flow run's process this little before the process was
# told to stop may not be recorded as done yet (result persisted, task Completed).
SETTLE_SECONDS = 0.5


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with working_cluster(tmp_path_factory.mktemp("handback"), RATES_ENV) as running:
        yield running



def generate(production: Cluster, story_id: str) -> UUID:
    started = production.run(
        "prefect", "deployment", "run", "story/generate", "-p", f"story_id={story_id}",
        *(arg for param in PARAMS for arg in ("-p", param)),
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    return flow_run_id(started.stdout)


def read_runs(production: Cluster, flow_run_filter: FlowRunFilter) -> list[FlowRun]:
    with (
        temporary_settings(updates={PREFECT_API_URL: production.api_url}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_runs(flow_run_filter=flow_run_filter)


def read_run(production: Cluster, run_id: UUID) -> FlowRun:
    (run,) = read_runs(production, FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return run


def states_of(production: Cluster, run_id: UUID) -> list[State]:
    with (
        temporary_settings(updates={PREFECT_API_URL: production.api_url}),
        get_client(sync_client=True) as client,
    ):
        return sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)


def children_of(production: Cluster, parent: UUID) -> dict[str, FlowRun]:
    """The parent's child runs by work pool; more than one on a pool fails the test."""
    runs = read_runs(
        production,
        FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])),
    )
    pools = [str(r.work_pool_name) for r in runs]
    assert len(set(pools)) == len(pools), [(r.name, r.work_pool_name, r.state_name) for r in runs]
    return {str(r.work_pool_name): r for r in runs}


def wait_until(what: str, check: Callable[[], bool], timeout: float, production: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; see {production.logs}")
        time.sleep(0.3)


@dataclass(frozen=True)
class HandBack:
    signalled: float  # time.monotonic() of the second SIGTERM
    exited: float  # when the worker was seen gone: its run's process had ended before


def hand_back(production: Cluster, pool: str) -> HandBack:
    """SIGTERM the pool's worker twice (the second ends its grace period at once: it
    hands its runs back instead of waiting up to 300 s for them), wait for it to exit
    cleanly, and start the worker that takes over."""
    worker = production.workers[pool]
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the first signal is handled before the second
    worker.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    try:
        code = worker.wait(timeout=90)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError(f"the {pool} worker did not stop; see {production.logs}") from None
    exited = time.monotonic()
    assert code == 0, f"the {pool} worker exited {code}: a run was not handed back"
    production.start_worker(pool)
    return HandBack(signalled, exited)


def kind_of(call: Call) -> str | None:
    """The paid call's kind, or None for a call that costs nothing (a delete, a probe)."""
    if ":generateContent" in call.path:
        return "image" if "-image:" in call.path else "text"
    if call.path.endswith("/text-to-speech"):
        return "speech"
    if call.path.endswith("/translate"):
        return "translation"
    if call.path.endswith("/upload"):
        return "upload"
    return None


def identity(call: Call) -> str:
    """What makes two paid calls the same purchase: the request, or the uploaded id."""
    if call.path.endswith("/upload"):
        params, _, _ = parse_multipart(call.body, call.headers["content-type"])
        return f"{call.path.split('/')[-2]}:{params['public_id']}"
    return f"{call.path}\n{call.body.decode()}"


def paid(fakes: Fakes) -> list[Call]:
    """Every successful paid call, oldest first."""
    calls = [*fakes.gemini.calls, *fakes.sarvam.calls, *fakes.cloudinary.calls]
    return sorted((c for c in calls if c.status == 200 and kind_of(c)), key=lambda c: c.started)


def count(calls: list[Call]) -> Counter[str]:
    return Counter(str(kind_of(c)) for c in calls)


def made_again(calls: list[Call], stop: HandBack | None) -> tuple[list[str], list[Call]]:
    """Purchases made more than once: those that cannot be excused, and the repeats that
    can. A repeat is excused when the first call was in flight while the paying flow
    run's process was being stopped (from the second SIGTERM, less SETTLE_SECONDS, until
    its worker exited: the answer may have died with the process), it was made once
    more, and that after the signal. Anything else a clean run would not have paid for."""
    by_identity: dict[str, list[Call]] = {}
    for call in calls:
        by_identity.setdefault(identity(call), []).append(call)
    unexcused: list[str] = []
    excused: list[Call] = []
    for name, made in by_identity.items():
        if len(made) == 1:
            continue
        first, *again = made
        lost = (
            stop is not None
            and first.started < stop.exited
            and first.ended > stop.signalled - SETTLE_SECONDS
            and again[0].started > stop.signalled
        )
        if lost and len(again) == 1:
            excused.extend(again)
        else:
            unexcused.append(f"{kind_of(first)} x{len(made)}: {name[:120]}")
    return unexcused, excused


def in_flight(calls: list[Call], stop: HandBack) -> set[str]:
    """The kinds of the calls that were in flight at the (second) signal."""
    return {str(kind_of(c)) for c in calls if c.started < stop.signalled < c.ended}


def handed_back(state: State[Any]) -> bool:
    """Put back in its pool by Prefect's own supervisor (`prefect flow-run execute` with
    PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule): AwaitingRetry, without the
    message the worker's own fallback signs its hand-backs with."""
    return state.name == "AwaitingRetry" and "Handed back by worker" not in (state.message or "")


def test_sigterm_hand_backs_while_the_children_run_pay_nothing_twice(
    production: Cluster,
) -> None:
    fakes = production.fakes
    began = time.monotonic()
    seconds: dict[str, float] = {}  # when each step was done, for the record

    def mark(step: str) -> None:
        seconds[step] = round(time.monotonic() - began, 1)

    add_story(production, CLEAN)
    add_story(production, STORY)

    # A clean run of the same book: what it costs.
    for fake in fakes.all:
        fake.reset()
    clean_id = generate(production, CLEAN)
    wait_until(
        "the clean run to end",
        lambda: read_run(production, clean_id).state_type in FINAL,
        240,
        production,
    )
    assert read_run(production, clean_id).state_type == StateType.COMPLETED
    mark("clean run completed")
    clean_calls = paid(fakes)
    clean = count(clean_calls)
    assert made_again(clean_calls, None)[0] == [], "a clean run pays for each call once"
    assert set(clean) == {"text", "image", "speech", "translation", "upload"}, clean

    # The same book again, slow where it matters, with two hand-backs on the way.
    for fake in fakes.all:
        fake.reset()
    fakes.sarvam.latency = SPEECH_LATENCY
    fakes.gemini.schedule(
        *[Fault(status=None, delay=IMAGE_DELAY, path_contains="-image:") for _ in range(2)]
    )
    run_id = generate(production, STORY)

    # Both children running and paying: a picture being drawn, narration translating.
    def children_paying() -> bool:
        if not (fakes.gemini.in_flight and fakes.sarvam.in_flight):
            return False
        children = children_of(production, run_id)
        running = [c for c in children.values() if c.state_type == StateType.RUNNING]
        # Read last, right before the signal.
        return len(running) == 2 and fakes.sarvam.in_flight > 0 and fakes.gemini.in_flight > 0

    wait_until("both children paying", children_paying, 240, production)
    mark("both children paying")
    started = children_of(production, run_id)
    with StoryStore.open(production.story_db) as store:
        (first,) = store.generations(STORY)
    assert first.status == "running"
    assert first.flow_run_id == str(run_id)

    # 1. The story's worker stops: the parent (which only waits: it makes no paid call
    #    now, so no call can be lost with its process) is handed back, and the worker
    #    that takes over reruns it as the same flow run.
    parent_back = hand_back(production, "story")
    mark("story worker handed back")

    # 2. Then the audio worker stops while narration speaks (chapters after the first:
    #    translations all come before it): narration is handed back and rerun by the
    #    next audio worker. Its calls in flight may die with its process.
    def speaking() -> bool:
        spoken = fakes.sarvam.calls_to("text-to-speech")
        narrating = children_of(production, run_id)["audio"]
        assert narrating.state_type not in FINAL, (
            f"narration ended {narrating.state_name} before its worker could be stopped"
        )
        return (
            bool(spoken)
            and narrating.state_type == StateType.RUNNING
            and fakes.sarvam.in_flight > 0
        )

    wait_until("narration speaking", speaking, 120, production)
    mark("narration speaking")
    audio_back = hand_back(production, "audio")
    mark("audio worker handed back")

    wait_until(
        "the story to end",
        lambda: read_run(production, run_id).state_type in FINAL,
        300,
        production,
    )
    wait_until("the fakes' calls to end", lambda: not any(f.in_flight for f in fakes.all), 30,
               production)  # fmt: skip
    fakes.sarvam.latency = 0.0
    mark("story ended")
    history = states_of(production, run_id)
    print(
        json.dumps(
            {
                "clean_run": dict(clean),
                "this_run": dict(count(paid(fakes))),
                "seconds": seconds,
                "parent_states": [f"{s.timestamp:%H:%M:%S} {s.name}" for s in history],
                "narration_states": [
                    f"{s.timestamp:%H:%M:%S} {s.name}"
                    for s in states_of(production, started["audio"].id)
                ],
            },
            indent=1,
        )
    )

    # The same flow run completed, after going back to its pool once.
    parent = read_run(production, run_id)
    assert parent.state_type == StateType.COMPLETED, parent.state
    assert parent.run_count == 2
    assert any(handed_back(s) for s in history), [s.name for s in history]

    # One run of each child, the ones the first attempt started, keyed by the generation;
    # narration handed back once, illustrations never.
    children = children_of(production, run_id)
    assert {pool: c.id for pool, c in children.items()} == {
        pool: c.id for pool, c in started.items()
    }
    assert {pool: c.idempotency_key for pool, c in children.items()} == {
        "images": f"{first.id}:images",
        "audio": f"{first.id}:audio",
    }
    assert all(c.state_type == StateType.COMPLETED for c in children.values())
    assert children["images"].run_count == 1
    assert children["audio"].run_count == 2
    assert any(handed_back(s) for s in states_of(production, children["audio"].id))
    # ...and no other run of a story flow anywhere (the maintenance pool's are the
    # nightly schedule's).
    everywhere = read_runs(production, FlowRunFilter())
    assert Counter(r.work_pool_name for r in everywhere if r.work_pool_name in POOLS) == {
        "story": 2,
        "images": 2,
        "audio": 2,
    }

    # The book is published in the generation the first attempt started, its only one.
    with StoryStore.open(production.story_db) as store:
        book = store.book(STORY)
        generations = store.generations(STORY)
    assert book is not None
    assert book.status == "complete"
    assert [g.id for g in generations] == [first.id], [(g.id, g.status) for g in generations]
    assert book.generation_id == first.id
    assert len(book.pages) == 8
    assert len(book.illustrations) == 2
    assert book.chapters["hi-IN"]

    # Each hand-back came while its children paid: pictures and narration's calls in
    # flight at the parent's, speech at narration's (or the test proves little).
    calls = paid(fakes)
    assert "image" in in_flight(calls, parent_back)
    assert in_flight(calls, parent_back) & {"speech", "translation"}
    assert "speech" in in_flight(calls, audio_back)

    # Paid for once: every purchase made once, but those whose answer may have died
    # with a stopped process; and as many of each kind as the clean run made. (The
    # fakes answer by the request, so both books, and their costs, are fixed: they
    # differ only in their titles.)
    unexcused, excused = made_again(calls, audio_back)
    assert unexcused == []
    assert all(kind_of(c) in {"speech", "translation", "upload"} for c in excused), excused
    assert count(calls) - count(excused) == clean, (count(calls), count(excused), clean)
    print("made again after the narration hand-back:", dict(count(excused)))

"""A worker killed with SIGKILL in the middle of a story, on the production topology (a
Prefect server on PostgreSQL, `storyloom setup`, a worker per pool, the real clients
against the fakes): the run is marked Crashed by the silent-run automation, rerun as the
same flow run by the rerun automation on a new worker, and completes the book in the
generation the first attempt started, without paying twice for a call that had
completed or uploading a file twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import State, StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.crashes import RERUN_MESSAGE, silent_message
from storyloom.store.repository import StoryStore
from tests.fakes.cloudinary import parse_multipart
from tests.fakes.server import Call
from tests.system.cluster import (
    Cluster,
    add_story,
    flow_run_id,
    kill_like_a_dead_machine,
    working_cluster,
)

pytestmark = pytest.mark.timeout(900)

STORY = "killed-mid-story"
# Crashed after this long without a heartbeat: the least setup allows with Prefect's
# 30 s heartbeat (the default is 90; less waiting, the same mechanism).
CRASHED_AFTER = 60
HEARTBEAT = 30  # runs beat every 30 s
TEXT_LATENCY = 1.5  # every Gemini call takes a while: the story is still writing when killed
# A call whose answer reached the flow this little before the kill may not be recorded
# as done yet (result persisted, task Completed): the rerun may make it again, as it
# must make again every call in flight at the kill (its answer died with the machine).
# Every call that ended earlier must be reused.
SETTLE_SECONDS = 2.0
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"STORYLOOM_CRASHED_AFTER_SECONDS": str(CRASHED_AFTER)}
    with working_cluster(tmp_path_factory.mktemp("crash"), env) as running:
        yield running


def client_of(production: Cluster) -> Callable[[], SyncPrefectClient]:
    def make() -> SyncPrefectClient:
        with temporary_settings(updates={PREFECT_API_URL: production.api_url}):
            return get_client(sync_client=True)

    return make


def wait_until(what: str, check: Callable[[], bool], timeout: float, production: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; see {production.logs}")
        time.sleep(0.5)


def first_state(states: list[State], name: str, after: datetime) -> State | None:
    return next((s for s in states if s.name == name and s.timestamp >= after), None)


def repeats(
    calls: list[Call], key: Callable[[Call], str], killed_at: float
) -> tuple[list[str], int]:
    """Successful calls made more than once: the keys of those that cannot be excused,
    and how many were made again because they were in flight at the kill."""
    by_key: dict[str, list[Call]] = {}
    for call in calls:
        if call.status == 200:
            by_key.setdefault(key(call), []).append(call)
    unexcused: list[str] = []
    excused = 0
    for name, made in by_key.items():
        if len(made) == 1:
            continue
        first, *again = sorted(made, key=lambda c: c.started)
        lost = first.started < killed_at < first.ended + SETTLE_SECONDS
        if lost and len(again) == 1 and again[0].started > killed_at:
            excused += 1
        else:
            unexcused.append(name)
    return sorted(unexcused), excused


def body_of(call: Call) -> str:
    return call.body.decode()


def public_id_of(call: Call) -> str:
    params, _, _ = parse_multipart(call.body, call.headers["content-type"])
    return f"{call.path.split('/')[-2]}:{params['public_id']}"


def test_a_run_killed_with_its_worker_is_crashed_rerun_and_completes(
    production: Cluster,
) -> None:
    add_story(production, STORY)
    fakes = production.fakes
    for fake in fakes.all:
        fake.reset()
    fakes.gemini.latency = TEXT_LATENCY
    connect = client_of(production)

    started = production.run(
        "prefect", "deployment", "run", "story/generate",
        "-p", f"story_id={STORY}", "-p", "pages=4", "-p", "image_count=2",
        "-p", 'narration_languages=["hi-IN"]',
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = flow_run_id(started.stdout)

    # Mid-story: some text written and paid for, a call of the parent's in flight (no
    # child run yet: only the parent calls Gemini).
    def writing() -> bool:
        done = [c for c in fakes.gemini.calls if c.status == 200]
        if len(done) < 3:
            return False
        with connect() as client:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
                )
            )
            running = client.read_flow_run(run_id).state_type == StateType.RUNNING
        # Read last, right before the kill: a call lasts TEXT_LATENCY.
        return running and not children and fakes.gemini.in_flight > 0

    wait_until("a call of the story in flight", writing, 300, production)
    with StoryStore.open(production.story_db) as store:
        (first,) = [g for g in store.generations(STORY) if g.flow_run_id == str(run_id)]
    assert first.status == "running"

    killed_wall = datetime.now(UTC)
    killed_at = time.monotonic()
    killed = kill_like_a_dead_machine(production.workers["story"])
    assert len(killed) >= 2, "the worker and its flow run's process"
    production.start_worker("story")  # the machine that takes over

    def final() -> bool:
        with connect() as client:
            return client.read_flow_run(run_id).state_type in FINAL - {StateType.CRASHED}

    wait_until("the rerun to finish", final, 600, production)
    fakes.gemini.latency = 0.0
    with connect() as client:
        run = client.read_flow_run(run_id)
        states = client.read_flow_run_states(run_id)
        # Slots of the per-API limits the dead process held were released (their leases
        # ran out, well before the book was done): none is held now.
        held = {
            limit.name: limit.active_slots
            for limit in client.read_global_concurrency_limits(limit=50)
            if limit.name.startswith("api:") and limit.active_slots
        }
        beats = client.read_events(
            EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            ),
            limit=50,
        )

    # Detected: Crashed by the silent-run automation within two minutes of the kill.
    crashed = first_state(states, "Crashed", killed_wall)
    assert crashed is not None, [s.name for s in states]
    assert crashed.message == silent_message(CRASHED_AFTER)
    detected_in = (crashed.timestamp - killed_wall).total_seconds()
    assert detected_in <= CRASHED_AFTER + 30, detected_in
    assert held == {}
    # Rerun: the same flow run went back to its pool, started again and completed.
    rerun = first_state(states, "AwaitingRetry", crashed.timestamp)
    assert rerun is not None, [s.name for s in states]
    assert rerun.message == RERUN_MESSAGE
    assert run.state_type == StateType.COMPLETED, run.state
    assert run.run_count == 2
    # The heartbeats came at the pace setup gave the deployment (but across the kill).
    times = sorted(e.occurred for e in beats.events)
    assert any(t < killed_wall for t in times), times
    gaps = [(b - a).total_seconds() for a, b in pairwise(times) if not a < killed_wall < b]
    assert all(gap <= HEARTBEAT + 10 for gap in gaps), gaps
    print("heartbeat gaps (s):", [round(g, 1) for g in gaps])

    # The book is complete, in the generation the first attempt started.
    with StoryStore.open(production.story_db) as store:
        book = store.book(STORY)
        generations = store.generations(STORY)
    assert book is not None
    assert book.status == "complete"
    assert book.generation_id == first.id, [(g.id, g.status, g.error) for g in generations]
    assert len(book.pages) == 4
    assert len(book.illustrations) == 2
    assert book.chapters["hi-IN"]
    assert [g.id for g in generations] == [first.id]

    # Nothing that had completed before the kill was paid for or uploaded again (and
    # some had: the rerun reused them); the calls in flight at the kill were made again.
    assert any(c.status == 200 and c.ended < killed_at for c in fakes.gemini.calls)
    gemini, lost = repeats(fakes.gemini.calls, body_of, killed_at)
    assert gemini == []
    assert repeats(fakes.sarvam.calls, body_of, killed_at)[0] == []
    uploads = [c for c in fakes.cloudinary.calls if c.path.endswith("/upload")]
    assert uploads
    assert repeats(uploads, public_id_of, killed_at)[0] == []
    report(states, detected_in, fakes.gemini.calls, killed_at, lost)


def report(
    states: list[State], detected_in: float, calls: list[Call], killed_at: float, lost: int
) -> None:
    """For the record: the run's states, and what the kill cost in Gemini calls."""
    ok = [c for c in calls if c.status == 200]
    print(
        json.dumps(
            {
                "states": [f"{s.timestamp:%H:%M:%S} {s.name}" for s in states],
                "crashed_after_kill_s": round(detected_in, 1),
                "gemini_ok_calls": len(ok),
                "done_before_kill": sum(c.ended < killed_at for c in ok),
                # By their status as the fake logged them (0: no answer was sent).
                "in_flight_at_kill": sorted(
                    c.status for c in calls if c.started < killed_at <= c.ended
                ),
                "made_again_after_the_kill": lost,
            },
            indent=1,
        )
    )


def test_a_run_that_crashes_past_its_reruns_has_its_generation_closed_at_once(
    production: Cluster,
) -> None:
    """With reruns off, a killed run stays Crashed: the closing automation marks its
    generation failed within a minute of the crash, not at the next run or reprocess."""
    story = "killed-for-good"
    setup = production.run("storyloom", "setup", env={"STORYLOOM_CRASH_RERUNS": "0"})
    assert setup.returncode == 0, setup.stdout + setup.stderr
    add_story(production, story)
    fakes = production.fakes
    for fake in fakes.all:
        fake.reset()
    fakes.gemini.latency = TEXT_LATENCY
    connect = client_of(production)
    try:
        started = production.run(
            "prefect", "deployment", "run", "story/generate", "-p", f"story_id={story}",
            "-p", "pages=4", "-p", "images=false",
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        run_id = flow_run_id(started.stdout)

        def generation_running() -> bool:
            with StoryStore.open(production.story_db) as store:
                running = [g for g in store.generations(story) if g.status == "running"]
            return bool(running) and fakes.gemini.in_flight > 0

        wait_until("the story writing", generation_running, 300, production)
        kill_like_a_dead_machine(production.workers["story"])
        production.start_worker("story")

        def closed() -> bool:
            with StoryStore.open(production.story_db) as store:
                return all(g.status != "running" for g in store.generations(story))

        wait_until("the generation closed", closed, CRASHED_AFTER + 180, production)
    finally:
        fakes.gemini.latency = 0.0
        production.run("storyloom", "setup")  # reruns back on for whatever follows

    with connect() as client:
        run = client.read_flow_run(run_id)
        states = client.read_flow_run_states(run_id)
    assert run.state_type == StateType.CRASHED, run.state
    crashed = max((s for s in states if s.name == "Crashed"), key=lambda s: s.timestamp)
    with StoryStore.open(production.story_db) as store:
        (generation,) = store.generations(story)
    assert generation.status == "failed"
    assert generation.error is not None
    assert "crashed after 1 start(s)" in generation.error
    assert generation.finished_at is not None
    closed_in = (generation.finished_at - crashed.timestamp).total_seconds()
    print(f"generation closed {closed_in:.1f} s after the run was marked Crashed")
    assert 0 <= closed_in <= 60, closed_in

"""Parent and children, by deployment, on the harness's Prefect server: a child no worker
takes fails the parent naming its pool; a Prefect API that hiccups while the parent
polls is read again; a parent that stops for any reason cancels its children; and a paid
call of a cancelled run is not made.

The children are runs of small deployments of this module's flows on a pool without a
worker; where a test needs a child that runs or ends, it moves the run's state through
the API as a worker would. Faults come from a loopback proxy in front of the server.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import Cancelling, Completed, Running
from starlette.types import Receive, Scope, Send

from flows.fanout import ChildNotStarted, cancel_children, run_children
from flows.story import story
from storyloom import services
from tasks.policy import RunCancelled, api_slot, honour_retry_after, paid_call_options
from tests.fakes.server import serve

pytestmark = pytest.mark.flows

POOL = "fanout-test-idle"  # no worker ever polls it


@flow(name="fanout-test-pictures")
def pictures(generation_id: str) -> str:
    return f"pictures of {generation_id}"


@flow(name="fanout-test-voices")
def voices(generation_id: str) -> str:
    return f"voices of {generation_id}"


@pytest.fixture
def child_deployments() -> dict[str, UUID]:
    """`fanout-test-pictures/generate` and `fanout-test-voices/generate` on POOL."""
    ids = {}
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        for child in (pictures, voices):
            flow_id = client.create_flow_from_name(child.name)
            ids[child.name] = client.create_deployment(
                flow_id=flow_id, name="generate", work_pool_name=POOL
            )
    return ids


@pytest.fixture
def by_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORYLOOM_FANOUT", "deployments")
    monkeypatch.setenv("STORYLOOM_CHILD_POLL_SECONDS", "0.05")
    services.reset()


def children(generation_id: str) -> dict[str, Any]:
    return {
        "images": (pictures, {"generation_id": generation_id}),
        "audio": (voices, {"generation_id": generation_id}),
    }


def runs_of(deployments: dict[str, UUID], generation_id: str) -> list[FlowRun]:
    """The child runs started for one generation."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=list(deployments.values()))
            )
        )
    return [r for r in runs if r.parameters.get("generation_id") == generation_id]


def wait_for_runs(
    deployments: dict[str, UUID], generation_id: str, count: int = 2
) -> list[FlowRun]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = runs_of(deployments, generation_id)
        if len(runs) == count:
            return runs
        time.sleep(0.05)
    raise AssertionError(f"{count} child runs of {generation_id} never appeared")


def start(run: FlowRun) -> None:
    """What a worker does when it takes a run."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Running())


# --- a child that no worker takes -----------------------------------------------------


def test_a_child_no_worker_takes_fails_the_parent_naming_its_pool(
    by_deployment: None,
    child_deployments: dict[str, UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORYLOOM_CHILD_START_TIMEOUT_SECONDS", "1.5")
    services.reset()
    generation = f"g-{uuid.uuid4()}"

    # A worker takes the voices at once; nobody ever takes the pictures.
    def take_voices() -> None:
        runs = wait_for_runs(child_deployments, generation)
        start(next(r for r in runs if r.deployment_id == child_deployments[voices.name]))

    taker = threading.Thread(target=contextvars.copy_context().run, args=(take_voices,))
    taker.start()
    began = time.monotonic()
    with pytest.raises(ChildNotStarted) as failure:
        run_children(**children(generation))
    waited = time.monotonic() - began
    taker.join()

    assert (
        f"no worker picked up {pictures.name}/generate on work pool '{POOL}' within 1.5 s"
        in str(failure.value)
    )
    assert 1.5 <= waited < 10
    # Neither child is left to run: the one never taken is Cancelled, the running one
    # Cancelling (its worker stops it; here there is none).
    states = {r.deployment_id: r.state_type for r in runs_of(child_deployments, generation)}
    assert states == {
        child_deployments[pictures.name]: StateType.CANCELLED,
        child_deployments[voices.name]: StateType.CANCELLING,
    }


# --- a parent that only waits gives its pool slot back ---------------------------------


def test_a_parent_that_only_waits_is_paused_and_ends_from_there(
    by_deployment: None, child_deployments: dict[str, UUID]
) -> None:
    generation = f"g-{uuid.uuid4()}"
    seen: dict[str, Any] = {}

    @flow(name="fanout-test-waiting-parent")
    def parent() -> dict[str, Any]:
        context = FlowRunContext.get()
        assert context is not None
        assert context.flow_run is not None
        seen["parent"] = context.flow_run.id
        return run_children(**children(generation))

    # A worker: takes both children, and before finishing them looks at the parent.
    def work_children() -> None:
        runs = wait_for_runs(child_deployments, generation)
        for run in runs:
            start(run)
        parent_id = seen["parent"]
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 30
            while client.read_flow_run(parent_id).state_type != StateType.PAUSED:
                assert time.monotonic() < deadline, "the parent never paused"
                time.sleep(0.05)
            seen["paused"] = client.read_flow_run(parent_id).state
            for run in runs:
                client.set_flow_run_state(run.id, Completed())

    worker = threading.Thread(target=contextvars.copy_context().run, args=(work_children,))
    worker.start()
    state = parent(return_state=True)
    worker.join()

    assert state.is_completed(), state
    assert set(state.result()) == {"images", "audio"}
    paused = seen["paused"]
    assert paused.name == "Paused"
    assert not paused.state_details.pause_reschedule  # paused in place: no new process
    assert "fanout-test-pictures/generate and fanout-test-voices/generate" in paused.message
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(seen["parent"])
        history = [s.name for s in client.read_flow_run_states(run.id)]
    # It never took a slot again, and its run count is one start (crash reruns read it).
    assert history[-3:] == ["Running", "Paused", "Completed"]
    assert run.run_count == 1


def test_a_parent_whose_children_are_done_does_not_pause(
    by_deployment: None, child_deployments: dict[str, UUID]
) -> None:
    generation = f"g-{uuid.uuid4()}"

    @flow(name="fanout-test-rerun-parent")
    def parent() -> dict[str, Any]:
        return run_children(**children(generation))

    # The children of an earlier attempt are final (a rerun of the parent finds them by
    # their idempotency keys).
    for child in (pictures, voices):
        run = run_deployment(
            f"{child.name}/generate", parameters={"generation_id": generation}, timeout=0,
            idempotency_key=f"{generation}:{'images' if child is pictures else 'audio'}",
        )  # fmt: skip
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Running())
            client.set_flow_run_state(run.id, Completed())

    state = parent(return_state=True)

    assert state.is_completed(), state
    with get_client(sync_client=True) as client:
        history = [s.name for s in client.read_flow_run_states(state.state_details.flow_run_id)]
    assert "Paused" not in history


# --- a Prefect API that hiccups while the parent polls ---------------------------------


@dataclass
class FlakyProxy:
    """A loopback HTTP proxy in front of the Prefect server. Reads of one flow run
    (`GET /api/flow_runs/<id>`, what the parent polls) take the scheduled faults in
    turn: a status code, or "drop" (headers sent, then the connection closed)."""

    upstream: str
    faults: deque[int | str] = field(default_factory=deque)
    always: int | None = None  # every such read answers this, when set
    served: list[int | str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, query = scope["path"], scope["query_string"].decode()
        fault = self._fault(scope["method"], path)
        if fault == "drop":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"1000")]})  # fmt: skip
            await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})
            raise ConnectionAbortedError("dropped on purpose")  # uvicorn closes the socket
        if isinstance(fault, int):
            # Retry-After: 0, or Prefect's client sleeps 2 s before giving a 429, 502 or
            # 503 back (even with its retries off).
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"0")]
            await send({"type": "http.response.start", "status": fault, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"detail": "injected"}'})
            return
        skip = {"host", "content-length", "transfer-encoding", "connection"}
        async with httpx.AsyncClient() as client:
            answer = await client.request(
                scope["method"],
                f"{self.upstream}{path}" + (f"?{query}" if query else ""),
                content=body,
                headers=[(k.decode(), v.decode()) for k, v in scope["headers"]
                         if k.decode().lower() not in skip],
            )  # fmt: skip
        dropped = skip | {"content-encoding"}  # httpx has decoded the body
        await send({
            "type": "http.response.start",
            "status": answer.status_code,
            "headers": [(k.encode(), v.encode()) for k, v in answer.headers.items()
                        if k.lower() not in dropped],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": answer.content})

    def _fault(self, method: str, path: str) -> int | str | None:
        parts = path.rstrip("/").split("/")
        if method != "GET" or len(parts) < 2 or parts[-2] != "flow_runs":
            return None
        try:
            UUID(parts[-1])
        except ValueError:
            return None
        fault = self.faults.popleft() if self.faults else self.always
        if fault is not None:
            self.served.append(fault)
        return fault


@pytest.fixture
def proxy() -> Iterator[FlakyProxy]:
    upstream = httpx.URL(PREFECT_API_URL.value())
    flaky = FlakyProxy(upstream=f"{upstream.scheme}://{upstream.host}:{upstream.port}")
    with (
        serve(flaky) as url,
        # Prefect's own client retries 429, 502, 503 and dropped connections for about
        # a minute (not 500 or 504). With its retries off every fault reaches the
        # parent's loop, as an outage that outlasts them would.
        temporary_settings(
            updates={PREFECT_API_URL: f"{url}{upstream.path}", PREFECT_CLIENT_MAX_RETRIES: 0}
        ),
    ):
        yield flaky


def test_transient_errors_reading_a_child_are_read_again(
    by_deployment: None, child_deployments: dict[str, UUID], proxy: FlakyProxy
) -> None:
    generation = f"g-{uuid.uuid4()}"
    # Six in a row, as many as STORYLOOM_CHILD_READ_RETRIES allows by default.
    faults: list[int | str] = [500, "drop", 504, 429, 503, 502]
    proxy.faults.extend(faults)
    server_side = contextvars.copy_context()  # captured inside the proxy's settings...

    def finish_children() -> None:
        # ...so this "worker" talks to the server itself, past the proxy.
        with temporary_settings(updates={PREFECT_API_URL: proxy.upstream + "/api"}):
            runs = wait_for_runs(child_deployments, generation)
            while proxy.faults:
                time.sleep(0.05)
            with get_client(sync_client=True) as client:
                for run in runs:
                    client.set_flow_run_state(run.id, Running())
                    client.set_flow_run_state(run.id, Completed())

    worker = threading.Thread(target=server_side.run, args=(finish_children,))
    worker.start()
    results = run_children(**children(generation))
    worker.join()

    assert proxy.served == faults  # every fault reached the parent, and it read again
    assert set(results) == {"images", "audio"}
    with temporary_settings(updates={PREFECT_API_URL: proxy.upstream + "/api"}):
        runs = runs_of(child_deployments, generation)
    assert [r.state_type for r in runs] == [StateType.COMPLETED, StateType.COMPLETED]


def test_an_api_that_stays_down_fails_the_parent_and_cancels_its_children(
    by_deployment: None,
    child_deployments: dict[str, UUID],
    proxy: FlakyProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORYLOOM_CHILD_READ_RETRIES", "3")
    services.reset()
    proxy.always = 500
    generation = f"g-{uuid.uuid4()}"

    with pytest.raises(PrefectHTTPStatusError, match="500"):
        run_children(**children(generation))

    # The first child read failed four times in a row (one try, three retries) and the
    # parent gave up; the children it had started were cancelled, past the outage.
    assert proxy.served == [500] * 4
    with temporary_settings(updates={PREFECT_API_URL: proxy.upstream + "/api"}):
        runs = runs_of(child_deployments, generation)
    assert [r.state_type for r in runs] == [StateType.CANCELLED, StateType.CANCELLED]


# --- a parent that fails for another reason -------------------------------------------


def test_a_parent_that_fails_cancels_its_running_children(
    child_deployments: dict[str, UUID],
) -> None:
    generation = f"g-{uuid.uuid4()}"

    @flow(name="fanout-test-parent", on_failure=[cancel_children])
    def parent() -> None:
        for child in (pictures, voices):
            run_deployment(f"{child.name}/generate", parameters={"generation_id": generation},
                           timeout=0, as_subflow=True)  # fmt: skip
        start(wait_for_runs(child_deployments, generation)[0])
        raise RuntimeError("the parent fails after starting its children")

    state = parent(return_state=True)

    assert state.is_failed()
    # The one never started is Cancelled; the running one Cancelling (its worker would
    # stop it; here there is none).
    states = {r.state_type for r in runs_of(child_deployments, generation)}
    assert states == {StateType.CANCELLED, StateType.CANCELLING}
    assert cancel_children in story.on_failure_hooks
    assert cancel_children in story.on_cancellation_hooks
    assert cancel_children in story.on_crashed_hooks


# --- no paid call once the run is cancelled -------------------------------------------

paid: list[str] = []
attempts: list[str] = []
refused: list[str] = []


@task(**paid_call_options(NO_CACHE))
def pay(label: str) -> None:
    attempts.append(label)
    with honour_retry_after(), api_slot("text", "gemini"):
        paid.append(label)


def try_to_pay(label: str) -> None:
    try:
        pay(label)
    except RunCancelled as exc:
        refused.append(f"{label}: {exc}")


def cancel_this_run() -> None:
    context = FlowRunContext.get()
    assert context is not None
    assert context.flow_run is not None
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Cancelling(message="by the test"))


@pytest.fixture
def ledger() -> None:
    for kept in (paid, attempts, refused):
        kept.clear()


def test_a_paid_call_of_a_cancelling_run_is_not_made_nor_retried(ledger: None) -> None:
    @flow
    def spender() -> None:
        try_to_pay("before")
        cancel_this_run()
        try_to_pay("after")

    spender(return_state=True)

    assert paid == ["before"]
    assert attempts == ["before", "after"]  # no retry: RunCancelled is not transient
    assert refused == ["after: gemini: not called: this flow run is cancelled"]


def test_a_child_of_a_cancelling_parent_makes_no_paid_call(ledger: None) -> None:
    @flow
    def child() -> None:
        try_to_pay("child")

    @flow
    def parent() -> None:
        try_to_pay("parent")
        cancel_this_run()
        child(return_state=True)

    parent(return_state=True)

    assert paid == ["parent"]
    assert len(refused) == 1
    assert refused[0].startswith("child: gemini: not called: the parent run ")


def test_without_a_run_the_call_is_not_checked(ledger: None) -> None:
    pay.fn("plain")
    assert paid == ["plain"]

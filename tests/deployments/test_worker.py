"""`python -m deployments.worker` against a real `prefect server start` on loopback.

Not the in-process harness: the worker runs each flow run in a subprocess that must
reach the server, and the worker itself runs as a subprocess so that SIGTERM is real.
The flows are tests/deployments/worker_flow.py and account_flow.py, deployed to a pool
per test whose job template is the one `storyloom setup` writes. Where the server must
go away or refuse, the worker reaches it through a loopback TCP relay the test controls.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.states import Cancelling
from prefect.workers.process import ProcessWorker

from deployments.limits import with_run_env
from deployments.project import SET_WORKING_DIRECTORY
from tests.fakes.sarvam import sarvam_fake

# Real processes and a real server, nothing external: safe (and required) in CI.
pytestmark = [pytest.mark.flows, pytest.mark.timeout(240)]

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
FLOW_NAME = "worker-probe"
PREFECT = [sys.executable, "-m", "prefect"]
BIN = Path(sys.executable).parent
WORKER = [sys.executable, "-m", "deployments.worker"]

# A functional bound, not a benchmark: the worker polls every second. Five runs 2 s
# apart: a worker polling every 10 s (Prefect's default) picks them up after x, x+2,
# ..., x+8 s (x < 2, mod 10), so the middle one waits at least 4 s whatever its phase;
# one polling every second leaves the median well under that, even on a loaded
# machine where a single pickup can take many seconds (seen: 17 s beside the system
# tests, the other two under 4 s).
PICKUP_RUNS = 5
PICKUP_SPACING_SECONDS = 2.0
PICKUP_MEDIAN_BOUND_SECONDS = 4.0


@dataclass(frozen=True)
class Server:
    """A `prefect server start` subprocess and the environment its clients need."""

    url: str
    client_home: Path  # PREFECT_HOME of the workers: one result storage for all of them

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PREFECT_", "STORYLOOM_"))
        }
        env.update(
            PREFECT_API_URL=self.url,
            PREFECT_HOME=str(self.client_home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Overrides the package's in-process harness for this module: a real server."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = Server(url, home).env(PREFECT_UI_ENABLED="false")
    del env["PREFECT_API_URL"]
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not start:\n{_tail(log_path)}")
            time.sleep(0.25)
        yield Server(url, tmp_path_factory.mktemp("prefect-client"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def client(prefect_server: Server) -> Iterator[SyncPrefectClient]:
    with SyncPrefectClient(prefect_server.url) as sync_client:
        yield sync_client


@dataclass
class Worker:
    """One `python -m deployments.worker` subprocess."""

    process: subprocess.Popen[bytes]
    log_path: Path
    exited_at: float | None = None

    def wait_until_polling(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "polling pool" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker did not start:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running {timeout} s later:\n{self.log()[-4000:]}")
        self.exited_at = time.monotonic()
        return code

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class Workers:
    server: Server
    folder: Path
    started: list[Worker] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.folder / "home"

    def start(self, pool: str, *, grace: float, api_url: str | None = None, **env: str) -> Worker:
        log_path = self.folder / f"worker-{len(self.started)}.log"
        extra = {"STORYLOOM_WORKER_KILL_SECONDS": "5", "STORYLOOM_HOME": str(self.home), **env}
        if api_url:
            extra["PREFECT_API_URL"] = api_url
        log: IO[bytes]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*WORKER, "--pool", pool, "--grace-seconds", str(grace)],
                cwd=ROOT,
                env=self.server.env(**extra),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(process, log_path)
        self.started.append(worker)
        worker.wait_until_polling()
        return worker

    def check(self, pool: str) -> subprocess.CompletedProcess[str]:
        """`storyloom worker --pool POOL --check --json`, as a supervisor would run it."""
        return subprocess.run(
            [str(BIN / "storyloom"), "worker", "--pool", pool, "--check", "--json"],
            env=self.server.env(STORYLOOM_HOME=str(self.home)),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


@pytest.fixture
def workers(prefect_server: Server, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(prefect_server, tmp_path)
    yield started
    for worker in started.started:
        # A test that failed half way: stop gently (runs handed back), then for good.
        if worker.process.poll() is None:
            worker.terminate()
            time.sleep(0.5)
            worker.terminate()
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def deploy(
    client: SyncPrefectClient,
    pool: str,
    flow: str = FLOW_NAME,
    entrypoint: str = "worker_flow.py:probe",
) -> UUID:
    """A process pool named `pool`, templated as `storyloom setup` does (its runs hand
    back on SIGTERM), and a probe flow deployed to it."""
    default = ProcessWorker.get_default_base_job_template()
    template = with_run_env(default) or default
    client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
    return client.create_deployment(
        flow_id=client.create_flow_from_name(flow),
        name=pool,
        entrypoint=entrypoint,
        work_pool_name=pool,
        pull_steps=[{SET_WORKING_DIRECTORY: {"directory": str(HERE)}}],
    )


def submit(client: SyncPrefectClient, deployment: UUID, marker: Path, **params: float) -> FlowRun:
    return client.create_flow_run_from_deployment(
        deployment, parameters={"marker": str(marker), **params}
    )


def wait_for(what: str, check: Callable[[], Any], timeout: float, *logs: Worker) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            tails = "\n".join(worker.log()[-3000:] for worker in logs)
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tails}")
        time.sleep(0.2)
    return value


def final(client: SyncPrefectClient, run_id: UUID, timeout: float, *logs: Worker) -> FlowRun:
    def finished() -> FlowRun | None:
        run = client.read_flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    found: FlowRun = wait_for(f"flow run {run_id} to finish", finished, timeout, *logs)
    return found


def history(client: SyncPrefectClient, run_id: UUID) -> list[State]:
    return sorted(client.read_flow_run_states(run_id), key=lambda state: state.timestamp)


def state_of(run: FlowRun) -> State:
    assert run.state is not None
    return run.state


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_new_runs_are_picked_up_within_seconds(
    client: SyncPrefectClient, workers: Workers, tmp_path: Path
) -> None:
    deployment = deploy(client, "pickup")
    worker = workers.start("pickup", grace=60)
    # A first run warms the worker up (its start, its first poll): what is timed below is
    # how soon a running worker picks up new runs, not how long it takes to start.
    warm_up = submit(client, deployment, tmp_path / "warm-up")
    assert state_of(final(client, warm_up.id, 120, worker)).is_completed()

    # Runs a little apart, so that the worker's polling phase shows (PICKUP_RUNS).
    runs: list[FlowRun] = []
    for index in range(PICKUP_RUNS):
        if runs:
            time.sleep(PICKUP_SPACING_SECONDS)
        runs.append(submit(client, deployment, tmp_path / f"run-{index}"))

    pickups, starts = [], []
    for index, run in enumerate(runs):
        done = final(client, run.id, 120, worker)
        assert state_of(done).is_completed(), done.state
        assert run.expected_start_time is not None
        assert done.start_time is not None
        claimed = next(s for s in history(client, run.id) if s.type is StateType.PENDING)
        pickups.append((claimed.timestamp - run.expected_start_time).total_seconds())
        starts.append((done.start_time - run.expected_start_time).total_seconds())
        # The flow run's environment has the per-API limits switched on.
        assert json.loads((tmp_path / f"run-{index}").read_text())["api_limits"] == "true"
    print(
        "picked up (Pending) after "
        + ", ".join(f"{seconds:.2f}" for seconds in pickups)
        + " s; Running after "
        + ", ".join(f"{seconds:.2f}" for seconds in starts)
        + " s"
    )
    assert statistics.median(pickups) < PICKUP_MEDIAN_BOUND_SECONDS, (
        pickups,
        worker.log()[-3000:],
    )

    worker.terminate()
    assert worker.wait(30) == 0


def test_sigterm_lets_a_running_run_finish_and_takes_no_new_one(
    client: SyncPrefectClient, workers: Workers, tmp_path: Path
) -> None:
    deployment = deploy(client, "drain")
    # Set already, so the worker leaves it alone.
    worker = workers.start("drain", grace=60, STORYLOOM_API_LIMITS="false")
    running = submit(client, deployment, tmp_path / "running", first_seconds=12)
    wait_for("the first run to start", lambda: lines(tmp_path / "running.attempts"), 60, worker)

    worker.terminate()
    late = submit(client, deployment, tmp_path / "late")
    # The worker was still there, finishing the first run, when the late one came in...
    # (a fact checked here, not a timing guessed: on a loaded machine the submit can be slow)
    still_running = worker.process.poll() is None
    assert worker.wait(60) == 0
    assert still_running, worker.log()

    assert state_of(client.read_flow_run(running.id)).is_completed()
    assert json.loads((tmp_path / "running").read_text()) == {"attempt": 1, "api_limits": "false"}
    # ...and did not take it.
    # (the server's late-runs service may mark it Late, still a Scheduled state)
    never_taken = {(s.type, s.name) for s in history(client, late.id)}
    assert never_taken <= {(StateType.SCHEDULED, "Scheduled"), (StateType.SCHEDULED, "Late")}
    assert not lines(tmp_path / "late.attempts")
    assert "taking no new runs" in worker.log()


def test_a_run_outliving_the_grace_is_handed_back_and_finished_by_another_worker(
    client: SyncPrefectClient, workers: Workers, tmp_path: Path
) -> None:
    deployment = deploy(client, "handback")
    marker = tmp_path / "long"
    first = workers.start("handback", grace=1)
    run = submit(client, deployment, marker, first_seconds=120, later_seconds=0)
    wait_for("the run to start", lambda: lines(tmp_path / "long.attempts"), 60, first)
    first_pid = int(lines(tmp_path / "long.attempts")[0])

    first.terminate()
    assert first.wait(45) == 0
    back = state_of(client.read_flow_run(run.id))
    assert (back.type, back.name) == (StateType.SCHEDULED, "AwaitingRetry"), back
    assert not marker.exists()
    # The first attempt's process was stopped, not left running.
    wait_for("the first attempt's process to end", lambda: not _alive(first_pid), 10, first)

    second = workers.start("handback", grace=60)
    assert state_of(final(client, run.id, 90, second)).is_completed()
    assert json.loads(marker.read_text())["attempt"] == 2
    # Its cached task did not run again: the rerun paid for nothing twice.
    assert len(lines(tmp_path / "long.paid")) == 1
    states = history(client, run.id)
    assert not {StateType.CRASHED, StateType.FAILED} & {s.type for s in states}, states
    # Handed back by Prefect's own supervisor (`prefect flow-run execute` with
    # PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule from the pool's template),
    # not by the worker's fallback, which signs its message.
    (back_state,) = [s for s in states if s.name == "AwaitingRetry"]
    assert "Handed back by worker" not in (back_state.message or ""), back_state
    assert "Handing back flow run" in first.log()
    second.terminate()
    assert second.wait(30) == 0


def test_a_cancelled_run_ends_cancelled_not_handed_back(
    client: SyncPrefectClient, workers: Workers, tmp_path: Path
) -> None:
    # Prefect's worker cancels a run by SIGTERM to the process it started; with the
    # supervisor's SIGTERM meaning "hand back", the cancelled run would run again.
    deployment = deploy(client, "cancel")
    worker = workers.start("cancel", grace=60)
    run = submit(client, deployment, tmp_path / "cancelled", first_seconds=120)
    wait_for("the run to start", lambda: lines(tmp_path / "cancelled.attempts"), 60, worker)

    client.set_flow_run_state(run.id, Cancelling(message="cancelled by the test"))
    done = final(client, run.id, 90, worker)
    assert state_of(done).is_cancelled(), done.state
    kinds = [s.type for s in history(client, run.id)]
    assert kinds.count(StateType.SCHEDULED) == 1, kinds  # only its first
    assert StateType.CRASHED not in kinds, kinds
    time.sleep(3)  # nothing takes it up again
    assert state_of(client.read_flow_run(run.id)).is_cancelled()
    assert len(lines(tmp_path / "cancelled.attempts")) == 1
    worker.terminate()
    assert worker.wait(30) == 0


def test_a_worker_whose_server_goes_away_exits_within_its_timeout(
    client: SyncPrefectClient, workers: Workers, prefect_server: Server
) -> None:
    deploy(client, "lost")
    with Relay(prefect_server.url) as relay:
        worker = workers.start(
            "lost", grace=60, api_url=relay.url, STORYLOOM_WORKER_SERVER_TIMEOUT_SECONDS="6"
        )
        healthy = workers.check("lost")
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert json.loads(healthy.stdout)["healthy"] is True

        relay.down()
        went_down = time.monotonic()
        # Functional bound: the timeout, plus a probe's interval and the time to exit.
        code = worker.wait(6 + 30)
    assert code == 3, worker.log()
    assert worker.exited_at is not None
    # Not at the first failure: the timeout counts from the last answer, which came at
    # most a probe's interval (timeout / 4) before the relay went down.
    assert worker.exited_at - went_down >= 6 * 3 / 4 - 0.5
    (line,) = [ln for ln in worker.log().splitlines() if ln.startswith("storyloom worker ")]
    assert "has not answered for" in line, line
    assert relay.url.split("/api")[0] in line, line
    # Gone, and the supervisor's check says so (no worker of the pool left).
    gone = workers.check("lost")
    assert gone.returncode == 1
    assert json.loads(gone.stdout)["workers"] == []


def test_a_worker_the_server_refuses_exits_at_once(
    client: SyncPrefectClient, workers: Workers, prefect_server: Server
) -> None:
    deploy(client, "refused")
    with Relay(prefect_server.url) as relay:
        worker = workers.start("refused", grace=60, api_url=relay.url)
        relay.refuse(401)  # what a server answers a revoked key
        code = worker.wait(30)
    assert code == 3, worker.log()
    assert "refused the worker (401)" in worker.log()


def test_a_worker_whose_provider_answers_account_errors_hands_back_and_exits(
    client: SyncPrefectClient, workers: Workers, tmp_path: Path
) -> None:
    deployment = deploy(client, "revoked", "account-probe", "account_flow.py:account_probe")
    with sarvam_fake("the-real-key") as (sarvam_url, sarvam):
        worker = workers.start(
            "revoked",
            grace=60,
            SARVAM_API_KEY="a-revoked-key",
            STORYLOOM_SARVAM_BASE_URL=sarvam_url,
            STORYLOOM_API_LIMITS="false",
            STORYLOOM_WORKER_ACCOUNT_ERROR_SECONDS="3",
        )
        first = client.create_flow_run_from_deployment(deployment, parameters={"text": "Hello"})
        failed = final(client, first.id, 90, worker)
        assert state_of(failed).is_failed()
        # Still within the bound: the worker is up, and says it is.
        code = worker.wait(3 + 30)
    assert code == 4, worker.log()
    (line,) = [ln for ln in worker.log().splitlines() if ln.startswith("storyloom worker ")]
    assert "sarvam" in line, line
    assert "account errors" in line, line
    assert "a-revoked-key" not in worker.log()
    # The fake was asked with the wrong key (a real answer, not a refusal of ours).
    assert sarvam.calls, "the flow never reached the fake"


class Relay:
    """A TCP relay from a loopback port to the Prefect server that the test can take
    down (connections refused, open ones cut) or turn into a server that refuses
    every request with an HTTP status."""

    def __init__(self, upstream_url: str) -> None:
        parts = urllib.parse.urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}{parts.path}"
        self.status: int | None = None
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def down(self) -> None:
        # shutdown first: a close alone leaves a socket that a thread is blocked on in
        # accept() listening (Linux), and new connections would still get through.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for conn in self.open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def refuse(self, status: int) -> None:
        self.status = status
        with self.lock:  # open keep-alive connections would still reach the server
            for conn in self.open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.status is not None:
            with contextlib.suppress(OSError):
                conn.recv(65536)
                body = b'{"detail": "Unauthorized"}'
                conn.sendall(
                    f"HTTP/1.1 {self.status} Refused\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                    + body
                )
            conn.close()
            return
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            conn.close()
            return
        with self.lock:
            self.open.append(upstream)
        for source, sink in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        # A zombie still answers kill(0); it has stopped all the same.
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def _tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-4000:]

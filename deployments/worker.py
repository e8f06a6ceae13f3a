"""`storyloom worker --pool NAME`: a Prefect process worker that stops without losing work
and fails loudly.

It is Prefect's ProcessWorker, driven by our own loop and extended through public
methods only (`run`, `get_and_submit_flow_runs`, `sync_with_backend`, the job
configuration's `prepare_for_flow_run`); tests/deployments/test_prefect_surface.py pins
the upstream signatures it relies on, so an upgrade that changes them fails in CI.

- It polls the pool every second (STORYLOOM_WORKER_QUERY_SECONDS) and claims runs only a
  couple of seconds ahead (STORYLOOM_WORKER_PREFETCH_SECONDS).
- After a poll that claimed runs it polls again only once they have left Scheduled: the
  pool's limit counts Pending and Running runs, and Prefect's query skips a run whose
  state change is in progress (row locked), so a poll that lands then finds that slot
  free and hands out one more run (seen on a loaded server: two `images` runs with a
  limit of 1).
- Each flow run is started as `python -m deployments.flow_run`, which runs Prefect's
  `prefect flow-run execute` in a session of its own, with
  PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule (from the pool's job template,
  which `storyloom setup` writes; filled in when a pool lacks it). That is Prefect's
  supported hand-back: on SIGTERM the supervisor tells the engine over its control
  channel, the engine exits without reporting a state, and the run goes back to its pool
  as AwaitingRetry. Never Crashed, so no alert fires and no crash hook runs. The worker
  asks for it with SIGUSR1 to the launcher, because Prefect's own cancellation of a run
  is a SIGTERM to the same process, which must not hand the run back (see
  deployments/flow_run.py). The runs
  also get STORYLOOM_API_LIMITS=true unless it is set, so their paid calls take the
  per-API slots `storyloom setup` created.
- On SIGTERM or SIGINT it takes no new run, lets the runs it has finish within a grace
  period (STORYLOOM_WORKER_GRACE_SECONDS, 300 s; a second signal ends it early), then
  sends SIGTERM to each remaining run's supervisor, which hands it back. Tasks cache
  their results by input, so the rerun pays for nothing twice. Exit 0.
- It fails loudly, with one line and a non-zero exit, so that a supervisor restarts it
  or someone is told: 3 when the Prefect server has not answered for
  STORYLOOM_WORKER_SERVER_TIMEOUT_SECONDS or refuses it (401/403); 4 when a provider has
  answered its flow runs with nothing but account errors (revoked key, exhausted quota)
  for STORYLOOM_WORKER_ACCOUNT_ERROR_SECONDS (it hands back what it holds first); 1
  when it cannot start (no API URL, no such pool). Its status file answers
  `storyloom worker --pool P --check` (storyloom/health.py).

Whatever stops the worker must signal the worker only and wait long enough: systemd
KillMode=mixed (the default control-group mode would SIGTERM the runs' supervisors at
the same moment, handing them back at once, without the grace) and TimeoutStopSec, or
a container's stop timeout / terminationGracePeriodSeconds, above the grace plus about
45 s. docs/production.md has a unit and an entrypoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
import anyio.abc
import httpx
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import Abort, ObjectNotFound
from prefect.logging import get_logger
from prefect.settings import get_current_settings
from prefect.states import AwaitingRetry
from prefect.utilities.engine import propose_state
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessWorker,
    ProcessWorkerResult,
)

from deployments.flow_run import HAND_BACK_SIGNAL, SIGTERM_BEHAVIOR_ENV
from storyloom import health
from storyloom.settings import Settings, get_settings

if TYPE_CHECKING:
    from prefect.client.schemas.objects import Flow as APIFlow
    from prefect.client.schemas.objects import FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

API_LIMITS_ENV = "STORYLOOM_API_LIMITS"
HEALTH_DIR_ENV = "STORYLOOM_WORKER_HEALTH_DIR"

# Exit codes, for supervisors and scripts.
EXIT_OK = 0
EXIT_CANNOT_START = 1
EXIT_SERVER_LOST = 3
EXIT_ACCOUNT_ERRORS = 4

# How long a claimed run may take to become Pending before the next poll goes ahead.
CLAIM_SETTLE_SECONDS = 10.0
# A run claimed by a poll that never reached `run` (another worker won it, or its
# submission failed) stops counting as this worker's after this long.
CLAIM_FORGET_SECONDS = 60.0
# How often the worker asks the server whether it answers (its /health).
PROBE_SECONDS = 5.0

logger = get_logger("storyloom.worker")


class ServerLost(Exception):
    """The Prefect server has not answered for too long, or refuses this worker."""


class AccountErrors(Exception):
    """A provider answers this worker's runs with nothing but account errors."""


class StoryloomJobConfiguration(ProcessJobConfiguration):
    """The process job configuration, with a storyloom worker's defaults filled in."""

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: APIFlow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: UUID | None = None,
    ) -> None:
        if self.command is None:
            # Run by the worker's own interpreter, whatever PATH says.
            self.command = shlex.join([sys.executable, "-m", "deployments.flow_run"])
        super().prepare_for_flow_run(
            flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id
        )
        self.env.setdefault(SIGTERM_BEHAVIOR_ENV, "reschedule")
        self.env.setdefault(API_LIMITS_ENV, "true")
        if worker_name:
            folder = health.providers_dir(get_settings().home, worker_name)
            self.env[HEALTH_DIR_ENV] = str(folder)


@dataclass
class _Attempt:
    """A flow run whose supervisor process this worker started and still waits on."""

    flow_run_id: UUID
    pid: int | None = None
    handing_back: bool = False


class _PidStatus:
    """Passes the started pid on to Prefect, keeping it for the hand-back."""

    def __init__(self, attempt: _Attempt, status: anyio.abc.TaskStatus[int]) -> None:
        self._attempt = attempt
        self._status = status

    def started(self, value: int | None = None) -> None:
        self._attempt.pid = value
        self._status.started(value)  # type: ignore[arg-type]


class StoryloomProcessWorker(ProcessWorker):
    """Prefect's ProcessWorker that can stop taking runs and give running ones back."""

    job_configuration = StoryloomJobConfiguration

    @classmethod
    def __dispatch_key__(cls) -> str:
        # Registered under a key of its own, so `process` still means Prefect's class
        # (setup templates pools from it); `type` stays "process" for the server.
        return "storyloom-process"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handing_back = False
        self.attempts: dict[UUID, _Attempt] = {}
        self.claimed: dict[UUID, float] = {}  # claimed by a poll, not in `run` yet
        self.hand_back_failures: set[UUID] = set()

    @property
    def busy(self) -> int:
        """Flow runs claimed or running here."""
        now = time.monotonic()
        for run_id, at in list(self.claimed.items()):
            if now - at > CLAIM_FORGET_SECONDS:
                self.claimed.pop(run_id, None)
        return len(self.claimed.keys() | self.attempts.keys())

    async def poll(self) -> list[FlowRun]:
        """Claim what the pool has for this worker, then wait until those runs have
        left Scheduled (see the module docstring)."""
        runs = await self.get_and_submit_flow_runs()
        now = time.monotonic()
        for run in runs:
            if run.id not in self.attempts:
                self.claimed.setdefault(run.id, now)
        waiting = {run.id for run in runs}
        with anyio.move_on_after(CLAIM_SETTLE_SECONDS):
            while waiting:
                waiting -= self.attempts.keys()
                if waiting:
                    found = await self.client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(waiting))),
                        limit=len(waiting),
                    )
                    waiting = {run.id for run in found if run.state and run.state.is_scheduled()}
                if waiting:
                    await anyio.sleep(0.05)
        return runs

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        status = task_status if task_status is not None else anyio.TASK_STATUS_IGNORED
        self.claimed.pop(flow_run.id, None)
        if self.handing_back:
            # Claimed before the signal, reached here after the grace ended: give it
            # back without starting it. A falsy pid tells Prefect no process started.
            await self.reschedule(flow_run.id)
            status.started(0)
            return ProcessWorkerResult(status_code=0, identifier="")
        attempt = _Attempt(flow_run.id)
        self.attempts[flow_run.id] = attempt
        try:
            result = await super().run(flow_run, configuration, _PidStatus(attempt, status))
        finally:
            self.attempts.pop(flow_run.id, None)
        if attempt.handing_back and result.status_code != 0:
            # The supervisor did not get to hand the run back (it was killed at the end
            # of the bound): the run goes back to the pool from here.
            await self.reschedule(flow_run.id)
        return result

    async def hand_back_all(self, timeout: float) -> None:
        """Signal each running run's launcher (once its engine runs), whose supervisor then
        hands the run back; wait up to `timeout`, then stop what is left (SIGKILL, the whole
        process tree)."""
        self.handing_back = True
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            for attempt in list(self.attempts.values()):
                if attempt.pid and not attempt.handing_back and _supervising(attempt.pid):
                    logger.info(
                        "Handing back flow run %s (pid %d)", attempt.flow_run_id, attempt.pid
                    )
                    attempt.handing_back = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(attempt.pid, HAND_BACK_SIGNAL)
            await anyio.sleep(0.2)
        for attempt in list(self.attempts.values()):
            if attempt.pid:
                logger.error(
                    "Flow run %s did not stop within %.0f s: killing it",
                    attempt.flow_run_id,
                    timeout,
                )
                _kill_tree(attempt.pid)
        with anyio.move_on_after(15):
            while self.attempts:
                await anyio.sleep(0.1)

    async def reschedule(self, flow_run_id: UUID) -> bool:
        """Put a run this worker holds back in the pool: AwaitingRetry, now."""
        message = f"Handed back by worker {self.name!r} on shutdown"
        try:
            current = (await self.client.read_flow_run(flow_run_id)).state
            if current is not None and current.is_scheduled():
                return True
            if current is not None and current.is_final() and not current.is_crashed():
                logger.info("Flow run %s is already %s: left as it is", flow_run_id, current.name)
                return True
            try:
                state = await propose_state(
                    self.client, AwaitingRetry(message=message), flow_run_id=flow_run_id
                )
            except Abort:
                state = None
            if state is None or not state.is_scheduled():
                await self.client.set_flow_run_state(
                    flow_run_id, AwaitingRetry(message=message), force=True
                )
        except ObjectNotFound:
            return True
        except Exception:
            logger.exception("Could not hand back flow run %s", flow_run_id)
            self.hand_back_failures.add(flow_run_id)
            return False
        logger.info("Flow run %s is back in the pool (AwaitingRetry)", flow_run_id)
        return True


def _supervising(pid: int) -> bool:
    """Whether the run's supervisor has started its engine (deployments/flow_run.py ->
    `prefect flow-run execute` -> the engine): it installs its SIGTERM handler before
    that, so the hand-back is heard; sent earlier, the SIGTERM would kill it."""
    from storyloom.serve import process_tree

    return len(process_tree(pid)) >= 3


def _kill_tree(pid: int) -> None:
    from storyloom.serve import process_tree

    for member in reversed(process_tree(pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)


def run_worker(
    pool: str,
    *,
    limit: int | None = None,
    name: str | None = None,
    grace_seconds: float | None = None,
    settings: Settings | None = None,
) -> int:
    """Run a process worker for `pool` until SIGTERM or SIGINT; the exit code.

    `limit` caps the flow runs this worker runs at once (the pool's own limit applies
    too); `grace_seconds` overrides STORYLOOM_WORKER_GRACE_SECONDS. See the module
    docstring for the exit codes. Blocks; call it from the main thread, outside an
    event loop.
    """
    settings = settings or get_settings()
    if grace_seconds is not None:
        settings = settings.model_copy(update={"worker_grace_seconds": max(grace_seconds, 0.0)})
    if limit is not None and limit < 1:
        logger.error("--limit must be at least 1 (got %s)", limit)
        return EXIT_CANNOT_START
    if not get_current_settings().api.url:
        logger.error("PREFECT_API_URL is not set: a worker needs a Prefect server to poll")
        return EXIT_CANNOT_START
    worker_name = name or f"{pool}-{socket.gethostname()}-{os.getpid()}"
    return asyncio.run(_serve(pool, limit=limit, name=worker_name, settings=settings))


class _Health:
    """The worker's own view of its health, mirrored to its status file."""

    def __init__(self, settings: Settings, pool: str, name: str) -> None:
        self.settings = settings
        self.home = settings.home
        self.status = health.WorkerStatus(
            name=name,
            pool=pool,
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.time(),
            server_timeout_seconds=settings.worker_server_timeout_seconds,
            account_error_seconds=settings.worker_account_error_seconds,
        )
        self.last_contact = time.monotonic()  # the start counts as contact
        self.refused: str | None = None
        # Notes a previous worker of this name left are about another process.
        for stale in health.account_troubles(self.providers):
            (self.providers / f"{stale.provider}.json").unlink(missing_ok=True)

    @property
    def providers(self) -> Path:
        return health.providers_dir(self.home, self.status.name)

    def contact(self) -> None:
        self.last_contact = time.monotonic()
        self.status.contact = time.time()

    def failed(self, what: str, exc: Exception) -> None:
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (401, 403):
            self.refused = f"the Prefect server refused the worker ({exc.response.status_code})"
        logger.warning("%s failed: %s", what, _one_line(exc))

    def save(self, state: str) -> None:
        self.status.state = state
        with contextlib.suppress(OSError):
            self.status.save(self.home)

    def verdict(self) -> Exception | None:
        """Why the worker must stop now, if it must."""
        if self.refused:
            return ServerLost(self.refused)
        silent = time.monotonic() - self.last_contact
        if silent > self.settings.worker_server_timeout_seconds:
            url = get_current_settings().api.url or "?"
            from deployments.config import mask_url

            return ServerLost(
                f"the Prefect server at {mask_url(url)} has not answered for {silent:.0f} s"
            )
        now = time.time()
        for trouble in health.account_troubles(self.providers):
            if now - trouble.since >= self.settings.worker_account_error_seconds:
                return AccountErrors(
                    f"{trouble.provider} has answered only account errors for"
                    f" {now - trouble.since:.0f} s ({trouble.error}): every run would fail"
                    " the same way"
                )
        return None


async def _serve(pool: str, *, limit: int | None, name: str, settings: Settings) -> int:
    stopping = asyncio.Event()
    hurry = asyncio.Event()
    reason: list[Exception] = []

    def on_signal(signum: int) -> None:
        if not stopping.is_set():
            logger.info(
                "%s: taking no new runs; running ones get %.0f s to finish"
                " (signal again to hand them back now)",
                signal.Signals(signum).name,
                settings.worker_grace_seconds,
            )
            stopping.set()
        elif not hurry.is_set():
            logger.info("%s again: handing running flow runs back now", signal.Signals(signum).name)
            hurry.set()

    def stop_for(problem: Exception) -> None:
        if not reason:
            reason.append(problem)
        stopping.set()
        hurry.set()

    state = _Health(settings, pool, name)
    state.save("starting")
    try:
        with _signal_handlers(on_signal):
            worker = StoryloomProcessWorker(
                work_pool_name=pool,
                name=name,
                limit=limit,
                prefetch_seconds=settings.worker_prefetch_seconds,
                create_pool_if_not_found=False,
            )
            async with worker:
                if not await _pool_exists(worker, pool, state):
                    return EXIT_CANNOT_START
                async with anyio.create_task_group() as services:
                    services.start_soon(_keep_in_sync, worker, settings, state)
                    services.start_soon(_probe, worker, settings, state)
                    services.start_soon(_watch, state, stop_for, settings)
                    async with anyio.create_task_group() as polling:
                        polling.start_soon(_poll, worker, settings.worker_query_seconds, state)
                        logger.info(
                            "Worker %r polling pool %r every %g s (limit %s)",
                            worker.name,
                            pool,
                            settings.worker_query_seconds,
                            limit if limit is not None else "the pool's",
                        )
                        await stopping.wait()
                        state.save("stopping")
                        polling.cancel_scope.cancel()

                    if reason and isinstance(reason[0], ServerLost):
                        # Nothing can be handed back, nor the worker's own context left
                        # (it would wait on its runs and the server): its runs'
                        # supervisors go on in their own sessions and report when the
                        # server is back; the worker goes now.
                        _stop_now(state, settings, name, reason[0], EXIT_SERVER_LOST)
                    await _drain(worker, settings.worker_grace_seconds, hurry)
                    if worker.busy:
                        # Prefect's supervisor gives the engine 30 s after SIGTERM.
                        await worker.hand_back_all(timeout=30 + settings.worker_kill_seconds + 5)
                    services.cancel_scope.cancel()
    finally:
        with contextlib.suppress(OSError):
            state.status.remove(settings.home)
    if reason:
        _say_why(name, reason[0])
        return EXIT_ACCOUNT_ERRORS
    if worker.hand_back_failures:
        logger.error("Could not hand back: %s", ", ".join(map(str, worker.hand_back_failures)))
        return EXIT_CANNOT_START
    logger.info("Worker %r stopped", name)
    return EXIT_OK


def _say_why(name: str, problem: Exception) -> None:
    # The one line a supervisor's log shows.
    print(f"storyloom worker {name} stops: {problem}", file=sys.stderr, flush=True)


def _stop_now(state: _Health, settings: Settings, name: str, problem: Exception, code: int) -> None:
    with contextlib.suppress(OSError):
        state.status.remove(settings.home)
    _say_why(name, problem)
    logging.shutdown()
    os._exit(code)


async def _drain(worker: StoryloomProcessWorker, grace: float, hurry: asyncio.Event) -> None:
    """Wait up to `grace` seconds (or a second signal) for the running runs to end."""
    if worker.busy:
        logger.info("Waiting up to %.0f s for %d flow run(s)", grace, worker.busy)
    with anyio.move_on_after(grace):
        while worker.busy and not hurry.is_set():
            await anyio.sleep(0.2)


async def _poll(worker: StoryloomProcessWorker, interval: float, state: _Health) -> None:
    while True:
        try:
            await worker.poll()
        except Exception as exc:
            state.failed("Polling for flow runs", exc)
        state.save("polling")
        await anyio.sleep(interval)


async def _keep_in_sync(worker: StoryloomProcessWorker, settings: Settings, state: _Health) -> None:
    """Heartbeat, and pick up changes to the pool (its job template)."""
    while True:
        try:
            await worker.sync_with_backend()
        except Exception as exc:
            state.failed("Worker heartbeat", exc)
            # Until a sync succeeds again, retry at the poll's pace.
            await anyio.sleep(settings.worker_query_seconds)
            continue
        await anyio.sleep(worker.heartbeat_interval_seconds)


async def _probe(worker: StoryloomProcessWorker, settings: Settings, state: _Health) -> None:
    """Whether the server answers, asked directly: the heartbeat goes over a channel
    that reconnects by itself, and a poll before the first sync asks nothing."""
    while True:
        problem = await worker.client.api_healthcheck()
        if problem is None:
            state.contact()
        else:
            state.failed("Reaching the Prefect server", problem)
        await anyio.sleep(min(PROBE_SECONDS, settings.worker_server_timeout_seconds / 4))


async def _watch(state: _Health, stop_for: Callable[[Exception], None], settings: Settings) -> None:
    while True:
        problem = state.verdict()
        if problem is not None:
            stop_for(problem)
            return
        await anyio.sleep(min(1.0, settings.worker_query_seconds))


async def _pool_exists(worker: StoryloomProcessWorker, pool: str, state: _Health) -> bool:
    try:
        found = await worker.client.read_work_pool(pool)
    except ObjectNotFound:
        logger.error("Work pool %r does not exist: run `storyloom setup` first", pool)
        return False
    except Exception as exc:
        # The server may be starting: the worker keeps trying, within its timeout.
        state.failed(f"Reading work pool {pool!r}", exc)
        return True
    state.contact()
    if found.type != ProcessWorker.type:
        logger.warning("Work pool %r is of type %r; this is a process worker", pool, found.type)
    return True


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@contextlib.contextmanager
def _signal_handlers(handler: Callable[[int], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, handler, int(signum))
        except (NotImplementedError, RuntimeError, ValueError):
            logger.warning("Cannot handle %s here: it will not stop the worker gently", signum.name)
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    """`python -m deployments.worker --pool NAME [--limit N] [--name X] [--grace-seconds S]`."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.worker",
        description="Run a Prefect process worker for a storyloom work pool.",
    )
    parser.add_argument("--pool", required=True, help="work pool to take runs from")
    parser.add_argument("--limit", type=int, help="flow runs at a time on this worker")
    parser.add_argument("--name", help="worker name (default: POOL-HOST-PID)")
    parser.add_argument(
        "--grace-seconds",
        type=float,
        help="after SIGTERM, how long running flow runs may take to finish"
        " (default: STORYLOOM_WORKER_GRACE_SECONDS or 300)",
    )
    args = parser.parse_args(argv)
    return run_worker(args.pool, limit=args.limit, name=args.name, grace_seconds=args.grace_seconds)


if __name__ == "__main__":
    sys.exit(main())

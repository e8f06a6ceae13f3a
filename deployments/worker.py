"""`storyloom worker --pool NAME`: a Prefect process worker that shuts down without losing work.

Prefect's own `prefect worker start` polls every 10 s and was seen still running 10 s
after SIGTERM. This worker is Prefect's ProcessWorker run from our own asyncio loop:

- it polls the pool every second (STORYLOOM_WORKER_QUERY_SECONDS) and looks only a
  couple of seconds ahead (STORYLOOM_WORKER_PREFETCH_SECONDS);
- it does not poll while a run it claimed is still becoming Pending: the pool's limit
  counts Pending and Running runs, and Prefect's query skips a run whose state change
  is in progress (row locked), so a poll that lands then finds that slot free and hands
  out one more run (seen on a loaded server: two `images` runs with a limit of 1);
- the flow runs it starts get STORYLOOM_API_LIMITS=true unless it is already set (in the
  worker's environment or the deployment's job variables), so their paid calls take the
  per-API concurrency slots `storyloom setup` created;
- on SIGTERM or SIGINT it takes no new run at once, lets the runs it has finish within
  a grace period (STORYLOOM_WORKER_GRACE_SECONDS, 300 s; a second signal ends it
  early), then hands back whatever is still running: the run goes back to
  AwaitingRetry (a Scheduled state) for another worker, and its process is stopped.
  Tasks cache their results by input, so the rerun pays for nothing twice. Exit 0.

Handing back uses Prefect's own mechanism for it (what `prefect flow-run execute` does
with PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule): the "reschedule" intent
goes to the flow run's engine over its control channel, so the engine exits without
reporting a state; only then is the process stopped and the run set to AwaitingRetry.
A run is never marked Crashed on the way, so no alert fires and no crash hook runs.
That needs the run's control channel, which ProcessWorker.run keeps to itself: `run`
below is ProcessWorker.run (Prefect 3.9) plus the bookkeeping to reach it.

Flow runs start in their own session (process group), so a Ctrl-C in the worker's
terminal reaches the worker alone. Whatever stops the worker must signal the worker
only and wait long enough: systemd KillMode=mixed (the default control-group mode sends
SIGTERM to the flow runs too, and they end Crashed) and TimeoutStopSec, or a container's
stop timeout / terminationGracePeriodSeconds, above the grace plus about 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
import anyio.abc
from prefect.exceptions import Abort, ObjectNotFound
from prefect.flows import load_flow_from_flow_run
from prefect.logging import get_logger
from prefect.runner._control_channel import ControlSignalStatus
from prefect.runner._flow_run_executor import FlowRunExecutionResult, FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.runner._starter_engine import EngineCommandStarter
from prefect.runner._workspace_starter import WorkspaceResolvingEngineCommandStarter
from prefect.settings import get_current_settings
from prefect.states import AwaitingRetry
from prefect.utilities.engine import propose_state
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessWorker,
    ProcessWorkerResult,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import WorkerFlowRunResponse
    from prefect.runner._flow_run_executor import FlowRunExecutor

API_LIMITS_ENV = "STORYLOOM_API_LIMITS"

logger = get_logger("storyloom.worker")


class WorkerSettings(BaseSettings):
    """How a worker polls and how it shuts down (STORYLOOM_WORKER_*)."""

    model_config = SettingsConfigDict(
        env_prefix="STORYLOOM_WORKER_", env_file=".env", extra="ignore"
    )

    # After SIGTERM: how long running flow runs may take to finish before they are
    # handed back to the pool.
    grace_seconds: float = Field(300.0, ge=0)
    # Seconds between polls for new runs (Prefect's default is 10).
    query_seconds: float = Field(1.0, gt=0, le=60)
    # How far ahead of their start time scheduled runs are claimed.
    prefetch_seconds: int = Field(2, ge=0)
    # A handed-back run's process gets SIGTERM, then SIGKILL after this long.
    kill_seconds: float = Field(10.0, ge=0)


def run_worker(
    pool: str,
    *,
    limit: int | None = None,
    name: str | None = None,
    grace_seconds: float | None = None,
    settings: WorkerSettings | None = None,
) -> int:
    """Run a process worker for `pool` until SIGTERM or SIGINT; the exit code.

    `limit` caps the flow runs this worker runs at once (the pool's own limit applies
    too); `grace_seconds` overrides STORYLOOM_WORKER_GRACE_SECONDS. 0 after a clean
    shutdown (runs finished or handed back), 1 when the worker cannot run (no API URL,
    no such pool) or a run could not be handed back. Blocks; call it from the main
    thread, outside an event loop.
    """
    settings = settings or WorkerSettings()
    if grace_seconds is not None:
        settings = settings.model_copy(update={"grace_seconds": max(grace_seconds, 0.0)})
    if limit is not None and limit < 1:
        logger.error("--limit must be at least 1 (got %s)", limit)
        return 1
    if not get_current_settings().api.url:
        logger.error("PREFECT_API_URL is not set: a worker needs a Prefect server to poll")
        return 1
    worker_name = name or f"{pool}-{socket.gethostname()}-{os.getpid()}"
    return asyncio.run(_serve(pool, limit=limit, name=worker_name, settings=settings))


@dataclass
class _Attempt:
    """A flow run whose process this worker started and still supervises."""

    flow_run_id: UUID
    context: FlowRunExecutorContext
    scope: anyio.CancelScope
    pid: int
    handing_back: bool = False


class StoryloomProcessWorker(ProcessWorker):
    """Prefect's ProcessWorker that can stop taking runs and give running ones back."""

    @classmethod
    def __dispatch_key__(cls) -> str:
        # Registered under a key of its own, so `process` still means Prefect's class
        # (setup templates pools from it); `type` stays "process" for the server.
        return "storyloom-process"

    def __init__(self, *args: Any, kill_seconds: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kill_seconds = kill_seconds
        self._accepting = True
        self._handing_back = False
        self._attempts: dict[UUID, _Attempt] = {}
        self._claiming: set[UUID] = set()  # claimed, not Pending yet
        self.hand_back_failures: set[UUID] = set()

    @property
    def busy(self) -> int:
        """Flow runs being submitted or running here."""
        return len(self._submitting_flow_run_ids | self._attempts.keys())

    def stop_accepting(self) -> None:
        """Take no run from the pool from now on (runs already claimed go on)."""
        self._accepting = False

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        # Not while a claimed run is becoming Pending: until that commits, the server
        # counts its slot as free (see the module docstring).
        if self._claiming:
            return []
        return await super().get_and_submit_flow_runs()

    async def _submit_run(self, flow_run: FlowRun) -> None:
        # Started (start_soon) by the poll that claimed the run, before the next poll.
        self._claiming.add(flow_run.id)
        try:
            await super()._submit_run(flow_run)
        finally:
            self._claiming.discard(flow_run.id)

    async def _propose_pending_state(self, flow_run: FlowRun) -> bool:
        try:
            return await super()._propose_pending_state(flow_run)
        finally:
            self._claiming.discard(flow_run.id)

    async def _submit_scheduled_flow_runs(
        self, flow_run_response: list[WorkerFlowRunResponse]
    ) -> list[FlowRun]:
        # A poll that was under way when the signal came claims nothing: the runs it
        # found stay Scheduled for other workers.
        if not self._accepting:
            return []
        return await super()._submit_scheduled_flow_runs(flow_run_response)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        status = task_status if task_status is not None else anyio.TASK_STATUS_IGNORED
        if self._handing_back:
            # Claimed before the signal, reached here after the grace ended: give it
            # back without starting it. A falsy pid tells the base class no process
            # was started, so it records none.
            await self.reschedule(flow_run.id)
            status.started(0)
            return ProcessWorkerResult(status_code=0, identifier="")

        configuration.env.setdefault(API_LIMITS_ENV, "true")
        working_dir: contextlib.AbstractContextManager[str | Path] = (
            tempfile.TemporaryDirectory(suffix="prefect")
            if not configuration.working_dir
            else contextlib.nullcontext(configuration.working_dir)
        )
        execution: FlowRunExecutionResult | None = None
        attempt: _Attempt | None = None
        with working_dir as directory, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            async with FlowRunExecutorContext() as context:
                executor = _executor(context, flow_run, configuration, Path(directory).resolve())

                async def execute(
                    *, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED
                ) -> None:
                    nonlocal execution
                    execution = await executor.submit(task_status=task_status)

                try:
                    async with anyio.create_task_group() as group:
                        handle: ProcessHandle = await group.start(execute)
                        if handle.pid is None:
                            raise RuntimeError("Flow run process has no PID")
                        attempt = _Attempt(flow_run.id, context, group.cancel_scope, handle.pid)
                        self._attempts[flow_run.id] = attempt
                        status.started(handle.pid)
                finally:
                    self._attempts.pop(flow_run.id, None)

        if attempt is not None and attempt.handing_back:
            # Its state is the hand-back's business: report no crash of our own.
            return ProcessWorkerResult(status_code=0, identifier=str(attempt.pid))
        if execution is None or execution.status_code is None:
            raise RuntimeError("Failed to start flow run process.")
        return ProcessWorkerResult(
            status_code=execution.status_code, identifier=str(execution.handle.pid)
        )

    async def hand_back_all(self, timeout: float) -> None:
        """Give every run still here back to the pool; wait up to `timeout` for them to go.

        Loops, because a run claimed before the signal may only now be starting.
        """
        self._handing_back = True
        with anyio.move_on_after(timeout):
            while self.busy:
                waiting = [a for a in self._attempts.values() if not a.handing_back]
                if not waiting:
                    await anyio.sleep(0.1)
                    continue
                async with anyio.create_task_group() as group:
                    for attempt in waiting:
                        attempt.handing_back = True
                        group.start_soon(self._hand_back, attempt)
        if self.busy:
            logger.error("%d flow run(s) did not stop within %.0f s", self.busy, timeout)

    async def _hand_back(self, attempt: _Attempt) -> None:
        run_id = attempt.flow_run_id
        channel = attempt.context.control_channel
        answer = await channel.signal(run_id, "reschedule")
        if answer is ControlSignalStatus.ALREADY_CONCLUDED:
            # The engine reported its final state as we asked: the run is done.
            attempt.handing_back = False
            logger.info("Flow run %s finished as it was being handed back", run_id)
            return
        acknowledged = answer is ControlSignalStatus.ACKNOWLEDGED
        logger.info(
            "Handing back flow run %s (pid %d)%s",
            run_id,
            attempt.pid,
            "" if acknowledged else ": its engine did not answer, so it is killed",
        )
        # Acknowledged: the engine exits on SIGTERM without reporting a state (SIGKILL
        # after kill_seconds). Not: SIGKILL at once, so it reports nothing either.
        await attempt.context.process_manager.kill(
            run_id, grace_seconds=self._kill_seconds, force=not acknowledged
        )
        # No await between a forced kill and this: the executor must not see the
        # exit code, or it reports the run Crashed.
        attempt.scope.cancel()
        await self.reschedule(run_id)

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


def _executor(
    context: FlowRunExecutorContext,
    flow_run: FlowRun,
    configuration: ProcessJobConfiguration,
    workspace_root: Path,
) -> FlowRunExecutor:
    """The executor ProcessWorker.run would make for this run."""
    if configuration._command_configured:
        starter = EngineCommandStarter(
            command=configuration.command,
            cwd=workspace_root,
            env=configuration.env,
            stream_output=configuration.stream_output,
            control_channel=context.control_channel,
        )
        return context.create_executor(
            flow_run, starter, resolve_flow=load_flow_from_flow_run, propose_submitting=False
        )
    workspace_starter = WorkspaceResolvingEngineCommandStarter(
        workspace_root=workspace_root,
        command=None,
        stream_output=configuration.stream_output,
        control_channel=context.control_channel,
        source_cwd=workspace_root,
        environment=configuration.env,
    )
    context.call_after_exit(workspace_starter.close)
    return context.create_executor(
        flow_run,
        workspace_starter,
        propose_submitting=False,
        hook_runner=workspace_starter.hook_runner,
    )


async def _serve(pool: str, *, limit: int | None, name: str, settings: WorkerSettings) -> int:
    stopping = asyncio.Event()
    hurry = asyncio.Event()

    def on_signal(signum: int) -> None:
        if not stopping.is_set():
            logger.info(
                "%s: taking no new runs; running ones get %.0f s to finish"
                " (signal again to hand them back now)",
                signal.Signals(signum).name,
                settings.grace_seconds,
            )
            stopping.set()
        elif not hurry.is_set():
            logger.info("%s again: handing running flow runs back now", signal.Signals(signum).name)
            hurry.set()

    with _signal_handlers(on_signal):
        worker = StoryloomProcessWorker(
            work_pool_name=pool,
            name=name,
            limit=limit,
            prefetch_seconds=settings.prefetch_seconds,
            create_pool_if_not_found=False,
            kill_seconds=settings.kill_seconds,
        )
        async with worker:
            if not await _pool_exists(worker, pool):
                return 1
            async with anyio.create_task_group() as services:
                services.start_soon(_keep_in_sync, worker, settings.query_seconds)
                async with anyio.create_task_group() as polling:
                    polling.start_soon(_poll, worker, settings.query_seconds)
                    logger.info(
                        "Worker %r polling pool %r every %g s (limit %s)",
                        worker.name,
                        pool,
                        settings.query_seconds,
                        limit if limit is not None else "the pool's",
                    )
                    await stopping.wait()
                    worker.stop_accepting()
                    polling.cancel_scope.cancel()

                await _drain(worker, settings.grace_seconds, hurry)
                if worker.busy:
                    await worker.hand_back_all(timeout=settings.kill_seconds + 30)
                services.cancel_scope.cancel()
    if worker.hand_back_failures:
        logger.error("Could not hand back: %s", ", ".join(map(str, worker.hand_back_failures)))
        return 1
    logger.info("Worker %r stopped", name)
    return 0


async def _drain(worker: StoryloomProcessWorker, grace: float, hurry: asyncio.Event) -> None:
    """Wait up to `grace` seconds (or a second signal) for the running runs to end."""
    if worker.busy:
        logger.info("Waiting up to %.0f s for %d flow run(s)", grace, worker.busy)
    with anyio.move_on_after(grace):
        while worker.busy and not hurry.is_set():
            await anyio.sleep(0.2)


async def _poll(worker: StoryloomProcessWorker, interval: float) -> None:
    while True:
        try:
            await worker.get_and_submit_flow_runs()
        except Exception as exc:
            logger.warning("Polling for flow runs failed: %s", exc)
        await anyio.sleep(interval)


async def _keep_in_sync(worker: StoryloomProcessWorker, query_seconds: float) -> None:
    """Heartbeat, and pick up changes to the pool (its job template)."""
    while True:
        synced = worker.is_setup and worker._has_successfully_synced
        # Until the first sync succeeds (server not up yet) retry at the poll's pace.
        await anyio.sleep(worker.heartbeat_interval_seconds if synced else query_seconds)
        try:
            await worker.sync_with_backend()
        except Exception as exc:
            logger.warning("Worker heartbeat failed: %s", exc)


async def _pool_exists(worker: StoryloomProcessWorker, pool: str) -> bool:
    try:
        found = await worker.client.read_work_pool(pool)
    except ObjectNotFound:
        logger.error("Work pool %r does not exist: run `storyloom setup` first", pool)
        return False
    except Exception as exc:
        # The server may be starting: the worker keeps trying, as Prefect's does.
        logger.warning("Could not read work pool %r yet: %s", pool, exc)
        return True
    if found.type != ProcessWorker.type:
        logger.warning("Work pool %r is of type %r; this is a process worker", pool, found.type)
    return True


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

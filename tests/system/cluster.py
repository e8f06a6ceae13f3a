"""A production-shaped storyloom on one machine, for system tests: a Prefect server on
PostgreSQL, `storyloom setup`, one worker per pool, the story database on PostgreSQL,
and the real provider clients talking to the loopback fakes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import httpx

from storyloom.models import parse_story
from storyloom.serve import process_tree
from storyloom.store.repository import StoryStore
from tests import postgres
from tests.fakes.stack import Fakes, running_fakes

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
POOLS = {"story": 2, "images": 1, "audio": 2}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    env: dict[str, str]
    api_url: str
    story_db: str
    logs: Path
    fakes: Fakes
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command (storyloom, prefect) against this cluster, with `env` on top of
        the cluster's environment."""
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]], env={**self.env, **(env or {})}, cwd=ROOT,
            capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def stop_workers(self) -> None:
        for worker in self.workers.values():
            _stop(worker)

    def start_worker(self, pool: str, key: str | None = None) -> subprocess.Popen[bytes]:
        """A worker for `pool`, kept under `key` in `workers` (the pool's name unless
        given: a second worker of a pool needs a key of its own)."""
        key = key or pool
        log = (self.logs / f"worker-{key}.log").open("ab")
        worker = subprocess.Popen(
            [str(BIN / "storyloom"), "worker", "--pool", pool], env=self.env, cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.workers[key] = worker
        return worker


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server did not become healthy: {log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def redis_env(url: str, docket_url: str, locks_url: str) -> dict[str, str]:
    """The scale-out settings of docs/production.md: the server's event messaging, causal
    ordering and concurrency leases on Redis at `url`, its background tasks (the docket)
    at `docket_url`, and the task-cache lock at `locks_url`."""
    return {
        "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": url,
        "PREFECT_SERVER_DOCKET_URL": docket_url,
        "STORYLOOM_CACHE_LOCKS": locks_url,
    }


@contextmanager
def cluster(tmp: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    """Start everything; stop everything on the way out, leaving no process behind."""
    with ExitStack() as stack:
        server_engine = stack.enter_context(postgres.postgres_server())
        prefect_db = stack.enter_context(postgres.fresh_database(server_engine, "prefect"))
        story_db = stack.enter_context(postgres.fresh_database(server_engine, "storyloom"))
        fakes = stack.enter_context(running_fakes())
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        logs = tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PREFECT_", "STORYLOOM_"))
        }
        env |= {
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_db.replace(
                "postgresql+psycopg", "postgresql+asyncpg"
            ),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
            "STORYLOOM_HOME": str(tmp / "var"),
            "STORYLOOM_DATABASE_URL": story_db,
            "STORYLOOM_RETRY_WAIT_SCALE": "0",
            **fakes.env,
            "NO_PROXY": "127.0.0.1,localhost",
            **(extra_env or {}),
        }
        server_log = logs / "server.log"
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=tmp, stdout=server_log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(_stop, server, signal.SIGINT)
        _wait_healthy(api_url, server, server_log)
        running = Cluster(env, api_url, story_db, logs, fakes)
        # As an operator does once per upgrade: every other storyloom process refuses a
        # story database that is not at the code's schema revision.
        upgrade = running.run("storyloom", "db", "upgrade")
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        stack.callback(running.stop_workers)
        yield running


def flow_run_id(output: str) -> UUID:
    """The flow run id that `prefect deployment run` printed."""
    for line in output.splitlines():
        if "UUID:" in line:
            return UUID(line.split("UUID:")[1].strip())
    raise AssertionError(f"no flow run id in: {output}")


def kill_like_a_dead_machine(process: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL a worker and every process under it (its flow runs sit in sessions of
    their own, out of its process group), as one: each is stopped first, so none of them
    sees another die and reports anything. The pids killed."""
    stopped: list[int] = []
    while True:
        found = [pid for pid in process_tree(process.pid) if pid not in stopped]
        if not found:
            break
        for pid in found:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
    for pid in stopped:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)
    return stopped


SAMPLE = ROOT / "storyloom" / "samples" / "life-story.json"


@contextmanager
def working_cluster(
    tmp: Path, extra_env: Mapping[str, str] | None = None, workers_per_pool: int = 1
) -> Iterator[Cluster]:
    """A cluster after `storyloom setup`, with `workers_per_pool` workers per pool (kept
    under the pool's name, then "<pool>-2", ...)."""
    with cluster(tmp, extra_env) as running:
        setup = running.run("storyloom", "setup")
        assert setup.returncode == 0, setup.stdout + setup.stderr
        for pool in POOLS:
            for n in range(1, workers_per_pool + 1):
                running.start_worker(pool, pool if n == 1 else f"{pool}-{n}")
        yield running


def add_story(running: Cluster, story_id: str) -> None:
    """The sample life story under its own id and title: paid work is cached by its
    inputs, and the same story twice would cost (and call) nothing the second time."""
    raw = (
        SAMPLE.read_text()
        .replace('"asha-verma"', f'"{story_id}"')
        .replace("The Mango Tree at Number Nine", f"The Mango Tree ({story_id})")
    )
    with StoryStore.open(running.story_db) as store:
        store.add_story(parse_story(raw), replace=True)

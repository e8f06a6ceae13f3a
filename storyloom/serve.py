"""`storyloom serve`: everything an application needs, on one machine, under one command.

The embedded default, as child processes of one supervisor:

1. `prefect server start --host 127.0.0.1 --port P`, with PREFECT_HOME at
   `{home}/prefect` (an absolute path) and so its SQLite database there (unless
   PREFECT_SERVER_DATABASE_CONNECTION_URL names another);
2. meanwhile the story database is upgraded here (as `storyloom db upgrade` does), and
   the HTTP API (`storyloom api`) starts: it needs the story database, not Prefect;
3. once `/api/health` answers, `storyloom setup` against that server (PREFECT_API_URL);
4. one `storyloom worker --pool NAME` per pool setup manages (deployments/config.py);
5. when the API answers and every worker has registered with its pool, the addresses of
   the API and of the Prefect UI are printed.

Each child runs in a session (process group) of its own, so a Ctrl-C in the terminal
reaches the supervisor alone and the stop goes in order. Their output goes to
`{home}/logs/`: prefect-server.log, setup.log, api.log, worker-POOL.log (appended to,
one header line a start).

SIGINT or SIGTERM stops everything: the API first, then the workers (which take no new
run, let running ones finish within STORYLOOM_WORKER_GRACE_SECONDS and hand back the
rest; a second signal hands them back at once, a third kills everything), then the
server. Whatever outlives its time gets SIGKILL with its process group and every
process below it: flow runs sit in sessions of their own, out of their worker's group.
The supervisor is a child subreaper (Linux), so a process orphaned on the way is still
its own to kill and reap, and its children get SIGTERM should it be killed itself. If a
child dies unexpectedly the rest are stopped the same way and serve fails with one line
naming the child and its log.

Under systemd use KillMode=mixed (signal the supervisor alone) and a TimeoutStopSec
above the workers' grace plus about a minute.

Nothing here prints the environment: provider keys and database passwords stay out of
the messages (a database error has its password masked), and a Prefect Cloud key
(PREFECT_API_KEY) is not passed on to processes that talk to the local server only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Literal

import httpx

LOCALHOST = "127.0.0.1"
# A first start migrates Prefect's SQLite database: slow on a busy two-core machine.
SERVER_START_SECONDS = 180.0
SETUP_SECONDS = 300.0
# From the server answering to the API answering and every worker registered.
READY_SECONDS = 180.0
API_STOP_SECONDS = 15.0
SETUP_STOP_SECONDS = 10.0
SERVER_STOP_SECONDS = 30.0
# Beyond a worker's own bound (deployments/worker.py: grace, then hand-back within
# kill_seconds + 30 s) before it is killed.
WORKER_STOP_MARGIN = 15.0
POLL_SECONDS = 0.25
# Exit statuses of a child that stopped as asked (uvicorn re-raises the signal it got).
STOPPED_AS_ASKED = {0, -signal.SIGTERM, 128 + signal.SIGTERM}

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

Kind = Literal["server", "setup", "api", "worker"]


class ServeError(Exception):
    """Serve could not start, or stopped because a child died: one line that says why."""


class _Stopped(Exception):
    """A signal asked serve to stop."""


@dataclass(frozen=True)
class ServeOptions:
    """Where the API listens and the Prefect server's port; port 0: any free one."""

    host: str = LOCALHOST
    port: int = 8000
    prefect_port: int = 4200


@dataclass(frozen=True)
class Addresses:
    """What serve prints once everything is up."""

    api: str
    prefect_ui: str
    logs: Path


@dataclass
class Child:
    """A process serve started: its own process group (pgid == pid) and its log."""

    kind: Kind
    title: str  # as messages name it: "the API", "the story worker"
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL it, its process group and every process below it; reap it."""
        if self.alive:  # not reaped yet, so its pid is still its own
            for pid in reversed(process_tree(self.process.pid)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.killed = True
        self.signal(signal.SIGKILL)  # what is left of its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def outcome(self) -> str:
        code = self.process.returncode
        if code is None:
            return "still running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
            return f"killed by signal {-code}"
        return f"exit code {code}"


def run(
    options: ServeOptions,
    *,
    say: Callable[[str], None],
    show: Callable[[str], None],
) -> int:
    """Serve until SIGINT or SIGTERM, then stop everything; the exit code.

    `say` gets progress lines, `show` the addresses once everything is up. Raises
    ServeError, after stopping whatever it had started, when something does not start
    or a child dies.
    """
    from storyloom.settings import get_settings

    settings = get_settings()
    home = settings.home.resolve()
    # Prefect's home under ours, here too: importing Prefect (for the pool names and the
    # workers' grace) creates it.
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    supervisor = Supervisor(options, home, settings.database_url, say=say, show=show)
    return supervisor.run()


@dataclass
class Supervisor:
    options: ServeOptions
    home: Path
    database_url: str
    say: Callable[[str], None]
    show: Callable[[str], None]
    children: list[Child] = field(default_factory=list)
    signals: int = 0
    _signals_at_stop: int = 0
    # The workers' own defaults (deployments/worker.py) until their settings are read.
    worker_hand_back_seconds: float = 10 + 30 + WORKER_STOP_MARGIN
    worker_stop_seconds: float = 300 + 10 + 30 + WORKER_STOP_MARGIN

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        _become_subreaper()
        try:
            try:
                self._start()
                self._watch()
            finally:
                self._stop_all()
        except _Stopped:
            pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._stop_report()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only counted here: the loops act on it (printing from a handler can deadlock).
        self.signals += 1

    # Starting

    def _start(self) -> None:
        options = self.options
        with (
            _listening(options.host, options.port, "the API", "--port") as api_port,
            _listening(
                LOCALHOST, options.prefect_port, "the Prefect server", "--prefect-port"
            ) as prefect_port,
        ):
            if api_port == prefect_port:
                raise ServeError(f"--port and --prefect-port are both {api_port}")
        self.logs.mkdir(parents=True, exist_ok=True)
        prefect_url = _url(LOCALHOST, prefect_port)
        prefect_api = f"{prefect_url}/api"
        env = _child_env(self.home, prefect_api)
        storyloom, prefect = _executable("storyloom"), _executable("prefect")

        server = self._spawn(
            "server", "the Prefect server", "prefect-server.log",
            [prefect, "server", "start", "--host", LOCALHOST, "--port", str(prefect_port)], env,
        )  # fmt: skip
        self.say(f"Prefect server starting on {prefect_url} (log: {server.log})")
        self._open_story_database()
        api = self._spawn(
            "api", "the API", "api.log",
            [storyloom, "api", "--host", options.host, "--port", str(api_port)], env,
        )  # fmt: skip
        self._read_worker_settings()
        self._wait_until(
            lambda: _answers(f"{prefect_api}/health"),
            time.monotonic() + SERVER_START_SECONDS,
            f"the Prefect server did not answer {prefect_api}/health within "
            f"{SERVER_START_SECONDS:.0f} s; its log: {server.log}",
        )

        self.say("running storyloom setup")
        setup = self._spawn("setup", "storyloom setup", "setup.log", [storyloom, "setup"], env)
        self._wait_until(
            lambda: not setup.alive,
            time.monotonic() + SETUP_SECONDS,
            f"storyloom setup did not finish within {SETUP_SECONDS:.0f} s; its log: {setup.log}",
        )
        if setup.process.returncode != 0:
            raise ServeError(f"storyloom setup failed ({setup.outcome()}); its log: {setup.log}")
        self.children.remove(setup)

        workers: dict[str, str] = {}
        for pool in _pools():
            name = f"{pool}-{socket.gethostname()}-{os.getpid()}"
            self._spawn(
                "worker", f"the {pool} worker", f"worker-{pool}.log",
                [storyloom, "worker", "--pool", pool, "--name", name], env,
            )  # fmt: skip
            workers[pool] = name
        self.say(f"workers starting for the pools {', '.join(workers)}")

        api_url = _url(options.host, api_port)
        reach = _url(_reachable(options.host), api_port)
        deadline = time.monotonic() + READY_SECONDS
        self._wait_until(
            lambda: _answers(f"{reach}/openapi.json"), deadline,
            f"the API did not answer {reach}/openapi.json within {READY_SECONDS:.0f} s;"
            f" its log: {api.log}",
        )  # fmt: skip
        with httpx.Client(timeout=5, trust_env=False) as client:
            for pool, name in workers.items():
                self._wait_until(
                    functools.partial(_registered, client, prefect_api, pool, name),
                    deadline,
                    f"the {pool} worker did not register with its pool within "
                    f"{READY_SECONDS:.0f} s; its log: {self.logs / f'worker-{pool}.log'}",
                )
        ready = Addresses(api_url, prefect_url, self.logs)
        self.show(f"storyloom API: {ready.api} (OpenAPI: {ready.api}/docs)")
        self.show(f"Prefect UI:    {ready.prefect_ui}")
        self.show(f"logs:          {ready.logs}")
        self.show("Ctrl-C stops everything.")

    def _spawn(self, kind: Kind, title: str, log_name: str, argv: list[str],
               env: dict[str, str]) -> Child:  # fmt: skip
        log = self.logs / log_name
        with log.open("ab") as out:
            out.write(f"--- storyloom serve, {datetime.now():%Y-%m-%d %H:%M:%S} ---\n".encode())
            out.flush()
            process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent(),
            )  # fmt: skip
        child = Child(kind, title, process, log)
        self.children.append(child)
        return child

    def _open_story_database(self) -> None:
        """Upgrade the story database (`storyloom db upgrade`: the API and the workers
        refuse an older schema), failing with the reason."""
        from storyloom.store.repository import StoryStore

        try:
            StoryStore.open(self.database_url, migrate=True).close()
        except Exception as exc:
            reason = _masked(f"{type(exc).__name__}: {exc}".splitlines()[0], self.database_url)
            raise ServeError(f"cannot open the story database: {reason}") from None

    def _read_worker_settings(self) -> None:
        """How long the workers may take to stop (their settings are theirs to read)."""
        from pydantic import ValidationError

        from storyloom import jobs

        try:
            grace, kill = jobs.worker_stop_bounds()
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ServeError(f"invalid STORYLOOM_WORKER_* settings: {problems}") from None
        self.worker_hand_back_seconds = kill + 30 + WORKER_STOP_MARGIN
        self.worker_stop_seconds = grace + self.worker_hand_back_seconds

    def _wait_until(self, done: Callable[[], bool], deadline: float, too_long: str) -> None:
        while True:
            self._check()
            if done():
                return
            if time.monotonic() > deadline:
                raise ServeError(too_long)
            time.sleep(POLL_SECONDS)

    # Running

    def _check(self) -> None:
        """Raise when a signal came or a child (setup aside) exited."""
        if self.signals:
            raise _Stopped
        for child in self.children:
            if child.kind != "setup" and not child.alive:
                raise ServeError(
                    f"{child.title} (pid {child.process.pid}) exited unexpectedly"
                    f" ({child.outcome()}); its log: {child.log}"
                )

    def _watch(self) -> None:
        for turn in itertools.count():
            self._check()
            if turn % 20 == 0:
                _reap_orphans({child.process.pid for child in self.children})
            time.sleep(POLL_SECONDS)

    # Stopping

    def _stop_all(self) -> None:
        self._signals_at_stop = self.signals
        of = {kind: [c for c in self.children if c.kind == kind] for kind in
              ("api", "worker", "setup", "server")}  # fmt: skip
        self._stop(of["api"], API_STOP_SECONDS)
        self._stop(of["worker"], self.worker_stop_seconds, workers=True)
        self._stop(of["setup"], SETUP_STOP_SECONDS)
        self._stop(of["server"], SERVER_STOP_SECONDS)
        left = _sweep()
        if left:
            self.say(f"could not stop the processes {', '.join(map(str, left))}")

    def _stop(self, children: list[Child], seconds: float, *, workers: bool = False) -> None:
        alive = [c for c in children if c.alive]
        if alive:
            self.say(f"stopping {', '.join(c.title for c in alive)}")
        for child in alive:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + seconds
        hurried = False
        while any(c.alive for c in alive) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            asked = self.signals - self._signals_at_stop
            if asked >= 2:
                self.say("killing everything now")
                break
            if asked >= 1 and workers and not hurried:
                hurried = True
                self.say("handing running flow runs back now (signal again to kill everything)")
                for child in alive:
                    child.signal(signal.SIGTERM)
                deadline = min(deadline, time.monotonic() + self.worker_hand_back_seconds)
        for child in children:
            if child.alive:
                if self.signals - self._signals_at_stop < 2:
                    self.say(f"{child.title} did not stop within {seconds:.0f} s: killed")
                child.kill()
            else:
                child.signal(signal.SIGKILL)  # anything left in its process group

    def _stop_report(self) -> int:
        """0 when every child stopped as asked; else 1, each one said."""
        code = 0
        for child in self.children:
            if child.killed or child.process.returncode not in STOPPED_AS_ASKED:
                self.say(f"{child.title} stopped badly ({child.outcome()}); its log: {child.log}")
                code = 1
        return code


def _pools() -> list[str]:
    """The pools `storyloom setup` manages: one worker each."""
    from storyloom import jobs

    return jobs.pools()


def _child_env(home: Path, prefect_api: str) -> dict[str, str]:
    env = dict(os.environ)
    # A Prefect Cloud key has no business with the local server.
    env.pop("PREFECT_API_KEY", None)
    env |= {
        "STORYLOOM_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": prefect_api,
    }
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Loopback traffic never goes through a proxy the environment names.
    for key in ("NO_PROXY", "no_proxy"):
        if key in env or key == "NO_PROXY":
            hosts = [h for h in env.get(key, "").split(",") if h]
            hosts += [h for h in (LOCALHOST, "localhost") if h not in hosts]
            env[key] = ",".join(hosts)
    return env


def _executable(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServeError(f"cannot find the {name!r} command (is the environment installed?)")
    return found


@contextlib.contextmanager
def _listening(host: str, port: int, what: str, option: str) -> Iterator[int]:
    """The port (a free one for 0), checked free on host; held until the block ends."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM
        )[0]
    except socket.gaierror:
        raise ServeError(f"cannot listen on {host!r}: unknown host") from None
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: a port in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if port:
                raise ServeError(
                    f"port {port} on {host} is not free for {what} ({exc.strerror}):"
                    f" stop what holds it, or choose another with {option}"
                ) from None
            raise ServeError(f"cannot listen on {host} ({exc.strerror})") from None
        yield int(sock.getsockname()[1])


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _reachable(host: str) -> str:
    """Where this machine reaches a server listening on host."""
    return {"0.0.0.0": LOCALHOST, "": LOCALHOST, "::": "::1"}.get(host, host)  # noqa: S104


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _registered(client: httpx.Client, prefect_api: str, pool: str, name: str) -> bool:
    try:
        found = client.post(f"{prefect_api}/work_pools/{pool}/workers/filter", json={})
    except httpx.HTTPError:
        return False
    return found.status_code == 200 and any(w.get("name") == name for w in found.json())


def _masked(text: str, url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return text.replace(url, "<the database URL>")
    return text.replace(str(password), "***") if password else text


# Processes (Linux /proc; elsewhere only process groups are used)


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it, parents first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree = [pid]
    for parent in tree:
        tree.extend(children.get(parent, []))
    return tree


def _reap_orphans(ours: set[int]) -> None:
    """Reap processes orphaned below us (we are their subreaper) once they exit."""
    for pid in process_tree(os.getpid())[1:]:
        if pid not in ours:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _sweep(seconds: float = 10.0) -> list[int]:
    """SIGKILL and reap every process still below us; those that would not go."""
    deadline = time.monotonic() + seconds
    while True:
        left = process_tree(os.getpid())[1:]
        if not left or time.monotonic() > deadline:
            return left
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return function


def _become_subreaper() -> None:
    """Orphans below us become our children, not init's: still ours to kill and reap."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _die_with_parent() -> Callable[[], None] | None:
    """A child's preexec: SIGTERM to it should serve itself be killed (Linux)."""
    prctl = _prctl()  # looked up before the fork: the child only calls it
    if prctl is None:
        return None

    def arrange() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return arrange

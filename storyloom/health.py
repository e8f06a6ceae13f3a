"""A worker's health, kept in small files under the home so that a supervisor can ask.

Two kinds of file, both under `<home>/run/workers/`:

- `<worker>.json`: the worker's status, rewritten every poll: its pid and host, its
  pool, when it last reached the Prefect server, whether it is stopping. `storyloom
  worker --pool P --check` reads these (a systemd ExecStartPost/watchdog script, a
  container HEALTHCHECK).
- `<worker>.providers/<provider>.json`: written by the flow runs the worker started
  (the worker names the folder in their environment, STORYLOOM_WORKER_HEALTH_DIR) when
  a provider answers with an account error (a revoked key, an exhausted quota, no
  billing); removed by the next call of that provider that succeeds. The worker reads
  them: a provider that has answered nothing but account errors for
  STORYLOOM_WORKER_ACCOUNT_ERROR_SECONDS stops it, since every run it took would fail
  the same way.

Nothing here holds a secret: errors are stored as the first line of their message, which
the providers write without keys (storyloom/providers/errors.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from storyloom.settings import get_settings

STALE_MARGIN_SECONDS = 5.0


def workers_dir(home: Path) -> Path:
    """Where the workers of this home keep their status."""
    return home / "run" / "workers"


def status_path(home: Path, worker: str) -> Path:
    """The status file of one worker."""
    return workers_dir(home) / f"{_safe(worker)}.json"


def providers_dir(home: Path, worker: str) -> Path:
    """The folder a worker's flow runs report provider account errors to."""
    return workers_dir(home) / f"{_safe(worker)}.providers"


# --- written by flow runs ----------------------------------------------------------


@dataclass(frozen=True)
class AccountTrouble:
    """A provider that has answered only account errors since `since` (epoch seconds)."""

    provider: str
    since: float
    last: float
    error: str


def record_account_error(provider: str, error: BaseException) -> None:
    """Note an account error of `provider` for the worker that started this flow run;
    nothing outside a worker's flow run."""
    folder = get_settings().worker_health_dir
    if folder is None:
        return
    path = folder / f"{_safe(provider)}.json"
    now = time.time()
    since = now
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        since = float(json.loads(path.read_text(encoding="utf-8"))["since"])
    message = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    trouble = AccountTrouble(provider, since, now, f"{type(error).__name__}: {message}")
    with contextlib.suppress(OSError):  # health reporting never fails the call's own error
        _write_json(path, asdict(trouble))


def record_success(provider: str) -> None:
    """A call of `provider` succeeded: whatever account error was noted is over."""
    folder = get_settings().worker_health_dir
    if folder is not None:
        with contextlib.suppress(OSError):
            (folder / f"{_safe(provider)}.json").unlink(missing_ok=True)


# --- read by the worker ----------------------------------------------------------------


def account_troubles(folder: Path) -> list[AccountTrouble]:
    """The providers with account errors noted in `folder`, longest first."""
    found = []
    for path in sorted(folder.glob("*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(path.read_text(encoding="utf-8"))
            found.append(
                AccountTrouble(
                    str(data["provider"]), float(data["since"]), float(data["last"]),
                    str(data["error"]),
                )
            )  # fmt: skip
    return sorted(found, key=lambda trouble: trouble.since)


@dataclass
class WorkerStatus:
    """What a worker says about itself in its status file."""

    name: str
    pool: str
    pid: int
    host: str
    started: float
    contact: float | None = None  # the last answer from the Prefect server
    state: str = "starting"  # starting, polling, stopping
    server_timeout_seconds: float = 120.0
    account_error_seconds: float = 300.0

    def save(self, home: Path) -> None:
        """Write the status file (atomically: a reader never sees half of it)."""
        _write_json(status_path(home, self.name), asdict(self))

    def remove(self, home: Path) -> None:
        """The worker has stopped: its status and provider notes go."""
        status_path(home, self.name).unlink(missing_ok=True)
        folder = providers_dir(home, self.name)
        for path in folder.glob("*.json"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


@dataclass(frozen=True)
class Verdict:
    """The answer of `storyloom worker --check` for one worker."""

    name: str
    healthy: bool
    reason: str


def check_workers(home: Path, pool: str, *, name: str | None = None) -> list[Verdict]:
    """How every worker of `pool` on this machine (and home) is doing; none: empty."""
    host = socket.gethostname()
    verdicts = []
    for path in sorted(workers_dir(home).glob("*.json")):
        try:
            status = WorkerStatus(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        if status.pool != pool or status.host != host or (name and status.name != name):
            continue
        verdicts.append(_verdict(home, status))
    return verdicts


def _verdict(home: Path, status: WorkerStatus) -> Verdict:
    now = time.time()
    if not _alive(status.pid):
        return Verdict(status.name, False, f"pid {status.pid} is not running")
    bound = status.server_timeout_seconds + STALE_MARGIN_SECONDS
    if status.contact is None:
        waited = now - status.started
        if waited > bound:
            return Verdict(
                status.name, False, f"has not reached the Prefect server in {waited:.0f} s"
            )
        return Verdict(status.name, True, f"starting ({waited:.0f} s)")
    silent = now - status.contact
    if silent > bound:
        return Verdict(status.name, False, f"last reached the Prefect server {silent:.0f} s ago")
    for trouble in account_troubles(providers_dir(home, status.name)):
        if now - trouble.since >= status.account_error_seconds:
            return Verdict(
                status.name,
                False,
                f"{trouble.provider} has answered only account errors for"
                f" {now - trouble.since:.0f} s ({trouble.error})",
            )
    return Verdict(status.name, True, f"{status.state}; reached the server {silent:.1f} s ago")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        # A zombie answers kill(0) but has stopped all the same.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _safe(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(data, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

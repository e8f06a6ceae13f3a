"""`storyloom serve`: the embedded default as one service, started and stopped as one,
leaving no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deployments.config import AUDIO_POOL, IMAGES_POOL, MAINTENANCE_POOL, STORY_POOL
from tests.system.cluster import BIN, ROOT, free_port, process_tree

# One storyloom home for the module (the second serve starts on a home a first one used,
# as a restart does, and skips creating Prefect's database): one test at a time, as
# every module's tests are (tests/conftest.py groups them).
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find leftovers"),
]

POOLS = (STORY_POOL, IMAGES_POOL, AUDIO_POOL, MAINTENANCE_POOL)
READY_SECONDS = 150
STOP_SECONDS = 60
# In the environment of serve and everything it starts: none may show up anywhere.
SECRETS = {
    "GEMINI_API_KEY": "gemini-secret-4b1d9e",
    "SARVAM_API_KEY": "sarvam-secret-7c2a0f",
    "PREFECT_API_KEY": "prefect-cloud-secret-93e1",
}


@dataclass
class Serving:
    process: subprocess.Popen[bytes]
    api: str
    prefect: str
    home: Path
    out: Path
    err: Path

    def output(self) -> str:
        logs = sorted((self.home / "logs").glob("*.log"))
        texts = [self.out.read_text(), self.err.read_text()]
        texts += [f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs]
        return "\n".join(texts)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "var"


def _env(home: Path, *, secrets: bool = True) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "STORYLOOM_")) and key != "CLOUDINARY_URL"
    }
    if secrets:
        env |= SECRETS
    env |= {
        "STORYLOOM_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "NO_PROXY": "127.0.0.1,localhost",
        "COLUMNS": "200",
    }
    return env


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time) of a live process; None once it is gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else (pid, fields[19])


def _tree(pid: int) -> set[tuple[int, str]]:
    return {found for p in process_tree(pid) if (found := _identity(p)) is not None}


def _alive(processes: set[tuple[int, str]]) -> list[tuple[int, str]]:
    return sorted(p for p in processes if _identity(p[0]) == p)


def _command(pid: int) -> str:
    with suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


@contextmanager
def serving(home: Path, tmp: Path, *, secrets: bool = True) -> Iterator[Serving]:
    """`storyloom serve` on home, once it says everything is up. Whatever it started is
    killed on the way out should the test leave it running."""
    out, err = tmp / "serve.out", tmp / "serve.err"
    process = subprocess.Popen(
        [str(BIN / "storyloom"), "serve", "--port", str(free_port()),
         "--prefect-port", str(free_port())],
        env=_env(home, secrets=secrets), cwd=tmp, stdout=out.open("wb"),
        stderr=err.open("wb"),
    )  # fmt: skip
    seen: set[tuple[int, str]] = set()
    try:
        deadline = time.monotonic() + READY_SECONDS
        while "Ctrl-C stops everything." not in out.read_text():
            seen |= _tree(process.pid)
            assert process.poll() is None, f"serve exited: {out.read_text()}{err.read_text()}"
            assert time.monotonic() < deadline, f"serve not up: {err.read_text()}"
            time.sleep(0.5)
        text = out.read_text()
        api = re.search(r"storyloom API: (\S+)", text)
        ui = re.search(r"Prefect UI: +(\S+)", text)
        assert api, text
        assert ui, text
        yield Serving(process, api[1], ui[1], home, out, err)
    finally:
        seen |= _tree(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_SECONDS)
        for pid, _ in _alive(seen):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def test_serve_runs_everything_and_sigterm_stops_it_all(home: Path, tmp_path: Path) -> None:
    with serving(home, tmp_path) as up:
        with httpx.Client(timeout=10, trust_env=False) as http:
            assert http.get(f"{up.api}/openapi.json").status_code == 200
            assert http.get(f"{up.api}/v1/stories").status_code == 401
            assert http.get(f"{up.prefect}/api/health").status_code == 200
            for pool in POOLS:
                # Serve names its workers POOL-HOST-PID, with its own pid.
                mine = f"{pool}-{socket.gethostname()}-{up.process.pid}"
                found = http.post(f"{up.prefect}/api/work_pools/{pool}/workers/filter", json={})
                assert found.status_code == 200, f"{pool}: {found.text}"
                workers = {w["name"]: w["status"] for w in found.json()}
                assert workers.get(mine) == "ONLINE", f"{pool}: {workers}"
        # Prefect's database is SQLite under the storyloom home.
        assert (up.home / "prefect" / "prefect.db").is_file()
        started = _tree(up.process.pid)
        commands = [_command(pid) for pid, _ in started]
        assert sum("prefect server start" in c for c in commands) == 1, commands
        assert sum("storyloom api" in c for c in commands) == 1, commands
        assert sum("storyloom worker --pool" in c for c in commands) == len(POOLS), commands

        began = time.monotonic()
        up.process.send_signal(signal.SIGTERM)
        code = up.process.wait(timeout=STOP_SECONDS)
        took = time.monotonic() - began
        output = up.output()

    assert code == 0, output
    assert took < 30, f"{took:.1f} s to stop\n{output}"
    assert _alive(started) == [], output
    assert "stopping the API" in output
    for secret in SECRETS.values():
        assert secret not in output


def test_a_child_that_dies_stops_the_rest_and_serve_fails_naming_it(
    home: Path, tmp_path: Path
) -> None:
    with serving(home, tmp_path) as up:
        started = _tree(up.process.pid)
        api = [pid for pid, _ in started if "storyloom api" in _command(pid)]
        assert len(api) == 1, [_command(pid) for pid, _ in started]

        os.kill(api[0], signal.SIGKILL)
        code = up.process.wait(timeout=STOP_SECONDS)
        output = up.output()
        errors = [line for line in up.err.read_text().splitlines() if "error:" in line]

    assert code != 0, output
    assert len(errors) == 1, output
    assert "the API" in errors[0], output
    assert "killed by SIGKILL" in errors[0], output
    assert str(up.home / "logs" / "api.log") in errors[0], output
    assert _alive(started) == [], output


def test_a_story_becomes_a_book_through_serve(home: Path, tmp_path: Path) -> None:
    """What an application does: a key, a story and a job over HTTP, the job followed
    over Server-Sent Events to its end, the book fetched (offline providers)."""
    with serving(home, tmp_path, secrets=False) as up:
        added = subprocess.run(
            [str(BIN / "storyloom"), "tenants", "add", "reader-app"],
            env=_env(home, secrets=False), cwd=tmp_path, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        key = added.stdout.strip().splitlines()[-1]
        story = json.loads((ROOT / "storyloom" / "samples" / "creative-story.json").read_text())
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=up.api, headers=headers, timeout=30, trust_env=False) as api:
            assert api.post("/v1/stories", json=story).status_code == 201
            job = api.post(
                f"/v1/stories/{story['id']}/jobs",
                json={"kind": "story", "pages": 4, "images": False, "narration_languages": []},
            )
            assert job.status_code == 202, job.text
            states = []
            with api.stream("GET", f"/v1/jobs/{job.json()['id']}/events", timeout=240) as events:
                for line in events.iter_lines():
                    if line.startswith("data: "):
                        states.append(json.loads(line.removeprefix("data: "))["state"])
            assert states[-1] == "completed", (states, up.output())
            book = api.get(f"/v1/stories/{story['id']}/book")
            assert book.status_code == 200
            assert len(book.json()["pages"]) == 4
        started = _tree(up.process.pid)
        up.process.send_signal(signal.SIGTERM)
        code = up.process.wait(timeout=STOP_SECONDS)
        output = up.output()
    assert code == 0, output
    assert _alive(started) == [], output
    assert key not in output

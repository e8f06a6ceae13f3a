"""The flow test_worker.py deploys: sleeps, and leaves files saying what it did.

Loaded by workers from this file (a set_working_directory pull step to this folder), so
it imports nothing from the project.

- `<marker>.attempts`: one line per start of the flow (a handed-back run starts twice);
- `<marker>.paid`: one line per execution of `paid_call`, whose result is cached by its
  inputs, as the project's paid calls are: a rerun must not execute it again;
- `<marker>`: written at the end, with the attempt number and STORYLOOM_API_LIMITS.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import INPUTS


def _append(path: Path, line: str) -> int:
    with path.open("a", encoding="utf-8") as file:
        file.write(line + "\n")
    return len(path.read_text(encoding="utf-8").splitlines())


@task(cache_policy=INPUTS, persist_result=True)
def paid_call(marker: str) -> str:
    _append(Path(marker + ".paid"), str(os.getpid()))
    return "paid"


@flow(name="worker-probe")
def probe(marker: str, first_seconds: float = 0.0, later_seconds: float = 0.0) -> int:
    """Sleep `first_seconds` on the first attempt, `later_seconds` on any later one."""
    paid_call(marker)
    # Counted after the paid call: once this line is there, its result is stored.
    attempt = _append(Path(marker + ".attempts"), str(os.getpid()))
    time.sleep(first_seconds if attempt == 1 else later_seconds)
    Path(marker).write_text(
        json.dumps({"attempt": attempt, "api_limits": os.environ.get("STORYLOOM_API_LIMITS")}),
        encoding="utf-8",
    )
    return attempt

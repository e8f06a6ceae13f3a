"""The Prefect code storyloom's worker stands on, pinned by the hash of its source.

deployments/worker.py extends Prefect's ProcessWorker through public methods only, and
hands runs back through `prefect flow-run execute` with
PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule. It relies on what those do (which
pid `run` reports as started, which runs `get_and_submit_flow_runs` returns, how the
job configuration fills in a command, what the supervisor does on SIGTERM). The pin
allows any 3.9.x; a release that changes any of them fails here, in CI, before a worker
misbehaves in production.

When this fails: read the new source of what changed, check that deployments/worker.py
and deployments/flow_run.py still hold (tests/deployments/test_worker.py runs the
hand-back for real), then put the new hash here.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect

import pytest

PINNED = {
    # The pid it passes to task_status.started, and its exit-code handling.
    "prefect.workers.process:ProcessWorker.run": "05306468a6b3266b",
    # A command set before it runs is kept (ours: python -m deployments.flow_run).
    "prefect.workers.process:ProcessJobConfiguration.prepare_for_flow_run": "96a9dfe9d899ab31",
    # Returns the runs it started submitting (the worker waits for them to leave Scheduled).
    "prefect.workers.base:BaseWorker.get_and_submit_flow_runs": "fcb6c4c67be096f4",
    "prefect.workers.base:BaseWorker.sync_with_backend": "9883921408ea74a1",
    # The supervisor: on SIGTERM, the intent to the engine, AwaitingRetry, exit 0.
    "prefect.cli.flow_run:execute": "6e9497545b7c75e8",
    "prefect.cli.flow_run:_termination_intent": "6c7aef709742f467",
    # Returns the error rather than raising it (the worker's server probe).
    "prefect.client.orchestration:PrefectClient.api_healthcheck": "066692f8766d1fa9",
}


def _source_hash(path: str) -> str:
    module_name, _, qualname = path.partition(":")
    target: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    source = inspect.getsource(inspect.unwrap(target))  # type: ignore[arg-type]
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@pytest.mark.parametrize(("path", "pinned"), sorted(PINNED.items()))
def test_the_prefect_code_the_worker_relies_on_is_the_code_it_was_written_against(
    path: str, pinned: str
) -> None:
    assert _source_hash(path) == pinned, (
        f"{path} changed in this Prefect release: check deployments/worker.py against it "
        "(see this module's docstring), then update its hash"
    )

"""`python -m deployments.flow_run`: the command a storyloom worker starts a flow run with.

It starts Prefect's own `prefect flow-run execute`, the supervisor that runs the flow
run's engine and, with PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule (set in the
pool's job template by `storyloom setup`, and by the worker when a pool lacks it),
answers SIGTERM by putting the run back in its pool (AwaitingRetry) rather than letting
it crash. It stays as the supervisor's parent, because a SIGTERM means two things to a
process a worker started, and only one of them is a hand-back:

- Prefect's worker cancels a run by sending its process SIGTERM (after a "cancel"
  intent nobody listens for here). The supervisor observes the cancellation itself and
  stops the engine, so the run ends Cancelled; a SIGTERM passed on to it would instead
  turn the cancelled run into AwaitingRetry, and it would run again. So SIGTERM (and
  SIGINT, from the worker's terminal) is not passed on: this process waits for the
  supervisor to finish and exits with its code.
- storyloom's worker hands a run back with SIGUSR1, which is passed on as the SIGTERM
  the supervisor reschedules on.

The supervisor runs in a session of its own, so no signal meant for the worker's
process group reaches it. A systemd stop in control-group mode still reaches it
directly, and it hands the run back (docs/production.md says to use KillMode=mixed).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType

SIGTERM_BEHAVIOR_ENV = "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"
# What storyloom's worker sends this process to hand its run back.
HAND_BACK_SIGNAL = signal.SIGUSR1


def main(argv: list[str]) -> int:
    """Run `prefect flow-run execute` until it ends; its exit code (128 + N for a signal)."""
    supervisor: subprocess.Popen[bytes] | None = None

    def hand_back(signum: int, frame: FrameType | None) -> None:
        if supervisor is not None and supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)

    def keep_waiting(signum: int, frame: FrameType | None) -> None:
        """Cancellation or a stop of everything: the supervisor deals with it."""

    # Python handlers, not SIG_IGN: they do not outlive exec in the supervisor.
    signal.signal(HAND_BACK_SIGNAL, hand_back)
    signal.signal(signal.SIGTERM, keep_waiting)
    signal.signal(signal.SIGINT, keep_waiting)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "prefect", "flow-run", "execute", *argv],
        start_new_session=True,
    )
    code = supervisor.wait()  # waits again after a handled signal (PEP 475)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

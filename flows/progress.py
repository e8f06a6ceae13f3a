"""Progress of a run: a Prefect progress artifact, and in-process listeners (the CLI bar)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact


@dataclass(frozen=True)
class ProgressEvent:
    flow: str  # "story", "illustrations", "narration"
    story_id: str
    done: int
    total: int
    note: str


Listener = Callable[[ProgressEvent], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> Callable[[], None]:
    """Hear every progress event of this process; returns the function that stops it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


class Progress:
    """Counts the steps of one flow run and shows them; safe to advance from threads."""

    # The artifact is updated at most this often: each update is a call to the server.
    MIN_INTERVAL = 0.5

    def __init__(self, flow: str, story_id: str, total: int, description: str) -> None:
        self.flow, self.story_id = flow, story_id
        self.description = description
        self.done, self.total = 0, max(total, 1)
        self._lock = threading.Lock()
        self._last_sent = 0.0
        self._artifact = cast(
            UUID,
            create_progress_artifact(
                progress=0.0, key=f"{flow}-{story_id}-progress", description=description
            ),
        )
        self._emit("started")

    def grow(self, steps: int) -> None:
        """Add steps discovered on the way (chapters are known only after pagination)."""
        with self._lock:
            self.total += steps

    def advance(self, note: str = "", steps: int = 1) -> None:
        with self._lock:
            self.done = min(self.done + steps, self.total)
        self._emit(note)

    def finish(self, note: str = "done") -> None:
        with self._lock:
            self.done = self.total
        self._emit(note, force=True)

    def _emit(self, note: str, *, force: bool = False) -> None:
        event = ProgressEvent(self.flow, self.story_id, self.done, self.total, note)
        for listener in list(_listeners):
            listener(event)
        now = time.monotonic()
        if force or now - self._last_sent >= self.MIN_INTERVAL:
            self._last_sent = now
            # The step in the description: the job API reports it as the current step.
            update_progress_artifact(
                self._artifact,
                progress=100.0 * self.done / self.total,
                description=f"{self.description}: {note}" if note else self.description,
            )

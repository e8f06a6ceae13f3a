"""What `storyloom setup` did (or, in a dry run, would do) to each thing it manages."""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

Kind = Literal["work pool", "concurrency limit", "block", "automation", "deployment"]


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"


# How a dry run words the outcomes that would write something.
_WOULD = {Outcome.CREATED: "would create", Outcome.UPDATED: "would update"}


class SetupItem(BaseModel):
    """One managed object and what happened to it."""

    kind: Kind
    name: str
    outcome: Outcome
    changes: list[str] = Field(default_factory=list)  # "concurrency_limit: 2 → 3"
    note: str = ""


class SetupReport(BaseModel):
    """Every managed object, in the order setup handled them."""

    dry_run: bool = False
    api_url: str | None = None
    items: list[SetupItem] = Field(default_factory=list)

    def add(self, item: SetupItem) -> SetupItem:
        self.items.append(item)
        return item

    def item(self, kind: Kind, name: str) -> SetupItem:
        """The entry for one object; KeyError if setup did not handle it."""
        for entry in self.items:
            if entry.kind == kind and entry.name == name:
                return entry
        raise KeyError(f"{kind} {name!r}")

    @property
    def changed(self) -> list[SetupItem]:
        """Entries that were (or would be) written."""
        return [i for i in self.items if i.outcome in (Outcome.CREATED, Outcome.UPDATED)]

    @property
    def ok(self) -> bool:
        """False when anything failed: the caller should exit non-zero."""
        return all(i.outcome is not Outcome.FAILED for i in self.items)

    def render(self) -> str:
        """A plain-text table for a terminal."""
        server = self.api_url or "the local ephemeral server (PREFECT_API_URL is not set)"
        title = f"storyloom setup on {server}"
        lines = [title + (" (dry run: nothing written)" if self.dry_run else "")]
        kind_width = max((len(i.kind) for i in self.items), default=0)
        name_width = max((len(i.name) for i in self.items), default=0)
        for entry in self.items:
            said = self._said(entry.outcome)
            detail = "; ".join([*entry.changes, *([entry.note] if entry.note else [])])
            row = f"  {entry.kind:<{kind_width}}  {entry.name:<{name_width}}  {said:<12}"
            lines.append(f"{row}  {detail}".rstrip())
        counts = Counter(entry.outcome for entry in self.items)
        lines.append(
            ", ".join(
                f"{counts[outcome]} {self._said(outcome)}" for outcome in Outcome if counts[outcome]
            )
            or "nothing to do"
        )
        return "\n".join(lines)

    def _said(self, outcome: Outcome) -> str:
        return _WOULD.get(outcome, outcome.value) if self.dry_run else outcome.value

    def __str__(self) -> str:
        return self.render()

"""Writing one section until it is the teller's story at its length: the decisions.

Pure: no I/O, no Prefect. The story flow asks each section's `SectionWriting` for its
next writer call, makes the calls of all sections side by side (each a cached Prefect
task), hands the answers back, and repeats until no section asks for more. Keeping the
decisions here lets them be tested against any writer, and keeps every call a separate
cached task: a rerun replays the calls already paid for.

A section's course:
1. write it from its brief;
2. while its length is more than `tolerance` off its budget, or the fact check finds an
   invented name, date, place or number, a dropped fact or an altered quote, revise the
   best version so far (asking for the length and naming what to remove, restore and
   keep verbatim), at most `max_revisions` times, stopping early when a revision changes
   nothing;
3. with the grammar pass, proofread the best version and check the result the same way;
   a pass that breaks the length or the facts gets one revision, and if that fails too
   the version before the pass is kept;
4. the best version wins: fewest fact problems first, then the smallest length miss. What
   could not be fixed is recorded: the length miss, and the inventions, missing facts and
   altered quotes as flags for the teller's approval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from storyloom import facts
from storyloom.chapters import split_sentences
from storyloom.models import SectionReport, WritingReport
from storyloom.providers.base import Revision, SectionBrief
from storyloom.writing import SectionBudget, count_words, length_gap

SECTION_TOLERANCE = 0.05  # a section this close to its budget needs no revision
BOOK_TOLERANCE = 0.05  # the book's total should land this close to pages x words_per_page
MAX_REVISIONS = 3  # revisions for length and facts before the grammar pass
PROOF_REVISIONS = 1  # revisions of a grammar pass that broke the length or the facts

CallKind = Literal["write", "revise", "proofread"]


@dataclass(frozen=True)
class Call:
    """One writer call a section asks for."""

    kind: CallKind
    brief: SectionBrief
    text: str = ""
    revision: Revision | None = None


@dataclass(frozen=True)
class Version:
    """One text of a section and how it measures up."""

    text: str
    words: int
    gap: float  # relative and signed: -0.1 is 10% short
    check: facts.FactCheck
    proofread: bool

    @property
    def problems(self) -> int:
        return len(self.check.invented) + len(self.check.missing) + len(self.check.altered)

    def fits(self, tolerance: float) -> bool:
        return abs(self.gap) <= tolerance

    def rank(self, tolerance: float) -> tuple[int, float]:
        """Lower is better: fact problems first, then how far outside the tolerance."""
        return (self.problems, max(0.0, abs(self.gap) - tolerance))


@dataclass
class SectionWriting:
    """The state of one section's writing: its versions and what it asks for next."""

    brief: SectionBrief
    section: facts.SectionLedger
    ledger: facts.Ledger
    grammar: bool
    tolerance: float = SECTION_TOLERANCE
    max_revisions: int = MAX_REVISIONS
    # A creative story invents by design: its names are not flagged. Its parts may also
    # share one material (too little content to slice): then no part owes all its facts.
    flag_inventions: bool = True
    require_facts: bool = True
    versions: list[Version] = field(default_factory=list)
    calls: int = 0
    revisions: int = 0
    proof_revisions: int = 0
    stalled: bool = False  # a revision came back unchanged: asking again is pointless
    proofread_asked: bool = False
    _pending: Call | None = None

    # -- the decisions

    def next_call(self) -> Call | None:
        """The writer call this section needs next, or None when it is done."""
        if self._pending is not None:
            raise RuntimeError(f"section {self.brief.key}: the last call has no answer yet")
        call = self._decide()
        self._pending = call
        return call

    def _decide(self) -> Call | None:
        if not self.versions:
            return Call("write", self.brief)
        if self.proofread_asked:
            return self._after_proofread()
        best = self.best(proofread=False)
        if not self._good(best) and not self.stalled and self.revisions < self.max_revisions:
            return self._revise(best)
        if self.grammar:
            self.proofread_asked = True
            return Call("proofread", self.brief, best.text)
        return None

    def _after_proofread(self) -> Call | None:
        passes = [v for v in self.versions if v.proofread]
        if not passes:
            return None  # the proofread answer has not come back: nothing to decide
        latest = passes[-1]
        if self._good(latest) or latest.rank(self.tolerance) <= self.best(False).rank(
            self.tolerance
        ):
            return None
        if self.proof_revisions < PROOF_REVISIONS and not self.stalled:
            self.proof_revisions += 1
            return self._revise(latest)
        return None

    def _revise(self, base: Version) -> Call:
        if not base.proofread:
            self.revisions += 1
        check = base.check
        revision = Revision(
            target_words=self.brief.target_words,
            remove=tuple(f.text for f in check.invented),
            restore=tuple(f.text for f in check.missing),
            quotes=tuple(f.text for f in check.altered),
        )
        return Call("revise", self.brief, base.text, revision)

    def _good(self, version: Version) -> bool:
        return version.fits(self.tolerance) and version.check.ok

    # -- the answers

    def take(self, text: str) -> None:
        """The answer to the call last asked for."""
        call = self._pending
        if call is None:
            raise RuntimeError(f"section {self.brief.key}: an answer nobody asked for")
        self._pending = None
        self.calls += 1
        if call.kind == "revise" and text.strip() == call.text.strip():
            self.stalled = True
            return
        # A revision of a proofread text is still the grammar pass's line.
        proofread = call.kind == "proofread" or any(
            v.proofread and v.text == call.text for v in self.versions
        )
        self.versions.append(self.measure(text, proofread=proofread))

    def measure(self, text: str, *, proofread: bool = False) -> Version:
        words = count_words(text)
        check = facts.check(text, self.section, self.ledger, self.brief.language)
        if not (self.flag_inventions and self.require_facts):
            check = facts.FactCheck(
                invented=check.invented if self.flag_inventions else (),
                missing=check.missing if self.require_facts else (),
                altered=check.altered,
            )
        return Version(text, words, length_gap(words, self.brief.target_words), check, proofread)

    # -- the outcome

    def best(self, proofread: bool | None = None) -> Version:
        """The best version (of those before the grammar pass when proofread is False)."""
        pool = [v for v in self.versions if proofread is None or v.proofread == proofread]
        if not pool:
            pool = self.versions
        if not pool:
            raise RuntimeError(f"section {self.brief.key} has no text yet")
        # min keeps the earliest of equals: a revision must be better to win.
        return min(pool, key=lambda v: v.rank(self.tolerance))

    @property
    def final(self) -> Version:
        """The version that goes in the book."""
        best = self.best(None)
        if self.grammar:
            passes = [v for v in self.versions if v.proofread]
            good = [v for v in passes if v.rank(self.tolerance) <= best.rank(self.tolerance)]
            if good:
                return good[-1]
        return best

    def report(self, budget: SectionBudget) -> SectionReport:
        final = self.final
        miss = None
        if not final.fits(self.tolerance):
            why = (
                "the teller's own words alone are longer than its budget"
                if count_words(budget.material) > budget.target_words * (1 + self.tolerance)
                else f"still off after {self.revisions} revision(s)"
            )
            miss = (
                f"{abs(final.gap):.0%} {'over' if final.gap > 0 else 'short'}"
                f" ({final.words} words for {budget.target_words}): {why}"
            )
        proof_note = None
        if self.grammar and not final.proofread:
            proof_note = (
                "the grammar pass broke the length or the facts: the text before it was kept"
            )
        return SectionReport(
            key=budget.key,
            heading=self.brief.heading,
            first_page=budget.first_page,
            pages=budget.pages,
            target_words=budget.target_words,
            words=final.words,
            gap=round(final.gap, 4),
            calls=self.calls,
            revisions=self.revisions + self.proof_revisions,
            proofread=final.proofread,
            came_before=self.brief.came_before,
            comes_next=self.brief.comes_next,
            length_miss=miss,
            grammar_note=proof_note,
            invented=[f.text for f in final.check.invented],
            missing=[f.text for f in final.check.missing],
            altered=[f.text for f in final.check.altered],
        )


def write_all(
    writings: Sequence[SectionWriting],
    answer: Callable[[Sequence[Call], bool], Sequence[str]],
) -> int:
    """Drive every section to its end, one round at a time; returns the rounds taken.

    Each round asks every unfinished section for its next call; answer(calls, first)
    makes them side by side (first is True for the opening round of drafts) and returns
    the texts in the same order.
    """
    rounds = 0
    while True:
        asks = [(w, call) for w in writings if (call := w.next_call()) is not None]
        if not asks:
            return rounds
        texts = answer([call for _, call in asks], rounds == 0)
        if len(texts) != len(asks):
            raise RuntimeError(f"{len(texts)} answers for {len(asks)} calls")
        for (writing, _), text in zip(asks, texts, strict=True):
            writing.take(text)
        rounds += 1


def continuity(materials: Sequence[str]) -> list[tuple[str, str]]:
    """(came_before, comes_next) for each section: the last memory of the section before
    and the first memory of the one after, from the teller's material alone, so that an
    edit inside a section changes no other section's brief."""
    firsts, lasts = [], []
    for text in materials:
        sentences = split_sentences(text) if text.strip() else []
        firsts.append(sentences[0] if sentences else "")
        lasts.append(sentences[-1] if sentences else "")
    out: list[tuple[str, str]] = []
    for i, own in enumerate(materials):
        before = lasts[i - 1] if i > 0 and materials[i - 1] != own else ""
        after = firsts[i + 1] if i + 1 < len(materials) and materials[i + 1] != own else ""
        out.append((before, after))
    return out


def book_report(
    writings: Sequence[SectionWriting],
    budgets: Sequence[SectionBudget],
    ledger: facts.Ledger,
    target_words: int,
) -> WritingReport:
    """The whole book's writing record: per-section outcomes, the total, the figures."""
    sections = [w.report(b) for w, b in zip(writings, budgets, strict=True)]
    texts = [w.final.text for w in writings]
    total = sum(s.words for s in sections)
    gap = length_gap(total, target_words)
    note = None
    if abs(gap) > BOOK_TOLERANCE:
        missed = [f"{s.heading}: {s.length_miss}" for s in sections if s.length_miss]
        note = (
            f"{total} words for a target of {target_words} ({gap:+.0%})"
            + (": " + "; ".join(missed) if missed else "")
        )
    language = writings[0].brief.language if writings else "en-IN"
    figures = facts.figures(texts, ledger, language)
    return WritingReport(
        target_words=target_words,
        words=total,
        gap=round(gap, 4),
        length_note=note,
        sections=sections,
        ledger=ledger.to_json(),
        precision=figures.precision,
        recall=figures.recall,
        figures=figures.to_json(),
    )

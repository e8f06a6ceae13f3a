"""The writing decisions, on their own: what a section asks for next, when it stops, which
version wins, and what is recorded (storyloom.composing)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from storyloom import facts
from storyloom.composing import (
    MAX_REVISIONS,
    Call,
    SectionWriting,
    book_report,
    continuity,
    write_all,
)
from storyloom.models import Audience, Tone
from storyloom.providers.base import SectionBrief
from storyloom.writing import SectionBudget, count_words

MATERIAL = (
    "I was born in 1952 in Lucknow. My brother Vijay kept the tally of mangoes. "
    'Grandmother always said "a tree gives its shade to all".'
)


def faithful(n: int) -> str:
    """The material plus filler: n words in all (n > the material's words + 2)."""
    return MATERIAL + " " + " ".join(["and"] * (n - count_words(MATERIAL) - 2)) + " the end."


def writing(target: int = 100, grammar: bool = False, **options: object) -> SectionWriting:
    brief = SectionBrief(
        story_id="s", title="T", kind="life", language="en-IN", key="childhood",
        heading="Childhood", material=MATERIAL, target_words=target, tone=Tone.WARM,
        audience=Audience.FAMILY, position=1, of=1,
    )  # fmt: skip
    ledger = facts.collect([("childhood", MATERIAL)], "en-IN")
    return SectionWriting(brief, ledger.section("childhood"), ledger, grammar, **options)  # type: ignore[arg-type]


def drive(section: SectionWriting, answers: Sequence[str]) -> list[Call]:
    """Answer the section's calls in order with `answers`; return the calls it made."""
    calls: list[Call] = []
    queue = list(answers)
    while (call := section.next_call()) is not None:
        calls.append(call)
        section.take(queue.pop(0))
    assert not queue, f"{len(queue)} answers left over"
    return calls


def test_a_section_that_fits_at_once_is_done() -> None:
    section = writing()
    calls = drive(section, [faithful(100)])
    assert [c.kind for c in calls] == ["write"]
    assert section.final.words == 100
    assert section.final.check.ok


def test_a_short_section_is_revised_until_it_fits() -> None:
    section = writing()
    calls = drive(section, [faithful(60), faithful(80), faithful(98)])
    assert [c.kind for c in calls] == ["write", "revise", "revise"]
    assert calls[1].revision is not None
    assert calls[1].revision.target_words == 100
    assert section.final.words == 98
    assert section.report(budget()).length_miss is None


def test_revisions_are_bounded_and_the_closest_version_is_kept() -> None:
    section = writing()
    answers = [faithful(60), faithful(85), faithful(70), faithful(65)]
    calls = drive(section, answers)
    assert len(calls) == 1 + MAX_REVISIONS
    assert section.final.words == 85
    report = section.report(budget())
    assert report.length_miss is not None
    assert report.length_miss.startswith("15% short (85 words for 100)")


def test_a_revision_that_changes_nothing_stops_the_asking() -> None:
    section = writing()
    first = faithful(60)
    calls = drive(section, [first, first])
    assert [c.kind for c in calls] == ["write", "revise"]


def test_an_invention_is_named_for_removal_and_a_dropped_fact_for_restoring() -> None:
    section = writing()
    invented = faithful(100).replace("the end.", "Rupert came from Lisbon in 1937.")
    dropped = invented.replace("My brother Vijay kept the tally of mangoes.", "and and and")
    calls = drive(section, [dropped, faithful(100)])
    revision = calls[1].revision
    assert revision is not None
    assert set(revision.remove) == {"Rupert", "Lisbon", "1937"}
    assert "Vijay" in revision.restore
    assert section.final.check.ok


def test_an_altered_quote_is_asked_back_verbatim() -> None:
    section = writing()
    altered = faithful(100).replace("gives its shade", "gives no shade")
    calls = drive(section, [altered, faithful(100)])
    assert calls[1].revision is not None
    assert calls[1].revision.quotes == ("a tree gives its shade to all",)


def test_a_grammar_pass_that_breaks_the_length_is_revised_then_dropped() -> None:
    section = writing(grammar=True)
    calls = drive(section, [faithful(100), faithful(70), faithful(72)])
    assert [c.kind for c in calls] == ["write", "proofread", "revise"]
    assert section.final.words == 100
    assert not section.final.proofread
    assert section.report(budget()).grammar_note is not None


def test_a_good_grammar_pass_is_kept() -> None:
    section = writing(grammar=True)
    drive(section, [faithful(100), faithful(101)])
    assert section.final.proofread
    assert section.final.words == 101


def test_a_creative_story_may_invent() -> None:
    section = writing(flag_inventions=False)
    calls = drive(section, [faithful(100).replace("the end.", "Rupert came from Lisbon.")])
    assert len(calls) == 1
    assert section.final.check.ok


def test_asking_twice_without_an_answer_is_a_bug() -> None:
    section = writing()
    section.next_call()
    with pytest.raises(RuntimeError, match="no answer yet"):
        section.next_call()


def test_continuity_takes_the_edges_of_the_neighbours_material() -> None:
    edges = continuity(["One. Two.", "Three. Four.", "", "Five."])
    assert edges == [("", "Three."), ("Two.", ""), ("Four.", "Five."), ("", "")]
    # Parts sharing one material have no edges to pass on.
    assert continuity(["Same. Text.", "Same. Text."]) == [("", ""), ("", "")]


def test_write_all_runs_rounds_and_the_report_adds_up() -> None:
    sections = [writing(), writing()]
    script = {0: [faithful(60), faithful(100)], 1: [faithful(100)]}

    def answer(calls: Sequence[Call], first: bool) -> list[str]:
        return [script[i].pop(0) for i, _ in enumerate(calls)] if first else [
            script[0].pop(0)
        ]

    assert write_all(sections, answer) == 2
    ledger = facts.collect([("childhood", MATERIAL)], "en-IN")
    report = book_report(sections, [budget(), budget()], ledger, 200)
    assert report.words == 200
    assert report.length_note is None
    assert report.recall == 1.0
    assert report.precision == 1.0


def budget() -> SectionBudget:
    return SectionBudget("childhood", MATERIAL, 100, 1, 1)

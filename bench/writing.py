"""`make bench` (part): faithful, page-exact writing against a model that misbehaves.

The real Gemini client (google-genai over HTTP) and storyloom's writing decisions
(storyloom.composing) against the loopback Gemini fake, which answers a share of its
prose calls as real models do on a bad day: 40% short, 30% long, cut off by MAX_TOKENS,
with an invented name, year and city, with a fact dropped, with a quote altered. For each
book size it prints the pages delivered, the words against the target, the share of
pages within 15% of words_per_page, writer calls per page, and the fact figures.

Prefect is left out on purpose: this measures the writing, not the orchestration.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from importlib import resources

from storyloom import facts
from storyloom.composing import Call, SectionWriting, book_report, write_all
from storyloom.models import GenerationConfig, LifeStory, parse_story
from storyloom.providers.base import Writer
from storyloom.providers.google import GoogleWriter, make_client
from storyloom.writing import paginate_sections, plan_sections
from tasks.writing import section_briefs
from tests.fakes.gemini import Misbehave, gemini_fake

PAGE_COUNTS = (4, 8, 12, 20, 50, 200)
MISBEHAVING_SHARE = 0.35  # of prose calls
SEED = 2026
MODEL = "gemini-2.5-flash"


def sample_story() -> LifeStory:
    raw = resources.files("storyloom").joinpath("samples/life-story.json").read_bytes()
    story = parse_story(raw)
    assert isinstance(story, LifeStory)
    return story


def misbehaviours(count: int, rng: random.Random) -> list[Misbehave | None]:
    """A seeded script: each prose call behaves, or goes wrong in one of the six ways."""
    return [
        rng.choice(list(Misbehave)) if rng.random() < MISBEHAVING_SHARE else None
        for _ in range(count)
    ]


@dataclass(frozen=True)
class Row:
    pages: int
    delivered: int
    words: int
    target: int
    gap: float
    within: float  # share of pages within 15% of words_per_page
    calls: int  # model requests for the text, all sections
    precision: float | None
    recall: float | None
    misses: int  # sections whose length miss could not be closed
    flags: int  # facts left for the teller's approval


def write_book(writer: Writer, story: LifeStory, pages: int) -> Row:
    """Write one book the way the story flow does; return its figures."""
    config = GenerationConfig(pages=pages)
    budgets = plan_sections(story.kind, story.material(), pages, config.words_per_page)
    ledger = facts.collect([(b.key, b.material) for b in budgets], story.language, story.title)
    briefs = section_briefs(story, config, budgets, ledger)
    writings = [
        SectionWriting(brief, ledger.section(brief.key), ledger, config.improve_grammar)
        for brief in briefs
    ]
    calls = 0

    def answer(asked: Sequence[Call], first: bool) -> list[str]:
        nonlocal calls
        calls += len(asked)
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda call: _call(writer, call), asked))

    write_all(writings, answer)
    report = book_report(writings, budgets, ledger, config.total_words)
    book = paginate_sections([w.final.text for w in writings], budgets, config.words_per_page)
    low, high = 0.85 * config.words_per_page, 1.15 * config.words_per_page
    return Row(
        pages=pages,
        delivered=len(book),
        words=report.words,
        target=report.target_words,
        gap=report.gap,
        within=sum(low <= p.words <= high for p in book) / len(book),
        calls=calls,
        precision=report.precision,
        recall=report.recall,
        misses=sum(1 for s in report.sections if s.length_miss),
        flags=len(report.flags),
    )


def _call(writer: Writer, call: Call) -> str:
    if call.kind == "write":
        return writer.write_section(call.brief).text
    if call.kind == "revise":
        assert call.revision is not None
        return writer.revise(call.brief, call.text, call.revision).text
    return writer.proofread(call.brief, call.text).text


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def main() -> None:
    story = sample_story()
    rng = random.Random(SEED)
    print(
        f"writing on a misbehaving model ({MISBEHAVING_SHARE:.0%} of prose calls go wrong:"
        f" {', '.join(m.value for m in Misbehave)}), sample life story"
    )
    print(
        "pages  delivered  words / target            within 15%  calls/page"
        "  precision  recall  misses  flags"
    )
    with gemini_fake("bench-key") as (url, state):
        client = make_client("bench-key", url, "v1beta", timeout_seconds=60)
        writer = GoogleWriter(client, MODEL)
        for pages in PAGE_COUNTS:
            state.reset()
            state.script_text(*misbehaviours(40 * pages + 200, rng))
            row = write_book(writer, story, pages)
            # Model requests, continuations after MAX_TOKENS included.
            row = replace(row, calls=len(state.prose_requests()))
            print(
                f"{row.pages:5d}  {row.delivered:9d}  {row.words:6d} / {row.target:6d}"
                f" ({row.gap:+5.1%})  {row.within:10.0%}  {row.calls / row.pages:10.2f}"
                f"  {_share(row.precision):>9}  {_share(row.recall):>6}  {row.misses:6d}"
                f"  {row.flags:5d}"
            )

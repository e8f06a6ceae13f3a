"""Flow `story`: write the book to its exact page count, then illustrate and narrate it.

Parameters are the story id and the generation config's fields, flat, so
`prefect deployment run story/generate -p story_id=X -p pages=8` works and the Prefect
UI shows a form with every field.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture
from pydantic import BaseModel

from flows.fanout import cancel_children, run_children, submit_many
from flows.illustrations import IllustrationsResult, illustrations
from flows.narration import NarrationResult, narration
from flows.progress import Progress
from flows.publishing import Generation, open_generation
from flows.spending import paid
from storyloom import facts, report, services
from storyloom.composing import Call, SectionWriting, book_report, write_all
from storyloom.media.local import preview_src
from storyloom.models import (
    Audience,
    CreativeStory,
    GenerationConfig,
    ImageStyle,
    Language,
    Page,
    StoryId,
    Tone,
    Usage,
)
from storyloom.providers.base import Written
from storyloom.writing import paginate_sections, plan_sections
from tasks.writing import proofread, revise_section, section_briefs, write_section

_DEFAULT = GenerationConfig()


class StoryResult(BaseModel):
    story_id: str
    generation_id: str
    pages: int
    words: int
    illustrations: IllustrationsResult | None
    narration: NarrationResult | None
    usage: list[Usage]


@flow(
    name="story",
    description="Turn a story into a storybook: text, pictures, narration.",
    # A parent that ends without publishing (failed, cancelled, crashed) stops its
    # children: Prefect does not cascade to runs started with run_deployment.
    on_failure=[cancel_children],
    on_cancellation=[cancel_children],
    on_crashed=[cancel_children],
)
def story(
    story_id: StoryId,
    pages: int = _DEFAULT.pages,
    words_per_page: int = _DEFAULT.words_per_page,
    tone: Tone = _DEFAULT.tone,
    audience: Audience = _DEFAULT.audience,
    improve_grammar: bool = _DEFAULT.improve_grammar,
    images: bool = _DEFAULT.images,
    image_style: ImageStyle = _DEFAULT.image_style,
    image_count: int | None = _DEFAULT.image_count,
    narration_languages: list[Language] | None = _DEFAULT.narration_languages,
) -> StoryResult:
    """Generate the whole book for a saved story and publish it in one step."""
    # Validated before anything is spent; a bad value fails the run here.
    config = GenerationConfig(
        pages=pages,
        words_per_page=words_per_page,
        tone=tone,
        audience=audience,
        improve_grammar=improve_grammar,
        images=images,
        image_style=image_style,
        image_count=image_count,
        narration_languages=narration_languages,
    )
    with open_generation(story_id, None, config=config) as gen:
        book_pages, usage = _write(gen)
        gen.save_pages(book_pages)
        gen.add_usage(usage)
        children = run_children(
            images=(illustrations, {"story_id": story_id, "generation_id": gen.id})
            if gen.config.illustrations
            else None,
            audio=(narration, {"story_id": story_id, "generation_id": gen.id})
            if gen.config.narration_languages
            else None,
        )
        pictures = children.get("images")
        voices = children.get("audio")
        result = StoryResult(
            story_id=story_id,
            generation_id=gen.id,
            pages=len(book_pages),
            words=sum(p.words for p in book_pages),
            illustrations=pictures if isinstance(pictures, IllustrationsResult) else None,
            narration=voices if isinstance(voices, NarrationResult) else None,
            usage=usage,
        )
    book = services.store().book(story_id)
    if book is not None:
        create_markdown_artifact(
            report.book_markdown(book, image_src=preview_src),
            key=f"storybook-{story_id}",
            description=f"{book.story.title}: the storybook",
        )
    return result


def _write(gen: Generation) -> tuple[list[Page], list[Usage]]:
    """Every section written, checked and revised until it holds the teller's facts at its
    length (storyloom.composing decides), then paginated section by section.

    Each section owns whole pages and is written from its own material, facts and the
    edges of its neighbours' material, so after an edit inside one section only that
    section's calls miss the cache and only its pages change. The calls of all sections
    run side by side, one round at a time; each is a cached task, so a rerun pays only
    for the calls it had not made.
    """
    logger = get_run_logger()
    config = gen.config
    story = gen.story
    via = services.providers().notes["text"]
    budgets = plan_sections(story.kind, story.material(), config.pages, config.words_per_page)
    extra = "\n".join([story.title, story.premise if isinstance(story, CreativeStory) else ""])
    ledger = facts.collect([(b.key, b.material) for b in budgets], story.language, extra)
    briefs = section_briefs(story, config, budgets, ledger)
    shared = len({b.material for b in budgets}) < len(budgets)
    writings = [
        SectionWriting(
            brief=brief,
            section=ledger.section(brief.key),
            ledger=ledger,
            grammar=config.improve_grammar,
            flag_inventions=story.kind == "life",
            require_facts=not shared,
        )
        for brief in briefs
    ]
    per_section = 3 if config.improve_grammar else 2
    steps = 1 + len(briefs) * per_section
    progress = Progress("story", gen.story_id, steps, f"{config.pages} pages")
    usage: list[Usage] = []

    def answer(calls: Sequence[Call], first: bool) -> list[str]:
        futures = (
            # The first section alone first: a refused account fails after one call.
            submit_many(write_section, [(call.brief, via) for call in calls])
            if first
            else [_submit(call, via) for call in calls]
        )
        texts = []
        for future in futures:
            written, cost = paid(future)
            usage.append(cost)
            texts.append(written.text)
        kinds = " and ".join(sorted({call.kind for call in calls}))
        progress.grow(max(0, len(calls) + 1 - (progress.total - progress.done)))
        progress.advance(f"{kinds}: {len(calls)} section(s)", steps=len(calls))
        return texts

    write_all(writings, answer)

    report = book_report(writings, budgets, ledger, config.total_words)
    gen.save_writing(report)
    for section in report.sections:
        if section.length_miss:
            logger.warning("%s: %s", section.heading, section.length_miss)
    if report.length_note:
        logger.warning("the book missed its length: %s", report.length_note)
    for flag in report.flags:
        logger.warning("for the teller's approval: %s", flag)
    texts = [w.final.text for w in writings]
    book_pages = paginate_sections(texts, budgets, config.words_per_page)
    progress.finish(f"{len(book_pages)} pages, {report.words} words")
    return book_pages, usage


def _submit(call: Call, via: str) -> PrefectFuture[Written]:
    if call.kind == "write":
        return write_section.submit(call.brief, via)
    if call.kind == "revise":
        assert call.revision is not None
        return revise_section.submit(call.brief, call.text, call.revision, via)
    return proofread.submit(call.brief, call.text, via)

"""Flow `story`: write the book to its exact page count, then illustrate and narrate it.

Parameters are the story id and the generation config's fields, flat, so
`prefect deployment run story/generate -p story_id=X -p pages=8` works and the Prefect
UI shows a form with every field.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from flows.fanout import cancel_children, run_children, submit_many
from flows.illustrations import IllustrationsResult, illustrations
from flows.narration import NarrationResult, narration
from flows.progress import Progress
from flows.publishing import Generation, open_generation
from flows.spending import paid
from storyloom import report, services
from storyloom.media.local import preview_src
from storyloom.models import (
    Audience,
    GenerationConfig,
    ImageStyle,
    Language,
    Page,
    StoryId,
    Tone,
    Usage,
)
from storyloom.writing import count_words, length_ok, paginate_sections, plan_sections
from tasks.writing import fit_length, proofread, section_briefs, write_section

_DEFAULT = GenerationConfig()
# A section off its budget by more than this is rewritten once; pagination then holds
# every page within 15% of words_per_page.
SECTION_TOLERANCE = 0.05


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
    """Sections (in parallel), length check, grammar pass, pagination section by section.

    Each section owns whole pages and is written from its own material and context that
    no other section's edit changes (no outline over the whole book), so after an edit
    only the edited section's calls miss the cache and only its pages change.
    """
    logger = get_run_logger()
    config = gen.config
    via = services.providers().notes["text"]
    budgets = plan_sections(
        gen.story.kind, gen.story.material(), config.pages, config.words_per_page
    )
    briefs = section_briefs(gen.story, config, budgets)
    steps = 1 + len(briefs) * (3 if config.improve_grammar else 2)
    progress = Progress("story", gen.story_id, steps, f"{config.pages} pages")
    usage: list[Usage] = []

    # The first section alone: a refused account fails the run after one call.
    drafts = submit_many(write_section, [(b, via) for b in briefs])
    texts: list[str] = []
    for brief, draft in zip(briefs, drafts, strict=True):
        written, cost = paid(draft)
        usage.append(cost)
        texts.append(written.text)
        progress.advance(f"wrote {brief.heading}")

    refits = {
        i: fit_length.submit(brief, texts[i], via)
        for i, brief in enumerate(briefs)
        if not length_ok(count_words(texts[i]), brief.target_words, SECTION_TOLERANCE)
    }
    for i, refit in refits.items():
        written, cost = paid(refit)
        usage.append(cost)
        texts[i] = written.text
    progress.advance(f"length checked, {len(refits)} rewritten", steps=len(briefs))

    if config.improve_grammar:
        passes = [proofread.submit(b, t, via) for b, t in zip(briefs, texts, strict=True)]
        for i, proof in enumerate(passes):
            written, cost = paid(proof)
            usage.append(cost)
            texts[i] = written.text
        progress.advance("proofread", steps=len(briefs))

    total = sum(count_words(t) for t in texts)
    if not length_ok(total, config.total_words, 0.10):
        logger.warning(
            "the text has %d words for a target of %d: pages will be uneven",
            total, config.total_words,
        )  # fmt: skip
    book_pages = paginate_sections(texts, budgets, config.words_per_page)
    progress.finish(f"{len(book_pages)} pages, {total} words")
    return book_pages, usage

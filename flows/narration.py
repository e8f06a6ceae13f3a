"""Flow `narration`: per language, translate if needed, cut one-minute chapters, speak
each chapter in pieces the speech API accepts, measure it, store it.

Runs as a child of `story` (into that run's generation) or on its own, to narrate a
finished story in one more language.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from flows.fanout import submit_many
from flows.progress import Progress
from flows.publishing import Generation, open_generation
from flows.spending import paid
from storyloom import report, services
from storyloom.audio import join_wavs, wav_duration
from storyloom.chapters import ChapterPlan, chapter_title, chunk_text, plan_chapters
from storyloom.media.base import audio_public_id
from storyloom.models import AudioChapter, Language, Page, Usage
from storyloom.providers.base import Speech
from storyloom.settings import get_settings
from storyloom.writing import section_starts
from tasks.media import store_media
from tasks.narration import speak, translate

# A short pause between the pieces of one chapter, where a sentence ended anyway.
PIECE_GAP_SECONDS = 0.25
# How far the measured speed of the voice may be from the speaker's estimate before the
# chapters are planned again.
CALIBRATION = 0.10


class NarrationResult(BaseModel):
    story_id: str
    generation_id: str
    chapters: dict[str, int]  # language -> chapters
    seconds: dict[str, float]  # language -> seconds of audio
    usage: list[Usage]


@flow(
    name="narration",
    description="Narrate a story in chapters of about a minute.",
    persist_result=True,  # read by a parent that started this run from its deployment
)
def narration(
    story_id: str,
    languages: list[Language] | None = None,
    generation_id: str | None = None,
) -> NarrationResult:
    """Narrate into `generation_id` if given, else as a new generation (keeping the rest)."""
    overrides: dict[str, list[Language]] = {}
    if generation_id is None and languages:
        # On its own, this run adds (or redoes) languages: the book keeps the others.
        current = services.store().book(story_id)
        known = (current.config.narration_languages or []) if current else []
        overrides["narration_languages"] = known + [lang for lang in languages if lang not in known]
    with open_generation(
        story_id, generation_id, copy=("pages", "illustrations", "chapters"), overrides=overrides
    ) as gen:
        result = _narrate(gen, languages)
        gen.add_usage(result.usage)
        return result


def _narrate(gen: Generation, only: list[Language] | None) -> NarrationResult:
    settings = get_settings()
    languages = only if only is not None else (gen.config.narration_languages or [])
    pages = gen.pages()
    providers, media = services.providers(), services.media()
    progress = Progress("narration", gen.story_id, len(languages), ", ".join(languages))
    usage: list[Usage] = []
    chapters_by_language: dict[Language, list[AudioChapter]] = {}

    # Chapters never cross a section's first page: an edit elsewhere leaves a section's
    # chapters, and so their cached speech, as they were. The sections are planned again
    # from the story and config (pure); pages that do not match that plan get none.
    starts = (
        section_starts(
            gen.story.kind, gen.story.material(), gen.config.pages, gen.config.words_per_page
        )
        if len(pages) == gen.config.pages
        else frozenset[int]()
    )

    # Planned against an estimate that may be CALIBRATION off, so planned to a maximum
    # that leaves room for it: a section's last chapter often runs close to the maximum.
    max_seconds = max(settings.chapter_seconds, settings.chapter_max_seconds / (1 + CALIBRATION))

    def plan_at(texts: list[tuple[int, str]], seconds_per_char: float) -> list[ChapterPlan]:
        return plan_chapters(
            texts,
            seconds_per_char,
            target_seconds=settings.chapter_seconds,
            max_seconds=max_seconds,
            section_starts=starts,
        )

    def voice(plans: list[ChapterPlan], language: Language) -> list[bytes]:
        """Each chapter's WAV: its pieces spoken (side by side after the first), joined."""
        pieces = [chunk_text(p.text, providers.speaker.max_chars) for p in plans]
        calls = [(piece, language, providers.notes["speech"]) for ps in pieces for piece in ps]
        spoken = iter(submit_many(speak, calls))
        wavs: list[bytes] = []
        for chapter_pieces in pieces:
            speech: list[Speech] = []
            for _ in chapter_pieces:
                piece, cost = paid(next(spoken))
                speech.append(piece)
                usage.append(cost)
            wavs.append(join_wavs([s.wav for s in speech], gap_seconds=PIECE_GAP_SECONDS))
        return wavs

    for language in languages:
        texts, spent = _in_language(pages, gen.story.language, language)
        usage += spent
        estimate = providers.speaker.seconds_per_char(language)
        plans = plan_at(texts, estimate)
        # Chapters are planned from an estimate of the voice's speed. The first chapter
        # is spoken alone and measured: if the voice is more than CALIBRATION off, the
        # book is planned again at the measured speed (the first chapter is paid for
        # again only if its text changed), so no chapter runs far past a minute.
        first = voice(plans[:1], language)
        measured = wav_duration(first[0]) / max(len(plans[0].text), 1) if plans else estimate
        if plans and abs(measured / estimate - 1) > CALIBRATION:
            get_run_logger().info(
                "%s: the voice takes %.3f s a character, not %.3f: chapters planned again",
                language, measured, estimate,
            )  # fmt: skip
            replanned = plan_at(texts, measured)
            if replanned[0].text != plans[0].text:
                first = voice(replanned[:1], language)
            plans = replanned
        progress.grow(len(plans))
        wavs = first + voice(plans[1:], language)
        uploads = submit_many(
            store_media,
            [
                (gen.id, audio_public_id(gen.story_id, language, plan.position, wav), wav,
                 "audio", "wav", media.name)
                for plan, wav in zip(plans, wavs, strict=True)
            ],
        )  # fmt: skip
        chapters: list[AudioChapter] = []
        for plan, wav, upload in zip(plans, wavs, uploads, strict=True):
            stored = upload.result()
            seconds = wav_duration(wav)
            chapters.append(
                AudioChapter(
                    language=language,
                    position=plan.position,
                    title=chapter_title(plan.position, language),
                    text=plan.text,
                    first_page=plan.first_page,
                    duration_seconds=round(seconds, 3),
                    public_id=stored.public_id,
                    url=stored.url,
                    version=stored.version,
                )
            )
            progress.advance(f"{language} chapter {plan.position}")
        gen.save_chapters(language, chapters)
        chapters_by_language[language] = chapters
        progress.advance(f"{language} done")

    progress.finish(f"{sum(len(c) for c in chapters_by_language.values())} chapters")
    create_markdown_artifact(
        report.narration_markdown(gen.story.title, chapters_by_language),
        key=f"narration-{gen.story_id}",
        description=f"Narration of {gen.story.title}",
    )
    return NarrationResult(
        story_id=gen.story_id,
        generation_id=gen.id,
        chapters={lang: len(c) for lang, c in chapters_by_language.items()},
        seconds={
            lang: round(sum(ch.duration_seconds for ch in c), 3)
            for lang, c in chapters_by_language.items()
        },
        usage=usage,
    )


def _in_language(
    pages: list[Page], source: Language, target: Language
) -> tuple[list[tuple[int, str]], list[Usage]]:
    """The pages' text in the target language, page by page so chapters keep their pages."""
    if target == source:
        return [(p.number, p.text) for p in pages], []
    translator = services.providers().translator
    if translator.name.startswith("offline"):
        get_run_logger().warning(
            "the offline translator cannot translate: the %s narration reads the %s text",
            target, source,
        )  # fmt: skip
    pieces = [chunk_text(page.text, translator.max_chars) for page in pages]
    done = iter(
        submit_many(
            translate,
            [
                (piece, source, target, services.providers().notes["translation"])
                for ps in pieces
                for piece in ps
            ],
        )
    )
    texts: list[tuple[int, str]] = []
    usage: list[Usage] = []
    for page, page_pieces in zip(pages, pieces, strict=True):
        written = []
        for _ in page_pieces:
            translated, cost = paid(next(done))
            written.append(translated)
            usage.append(cost)
        texts.append((page.number, " ".join(w.text for w in written)))
    return texts, usage

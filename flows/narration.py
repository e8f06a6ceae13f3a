"""Flow `narration`: per language, translate if needed, cut one-minute chapters, speak
each chapter in pieces the speech API accepts, measure it, store it.

Runs as a child of `story` (into that run's generation) or on its own, to narrate a
finished story in one more language.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture
from pydantic import BaseModel

from flows.fanout import submit_many
from flows.progress import Progress
from flows.publishing import Generation, open_generation
from flows.spending import paid, paid_each
from storyloom import report, services
from storyloom.chapters import (
    ChapterPlan,
    chapter_title,
    chunk_text,
    plan_chapters,
    speech_chunks,
)
from storyloom.media.base import StoredMedia, audio_public_id_for, tag_of
from storyloom.models import AudioChapter, Language, Page, SentenceTiming, Usage
from storyloom.providers.errors import AccountError
from storyloom.settings import get_settings
from storyloom.writing import section_starts
from tasks.media import reuse_media, store_media
from tasks.narration import KeptChapter, translate, voice_chapter

# A pause between the requests of one chapter, where a sentence ended anyway.
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
    failed: dict[Language, str] = {}  # language -> why it failed after its retries


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
        result = _narrate(gen, languages, standalone=generation_id is None)
        gen.add_usage(result.usage)
        return result


def _narrate(gen: Generation, only: list[Language] | None, *, standalone: bool) -> NarrationResult:
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

    # The current book's chapters by language and tag: where a kept chapter's file may be
    # stored already (the same audio now at another position).
    book = services.store().book(gen.story_id)
    elsewhere: dict[tuple[str, str], list[str]] = {}
    for spoken_in, chapters_there in (book.chapters if book else {}).items():
        for chapter in chapters_there:
            key = (spoken_in, tag_of(chapter.public_id))
            elsewhere.setdefault(key, []).append(chapter.public_id)

    def call(plan: ChapterPlan, language: Language) -> tuple[Any, ...]:
        # A chapter's whole sentences in as few requests as the speech model allows.
        chunks = speech_chunks(plan.sentences, providers.speaker.max_chars)
        return (chunks, language, providers.notes["speech"], settings.audio_format,
                settings.audio_bitrate_kbps, PIECE_GAP_SECONDS)  # fmt: skip

    def voice(plans: list[ChapterPlan], language: Language) -> list[Voiced]:
        """Each chapter voiced (voice-chapter: kept for good as the tag of its file, its
        duration and where its sentences are in it), the first alone."""
        futures = submit_many(voice_chapter, [call(plan, language) for plan in plans])
        return [paid_each(future) for future in futures]

    def file(plans: list[ChapterPlan], voiced: list[Voiced], language: Language) -> Filing:
        """Start storing each chapter's file in the generation (see `store`)."""
        return [_stored(gen, plan.position, language, kept, media.name, elsewhere)
                for plan, (kept, _) in zip(plans, voiced, strict=True)]  # fmt: skip

    def store(
        plans: list[ChapterPlan], voiced: list[Voiced], language: Language, filing: Filing
    ) -> list[tuple[KeptChapter, list[Usage], StoredMedia]]:
        """Each chapter's file in the generation: the file a kept chapter names (or a copy
        of it from another position), else the chapter again, from speak's cache while
        that lasts (`result_days`), else spoken anew; with what it cost this run."""
        stored = [future.result() for future in filing]
        gone = [i for i, file in enumerate(stored) if file is None]
        if gone:
            again = voice_chapter.with_options(refresh_cache=True)
            retried = [again.submit(*call(plans[i], language)) for i in gone]
            for i, voicing in zip(gone, retried, strict=True):
                voiced[i] = paid_each(voicing)  # what it cost: the second try, not both
            refiled = [_stored(gen, plans[i].position, language, voiced[i][0], media.name,
                               elsewhere) for i in gone]  # fmt: skip
            for i, refiling in zip(gone, refiled, strict=True):
                stored[i] = refiling.result()
        files: list[StoredMedia] = []
        for plan, file in zip(plans, stored, strict=True):
            if file is None:  # voiced again just now: it has its bytes
                raise RuntimeError(f"chapter {plan.position} was voiced but not stored")
            files.append(file)
        return [(kept, costs, file) for (kept, costs), file in zip(voiced, files, strict=True)]

    # Every language's translation is asked for before any speech, so Sarvam (the
    # busiest API) has work while a language's chapters are voiced one after another
    # and uploaded; each language waits for its own, and a failed translation still
    # fails only its language.
    translated: dict[Language, Callable[[], Translated]] = {}

    def narrate(language: Language) -> Narrating:
        """Voice the language's chapters and start storing their files; `finish` waits
        for the files, so the next language is voiced while these upload."""
        texts, spent = translated[language]()
        usage.extend(spent)
        estimate = providers.speaker.seconds_per_char(language)
        plans = plan_at(texts, estimate)
        # Chapters are planned from an estimate of the voice's speed. The first chapter
        # is voiced alone and measured: if the voice is more than CALIBRATION off, the
        # book is planned again at the measured speed (the first chapter is paid for
        # again only if its text changed), so no chapter runs far past a minute.
        first = voice(plans[:1], language)
        measured = first[0][0].duration / max(len(plans[0].text), 1) if plans else estimate
        if plans and abs(measured / estimate - 1) > CALIBRATION:
            get_run_logger().info(
                "%s: the voice takes %.3f s a character, not %.3f: chapters planned again",
                language, measured, estimate,
            )  # fmt: skip
            replanned = plan_at(texts, measured)
            if replanned[0].text != plans[0].text:
                usage.extend(first[0][1])  # paid for, then planned away
                first = voice(replanned[:1], language)
            plans = replanned
        progress.grow(len(plans))
        voiced = first
        try:
            voiced = first + voice(plans[1:], language)
            filing = file(plans, voiced, language)
        except BaseException:
            # What the voiced chapters cost counts even when the language then fails.
            usage.extend(cost for _, costs in voiced for cost in costs)
            raise
        return Narrating(language, plans, voiced, filing)

    def finish(narrating: Narrating) -> list[AudioChapter]:
        language, plans, voiced = narrating.language, narrating.plans, narrating.voiced
        try:
            files = store(plans, voiced, language, narrating.filing)
        finally:
            # What the voiced chapters cost counts even when the language then fails.
            usage.extend(cost for _, costs in voiced for cost in costs)
        chapters: list[AudioChapter] = []
        for plan, (kept, _, file) in zip(plans, files, strict=True):
            chapters.append(
                AudioChapter(
                    language=language,
                    position=plan.position,
                    title=chapter_title(plan.position, language),
                    text=plan.text,
                    first_page=plan.first_page,
                    duration_seconds=kept.duration,
                    public_id=file.public_id,
                    url=file.url,
                    version=file.version,
                    sentences=[
                        SentenceTiming(text=text, start=start, end=end, page=page)
                        for text, page, (start, end) in zip(
                            plan.sentences, plan.pages, kept.spans, strict=True
                        )
                    ],
                )
            )
            progress.advance(f"{language} chapter {plan.position}")
        return chapters

    failed: dict[Language, str] = {}
    for language in languages:
        try:
            translated[language] = _translate_ahead(pages, gen.story.language, language)
        except AccountError:
            raise
        except Exception as exc:  # raised again when the language is narrated
            translated[language] = _raise(exc)

    def failing(language: Language, exc: Exception) -> None:
        # This language failed after its retries: the book keeps the others, and
        # narrating this one again later costs only this one.
        reason = f"{type(exc).__name__}: {exc}"
        get_run_logger().error("%s narration failed: %s", language, reason)
        gen.save_narration_failure(language, reason)
        failed[language] = reason
        progress.advance(f"{language} failed")

    voiced_in: list[Narrating] = []
    for language in languages:
        try:
            voiced_in.append(narrate(language))
        except AccountError:
            raise  # the account is refused: every language would fail the same way
        except Exception as exc:
            failing(language, exc)
    for narrating in voiced_in:
        language = narrating.language
        try:
            chapters = finish(narrating)
        except AccountError:
            raise
        except Exception as exc:
            failing(language, exc)
            continue
        gen.save_chapters(language, chapters)
        chapters_by_language[language] = chapters
        progress.advance(f"{language} done")

    if failed and not chapters_by_language and standalone:
        # Nothing new to publish: the run fails and the book stays as it was.
        raise RuntimeError(
            "narration failed in every language asked for: "
            + "; ".join(f"{lang}: {why}" for lang, why in failed.items())
        )
    done = sum(len(c) for c in chapters_by_language.values())
    progress.finish(f"{done} chapters" + (f", {len(failed)} language(s) failed" if failed else ""))
    create_markdown_artifact(
        report.narration_markdown(gen.story.title, chapters_by_language, failed),
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
        failed=failed,
    )


Translated = tuple[list[tuple[int, str]], list[Usage]]  # (page, text) in order; the cost


def _translate_ahead(
    pages: list[Page], source: Language, target: Language
) -> Callable[[], Translated]:
    """Ask for the pages' text in the target language now, page by page so chapters keep
    their pages; the returned call waits for it (and raises what translating raised)."""
    if target == source:
        same: Translated = ([(p.number, p.text) for p in pages], [])
        return lambda: same
    translator = services.providers().translator
    if translator.name.startswith("offline"):
        get_run_logger().warning(
            "the offline translator cannot translate: the %s narration reads the %s text",
            target, source,
        )  # fmt: skip
    pieces = [chunk_text(page.text, translator.max_chars) for page in pages]
    futures = submit_many(
        translate,
        [
            (piece, source, target, services.providers().notes["translation"])
            for ps in pieces
            for piece in ps
        ],
    )

    def collect() -> Translated:
        done = iter(futures)
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

    return collect


def _raise(exc: Exception) -> Callable[[], Translated]:
    def again() -> Translated:
        raise exc

    return again


Voiced = tuple[KeptChapter, list[Usage]]  # a chapter, and what voicing it cost this run
# Each chapter's file being stored (None: its kept file is gone and it must be voiced again).
Filing = list[PrefectFuture[StoredMedia] | PrefectFuture[StoredMedia | None]]


@dataclass
class Narrating:
    """A language voiced, its files on their way to the media store."""

    language: Language
    plans: list[ChapterPlan]
    voiced: list[Voiced]
    filing: Filing


def _stored(
    gen: Generation,
    position: int,
    language: Language,
    kept: KeptChapter,
    media_name: str,
    elsewhere: dict[tuple[str, str], list[str]],
) -> PrefectFuture[StoredMedia] | PrefectFuture[StoredMedia | None]:
    """Store the chapter's file in the generation: its bytes when it was just voiced,
    else the file its tag names (None when no longer stored anywhere)."""
    public_id = audio_public_id_for(gen.story_id, language, position, kept.tag)
    if kept.data is not None:
        return store_media.submit(gen.id, public_id, kept.data, "audio", kept.extension, media_name)
    return reuse_media.submit(
        gen.id, public_id, elsewhere.get((language, kept.tag), []), "audio", kept.extension,
        media_name,
    )  # fmt: skip

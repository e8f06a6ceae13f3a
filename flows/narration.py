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
from storyloom.audio import TimedAudio, assemble, deliver, sentence_starts, split_at
from storyloom.chapters import (
    ChapterPlan,
    chapter_title,
    chunk_text,
    plan_chapters,
    speech_chunks,
)
from storyloom.media.base import audio_public_id
from storyloom.models import AudioChapter, Language, Page, SentenceTiming, Usage
from storyloom.providers.errors import AccountError
from storyloom.settings import get_settings
from storyloom.writing import section_starts
from tasks.media import store_media
from tasks.narration import speak, translate

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

    def voice(plans: list[ChapterPlan], language: Language) -> list[TimedAudio]:
        """Each chapter's delivered audio, and where its sentences are in it.

        A chapter's whole sentences are spoken in as few requests as the speech model
        allows (side by side after the first). Speech models return no timestamps, so
        the sentence boundaries inside a request are measured from the audio's pauses;
        between requests they are known. The pieces are joined, encoded and measured.
        """
        chunks = [speech_chunks(p.sentences, providers.speaker.max_chars) for p in plans]
        calls = [
            (" ".join(text for _, text in chunk), language, providers.notes["speech"])
            for chapter in chunks
            for chunk in chapter
        ]
        spoken = iter(submit_many(speak, calls))
        built: list[TimedAudio] = []
        for chapter in chunks:
            pieces: list[bytes] = []
            owners: list[int] = []  # the sentence each piece belongs to
            gaps: list[float] = []
            for chunk in chapter:
                speech, cost = paid(next(spoken))
                usage.append(cost)
                starts = sentence_starts(speech.wav, [len(text) for _, text in chunk])
                pieces += split_at(speech.wav, starts)
                owners += [index for index, _ in chunk]
                gaps += [0.0] * (len(chunk) - 1) + [PIECE_GAP_SECONDS]
            gaps[-1] = 0.0  # the chapter ends where its last sentence does
            wav, spans = assemble(pieces, gaps)
            # A sentence cut across requests spans its pieces.
            by_sentence: dict[int, tuple[int, int]] = {}
            for owner, (start, end) in zip(owners, spans, strict=True):
                by_sentence[owner] = (by_sentence.get(owner, (start, end))[0], end)
            sentence_spans = [by_sentence[i] for i in sorted(by_sentence)]
            built.append(
                deliver(wav, sentence_spans, settings.audio_format, settings.audio_bitrate_kbps)
            )
        return built

    def narrate(language: Language) -> list[AudioChapter]:
        texts, spent = _in_language(pages, gen.story.language, language)
        usage.extend(spent)
        estimate = providers.speaker.seconds_per_char(language)
        plans = plan_at(texts, estimate)
        # Chapters are planned from an estimate of the voice's speed. The first chapter
        # is spoken alone and measured: if the voice is more than CALIBRATION off, the
        # book is planned again at the measured speed (the first chapter is paid for
        # again only if its text changed), so no chapter runs far past a minute.
        first = voice(plans[:1], language)
        measured = first[0].duration / max(len(plans[0].text), 1) if plans else estimate
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
        audio = first + voice(plans[1:], language)
        uploads = submit_many(
            store_media,
            [
                (gen.id, audio_public_id(gen.story_id, language, plan.position, built.data),
                 built.data, "audio", built.extension, media.name)
                for plan, built in zip(plans, audio, strict=True)
            ],
        )  # fmt: skip
        chapters: list[AudioChapter] = []
        for plan, built, upload in zip(plans, audio, uploads, strict=True):
            stored = upload.result()
            chapters.append(
                AudioChapter(
                    language=language,
                    position=plan.position,
                    title=chapter_title(plan.position, language),
                    text=plan.text,
                    first_page=plan.first_page,
                    duration_seconds=built.duration,
                    public_id=stored.public_id,
                    url=stored.url,
                    version=stored.version,
                    sentences=[
                        SentenceTiming(text=text, start=start, end=end, page=page)
                        for text, page, (start, end) in zip(
                            plan.sentences, plan.pages, built.spans, strict=True
                        )
                    ],
                )
            )
            progress.advance(f"{language} chapter {plan.position}")
        return chapters

    failed: dict[Language, str] = {}
    for language in languages:
        try:
            chapters = narrate(language)
        except AccountError:
            raise  # the account is refused: every language would fail the same way
        except Exception as exc:
            # This language failed after its retries: the book keeps the others, and
            # narrating this one again later costs only this one.
            reason = f"{type(exc).__name__}: {exc}"
            get_run_logger().error("%s narration failed: %s", language, reason)
            gen.save_narration_failure(language, reason)
            failed[language] = reason
            progress.advance(f"{language} failed")
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

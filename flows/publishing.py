"""A generation as flows see it: where a run writes its outputs, published all at once.

A run writes pages, illustrations and chapters into a generation readers cannot see;
only when everything is there does the story's pointer move to it, in one transaction,
and only if the book is still the one the generation started from. A failed or
cancelled run leaves the previous book in place and deletes the files only it made; a
run handed back by a stopping worker, or rerun after its worker died, continues its
generation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, StateType
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run

from flows.fanout import submit_many
from storyloom import services
from storyloom.exports import BookFile, book_digest
from storyloom.media.base import book_file_public_id
from storyloom.models import (
    AudioChapter,
    BookExport,
    CreativeStory,
    GenerationConfig,
    Illustration,
    Language,
    LifeStory,
    Page,
    Usage,
    WritingReport,
)
from storyloom.prompts import PROMPT_VERSION
from storyloom.settings import get_settings
from storyloom.store.records import GenerationInfo
from tasks.exports import render_book_files
from tasks.media import delete_orphaned_media, store_media

Output = Literal["pages", "illustrations", "chapters"]
_OVER = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
_CANCELLED = {StateType.CANCELLING, StateType.CANCELLED}


@dataclass(frozen=True)
class Generation:
    id: str
    story: LifeStory | CreativeStory
    config: GenerationConfig

    @property
    def story_id(self) -> str:
        return self.story.id

    def pages(self) -> list[Page]:
        return services.store().generation(self.id).pages

    def save_pages(self, pages: list[Page]) -> None:
        services.store().save_pages(self.id, pages)

    def save_illustrations(self, items: list[Illustration]) -> None:
        services.store().save_illustrations(self.id, items)

    def save_chapters(self, language: Language, chapters: list[AudioChapter]) -> None:
        services.store().save_chapters(self.id, language, chapters)

    def save_narration_failure(self, language: Language, reason: str) -> None:
        services.store().save_narration_failure(self.id, language, reason)

    def add_usage(self, usage: list[Usage]) -> None:
        services.store().add_usage(self.id, usage)

    def save_writing(self, report: WritingReport) -> None:
        services.store().save_writing(self.id, report)


@contextmanager
def open_generation(
    story_id: str,
    generation_id: str | None,
    *,
    config: GenerationConfig | None = None,
    copy: Sequence[Output] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Iterator[Generation]:
    """Join the parent's generation, or start (and at the end publish) a new one.

    A new generation takes `config`, or else the current book's config with the non-None
    `overrides`, and copies the `copy` outputs of the current book into itself. A
    generation this flow run started before it was handed back, or an identical one
    whose run died, is continued instead.
    """
    store = services.store()
    story = store.get_story(story_id)
    if generation_id is not None:
        book = store.generation(generation_id)
        yield Generation(generation_id, story, book.config)
        return
    if config is None:
        current = store.book(story_id)
        if current is None:
            raise ValueError(f"story {story_id!r} has no book yet: run the story flow first")
        changes = {k: v for k, v in (overrides or {}).items() if v is not None}
        config = GenerationConfig.model_validate({**current.config.model_dump(), **changes})
    config = config.for_story(story)
    run_id = flow_run.get_id()
    new_id = _continued(story_id, str(run_id), config) if run_id else None
    if new_id is None:
        new_id = store.start_generation(
            story_id,
            config,
            prompt_version=PROMPT_VERSION,
            flow_run_id=str(run_id) if run_id else None,
            copy_from_current=copy,
        )
    try:
        yield Generation(new_id, story, config)
        _build_book_files(story_id, new_id)
    except BaseException as exc:
        _end(story_id, new_id, exc)
        raise
    try:
        store.publish(new_id)
    except Exception as exc:
        store.fail(new_id, f"publishing failed: {type(exc).__name__}: {exc}")
        _sweep(story_id)
        raise
    delete_orphaned_media(story_id)


def _build_book_files(story_id: str, generation_id: str) -> None:
    """Render the book's files (reader page, EPUBs, PDF) and store them with the
    generation, just before it is published. A failure here is logged and the book is
    published without them: they can be made again from it (`storyloom export`)."""
    formats = get_settings().exports
    if not formats:
        return
    store = services.store()
    try:
        digest = book_digest(store.generation(generation_id), formats)
        current = store.book(story_id)
        same = current is not None and {e.digest for e in current.exports} == {digest}
        # The same book as the published one: its files, not rendered (nor their pictures
        # and audio downloaded) again.
        if (
            current is not None
            and same
            and all(store.reuse_media(generation_id, e.public_id) for e in current.exports)
        ):
            store.save_exports(generation_id, current.exports)
            return
        files = render_book_files(generation_id, formats)
        media = services.media()
        uploads = submit_many(
            store_media,
            [
                (generation_id, book_file_public_id(story_id, _name(f), f.data), f.data, "file",
                 f.extension, media.name)
                for f in files
            ],
        )  # fmt: skip
        exports = []
        for file, upload in zip(files, uploads, strict=True):
            stored = upload.result()
            exports.append(
                BookExport(
                    format=file.format,
                    language=file.language,
                    public_id=stored.public_id,
                    url=stored.url,
                    version=stored.version,
                    bytes=stored.bytes,
                    digest=digest,
                )
            )
        store.save_exports(generation_id, exports)
    except Exception as exc:
        get_run_logger().error(
            "the book's files were not made (the book is published without them): %s: %s",
            type(exc).__name__, exc,
        )  # fmt: skip


def _name(file: BookFile) -> str:
    """The file's name in the story's books folder: reader, book-hi-IN, book."""
    if file.format == "html":
        return "reader"
    return f"book-{file.language}" if file.language else "book"


def _end(story_id: str, generation_id: str, exc: BaseException) -> None:
    """Record how the generation ended, unless its run is only being handed back."""
    store = services.store()
    run_id = flow_run.get_id()
    if isinstance(exc, TerminationSignal):
        state = _run_state(str(run_id)) if run_id else None
        if state is None or state.type not in _CANCELLED:
            # A stopping worker hands the run back (or the API did not answer): the rerun
            # continues this generation, its children and its paid work.
            return
        store.cancel(generation_id, f"cancelled: {state.message or 'the run was cancelled'}")
    elif isinstance(exc, KeyboardInterrupt):
        store.cancel(generation_id, "cancelled: interrupted")
    else:
        store.fail(generation_id, f"{type(exc).__name__}: {exc}")
    _sweep(story_id)


def _sweep(story_id: str) -> None:
    """Delete the files no generation uses; a failure only leaves them for the next sweep."""
    try:
        delete_orphaned_media.fn(story_id)
    except Exception as exc:
        get_run_logger().warning("files of ended generations not deleted yet: %s", exc)


def _continued(story_id: str, run_id: str, config: GenerationConfig) -> str | None:
    """The running generation this run continues, if any.

    Its own (the run was handed back and runs again), or one with the same config, from
    the same book, whose flow run died (Crashed, or ended without closing it): the new
    run adopts it, and with it the child runs (their idempotency keys name the
    generation) and the cached paid work. A dead run's generation that cannot be
    continued is marked failed, so it stops looking busy.
    """
    store = services.store()
    generations = store.generations(story_id, limit=20)
    running = [g for g in generations if g.status == "running"]
    for info in running:
        if info.flow_run_id == run_id:
            return info.id
    current = next((g.id for g in generations if g.current), None)
    for info in running:
        state = _run_state(info.flow_run_id) if info.flow_run_id else None
        if state is None or state.type not in _OVER:
            continue  # still at work somewhere (or Prefect cannot say): leave it alone
        same = info.base_generation_id == current and _config_of(info) == config
        if same:
            store.adopt_generation(info.id, run_id)
            get_run_logger().info(
                "continuing generation %s, whose run ended %s", info.id, state.name
            )
            return info.id
        store.fail(info.id, f"its flow run ended {state.name} and a new run started")
    return None


def _config_of(info: GenerationInfo) -> GenerationConfig:
    return services.store().generation(info.id).config


def _run_state(run_id: str) -> State[Any] | None:
    """The flow run's state; None when Prefect cannot say (no such run, no answer)."""
    try:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(UUID(run_id)).state
    except Exception:  # no such run, or the API is unreachable: decide nothing
        return None

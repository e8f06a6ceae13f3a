"""StoryStore: the story database behind plain values, where a new book goes public in one step.

A generation's outputs are written while readers still see the story's current book;
`publish` then points the story at the new generation in one transaction, and `book`
reads everything through that pointer in one snapshot, so a reader sees all of the old
book or all of the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, cast
from uuid import uuid4

from pydantic import BaseModel, ValidationError
from sqlalchemy import Row, String, and_, delete, func, insert, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from storyloom.media.base import MediaKind, StoredMedia
from storyloom.models import (
    STORY_ADAPTER,
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
from storyloom.store import migrator
from storyloom.store.access import JobStore
from storyloom.store.engine import create_store_engine, reader
from storyloom.store.records import (
    REASONS,
    GenerationInfo,
    GenerationStatus,
    Output,
    Reason,
    StoryBook,
    StorySummary,
    WorkItem,
)
from storyloom.store.tables import (
    AudioChapterRow,
    Base,
    GenerationMediaRow,
    GenerationRow,
    IllustrationRow,
    MediaRow,
    PageRow,
    StoryRow,
)

# Enough for a traceback's last lines; a whole log does not belong in a row.
MAX_ERROR_CHARS = 4000

_OUTPUT_TABLES: dict[Output, str] = {
    "pages": "pages",
    "illustrations": "illustrations",
    "chapters": "audio_chapters",
}


class StoreError(Exception):
    """Something the story store refuses to do."""


class StoryNotFoundError(StoreError):
    """No story has this id."""


class StoryExistsError(StoreError):
    """A story with this id is already stored (and replacing was not asked for)."""


class GenerationNotFoundError(StoreError):
    """No generation has this id (it may have been pruned)."""


class GenerationStateError(StoreError):
    """The generation is not in a state that allows this (e.g. saving into a finished one)."""


class GenerationConflictError(GenerationStateError):
    """Another run published a book after this generation started from the one before it:
    publishing this one would silently drop that run's work."""


class StoryStore(JobStore):
    """Stories, their generations and outputs, in SQLite or PostgreSQL; with tenants,
    API keys and share links (access.py)."""

    def __init__(self, url: str) -> None:
        self.engine = create_store_engine(url)
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(reader(self.engine), expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, migrate: bool = False) -> Self:
        """A store on url whose schema is the revision this code needs: anything older
        (never migrated included) or newer is refused with SchemaMismatchError (schema.py),
        changing nothing. With migrate, the schema is first brought to that revision
        (`storyloom db upgrade`, the demo, `storyloom serve`, tests)."""
        store = cls(url)
        try:
            if migrate:
                store.migrate()
            else:
                migrator.require_head(reader(store.engine))
        except BaseException:
            store.close()
            raise
        return store

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def migrate(self) -> str | None:
        """Bring the schema to the newest revision, safe when several processes do it at
        once; the revision it was at before (None: never migrated)."""
        return migrator.upgrade(self.engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Stories

    def add_story(self, story: LifeStory | CreativeStory, *, replace: bool = False) -> None:
        """Store a story; with replace, overwrite its material and keep its generations."""
        try:
            with self._write.begin() as session:
                self._put_story(session, story, replace=replace)
        except IntegrityError as exc:
            # Another process inserted the same id between our look and our insert.
            if not replace:
                raise StoryExistsError(f"story {story.id!r} already exists") from exc
            with self._write.begin() as session:
                self._put_story(session, story, replace=True)

    def get_story(self, story_id: str) -> LifeStory | CreativeStory:
        """The story's material as it was last stored."""
        with self._read.begin() as session:
            return STORY_ADAPTER.validate_python(_story_row(session, story_id).material)

    def list_stories(self, *, tenant_id: str | None = None) -> list[StorySummary]:
        """Every story (or one tenant's), most recently updated first."""
        latest_status = (
            select(GenerationRow.status)
            .where(GenerationRow.story_id == StoryRow.id)
            .order_by(GenerationRow.created_at.desc())
            .limit(1)
            .correlate(StoryRow)
            .scalar_subquery()
        )
        page_count = (
            select(func.count())
            .select_from(PageRow)
            .where(PageRow.generation_id == StoryRow.current_generation_id)
            .correlate(StoryRow)
            .scalar_subquery()
        )
        query = select(
            StoryRow.id,
            StoryRow.kind,
            StoryRow.title,
            StoryRow.language,
            StoryRow.updated_at,
            latest_status.label("status"),
            page_count.label("pages"),
        ).order_by(StoryRow.updated_at.desc(), StoryRow.id)
        if tenant_id is not None:
            query = query.where(StoryRow.tenant_id == tenant_id)
        with self._read.begin() as session:
            rows = session.execute(query).mappings().all()
        return [StorySummary.model_validate(dict(row)) for row in rows]

    def delete_story(self, story_id: str) -> None:
        """Delete a story with every generation and output (the database cascades)."""
        with self._write.begin() as session:
            row = _story_row(session, story_id, lock=True)
            # Unhook the current book first so the cascade never has to untangle the cycle.
            row.current_generation_id = None
            session.flush()
            session.delete(row)

    # Generations

    def start_generation(
        self,
        story_id: str,
        config: GenerationConfig,
        *,
        prompt_version: str,
        flow_run_id: str | None = None,
        copy_from_current: Sequence[Output] = (),
    ) -> str:
        """Open a running generation readers cannot see yet; returns its id.

        copy_from_current carries those outputs over from the current book, for a run
        that only redoes the images or only the narration.
        """
        generation_id = str(uuid4())
        with self._write.begin() as session:
            # A shared lock: a publish (and its pruning) cannot swap the book mid-copy.
            story = _story_row(session, story_id, lock=True, shared=True)
            source = story.current_generation_id
            if copy_from_current and source is None:
                raise GenerationStateError(
                    f"story {story_id!r} has no published book to copy "
                    f"{', '.join(copy_from_current)} from"
                )
            session.add(
                GenerationRow(
                    id=generation_id,
                    story_id=story_id,
                    status="running",
                    config=config.model_dump(mode="json"),
                    prompt_version=prompt_version,
                    flow_run_id=flow_run_id,
                    base_generation_id=source,
                    error=None,
                    usage=[],
                    writing=None,
                    banner_url=None,
                    thumbnail_url=None,
                    created_at=_now(),
                    finished_at=None,
                )
            )
            session.flush()
            for output in dict.fromkeys(copy_from_current):
                assert source is not None  # checked above
                _copy_outputs(session, output, source, generation_id)
                _copy_media_links(session, output, source, generation_id)
                if output == "pages":
                    # The record of how the pages were written goes with them.
                    row = _generation_row(session, generation_id)
                    row.writing = _generation_row(session, source).writing
        return generation_id

    def adopt_generation(self, generation_id: str, flow_run_id: str) -> None:
        """Hand a running generation to another flow run, which continues it."""
        with self._write.begin() as session:
            _running(session, generation_id).flow_run_id = flow_run_id

    def save_pages(self, generation_id: str, pages: list[Page]) -> None:
        """Replace the generation's pages."""
        _require_unique([p.number for p in pages], "page number")
        with self._write.begin() as session:
            _running(session, generation_id)
            session.execute(delete(PageRow).where(PageRow.generation_id == generation_id))
            _insert(session, PageRow, generation_id, pages)

    def save_illustrations(self, generation_id: str, items: list[Illustration]) -> None:
        """Replace the generation's illustrations."""
        _require_unique([i.position for i in items], "illustration position")
        with self._write.begin() as session:
            _running(session, generation_id)
            session.execute(
                delete(IllustrationRow).where(IllustrationRow.generation_id == generation_id)
            )
            _insert(session, IllustrationRow, generation_id, items)

    def save_chapters(
        self, generation_id: str, language: Language, chapters: list[AudioChapter]
    ) -> None:
        """Replace the generation's chapters in one language; other languages stay."""
        strays = sorted({c.language for c in chapters} - {language})
        if strays:
            raise ValueError(f"chapters in {', '.join(strays)} saved as {language}")
        _require_unique([c.position for c in chapters], "chapter position")
        with self._write.begin() as session:
            row = _running(session, generation_id)
            session.execute(
                delete(AudioChapterRow).where(
                    AudioChapterRow.generation_id == generation_id,
                    AudioChapterRow.language == language,
                )
            )
            _insert(session, AudioChapterRow, generation_id, chapters)
            if language in (row.narration_failures or {}):  # it worked this time
                row.narration_failures = {
                    k: v for k, v in (row.narration_failures or {}).items() if k != language
                }

    def save_narration_failure(self, generation_id: str, language: Language, reason: str) -> None:
        """Record that a narration language failed after its retries, and why; the
        generation's chapters in that language, if any, are dropped."""
        with self._write.begin() as session:
            row = _running(session, generation_id)
            session.execute(
                delete(AudioChapterRow).where(
                    AudioChapterRow.generation_id == generation_id,
                    AudioChapterRow.language == language,
                )
            )
            row.narration_failures = {**(row.narration_failures or {}), language: reason}

    def save_exports(self, generation_id: str, exports: list[BookExport]) -> None:
        """Keep the book's files (their media rows are recorded as they are stored)."""
        with self._write.begin() as session:
            _running(session, generation_id).exports = [e.model_dump(mode="json") for e in exports]

    def save_writing(self, generation_id: str, report: WritingReport) -> None:
        """Keep how the generation's text was written (outline, ledger, flags, figures)."""
        with self._write.begin() as session:
            _running(session, generation_id).writing = report.model_dump(mode="json")

    def add_usage(self, generation_id: str, usages: list[Usage]) -> None:
        """Add what provider calls cost to the generation, summed per provider."""
        if not usages:
            return
        with self._write.begin() as session:
            # Any status: a failed run still paid for the calls it made.
            row = _generation_row(session, generation_id, lock=True)
            stored = [Usage.model_validate(u) for u in row.usage]
            row.usage = [u.model_dump(mode="json") for u in sum_usage([*stored, *usages])]

    def publish(self, generation_id: str) -> None:
        """Make the generation the story's book, in one transaction; prune older generations.

        Keeps the book it replaces, generations still running, and failures newer than
        this one. Publishing the current book again does nothing, so a retried task is
        harmless.
        """
        with self._write.begin() as session:
            story_id = session.scalar(
                select(GenerationRow.story_id).where(GenerationRow.id == generation_id)
            )
            if story_id is None:
                raise GenerationNotFoundError(f"no generation {generation_id!r}")
            # Story before generation, the order every writer locks in: no deadlock.
            story = _story_row(session, story_id, lock=True)
            generation = _generation_row(session, generation_id, lock=True)
            if generation.status == "complete" and story.current_generation_id == generation.id:
                return
            if generation.status != "running":
                raise GenerationStateError(
                    f"generation {generation_id} is {generation.status}: only a running one "
                    "can be published"
                )
            if story.current_generation_id != generation.base_generation_id:
                raise GenerationConflictError(
                    f"story {story_id!r} got a new book (generation "
                    f"{story.current_generation_id}) while generation {generation_id} was "
                    f"being made from {generation.base_generation_id or 'no book'}: nothing "
                    "of this run is published, so that book is not silently undone. Run it "
                    "again: unchanged work is reused, not paid for twice"
                )
            pages = session.scalar(
                select(func.count())
                .select_from(PageRow)
                .where(PageRow.generation_id == generation_id)
            )
            if not pages:
                raise GenerationStateError(
                    f"generation {generation_id} has no pages: there is no book to publish"
                )
            banner = session.execute(
                select(IllustrationRow.url, IllustrationRow.thumbnail_url).where(
                    IllustrationRow.generation_id == generation_id,
                    IllustrationRow.position == 1,
                )
            ).one_or_none()
            now = _now()
            previous = story.current_generation_id
            generation.status = "complete"
            generation.finished_at = now
            generation.banner_url = banner.url if banner else None
            generation.thumbnail_url = banner.thumbnail_url if banner else None
            story.current_generation_id = generation.id
            story.updated_at = now
            session.flush()
            keep = {generation.id} | ({previous} if previous else set())
            session.execute(
                delete(GenerationRow).where(
                    GenerationRow.story_id == story_id,
                    GenerationRow.id.not_in(keep),
                    # A running one may still publish, and a failure newer than this
                    # book is what `stories show` has to tell: both stay.
                    or_(
                        GenerationRow.status == "complete",
                        and_(
                            GenerationRow.status == "failed",
                            GenerationRow.created_at <= generation.created_at,
                        ),
                    ),
                )
            )

    def fail(self, generation_id: str, error: str) -> None:
        """Mark a running generation failed; the story's current book stays as it was.

        The generation lets go of its media: those no other generation uses are then
        orphans, for delete_orphaned_media.
        """
        self._end(generation_id, "failed", error)

    def cancel(self, generation_id: str, reason: str) -> None:
        """Mark a running generation cancelled; like fail, the current book stays."""
        self._end(generation_id, "cancelled", reason)

    def _end(self, generation_id: str, status: GenerationStatus, error: str) -> None:
        with self._write.begin() as session:
            generation = _generation_row(session, generation_id, lock=True)
            if generation.status in ("failed", "cancelled"):
                return  # the first ending is the one that explains it
            if generation.status != "running":
                raise GenerationStateError(
                    f"generation {generation_id} is {generation.status}: it cannot be {status} now"
                )
            generation.status = status
            generation.error = truncate_error(error)
            generation.finished_at = _now()
            session.execute(
                delete(GenerationMediaRow).where(GenerationMediaRow.generation_id == generation_id)
            )

    # Media

    def reuse_media(self, generation_id: str, public_id: str) -> StoredMedia | None:
        """The stored file with this public id, now also used by the generation; None when
        no such file is stored (then upload it and record_media)."""
        with self._write.begin() as session:
            _running(session, generation_id)
            # Locked: an orphan sweep deleting this file waits, or has already gone.
            row = session.scalars(
                select(MediaRow).where(MediaRow.public_id == public_id).with_for_update()
            ).one_or_none()
            if row is None:
                return None
            _link(session, generation_id, public_id)
            return StoredMedia(
                public_id=row.public_id,
                url=row.url,
                version=row.version,
                bytes=row.bytes,
                thumbnail_url=row.thumbnail_url,
            )

    def record_media(self, generation_id: str, stored: StoredMedia, kind: MediaKind) -> None:
        """Remember a file just uploaded for the generation.

        The file is recorded even when the generation has ended meanwhile (a cancelled
        run's last upload): then it is linked to nothing, the next orphan sweep deletes
        it, and GenerationStateError is raised.
        """
        with self._write.begin() as session:
            generation = _generation_row(session, generation_id, lock=True)
            row = session.get(MediaRow, stored.public_id, with_for_update=True)
            if row is None:
                session.add(
                    MediaRow(
                        public_id=stored.public_id,
                        story_id=generation.story_id,
                        kind=kind,
                        url=stored.url,
                        thumbnail_url=stored.thumbnail_url,
                        version=stored.version,
                        bytes=stored.bytes,
                        created_at=_now(),
                    )
                )
                session.flush()
            status = generation.status
            if status == "running":
                _link(session, generation_id, stored.public_id)
        if status != "running":
            raise GenerationStateError(
                f"generation {generation_id} is {status}: {stored.public_id} was stored after "
                "it ended and goes with the next sweep"
            )

    def media_of(self, generation_id: str) -> list[str]:
        """The public ids of the files a generation uses, sorted."""
        with self._read.begin() as session:
            return sorted(
                session.scalars(
                    select(GenerationMediaRow.public_id).where(
                        GenerationMediaRow.generation_id == generation_id
                    )
                )
            )

    def delete_orphaned_media(
        self, story_id: str, delete_file: Callable[[str, MediaKind], object]
    ) -> list[str]:
        """Delete the story's files that no generation uses any more; returns their ids.

        Each file is deleted with its row locked, so a run about to reuse it either finds
        it linked first (and it stays) or finds it gone (and uploads it again). A file
        whose deletion fails stays recorded, for the next sweep.
        """
        with self._read.begin() as session:
            candidates = [row.public_id for row in session.scalars(_orphans(story_id))]
        deleted: list[str] = []
        for public_id in candidates:
            with self._write.begin() as session:
                row = session.scalars(
                    _orphans(story_id).where(MediaRow.public_id == public_id).with_for_update()
                ).one_or_none()
                if row is None:
                    continue  # a generation took it up meanwhile
                kind: MediaKind = "audio" if row.kind == "audio" else "image"
                delete_file(public_id, kind)
                session.execute(delete(MediaRow).where(MediaRow.public_id == public_id))
            deleted.append(public_id)
        return deleted

    # Reading

    def book(self, story_id: str) -> StoryBook | None:
        """The story's current book, read in one snapshot; None before the first publish."""
        with self._read.begin() as session:
            story = _story_row(session, story_id)
            if story.current_generation_id is None:
                return None
            generation = _generation_row(session, story.current_generation_id)
            return _book(session, story, generation)

    def generation(self, generation_id: str) -> StoryBook:
        """Any generation (running, failed or complete) with its outputs so far."""
        with self._read.begin() as session:
            generation = _generation_row(session, generation_id)
            story = _story_row(session, generation.story_id)
            return _book(session, story, generation)

    def latest_generation(self, story_id: str) -> GenerationInfo | None:
        """The story's newest generation (to tell why a run failed); None if it has none."""
        generations = self.generations(story_id, limit=1)
        return generations[0] if generations else None

    def generations(self, story_id: str, *, limit: int | None = None) -> list[GenerationInfo]:
        """The story's generations, newest first."""
        with self._read.begin() as session:
            story = _story_row(session, story_id)
            rows = session.scalars(
                select(GenerationRow)
                .where(GenerationRow.story_id == story_id)
                .order_by(GenerationRow.created_at.desc())
                .limit(limit)
            ).all()
            return [_info(row, story.current_generation_id) for row in rows]

    # Reprocessing

    def stories_needing_work(
        self,
        *,
        prompt_version: str,
        limit: int | None = None,
        abandoned_after: timedelta = timedelta(hours=6),
    ) -> list[WorkItem]:
        """Stories whose book should be generated again, one reason each, most urgent first.

        The reasons, in priority order: the newest generation failed; the current book
        lacks illustrations or a narration language its config asks for; it was written
        with prompts other than prompt_version; its config was saved by an older schema.
        A story whose newest generation is still running is left alone, unless it has
        been running for longer than abandoned_after (its worker died without a word:
        "last run abandoned"); one never generated is not a candidate. Within a reason,
        the story whose newest run is oldest comes first, so stories that fail every
        night cannot keep the rest out. Three queries in one snapshot, however many
        stories there are.
        """
        if limit is not None and limit < 0:
            raise ValueError("limit must be at least 0")
        newest = select(
            GenerationRow.id,
            GenerationRow.story_id,
            GenerationRow.status,
            GenerationRow.config,
            GenerationRow.error,
            GenerationRow.created_at,
            func.row_number()
            .over(
                partition_by=GenerationRow.story_id,
                order_by=(GenerationRow.created_at.desc(), GenerationRow.id.desc()),
            )
            .label("rank"),
        ).subquery("newest")
        current = aliased(GenerationRow, name="current")
        candidates = (
            select(
                StoryRow.id.label("story_id"),
                StoryRow.language,
                newest.c.id.label("newest_id"),
                newest.c.status,
                newest.c.config.label("newest_config"),
                newest.c.error,
                newest.c.created_at,
                current.config.label("current_config"),
                current.prompt_version,
            )
            .join(newest, and_(newest.c.story_id == StoryRow.id, newest.c.rank == 1))
            .outerjoin(current, current.id == StoryRow.current_generation_id)
        )
        illustration_counts = (
            select(StoryRow.id, func.count())
            .join(IllustrationRow, IllustrationRow.generation_id == StoryRow.current_generation_id)
            .group_by(StoryRow.id)
        )
        chapter_languages = (
            select(StoryRow.id, AudioChapterRow.language)
            .join(AudioChapterRow, AudioChapterRow.generation_id == StoryRow.current_generation_id)
            .distinct()
        )
        with self._read.begin() as session:
            rows = session.execute(candidates).all()
            counts: dict[str, int] = {
                story_id: count for story_id, count in session.execute(illustration_counts)
            }
            narrated: dict[str, set[str]] = {}
            for story_id, language in session.execute(chapter_languages):
                narrated.setdefault(story_id, set()).add(language)

        items: list[WorkItem] = []
        abandoned_before = _now() - abandoned_after
        for row in rows:
            if row.status == "running" and _utc(row.created_at) > abandoned_before:
                continue  # still at work: leave it alone
            found = _needs_work(
                row, counts.get(row.story_id, 0), narrated.get(row.story_id, set()), prompt_version
            )
            if found is not None:
                reason, detail, config = found
                items.append(
                    WorkItem(
                        story_id=row.story_id,
                        reason=reason,
                        detail=detail,
                        config=config,
                        key=row.newest_id,
                        last_run_at=row.created_at,
                    )
                )
        items.sort(key=lambda i: (REASONS.index(i.reason), i.last_run_at, i.story_id))
        return items if limit is None else items[:limit]

    def _put_story(
        self, session: Session, story: LifeStory | CreativeStory, *, replace: bool
    ) -> None:
        row = session.get(StoryRow, story.id, with_for_update=True)
        now = _now()
        fields: dict[str, Any] = {
            "kind": story.kind,
            "title": story.title,
            "language": story.language,
            "material": story.model_dump(mode="json"),
            "updated_at": now,
        }
        if row is None:
            session.add(StoryRow(id=story.id, created_at=now, current_generation_id=None, **fields))
        elif not replace:
            raise StoryExistsError(f"story {story.id!r} already exists")
        else:
            for name, value in fields.items():
                setattr(row, name, value)


def sum_usage(usages: Iterable[Usage]) -> list[Usage]:
    """One Usage per provider with calls, tokens and characters added up, by provider name."""
    totals: dict[str, Usage] = {}
    for usage in usages:
        seen = totals.get(usage.provider)
        totals[usage.provider] = (
            usage
            if seen is None
            else Usage(
                provider=usage.provider,
                calls=seen.calls + usage.calls,
                input_tokens=seen.input_tokens + usage.input_tokens,
                output_tokens=seen.output_tokens + usage.output_tokens,
                characters=seen.characters + usage.characters,
                reused=seen.reused + usage.reused,
            )
        )
    return [totals[name] for name in sorted(totals)]


def truncate_error(error: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The error text cut to limit characters, marked where it was cut."""
    marker = " … [truncated]"
    return error if len(error) <= limit else error[: limit - len(marker)] + marker


def _needs_work(
    row: Row[Any], illustrations: int, narrated: set[str], prompt_version: str
) -> tuple[Reason, str, GenerationConfig] | None:
    """The first reason the story needs work again, what exactly, and the config to use."""
    # A failed or abandoned run is retried as it was asked for: its own config is the
    # newest request, not the config of the older book it did not replace.
    if row.status == "failed":
        config, _ = read_config(row.newest_config)
        error = (row.error or "no error recorded").strip().splitlines() or [""]
        return "last run failed", truncate_error(error[0], 200), config
    if row.status == "running":
        config, _ = read_config(row.newest_config)
        started = f"{_utc(row.created_at):%Y-%m-%d %H:%M} UTC"
        return "last run abandoned", f"running since {started}, no word from it", config
    if row.current_config is None:
        return None  # a complete generation is always the current book; nothing to redo
    config, changed = read_config(row.current_config)
    missing = _missing_outputs(config, row.language, illustrations, narrated)
    if missing:
        return "missing outputs", missing, config
    if row.prompt_version != prompt_version:
        return "older prompt version", f"prompts {row.prompt_version}, now {prompt_version}", config
    if changed:
        return "older config", f"saved by an older schema: {', '.join(changed)}", config
    return None


def _missing_outputs(
    config: GenerationConfig, language: str, illustrations: int, narrated: set[str]
) -> str:
    notes = []
    if illustrations < config.illustrations:
        notes.append(f"{illustrations} of {config.illustrations} illustrations")
    # A config saved before its defaults were resolved narrates in the story's language.
    wanted = config.narration_languages if config.narration_languages is not None else [language]
    absent = [lang for lang in wanted if lang not in narrated]
    if absent:
        notes.append(f"no narration in {', '.join(absent)}")
    return "; ".join(notes)


_ABSENT = object()


def read_config(stored: dict[str, Any]) -> tuple[GenerationConfig, list[str]]:
    """A stored config read with today's schema, and the fields that read differs in.

    No differences: it was saved by this schema. Fields the schema no longer has are
    dropped, and so are values it no longer accepts (their defaults apply); a config
    that still does not validate is replaced by the defaults, every field then counted
    as changed.
    """
    known = {k: v for k, v in stored.items() if k in GenerationConfig.model_fields}
    try:
        config = GenerationConfig.model_validate(known)
    except ValidationError as exc:
        refused = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        try:
            config = GenerationConfig.model_validate(
                {k: v for k, v in known.items() if k not in refused}
            )
        except ValidationError:
            config = GenerationConfig()
    upgraded = config.model_dump(mode="json")
    changed = sorted(
        name
        for name in stored.keys() | upgraded.keys()
        if stored.get(name, _ABSENT) != upgraded.get(name, _ABSENT)
    )
    return config, changed


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _story_row(
    session: Session, story_id: str, *, lock: bool = False, shared: bool = False
) -> StoryRow:
    query = select(StoryRow).where(StoryRow.id == story_id)
    if lock:
        query = query.with_for_update(read=shared)
    row = session.scalars(query).one_or_none()
    if row is None:
        raise StoryNotFoundError(f"no story {story_id!r}")
    return row


def _generation_row(session: Session, generation_id: str, *, lock: bool = False) -> GenerationRow:
    query = select(GenerationRow).where(GenerationRow.id == generation_id)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise GenerationNotFoundError(f"no generation {generation_id!r}")
    return row


def _running(session: Session, generation_id: str) -> GenerationRow:
    # Locked, so a publish or fail cannot slip in between this check and the write.
    row = _generation_row(session, generation_id, lock=True)
    if row.status != "running":
        raise GenerationStateError(
            f"generation {generation_id} is {row.status}: only a running one takes outputs"
        )
    return row


def _require_unique(keys: list[int], what: str) -> None:
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"{what} repeated: {', '.join(map(str, duplicates))}")


def _insert(
    session: Session, table: type[Base], generation_id: str, items: Sequence[BaseModel]
) -> None:
    if items:
        session.execute(
            insert(table),
            [{"generation_id": generation_id, **item.model_dump()} for item in items],
        )


def _copy_outputs(session: Session, output: Output, source: str, target: str) -> None:
    table = Base.metadata.tables[_OUTPUT_TABLES[output]]
    columns = [c for c in table.columns if c.name != "generation_id"]
    session.execute(
        insert(table).from_select(
            ["generation_id", *(c.name for c in columns)],
            select(literal(target, String), *columns).where(table.c.generation_id == source),
        )
    )


_MEDIA_OF_OUTPUT: dict[Output, type[IllustrationRow] | type[AudioChapterRow]] = {
    "illustrations": IllustrationRow,
    "chapters": AudioChapterRow,
}


def _copy_media_links(session: Session, output: Output, source: str, target: str) -> None:
    """The copied outputs' files are the new generation's too."""
    table = _MEDIA_OF_OUTPUT.get(output)
    if table is None:
        return
    used = select(table.public_id).where(table.generation_id == target)
    session.execute(
        insert(GenerationMediaRow).from_select(
            ["generation_id", "public_id"],
            select(literal(target, String), GenerationMediaRow.public_id)
            .where(
                GenerationMediaRow.generation_id == source,
                GenerationMediaRow.public_id.in_(used),
            )
            .distinct(),
        )
    )


def _link(session: Session, generation_id: str, public_id: str) -> None:
    exists = session.get(GenerationMediaRow, (generation_id, public_id))
    if exists is None:
        session.add(GenerationMediaRow(generation_id=generation_id, public_id=public_id))
        session.flush()


def _orphans(story_id: str) -> Any:
    """The story's media rows that no generation links to."""
    linked = select(GenerationMediaRow.public_id).where(
        GenerationMediaRow.public_id == MediaRow.public_id
    )
    return select(MediaRow).where(MediaRow.story_id == story_id, ~linked.exists())


def _status(value: str) -> GenerationStatus:
    # The column's check constraint admits nothing else.
    return cast(GenerationStatus, value)


def _info(row: GenerationRow, current_id: str | None) -> GenerationInfo:
    return GenerationInfo(
        id=row.id,
        story_id=row.story_id,
        status=_status(row.status),
        error=row.error,
        flow_run_id=row.flow_run_id,
        base_generation_id=row.base_generation_id,
        prompt_version=row.prompt_version,
        current=row.id == current_id,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _book(session: Session, story: StoryRow, generation: GenerationRow) -> StoryBook:
    pages = session.scalars(
        select(PageRow).where(PageRow.generation_id == generation.id).order_by(PageRow.number)
    ).all()
    illustrations = session.scalars(
        select(IllustrationRow)
        .where(IllustrationRow.generation_id == generation.id)
        .order_by(IllustrationRow.position)
    ).all()
    chapters: dict[Language, list[AudioChapter]] = {}
    for row in session.scalars(
        select(AudioChapterRow)
        .where(AudioChapterRow.generation_id == generation.id)
        .order_by(AudioChapterRow.language, AudioChapterRow.position)
    ):
        chapter = AudioChapter.model_validate(row, from_attributes=True)
        chapters.setdefault(chapter.language, []).append(chapter)
    return StoryBook(
        story=STORY_ADAPTER.validate_python(story.material),
        generation_id=generation.id,
        status=_status(generation.status),
        config=GenerationConfig.model_validate(generation.config),
        prompt_version=generation.prompt_version,
        flow_run_id=generation.flow_run_id,
        error=generation.error,
        pages=[Page.model_validate(p, from_attributes=True) for p in pages],
        illustrations=[Illustration.model_validate(i, from_attributes=True) for i in illustrations],
        chapters=chapters,
        banner_url=generation.banner_url,
        thumbnail_url=generation.thumbnail_url,
        usage=[Usage.model_validate(u) for u in generation.usage],
        writing=None
        if generation.writing is None
        else WritingReport.model_validate(generation.writing),
        narration_failures=generation.narration_failures or {},
        exports=[BookExport.model_validate(e) for e in generation.exports or []],
        created_at=generation.created_at,
        finished_at=generation.finished_at,
    )

"""What Prefect's result storage holds for storyloom, what of it a kept generation needs,
and pruning the rest (`storyloom cache usage|prune`, `storyloom doctor`, and the nightly
`reprocess`).

Every file in the result storage is one result record, named by its cache key (or, for a
run's own result, a random id). What each holds decides how long it stays:

- *payload*: a picture's or speech's bytes (draw-image, speak): expires `result_days`
  after it was written (tasks/retention.py); a record written before expiries applied
  goes when its file is that old.
- *kept*: a picture or chapter kept for good (keep-picture, voice-chapter), a few hundred
  bytes naming its file by the content tag: stays while a generation in the story
  database uses a file with that tag (the current book, the one it replaced, a run at
  work), and goes once none does. A rerun or a regeneration of a kept book needs
  nothing else from the storage for its pictures and chapters.
- *paid*: the answer of a text call (sections, revisions, prompts, translations): a few
  kilobytes, kept; nothing in it says which story it was for, and a rerun needs it.
- *run*: a run's own result (a child flow's, read by its parent when it ended; an
  upload's answer from before uploads stopped keeping one; a failed task's error): goes
  `result_days` after it was written.
- *other* (a result of a type not named here): kept; *unreadable* (no longer loads with
  this code, so nothing reads it): goes `result_days` after it was written.

Supported: result storage on a local or mounted file system: Prefect's default
(PREFECT_RESULTS_LOCAL_STORAGE_PATH, by default PREFECT_HOME/storage) or a LocalFileSystem
block. Another storage block (S3, GCS, Azure) is not listed here: UnsupportedStorage says
so (Prefect still treats expired payloads as missing, but they stay; an age rule on the
bucket would delete the kept and paid results too, which a rerun needs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore, get_default_result_storage
from prefect.settings import get_current_settings

from storyloom import services
from storyloom.media.base import StoredMedia, tag_of
from storyloom.providers.base import IllustrationPlan, Picture, Speech, Written
from storyloom.settings import get_settings
from storyloom.store.repository import StoryStore
from tasks.illustrations import KeptPicture
from tasks.narration import KeptChapter

Kind = Literal["payload", "kept", "paid", "run", "other", "unreadable"]
KINDS: tuple[Kind, ...] = ("payload", "kept", "paid", "run", "other", "unreadable")


class UnsupportedStorage(RuntimeError):
    """The result storage is not on a file system this module can list."""


@dataclass(frozen=True)
class Record:
    """One file of the result storage, and what it holds."""

    key: str  # the file's name: the cache key, or a run result's id
    size: int
    kind: Kind
    written: datetime  # the file's modification time
    expires: datetime | None  # the record's own expiry, if it has one
    tag: str | None = None  # kept records: the content tag of the file they name


@dataclass(frozen=True)
class Removal:
    key: str
    kind: Kind
    size: int
    why: str


@dataclass
class Survey:
    """What the result storage holds, by kind (files, bytes)."""

    where: str
    files: int = 0
    size: int = 0
    kinds: dict[Kind, tuple[int, int]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "files": self.files,
            "bytes": self.size,
            "kinds": {k: {"files": n, "bytes": b} for k, (n, b) in self.kinds.items()},
        }


@dataclass
class Pruned:
    """What a prune removed (or, in a dry run, would remove) and what is left."""

    where: str
    dry_run: bool
    removed: list[Removal]
    left: Survey  # what stays

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removed)

    def as_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "dry_run": self.dry_run,
            "removed": [asdict(r) for r in self.removed],
            "files_removed": len(self.removed),
            "bytes_freed": self.freed,
            "left": self.left.as_json(),
        }


def result_folder() -> Path:
    """The folder of the result storage storyloom's tasks write to.

    Without a Prefect server (the embedded default) this is read from Prefect's settings
    alone, so asking does not start one; with a server, Prefect's own choice (a default
    storage block on the server included). UnsupportedStorage when it is not local.
    """
    settings = get_current_settings()
    if settings.results.default_storage_block is None and not settings.api.url:
        return Path(settings.results.local_storage_path).expanduser()
    storage = get_default_result_storage()
    if isinstance(storage, LocalFileSystem) and storage.basepath:
        return Path(storage.basepath).expanduser()
    name = storage.get_block_type_slug() if isinstance(storage, Block) else type(storage).__name__
    raise UnsupportedStorage(
        f"the result storage is a {name} block: only result storage on a local or mounted "
        "file system (PREFECT_RESULTS_LOCAL_STORAGE_PATH or a LocalFileSystem block) is "
        "listed and pruned (expired results stay there, ignored by Prefect)"
    )


def footprint(folder: Path) -> tuple[int, int]:
    """Files and bytes in the folder, without reading them (for doctor)."""
    if not folder.is_dir():
        return 0, 0
    sizes = [path.stat().st_size for path in folder.iterdir() if path.is_file()]
    return len(sizes), sum(sizes)


def survey(folder: Path | None = None) -> Survey:
    """Files and bytes of the result storage, by kind."""
    folder = folder or result_folder()
    return _tally(str(folder), _records(folder))


def prune(
    *, dry_run: bool = False, folder: Path | None = None, now: datetime | None = None
) -> Pruned:
    """Delete what no kept generation needs (see the module's docstring); a dry run only
    says what would go."""
    folder = folder or result_folder()
    now = now or datetime.now(UTC)
    age = timedelta(days=get_settings().result_days)
    needed = _needed_tags(services.store())
    removed: list[Removal] = []
    left: list[Record] = []
    for record in _records(folder):
        why = _why_remove(record, needed, now, age)
        if why is None:
            left.append(record)
            continue
        if not dry_run and not _delete(folder / record.key, record.written):
            left.append(record)  # written again meanwhile: a run is using it
            continue
        removed.append(Removal(record.key, record.kind, record.size, why))
    return Pruned(str(folder), dry_run, removed, _tally(str(folder), left))


@task(name="prune-cache", cache_policy=NO_CACHE, persist_result=False)
def prune_cache(dry_run: bool = False) -> Pruned | None:
    """`prune` as a step of a flow (the nightly reprocess): a storage it cannot list, or
    a prune that fails, is logged, not raised (the night's other work goes on)."""
    logger = get_run_logger()
    try:
        pruned = prune(dry_run=dry_run)
    except UnsupportedStorage as exc:
        logger.warning("result storage not pruned: %s", exc)
        return None
    except Exception:
        logger.exception("result storage not pruned")
        return None
    logger.info(
        "result storage %s: %d files (%s) %s, %d files (%s) left",
        pruned.where, len(pruned.removed), human(pruned.freed),
        "would go" if dry_run else "removed", pruned.left.files, human(pruned.left.size),
    )  # fmt: skip
    return pruned


def human(size: int) -> str:
    """Bytes as people read them: 812 B, 6.2 kB, 71.8 MB."""
    amount = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------- reading


def _records(folder: Path) -> Iterator[Record]:
    if not folder.is_dir():
        return
    # Read through Prefect's own reader of the storage, the way a cache hit reads it.
    reader = ResultStore(
        result_storage=LocalFileSystem(basepath=str(folder)), cache_result_in_memory=False
    )
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # deleted meanwhile
        kind, expires, tag = _holds(reader, path.name)
        written = datetime.fromtimestamp(stat.st_mtime, UTC)
        yield Record(path.name, stat.st_size, kind, written, expires, tag)


def _holds(reader: ResultStore, key: str) -> tuple[Kind, datetime | None, str | None]:
    """What a record holds: its kind, its expiry, and a kept record's content tag."""
    try:
        record = reader.read(key)
    except Exception:  # deleted meanwhile, or it no longer loads with this code
        return "unreadable", None, None
    if record.metadata.expiration is not None:
        # Only the paid calls that return bytes expire.
        return "payload", record.metadata.expiration, None
    result: Any = record.result
    if isinstance(result, KeptPicture | KeptChapter):
        return "kept", None, result.tag
    if isinstance(result, Picture | Speech):
        return "payload", None, None
    if isinstance(result, Written | IllustrationPlan):
        return "paid", None, None
    if isinstance(result, StoredMedia | BaseException) or type(result).__module__.startswith(
        "flows."
    ):
        return "run", None, None
    return "other", None, None


def _tally(where: str, records: Iterable[Record]) -> Survey:
    found = Survey(where)
    for record in records:
        found.files += 1
        found.size += record.size
        files, size = found.kinds.get(record.kind, (0, 0))
        found.kinds[record.kind] = (files + 1, size + record.size)
    return found


# ------------------------------------------------------------------------- deciding


def _needed_tags(store: StoryStore) -> set[str]:
    """The content tags of every file a generation in the story database uses."""
    return {
        tag_of(public_id)
        for story in store.list_stories()
        for generation in store.generations(story.id)
        for public_id in store.media_of(generation.id)
    }


def _why_remove(record: Record, needed: set[str], now: datetime, age: timedelta) -> str | None:
    old = record.written <= now - age
    if record.expires is not None:
        return "expired" if record.expires <= now else None
    if record.kind == "payload":
        return "written before results expired, older than result_days" if old else None
    if record.kind == "kept":
        return None if record.tag in needed else "no generation uses its file"
    if record.kind in ("run", "unreadable"):
        return f"a {record.kind} result older than result_days" if old else None
    return None


def _delete(path: Path, written: datetime) -> bool:
    """Delete the file unless it was written again since it was read."""
    try:
        if datetime.fromtimestamp(path.stat().st_mtime, UTC) != written:
            return False
        path.unlink()
    except FileNotFoundError:
        pass
    return True

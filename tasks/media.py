"""Tasks that store generated files under public ids named by their bytes, read them back,
and delete the files no generation uses any more.

None of them keeps a result: the story database's `media` table says which files exist.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from storyloom import services
from storyloom.media.base import MediaKind, StoredMedia
from tasks.policy import api_slot, honour_retry_after, paid_call_options

# Media calls retry like paid calls; their answers are not worth keeping: the `media`
# table says which files exist, so a rerun (or a retry) asks it again, for nothing.
UNKEPT = paid_call_options(NO_CACHE) | {"persist_result": False}


@task(name="store-media", **UNKEPT)
def store_media(
    generation_id: str, public_id: str, data: bytes, kind: MediaKind, extension: str, via: str
) -> StoredMedia:
    """Store one file for the generation; a file with these bytes already stored (an
    unchanged picture or chapter) is reused without an upload."""
    store = services.store()
    reused = store.reuse_media(generation_id, public_id)
    if reused is not None:
        return reused
    media = services.media()
    with honour_retry_after(), api_slot("media", media.name):
        stored = media.put(public_id, data, kind=kind, extension=extension)
    store.record_media(generation_id, stored, kind)
    return stored


@task(name="reuse-media", **UNKEPT)
def reuse_media(
    generation_id: str,
    public_id: str,
    same_bytes: list[str],
    kind: MediaKind,
    extension: str,
    via: str,
) -> StoredMedia | None:
    """The stored file with this public id, now also the generation's; else the bytes of
    the first of `same_bytes` still stored (the same content under another public id: a
    picture whose page moved) stored under it; None when neither is there."""
    reused = services.store().reuse_media(generation_id, public_id)
    if reused is not None:
        return reused
    for other in same_bytes:
        try:
            data = read_media.fn(other, kind, extension, via)
        except FileNotFoundError:
            continue
        return store_media.fn(generation_id, public_id, data, kind, extension, via)
    return None


@task(name="read-media", **UNKEPT)
def read_media(public_id: str, kind: MediaKind, extension: str, via: str) -> bytes:
    """The bytes of a stored file; FileNotFoundError when it is not stored."""
    media = services.media()
    with honour_retry_after(), api_slot("media", media.name):
        return media.read(public_id, kind=kind, extension=extension)


@task(name="delete-orphaned-media", **UNKEPT)
def delete_orphaned_media(story_id: str) -> list[str]:
    """Delete the story's files that no generation uses any more (pruned, failed or
    cancelled generations' own files); returns their public ids."""
    media = services.media()

    def delete(public_id: str, kind: MediaKind) -> None:
        with honour_retry_after(), api_slot("media", media.name):
            media.delete(public_id, kind=kind)

    return services.store().delete_orphaned_media(story_id, delete)

"""Tasks that store generated files under public ids named by their bytes, and delete the
files no generation uses any more."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from storyloom import services
from storyloom.media.base import MediaKind, StoredMedia
from tasks.policy import UPLOAD_CACHE, api_slot, honour_retry_after, paid_call_options


@task(name="store-media", **paid_call_options(UPLOAD_CACHE))
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


@task(name="delete-orphaned-media", **paid_call_options(NO_CACHE) | {"persist_result": False})
def delete_orphaned_media(story_id: str) -> list[str]:
    """Delete the story's files that no generation uses any more (pruned, failed or
    cancelled generations' own files); returns their public ids."""
    media = services.media()

    def delete(public_id: str, kind: MediaKind) -> None:
        with honour_retry_after(), api_slot("media", media.name):
            media.delete(public_id, kind=kind)

    return services.store().delete_orphaned_media(story_id, delete)

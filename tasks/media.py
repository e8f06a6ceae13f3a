"""Tasks that store generated files: deterministic public ids, so a repeat overwrites."""

from __future__ import annotations

from prefect import task

from storyloom import services
from storyloom.media.base import MediaKind, StoredMedia
from tasks.policy import UPLOAD_CACHE, api_slot, honour_retry_after, paid_call_options


@task(name="store-media", **paid_call_options(UPLOAD_CACHE))
def store_media(
    public_id: str, data: bytes, kind: MediaKind, extension: str, via: str
) -> StoredMedia:
    """Upload one file under its public id."""
    media = services.media()
    with honour_retry_after(), api_slot("media", media.name):
        return media.put(public_id, data, kind=kind, extension=extension)

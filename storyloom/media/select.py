"""Which media store: Cloudinary when configured, local files otherwise."""

from __future__ import annotations

from storyloom.media.base import MediaStore
from storyloom.media.local import LocalMediaStore
from storyloom.providers.select import wants_real
from storyloom.settings import Settings


def open_media(settings: Settings) -> MediaStore:
    """Build the media store for this process from the settings."""
    url = settings.cloudinary_url
    if wants_real(settings.media_provider, url is not None, "media", "CLOUDINARY_URL"):
        from storyloom.media.cloudinary import CloudinaryMediaStore

        assert url is not None
        return CloudinaryMediaStore.from_url(url.get_secret_value())
    return LocalMediaStore(settings.media_dir)

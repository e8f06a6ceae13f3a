"""The process-wide story store, media store and providers, built once from settings."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from storyloom.settings import get_settings

if TYPE_CHECKING:
    from storyloom.media.base import MediaStore
    from storyloom.providers.base import Providers
    from storyloom.store.repository import StoryStore

_lock = threading.Lock()
_store: StoryStore | None = None
_media: MediaStore | None = None
_providers: Providers | None = None


def store() -> StoryStore:
    """The story database named by the settings; SchemaMismatchError (store/schema.py)
    when its schema is not the revision this code needs (`storyloom db upgrade`)."""
    global _store
    with _lock:
        if _store is None:
            from storyloom.store.repository import StoryStore

            _store = StoryStore.open(get_settings().database_url)
        return _store


def media() -> MediaStore:
    """Cloudinary when configured (or forced), local files otherwise."""
    global _media
    with _lock:
        if _media is None:
            from storyloom.media.select import open_media

            _media = open_media(get_settings())
        return _media


def providers() -> Providers:
    """The writer, illustrator, speaker and translator chosen by the settings."""
    global _providers
    with _lock:
        if _providers is None:
            from storyloom.providers.select import choose_providers

            _providers = choose_providers(get_settings())
        return _providers


def reset() -> None:
    """Forget everything built so far, settings included (tests; after settings change)."""
    global _store, _media, _providers
    with _lock:
        if _store is not None:
            _store.close()
        _store = _media = _providers = None
        get_settings.cache_clear()

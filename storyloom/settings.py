"""Every knob and secret of storyloom, in one pydantic-settings class."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Choice = Literal["auto", "offline", "real"]


class Settings(BaseSettings):
    """Read from STORYLOOM_* variables (and a .env file); provider keys by their usual names."""

    model_config = SettingsConfigDict(
        env_prefix="STORYLOOM_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(Path("var"), description="where the embedded default keeps its files")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite under home")
    media_root: Path | None = Field(None, description="local media folder; default home/media")

    # Which provider serves each role: 'auto' is the real one when its key is set.
    text_provider: Choice = "auto"
    image_provider: Choice = "auto"
    speech_provider: Choice = "auto"
    media_provider: Choice = "auto"

    gemini_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "STORYLOOM_GEMINI_API_KEY", "GEMINI_API_KEY", "GOOGLE_GENERATIVE_AI_API_KEY"
        ),
    )
    gemini_base_url: str | None = None
    gemini_api_version: str = "v1beta"
    gemini_text_model: str = "gemini-2.5-flash"
    gemini_image_model: str = "gemini-3.1-flash-image"
    gemini_image_aspect_ratio: str = "4:3"
    gemini_image_size: str = "1K"
    gemini_timeout_seconds: float = 120.0

    sarvam_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("STORYLOOM_SARVAM_API_KEY", "SARVAM_API_KEY")
    )
    sarvam_base_url: str = "https://api.sarvam.ai"
    sarvam_tts_model: str = "bulbul:v3"
    sarvam_speaker: str = ""
    sarvam_translate_model: str = "sarvam-translate:v1"
    sarvam_sample_rate: int = 24000
    sarvam_timeout_seconds: float = 60.0

    cloudinary_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("STORYLOOM_CLOUDINARY_URL", "CLOUDINARY_URL")
    )

    # How `story` runs its children: as runs of their deployments on their own pools
    # ("deployments"), or in this process as subflows ("in-process"); "auto" picks
    # deployments when `story` itself runs from a deployment.
    fanout: Literal["auto", "in-process", "deployments"] = "auto"
    child_poll_seconds: float = Field(2.0, gt=0)
    # How long a child run may sit not yet started (Scheduled, Late, Pending) before the
    # parent cancels its children and fails naming the pool that had no worker.
    child_start_timeout_seconds: float = Field(3600.0, gt=0)
    # Reading a child's state again after a transient Prefect API error (a dropped
    # connection, a 5xx, a 429): this many times in a row, backing off from
    # child_poll_seconds, doubling, to at most 30 s between tries.
    child_read_retries: int = Field(6, ge=0, le=20)

    # Every call to an external API takes a slot of that API's Prefect global
    # concurrency limits (storyloom/limits.py). On for the workers of a server where
    # `storyloom setup` ran; off (the default) in the in-process demo, where the limits
    # do not exist. On with a limit missing, a call fails and says to run setup.
    api_limits: bool = False

    # Two workers about to pay for the same cached call: with a lock manager one pays,
    # the other waits and reads its result. "" (none), or a redis:// URL. (Prefect's
    # file lock manager was tried: two threads racing for one key made it raise.)
    cache_locks: str = Field("", pattern=r"^(|rediss?://.*)$")

    # Narration chapters: aim for this many seconds, never plan one over the maximum.
    chapter_seconds: float = Field(60.0, gt=5)
    chapter_max_seconds: float = Field(75.0, gt=5)
    # How chapters are delivered: MP3 (mono, constant bitrate through libsndfile; 48
    # kbps is about 0.36 MB a minute) or WAV (16-bit PCM, about 2.6 MB a minute).
    audio_format: Literal["mp3", "wav"] = "mp3"
    audio_bitrate_kbps: int = Field(48, ge=8, le=320)
    # The HTTP API: jobs a tenant may have queued or running at once (past it, 429);
    # how often a job's events stream looks at it; for how long a webhook delivery is
    # retried (backing off from 1 s to 5 minutes) before it is given up.
    tenant_max_jobs: int = Field(10, ge=1)
    job_events_poll_seconds: float = Field(0.5, gt=0)
    webhook_retry_seconds: float = Field(3600.0, gt=0)
    # The book's files built when a generation is published (storyloom/exports).
    exports: list[Literal["html", "epub", "pdf"]] = ["html", "epub", "pdf"]

    # Retries of paid calls: only transient errors, exponential backoff with jitter, and
    # never sooner than the server asked (Retry-After). retry_wait_scale=0 turns all
    # waiting off, for tests (the waits asked for are still recorded).
    retries: int = Field(4, ge=0, le=10)
    retry_base_seconds: float = Field(2.0, ge=0)
    retry_wait_scale: float = Field(1.0, ge=0)
    max_retry_after_seconds: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'storyloom.db'}"
        if self.media_root is None:
            self.media_root = self.home / "media"
        if self.chapter_max_seconds < self.chapter_seconds:
            raise ValueError("chapter_max_seconds is less than chapter_seconds")
        return self

    @property
    def media_dir(self) -> Path:
        assert self.media_root is not None  # set by _derive_paths
        return self.media_root


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()

"""Every knob and secret of storyloom, in one pydantic-settings class.

Read from STORYLOOM_* variables, then from one env file (STORYLOOM_ENV_FILE, default
~/.config/storyloom/env), never from the current directory: every command, worker and
flow run on a machine sees the same home, database, media and cache from any folder.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Choice = Literal["auto", "offline", "real"]
_CRON = re.compile(r"[\w*/,?#-]+(\s+[\w*/,?#-]+){4,5}")


def env_file() -> Path:
    """The env file the settings read: STORYLOOM_ENV_FILE, else the per-user one."""
    named = os.environ.get("STORYLOOM_ENV_FILE")
    if named:
        return Path(named).expanduser().absolute()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "storyloom" / "env"


def default_home() -> Path:
    """Where storyloom keeps its files when STORYLOOM_HOME is not set: per user,
    $XDG_DATA_HOME/storyloom (~/.local/share/storyloom)."""
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "storyloom"


class Settings(BaseSettings):
    """Read from STORYLOOM_* variables (and the env file, through get_settings());
    provider keys by their usual names."""

    # hide_input_in_errors: a malformed URL may still hold its secret.
    model_config = SettingsConfigDict(
        env_prefix="STORYLOOM_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    # The database (SQLite), media, Prefect's home and the result cache live here unless
    # named apart. Made absolute once, when the settings are read.
    home: Path = Field(default_factory=default_home, description="storyloom's own files")
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
    # Days a paid result that holds a picture's or speech's bytes stays in Prefect's
    # result storage (tasks/policy.py): a failed or cancelled run redone within them pays
    # nothing again; then it expires and `storyloom cache prune` deletes it. A kept book
    # needs none of them: its lasting cache entries name its stored files, not bytes.
    # Three days cover the nightly reprocess of a failed story with a day to spare.
    result_days: float = Field(3.0, gt=0)

    # --- Operations: what `storyloom setup` creates on a Prefect server ------------------
    # Runs at a time per pool (deployments/config.py names the pools).
    story_pool_limit: int = Field(2, ge=1)
    images_pool_limit: int = Field(1, ge=1)
    audio_pool_limit: int = Field(2, ge=1)
    # One reprocess at a time: a second would only find and wait on the first's runs.
    maintenance_pool_limit: int = Field(1, ge=1)
    # Only used when a pool is created; an existing pool keeps its type (a Docker or
    # Kubernetes pool made by hand is respected).
    pool_type: str = "process"

    # Per external API (storyloom/limits.py), across every worker: calls in flight, and
    # calls a second sustained. Each becomes a global concurrency limit: `api:<name>`
    # with `in_flight` slots and no decay, `rate:<name>` with slot decay `per_second`
    # (a token bucket as deep as `in_flight`: after a quiet spell that many may start
    # at once, then the rate holds).
    gemini_text_in_flight: int = Field(8, ge=1)
    gemini_text_per_second: float = Field(1.0, gt=0)
    gemini_image_in_flight: int = Field(2, ge=1)
    gemini_image_per_second: float = Field(0.2, gt=0)
    # Sarvam's starter plan allows 30 requests a minute: 0.5 a second.
    sarvam_in_flight: int = Field(4, ge=1)
    sarvam_per_second: float = Field(0.5, gt=0)
    # Cloudinary's Upload API (upload, destroy, the signed download the book's files
    # read through) has no per-second quota ("Upload API methods can be used as
    # needed"); only the Admin API counts calls, by the hour (500 to 2,000), and
    # storyloom calls it only to delete a story's files. The rate is a courtesy cap: at
    # 2 a second it held the book's 38 reads to 18 s (docs/performance.md, entry 5).
    cloudinary_in_flight: int = Field(8, ge=1)
    cloudinary_per_second: float = Field(10.0, gt=0)

    # Where failed and crashed runs are reported: a plain webhook (setup keeps a Webhook
    # block named alert_webhook_block with this URL), and/or an existing notification
    # block named "<block-type-slug>/<name>", e.g. "slack-webhook/ops". Neither: no alert.
    alert_webhook_url: SecretStr | None = None
    alert_webhook_block: str = Field("storyloom-alerts", pattern=r"^[a-z0-9-]+$")
    alert_notification_block: str | None = Field(None, pattern=r"^[a-z0-9-]+/[a-z0-9-]+$")

    # Crash detection. Runs of setup's deployments send a heartbeat every
    # heartbeat_seconds (Prefect's minimum is 30); one silent for crashed_after_seconds,
    # neither beating nor in a state that stops the beat, is marked Crashed: about
    # 60-95 s after its machine died with the defaults. A crashed story, illustrations
    # or narration run is put back in its pool (same run, so it continues its
    # generation) while it has started at most crash_reruns times (Prefect's run
    # count: hand-backs count too); 0 turns reruns off.
    heartbeat_seconds: int = Field(30, ge=30)
    crashed_after_seconds: int = Field(90, ge=10)
    crash_reruns: int = Field(3, ge=0, le=50)

    reprocess_cron: str = "0 2 * * *"
    reprocess_timezone: str = "Asia/Kolkata"

    # --- Workers (`storyloom worker`, STORYLOOM_WORKER_*) ---------------------------------
    # After SIGTERM: how long running flow runs may take to finish before they are
    # handed back to the pool.
    worker_grace_seconds: float = Field(300.0, ge=0)
    # Seconds between polls for new runs (Prefect's default is 10).
    worker_query_seconds: float = Field(1.0, gt=0, le=60)
    # How far ahead of their start time scheduled runs are claimed.
    worker_prefetch_seconds: int = Field(2, ge=0)
    # A handed-back run gets this long to stop after SIGTERM, then SIGKILL.
    worker_kill_seconds: float = Field(10.0, ge=0)
    # A worker that has not reached the Prefect server for this long exits (code 3) so
    # that its supervisor restarts it or alerts; an answer that the worker is not
    # allowed in (401/403: a revoked key) ends it at once.
    worker_server_timeout_seconds: float = Field(120.0, gt=0)
    # A worker whose flow runs see only account errors from a provider (revoked key,
    # exhausted quota, no billing) for this long stops taking runs, hands back what it
    # holds and exits (code 4): every run it took would fail the same way.
    worker_account_error_seconds: float = Field(300.0, gt=0)
    # Set by a worker for the flow runs it starts: where they note a provider's account
    # errors for it (storyloom/health.py). Not a knob.
    worker_health_dir: Path | None = None

    # Retries of paid calls: only transient errors, exponential backoff with jitter, and
    # never sooner than the server asked (Retry-After). retry_wait_scale=0 turns all
    # waiting off, for tests (the waits asked for are still recorded).
    retries: int = Field(4, ge=0, le=10)
    retry_base_seconds: float = Field(2.0, ge=0)
    retry_wait_scale: float = Field(1.0, ge=0)
    max_retry_after_seconds: float = Field(300.0, gt=0)

    @field_validator("alert_webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here so a typo fails before anything is written, without echoing the
        # secret in the error.
        if value is None or not value.get_secret_value():
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("alert_webhook_url must be an http(s) URL")
        return value

    @field_validator("reprocess_cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        # The shape only (five or six fields): Prefect's schedule checks the rest when
        # setup builds it, before it writes anything (deployments/config.py).
        if not _CRON.fullmatch(cron.strip()):
            raise ValueError(f"not a cron expression (five fields): {cron!r}")
        return cron

    @field_validator("reprocess_timezone")
    @classmethod
    def _valid_timezone(cls, timezone: str) -> str:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone: {timezone!r}") from None
        return timezone

    @model_validator(mode="after")
    def _silence_spans_beats(self) -> Self:
        # One late heartbeat must not crash a healthy run.
        if self.crashed_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "crashed_after_seconds must be at least twice heartbeat_seconds"
                f" ({self.crashed_after_seconds} < 2 × {self.heartbeat_seconds})"
            )
        return self

    @model_validator(mode="after")
    def _derive_paths(self) -> Self:
        # Absolute once, here: a flow run works in a folder of its own, and a command
        # run from another folder must find the same files.
        self.home = self.home.expanduser().absolute()
        if self.media_root is not None:
            self.media_root = self.media_root.expanduser().absolute()
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


def read_settings() -> Settings:
    """The settings as they are now: the variables, then the env file."""
    return Settings(_env_file=env_file())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return read_settings()

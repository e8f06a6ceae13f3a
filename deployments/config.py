"""What `storyloom setup` creates on a Prefect server, from STORYLOOM_* variables.

Apart from storyloom.settings.Settings on purpose: these knobs matter to whoever runs
setup against a server, never to the flows themselves.
"""

from __future__ import annotations

from typing import NamedTuple, Self
from urllib.parse import urlsplit

from prefect.client.schemas.schedules import CronSchedule
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storyloom.limits import (
    CLOUDINARY,
    GEMINI_IMAGE,
    GEMINI_TEXT,
    SARVAM,
    in_flight_limit,
    rate_limit_name,
)

# The pool names are fixed: prefect.yaml names them and the docs talk about them.
# Only their limits are knobs.
STORY_POOL = "story"
IMAGES_POOL = "images"
AUDIO_POOL = "audio"
# Runs that wait on other runs (reprocess waits on the story runs it submits): on the
# story pool they would hold a slot the runs they wait for need.
MAINTENANCE_POOL = "maintenance"


AUTOMATION_NAME = "storyloom: run failed"
# Crash handling (deployments/crashes.py): a run whose heartbeats stop is marked
# Crashed, and a crashed generation run is put back in its pool.
SILENT_RUN_AUTOMATION = "storyloom: silent run crashed"
RERUN_AUTOMATION = "storyloom: crashed run rerun"
# ...and a run that ended Crashed past its reruns, or Cancelled, has its generation
# closed by the generation/close deployment (flows/closing.py).
CLOSE_AUTOMATION = "storyloom: ended run's generation closed"
CLOSE_DEPLOYMENT = "generation/close"
NIGHTLY_DEPLOYMENT = "reprocess/nightly"
# The flow-run setting that turns heartbeats on (alias PREFECT_RUNNER_HEARTBEAT_FREQUENCY).
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


class ApiLimit(NamedTuple):
    """A global concurrency limit's size: slots, and how fast they decay (0: never)."""

    limit: int
    slot_decay_per_second: float


class OpsSettings(BaseSettings):
    """Sizes of pools and limits, the alert target and the nightly schedule."""

    # hide_input_in_errors: a malformed webhook URL may still hold its secret token.
    model_config = SettingsConfigDict(
        env_prefix="STORYLOOM_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # Runs at a time per pool: the three queues the design started from.
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
    cloudinary_in_flight: int = Field(8, ge=1)
    cloudinary_per_second: float = Field(2.0, gt=0)

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

    @model_validator(mode="after")
    def _silence_spans_beats(self) -> Self:
        # One late heartbeat must not crash a healthy run.
        if self.crashed_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "crashed_after_seconds must be at least twice heartbeat_seconds"
                f" ({self.crashed_after_seconds} < 2 × {self.heartbeat_seconds})"
            )
        return self

    @field_validator("reprocess_timezone")
    @classmethod
    def _valid_schedule(cls, timezone: str) -> str:
        CronSchedule(cron="0 2 * * *", timezone=timezone)  # raises on an unknown zone
        return timezone

    @field_validator("reprocess_cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        CronSchedule(cron=cron)  # raises on a malformed expression
        return cron

    @property
    def pools(self) -> dict[str, int]:
        """Work pool name → runs at a time."""
        return {
            STORY_POOL: self.story_pool_limit,
            IMAGES_POOL: self.images_pool_limit,
            AUDIO_POOL: self.audio_pool_limit,
            MAINTENANCE_POOL: self.maintenance_pool_limit,
        }

    @property
    def api_limits(self) -> dict[str, ApiLimit]:
        """Global concurrency limit name → its size: two per external API."""
        sizes = {
            GEMINI_TEXT: (self.gemini_text_in_flight, self.gemini_text_per_second),
            GEMINI_IMAGE: (self.gemini_image_in_flight, self.gemini_image_per_second),
            SARVAM: (self.sarvam_in_flight, self.sarvam_per_second),
            CLOUDINARY: (self.cloudinary_in_flight, self.cloudinary_per_second),
        }
        limits: dict[str, ApiLimit] = {}
        for api, (in_flight, per_second) in sizes.items():
            limits[in_flight_limit(api)] = ApiLimit(in_flight, 0.0)
            limits[rate_limit_name(api)] = ApiLimit(in_flight, per_second)
        return limits

    @property
    def reprocess_schedule(self) -> CronSchedule:
        """The nightly reprocessing schedule."""
        return CronSchedule(cron=self.reprocess_cron, timezone=self.reprocess_timezone)


def mask_url(url: str) -> str:
    """The URL down to its scheme and host: enough to recognise, nothing secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"

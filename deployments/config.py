"""What `storyloom setup` creates on a Prefect server: the names, and the sizes read from
storyloom.settings.Settings (the one settings class)."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from prefect.client.schemas.schedules import CronSchedule
from pydantic import ValidationError

from storyloom.limits import (
    CLOUDINARY,
    GEMINI_IMAGE,
    GEMINI_TEXT,
    SARVAM,
    in_flight_limit,
    rate_limit_name,
)
from storyloom.settings import Settings

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


def pool_limits(settings: Settings) -> dict[str, int]:
    """Work pool name → runs at a time."""
    return {
        STORY_POOL: settings.story_pool_limit,
        IMAGES_POOL: settings.images_pool_limit,
        AUDIO_POOL: settings.audio_pool_limit,
        MAINTENANCE_POOL: settings.maintenance_pool_limit,
    }


def api_limit_sizes(settings: Settings) -> dict[str, ApiLimit]:
    """Global concurrency limit name → its size: two per external API."""
    sizes = {
        GEMINI_TEXT: (settings.gemini_text_in_flight, settings.gemini_text_per_second),
        GEMINI_IMAGE: (settings.gemini_image_in_flight, settings.gemini_image_per_second),
        SARVAM: (settings.sarvam_in_flight, settings.sarvam_per_second),
        CLOUDINARY: (settings.cloudinary_in_flight, settings.cloudinary_per_second),
    }
    limits: dict[str, ApiLimit] = {}
    for api, (in_flight, per_second) in sizes.items():
        limits[in_flight_limit(api)] = ApiLimit(in_flight, 0.0)
        limits[rate_limit_name(api)] = ApiLimit(in_flight, per_second)
    return limits


def reprocess_schedule(settings: Settings) -> CronSchedule:
    """The nightly reprocessing schedule (ValueError on a cron Prefect refuses)."""
    try:
        return CronSchedule(cron=settings.reprocess_cron, timezone=settings.reprocess_timezone)
    except ValidationError as exc:
        raise ValueError(
            f"STORYLOOM_REPROCESS_CRON {settings.reprocess_cron!r}: "
            + "; ".join(error["msg"] for error in exc.errors(include_url=False))
        ) from None


def mask_url(url: str) -> str:
    """The URL down to its scheme and host: enough to recognise, nothing secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"

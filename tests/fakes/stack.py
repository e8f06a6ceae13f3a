"""All three fakes at once, and the environment that points the real clients at them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from tests.fakes.cloudinary import CloudinaryState, cloudinary_fake
from tests.fakes.gemini import GeminiState, gemini_fake
from tests.fakes.sarvam import SarvamState, sarvam_fake
from tests.fakes.server import Call, FakeState

GEMINI_KEY, SARVAM_KEY = "gemini-key", "sarvam-key"
CLOUD, CLOUDINARY_KEY, CLOUDINARY_SECRET = "demo", "123", "s3cret"



@dataclass
class Fakes:
    gemini: GeminiState
    sarvam: SarvamState
    cloudinary: CloudinaryState
    env: dict[str, str]  # what makes storyloom use the real clients against these fakes

    @property
    def all(self) -> tuple[FakeState, FakeState, FakeState]:
        return (self.gemini, self.sarvam, self.cloudinary)

    def gemini_calls(self, model: str) -> list[Call]:
        """The generateContent calls to one Gemini model (text and image share the fake)."""
        return [c for c in self.gemini.calls if f"/{model}:generateContent" in c.path]


@contextmanager
def running_fakes() -> Iterator[Fakes]:
    """Gemini, Sarvam and Cloudinary on loopback, each with its own key."""
    with ExitStack() as stack:
        gemini_url, gemini = stack.enter_context(gemini_fake(GEMINI_KEY))
        sarvam_url, sarvam = stack.enter_context(sarvam_fake(SARVAM_KEY))
        cloudinary_url, cloudinary = stack.enter_context(
            cloudinary_fake(CLOUD, CLOUDINARY_KEY, CLOUDINARY_SECRET)
        )
        env = {
            "GEMINI_API_KEY": GEMINI_KEY,
            "STORYLOOM_GEMINI_BASE_URL": gemini_url,
            "SARVAM_API_KEY": SARVAM_KEY,
            "STORYLOOM_SARVAM_BASE_URL": sarvam_url,
            "CLOUDINARY_URL": (
                f"cloudinary://{CLOUDINARY_KEY}:{CLOUDINARY_SECRET}@{CLOUD}"
                f"?upload_prefix={cloudinary_url}"
            ),
        }
        yield Fakes(gemini, sarvam, cloudinary, env)


def peak_overlap(spans: Iterable[tuple[Any, Any]]) -> int:
    """The most spans (start, end) open at one moment; touching spans do not overlap."""
    spans = list(spans)
    # At one instant an end (-1) sorts before a start (+1).
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = level = 0
    for _, step in edges:
        level += step
        most = max(most, level)
    return most


def peak_in_flight(calls: Iterable[Call]) -> int:
    """The most calls a fake was serving at one moment, from its call log."""
    return peak_overlap([(c.started, c.ended) for c in calls])

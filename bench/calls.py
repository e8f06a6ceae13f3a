"""The provider calls the loopback fakes recorded, as the pipeline benchmark counts them.

Each call is named by the API whose limits it takes (storyloom/limits.py), what it asks
for (a section, a proofread, an image plan, an image, a translation, speech, an upload),
its language where it has one, and what identifies the request: a call whose request was
already sent is a repeated (paid twice) call. From a story's calls, `story_plan` builds
the order its flows must make them in (bench/bounds.py evaluates it).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.bounds import Node, Parallel, Serial, Stage
from storyloom.limits import CLOUDINARY, GEMINI_IMAGE, GEMINI_TEXT, SARVAM
from tests.fakes.cloudinary import ApiError, parse_form
from tests.fakes.gemini import GeminiRequest
from tests.fakes.server import Call
from tests.fakes.stack import Fakes

# What a story pays for; other calls (reading a file back, deleting one) cost nothing.
PAID_KINDS = (
    "section", "revise", "continue", "proofread", "text", "plan", "image", "translate",
    "speech", "upload",
)  # fmt: skip


@dataclass(frozen=True)
class ProviderCall:
    api: str
    kind: str
    language: str  # "" when the call has none
    media: str  # uploads: "image", "audio" or "file" (a book file); else ""
    request: str  # what identifies the request (a digest of it, or the upload's public id)
    start: float  # time.monotonic() of this process (the fakes run in it)
    end: float
    status: int

    @property
    def paid(self) -> bool:
        return self.kind in PAID_KINDS

    @property
    def duration(self) -> float:
        return self.end - self.start


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def _json(body: bytes) -> dict[str, object]:
    try:
        found = json.loads(body or b"{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _gemini(call: Call) -> ProviderCall | None:
    if ":generateContent" not in call.path:
        return None  # a model lookup (doctor)
    kind = GeminiRequest("", "", {}, _json(call.body)).kind
    api = GEMINI_IMAGE if kind == "image" else GEMINI_TEXT
    return ProviderCall(
        api, kind, "", "", _digest(call.body), call.started, call.ended, call.status
    )


def _sarvam(call: Call) -> ProviderCall | None:
    body = _json(call.body)
    if call.path.endswith("/translate"):
        kind, language = "translate", str(body.get("target_language_code", ""))
    elif call.path.endswith("/text-to-speech"):
        kind = "speech"
        language = str(body.get("language_code") or body.get("target_language_code") or "")
    else:
        return None
    return ProviderCall(
        SARVAM, kind, language, "", _digest(call.body), call.started, call.ended, call.status
    )


def _cloudinary(call: Call) -> ProviderCall:
    if not call.path.endswith("/upload"):
        return ProviderCall(
            CLOUDINARY, "media-other", "", "", _digest(call.body), call.started, call.ended,
            call.status,
        )  # fmt: skip
    try:
        fields, _, _ = parse_form(call.body, call.headers.get("content-type", ""))
    except ApiError:
        fields = {}  # refused by the fake as malformed: still a call
    public_id = fields.get("public_id", "") or _digest(call.body)
    parts = public_id.split("/")
    media = "audio" if "/audio/" in public_id else "image" if "/images/" in public_id else "file"
    language = parts[parts.index("audio") + 1] if media == "audio" else ""
    return ProviderCall(
        CLOUDINARY, "upload", language, media, public_id, call.started, call.ended, call.status
    )


def recorded(fakes: Fakes, marks: Marks | None = None) -> list[ProviderCall]:
    """Every provider call the fakes logged (after `marks`, if given), by start time."""
    start = marks or Marks(0, 0, 0)
    found: list[ProviderCall | None] = []
    found += [_gemini(c) for c in list(fakes.gemini.calls)[start.gemini :]]
    found += [_sarvam(c) for c in list(fakes.sarvam.calls)[start.sarvam :]]
    found += [_cloudinary(c) for c in list(fakes.cloudinary.calls)[start.cloudinary :]]
    return sorted((c for c in found if c is not None), key=lambda c: c.start)


@dataclass(frozen=True)
class Marks:
    """How many calls each fake had logged at a moment: what came after is a phase's."""

    gemini: int
    sarvam: int
    cloudinary: int

    @classmethod
    def now(cls, fakes: Fakes) -> Marks:
        return cls(len(fakes.gemini.calls), len(fakes.sarvam.calls), len(fakes.cloudinary.calls))


def paid_by_kind(calls: Iterable[ProviderCall]) -> Counter[str]:
    return Counter(c.kind for c in calls if c.paid)


def repeated(calls: Iterable[ProviderCall]) -> int:
    """Paid calls whose very request had already been sent (and answered) before."""
    seen: set[tuple[str, str]] = set()
    again = 0
    for call in sorted(calls, key=lambda c: c.start):
        if not call.paid:
            continue
        key = (call.kind, call.request)
        again += key in seen
        if call.status < 400:
            seen.add(key)
    return again


def minimum(calls: Iterable[ProviderCall]) -> Counter[str]:
    """What the design needs of a story's calls: each section written once and proofread
    once, one plan and one image per illustrated page, one translation per piece of
    text, one speech request per chunk, one upload per file; no revision or continuation
    (the fakes answer at the asked length) and no request twice."""
    needed = Counter[str]()
    distinct = {(c.kind, c.request) for c in calls if c.paid and c.status < 400}
    for kind, _ in distinct:
        if kind not in ("revise", "continue"):
            needed[kind] += 1
    return needed


def _first_then_rest(api: str, calls: Sequence[ProviderCall], name: str) -> list[Node]:
    """`submit_many`'s shape: the first call alone, then the rest side by side."""
    if not calls:
        return []
    ordered = sorted(calls, key=lambda c: c.start)
    steps: list[Node] = [Stage(api, (ordered[0].duration,), f"{name} (first)")]
    if ordered[1:]:
        steps.append(Stage(api, tuple(c.duration for c in ordered[1:]), name))
    return steps


def _writing(calls: Sequence[ProviderCall]) -> list[Node]:
    """The writing rounds (the flow waits for every call of a round before the next):
    the first section alone, then a new round wherever a call starts after every call
    before it ended, unless every call of the round so far was of its kind (a round may
    mix kinds, and the rate may space one round's calls apart; two rounds of one kind in
    a row count as one, which makes the bound lower, never higher)."""
    rounds: list[list[ProviderCall]] = []
    ended = float("-inf")
    for call in sorted(calls, key=lambda c: c.start):
        barrier = call.start >= ended
        mixed = bool(rounds) and any(c.kind != call.kind for c in rounds[-1])
        if len(rounds) == 1 or not rounds or (barrier and mixed):
            rounds.append([call])
        else:
            rounds[-1].append(call)
        ended = max(ended, call.end)
    return [Stage(GEMINI_TEXT, tuple(c.duration for c in r), r[0].kind) for r in rounds]


def illustrations_plan(calls: Sequence[ProviderCall]) -> Serial:
    """Plans (first alone), the first image, its upload, the other images, their uploads."""
    plans = [c for c in calls if c.kind == "plan"]
    images = sorted((c for c in calls if c.kind == "image"), key=lambda c: c.start)
    uploads = sorted(
        (c for c in calls if c.kind == "upload" and c.media == "image"), key=lambda c: c.start
    )
    steps = _first_then_rest(GEMINI_TEXT, plans, "image plans")
    if images:
        steps.append(Stage(GEMINI_IMAGE, (images[0].duration,), "first image"))
    if uploads:
        steps.append(Stage(CLOUDINARY, (uploads[0].duration,), "first image upload"))
    if images[1:]:
        steps.append(Stage(GEMINI_IMAGE, tuple(c.duration for c in images[1:]), "images"))
    if uploads[1:]:
        steps.append(Stage(CLOUDINARY, tuple(c.duration for c in uploads[1:]), "image uploads"))
    return Serial(tuple(steps))


def narration_plan(calls: Sequence[ProviderCall]) -> Serial:
    """Language after language: translations (first alone), the first chapter's speech,
    the other chapters' speech, the chapters' uploads. (A chapter longer than one speech
    request speaks its first piece before the others: here all but the first chapter's
    pieces are taken as side by side, which makes the bound lower, never higher.)"""
    spoken = [c for c in calls if c.kind in ("translate", "speech") or c.media == "audio"]
    languages = list(dict.fromkeys(c.language for c in sorted(spoken, key=lambda c: c.start)))
    steps: list[Node] = []
    for language in languages:
        own = [c for c in spoken if c.language == language]
        steps += _first_then_rest(
            SARVAM, [c for c in own if c.kind == "translate"], f"{language} translation"
        )
        steps += _first_then_rest(
            SARVAM, [c for c in own if c.kind == "speech"], f"{language} speech"
        )
        uploads = [c.duration for c in own if c.kind == "upload"]
        if uploads:
            steps.append(Stage(CLOUDINARY, tuple(uploads), f"{language} chapter uploads"))
    return Serial(tuple(steps))


def story_plan(calls: Sequence[ProviderCall]) -> Serial:
    """One story's paid calls in the order its flows must make them: the writing rounds,
    then illustrations beside narration, then the book files' uploads."""
    paid = [c for c in calls if c.paid and c.status < 400]
    writing = [c for c in paid if c.api == GEMINI_TEXT and c.kind != "plan"]
    files = [c.duration for c in paid if c.kind == "upload" and c.media == "file"]
    steps: list[Node] = [*_writing(writing)]
    steps.append(Parallel((illustrations_plan(paid), narration_plan(paid))))
    if files:
        steps.append(Stage(CLOUDINARY, tuple(files), "book files"))
    return Serial(tuple(steps))

"""A loopback Sarvam: `POST /text-to-speech` and `POST /translate`, as the real API speaks them.

It checks what the real service checks (the `api-subscription-key` header, the current
field names, languages, speakers per model, length limits per model) and answers with
real WAV audio whose length grows with the text, so callers can measure it. Latency,
faults and the call log come from FakeState and FaultMiddleware (server.py).
"""

from __future__ import annotations

import array
import base64
import io
import math
import re
import uuid
import wave
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.fakes.server import FakeState, Fault, FaultMiddleware, serve

LANGUAGES = frozenset(
    {"bn-IN", "en-IN", "gu-IN", "hi-IN", "kn-IN", "ml-IN", "mr-IN", "od-IN", "pa-IN",
     "ta-IN", "te-IN"}
)  # fmt: skip
V3_SPEAKERS = ("shubh", "aditya", "ritu", "priya", "neha", "rahul", "pooja", "kavya")
V2_SPEAKERS = ("anushka", "manisha", "vidya", "arya", "abhilash", "karun", "hitesh")
TTS_MODELS: dict[str, tuple[tuple[str, ...], int]] = {  # model -> (speakers, max chars)
    "bulbul:v3": (V3_SPEAKERS, 2500),
    "bulbul:v4-flash": (V3_SPEAKERS, 2500),
    "bulbul:v2": (V2_SPEAKERS, 1500),
}
TRANSLATE_MODELS: dict[str, int] = {"sarvam-translate:v1": 2000, "mayura:v1": 1000}
SAMPLE_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})

SECONDS_PER_CHAR = 0.06  # the fake's speaking rate at pace 1.0
TONE_HZ = 200
TONE_AMPLITUDE = 1500  # quiet, but not silence: a silent answer would hide a bug

_ERROR_CODES = {
    400: "invalid_request_error",
    403: "invalid_api_key_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded_error",
    500: "internal_server_error",
    502: "internal_server_error",
    503: "rate_limit_exceeded_error",  # the real API says 503 when it sheds load
    504: "internal_server_error",
}
_ERROR_MESSAGES = {
    403: "Invalid API key or subscription key",
    429: "Rate limit exceeded. Please retry after some time.",
    500: "Internal server error",
    503: "Service is overloaded. Please retry after some time.",
}


def error_body(status: int, fault: Fault | None = None) -> dict[str, Any]:
    """The Sarvam error body for a status: `{"error": {"message", "code"}}`."""
    return {
        "error": {
            "message": _ERROR_MESSAGES.get(status, f"Request failed with status {status}"),
            "code": _ERROR_CODES.get(status, "internal_server_error"),
        }
    }


def rate_limited(retry_after: float | None = 1.0, *, path: str = "") -> Fault:
    """A 429 rate_limit_exceeded_error, with a Retry-After header unless None."""
    return Fault(status=429, retry_after=retry_after, path_contains=path)


def quota_exhausted(*, path: str = "") -> Fault:
    """A 429 insufficient_quota_error: the account is out of credits."""
    body = {
        "error": {
            "message": "Insufficient quota. Please top up your credits.",
            "code": "insufficient_quota_error",
        }
    }
    return Fault(status=429, body=body, path_contains=path)


def tone_wav(seconds: float, sample_rate: int) -> bytes:
    """A 16-bit mono PCM WAV of a quiet tone lasting `seconds`."""
    return _wav(_tone(seconds, sample_rate), sample_rate)


def _tone(seconds: float, sample_rate: int) -> array.array[int]:
    frames = max(1, round(seconds * sample_rate))
    period = max(2, sample_rate // TONE_HZ)
    cycle = array.array(
        "h", (round(TONE_AMPLITUDE * math.sin(2 * math.pi * i / period)) for i in range(period))
    )
    # Repeating one cycle keeps a minutes-long answer cheap to build.
    return (cycle * (frames // period + 1))[:frames]


def _wav(samples: array.array[int], sample_rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(samples.tobytes())
    return out.getvalue()


# Like a real voice, the fake does not read at one even rate: each sentence at its own
# pace, a pause after it, a shorter one at a comma. Where it put each sentence is
# recorded (SarvamState.spoken), so tests can check timings measured from the audio.
SENTENCE_PAUSE = 0.35
COMMA_PAUSE = 0.12
_SENTENCE_END = re.compile(r"(?<=[.?!।॥])\s+")


def _pace(sentence: str) -> float:
    """A sentence's own speed, 0.8 to 1.2 times the voice's: fixed by its text."""
    return 0.8 + 0.4 * (zlib.crc32(sentence.encode()) % 1000) / 999


def voice(
    text: str, seconds_per_char: float, sample_rate: int
) -> tuple[bytes, list[tuple[str, float, float]]]:
    """The fake's speech for text, and each sentence's [start, end) in seconds."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    samples = array.array("h")
    spans: list[tuple[str, float, float]] = []
    for number, sentence in enumerate(sentences):
        start = len(samples) / sample_rate
        clauses = sentence.split(",")
        for i, clause in enumerate(clauses):
            chars = len(clause) + (i < len(clauses) - 1)
            samples += _tone(seconds_per_char * chars * _pace(sentence), sample_rate)
            if i < len(clauses) - 1:
                samples += array.array("h", bytes(2 * round(COMMA_PAUSE * sample_rate)))
        if number < len(sentences) - 1:
            samples += array.array("h", bytes(2 * round(SENTENCE_PAUSE * sample_rate)))
        spans.append((sentence, start, len(samples) / sample_rate))
    return _wav(samples, sample_rate), spans


def _error(status: int, message: str, code: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": code}}, status)


def _missing(body: dict[str, Any], fields: tuple[str, ...]) -> JSONResponse | None:
    # The real API validates its body with a schema: a missing field is a 422.
    absent = [f for f in fields if f not in body]
    if absent:
        return _error(422, f"Field required: {', '.join(absent)}")
    return None


@dataclass
class SarvamState(FakeState):
    """FakeState plus the speaking rate: how long the audio is for a character of text."""

    seconds_per_char: float = SECONDS_PER_CHAR
    # Every answer's sentences and where the fake put them: (text, start, end) seconds.
    spoken: list[list[tuple[str, float, float]]] = field(default_factory=list)
    # Languages the voice fails in, every time, with this HTTP status (a model outage
    # for one language: 500 internal_server_error, retried, then given up).
    failing_languages: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        super().reset()
        self.seconds_per_char = SECONDS_PER_CHAR
        self.spoken.clear()
        self.failing_languages.clear()


def make_app(api_key: str, state: SarvamState) -> ASGIApp:
    """The fake Sarvam wrapped in the shared fault middleware."""

    async def read(request: Request) -> dict[str, Any] | Response:
        if request.headers.get("api-subscription-key") != api_key:
            return JSONResponse(error_body(403), 403)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(422, "Request body must be a JSON object")
        return body

    async def text_to_speech(request: Request) -> Response:
        body = await read(request)
        if isinstance(body, Response):
            return body
        # Old clients send `inputs` (before 2026) or `target_language_code` (before
        # August 2026); the current API takes neither, so a stale client fails here too.
        for old, new in (("inputs", "text"), ("target_language_code", "language_code")):
            if old in body:
                return _error(422, f"Unknown field '{old}': use '{new}'")
        if (refused := _missing(body, ("text", "language_code"))) is not None:
            return refused
        model = body.get("model", "bulbul:v3")
        if model not in TTS_MODELS:
            return _error(400, f"Invalid model '{model}'. Allowed: {', '.join(TTS_MODELS)}")
        speakers, limit = TTS_MODELS[model]
        text, language = body["text"], body["language_code"]
        speaker = body.get("speaker", speakers[0])
        pace = body.get("pace", 1.0)
        rate = body.get("speech_sample_rate", 24000)
        codec = body.get("output_audio_codec", "wav")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Text must not be empty")
        if len(text) > limit:
            return _error(400, f"Text length exceeds the maximum of {limit} characters for {model}")
        if language not in LANGUAGES:
            return _error(
                400, f"Invalid language_code '{language}'. Allowed: {', '.join(sorted(LANGUAGES))}"
            )
        if speaker not in speakers:
            return _error(
                400,
                f"Speaker '{speaker}' is not compatible with model {model}. "
                f"Available speakers: {', '.join(speakers)}",
            )
        if not isinstance(pace, int | float) or not 0.3 <= pace <= 3.0:
            return _error(400, "pace must be between 0.3 and 3.0")
        if rate not in SAMPLE_RATES:
            return _error(400, f"Invalid speech_sample_rate {rate}")
        if codec != "wav":
            return _error(400, f"This fake answers only wav, not {codec!r}")
        if language in state.failing_languages:
            status = state.failing_languages[language]
            return JSONResponse(error_body(status), status)
        wav, spans = voice(text, state.seconds_per_char / pace, rate)
        state.spoken.append(spans)
        return JSONResponse(
            {"request_id": uuid.uuid4().hex, "audios": [base64.b64encode(wav).decode("ascii")]}
        )

    async def translate(request: Request) -> Response:
        body = await read(request)
        if isinstance(body, Response):
            return body
        fields = ("input", "source_language_code", "target_language_code")
        if (refused := _missing(body, fields)) is not None:
            return refused
        model = body.get("model", "mayura:v1")
        if model not in TRANSLATE_MODELS:
            return _error(400, f"Invalid model '{model}'. Allowed: {', '.join(TRANSLATE_MODELS)}")
        text, source, target = (body[f] for f in fields)
        limit = TRANSLATE_MODELS[model]
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Input must not be empty")
        if len(text) > limit:
            return _error(
                400, f"Input length exceeds the maximum of {limit} characters for {model}"
            )
        for name, code in (("source_language_code", source), ("target_language_code", target)):
            if code not in LANGUAGES and not (name == "source_language_code" and code == "auto"):
                return _error(400, f"Invalid {name} '{code}'")
        detected = "en-IN" if source == "auto" else source
        return JSONResponse(
            {
                "request_id": uuid.uuid4().hex,
                # Tagged, not translated: tests can see the call happened and to where.
                "translated_text": f"[{target}] {text}",
                "source_language_code": detected,
            }
        )

    app = Starlette(
        routes=[
            Route("/text-to-speech", text_to_speech, methods=["POST"]),
            Route("/translate", translate, methods=["POST"]),
        ]
    )
    return FaultMiddleware(app, state, error_body)


@contextmanager
def sarvam_fake(api_key: str = "test-key") -> Iterator[tuple[str, SarvamState]]:
    """Serve the fake Sarvam on loopback; yields (base_url, state)."""
    state = SarvamState()
    with serve(make_app(api_key, state)) as base_url:
        yield base_url, state

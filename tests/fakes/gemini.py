"""A loopback fake of the Gemini API's generateContent, for text, JSON and image answers.

It speaks the wire protocol the google-genai SDK uses (see the Gemini part of
/work/shared/reference/providers.md): `POST /{version}/models/{model}:generateContent`
with the key in `x-goog-api-key`, camelCase JSON (some nested keys snake_case), answers
with candidates and usageMetadata, and errors in Google's `{"error": {...}}` shape.
`GET /{version}/models/{model}` (what `client.models.get` sends, and what `storyloom
doctor` probes with) answers the model's resource, or 404 for a model not in `models`.

Key checks follow the real API: no key answers 403 PERMISSION_DENIED; a wrong key answers
400 INVALID_ARGUMENT with an ErrorInfo detail whose reason is API_KEY_INVALID.

Knobs: everything FakeState has (latency, fault schedule, call log, in flight), plus
content outcomes queued with `block_next_prompt()` and `finish_next(reason)`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.server import FakeState, Fault, FaultMiddleware, serve

STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
MESSAGES: dict[int, str] = {
    400: "Request contains an invalid argument.",
    403: "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API.",
    404: "Requested entity was not found.",
    429: "You exceeded your current quota, please check your plan and billing details. For "
    "more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}
BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."

# 1K pixel sizes the Gemini image models answer with; 2K and 4K scale these by 2 and 4.
IMAGE_SIZES_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
IMAGE_SCALE: dict[str, int] = {"1K": 1, "2K": 2, "4K": 4}
IMAGE_TOKENS = 1290  # what one generated image costs in output tokens on the real API

SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
]
IMAGE_FINISH_MESSAGES = {
    "IMAGE_SAFETY": "Unable to show the generated image. The image was filtered out because "
    "it violated Google's Generative AI Prohibited Use policy.",
    "IMAGE_PROHIBITED_CONTENT": "Unable to show the generated image: prohibited content.",
    "NO_IMAGE": "The model did not generate an image.",
    "IMAGE_OTHER": "Unable to show the generated image.",
    "IMAGE_RECITATION": "Unable to show the generated image: it resembles existing work.",
}

ABOUT_WORDS = re.compile(r"about (\d+) words")
_WORD_TEXT = (
    "the morning light fell across the courtyard where a small boy watched his "
    "grandmother grind spices and the smell of cardamom drifted through open windows "
    "while bullock carts rolled past the temple and a river shone beyond the mango "
    "trees and neighbours called to one another about rain harvest weddings letters "
    "school fees and the long train journey to the city where everything would change"
)
WORDS = _WORD_TEXT.split()


def error_body(
    code: int,
    message: str | None = None,
    *,
    status: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Google's error envelope: {"error": {"code", "message", "status", "details"}}."""
    error: dict[str, Any] = {
        "code": code,
        "message": message or MESSAGES.get(code, "Error."),
        "status": status or STATUS_NAMES.get(code, "UNKNOWN"),
    }
    if details is not None:
        error["details"] = details
    return {"error": error}


def retry_info(delay: str) -> dict[str, Any]:
    """A google.rpc.RetryInfo detail, e.g. retry_info("3s")."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota_exhausted(
    *,
    retry_delay: str | None = "3s",
    per: str = "Minute",
    limit: int = 10,
    model: str = "gemini-2.5-flash",
) -> dict[str, Any]:
    """The 429 body the real API sends when a quota runs out (per "Minute" or "Day")."""
    metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    message = (
        f"{MESSAGES[429]}\n* Quota exceeded for metric: {metric}, limit: {limit}, model: {model}"
    )
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": metric,
                    "quotaId": f"GenerateRequestsPer{per}PerProjectPerModel-FreeTier",
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": str(limit),
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    if retry_delay is not None:
        details.append(retry_info(retry_delay))
    return error_body(429, message, details=details)


def fault_body(status: int, fault: Fault) -> dict[str, Any]:
    """The body FaultMiddleware sends for a scheduled fault without its own body."""
    if status == 429:
        # A per-minute quota, with the delay the fault names (the real API always says one).
        delay = f"{fault.retry_after:g}s" if fault.retry_after is not None else None
        return quota_exhausted(retry_delay=delay)
    return error_body(status)


@dataclass
class GeminiRequest:
    """One generateContent request the fake answered, and its answer (faults answered by
    the middleware are in `calls` only)."""

    version: str
    model: str
    headers: dict[str, str]
    body: dict[str, Any]
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def usage(self) -> dict[str, int]:
        """The usageMetadata the fake answered with."""
        return dict(self.answer.get("usageMetadata", {}))

    @property
    def generation_config(self) -> dict[str, Any]:
        return dict(_get(self.body, "generationConfig") or {})

    @property
    def system_text(self) -> str:
        instruction = _get(self.body, "systemInstruction") or {}
        return "\n".join(p.get("text", "") for p in instruction.get("parts", []))

    @property
    def prompt_text(self) -> str:
        """The text of the user turns, in order (what the fake reads the instructions from)."""
        return "\n".join(
            part.get("text", "")
            for content in self.body.get("contents", [])
            if content.get("role", "user") == "user"
            for part in content.get("parts", [])
        )

    @property
    def inline_parts(self) -> list[dict[str, Any]]:
        """The inlineData parts sent (images) as {"mimeType", "data" (as sent), "bytes"}."""
        found = []
        for content in self.body.get("contents", []):
            for part in content.get("parts", []):
                blob = _get(part, "inlineData")
                if blob is not None:
                    data = str(blob.get("data", ""))
                    found.append(
                        {"mimeType": _get(blob, "mimeType"), "data": data, "bytes": b64(data)}
                    )
        return found


def b64(data: str) -> bytes:
    """Decode base64 the way the API does: the SDK sends the URL-safe alphabet."""
    return base64.urlsafe_b64decode(
        data.replace("+", "-").replace("/", "_") + "=" * (-len(data) % 4)
    )


@dataclass
class GeminiState(FakeState):
    """FakeState plus Gemini's content knobs and a race-free log of answered requests."""

    api_key: str = "test-key"
    # Queued content outcomes, one per generateContent call: "BLOCK" (promptFeedback) or
    # a finishReason ("SAFETY", "MAX_TOKENS", "IMAGE_SAFETY", "NO_IMAGE", ...).
    outcomes: deque[str] = field(default_factory=deque)
    # The same, for image calls only (so a run's text calls pass untouched).
    image_outcomes: deque[str] = field(default_factory=deque)
    image_text: str | None = "Here is the illustration you asked for."
    models: frozenset[str] | None = None  # None: any model id is known
    requests: list[GeminiRequest] = field(default_factory=list)
    _content_lock: threading.Lock = field(default_factory=threading.Lock)

    def block_next_prompt(self, times: int = 1) -> None:
        """The next calls answer 200 with promptFeedback.blockReason SAFETY, no candidates."""
        self.finish_next("BLOCK", times)

    def finish_next(self, reason: str, times: int = 1) -> None:
        """The next calls finish with this finishReason (MAX_TOKENS: truncated text)."""
        with self._content_lock:
            self.outcomes.extend([reason] * times)

    def finish_next_image(self, reason: str, times: int = 1) -> None:
        """The next image calls finish with this finishReason; text calls are untouched."""
        with self._content_lock:
            self.image_outcomes.extend([reason] * times)

    def reset(self) -> None:
        super().reset()
        with self._content_lock:
            self.outcomes.clear()
            self.image_outcomes.clear()
            self.requests.clear()
            self.image_text = "Here is the illustration you asked for."
            self.models = None

    def _next_outcome(self, image: bool = False) -> str:
        with self._content_lock:
            if image and self.image_outcomes:
                return self.image_outcomes.popleft()
            return self.outcomes.popleft() if self.outcomes else "STOP"


def _get(obj: dict[str, Any], camel: str) -> Any:
    """A key the SDK may send in camelCase or snake_case."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower())


def _seed(text: str) -> random.Random:
    """A random source fixed by the text, so the same request gets the same answer."""
    return random.Random(hashlib.sha256(text.encode()).digest())


def prose(words: int, seed: str) -> str:
    """About `words` words of deterministic prose in paragraphs (exactly `words`)."""
    rng = _seed(seed)
    paragraphs: list[str] = []
    sentences: list[str] = []
    left = max(words, 1)
    while left:
        n = min(left, rng.randint(8, 16))
        left -= n
        chosen = [rng.choice(WORDS) for _ in range(n)]
        sentences.append(" ".join(chosen).capitalize() + ".")
        if len(sentences) == 5 or not left:
            paragraphs.append(" ".join(sentences))
            sentences = []
    return "\n\n".join(paragraphs)


def from_schema(
    schema: dict[str, Any],
    name: str = "value",
    root: dict[str, Any] | None = None,
    index: int = 1,
    seed: str = "",
) -> Any:
    """A value that validates against a JSON schema or Gemini Schema (either key case)."""
    root = root if root is not None else schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target[key]
        return from_schema(target, name, root, index, seed)
    for union in ("anyOf", "oneOf"):
        options = _get(schema, union)
        if options:
            typed = [o for o in options if str(o.get("type", "")).lower() != "null"]
            return from_schema((typed or options)[0], name, root, index, seed)
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "string")
    kind = str(kind).lower()
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        return {key: from_schema(sub, key, root, index, seed) for key, sub in properties.items()}
    if kind == "array":
        low = int(_get(schema, "minItems") or 1)
        high = _get(schema, "maxItems")
        count = max(low, 2) if high is None else min(max(low, 2), int(high))
        items = schema.get("items", {"type": "string"})
        return [from_schema(items, name, root, i, seed) for i in range(1, count + 1)]
    if kind == "integer":
        return int(schema.get("minimum", index))
    if kind == "number":
        return float(schema.get("minimum", index))
    if kind == "boolean":
        return True
    return f"{name} {index}: " + prose(6, f"{seed}{name}{index}").rstrip(".")


def _image_png(prompt: str, aspect_ratio: str, size: str) -> tuple[bytes, int, int]:
    """A real PNG at the size the real model gives for this aspect ratio and image size."""
    width, height = IMAGE_SIZES_1K[aspect_ratio]
    scale = IMAGE_SCALE[size]
    width, height = width * scale, height * scale
    rng = _seed(prompt)
    colour = tuple(rng.randint(40, 215) for _ in range(3))
    image = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randint(0, width - 1), rng.randint(0, height - 1)
        r = rng.randint(height // 12, height // 4)
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue(), width, height


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _usage(prompt_tokens: int, answer_tokens: int) -> dict[str, int]:
    return {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": answer_tokens,
        "totalTokenCount": prompt_tokens + answer_tokens,
    }


def _answer(
    req: GeminiRequest, outcome: str, raw_size: int, image_text: str | None
) -> dict[str, Any]:
    """The 200 answer for one request and one queued outcome."""
    prompt_tokens = max(1, raw_size // 4)
    envelope: dict[str, Any] = {"modelVersion": req.model, "responseId": "fake-" + str(raw_size)}
    if outcome == "BLOCK":
        envelope["promptFeedback"] = {"blockReason": "SAFETY", "safetyRatings": SAFETY_RATINGS}
        envelope["usageMetadata"] = {
            "promptTokenCount": prompt_tokens,
            "totalTokenCount": prompt_tokens,
        }
        return envelope
    if outcome != "STOP" and outcome != "MAX_TOKENS":
        candidate: dict[str, Any] = {"finishReason": outcome, "index": 0}
        if outcome == "SAFETY":
            candidate["safetyRatings"] = SAFETY_RATINGS
        if outcome in IMAGE_FINISH_MESSAGES:
            candidate["finishMessage"] = IMAGE_FINISH_MESSAGES[outcome]
        envelope["candidates"] = [candidate]
        envelope["usageMetadata"] = _usage(prompt_tokens, 0)
        return envelope

    config = req.generation_config
    modalities = [str(m).upper() for m in _get(config, "responseModalities") or []]
    parts: list[dict[str, Any]] = []
    if "IMAGE" in modalities:
        image_config = _get(config, "imageConfig") or {}
        png, _, _ = _image_png(
            req.prompt_text,
            _get(image_config, "aspectRatio") or "1:1",
            _get(image_config, "imageSize") or "1K",
        )
        if outcome == "MAX_TOKENS":
            png = png[: len(png) // 2]
        # Like the real models, a short text part may come before the image.
        answer_tokens = IMAGE_TOKENS
        if image_text:
            parts.append({"text": image_text})
            answer_tokens += _tokens(image_text)
        data = base64.b64encode(png).decode()
        parts.append({"inlineData": {"mimeType": "image/png", "data": data}})
    else:
        schema = _get(config, "responseSchema") or _get(config, "responseJsonSchema")
        if str(_get(config, "responseMimeType")) == "application/json" and schema:
            # Seeded by the prompt: different requests get different (still valid) answers.
            text = json.dumps(from_schema(schema, seed=req.prompt_text), ensure_ascii=False)
        else:
            asked = ABOUT_WORDS.findall(req.prompt_text)
            words = int(asked[-1]) if asked else 12
            text = prose(words, req.prompt_text)
        if outcome == "MAX_TOKENS":
            # Cut mid-sentence at half, as a real output-token limit does.
            text = text[: len(text) // 2].rstrip(" .")
        answer_tokens = _tokens(text)
        parts.append({"text": text})
    envelope["candidates"] = [
        {"content": {"parts": parts, "role": "model"}, "finishReason": outcome, "index": 0}
    ]
    envelope["usageMetadata"] = _usage(prompt_tokens, answer_tokens)
    return envelope


PATH = re.compile(r"^(?:/.*)?/(?P<version>[^/]+)/models/(?P<model>[^/:]+):(?P<method>\w+)$")
MODEL_PATH = re.compile(r"^(?:/.*)?/(?P<version>[^/]+)/models/(?P<model>[^/:]+)$")


def model_resource(model: str) -> dict[str, Any]:
    """What `GET /{version}/models/{model}` answers for a known model (real field names)."""
    image = "image" in model
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model.replace("-", " ").title(),
        "description": f"The fake's {model}.",
        "inputTokenLimit": 65536 if image else 1048576,
        "outputTokenLimit": 32768 if image else 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "batchGenerateContent"],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": not image,
    }


def make_app(state: GeminiState) -> FaultMiddleware:
    """The ASGI app: generateContent and models.get behind FaultMiddleware."""

    def refuse_key(request: Request) -> JSONResponse | None:
        """The real API's answer to a missing or wrong key; None when the key is right."""
        key = request.headers.get("x-goog-api-key")
        if not key:
            return JSONResponse(error_body(403), 403)
        if key != state.api_key:
            detail = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            return JSONResponse(error_body(400, BAD_KEY_MESSAGE, details=[detail]), 400)
        return None

    def unknown_model(version: str, model: str, method: str) -> JSONResponse | None:
        if state.models is not None and model not in state.models:
            message = (
                f"models/{model} is not found for API version {version}, or is "
                f"not supported for {method}."
            )
            return JSONResponse(error_body(404, message), 404)
        return None

    async def get_model(request: Request) -> JSONResponse:
        match = MODEL_PATH.match(request.url.path)
        if match is None:
            return JSONResponse(error_body(404), 404)
        refused = refuse_key(request) or unknown_model(match["version"], match["model"], "get")
        if refused is not None:
            return refused
        return JSONResponse(model_resource(match["model"]))

    async def endpoint(request: Request) -> JSONResponse:
        match = PATH.match(request.url.path)
        if match is None or match["method"] != "generateContent":
            return JSONResponse(error_body(404), 404)
        if (refused := refuse_key(request)) is not None:
            return refused
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse(error_body(400, "Invalid JSON payload received."), 400)
        model = match["model"]
        refused = unknown_model(match["version"], model, "generateContent")
        if refused is not None:
            return refused
        req = GeminiRequest(
            version=match["version"],
            model=model,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        image_config = _get(req.generation_config, "imageConfig") or {}
        ratio = _get(image_config, "aspectRatio")
        size = _get(image_config, "imageSize")
        if (ratio is not None and ratio not in IMAGE_SIZES_1K) or (
            size is not None and size not in IMAGE_SCALE
        ):
            return JSONResponse(error_body(400, "Unsupported image config."), 400)
        is_image = "IMAGE" in (_get(req.generation_config, "responseModalities") or [])
        req.answer = _answer(req, state._next_outcome(is_image), len(raw), state.image_text)
        # Logged before answering, so a test sees it as soon as its call returns (the
        # middleware's `calls` entry is only appended after the answer is sent).
        state.requests.append(req)
        return JSONResponse(req.answer)

    app = Starlette(
        routes=[
            Route("/{path:path}", endpoint, methods=["POST"]),
            Route("/{path:path}", get_model, methods=["GET"]),
        ]
    )
    return FaultMiddleware(app, state, fault_body)


@contextmanager
def gemini_fake(api_key: str = "test-key") -> Iterator[tuple[str, GeminiState]]:
    """Serve the fake on 127.0.0.1; yields (base_url, state)."""
    state = GeminiState(api_key=api_key)
    with serve(make_app(state)) as base_url:
        yield base_url, state

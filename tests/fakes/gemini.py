"""A loopback fake of the Gemini API's generateContent, for text, JSON and image answers.

It speaks the wire protocol the google-genai SDK uses (see the Gemini part of
/work/shared/reference/providers.md): `POST /{version}/models/{model}:generateContent`
with the key in `x-goog-api-key`, camelCase JSON (some nested keys snake_case), answers
with candidates and usageMetadata, and errors in Google's `{"error": {...}}` shape.
`GET /{version}/models/{model}` (what `client.models.get` sends, and what `storyloom
doctor` probes with) answers the model's resource, or 404 for a model not in `models`.

Key checks follow the real API: no key answers 403 PERMISSION_DENIED; a wrong key answers
400 INVALID_ARGUMENT with an ErrorInfo detail whose reason is API_KEY_INVALID.

Prose answers read the prompt the way a model would, so the flow's checks have something
real to check (the prompt formats are storyloom.prompts'; `prompt_kind` tells them apart):
- section (`<material>` block, `Keep fact:` / `Keep verbatim:` lines, "about N words"):
  the teller's material sentences, in order, woven with filler prose to exactly N words;
  a listed fact or quote the material does not hold gets a sentence of its own.
- revise (`<draft>` block): the draft with every `Remove:` item taken out (its sentence
  dropped, or only the item when the sentence also holds a fact to keep), every
  `Restore:` item put back (its material sentence, where the material places it), every
  `Keep verbatim:` quote put back word for word, then fitted to the target: filler cut
  first, then other text, and only as a last resort the words around the facts and
  quotes (never those). Sections are fitted the same way.
- continue ("Your answer was cut off"): the rest of the answer that was cut off (the
  fake remembers what it cut), or filler of the words asked.
- proofread (`<text>` block): the text unchanged. Anything else: deterministic prose of
  "about N words". JSON answers fit their schema; image answers are real PNGs.

Real models misbehave, so tests can make the fake do it, per prose call:
`state.script_text(Misbehave.SHORT, {Misbehave.CUT, Misbehave.INVENT}, None, ...)` queues
one behaviour per coming prose call (optionally only for a kind, or prompts containing a
string); `state.text_behaviour = Misbehave.SHORT` (or `misbehave_always`) applies to
every prose call the script does not cover. JSON and image calls never misbehave this
way. Every answered request records its `kind`, the `behaviour` applied, the words asked
and what DROP / ALTER_QUOTE changed; `state.kinds()` lists the kinds, in order.

Other knobs: everything FakeState has (latency, fault schedule, call log, in flight),
plus content outcomes queued with `block_next_prompt()` and `finish_next(reason)` (a
MAX_TOKENS outcome on prose cuts it as Misbehave.CUT does).
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from storyloom.chapters import split_sentences
from storyloom.writing import count_words
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
# Filler sentences open with a common word, never a capitalised noun, so no checker of
# names and places mistakes the fake's own padding for an invented fact.
OPENERS = ("The", "Then", "And", "There", "So", "It")


class Misbehave(StrEnum):
    """One way a real model's prose answer goes wrong, for `GeminiState.script_text`.

    Each is applied to the well-behaved answer for the prompt. Only SHORT, LONG and CUT
    change the length: DROP and INVENT pad or trim filler to keep it, so a test of the
    fact check is not also a test of the length check.
    """

    SHORT = "short"  # SHORT_SHARE of the length asked (40% under); filler goes first
    LONG = "long"  # LONG_SHARE of the length asked (30% over), with filler
    CUT = "cut"  # finishReason MAX_TOKENS, the text cut at a word about half way
    INVENT = "invent"  # INVENTED_SENTENCE added in the middle
    DROP = "drop"  # the material sentence holding the first fact left out
    ALTER_QUOTE = "alter_quote"  # one word inside the first quoted passage changed


# What a script may name for one call: one Misbehave, several, or None (behave).
BehaviourLike = Misbehave | str | Iterable[Misbehave | str] | None

SHORT_SHARE = 0.6
LONG_SHARE = 1.3
INVENTED_NAME = "Uncle Rupert"
INVENTED_CITY = "Lisbon"
INVENTED_YEAR = "1937"
INVENTED = (INVENTED_NAME, INVENTED_CITY, INVENTED_YEAR)
INVENTED_SENTENCE = f"{INVENTED_NAME} came back from {INVENTED_CITY} in {INVENTED_YEAR}."
# ALTER_QUOTE puts ALTERED_WORD in place of the first word of three letters or more in
# the quote (ALTERED_WORD_ELSE if that word already is ALTERED_WORD), keeping its case.
ALTERED_WORD = "never"
ALTERED_WORD_ELSE = "always"

# The kinds of generateContent call (GeminiRequest.kind). Scripts act on prose kinds.
PROSE_KINDS = frozenset({"section", "revise", "continue", "proofread", "text"})
KINDS = PROSE_KINDS | {"plan", "image"}

CONTINUE_PROMPT = re.compile(r"^\s*Your answer was cut off")
SECTION_PROMPT = re.compile(r"<material>|^Write this section", re.M)
QUOTED = re.compile(r'"([^"]+)"|\u201c([^\u201d]+)\u201d')
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
_QUOTE_MARKS = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb"
_PUNCTUATION = ".,;:!?()[]{}\u2014\u2013-\u0964" + _QUOTE_MARKS


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
    # What the fake did with a prose call: the misbehaviour applied (empty: behaved), the
    # words the prompt asked for, the facts DROP left out and the quote ALTER_QUOTE
    # changed (as it was, as it became).
    behaviour: frozenset[Misbehave] = frozenset()
    asked_words: int | None = None
    dropped: tuple[str, ...] = ()
    altered: tuple[str, str] | None = None

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
    def last_prompt(self) -> str:
        """The text of the last user turn: for a continuation, the request to go on."""
        turns = [t for role, t in self.turns if role == "user"]
        return turns[-1] if turns else ""

    @property
    def model_text(self) -> str:
        """The text of the last model turn sent back (a continuation's text so far)."""
        turns = [t for role, t in self.turns if role == "model"]
        return turns[-1] if turns else ""

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(role, text) of every turn sent, in order."""
        return [
            (
                str(content.get("role", "user")),
                "".join(part.get("text", "") for part in content.get("parts", [])),
            )
            for content in self.body.get("contents", [])
        ]

    @property
    def kind(self) -> str:
        """What the call asks for: "section", "revise", "continue", "proofread", "text"
        (other prose), "plan" (any JSON answer) or "image". Read from the body alone, so
        it works on a middleware-logged call too: GeminiRequest("", "", {}, body).kind."""
        config = self.generation_config
        if "IMAGE" in [str(m).upper() for m in _get(config, "responseModalities") or []]:
            return "image"
        if str(_get(config, "responseMimeType") or "") == "application/json":
            return "plan"
        return prompt_kind(self.last_prompt)

    @property
    def answer_text(self) -> str:
        """The text the fake answered with ("" for none)."""
        candidates = self.answer.get("candidates") or [{}]
        parts = (candidates[0].get("content") or {}).get("parts", [])
        return "".join(part.get("text", "") for part in parts)

    @property
    def finish_reason(self) -> str:
        candidates = self.answer.get("candidates") or [{}]
        return str(candidates[0].get("finishReason", ""))

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


@dataclass(frozen=True)
class _Scripted:
    """One queued behaviour and the calls it may apply to."""

    behaviour: frozenset[Misbehave]
    kinds: frozenset[str]
    contains: str


def as_behaviour(value: BehaviourLike) -> frozenset[Misbehave]:
    """A script entry as a set of Misbehave: None or () behave; SHORT with LONG is an error."""
    if value is None:
        return frozenset()
    if isinstance(value, str):  # a Misbehave is a str too
        found = frozenset({Misbehave(value)})
    else:
        found = frozenset(Misbehave(v) for v in value)
    if {Misbehave.SHORT, Misbehave.LONG} <= found:
        raise ValueError("a call cannot be both SHORT and LONG")
    return found


def _kinds(kind: str | Iterable[str] | None) -> frozenset[str]:
    if kind is None:
        return PROSE_KINDS
    found = frozenset({kind}) if isinstance(kind, str) else frozenset(kind)
    if not found <= PROSE_KINDS:
        raise ValueError(f"scripts act on prose calls only ({sorted(PROSE_KINDS)}): {found}")
    return found


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
    # Misbehaviour of prose answers: the queued script (script_text), then, for every
    # prose call of text_behaviour_kinds the script does not cover, text_behaviour.
    text_script: deque[_Scripted] = field(default_factory=deque)
    text_behaviour: BehaviourLike = None
    text_behaviour_kinds: frozenset[str] = PROSE_KINDS
    _content_lock: threading.Lock = field(default_factory=threading.Lock)
    # Full texts of answers the fake cut off (CUT, MAX_TOKENS), so a continuation can
    # carry on with exactly the rest, as a real model would.
    _cut_texts: deque[str] = field(default_factory=lambda: deque(maxlen=256))

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

    def script_text(
        self,
        *behaviours: BehaviourLike,
        kind: str | Iterable[str] | None = None,
        contains: str = "",
    ) -> None:
        """Queue one behaviour per coming prose call, in order.

        Each entry is a Misbehave, several at once (a set or tuple), or None for a call
        that behaves. An entry goes to the next prose call that writes text (a call
        answered by a fault, a block or a safety stop does not take one; JSON and image
        calls never do) and matches the filters: `kind` (one prose kind or several;
        default all, continuations included) and `contains` (a substring of the
        prompt, e.g. "Section 2 of 7" to reach one section among concurrent ones).
        """
        entries = [_Scripted(as_behaviour(b), _kinds(kind), contains) for b in behaviours]
        with self._content_lock:
            self.text_script.extend(entries)

    def misbehave_always(
        self, behaviour: BehaviourLike, kind: str | Iterable[str] | None = None
    ) -> None:
        """Every prose call (of `kind`, default all) the script does not cover behaves so,
        until reset or a new call (None: behave)."""
        checked = as_behaviour(behaviour)
        kinds = _kinds(kind)
        with self._content_lock:
            self.text_behaviour = checked or None
            self.text_behaviour_kinds = kinds

    def prose_requests(self, kind: str | None = None) -> list[GeminiRequest]:
        """The answered prose requests (of one kind), in order."""
        return [r for r in self.requests if r.kind in PROSE_KINDS and kind in (None, r.kind)]

    def kinds(self) -> list[str]:
        """The kind of every answered request, in order (e.g. to count revisions)."""
        return [r.kind for r in self.requests]

    def reset(self) -> None:
        super().reset()
        with self._content_lock:
            self.outcomes.clear()
            self.image_outcomes.clear()
            self.requests.clear()
            self.image_text = "Here is the illustration you asked for."
            self.models = None
            self.text_script.clear()
            self.text_behaviour = None
            self.text_behaviour_kinds = PROSE_KINDS
            self._cut_texts.clear()

    def _next_outcome(self, image: bool = False) -> str:
        with self._content_lock:
            if image and self.image_outcomes:
                return self.image_outcomes.popleft()
            return self.outcomes.popleft() if self.outcomes else "STOP"

    def _next_behaviour(self, kind: str, prompt: str) -> frozenset[Misbehave]:
        """The behaviour of the prose call being answered: the first matching script entry
        (taken off the queue), else the persistent one, else none."""
        with self._content_lock:
            for i, entry in enumerate(self.text_script):
                if kind in entry.kinds and entry.contains in prompt:
                    del self.text_script[i]
                    return entry.behaviour
            if kind in self.text_behaviour_kinds:
                return as_behaviour(self.text_behaviour)
            return frozenset()

    def _remember_cut(self, full: str) -> None:
        with self._content_lock:
            self._cut_texts.append(full)

    def _rest_of(self, so_far: str) -> str | None:
        """What followed `so_far` in an answer the fake cut off (None: not one of them).

        Matched word by word, so however the client joined the parts, the words decide.
        """
        words = so_far.split()
        if not words:
            return None
        with self._content_lock:
            texts = list(self._cut_texts)
        for full in reversed(texts):
            tokens = list(re.finditer(r"\S+", full))
            if len(tokens) > len(words) and all(
                t.group() == w for t, w in zip(tokens, words, strict=False)
            ):
                return full[tokens[len(words) - 1].end() :]
        return None


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


def _answer(req: GeminiRequest, outcome: str, raw_size: int, state: GeminiState) -> dict[str, Any]:
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
    kind = req.kind
    parts: list[dict[str, Any]] = []
    finish = outcome
    if kind == "image":
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
        if state.image_text:
            parts.append({"text": state.image_text})
            answer_tokens += _tokens(state.image_text)
        data = base64.b64encode(png).decode()
        parts.append({"inlineData": {"mimeType": "image/png", "data": data}})
    else:
        schema = _get(config, "responseSchema") or _get(config, "responseJsonSchema")
        if kind == "plan" and schema:
            # Seeded by the prompt: different requests get different (still valid) answers.
            text = json.dumps(from_schema(schema, seed=req.prompt_text), ensure_ascii=False)
            if outcome == "MAX_TOKENS":
                text = text[: len(text) // 2].rstrip(" .")
        else:
            behaviour = state._next_behaviour(kind, req.prompt_text)
            if outcome == "MAX_TOKENS":  # finish_next("MAX_TOKENS") cuts prose as CUT does
                behaviour |= {Misbehave.CUT}
            req.behaviour = behaviour
            text, finish = _write(req, behaviour, state)
        answer_tokens = _tokens(text)
        parts.append({"text": text})
    envelope["candidates"] = [
        {"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": 0}
    ]
    envelope["usageMetadata"] = _usage(prompt_tokens, answer_tokens)
    return envelope


# ------------------------------------------------------------------ prose answers


def prompt_kind(prompt: str) -> str:
    """The kind of a prose prompt (storyloom.prompts' formats), from its text alone."""
    if CONTINUE_PROMPT.match(prompt):
        return "continue"
    if "<draft>" in prompt:
        return "revise"
    if prompt.lstrip().startswith("Proofread"):
        return "proofread"
    if SECTION_PROMPT.search(prompt):
        return "section"
    return "text"


def _block(name: str, text: str) -> str | None:
    """The content of the first <name>...</name> block, trimmed (None: no such block)."""
    match = re.search(rf"<{name}>(.*?)</{name}>", text, re.S)
    return match.group(1).strip() if match else None


def _lines(label: str, text: str) -> list[str]:
    """The values of the lines `label: value`, in order, each once."""
    found = re.findall(rf"^{re.escape(label)}:[ \t]*(\S.*?)[ \t]*$", text, re.M)
    return list(dict.fromkeys(found))


def unquote(value: str) -> str:
    """A `Keep verbatim:` value without the one pair of quotation marks around it."""
    if len(value) >= 2 and value[0] in '"\u201c\u201e\u00ab' and value[-1] in '"\u201d\u00bb':
        return value[1:-1]
    return value


@dataclass
class ParsedPrompt:
    """What a prose prompt asks for, as the fake reads it."""

    kind: str
    asked: int | None  # the last "about N words"
    material: list[str]  # the teller's material, as sentences
    facts: list[str]  # `Keep fact:` lines
    quotes: list[str]  # `Keep verbatim:` lines, without their quotation marks
    remove: list[str]
    restore: list[str]
    draft: str  # a revise prompt's draft, or a proofread prompt's text


def parse_prompt(req: GeminiRequest) -> ParsedPrompt:
    """Read a prose request: the kind and length from its last user turn, the material,
    facts and quotes from all of them (a continuation carries the original prompt)."""
    last, everything = req.last_prompt, req.prompt_text
    asked = ABOUT_WORDS.findall(last)
    return ParsedPrompt(
        kind=prompt_kind(last),
        asked=int(asked[-1]) if asked else None,
        material=split_sentences(_block("material", everything) or ""),
        facts=_lines("Keep fact", everything),
        quotes=[unquote(q) for q in _lines("Keep verbatim", everything)],
        remove=_lines("Remove", last),
        restore=_lines("Restore", last),
        draft=_block("draft", last) or _block("text", last) or "",
    )


@dataclass
class _Sentence:
    text: str
    rank: int = 0  # 0: filler, cut first; 1: other text; 2: holds a fact or quote, kept
    breaks: bool = False  # a paragraph ends after it


def _count(sentences: list[_Sentence]) -> int:
    return sum(count_words(s.text) for s in sentences)


def guess_facts(sentence: str) -> list[str]:
    """Numbers, and capitalised words after a sentence's first: what a fact check would
    take for names, places and dates when the prompt lists none."""
    found = _NUMBER.findall(sentence)
    for token in sentence.split()[1:]:
        if token[0] in _QUOTE_MARKS:
            continue  # a quote's first word is capitalised as a sentence's is
        word = token.strip(_PUNCTUATION)
        if len(word) > 1 and word[0].isupper() and not any(c.isdigit() for c in word):
            found.append(word)
    return found


def _ranker(prompt: ParsedPrompt) -> Callable[[str], int]:
    """How much a sentence is worth keeping, by the facts and quotes the prompt lists (or,
    when it lists none, what looks like one)."""
    listed = [*prompt.facts, *prompt.restore, *prompt.quotes]
    material = set(prompt.material)

    def rank(sentence: str) -> int:
        if listed:
            if any(item in sentence for item in listed):
                return 2
        elif guess_facts(sentence) or QUOTED.search(sentence):
            return 2
        return 1 if sentence in material else 0

    return rank


Spans = Callable[[str], list[tuple[int, int]]]


def _essentials(prompt: ParsedPrompt) -> Spans:
    """Where in a sentence the words that must stay are: the listed facts and quotes (or,
    when none are listed, what looks like a fact) and every quoted passage."""
    listed = [*prompt.facts, *prompt.restore, *prompt.quotes]

    def spans(sentence: str) -> list[tuple[int, int]]:
        items = listed or guess_facts(sentence)
        found = [m.span() for item in items for m in re.finditer(re.escape(item), sentence)]
        return found + [m.span() for m in QUOTED.finditer(sentence)]

    return spans


def _parse(text: str, rank: Callable[[str], int]) -> list[_Sentence]:
    """A text as ranked sentences, paragraph ends marked."""
    sentences: list[_Sentence] = []
    for paragraph in _PARAGRAPH.split(text.strip()):
        found = split_sentences(paragraph)
        sentences += [_Sentence(t, rank(t), i == len(found) - 1) for i, t in enumerate(found)]
    return sentences


def _assemble(sentences: list[_Sentence]) -> str:
    out: list[str] = []
    for i, sentence in enumerate(sentences):
        out.append(sentence.text)
        if i + 1 < len(sentences):
            out.append("\n\n" if sentence.breaks else " ")
    return "".join(out)


def _layout(sentences: list[_Sentence], per: int = 5) -> None:
    """Paragraphs of `per` sentences."""
    for i, sentence in enumerate(sentences):
        sentence.breaks = (i + 1) % per == 0 or i + 1 == len(sentences)


def _filler(rng: random.Random, words: int) -> list[str]:
    """Sentences of plain prose, `words` words in all (0: none)."""
    sentences = []
    left = words
    while left > 0:
        n = left if left <= 16 else rng.randint(8, 14)
        body = [rng.choice(WORDS) for _ in range(n - 1)]
        sentences.append(" ".join([rng.choice(OPENERS), *body]) + ".")
        left -= n
    return sentences


def _pad(sentences: list[_Sentence], words: int, rng: random.Random) -> None:
    """Add `words` words of filler, spread evenly after the sentences there are."""
    fill = [_Sentence(t) for t in _filler(rng, words)]
    if not fill:
        return
    if not sentences:
        sentences.extend(fill)
        _layout(sentences)
        return
    slots: dict[int, list[_Sentence]] = {}
    for j, sentence in enumerate(fill):
        slots.setdefault(j * len(sentences) // len(fill), []).append(sentence)
    out: list[_Sentence] = []
    for i, sentence in enumerate(sentences):
        out.append(sentence)
        extra = slots.get(i, [])
        if extra and sentence.breaks:
            sentence.breaks, extra[-1].breaks = False, True
        out += extra
    sentences[:] = out


def _first_words(text: str, n: int) -> str:
    """The sentence cut to its first n words, ended with a full stop."""
    seen = 0
    for token in re.finditer(r"\S+", text):
        seen += count_words(token.group())
        if seen >= n:
            return text[: token.end()].rstrip(_PUNCTUATION) + "."
    return text


def _trim(sentences: list[_Sentence], excess: int, ranks: tuple[int, ...] = (0, 1)) -> int:
    """Take `excess` words out: whole sentences of the lowest rank from the end, then part
    of one; never a sentence of a rank not in `ranks`. Returns what could not be cut."""
    for rank in ranks:
        i = len(sentences) - 1
        while excess > 0 and i >= 0:
            sentence = sentences[i]
            if sentence.rank == rank:
                words = count_words(sentence.text)
                if words <= excess:
                    excess -= words
                    if sentence.breaks and i > 0:
                        sentences[i - 1].breaks = True
                    del sentences[i]
                else:
                    sentence.text = _first_words(sentence.text, words - excess)
                    excess = 0
            i -= 1
    return excess


def _squeeze(sentences: list[_Sentence], excess: int, essential: Spans) -> int:
    """The last resort of a model told to be brief: drop the words around the facts and
    quotes of the sentences that hold them (from the end), never those. Returns what
    could not be cut."""
    for sentence in reversed(sentences):
        if excess <= 0:
            break
        keep = essential(sentence.text)
        tokens = list(re.finditer(r"\S+", sentence.text))
        gone: set[int] = set()
        for i in range(len(tokens) - 1, 0, -1):  # the first word stays: still a sentence
            start, end = tokens[i].span()
            word = count_words(tokens[i].group())
            if excess <= 0:
                break
            if word and not any(s < end and start < e for s, e in keep):
                gone.add(i)
                excess -= word
        if gone:
            kept = [t.group() for i, t in enumerate(tokens) if i not in gone]
            text = " ".join(kept).rstrip(",;:\u2014\u2013-")
            sentence.text = text if text[-1] in '.!?\u0964"\u201d' else text + "."
    return excess


def _fit(
    sentences: list[_Sentence],
    target: int,
    rng: random.Random,
    essential: Spans | None = None,
) -> list[_Sentence]:
    """The sentences padded with filler or trimmed (filler first, then other text) to
    `target` words; with `essential`, squeezed around the facts as a last resort."""
    fitted = list(sentences)
    total = _count(fitted)
    if total < target:
        _pad(fitted, target - total, rng)
    elif total > target:
        left = _trim(fitted, total - target)
        if left and essential is not None:
            _squeeze(fitted, left, essential)
    return fitted


def _without(sentences: list[_Sentence], drop: Callable[[_Sentence], bool]) -> list[_Sentence]:
    """The sentences but those `drop` picks, paragraph ends moved to what stays."""
    kept: list[_Sentence] = []
    for sentence in sentences:
        if not drop(sentence):
            kept.append(sentence)
        elif sentence.breaks and kept:
            kept[-1].breaks = True
    return kept


def _whole(item: str) -> re.Pattern[str]:
    """The item as a whole word or phrase, in any case ("Ram" is not in "Ramesh")."""
    return re.compile(rf"(?<!\w){re.escape(item)}(?!\w)", re.I)


def _holds(text: str, items: Iterable[str]) -> bool:
    """Whether the text holds any of the items, whole, in any case."""
    return any(_whole(item).search(text) for item in items)


def _holding(item: str) -> Callable[[_Sentence], bool]:
    return lambda sentence: _holds(sentence.text, [item])


def _strike(text: str, item: str) -> str:
    """The sentence without `item` (any case), its spacing tidied."""
    text = _whole(item).sub("", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _insert_from_material(sentences: list[_Sentence], item: str, material: list[str]) -> bool:
    """Put back the material's sentence holding `item` where the material places it: after
    the last sentence of the answer that comes before it in the material."""
    for index, line in enumerate(material):
        if item in line:
            earlier = set(material[:index])
            at = max((i + 1 for i, s in enumerate(sentences) if s.text in earlier), default=0)
            sentences.insert(at, _Sentence(line, 2))
            return True
    return False


def _quote_back(sentences: list[_Sentence], quote: str) -> bool:
    """Mend a quoted passage that differs from `quote` in a word or so."""
    want = quote.split()
    for sentence in sentences:
        for match in QUOTED.finditer(sentence.text):
            group = 1 if match.group(1) is not None else 2
            have = match.group(group).split()
            differ = sum(a != b for a, b in zip(have, want, strict=False))
            if len(have) == len(want) and differ <= max(1, len(want) // 4):
                start, end = match.span(group)
                sentence.text = sentence.text[:start] + quote + sentence.text[end:]
                return True
    return False


def _section(prompt: ParsedPrompt, rng: random.Random) -> list[_Sentence]:
    """The well-behaved section: the material's sentences in order, a sentence for any
    listed fact or quote the material lacks, and filler to the length asked."""
    rank = _ranker(prompt)
    sentences = [_Sentence(t, max(rank(t), 1)) for t in prompt.material]
    held = " ".join(prompt.material)
    sentences += [
        _Sentence(f"The teller remembers {fact} well.", 2)
        for fact in prompt.facts
        if fact not in held
    ]
    sentences += [
        _Sentence(f'In the teller\'s words: "{quote}"', 2)
        for quote in prompt.quotes
        if quote not in held
    ]
    fitted = _fit(sentences, prompt.asked or 12, rng, _essentials(prompt))
    _layout(fitted)
    return fitted


def _revise(prompt: ParsedPrompt, rng: random.Random) -> list[_Sentence]:
    """The well-behaved revision: the instructions applied to the draft, then its length
    fitted to the target (filler cut first, then other text, never a kept fact)."""
    rank = _ranker(prompt)
    sentences = _parse(prompt.draft, rank)
    keep = [*prompt.facts, *prompt.restore, *prompt.quotes]
    for item in prompt.remove:
        # Only the item goes from a sentence that also holds what must stay; any other
        # sentence holding it goes whole (what depended on the invented fact goes too).
        for sentence in sentences:
            if _holds(sentence.text, [item]) and any(k in sentence.text for k in keep):
                sentence.text = _strike(sentence.text, item)
        sentences = _without(sentences, _holding(item))
    for quote in prompt.quotes:
        if (
            quote not in _assemble(sentences)
            and not _quote_back(sentences, quote)
            and not _insert_from_material(sentences, quote, prompt.material)
        ):
            sentences.append(_Sentence(f'In the teller\'s words: "{quote}"', 2))
    for item in prompt.restore:
        if item not in _assemble(sentences) and not _insert_from_material(
            sentences, item, prompt.material
        ):
            sentences.append(_Sentence(f"The teller remembers {item} well.", 2))
    fitted = _fit(sentences, prompt.asked or _count(sentences), rng, _essentials(prompt))
    longest = run = 0
    for sentence in fitted:
        run = 0 if sentence.breaks else run + 1
        longest = max(longest, run)
    if longest > 8:
        _layout(fitted)
    return fitted


def _first_facts(prompt: ParsedPrompt, sentences: list[_Sentence]) -> list[str]:
    """The facts of the first material sentence holding one (the listed facts, or what
    looks like facts when none are listed); the answer's own sentences if no material."""
    for line in prompt.material or [s.text for s in sentences]:
        held = [f for f in prompt.facts if f in line] if prompt.facts else guess_facts(line)
        if held:
            return held
    return []


def _alter_quote(sentences: list[_Sentence]) -> tuple[str, str] | None:
    """Change one word inside the first quoted passage; (before, after) or None."""
    for sentence in sentences:
        for match in QUOTED.finditer(sentence.text):
            group = 1 if match.group(1) is not None else 2
            inner = match.group(group)
            word = re.search(r"[^\W\d_]{3,}", inner)
            if word is None:
                continue
            new = ALTERED_WORD if word.group().lower() != ALTERED_WORD else ALTERED_WORD_ELSE
            if word.group()[0].isupper():
                new = new.capitalize()
            changed = inner[: word.start()] + new + inner[word.end() :]
            start, end = match.span(group)
            sentence.text = sentence.text[:start] + changed + sentence.text[end:]
            return inner, changed
    return None


def _misbehave(
    req: GeminiRequest,
    sentences: list[_Sentence],
    behaviour: frozenset[Misbehave],
    prompt: ParsedPrompt,
    rng: random.Random,
) -> list[_Sentence]:
    """Apply DROP, INVENT, ALTER_QUOTE, then SHORT or LONG, to a well-behaved answer."""
    base = _count(sentences)
    if Misbehave.DROP in behaviour:
        facts = _first_facts(prompt, sentences)
        if facts:
            req.dropped = tuple(facts)
            kept = _without(sentences, lambda s: any(f in s.text for f in facts))
            sentences = _fit(kept, base, rng)  # the same length: only the fact is missing
    if Misbehave.INVENT in behaviour:
        sentences.insert(len(sentences) // 2, _Sentence(INVENTED_SENTENCE, 2))
        _trim(sentences, count_words(INVENTED_SENTENCE), ranks=(0,))
    if Misbehave.ALTER_QUOTE in behaviour:
        req.altered = _alter_quote(sentences)
    if Misbehave.SHORT in behaviour:
        sentences = _fit(sentences, round(base * SHORT_SHARE), rng, _essentials(prompt))
    if Misbehave.LONG in behaviour:
        sentences = _fit(sentences, round(base * LONG_SHARE), rng)
    return sentences


def _cut(text: str) -> str:
    """The text cut off about half way, at a word, as an output-token limit cuts it."""
    half = len(text) // 2
    spaces = [m.start() for m in re.finditer(r"\s+", text) if 0 < m.start() <= half]
    if spaces:
        return text[: spaces[-1]].rstrip()
    first = re.search(r"\s", text)
    return text[: first.start()] if first else text[: max(1, half)]


def _write(
    req: GeminiRequest, behaviour: frozenset[Misbehave], state: GeminiState
) -> tuple[str, str]:
    """The prose answer to a request and its finishReason ("STOP" or "MAX_TOKENS")."""
    prompt = parse_prompt(req)
    rng = _seed(req.prompt_text + "\x00" + req.model_text)
    rank = _ranker(prompt)
    lead = ""
    raw: str | None = None  # the answer as it stands when nothing else is asked of it
    if prompt.kind == "section":
        sentences = _section(prompt, rng)
        req.asked_words = prompt.asked
    elif prompt.kind == "revise":
        sentences = _revise(prompt, rng)
        req.asked_words = prompt.asked
    elif prompt.kind == "continue":
        rest = state._rest_of(req.model_text)
        if rest is None or not rest.strip():
            rest = " ".join(_filler(rng, prompt.asked or 20))
        raw = rest
        lead = rest[: len(rest) - len(rest.lstrip())]
        sentences = _parse(rest, rank)
        req.asked_words = count_words(rest)
    elif prompt.kind == "proofread":
        raw = prompt.draft
        sentences = _parse(raw, rank)
        req.asked_words = count_words(raw)
    else:
        raw = prose(prompt.asked or 12, req.prompt_text)
        sentences = _parse(raw, rank)
        req.asked_words = prompt.asked
    if behaviour - {Misbehave.CUT}:
        text = lead + _assemble(_misbehave(req, sentences, behaviour, prompt, rng))
    else:
        text = raw if raw is not None else _assemble(sentences)
    if Misbehave.CUT in behaviour:
        # Remembered whole (after what the client already has, for a continuation), so
        # the next continuation carries on with exactly the rest.
        state._remember_cut(f"{req.model_text} {text}" if prompt.kind == "continue" else text)
        return _cut(text), "MAX_TOKENS"
    return text, "STOP"


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
        outcome = state._next_outcome(req.kind == "image")
        req.answer = _answer(req, outcome, len(raw), state)
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

"""Gemini text and image models through google-genai: the real Writer and Illustrator.

Both classes receive a `genai.Client` (make_client builds one) so the same code talks to
the real API and to the loopback fake. The SDK's own retries are off: Prefect tasks own
retries, and every failure leaves here as a TransientError (worth retrying, with the
delay the server asked for) or a PermanentError (not), never as an SDK exception.

Decisions worth knowing:
- MAX_TOKENS on prose: always continue. Ask the model to carry on where it stopped (the
  text so far sent back as its own turn) and join the parts, up to MAX_CONTINUATIONS
  times; a text still cut off after that raises PermanentError naming max_output_tokens,
  rather than put a text that stops mid-sentence into a book. The usage of every call is
  summed. MAX_TOKENS on JSON (a plan) or an image: PermanentError, as half a JSON
  document or image cannot be continued.
- Safety: a blocked prompt, finishReason SAFETY / PROHIBITED_CONTENT / BLOCKLIST / SPII /
  IMAGE_SAFETY / IMAGE_PROHIBITED_CONTENT raise SafetyBlockError (permanent).
- NO_IMAGE, IMAGE_OTHER, RECITATION, IMAGE_RECITATION, OTHER, an empty answer and JSON
  that does not fit its schema raise TransientError: the model samples, so a new attempt
  usually succeeds, and the task's retry count bounds what that can cost.
- A 429 whose quota is per day, or whose limit is 0 (the model is not in the plan), is
  permanent: waiting minutes will not help.
- No message carries the API key: server text is scrubbed, and SDK exceptions (whose text
  holds the whole response body) are not chained onto ours.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import httpx
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ValidationError

from storyloom import prompts
from storyloom.models import ImageStyle, Usage
from storyloom.providers.base import (
    IllustrationPlan,
    ImageRequest,
    Picture,
    Revision,
    SectionBrief,
    Written,
)
from storyloom.providers.errors import (
    AccountError,
    PermanentError,
    ProviderError,
    SafetyBlockError,
    TransientError,
    parse_retry_after,
)
from storyloom.writing import count_words

TEXT_PROVIDER = "gemini-text"
IMAGE_PROVIDER = "gemini-image"
# How many times a cut-off prose answer is continued before giving up. Each continuation
# resends the prompt and the text so far, so the bound also bounds what one section costs.
MAX_CONTINUATIONS = 4

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
SAFETY_FINISH = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)
PERMANENT_FINISH = frozenset({"LANGUAGE", "MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})
# Google API keys look like this; scrubbed from any text we pass on even if we were not told.
_KEY_PATTERN = re.compile(r"AIza[0-9A-Za-z_\-]{35}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_TRANSPORT_ERRORS = (httpx.TransportError, httpx2.TransportError)
_TIMEOUTS = (httpx.TimeoutException, httpx2.TimeoutException)


def make_client(
    api_key: str, base_url: str | None, api_version: str, timeout_seconds: float
) -> genai.Client:
    """A Gemini client with the API version pinned, a timeout, and no SDK retries."""
    return genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(
            base_url=base_url,
            api_version=api_version,  # pinned: the SDK's default moves between releases
            timeout=int(timeout_seconds * 1000),  # the SDK counts milliseconds
            retry_options=None,  # Prefect owns retries; SDK retries would multiply them
        ),
    )


# ---------------------------------------------------------------------------- errors


def to_provider_error(
    exc: BaseException, provider: str, secrets: Sequence[str] = ()
) -> ProviderError:
    """Map an SDK or transport exception to TransientError or PermanentError."""
    if isinstance(exc, _TIMEOUTS):
        return TransientError(provider, f"Gemini did not answer in time ({type(exc).__name__})")
    if isinstance(exc, _TRANSPORT_ERRORS):
        return TransientError(provider, f"could not reach Gemini ({type(exc).__name__})")
    if isinstance(exc, genai_errors.UnknownApiResponseError):
        return TransientError(provider, "Gemini answered with a body that is not JSON")
    if not isinstance(exc, genai_errors.APIError):
        return PermanentError(provider, f"unexpected failure calling Gemini ({type(exc).__name__})")

    code = int(exc.code or 0)
    status = str(exc.status or "")
    body = exc.details if isinstance(exc.details, dict) else {}
    error = body.get("error", body)
    details = [d for d in error.get("details", []) if isinstance(d, dict)]
    message = _scrub(str(exc.message or ""), secrets)[:300]
    said = f"{code} {status}".strip()

    if code == 429 and _quota_is_final(details, message):
        return AccountError(
            provider,
            f"Gemini quota exhausted for the day or not in this plan ({said}): {message}",
            status=code,
        )
    if code in RETRYABLE_STATUS or code >= 500:
        # RetryInfo is Google's own answer; a Retry-After header (proxies, 503s) is next best.
        delay = _retry_delay(details)
        return TransientError(
            provider,
            f"Gemini is busy or failing ({said}): {message}",
            status=code,
            retry_after=delay if delay is not None else _retry_after_header(exc.response),
        )
    reasons = {str(d.get("reason", "")) for d in details}
    if "API_KEY_INVALID" in reasons or "API key not valid" in message:
        return AccountError(
            provider,
            f"Gemini rejected the API key ({said}): set a valid GEMINI_API_KEY",
            status=code,
        )
    if code in (401, 403):
        return AccountError(
            provider,
            f"Gemini refused access ({said}): the API key is missing, revoked or not allowed "
            f"to use this model. {message}",
            status=code,
        )
    if code == 404:
        return PermanentError(
            provider,
            f"Gemini does not know this model or method ({said}): {message}",
            status=code,
        )
    return PermanentError(provider, f"Gemini refused the request ({said}): {message}", status=code)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret we know of, and anything shaped like a key, masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub("***", text)


def _quota_is_final(details: list[dict[str, Any]], message: str) -> bool:
    """Whether a 429 is a per-day quota or a zero limit: no short wait will heal it."""
    for detail in details:
        if not str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            continue
        for violation in detail.get("violations", []):
            quota_id = str(violation.get("quotaId", ""))
            if "PerDay" in quota_id or str(violation.get("quotaValue", "")) == "0":
                return True
    return re.search(r"\blimit: 0\b", message) is not None


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ("47s", "1.5s" or {"seconds", "nanos"})."""
    for detail in details:
        if not str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and (match := _DURATION.match(delay)):
            return float(match.group(1))
        if isinstance(delay, dict):
            return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
    return None


def _retry_after_header(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    return parse_retry_after(headers.get("retry-after") if headers is not None else None)


# --------------------------------------------------------------------- answers


def _call(
    client: genai.Client,
    provider: str,
    model: str,
    contents: types.ContentListUnionDict,
    config: types.GenerateContentConfig,
    secrets: Sequence[str],
) -> types.GenerateContentResponse:
    """One generateContent call; failures leave as our errors, not the SDK's."""
    try:
        return client.models.generate_content(model=model, contents=contents, config=config)
    except (genai_errors.APIError, genai_errors.UnknownApiResponseError, *_TRANSPORT_ERRORS) as exc:
        # `from None`: the SDK exception's text is the whole response body, which we do not
        # control; our message keeps what matters, scrubbed.
        raise to_provider_error(exc, provider, secrets) from None


def probe_model(client: genai.Client, provider: str, model: str, secrets: Sequence[str]) -> str:
    """Read the model's resource (`GET /{version}/models/{model}`): proves the key works and
    the model exists for it, and costs no tokens."""
    try:
        found = client.models.get(model=model)
    except (genai_errors.APIError, genai_errors.UnknownApiResponseError, *_TRANSPORT_ERRORS) as exc:
        raise to_provider_error(exc, provider, secrets) from None
    actions = found.supported_actions or []
    if actions and "generateContent" not in actions:
        raise PermanentError(provider, f"model {model} does not offer generateContent")
    return f"model {model} found"


def _finish_reason(response: types.GenerateContentResponse) -> str:
    """The first candidate's finishReason as a plain string ("" if none)."""
    if not response.candidates:
        return ""
    reason = response.candidates[0].finish_reason
    return str(getattr(reason, "value", reason or ""))


def _check_refusal(response: types.GenerateContentResponse, provider: str) -> str:
    """Raise for a blocked or refused answer; returns the finishReason otherwise."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        raise SafetyBlockError(provider, f"Gemini blocked the prompt ({reason})")
    if not response.candidates:
        raise TransientError(provider, "Gemini answered with no candidates")
    reason = _finish_reason(response)
    if reason in SAFETY_FINISH:
        raise SafetyBlockError(provider, f"Gemini refused to answer (finishReason {reason})")
    if reason in PERMANENT_FINISH:
        raise PermanentError(provider, f"Gemini could not answer (finishReason {reason})")
    if reason not in ("STOP", "MAX_TOKENS", ""):
        raise TransientError(provider, f"Gemini gave no usable answer (finishReason {reason})")
    return reason


def _text(response: types.GenerateContentResponse) -> str:
    """The answer's visible text: text parts joined, thoughts left out."""
    content = response.candidates[0].content if response.candidates else None
    parts = content.parts if content is not None and content.parts else []
    return "".join(p.text for p in parts if p.text and not p.thought)


def _usage(response: types.GenerateContentResponse, provider: str) -> Usage:
    """Tokens from usageMetadata; thinking tokens are billed as output, so they count."""
    meta = response.usage_metadata
    if meta is None:
        return Usage(provider=provider)
    output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
    return Usage(provider=provider, input_tokens=meta.prompt_token_count or 0, output_tokens=output)


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        provider=a.provider,
        calls=a.calls + b.calls,
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        characters=a.characters + b.characters,
    )


def _join(first: str, rest: str) -> str:
    """Join a cut-off text and its continuation without gluing two words together."""
    if not first or not rest or first[-1].isspace() or rest[0].isspace() or rest[0] in ".,;:!?।":
        return first + rest
    return f"{first} {rest}"


def _client_secrets(client: genai.Client) -> tuple[str, ...]:
    """The client's API key, so error text can be scrubbed of it (private SDK attribute,
    read defensively: a missing one only loses the exact-match scrub)."""
    key = getattr(getattr(client, "_api_client", None), "api_key", None)
    return (key,) if isinstance(key, str) and key else ()


class _PlanAnswer(BaseModel):
    prompt: str


# --------------------------------------------------------------------- writer


class GoogleWriter:
    """The Writer protocol on a Gemini text model."""

    def __init__(
        self,
        client: genai.Client,
        model: str,
        *,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        max_continuations: int = MAX_CONTINUATIONS,
    ) -> None:
        # The client is kept for the writer's life: a collected client closes its pool.
        self._client = client
        self.model = model
        self.name = f"gemini:{model}"
        self._temperature = temperature
        self._max_output_tokens = max_output_tokens
        self.max_continuations = max_continuations
        self._secrets = _client_secrets(client)

    def probe(self) -> str:
        """Whether Gemini answers for this key and knows the model (no tokens spent)."""
        return probe_model(self._client, TEXT_PROVIDER, self.model, self._secrets)

    def _config(
        self, system: str, schema: dict[str, Any] | None = None
    ) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=system,
            temperature=self._temperature,
            max_output_tokens=self._max_output_tokens,
            response_mime_type="application/json" if schema is not None else None,
            response_schema=schema,
        )

    def _generate(
        self, contents: types.ContentListUnionDict, config: types.GenerateContentConfig
    ) -> tuple[types.GenerateContentResponse, str]:
        response = _call(self._client, TEXT_PROVIDER, self.model, contents, config, self._secrets)
        return response, _check_refusal(response, TEXT_PROVIDER)

    def _prose(self, system: str, prompt: str, target_words: int) -> Written:
        """Ask for prose; while the answer stops at MAX_TOKENS, ask it to continue.

        Each continuation sends the prompt, the text so far as the model's own turn, and
        the request to go on: the model sees exactly where it stopped. After
        max_continuations a still unfinished text is a PermanentError (see the module
        docstring); the usage of every call, the failed ones' included, is summed.
        """
        config = self._config(system)
        response, reason = self._generate(prompt, config)
        text, usage = _text(response), _usage(response, TEXT_PROVIDER)
        continued = 0
        while reason == "MAX_TOKENS":
            if not text.strip():
                raise PermanentError(
                    TEXT_PROVIDER,
                    "Gemini spent max_output_tokens before writing any text: raise "
                    "max_output_tokens",
                )
            if continued >= self.max_continuations:
                raise PermanentError(
                    TEXT_PROVIDER,
                    f"Gemini's answer was still cut off (MAX_TOKENS) after {continued} "
                    f"continuations: raise max_output_tokens (now "
                    f"{self._max_output_tokens or 'the model default'}) or shorten the "
                    "section",
                )
            contents = [
                types.Content(role="user", parts=[types.Part.from_text(text=prompt)]),
                types.Content(role="model", parts=[types.Part.from_text(text=text)]),
                types.Content(
                    role="user",
                    parts=[
                        types.Part.from_text(
                            text=prompts.continue_prompt(target_words - count_words(text))
                        )
                    ],
                ),
            ]
            more, reason = self._generate(contents, config)
            usage = _add(usage, _usage(more, TEXT_PROVIDER))
            continued += 1
            piece = _text(more)
            if reason == "MAX_TOKENS" and not piece.strip():
                # No progress: another round would cost the same and bring nothing.
                raise PermanentError(
                    TEXT_PROVIDER,
                    "Gemini's continuation was cut off before any text (MAX_TOKENS): raise "
                    "max_output_tokens",
                )
            text = _join(text, piece)
        text = text.strip()
        if not text:
            raise TransientError(TEXT_PROVIDER, "Gemini answered with empty text")
        return Written(text=text, usage=usage)

    def _json(self, system: str, prompt: str, schema: dict[str, Any]) -> tuple[Any, Usage]:
        response, reason = self._generate(prompt, self._config(system, schema))
        if reason == "MAX_TOKENS":
            raise PermanentError(
                TEXT_PROVIDER,
                "Gemini's JSON answer was cut off (MAX_TOKENS): raise "
                "max_output_tokens or ask for fewer items",
            )
        try:
            value = json.loads(_text(response))
        except ValueError:
            raise TransientError(TEXT_PROVIDER, "Gemini answered with invalid JSON") from None
        return value, _usage(response, TEXT_PROVIDER)

    def write_section(self, brief: SectionBrief) -> Written:
        """Write one section of about brief.target_words words."""
        return self._prose(
            prompts.writer_system(brief), prompts.section_prompt(brief), brief.target_words
        )

    def revise(self, brief: SectionBrief, text: str, revision: Revision) -> Written:
        """Rewrite a section to about revision.target_words words, taking out what
        revision.remove names, putting back revision.restore and keeping the quotes
        verbatim (the instructions, one a line, are in prompts.revise_prompt)."""
        return self._prose(
            prompts.writer_system(brief),
            prompts.revise_prompt(brief, text, revision),
            revision.target_words,
        )

    def proofread(self, brief: SectionBrief, text: str) -> Written:
        """Fix grammar and punctuation, keeping meaning and length."""
        return self._prose(
            prompts.writer_system(brief),
            prompts.proofread_prompt(brief, text),
            count_words(text),
        )

    def plan_illustration(self, title: str, page_text: str, style: ImageStyle) -> IllustrationPlan:
        """The image prompt for one page, in one JSON call."""
        value, usage = self._json(
            prompts.plan_system(),
            prompts.plan_prompt(title, page_text, style),
            prompts.plan_schema(),
        )
        try:
            answer = _PlanAnswer.model_validate(value)
        except ValidationError:
            raise TransientError(TEXT_PROVIDER, "Gemini's plan does not fit its schema") from None
        prompt = answer.prompt.strip()
        if not prompt:
            raise TransientError(TEXT_PROVIDER, "Gemini planned an empty prompt")
        return IllustrationPlan(prompt=prompt, usage=usage)


# ---------------------------------------------------------------------- illustrator


class GoogleIllustrator:
    """The Illustrator protocol on a Gemini image model (generateContent, IMAGE modality)."""

    def __init__(self, client: genai.Client, model: str, *, image_size: str = "1K") -> None:
        self._client = client  # kept referenced: a collected client closes its pool
        self.model = model
        self.name = f"gemini:{model}"
        self.image_size = image_size
        self._secrets = _client_secrets(client)

    def probe(self) -> str:
        """Whether Gemini answers for this key and knows the model (no image drawn)."""
        return probe_model(self._client, IMAGE_PROVIDER, self.model, self._secrets)

    def draw(self, request: ImageRequest) -> Picture:
        """Draw one illustration; a reference image keeps the characters the same."""
        parts: list[types.Part] = []
        if request.reference_png is not None:
            parts.append(types.Part.from_bytes(data=request.reference_png, mime_type="image/png"))
        text = prompts.image_prompt(
            request.prompt, request.style, has_reference=request.reference_png is not None
        )
        parts.append(types.Part.from_text(text=text))
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            image_config=types.ImageConfig(
                aspect_ratio=request.aspect_ratio, image_size=self.image_size
            ),
        )
        contents = [types.Content(role="user", parts=parts)]
        response = _call(self._client, IMAGE_PROVIDER, self.model, contents, config, self._secrets)
        if _check_refusal(response, IMAGE_PROVIDER) == "MAX_TOKENS":
            raise PermanentError(IMAGE_PROVIDER, "Gemini's image was cut off (MAX_TOKENS)")
        data = _image_bytes(response)
        if data is None:
            raise TransientError(IMAGE_PROVIDER, "Gemini answered without an image")
        png, width, height = _as_png(data)
        return Picture(
            data=png,
            mime_type="image/png",
            width=width,
            height=height,
            usage=_usage(response, IMAGE_PROVIDER),
        )


def _image_bytes(response: types.GenerateContentResponse) -> bytes | None:
    """The first image part's bytes (the SDK has already decoded the base64)."""
    content = response.candidates[0].content if response.candidates else None
    for part in content.parts or [] if content is not None else []:
        blob = part.inline_data
        if blob is not None and blob.data and (blob.mime_type or "").startswith("image/"):
            return blob.data
    return None


def _as_png(data: bytes) -> tuple[bytes, int, int]:
    """PNG bytes and size; other formats are converted so storage always gets PNG."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode fully: a truncated image fails here, not later
            if image.format == "PNG":
                return data, image.width, image.height
            out = io.BytesIO()
            image.save(out, "PNG")
            return out.getvalue(), image.width, image.height
    except (UnidentifiedImageError, OSError):
        raise TransientError(IMAGE_PROVIDER, "Gemini's image could not be decoded") from None

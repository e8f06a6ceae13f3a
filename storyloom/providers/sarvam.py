"""Sarvam over its REST API with httpx: Bulbul text to speech and text translation.

The official SDK renamed a request field in a patch release and cannot change its host,
so the wire is spoken here directly (see /work/shared/reference/providers.md). The HTTP
client is handed in, so the same classes talk to api.sarvam.ai and to the loopback fake.
No retries happen here: errors come out as TransientError or PermanentError, and the
Prefect task around the call decides whether to try again.
"""

from __future__ import annotations

import base64
import binascii
import io
import wave
from collections.abc import Mapping
from typing import Any

import httpx

from storyloom.models import LANGUAGES, Language, Usage
from storyloom.providers.base import Speech, Written
from storyloom.providers.errors import (
    AccountError,
    PermanentError,
    ProviderError,
    TransientError,
    parse_retry_after,
)

TTS_USAGE = "sarvam-tts"
TRANSLATE_USAGE = "sarvam-translate"

# What the API accepts per model (providers.md). Speaker names are per model: a v2 name
# sent to v3 is refused by the server, so it is caught here, before anything is paid for.
V3_SPEAKERS: tuple[str, ...] = (
    "shubh", "aditya", "ritu", "priya", "neha", "rahul", "pooja", "kavya",
)  # fmt: skip
V2_SPEAKERS: tuple[str, ...] = (
    "anushka", "manisha", "vidya", "arya", "abhilash", "karun", "hitesh",
)  # fmt: skip
TTS_SPEAKERS: Mapping[str, tuple[str, ...]] = {
    "bulbul:v3": V3_SPEAKERS,
    "bulbul:v4-flash": V3_SPEAKERS,
    "bulbul:v2": V2_SPEAKERS,
}
TTS_MAX_CHARS: Mapping[str, int] = {"bulbul:v3": 2500, "bulbul:v4-flash": 2500, "bulbul:v2": 1500}
TRANSLATE_MAX_CHARS: Mapping[str, int] = {"sarvam-translate:v1": 2000, "mayura:v1": 1000}

# Planning estimates of speaking time per character at pace 1.0, used only to cut
# chapters of about a minute before any audio exists; the real length is measured from
# the WAV afterwards. English narration runs near 150 words a minute, about 14-15
# characters a second (0.068 s). Indic scripts spend more code points per syllable
# (a consonant plus a vowel sign, conjuncts with a virama), so a character is spoken
# faster: about 0.06 s for the Brahmi-derived northern scripts, and 0.055 s for the
# Dravidian ones, whose words are long and agglutinative. These are rough figures, not
# measurements of Bulbul: a planned chapter that comes out long is caught when its audio
# is measured, so they only need to be close enough to keep re-planning rare.
_SECONDS_PER_CHAR: Mapping[str, float] = {
    "en-IN": 0.068,
    "hi-IN": 0.060, "mr-IN": 0.060, "bn-IN": 0.060, "gu-IN": 0.060,
    "pa-IN": 0.060, "od-IN": 0.060,
    "ta-IN": 0.055, "te-IN": 0.055, "kn-IN": 0.055, "ml-IN": 0.055,
}  # fmt: skip

# What `storyloom doctor` sends: the smallest paid calls that prove the key works.
PROBE_WORD = "Hello"
PROBE_PHRASE = "Good morning"

_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_MESSAGE = 300  # server messages are quoted, but never a whole HTML error page


def make_http_client(timeout_seconds: float) -> httpx.Client:
    """The httpx client for Sarvam: one timeout for connect, read, write and pool."""
    return httpx.Client(timeout=httpx.Timeout(timeout_seconds))


def map_error(provider: str, error: httpx.HTTPError, *, secret: str) -> ProviderError:
    """Turn an httpx failure into TransientError (worth a retry) or PermanentError.

    `secret` is scrubbed from anything quoted back, in case a server echoes the key.
    """
    if isinstance(error, httpx.TimeoutException):
        return TransientError(provider, "Sarvam timed out")
    if isinstance(error, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError):
        return TransientError(provider, f"could not reach Sarvam ({type(error).__name__})")
    if not isinstance(error, httpx.HTTPStatusError):
        return PermanentError(provider, f"Sarvam call failed ({type(error).__name__})")

    response = error.response
    status = response.status_code
    code, message = _error_details(response, secret)
    if status == 429 and code == "insufficient_quota_error":
        # A quota runs out for the billing period: waiting a few seconds will not help.
        return AccountError(provider, "Sarvam quota exhausted", status=status)
    if status in (401, 403):
        return AccountError(provider, "Sarvam rejected the API key", status=status)
    if status in _RETRYABLE_STATUSES or status >= 500:
        return TransientError(
            provider,
            f"Sarvam answered {status} {code or ''}".rstrip(),
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    return PermanentError(
        provider, f"Sarvam refused the request ({status}): {message}", status=status
    )


def _error_details(response: httpx.Response, secret: str) -> tuple[str, str]:
    """The (code, message) of a Sarvam error body, tolerating bodies of other shapes."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    code, message = "", ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = str(error.get("code") or "")
            message = str(error.get("message") or "")
        elif "detail" in body:  # a framework's own validation answer
            message = str(body["detail"])
    if not message:
        message = response.text or response.reason_phrase
    if secret:
        message = message.replace(secret, "***")
    return code, message[:_MAX_MESSAGE]


class _SarvamClient:
    """What the speaker and the translator share: the URL, the key, one POST."""

    model: str
    max_chars: int  # the longest text one request to this model may carry

    def __init__(self, http: httpx.Client, *, base_url: str, api_key: str, usage: str) -> None:
        if not api_key:
            raise ValueError("a Sarvam API key is required")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._usage = usage

    def __repr__(self) -> str:
        # The default repr would not show the key, but say so explicitly: logs print these.
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    def _refuse(self, message: str) -> PermanentError:
        return PermanentError(self._usage, message)

    def _check_fits(self, text: str) -> None:
        """Refuse, before any call, a text longer than one request may carry."""
        if len(text) > self.max_chars:
            raise self._refuse(
                f"text of {len(text)} characters is over the {self.max_chars} "
                f"that {self.model} takes in one request; split it first"
            )

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.post(
                f"{self._base_url}{path}",
                json=body,
                headers={"api-subscription-key": self._api_key, "accept": "application/json"},
            )
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise map_error(self._usage, error, secret=self._api_key) from error
        try:
            answer = response.json()
        except ValueError:
            raise self._refuse("Sarvam answered 200 with a body that is not JSON") from None
        if not isinstance(answer, dict):
            raise self._refuse("Sarvam answered 200 with an unexpected body")
        return answer


class SarvamSpeaker(_SarvamClient):
    """Bulbul text to speech: one request per text of at most max_chars characters."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str,
        api_key: str,
        model: str = "bulbul:v3",
        speaker: str = "",
        sample_rate: int = 24000,
        pace: float = 1.0,
    ) -> None:
        super().__init__(http, base_url=base_url, api_key=api_key, usage=TTS_USAGE)
        if model not in TTS_SPEAKERS:
            raise ValueError(
                f"unknown Sarvam TTS model {model!r}; known: {', '.join(TTS_SPEAKERS)}"
            )
        allowed = TTS_SPEAKERS[model]
        speaker = speaker or allowed[0]  # the first listed is the model's default voice
        if speaker not in allowed:
            raise ValueError(
                f"speaker {speaker!r} is not a voice of {model}; "
                f"its speakers are: {', '.join(allowed)}"
            )
        if pace <= 0:
            raise ValueError(f"pace must be positive, got {pace}")
        self.name = f"sarvam/{model}"
        self.model = model
        self.speaker = speaker
        self.sample_rate = sample_rate
        self.pace = pace
        self.max_chars = TTS_MAX_CHARS[model]

    def probe(self) -> str:
        """Speak one word. Sarvam has no free endpoint; this costs a few characters of TTS,
        and unlike a translate call it proves this model and voice are served to this key."""
        self.speak(PROBE_WORD, "en-IN")
        return f"answered (spoke 1 word as {self.speaker})"

    def speak(self, text: str, language: Language) -> Speech:
        """Speak text as a mono 16-bit WAV; what the API would refuse is refused before calling."""
        if not text.strip():
            raise self._refuse("nothing to speak: the text is empty")
        self._check_fits(text)
        if language not in LANGUAGES:
            raise self._refuse(f"Sarvam does not speak {language!r}")
        answer = self._post(
            "/text-to-speech",
            {
                "text": text,
                "language_code": language,
                "speaker": self.speaker,
                "model": self.model,
                "pace": self.pace,
                "speech_sample_rate": self.sample_rate,
                "output_audio_codec": "wav",
            },
        )
        audios = answer.get("audios")
        if not isinstance(audios, list) or len(audios) != 1 or not isinstance(audios[0], str):
            raise self._refuse("Sarvam answered without exactly one audio")
        return Speech(
            wav=self._checked_wav(audios[0]),
            usage=Usage(provider=TTS_USAGE, characters=len(text)),
        )

    def seconds_per_char(self, language: Language) -> float:
        """A planning estimate of speaking time per character (see _SECONDS_PER_CHAR)."""
        return _SECONDS_PER_CHAR.get(language, 0.06) / self.pace

    def _checked_wav(self, encoded: str) -> bytes:
        # A bad answer is caught here rather than when the chapters are joined and measured.
        try:
            wav = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise self._refuse("Sarvam audio is not valid base64") from None
        if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
            raise self._refuse("Sarvam audio is not a WAV file")
        try:
            with wave.open(io.BytesIO(wav)) as reader:
                channels, width = reader.getnchannels(), reader.getsampwidth()
        except (wave.Error, EOFError):
            raise self._refuse("Sarvam audio is a broken WAV file") from None
        if (channels, width) != (1, 2):
            raise self._refuse(
                f"Sarvam audio has {channels} channels of {8 * width} bits; expected mono 16-bit"
            )
        return wav


class SarvamTranslator(_SarvamClient):
    """Sarvam translation: one request per text of at most max_chars characters."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str,
        api_key: str,
        model: str = "sarvam-translate:v1",
    ) -> None:
        super().__init__(http, base_url=base_url, api_key=api_key, usage=TRANSLATE_USAGE)
        if model not in TRANSLATE_MAX_CHARS:
            raise ValueError(
                f"unknown Sarvam translate model {model!r}; known: {', '.join(TRANSLATE_MAX_CHARS)}"
            )
        self.name = f"sarvam/{model}"
        self.model = model
        self.max_chars = TRANSLATE_MAX_CHARS[model]

    def probe(self) -> str:
        """Translate two words. Sarvam has no free endpoint: this costs 12 characters."""
        self.translate(PROBE_PHRASE, "en-IN", "hi-IN")
        return f"answered (translated {len(PROBE_PHRASE.split())} words)"

    def translate(self, text: str, source: Language, target: Language) -> Written:
        """Translate text from source to target; the same language costs no call."""
        if source == target:
            return Written(text=text, usage=Usage(provider=TRANSLATE_USAGE, calls=0))
        if not text.strip():
            raise self._refuse("nothing to translate: the text is empty")
        self._check_fits(text)
        for language in (source, target):
            if language not in LANGUAGES:
                raise self._refuse(f"Sarvam does not translate {language!r}")
        answer = self._post(
            "/translate",
            {
                "input": text,
                "source_language_code": source,
                "target_language_code": target,
                "model": self.model,
            },
        )
        translated = answer.get("translated_text")
        if not isinstance(translated, str) or not translated.strip():
            raise self._refuse("Sarvam answered without a translation")
        return Written(text=translated, usage=Usage(provider=TRANSLATE_USAGE, characters=len(text)))

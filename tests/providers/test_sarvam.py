"""The Sarvam speaker and translator against the loopback fake, over real HTTP."""

from __future__ import annotations

import base64
import io
import json
import socket
import wave
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from storyloom.models import LANGUAGES, Language
from storyloom.providers.base import Speaker, Translator
from storyloom.providers.errors import (
    AccountError,
    PermanentError,
    ProviderError,
    TransientError,
)
from storyloom.providers.sarvam import (
    SarvamSpeaker,
    SarvamTranslator,
    make_http_client,
    parse_retry_after,
)
from tests.fakes.sarvam import (
    SECONDS_PER_CHAR,
    V2_SPEAKERS,
    V3_SPEAKERS,
    SarvamState,
    quota_exhausted,
    rate_limited,
    sarvam_fake,
)
from tests.fakes.server import FakeState, Fault

KEY = "test-key-3f9a1c"  # distinctive, so a leak into a message cannot hide


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[str, SarvamState]]:
    with sarvam_fake(api_key=KEY) as served:
        yield served


@pytest.fixture
def base_url(fake: tuple[str, SarvamState]) -> str:
    return fake[0]


@pytest.fixture
def state(fake: tuple[str, SarvamState]) -> Iterator[SarvamState]:
    fake[1].reset()
    yield fake[1]
    fake[1].reset()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with make_http_client(10.0) as client:
        yield client


def speaker_for(http: httpx.Client, base_url: str, **kwargs: object) -> SarvamSpeaker:
    return SarvamSpeaker(http, base_url=base_url, api_key=KEY, **kwargs)  # type: ignore[arg-type]


def wav_facts(data: bytes) -> tuple[int, int, int, float, int]:
    """(channels, sample width, rate, seconds, peak) of a WAV file."""
    with wave.open(io.BytesIO(data)) as reader:
        frames = reader.readframes(reader.getnframes())
        samples = memoryview(frames).cast("h")
        return (
            reader.getnchannels(),
            reader.getsampwidth(),
            reader.getframerate(),
            reader.getnframes() / reader.getframerate(),
            max(abs(s) for s in samples),
        )


def assert_no_secret(error: BaseException) -> None:
    assert KEY not in str(error)
    assert KEY not in repr(error.args)


# --- text to speech ---------------------------------------------------------------------


def test_speaker_and_translator_implement_the_protocols(http: httpx.Client) -> None:
    speaker = SarvamSpeaker(http, base_url="http://127.0.0.1:1", api_key=KEY)
    translator = SarvamTranslator(http, base_url="http://127.0.0.1:1", api_key=KEY)
    assert isinstance(speaker, Speaker)
    assert isinstance(translator, Translator)
    assert KEY not in repr(speaker)
    assert KEY not in repr(translator)


def test_speak_sends_the_documented_request(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    speaker = speaker_for(http, base_url + "/", sample_rate=22050, pace=1.25)
    speaker.speak("नमस्ते दुनिया।", "hi-IN")

    (call,) = state.calls
    assert (call.method, call.path, call.status) == ("POST", "/text-to-speech", 200)
    assert call.headers["api-subscription-key"] == KEY
    assert json.loads(call.body) == {
        "text": "नमस्ते दुनिया।",
        "language_code": "hi-IN",
        "speaker": "shubh",
        "model": "bulbul:v3",
        "pace": 1.25,
        "speech_sample_rate": 22050,
        "output_audio_codec": "wav",
    }


def test_speak_returns_a_mono_16bit_wav_that_is_not_silent(
    http: httpx.Client, base_url: str, state: SarvamState
) -> None:
    text = "Once upon a time, in a village by the river."
    speech = speaker_for(http, base_url, sample_rate=16000).speak(text, "en-IN")

    assert speech.wav[:4] == b"RIFF"
    channels, width, rate, seconds, peak = wav_facts(speech.wav)
    assert (channels, width, rate) == (1, 2, 16000)
    # One sentence at its own pace, 0.8 to 1.2 times the voice's, with a comma's pause.
    assert 0.8 * SECONDS_PER_CHAR * len(text) < seconds < 1.2 * SECONDS_PER_CHAR * len(text) + 0.2
    assert seconds == pytest.approx(state.spoken[-1][-1][2], abs=0.001)
    assert peak > 0
    assert speech.usage.provider == "sarvam-tts"
    assert speech.usage.characters == len(text)
    assert speech.usage.calls == 1


def test_longer_text_gives_longer_audio(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    speaker = speaker_for(http, base_url, sample_rate=8000)
    short = wav_facts(speaker.speak("A short line.", "en-IN").wav)[3]
    long = wav_facts(speaker.speak("A much longer line of narration. " * 10, "en-IN").wav)[3]
    assert long > 5 * short


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_is_spoken(
    http: httpx.Client, base_url: str, state: FakeState, language: Language
) -> None:
    speech = speaker_for(http, base_url, sample_rate=8000).speak("Hello.", language)
    assert speech.wav[:4] == b"RIFF"
    assert json.loads(state.calls[0].body)["language_code"] == language


@pytest.mark.parametrize(
    ("model", "default", "max_chars"),
    [
        ("bulbul:v3", "shubh", 2500),
        ("bulbul:v4-flash", "shubh", 2500),
        ("bulbul:v2", "anushka", 1500),
    ],
)
def test_each_model_has_its_default_speaker_and_limit(
    http: httpx.Client, base_url: str, state: FakeState, model: str, default: str, max_chars: int
) -> None:
    speaker = speaker_for(http, base_url, model=model, sample_rate=8000)
    assert (speaker.speaker, speaker.max_chars) == (default, max_chars)
    speaker.speak("Hello.", "ta-IN")
    body = json.loads(state.calls[0].body)
    assert (body["model"], body["speaker"]) == (model, default)


@pytest.mark.parametrize(
    ("model", "speaker"),
    [("bulbul:v3", V3_SPEAKERS[-1]), ("bulbul:v4-flash", "priya"), ("bulbul:v2", V2_SPEAKERS[-1])],
)
def test_a_speaker_of_the_model_is_accepted_by_the_server(
    http: httpx.Client, base_url: str, state: FakeState, model: str, speaker: str
) -> None:
    speaker_for(http, base_url, model=model, speaker=speaker, sample_rate=8000).speak(
        "Hi.", "kn-IN"
    )
    assert state.calls[0].status == 200


@pytest.mark.parametrize(
    ("model", "speaker", "allowed"),
    [("bulbul:v3", "anushka", "shubh"), ("bulbul:v2", "shubh", "anushka")],
)
def test_a_speaker_of_another_model_is_refused_at_construction(
    http: httpx.Client, base_url: str, model: str, speaker: str, allowed: str
) -> None:
    with pytest.raises(ValueError, match=model) as caught:
        speaker_for(http, base_url, model=model, speaker=speaker)
    assert allowed in str(caught.value)


def test_an_unknown_model_is_refused_at_construction(http: httpx.Client, base_url: str) -> None:
    with pytest.raises(ValueError, match="bulbul:v9"):
        speaker_for(http, base_url, model="bulbul:v9")


@pytest.mark.parametrize("model", ["bulbul:v3", "bulbul:v2"])
def test_text_at_the_limit_is_spoken_and_over_it_refused_without_a_call(
    http: httpx.Client, base_url: str, state: FakeState, model: str
) -> None:
    speaker = speaker_for(http, base_url, model=model, sample_rate=8000)
    speaker.speak("a" * speaker.max_chars, "en-IN")
    assert len(state.calls) == 1

    with pytest.raises(PermanentError, match=str(speaker.max_chars)):
        speaker.speak("a" * (speaker.max_chars + 1), "en-IN")
    assert len(state.calls) == 1


def test_empty_text_is_refused_without_a_call(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    with pytest.raises(PermanentError):
        speaker_for(http, base_url).speak("  \n", "hi-IN")
    assert state.calls == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_seconds_per_char_is_a_plausible_estimate(
    http: httpx.Client, base_url: str, language: Language
) -> None:
    normal = speaker_for(http, base_url).seconds_per_char(language)
    faster = speaker_for(http, base_url, pace=2.0).seconds_per_char(language)
    # One minute of narration should be somewhere between 600 and 1500 characters.
    assert 60 / 1500 <= normal <= 60 / 600
    assert faster == pytest.approx(normal / 2)


# --- translation ------------------------------------------------------------------------


def test_translate_sends_the_documented_request_and_returns_the_translation(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    translator = SarvamTranslator(http, base_url=base_url, api_key=KEY)
    written = translator.translate("The river was wide.", "en-IN", "hi-IN")

    assert written.text == "[hi-IN] The river was wide."
    assert written.usage.provider == "sarvam-translate"
    assert written.usage.characters == len("The river was wide.")
    (call,) = state.calls
    assert call.path == "/translate"
    assert call.headers["api-subscription-key"] == KEY
    assert json.loads(call.body) == {
        "input": "The river was wide.",
        "source_language_code": "en-IN",
        "target_language_code": "hi-IN",
        "model": "sarvam-translate:v1",
    }


def test_translating_into_the_same_language_costs_no_call(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    written = SarvamTranslator(http, base_url=base_url, api_key=KEY).translate(
        "Same.", "ta-IN", "ta-IN"
    )
    assert (written.text, written.usage.calls) == ("Same.", 0)
    assert state.calls == []


@pytest.mark.parametrize(("model", "limit"), [("sarvam-translate:v1", 2000), ("mayura:v1", 1000)])
def test_translation_limits_per_model(
    http: httpx.Client, base_url: str, state: FakeState, model: str, limit: int
) -> None:
    translator = SarvamTranslator(http, base_url=base_url, api_key=KEY, model=model)
    assert translator.max_chars == limit
    translator.translate("b" * limit, "en-IN", "bn-IN")
    assert len(state.calls) == 1

    with pytest.raises(PermanentError, match=str(limit)):
        translator.translate("b" * (limit + 1), "en-IN", "bn-IN")
    assert len(state.calls) == 1


def test_an_unknown_translate_model_is_refused(http: httpx.Client, base_url: str) -> None:
    with pytest.raises(ValueError, match="mayura:v9"):
        SarvamTranslator(http, base_url=base_url, api_key=KEY, model="mayura:v9")


# --- errors -----------------------------------------------------------------------------


def speak_error(http: httpx.Client, base_url: str, **kwargs: object) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        speaker_for(http, base_url, sample_rate=8000, **kwargs).speak("Hello.", "hi-IN")
    assert_no_secret(caught.value)
    return caught.value


def test_rate_limit_is_transient_with_the_servers_retry_after(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    state.schedule(rate_limited(retry_after=7))
    error = speak_error(http, base_url)
    assert isinstance(error, TransientError)
    assert (error.status, error.retry_after) == (429, 7.0)


def test_rate_limit_without_retry_after_leaves_the_wait_to_the_caller(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    state.schedule(rate_limited(retry_after=None))
    error = speak_error(http, base_url)
    assert isinstance(error, TransientError)
    assert error.retry_after is None


def test_exhausted_quota_is_permanent(http: httpx.Client, base_url: str, state: FakeState) -> None:
    state.schedule(quota_exhausted())
    error = speak_error(http, base_url)
    assert type(error) is AccountError  # every further call would fail the same way
    assert "quota" in str(error)
    assert error.status == 429


def test_a_wrong_key_is_permanent_and_not_repeated_in_the_message(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    wrong = "sk-wrong-key-77e1"
    with pytest.raises(PermanentError) as caught:
        SarvamSpeaker(http, base_url=base_url, api_key=wrong).speak("Hello.", "hi-IN")
    assert caught.value.status == 403
    assert "API key" in str(caught.value)
    assert wrong not in str(caught.value)
    assert state.calls[0].status == 403  # the fake really refused it


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(
    http: httpx.Client, base_url: str, state: FakeState, status: int
) -> None:
    state.schedule(Fault(status=status, retry_after=2))
    error = speak_error(http, base_url)
    assert isinstance(error, TransientError)
    assert (error.status, error.retry_after) == (status, 2.0)


@pytest.mark.parametrize("status", [400, 413, 422])
def test_bad_requests_are_permanent_with_the_servers_message(
    http: httpx.Client, base_url: str, state: FakeState, status: int
) -> None:
    body = {"error": {"message": "Text is malformed", "code": "invalid_request_error"}}
    state.schedule(Fault(status=status, body=body))
    error = speak_error(http, base_url)
    assert type(error) is PermanentError
    assert "Text is malformed" in str(error)
    assert error.status == status


def test_a_key_echoed_by_the_server_is_scrubbed(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    body = {"error": {"message": f"key {KEY} is not allowed here", "code": "x"}}
    state.schedule(Fault(status=400, body=body))
    error = speak_error(http, base_url)  # asserts the key is absent
    assert "not allowed here" in str(error)


def test_translation_errors_map_the_same_way(
    http: httpx.Client, base_url: str, state: FakeState
) -> None:
    translator = SarvamTranslator(http, base_url=base_url, api_key=KEY)
    state.schedule(rate_limited(retry_after=3, path="/translate"))
    with pytest.raises(TransientError) as caught:
        translator.translate("Hello.", "en-IN", "te-IN")
    assert caught.value.retry_after == 3.0
    state.schedule(quota_exhausted(path="/translate"))
    with pytest.raises(PermanentError, match="quota"):
        translator.translate("Hello.", "en-IN", "te-IN")
    assert_no_secret(caught.value)


def test_a_slow_answer_times_out_as_transient() -> None:
    # A fake of its own: the slow call is still sleeping when the client gives up.
    with sarvam_fake(api_key=KEY) as (url, state), make_http_client(0.05) as http:
        state.schedule(Fault(status=None, delay=0.5))
        with pytest.raises(TransientError, match="timed out") as caught:
            SarvamSpeaker(http, base_url=url, api_key=KEY).speak("Hello.", "hi-IN")
        assert_no_secret(caught.value)


def test_a_refused_connection_is_transient(http: httpx.Client) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now, so the connection is refused at once.
    with pytest.raises(TransientError) as caught:
        SarvamSpeaker(http, base_url=f"http://127.0.0.1:{port}", api_key=KEY).speak(
            "Hello.", "hi-IN"
        )
    assert_no_secret(caught.value)


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# --- the fake itself: it refuses what the real API refuses ------------------------------


def post(base_url: str, path: str, body: dict[str, object], key: str = KEY) -> httpx.Response:
    with make_http_client(10.0) as client:
        return client.post(base_url + path, json=body, headers={"api-subscription-key": key})


@pytest.mark.parametrize(
    "body",
    [
        {"text": "Hi.", "target_language_code": "hi-IN", "speaker": "shubh"},
        {"inputs": ["Hi."], "language_code": "hi-IN", "speaker": "shubh"},
    ],
)
def test_fake_refuses_the_old_field_names(
    base_url: str, state: FakeState, body: dict[str, object]
) -> None:
    answer = post(base_url, "/text-to-speech", body)
    assert answer.status_code in (400, 422)
    assert answer.json()["error"]["code"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"text": "x" * 2501, "language_code": "hi-IN", "model": "bulbul:v3"}, "2500"),
        ({"text": "x" * 1501, "language_code": "hi-IN", "model": "bulbul:v2"}, "1500"),
        ({"text": "Hi.", "language_code": "hi-IN", "model": "bulbul:v2", "speaker": "shubh"},
         "anushka"),
        ({"text": "Hi.", "language_code": "fr-FR"}, "fr-FR"),
    ],
)  # fmt: skip
def test_fake_refuses_what_the_real_api_refuses(
    base_url: str, state: FakeState, body: dict[str, object], fragment: str
) -> None:
    answer = post(base_url, "/text-to-speech", body)
    assert answer.status_code == 400
    assert fragment in answer.json()["error"]["message"]


def test_fake_refuses_a_missing_key_with_403(base_url: str, state: FakeState) -> None:
    answer = post(base_url, "/translate", {"input": "Hi."}, key="")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "invalid_api_key_error"


def test_fake_answers_base64_wav_with_a_request_id(base_url: str, state: FakeState) -> None:
    answer = post(base_url, "/text-to-speech", {"text": "Hi.", "language_code": "od-IN"})
    assert answer.status_code == 200
    payload = answer.json()
    assert payload["request_id"]
    assert base64.b64decode(payload["audios"][0])[:4] == b"RIFF"

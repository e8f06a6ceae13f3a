"""GoogleWriter and GoogleIllustrator against the loopback Gemini fake, over real HTTP
through the real google-genai SDK; and the prompt text, which is pure."""

from __future__ import annotations

import io
import logging
import re
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from PIL import Image

from storyloom import prompts
from storyloom.models import LANGUAGES, Audience, ImageStyle, Tone
from storyloom.providers.base import (
    Illustrator,
    ImageRequest,
    Revision,
    SectionBrief,
    Writer,
)
from storyloom.providers.errors import (
    PermanentError,
    ProviderError,
    SafetyBlockError,
    TransientError,
)
from storyloom.providers.google import (
    MAX_CONTINUATIONS,
    GoogleIllustrator,
    GoogleWriter,
    make_client,
    to_provider_error,
)
from storyloom.writing import count_words
from tests.fakes.gemini import (
    ABOUT_WORDS,
    INVENTED_CITY,
    INVENTED_NAME,
    INVENTED_SENTENCE,
    INVENTED_YEAR,
    GeminiState,
    Misbehave,
    error_body,
    gemini_fake,
    quota_exhausted,
    retry_info,
)
from tests.fakes.server import Fault

KEY = "test-key-s3cret-4711"
QUOTE = "Work hard, be kind."
MATERIAL = (
    "I was born in Pune in 1950. My father ran a tea stall by the station. "
    f'He always said, "{QUOTE}" We had two cows and a bicycle.'
)
TEXT_MODEL = "gemini-2.5-flash"
IMAGE_MODEL = "gemini-3.1-flash-image"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def brief(**changes: Any) -> SectionBrief:
    values: dict[str, Any] = {
        "story_id": "asha",
        "title": "Asha's Life",
        "kind": "life",
        "language": "hi-IN",
        "key": "childhood",
        "heading": "Childhood",
        "material": "I was born in Pune in 1950. My father ran a tea stall by the station.",
        "target_words": 120,
        "tone": Tone.NOSTALGIC,
        "audience": Audience.FAMILY,
        "position": 2,
        "of": 7,
    }
    values.update(changes)
    return SectionBrief(**values)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, GeminiState]]:
    with gemini_fake(api_key=KEY) as served:
        yield served


@pytest.fixture
def fake(
    server: tuple[str, GeminiState], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, GeminiState]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server[1].reset()
    return server


@pytest.fixture
def state(fake: tuple[str, GeminiState]) -> GeminiState:
    return fake[1]


@pytest.fixture
def client(fake: tuple[str, GeminiState]) -> genai.Client:
    return make_client(KEY, fake[0], "v1beta", timeout_seconds=10)


@pytest.fixture
def writer(client: genai.Client) -> GoogleWriter:
    return GoogleWriter(client, TEXT_MODEL)


@pytest.fixture
def illustrator(client: genai.Client) -> GoogleIllustrator:
    return GoogleIllustrator(client, IMAGE_MODEL)


def tokens(state: GeminiState, index: int = -1) -> tuple[int, int]:
    usage = state.requests[index].usage
    return usage["promptTokenCount"], usage["candidatesTokenCount"]


def schema_of(config: dict[str, Any]) -> dict[str, Any]:
    return dict(config.get("responseSchema") or config.get("response_schema") or {})


# ------------------------------------------------------------------- success


def test_the_classes_satisfy_the_protocols(
    writer: GoogleWriter, illustrator: GoogleIllustrator
) -> None:
    assert isinstance(writer, Writer)
    assert isinstance(illustrator, Illustrator)
    assert TEXT_MODEL in writer.name
    assert IMAGE_MODEL in illustrator.name


def test_write_section_gives_about_target_words_and_counts_tokens(
    writer: GoogleWriter, state: GeminiState
) -> None:
    written = writer.write_section(brief(target_words=180))

    assert abs(count_words(written.text) - 180) <= 18
    assert "\n\n" in written.text  # paragraphs
    assert written.usage.provider == "gemini-text"
    assert (written.usage.input_tokens, written.usage.output_tokens) == tokens(state)
    assert written.usage.input_tokens > 0
    assert written.usage.output_tokens > 0


def test_write_section_request_shape(
    writer: GoogleWriter, state: GeminiState, fake: tuple[str, GeminiState]
) -> None:
    section = brief()
    writer.write_section(section)

    (request,) = state.requests
    assert (request.version, request.model) == ("v1beta", TEXT_MODEL)
    assert request.headers["x-goog-api-key"] == KEY
    assert "invent" in request.system_text
    assert "Hindi" in request.system_text
    assert section.material in request.prompt_text
    assert "about 120 words" in request.prompt_text
    # Prose: no JSON mode, no schema.
    assert "responseMimeType" not in request.generation_config
    assert not schema_of(request.generation_config)


def test_make_client_pins_the_api_version(fake: tuple[str, GeminiState]) -> None:
    base_url, state = fake
    writer = GoogleWriter(make_client(KEY, base_url, "v1alpha", 10), TEXT_MODEL)

    writer.write_section(brief())

    assert state.requests[0].version == "v1alpha"


def test_revise_sends_the_instructions_and_the_fake_obeys_them(
    writer: GoogleWriter, state: GeminiState
) -> None:
    section = brief(facts=("Pune", "1950"), quotes=(QUOTE,), material=MATERIAL)
    draft = (
        "My father ran a tea stall by the station. "
        f'{INVENTED_SENTENCE} He always said, "Work hard, be good."'
    )
    revision = Revision(
        target_words=90,
        remove=(INVENTED_NAME, INVENTED_CITY, INVENTED_YEAR),
        restore=("Pune", "1950"),
        quotes=(QUOTE,),
    )

    written = writer.revise(section, draft, revision)

    (request,) = state.requests
    assert request.kind == "revise"
    lines = request.prompt_text.splitlines()
    for item in revision.remove:
        assert f"Remove: {item}" in lines
    assert "Restore: Pune" in lines
    assert "Restore: 1950" in lines
    assert f'Keep verbatim: "{QUOTE}"' in lines
    assert "Target: about 90 words." in lines
    assert draft in request.prompt_text
    assert section.material in request.prompt_text
    # The fake obeyed: invention gone, facts back, the quote mended, the length hit.
    text = written.text
    assert all(item not in text for item in revision.remove)
    assert "Pune" in text
    assert "1950" in text
    assert f'"{QUOTE}"' in text
    assert count_words(text) == 90
    assert (written.usage.input_tokens, written.usage.output_tokens) == tokens(state)


def test_proofread_keeps_the_length(writer: GoogleWriter, state: GeminiState) -> None:
    text = " ".join(["word"] * 60)

    written = writer.proofread(brief(), text)

    assert abs(count_words(written.text) - 60) <= 6
    assert text in state.requests[0].prompt_text
    assert written.usage.calls == 1


def test_plan_illustration_gives_one_prompt_for_the_page(
    writer: GoogleWriter, state: GeminiState
) -> None:
    page = "The tea stall at dawn."

    plan = writer.plan_illustration("Asha's Life", page, ImageStyle.MINIMALIST)

    assert plan.prompt
    (request,) = state.requests
    assert page in request.prompt_text
    assert "Asha's Life" in request.prompt_text
    assert request.generation_config["responseMimeType"] == "application/json"
    assert schema_of(request.generation_config)["required"] == ["prompt"]
    assert (plan.usage.input_tokens, plan.usage.output_tokens) == tokens(state)


def test_draw_returns_a_png_sized_by_the_aspect_ratio(
    illustrator: GoogleIllustrator, state: GeminiState
) -> None:
    picture = illustrator.draw(ImageRequest("A girl at a tea stall", ImageStyle.ARTISTIC, "16:9"))

    assert picture.data.startswith(PNG_MAGIC)
    assert picture.mime_type == "image/png"
    assert (picture.width, picture.height) == (1344, 768)
    with Image.open(io.BytesIO(picture.data)) as image:
        assert image.size == (1344, 768)
    assert picture.usage.provider == "gemini-image"
    assert (picture.usage.input_tokens, picture.usage.output_tokens) == tokens(state)
    (request,) = state.requests
    assert request.model == IMAGE_MODEL
    config = request.generation_config
    assert config["responseModalities"] == ["IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "1K"}
    assert request.inline_parts == []
    assert "watercolour" in request.prompt_text  # the artistic style's wording


def test_draw_uses_the_image_size_it_was_built_with(
    client: genai.Client, state: GeminiState
) -> None:
    state.image_text = None  # an answer with the image part only
    picture = GoogleIllustrator(client, IMAGE_MODEL, image_size="2K").draw(
        ImageRequest("A river", ImageStyle.MINIMALIST, "1:1")
    )

    assert (picture.width, picture.height) == (2048, 2048)
    assert state.requests[0].generation_config["imageConfig"]["imageSize"] == "2K"


def test_later_images_carry_the_first_as_an_inline_reference(
    illustrator: GoogleIllustrator, state: GeminiState
) -> None:
    first = illustrator.draw(ImageRequest("Asha as a girl", ImageStyle.REALISTIC, "4:3"))
    illustrator.draw(
        ImageRequest("Asha at school", ImageStyle.REALISTIC, "4:3", reference_png=first.data)
    )

    assert state.requests[0].inline_parts == []
    (reference,) = state.requests[1].inline_parts
    assert reference["mimeType"] == "image/png"
    assert reference["bytes"] == first.data
    assert "same" in state.requests[1].prompt_text


def test_the_fake_answers_json_schema_requests_too(client: genai.Client) -> None:
    # The fake must serve responseJsonSchema ($defs, anyOf) as well as responseSchema.
    schema = {
        "$defs": {"Beat": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "type": "object",
        "properties": {
            "beats": {"type": "array", "items": {"$ref": "#/$defs/Beat"}, "minItems": 3},
            "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        },
    }
    response = client.models.generate_content(
        model=TEXT_MODEL,
        contents="plan",
        config={"response_mime_type": "application/json", "response_json_schema": schema},
    )

    assert response.parsed is not None or response.text
    assert '"beats": [{"n": 1}, {"n": 2}, {"n": 3}]' in (response.text or "")


# ------------------------------------------------------------------- errors


def test_429_with_retry_info_is_transient_with_its_delay(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.schedule(Fault(status=429, body=quota_exhausted(retry_delay="3s")))

    with pytest.raises(TransientError) as caught:
        writer.write_section(brief())

    assert caught.value.status == 429
    assert caught.value.retry_after == 3.0


def test_fractional_retry_delay(writer: GoogleWriter, state: GeminiState) -> None:
    state.schedule(Fault(status=429, body=error_body(429, details=[retry_info("1.5s")])))

    with pytest.raises(TransientError) as caught:
        writer.write_section(brief())

    assert caught.value.retry_after == 1.5


def test_retry_after_header_when_there_is_no_retry_info(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.schedule(Fault(status=503, retry_after=7))

    with pytest.raises(TransientError) as caught:
        writer.write_section(brief())

    assert caught.value.status == 503
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(("per", "limit"), [("Day", 250), ("Minute", 0)])
def test_daily_or_zero_quota_is_permanent(
    writer: GoogleWriter, state: GeminiState, per: str, limit: int
) -> None:
    state.schedule(Fault(status=429, body=quota_exhausted(per=per, limit=limit)))

    with pytest.raises(PermanentError) as caught:
        writer.write_section(brief())

    assert not isinstance(caught.value, TransientError)
    assert "quota" in str(caught.value)


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_server_side_failures_are_transient(
    writer: GoogleWriter, state: GeminiState, status: int
) -> None:
    state.schedule(Fault(status=status))

    with pytest.raises(TransientError) as caught:
        writer.write_section(brief())

    assert caught.value.status == status
    assert "Gemini" in str(caught.value)
    assert len(state.calls) == 1  # the SDK's own retries are off: Prefect owns them


def test_a_wrong_key_is_permanent_and_never_echoed(fake: tuple[str, GeminiState]) -> None:
    base_url, _ = fake
    wrong = "AIzaWRONG-wrong-key-do-not-print-0000000"
    writer = GoogleWriter(make_client(wrong, base_url, "v1beta", 10), TEXT_MODEL)

    with pytest.raises(PermanentError) as caught:
        writer.write_section(brief())

    assert caught.value.status == 400
    assert "Gemini rejected the API key" in str(caught.value)
    assert wrong not in _everything_about(caught.value)


def test_403_is_permanent_and_names_gemini(writer: GoogleWriter, state: GeminiState) -> None:
    state.schedule(Fault(status=403))

    with pytest.raises(PermanentError) as caught:
        writer.write_section(brief())

    assert caught.value.status == 403
    assert "Gemini refused access" in str(caught.value)
    assert KEY not in _everything_about(caught.value)


def test_an_unknown_model_is_permanent(writer: GoogleWriter, state: GeminiState) -> None:
    state.models = frozenset({"gemini-3-flash"})

    with pytest.raises(PermanentError) as caught:
        writer.write_section(brief())

    assert caught.value.status == 404
    assert TEXT_MODEL in str(caught.value)


def test_the_key_is_scrubbed_even_when_the_server_echoes_it(
    writer: GoogleWriter, state: GeminiState, caplog: pytest.LogCaptureFixture
) -> None:
    state.schedule(Fault(status=400, body=error_body(400, f"bad request from key {KEY}")))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PermanentError) as caught:
        writer.write_section(brief())

    assert "bad request from key ***" in str(caught.value)
    assert KEY not in _everything_about(caught.value)
    assert KEY not in caplog.text


def test_a_timeout_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # A server of its own: the slow call lands after the client gave up, and must not
    # reach the shared fake while a later test is using it.
    with gemini_fake(api_key=KEY) as (base_url, state):
        client = make_client(KEY, base_url, "v1beta", timeout_seconds=0.2)
        state.schedule(Fault(status=None, delay=0.6))

        with pytest.raises(TransientError, match="did not answer in time"):
            GoogleWriter(client, TEXT_MODEL).write_section(brief())


def test_a_refused_connection_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the call: nothing listens
    writer = GoogleWriter(make_client(KEY, f"http://127.0.0.1:{port}", "v1beta", 5), TEXT_MODEL)

    with pytest.raises(TransientError, match="could not reach Gemini"):
        writer.write_section(brief())


def test_a_blocked_prompt_is_a_safety_block_after_exactly_one_call(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.block_next_prompt()

    with pytest.raises(SafetyBlockError, match="blocked the prompt"):
        writer.write_section(brief())

    assert len(state.requests) == 1


def test_finish_reason_safety_is_a_safety_block(writer: GoogleWriter, state: GeminiState) -> None:
    state.finish_next("SAFETY")

    with pytest.raises(SafetyBlockError, match="SAFETY"):
        writer.plan_illustration("T", "a", ImageStyle.ARTISTIC)

    assert len(state.requests) == 1


@pytest.mark.parametrize("reason", ["IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"])
def test_image_safety_is_a_safety_block(
    illustrator: GoogleIllustrator, state: GeminiState, reason: str
) -> None:
    state.finish_next(reason)

    with pytest.raises(SafetyBlockError, match=reason):
        illustrator.draw(ImageRequest("x", ImageStyle.ARTISTIC))

    assert len(state.requests) == 1


def test_a_blocked_image_prompt_is_a_safety_block(
    illustrator: GoogleIllustrator, state: GeminiState
) -> None:
    state.block_next_prompt()

    with pytest.raises(SafetyBlockError):
        illustrator.draw(ImageRequest("x", ImageStyle.ARTISTIC))


@pytest.mark.parametrize("reason", ["NO_IMAGE", "IMAGE_OTHER", "IMAGE_RECITATION"])
def test_no_image_is_transient(
    illustrator: GoogleIllustrator, state: GeminiState, reason: str
) -> None:
    state.finish_next(reason)

    with pytest.raises(TransientError, match=reason):
        illustrator.draw(ImageRequest("x", ImageStyle.ARTISTIC))


def test_max_tokens_continues_once_and_joins_the_text(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.finish_next("MAX_TOKENS")

    written = writer.write_section(brief(target_words=200))

    first, second = state.requests
    partial = first.answer["candidates"][0]["content"]["parts"][0]["text"]
    turns = second.body["contents"]
    assert [t["role"] for t in turns] == ["user", "model", "user"]
    assert turns[1]["parts"][0]["text"] == partial
    assert "Continue" in turns[2]["parts"][0]["text"]
    assert written.text.startswith(partial)
    assert abs(count_words(written.text) - 200) <= 20
    assert written.usage.calls == 2
    assert written.usage.input_tokens == tokens(state, 0)[0] + tokens(state, 1)[0]
    assert written.usage.output_tokens == tokens(state, 0)[1] + tokens(state, 1)[1]


def test_max_tokens_is_continued_again_and_again_and_the_parts_joined(
    writer: GoogleWriter, state: GeminiState
) -> None:
    section = brief(target_words=240, material=MATERIAL, facts=("Pune", "1950"))
    whole = writer.write_section(section).text
    state.reset()
    state.script_text(Misbehave.CUT, Misbehave.CUT, Misbehave.CUT)

    written = writer.write_section(section)

    assert state.kinds() == ["section", "continue", "continue", "continue"]
    assert [r.finish_reason for r in state.requests] == ["MAX_TOKENS"] * 3 + ["STOP"]
    # Each continuation sends the text so far as the model's turn, and asks for the rest.
    for before, request in zip(state.requests, state.requests[1:], strict=False):
        user, model, ask = request.turns
        assert user == ("user", prompts.section_prompt(section))
        assert model[0] == "model"
        assert before.answer_text.strip() in model[1]
        assert ask[0] == "user"
        assert ask[1].startswith("Your answer was cut off")
    # The joined parts are the answer that was cut: nothing lost, nothing doubled.
    assert written.text == whole
    assert count_words(written.text) == 240
    assert written.usage.calls == 4
    assert written.usage.input_tokens == sum(tokens(state, i)[0] for i in range(4))
    assert written.usage.output_tokens == sum(tokens(state, i)[1] for i in range(4))


def test_max_tokens_gives_up_after_the_bound_with_a_clear_error(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.text_behaviour = Misbehave.CUT  # every answer cut off

    with pytest.raises(PermanentError, match="max_output_tokens") as caught:
        writer.write_section(brief())

    assert not isinstance(caught.value, TransientError)
    assert f"after {MAX_CONTINUATIONS} continuations" in str(caught.value)
    assert state.kinds() == ["section"] + ["continue"] * MAX_CONTINUATIONS


def test_the_continuation_bound_is_the_writers(client: genai.Client, state: GeminiState) -> None:
    state.text_behaviour = Misbehave.CUT

    with pytest.raises(PermanentError, match="after 1 continuations"):
        GoogleWriter(client, TEXT_MODEL, max_continuations=1).proofread(brief(), MATERIAL)

    assert state.kinds() == ["proofread", "continue"]


def test_revise_and_proofread_are_continued_too(writer: GoogleWriter, state: GeminiState) -> None:
    state.script_text(Misbehave.CUT, kind="revise")
    revised = writer.revise(brief(), "A draft.", Revision(target_words=80))
    state.script_text(Misbehave.CUT, Misbehave.CUT)
    proofread = writer.proofread(brief(), revised.text)

    assert count_words(revised.text) == 80
    assert proofread.text == revised.text
    assert state.kinds() == ["revise", "continue", "proofread", "continue", "continue"]


def test_max_tokens_on_json_is_permanent_without_continuing(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.finish_next("MAX_TOKENS")

    with pytest.raises(PermanentError, match="JSON"):
        writer.plan_illustration("T", "a", ImageStyle.ARTISTIC)

    assert len(state.requests) == 1


def _text_answer(text: str) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 5},
    }


@pytest.mark.parametrize(
    "text",
    ["not json at all", '{"prompts": ["the old shape"]}', '{"prompt": "  "}', '{"wrong": []}'],
)
def test_json_that_misses_the_schema_is_transient(
    writer: GoogleWriter, state: GeminiState, text: str
) -> None:
    state.schedule(Fault(status=200, body=_text_answer(text)))

    with pytest.raises(TransientError):
        writer.plan_illustration("T", "a", ImageStyle.ARTISTIC)


# ------------------------------------------------------------ the error mapper


def test_an_http_date_retry_after_is_read_as_seconds() -> None:
    response = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    error = genai_errors.ServerError(503, error_body(503), response)

    mapped = to_provider_error(error, "gemini-text")

    assert isinstance(mapped, TransientError)
    assert mapped.retry_after == 0.0


def test_a_google_shaped_key_is_scrubbed_without_being_told() -> None:
    key = "AIza" + "x" * 35
    error = genai_errors.ClientError(400, error_body(400, f"key {key} is odd"))

    mapped = to_provider_error(error, "gemini-text")

    assert isinstance(mapped, PermanentError)
    assert key not in str(mapped)


def _everything_about(error: ProviderError) -> str:
    """All a log line or traceback could show of the error."""
    return "".join(traceback.format_exception(error)) + repr(error) + repr(error.__dict__)


# ------------------------------------------------------------------- prompts


def test_prompts_are_pure() -> None:
    section = brief()
    assert prompts.section_prompt(section) == prompts.section_prompt(brief())
    assert prompts.writer_system(section) == prompts.writer_system(brief())
    assert isinstance(prompts.PROMPT_VERSION, str)
    assert prompts.PROMPT_VERSION


def test_every_language_tone_audience_and_style_has_wording() -> None:
    assert set(prompts.LANGUAGE_NAMES) == set(LANGUAGES)
    assert set(prompts.TONE_WORDING) == set(Tone)
    assert set(prompts.AUDIENCE_WORDING) == set(Audience)
    assert set(prompts.STYLE_WORDING) == set(ImageStyle)


def test_the_life_system_forbids_invention_and_sets_voice() -> None:
    system = prompts.writer_system(brief(language="ta-IN", tone=Tone.HUMOROUS))

    assert "never invent" in system
    assert "Tamil" in system
    assert prompts.TONE_WORDING[Tone.HUMOROUS] in system
    assert prompts.AUDIENCE_WORDING[Audience.FAMILY] in system


def test_the_creative_system_serves_the_premise() -> None:
    system = prompts.writer_system(brief(kind="creative"))

    assert "premise" in system
    assert "never invent" not in system


def test_the_section_prompt_carries_material_place_and_length() -> None:
    section = brief(target_words=240, heading="Rain", previous="Origins", following="Youth")
    text = prompts.section_prompt(section)

    assert section.material in text
    assert "Rain" in text
    assert "Section 2 of 7" in text
    assert 'after the section "Origins" and before "Youth"' in text
    assert ABOUT_WORDS.findall(text)[-1] == "240"  # the phrase the fake reads


def test_the_first_and_last_sections_say_where_they_stand() -> None:
    first = prompts.section_prompt(brief(position=1, following="Childhood"))
    last = prompts.section_prompt(brief(position=7, previous="Work and purpose"))

    assert 'opens the book; the next section is "Childhood"' in first
    assert 'closes the book, after the section "Work and purpose"' in last


def test_a_creative_section_prompt_carries_the_premise() -> None:
    text = prompts.section_prompt(brief(kind="creative", premise="A kite that can talk."))

    assert "A kite that can talk." in text


def test_the_section_prompt_carries_continuity_facts_and_quotes() -> None:
    section = brief(
        came_before="We moved to the\ncity in a bullock cart.",
        comes_next="At sixteen I left for Bombay",
        facts=("Pune", "1950"),
        quotes=(QUOTE, "\u201cAlready quoted\u201d"),
    )
    lines = prompts.section_prompt(section).splitlines()

    assert (
        "The story so far ended with: We moved to the city in a bullock cart. "
        "Pick up from there without retelling it."
    ) in lines
    assert "The next section begins with: At sixteen I left for Bombay; do not tell it here." in (
        lines
    )
    assert [x for x in lines if x.startswith("Keep f")] == ["Keep fact: Pune", "Keep fact: 1950"]
    assert f'Keep verbatim: "{QUOTE}"' in lines
    assert "Keep verbatim: \u201cAlready quoted\u201d" in lines  # not quoted twice
    assert lines[lines.index("<material>") + 1] == section.material
    assert ABOUT_WORDS.findall("\n".join(lines))[-1] == "120"


def test_the_section_prompt_leaves_out_what_the_brief_does_not_have() -> None:
    text = prompts.section_prompt(brief(material=""))

    assert "story so far" not in text
    assert "next section begins" not in text
    assert "Keep fact:" not in text
    assert "Keep verbatim:" not in text
    assert "<material>" not in text
    assert "no material" in text


def test_the_revise_prompt_is_one_instruction_a_line() -> None:
    draft = "One two three. Uncle Rupert came back from Lisbon in 1937."
    section = brief(facts=("Pune", "1950", "Lisbon"), quotes=(QUOTE,))
    revision = Revision(
        target_words=300, remove=("Lisbon", "1937"), restore=("Pune",), quotes=("Be good.",)
    )

    lines = prompts.revise_prompt(section, draft, revision).splitlines()

    assert "Target: about 300 words." in lines
    assert [x for x in lines if x.startswith(("Remove:", "Restore:", "Keep"))] == [
        "Remove: Lisbon",
        "Remove: 1937",
        "Restore: Pune",
        "Keep fact: 1950",  # what is removed or restored is not also kept
        f'Keep verbatim: "{QUOTE}"',
        'Keep verbatim: "Be good."',
    ]
    assert lines[lines.index("<draft>") + 1 : lines.index("</draft>")] == [draft]
    assert ABOUT_WORDS.findall("\n".join(lines))[-1] == "300"


@pytest.mark.parametrize(
    ("words", "says"),
    [(200, "too short: continue and expand"), (400, "too long: condense"), (305, "keep it")],
)
def test_the_revise_prompt_says_which_way_the_length_is_off(words: int, says: str) -> None:
    text = prompts.revise_prompt(brief(), " ".join(["word"] * words), Revision(300))

    assert f"The draft has {words} words" in text
    assert says in text


def test_the_proofread_prompt_keeps_the_quotes() -> None:
    draft = "one two three four five"

    proof = prompts.proofread_prompt(brief(quotes=(QUOTE,)), draft)

    assert proof.startswith("Proofread")
    assert draft in proof
    assert "Hindi" in proof
    assert f'Keep verbatim: "{QUOTE}"' in proof.splitlines()
    assert ABOUT_WORDS.findall(proof)[-1] == "5"


def test_the_prompt_version_is_dated() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}\.\d+", prompts.PROMPT_VERSION)
    assert prompts.PROMPT_VERSION > "2026-12-08.1"


def test_the_continue_prompt_asks_for_the_rest() -> None:
    assert ABOUT_WORDS.findall(prompts.continue_prompt(80))[-1] == "80"
    assert ABOUT_WORDS.findall(prompts.continue_prompt(-5))[-1] == "20"


def test_the_plan_prompt_and_schema() -> None:
    text = prompts.plan_prompt("T", "the page's text", ImageStyle.REALISTIC)

    assert "the page's text" in text
    assert prompts.STYLE_WORDING[ImageStyle.REALISTIC] in text
    assert prompts.plan_schema()["required"] == ["prompt"]
    assert "English" in prompts.plan_system()


def test_image_prompts_differ_by_style_and_reference() -> None:
    texts = {s: prompts.image_prompt("A kite", s, has_reference=False) for s in ImageStyle}

    assert len(set(texts.values())) == len(ImageStyle)
    assert all("A kite" in t and "Do not draw any words" in t for t in texts.values())
    with_reference = prompts.image_prompt("A kite", ImageStyle.ARTISTIC, has_reference=True)
    assert "looking the same" in with_reference
    assert "looking the same" not in texts[ImageStyle.ARTISTIC]

"""The Gemini fake's prose answers and its scripted misbehaviour, through the real
google-genai SDK (and GoogleWriter) over HTTP, so the flow's tests can trust them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from google import genai
from google.genai import types

from storyloom import prompts
from storyloom.chapters import split_sentences
from storyloom.models import Audience, ImageStyle, Tone
from storyloom.providers.base import ImageRequest, Revision, SectionBrief
from storyloom.providers.google import GoogleIllustrator, GoogleWriter, make_client
from storyloom.writing import count_words
from tests.fakes.gemini import (
    ALTERED_WORD,
    INVENTED,
    INVENTED_CITY,
    INVENTED_NAME,
    INVENTED_SENTENCE,
    INVENTED_YEAR,
    LONG_SHARE,
    SHORT_SHARE,
    GeminiRequest,
    GeminiState,
    Misbehave,
    gemini_fake,
    guess_facts,
    prompt_kind,
)
from tests.fakes.server import Fault

KEY = "fake-test-key"
TEXT_MODEL = "gemini-2.5-flash"
QUOTE = "Work hard, be kind."
FIRST = "I was born in Pune in 1950."
MATERIAL = (
    f"{FIRST} My father ran a tea stall by the station.\n\n"
    f'He always said, "{QUOTE}" We had two cows and a bicycle.'
)
FACTS = ("Pune", "1950")


def brief(**changes: Any) -> SectionBrief:
    values: dict[str, Any] = {
        "story_id": "asha",
        "title": "Asha's Life",
        "kind": "life",
        "language": "en-IN",
        "key": "childhood",
        "heading": "Childhood",
        "material": MATERIAL,
        "target_words": 150,
        "tone": Tone.WARM,
        "audience": Audience.FAMILY,
        "position": 2,
        "of": 7,
        "facts": FACTS,
        "quotes": (QUOTE,),
    }
    values.update(changes)
    return SectionBrief(**values)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, GeminiState]]:
    with gemini_fake(api_key=KEY) as served:
        yield served


@pytest.fixture
def state(server: tuple[str, GeminiState], monkeypatch: pytest.MonkeyPatch) -> GeminiState:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server[1].reset()
    return server[1]


@pytest.fixture
def client(server: tuple[str, GeminiState], state: GeminiState) -> genai.Client:
    return make_client(KEY, server[0], "v1beta", timeout_seconds=10)


@pytest.fixture
def writer(client: genai.Client) -> GoogleWriter:
    return GoogleWriter(client, TEXT_MODEL)


def material_sentences() -> list[str]:
    return split_sentences(MATERIAL)


def well_behaved(writer: GoogleWriter, state: GeminiState, section: SectionBrief) -> str:
    """The answer the fake gives this brief when nothing is scripted (then forgotten)."""
    text = writer.write_section(section).text
    state.reset()
    return text


# ------------------------------------------------------------ well behaved


def test_a_section_weaves_the_material_into_exactly_the_words_asked(
    writer: GoogleWriter, state: GeminiState
) -> None:
    text = writer.write_section(brief(target_words=150)).text

    assert count_words(text) == 150
    positions = [text.index(s) for s in material_sentences()]
    assert positions == sorted(positions)  # every material sentence, in order
    assert all(fact in text for fact in FACTS)
    assert f'"{QUOTE}"' in text
    assert "\n\n" in text
    (request,) = state.requests
    assert (request.kind, request.behaviour, request.asked_words) == ("section", frozenset(), 150)


def test_the_fakes_filler_invents_no_fact(writer: GoogleWriter, state: GeminiState) -> None:
    text = writer.write_section(brief(material="", facts=(), quotes=(), target_words=300)).text

    assert count_words(text) == 300
    assert [s for s in split_sentences(text) if guess_facts(s)] == []


def test_a_listed_fact_the_material_lacks_gets_a_sentence(writer: GoogleWriter) -> None:
    text = writer.write_section(brief(facts=(*FACTS, "Nashik"), quotes=(QUOTE, "Be brave."))).text

    assert "Nashik" in text
    assert '"Be brave."' in text
    assert count_words(text) == 150


def test_a_section_longer_than_asked_keeps_its_facts_first(writer: GoogleWriter) -> None:
    text = writer.write_section(brief(target_words=20)).text

    assert count_words(text) == 20
    assert FIRST in text
    assert f'"{QUOTE}"' in text


def test_when_the_facts_alone_are_too_long_the_words_around_them_go(
    writer: GoogleWriter,
) -> None:
    material = "I was born in Pune in 1950. My father Ramesh ran a tea stall in Lucknow."
    facts = ("Pune", "1950", "Ramesh", "Lucknow")

    section = brief(material=material, facts=facts, quotes=(), target_words=10)
    text = writer.write_section(section).text

    assert count_words(text) == 10
    assert all(fact in text for fact in facts)


def test_proofread_answers_the_text_as_it_is(writer: GoogleWriter, state: GeminiState) -> None:
    text = well_behaved(writer, state, brief())

    assert writer.proofread(brief(), text).text == text
    assert state.kinds() == ["proofread"]
    assert state.requests[0].asked_words == count_words(text)


def test_revise_lengthens_and_shortens_to_the_target_keeping_the_facts(
    writer: GoogleWriter, state: GeminiState
) -> None:
    draft = well_behaved(writer, state, brief(target_words=150))

    longer = writer.revise(brief(), draft, Revision(target_words=240, quotes=(QUOTE,))).text
    shorter = writer.revise(brief(), draft, Revision(target_words=60, quotes=(QUOTE,))).text

    assert count_words(longer) == 240
    assert count_words(shorter) == 60
    for text in (longer, shorter):
        assert FIRST in text
        assert f'"{QUOTE}"' in text
    assert state.kinds() == ["revise", "revise"]


def test_revise_takes_out_what_it_is_told_and_restores_from_the_material(
    writer: GoogleWriter,
) -> None:
    # "Lisbon" sits in a sentence with a fact to keep: only the word goes from that one.
    draft = (
        "My father ran a tea stall by the station. We had two cows and a bicycle in Lisbon, "
        f"in Pune. {INVENTED_SENTENCE} The evenings in Lisboners' street were long."
    )
    revision = Revision(target_words=80, remove=INVENTED, restore=("1950",), quotes=(QUOTE,))

    text = writer.revise(brief(), draft, revision).text

    assert [item for item in INVENTED if re.search(rf"\b{item}\b", text)] == []
    assert "Uncle" not in text  # the sentence went whole
    assert "Lisboners' street" in text  # a whole word only
    assert "We had two cows and a bicycle in, in Pune." in text
    assert FIRST in text  # restored: the material's sentence holding 1950
    assert text.index(FIRST) < text.index("tea stall")  # where the material has it
    assert f'"{QUOTE}"' in text


def test_revise_mends_a_quote_changed_by_one_word(writer: GoogleWriter) -> None:
    draft = 'My father ran a tea stall. He always said, "Work hard, be good." It rained.'

    text = writer.revise(brief(), draft, Revision(target_words=60, quotes=(QUOTE,))).text

    assert f'He always said, "{QUOTE}"' in text
    assert "be good" not in text


# ------------------------------------------------------------- misbehaving


def test_short_is_forty_percent_under(writer: GoogleWriter, state: GeminiState) -> None:
    state.script_text(Misbehave.SHORT)

    text = writer.write_section(brief(target_words=200)).text

    assert count_words(text) == round(200 * SHORT_SHARE) == 120
    assert FIRST in text  # filler goes first: the facts stay
    assert state.requests[0].behaviour == {Misbehave.SHORT}


def test_long_is_thirty_percent_over(writer: GoogleWriter, state: GeminiState) -> None:
    state.script_text(Misbehave.LONG)

    text = writer.write_section(brief(target_words=200)).text

    assert count_words(text) == round(200 * LONG_SHARE) == 260
    assert FIRST in text


def test_cut_stops_half_way_with_max_tokens_and_the_rest_follows(
    writer: GoogleWriter, state: GeminiState, client: genai.Client
) -> None:
    section = brief(target_words=200)
    whole = well_behaved(writer, state, section)
    state.script_text(Misbehave.CUT)

    response = client.models.generate_content(
        model=TEXT_MODEL, contents=prompts.section_prompt(section)
    )

    candidate = (response.candidates or [])[0]
    assert str(getattr(candidate.finish_reason, "value", "")) == "MAX_TOKENS"
    partial = response.text or ""
    assert whole.startswith(partial)
    assert 0.35 < len(partial) / len(whole) <= 0.5
    assert not partial[-1].isspace()  # cut at a word, not inside one
    assert whole[len(partial)].isspace()


def test_invent_adds_the_invented_sentence_and_keeps_the_length(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.script_text(Misbehave.INVENT)

    text = writer.write_section(brief()).text

    invented = f"{INVENTED_NAME} came back from {INVENTED_CITY} in {INVENTED_YEAR}."
    assert invented in text
    assert invented == INVENTED_SENTENCE
    assert count_words(text) == 150
    assert all(s in text for s in material_sentences())


def test_drop_leaves_out_the_sentence_with_the_first_fact(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.script_text(Misbehave.DROP)

    text = writer.write_section(brief()).text

    assert FIRST not in text
    assert "Pune" not in text
    assert "1950" not in text
    assert "tea stall" in text  # only that sentence
    assert count_words(text) == 150
    assert state.requests[0].dropped == FACTS


def test_drop_guesses_the_facts_when_the_prompt_lists_none(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.script_text(Misbehave.DROP)

    text = writer.write_section(brief(facts=(), quotes=())).text

    assert "Pune" not in text
    assert state.requests[0].dropped == ("1950", "Pune")


def test_alter_quote_changes_one_word_of_the_first_quote(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.script_text(Misbehave.ALTER_QUOTE)

    text = writer.write_section(brief()).text

    assert QUOTE not in text
    assert '"Never hard, be kind."' in text
    assert state.requests[0].altered == (QUOTE, "Never hard, be kind.")
    assert ALTERED_WORD == "never"
    assert count_words(text) == 150


def test_behaviours_combine(writer: GoogleWriter, state: GeminiState) -> None:
    state.script_text({Misbehave.SHORT, Misbehave.INVENT, Misbehave.ALTER_QUOTE})

    text = writer.write_section(brief(target_words=200)).text

    assert count_words(text) == 120
    assert INVENTED_SENTENCE in text
    assert QUOTE not in text


def test_short_and_long_at_once_is_a_test_bug(state: GeminiState) -> None:
    with pytest.raises(ValueError, match="SHORT and LONG"):
        state.script_text((Misbehave.SHORT, Misbehave.LONG))
    with pytest.raises(ValueError, match="prose"):
        state.script_text(Misbehave.SHORT, kind="plan")


def test_a_cut_misbehaving_answer_continues_with_its_own_rest(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.script_text({Misbehave.CUT, Misbehave.INVENT})

    text = writer.write_section(brief()).text

    assert INVENTED_SENTENCE in text
    assert count_words(text) == 150
    assert state.kinds() == ["section", "continue"]
    assert state.requests[1].behaviour == frozenset()


# --------------------------------------------------------------- scripting


def test_the_script_goes_one_entry_per_prose_call_in_order(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.script_text(Misbehave.SHORT, None, Misbehave.LONG)
    state.text_behaviour = Misbehave.INVENT  # after the script runs out

    lengths = [count_words(writer.write_section(brief(target_words=100)).text) for _ in range(4)]

    assert lengths == [60, 100, 130, 100]
    assert [r.behaviour for r in state.requests] == [
        {Misbehave.SHORT},
        frozenset(),
        {Misbehave.LONG},
        {Misbehave.INVENT},
    ]
    assert state.text_script == type(state.text_script)()


def test_a_persistent_behaviour_makes_every_revision_miss(
    writer: GoogleWriter, state: GeminiState
) -> None:
    # What a flow's bounded retries meet: a model that never reaches the length.
    state.text_behaviour = Misbehave.SHORT
    text = writer.write_section(brief(target_words=100)).text
    for _ in range(3):
        text = writer.revise(brief(), text, Revision(target_words=100)).text
        assert count_words(text) == 60

    assert state.kinds() == ["section", "revise", "revise", "revise"]


def test_a_script_entry_waits_for_its_kind_and_its_prompt(
    writer: GoogleWriter, state: GeminiState
) -> None:
    state.script_text(Misbehave.SHORT, kind="revise")
    state.script_text(Misbehave.LONG, contains="Section 5 of 7")

    first = writer.write_section(brief(target_words=100)).text
    fifth = writer.write_section(brief(target_words=100, position=5)).text
    revised = writer.revise(brief(), first, Revision(target_words=100)).text

    assert [count_words(t) for t in (first, fifth, revised)] == [100, 130, 60]


def test_misbehave_always_can_pick_a_kind(writer: GoogleWriter, state: GeminiState) -> None:
    state.misbehave_always(Misbehave.LONG, kind="proofread")

    text = writer.write_section(brief(target_words=100)).text
    proofread = writer.proofread(brief(), text).text

    assert count_words(text) == 100
    assert count_words(proofread) == 130
    state.misbehave_always(None)
    assert writer.proofread(brief(), text).text == text


def test_json_image_and_failed_calls_take_no_script_entry(
    writer: GoogleWriter, client: genai.Client, state: GeminiState
) -> None:
    state.script_text(Misbehave.SHORT)
    writer.plan_illustration("T", "page", ImageStyle.ARTISTIC)
    GoogleIllustrator(client, "gemini-3.1-flash-image").draw(ImageRequest("x", ImageStyle.ARTISTIC))
    state.schedule(Fault(status=503))
    with pytest.raises(Exception, match="503"):
        writer.write_section(brief(target_words=100))

    text = writer.write_section(brief(target_words=100)).text

    assert count_words(text) == 60
    assert state.kinds() == ["plan", "image", "section"]
    assert [r.behaviour for r in state.requests] == [frozenset(), frozenset(), {Misbehave.SHORT}]
    assert [r.kind for r in state.prose_requests()] == ["section"]


def test_reset_forgets_the_script(state: GeminiState) -> None:
    state.script_text(Misbehave.SHORT)
    state.text_behaviour = Misbehave.LONG

    state.reset()

    assert not state.text_script
    assert state.text_behaviour is None


def test_a_continuation_of_a_text_it_did_not_cut_is_filler_of_the_words_asked(
    client: genai.Client, state: GeminiState
) -> None:
    contents = [
        types.Content(role=role, parts=[types.Part.from_text(text=text)])
        for role, text in [
            ("user", "Write about 100 words."),
            ("model", "Something the fake never wrote"),
            ("user", prompts.continue_prompt(40)),
        ]
    ]

    response = client.models.generate_content(model=TEXT_MODEL, contents=contents)

    assert count_words(response.text or "") == 40
    assert state.kinds() == ["continue"]


# ------------------------------------------------------------------- kinds


def test_every_prompt_has_its_kind() -> None:
    section = brief()
    assert prompt_kind(prompts.section_prompt(section)) == "section"
    assert prompt_kind(prompts.section_prompt(brief(material=""))) == "section"
    assert prompt_kind(prompts.revise_prompt(section, "x", Revision(10))) == "revise"
    assert prompt_kind(prompts.proofread_prompt(section, "x")) == "proofread"
    assert prompt_kind(prompts.continue_prompt(10)) == "continue"
    assert prompt_kind("Write about 5 words.") == "text"


def test_a_logged_calls_kind_can_be_read_from_its_body(
    writer: GoogleWriter, state: GeminiState
) -> None:
    writer.write_section(brief())
    writer.plan_illustration("T", "page", ImageStyle.ARTISTIC)

    kinds = [GeminiRequest("", "", {}, json.loads(c.body)).kind for c in state.calls]

    assert kinds == ["section", "plan"]


def test_the_fakes_prompt_reading_matches_the_prompts(state: GeminiState) -> None:
    # The fake parses these lines: a change of format in prompts.py must show up here.
    text = prompts.revise_prompt(
        brief(), "Draft.", Revision(80, remove=("Lisbon",), restore=("Pune",), quotes=(QUOTE,))
    )

    assert re.search(r"^Remove: Lisbon$", text, re.M)
    assert re.search(r"^Restore: Pune$", text, re.M)
    assert re.search(rf'^Keep verbatim: "{re.escape(QUOTE)}"$', text, re.M)
    assert re.search(r"^Keep fact: 1950$", text, re.M)
    assert "<material>" in text
    assert "<draft>\nDraft.\n</draft>" in text


def test_what_the_flow_does_mends_each_misbehaviour(
    writer: GoogleWriter, state: GeminiState
) -> None:
    # The loop the story flow runs: write, check, revise with what the check found.
    state.script_text({Misbehave.DROP, Misbehave.INVENT, Misbehave.ALTER_QUOTE, Misbehave.LONG})
    draft = writer.write_section(brief(target_words=100)).text
    assert count_words(draft) == 130

    fixed = writer.revise(
        brief(),
        draft,
        Revision(target_words=100, remove=INVENTED, restore=FACTS, quotes=(QUOTE,)),
    ).text

    assert count_words(fixed) == 100
    assert all(fact in fixed for fact in FACTS)
    assert INVENTED_CITY not in fixed
    assert f'"{QUOTE}"' in fixed
    assert state.kinds() == ["section", "revise"]

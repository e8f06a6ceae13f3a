"""The offline providers: a deterministic writer, a Pillow illustrator, eSpeak NG speech."""

from __future__ import annotations

import array
import io
import re
import threading
import wave
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageDraw

from storyloom.audio import wav_duration
from storyloom.chapters import split_sentences
from storyloom.models import (
    LANGUAGES,
    Audience,
    CreativeStory,
    ImageStyle,
    Language,
    LifeStage,
    LifeStory,
    Tone,
    parse_story,
)
from storyloom.providers.base import (
    Illustrator,
    ImageRequest,
    Revision,
    SectionBrief,
    Speaker,
    Translator,
    Writer,
)
from storyloom.providers.errors import PermanentError
from storyloom.providers.offline import (
    _BANKS,
    OfflineIllustrator,
    OfflineSpeaker,
    OfflineTranslator,
    OfflineWriter,
)
from storyloom.writing import count_words, paginate_sections, plan_sections

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SAMPLES = Path(__file__).parents[2] / "storyloom" / "samples"

MEMORIES = [
    "I was born in Nashik in 1948. My father ran a small cloth shop near the Kala Ram temple.",
    "Every monsoon the Godavari rose and we watched it from the roof. My mother sang while "
    "she cooked, and my brother Vinod counted the boats.",
    "In 1961 we moved to Pune by train.",
]
HINDI_MEMORIES = [
    "मेरा जन्म नासिक में हुआ। पिताजी की कपड़े की दुकान थी।",
    "बरसात में नदी उफनती थी और हम छत से देखते थे।",
]
SPOKEN: dict[Language, str] = {
    "hi-IN": "मेरी दादी नदी के पास एक छोटे से गाँव में रहती थीं।",
    "ta-IN": "என் பாட்டி ஆற்றின் அருகே ஒரு சிறிய கிராமத்தில் வாழ்ந்தார்.",
    "en-IN": "My grandmother lived in a small village near the river.",
}


def words(text: str) -> int:
    return len(text.split())


def brief(**changes: Any) -> SectionBrief:
    values: dict[str, Any] = {
        "story_id": "asha",
        "title": "A Life by the River",
        "kind": "life",
        "language": "en-IN",
        "key": "origins",
        "heading": "",
        "material": "\n\n".join(MEMORIES),
        "target_words": 250,
        "tone": Tone.WARM,
        "audience": Audience.FAMILY,
        "position": 2,
        "of": 7,
    }
    values.update(changes)
    return SectionBrief(**values)


def memory_sentences(memories: list[str], stop: str = ".") -> list[str]:
    return [s.strip() + ("" if s.strip().endswith(stop) else stop)
            for m in memories for s in m.split(stop) if s.strip()]  # fmt: skip


# --- the writer ----------------------------------------------------------------------


def test_the_offline_classes_satisfy_the_protocols() -> None:
    assert isinstance(OfflineWriter(), Writer)
    assert isinstance(OfflineIllustrator(), Illustrator)
    assert isinstance(OfflineSpeaker(), Speaker)
    assert isinstance(OfflineTranslator(), Translator)


NOTE_SHORT = "Drafted by the storyloom offline writer."
NOTES = {
    getattr(b, n) for b in _BANKS.values() for n in ("note_life", "note_creative", "note_short")
}


def teller_words(b: SectionBrief) -> int:
    """The words the offline writer cannot go below: the material (and section 1's note)."""
    floor = count_words(b.material)
    if b.position == 1:
        long = _BANKS["en"].note_life  # when 20 words are left beside it, else the short one
        note = NOTE_SHORT if b.target_words - floor < count_words(long) + 20 else long
        floor += count_words(note)
    return floor


def on_target(actual: int, target: int) -> bool:
    # Exact, but for fewer than four words to go when the text is already within 5%:
    # only one-word sentences ("Indeed.") would fill that, and they are not worth it.
    return actual == target or (0 < target - actual < 4 and target - actual <= 0.05 * target)


@pytest.mark.parametrize("target", [5, 12, 37, 60, 98, 99, 120, 250, 499, 900, 2000])
@pytest.mark.parametrize("position", [1, 3])
def test_write_section_hits_the_target_when_the_material_fits(target: int, position: int) -> None:
    b = brief(target_words=target, position=position)
    written = OfflineWriter().write_section(b)
    if target >= teller_words(b):
        assert on_target(count_words(written.text), target)
    else:  # the teller's words (and the note) alone, longer than asked
        assert count_words(written.text) == teller_words(b)
    assert written.usage.provider == "offline"


@pytest.mark.parametrize("language", ["hi-IN", "en-IN"])
@pytest.mark.parametrize("position", [1, 2])
def test_small_targets_are_hit_exactly_once_the_material_fits(
    language: Language, position: int
) -> None:
    writer = OfflineWriter()
    memory = "मैं नदी के पास बड़ी हुई।" if language == "hi-IN" else "Asha grew up by the river."
    note = 0 if position > 1 else count_words(_bank_note(language))
    floor = count_words(memory) + note
    for target in range(1, 81):
        b = brief(language=language, position=position, target_words=target, material=memory)
        got = count_words(writer.write_section(b).text)
        assert got == max(target, floor) or on_target(got, target), target


def _bank_note(language: Language) -> str:
    return _BANKS["hi" if language == "hi-IN" else "en"].note_short


@pytest.mark.parametrize("language", ["hi-IN", "ta-IN", "en-IN"])
@pytest.mark.parametrize("tone", list(Tone))
@pytest.mark.parametrize("audience", list(Audience))
def test_every_tone_audience_and_language_hits_the_target(
    language: Language, tone: Tone, audience: Audience
) -> None:
    b = brief(
        language=language, tone=tone, audience=audience,
        material="\n\n".join(HINDI_MEMORIES), target_words=333,
    )  # fmt: skip
    assert count_words(OfflineWriter().write_section(b).text) == 333


def test_write_section_is_deterministic_and_depends_on_the_brief() -> None:
    writer = OfflineWriter()
    first = writer.write_section(brief()).text
    assert writer.write_section(brief()).text == first
    assert OfflineWriter().write_section(brief()).text == first
    assert writer.write_section(brief(story_id="ravi")).text != first
    assert writer.write_section(brief(tone=Tone.HUMOROUS)).text != first


def test_the_first_section_says_the_offline_writer_drafted_it_after_the_teller() -> None:
    writer = OfflineWriter()
    first = writer.write_section(brief(position=1)).text
    later = writer.write_section(brief(position=2)).text
    assert first.startswith(MEMORIES[0])
    assert first.count("storyloom offline writer") == 1
    assert "storyloom" not in later
    hindi = writer.write_section(brief(position=1, language="hi-IN")).text
    assert hindi.startswith(MEMORIES[0])
    assert hindi.count("offline writer") == 1
    assert "storyloom" in hindi
    creative = writer.write_section(brief(position=1, kind="creative", key="part-1")).text
    assert "offline writer, which keeps the words it was given" in creative


def material_run(text: str, material: list[str]) -> tuple[int, list[str]]:
    """Where the teller's sentences start among the text's sentences, and the sentences."""
    sentences = split_sentences(text)
    return sentences.index(material[0]), sentences


@pytest.mark.parametrize("target", [20, 100, 300, 1200])
@pytest.mark.parametrize("position", [1, 4])
def test_every_material_sentence_comes_once_in_order_and_first(target: int, position: int) -> None:
    b = brief(position=position, target_words=target, came_before=MEMORIES[2])
    text = OfflineWriter().write_section(b).text
    material = memory_sentences(MEMORIES)
    start, sentences = material_run(text, material)
    assert start == (1 if position > 1 and target >= 100 else 0)
    if start:
        assert count_words(sentences[0]) <= 15  # one short connective at most
    assert sentences[start : start + len(material)] == material
    for sentence in material:
        assert sentences.count(sentence) == 1


def test_the_text_is_in_paragraphs_and_in_the_story_language() -> None:
    english = OfflineWriter().write_section(brief(target_words=400)).text
    paragraphs = english.split("\n\n")
    assert len(paragraphs) >= 5  # each memory its own, then the connective ones
    assert all(p.strip() == p and p for p in paragraphs)
    assert paragraphs[1] == MEMORIES[1]

    hindi_brief = brief(language="hi-IN", material="\n\n".join(HINDI_MEMORIES), target_words=200)
    hindi = OfflineWriter().write_section(hindi_brief).text
    for sentence in memory_sentences(HINDI_MEMORIES, "।"):
        assert sentence in hindi
    latin = sum(c.isascii() and c.isalpha() for c in hindi)
    assert latin == 0, "a Hindi section is woven with Hindi sentences"

    tamil_brief = brief(language="ta-IN", material="என் பாட்டி கிராமத்தில் வாழ்ந்தார்.")
    tamil = OfflineWriter().write_section(tamil_brief).text
    assert "என் பாட்டி கிராமத்தில் வாழ்ந்தார்." in tamil
    assert "the" in tamil.lower().split(), "other languages fall back to English connectives"


POS = range(1, 8)


def test_tone_and_audience_choose_different_sentences() -> None:
    writer = OfflineWriter()
    warm = set(split_sentences(writer.write_section(brief(tone=Tone.WARM)).text))
    humorous = set(split_sentences(writer.write_section(brief(tone=Tone.HUMOROUS)).text))
    assert len(warm - humorous) > 10
    children = [writer.write_section(brief(audience=Audience.CHILDREN, position=p)) for p in POS]
    family = [writer.write_section(brief(audience=Audience.FAMILY, position=p)) for p in POS]
    # The children's bank asks the reader questions; the others never do.
    assert sum("?" in w.text for w in children) >= 5
    assert not any("?" in w.text for w in family)


@pytest.mark.parametrize("bank", ["en", "hi"])
def test_every_tone_and_audience_has_its_own_sentences_in_both_banks(bank: str) -> None:
    connectives = _BANKS[bank]
    for tone in Tone:
        assert len(connectives.tone[tone]) >= 8, tone
        assert len(connectives.tone_clauses[tone]) >= 5, tone
    for audience in Audience:
        assert len(connectives.audience[audience]) >= 6, audience
        assert len(connectives.audience_clauses[audience]) >= 3, audience
    language: Language = "hi-IN" if bank == "hi" else "en-IN"
    writer = OfflineWriter()
    for tone in Tone:
        b = brief(language=language, tone=tone, target_words=400)
        sentences = set(split_sentences(writer.write_section(b).text))
        assert sentences & set(connectives.tone[tone]), tone
    for audience in Audience:
        b = brief(language=language, audience=audience, target_words=400)
        sentences = set(split_sentences(writer.write_section(b).text))
        assert sentences & set(connectives.audience[audience]), audience


@pytest.mark.parametrize("bank", ["en", "hi"])
def test_bank_sentences_are_plain_and_survive_the_proofread(bank: str) -> None:
    # No apostrophes, hyphens or digits (every word counter agrees; no fact is invented),
    # and the grammar pass has nothing to change in them.
    connectives = _BANKS[bank]
    language: Language = "hi-IN" if bank == "hi" else "en-IN"
    sentences = {s for t in Tone for a in Audience for s in connectives.combinations(t, a)}
    sentences |= set(connectives.general + connectives.tiny + connectives.endings)
    for group in (*connectives.tone.values(), *connectives.audience.values()):
        sentences |= set(group)
    assert len(sentences) > 800
    writer = OfflineWriter()
    for sentence in sentences:
        assert not any(ch in "'’-" or ch.isdigit() for ch in sentence), sentence
        assert split_sentences(sentence) == [sentence]
        assert writer.proofread(brief(language=language), sentence).text == sentence


def test_memory_longer_than_the_target_is_kept_whole() -> None:
    long_memory = " ".join(f"On day {n} we walked to the river and back." for n in range(60))
    text = OfflineWriter().write_section(brief(material=long_memory, target_words=100)).text
    assert text == long_memory  # nothing dropped, nothing added: 600 words for 100
    first = OfflineWriter().write_section(brief(material=long_memory, position=1)).text
    assert first.startswith("On day 0")
    assert count_words(first) == 600 + count_words(NOTE_SHORT)


def test_continuity_quotes_the_neighbours_without_their_facts() -> None:
    b = brief(
        position=3, target_words=400,
        came_before="We lived near the Kala Ram temple. My mother sang while she cooked.",
        comes_next="In 1961 we moved to Pune by train. Later my brother Vinod found work there.",
    )  # fmt: skip
    sentences = split_sentences(OfflineWriter().write_section(b).text)
    assert "“My mother sang while she cooked”" in sentences[0]
    assert "“Later my brother”" in sentences[-1]  # not "1961", not "Vinod"
    last = OfflineWriter().write_section(replace(b, position=7, of=7))
    assert split_sentences(last.text)[-1] in _BANKS["en"].endings


# --- revise ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", [120, 200, 300, 400, 800])
def test_revise_reaches_the_target_from_above_and_below(target: int) -> None:
    writer = OfflineWriter()
    b = brief(target_words=target)
    material = memory_sentences(MEMORIES)
    for draft_words in (target // 2 + 60, target * 3 // 2):
        draft = writer.write_section(brief(target_words=draft_words)).text
        revised = writer.revise(b, draft, Revision(target_words=target)).text
        assert abs(count_words(revised) - target) <= 0.05 * target
        assert on_target(count_words(revised), target)
        start, sentences = material_run(revised, material)
        assert sentences[start : start + len(material)] == material  # the teller's stay
        again = writer.revise(b, draft, Revision(target_words=target)).text
        assert again == revised


def test_revise_never_drops_the_teller_and_leaves_a_text_that_fits() -> None:
    writer = OfflineWriter()
    text = writer.write_section(brief(target_words=300)).text
    assert writer.revise(brief(), text, Revision(target_words=310)).text == text
    squeezed = writer.revise(brief(), text, Revision(target_words=20)).text
    material = memory_sentences(MEMORIES)
    assert split_sentences(squeezed) == material  # every connective went, no teller's word
    short = "Asha grew up by the river.\n\nShe learned to swim before she could read."
    padded = writer.revise(brief(target_words=150), short, Revision(target_words=150)).text
    assert count_words(padded) == 150
    assert padded.startswith(short + "\n\n")


def test_revise_restores_a_dropped_fact_and_a_quote_in_the_teller_order() -> None:
    writer = OfflineWriter()
    material = [
        "I was born in Nashik in 1948.",
        "My grandmother always said, “Eat first. Argue later.”",
        "In 1961 we moved to Pune by train.",
    ]
    b = brief(material="\n\n".join(material), target_words=150)
    text = writer.write_section(b).text
    dropped = text.replace(material[2], "").replace(material[1], "")
    assert "Pune" not in dropped
    assert "Argue later" not in dropped
    revision = Revision(
        target_words=150, restore=("Pune", "1961"), quotes=("Eat first. Argue later.",)
    )
    revised = writer.revise(b, dropped, revision).text
    sentences = split_sentences(revised)
    assert "“Eat first. Argue later.”" in revised
    at = [revised.index(s) for s in material]
    assert at == sorted(at)
    assert [s for s in sentences if "1961" in s] == [material[2]]
    assert count_words(revised) == 150


def test_revise_puts_back_a_sentence_the_proofread_changed() -> None:
    writer = OfflineWriter()
    text = writer.write_section(brief(target_words=150)).text
    changed = text.replace("my brother Vinod", "My Brother vinod")
    revised = writer.revise(brief(), changed, Revision(150, restore=("my brother Vinod",))).text
    assert revised == text


def test_revise_removes_what_the_teller_never_said() -> None:
    writer = OfflineWriter()
    text = writer.write_section(brief(target_words=200)).text
    invented = text.replace(MEMORIES[1], MEMORIES[1] + " Uncle Bholu came from Delhi in 1950.")
    revision = Revision(target_words=200, remove=("Bholu", "1950"))
    revised = writer.revise(brief(), invented, revision).text
    assert "Bholu" not in revised
    assert "1950" not in revised
    assert count_words(revised) == 200
    # A name the teller did give stays, even when the check asks otherwise.
    kept = writer.revise(brief(), text, Revision(target_words=200, remove=("Vinod",))).text
    assert "my brother Vinod counted the boats" in kept


# --- a whole book from the sample story ------------------------------------------------


def book_briefs(story: LifeStory | CreativeStory, pages: int, **config: Any) -> list[SectionBrief]:
    """The briefs the story flow makes (tasks/writing.py), with their continuity."""
    budgets = plan_sections(story.kind, story.material(), pages, 250)
    memories = [re.split(r"\n\s*\n", b.material) for b in budgets]
    return [
        SectionBrief(
            story_id=story.id,
            title=story.title,
            kind=story.kind,
            language=story.language,
            key=budget.key,
            heading=budget.key,
            material=budget.material,
            target_words=budget.target_words,
            tone=config.get("tone", Tone.WARM),
            audience=config.get("audience", Audience.FAMILY),
            position=i,
            of=len(budgets),
            premise=getattr(story, "premise", ""),
            came_before=memories[i - 2][-1] if i > 1 else "",
            comes_next=memories[i][0] if i < len(budgets) else "",
        )
        for i, budget in enumerate(budgets, start=1)
    ]


def sample(name: str) -> LifeStory | CreativeStory:
    return parse_story((SAMPLES / name).read_bytes())


@pytest.mark.parametrize("pages", [8, 20])
@pytest.mark.parametrize("name", ["life-story.json", "creative-story.json"])
def test_a_sample_book_keeps_every_teller_sentence_and_repeats_nothing(
    pages: int, name: str
) -> None:
    story = sample(name)
    writer = OfflineWriter()
    for tone in Tone:
        for audience in Audience:
            briefs = book_briefs(story, pages, tone=tone, audience=audience)
            texts = [writer.write_section(b).text for b in briefs]
            everything = Counter(s for t in texts for s in split_sentences(t))
            worst = everything.most_common(1)[0]
            assert worst[1] <= 2, (tone, audience, worst)
            for b, text in zip(briefs, texts, strict=True):
                assert count_words(text) == b.target_words, (tone, audience, b.key)
                material = [s for m in _memory_blocks(b.material) for s in split_sentences(m)]
                start, sentences = material_run(text, material)
                assert start == (0 if b.position == 1 else 1)
                # In section 1 the note may come inside the run (within its first page).
                run = [s for s in sentences[start:] if s not in NOTES]
                assert run[: len(material)] == material
                assert all(everything[s] == 1 for s in material)
            notes = sum(t.count("storyloom offline writer") for t in texts)
            assert notes == 1


def _memory_blocks(material: str) -> list[str]:
    return [m for m in re.split(r"\n\s*\n", material) if m.strip()]


def test_the_sample_book_is_mostly_the_teller_and_opens_with_the_teller() -> None:
    story = sample("life-story.json")
    assert isinstance(story, LifeStory)
    briefs = book_briefs(story, 8)
    writer = OfflineWriter()
    texts = [writer.write_section(b).text for b in briefs]
    budgets = plan_sections(story.kind, story.material(), 8, 250)
    pages = paginate_sections(texts, budgets, 250)
    first_memory = story.stages[LifeStage.ORIGINS][0]
    assert pages[0].text.startswith(first_memory)
    assert "storyloom offline writer" in pages[0].text
    teller = sum(count_words(b.material) for b in briefs)
    total = sum(count_words(t) for t in texts)
    assert total == 8 * 250
    assert teller / total >= 0.6
    assert all(250 * 0.85 <= p.words <= 250 * 1.15 for p in pages)
    # The grammar pass finds nothing to fix in the book the demo shows.
    for b, text in zip(briefs, texts, strict=True):
        assert writer.proofread(b, text).text == text


def test_proofread_fixes_spacing_capitals_doubled_words_and_endings() -> None:
    messy = (
        "the the cat sat  on the mat .it was warm,and i was happy\n"
        "and so was Vinod , who had had enough\n\n"
        "we went home   quietly"
    )
    fixed = OfflineWriter().proofread(brief(), messy).text
    assert fixed == (
        "The cat sat on the mat. It was warm, and I was happy and so was Vinod, "
        "who had had enough.\n\nWe went home quietly."
    )


def test_proofread_keeps_the_length_and_leaves_indic_reduplication() -> None:
    writer = OfflineWriter()
    text = writer.write_section(brief(target_words=500)).text
    broken = text.replace(". ", " . ", 5).replace("The ", "the the ", 3).replace("\n\n", "\n \n")
    fixed = writer.proofread(brief(), broken).text
    assert abs(words(fixed) - words(text)) <= 0.01 * words(text)
    assert " ." not in fixed
    assert "the the" not in fixed.lower()

    hindi = "धीरे धीरे बारिश रुकी ।हम बाहर गए"
    fixed_hindi = writer.proofread(brief(language="hi-IN"), hindi).text
    assert fixed_hindi == "धीरे धीरे बारिश रुकी। हम बाहर गए।"
    assert writer.proofread(brief(), fixed).text == fixed  # a second pass changes nothing


def test_plan_illustration_gives_a_scene_prompt_from_the_page_alone() -> None:
    pages = [
        OfflineWriter().write_section(brief(position=1, target_words=120)).text,
        "मेरा जन्म नासिक में हुआ। पिताजी की कपड़े की दुकान थी।",
        "",
    ]
    writer = OfflineWriter()
    plans = [
        writer.plan_illustration("A Life by the River", p, ImageStyle.MINIMALIST) for p in pages
    ]
    prompts = [plan.prompt for plan in plans]
    assert all("minimalist" in p and "A Life by the River" in p for p in prompts)
    assert "storyloom" not in prompts[0]
    assert any(s.rstrip(".") in prompts[0] for s in memory_sentences(MEMORIES))
    assert "पिताजी की कपड़े की दुकान थी" in prompts[1]
    assert all(plan.usage.provider == "offline" for plan in plans)


# --- the illustrator -----------------------------------------------------------------


def draw(prompt: str = "A boy on a roof watching the river rise", **changes: Any) -> Image.Image:
    request = ImageRequest(prompt=prompt, style=changes.pop("style", ImageStyle.ARTISTIC))
    picture = OfflineIllustrator().draw(replace(request, **changes))
    assert picture.data.startswith(PNG_MAGIC)
    assert picture.mime_type == "image/png"
    image = Image.open(io.BytesIO(picture.data))
    assert image.size == (picture.width, picture.height)
    return image.convert("RGB")


@pytest.mark.parametrize(
    ("ratio", "size"),
    [("4:3", (1024, 768)), ("16:9", (1024, 576)), ("1:1", (1024, 1024)), ("3:4", (768, 1024))],
)
def test_the_picture_size_follows_the_aspect_ratio(ratio: str, size: tuple[int, int]) -> None:
    assert draw(aspect_ratio=ratio).size == size


def test_a_bad_aspect_ratio_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="aspect ratio"):
        draw(aspect_ratio="wide")


def colours(image: Image.Image) -> int:
    # The picture without the caption band (its anti-aliased text has many greys).
    body = image.crop((0, 0, image.width, image.height * 9 // 10))
    return len(body.getcolors(maxcolors=1 << 20) or [])


def test_each_style_has_its_own_look() -> None:
    pictures = {style: draw(style=style) for style in ImageStyle}
    for a in ImageStyle:
        for b in ImageStyle:
            if a != b:
                assert ImageChops.difference(pictures[a], pictures[b]).getbbox() is not None
    assert colours(pictures[ImageStyle.MINIMALIST]) <= 4
    assert colours(pictures[ImageStyle.ARTISTIC]) > 100
    realistic = pictures[ImageStyle.REALISTIC]
    top, bottom = realistic.getpixel((5, 5)), realistic.getpixel((5, realistic.height * 8 // 10))
    assert isinstance(top, tuple)
    assert isinstance(bottom, tuple)
    assert top[2] > top[1]
    assert bottom[1] > bottom[2]


def test_pictures_are_deterministic_from_the_prompt() -> None:
    assert draw("a kite").tobytes() == draw("a kite").tobytes()
    assert draw("a kite").tobytes() != draw("a boat").tobytes()


@pytest.mark.parametrize(
    "prompt",
    ["", "नदी के किनारे एक लड़का", "ஆற்றின் அருகே 🌧️ monsoon", "\x00\n\t", "word " * 5000],
)
@pytest.mark.parametrize("style", list(ImageStyle))
def test_any_prompt_text_draws(prompt: str, style: ImageStyle) -> None:
    assert draw(prompt, style=style).size == (1024, 768)


def test_a_reference_picture_lends_its_palette() -> None:
    reference = Image.new("RGB", (400, 300), (30, 60, 160))
    ImageDraw.Draw(reference).rectangle((0, 150, 400, 300), fill=(200, 40, 90))
    buffer = io.BytesIO()
    reference.save(buffer, format="PNG")
    palette = [(30, 60, 160), (200, 40, 90)]

    def closeness(image: Image.Image) -> float:
        small = image.resize((64, 48))
        pixels = [small.getpixel((x, y)) for x in range(64) for y in range(40)]
        return sum(
            min(sum(abs(a - b) for a, b in zip(p, c, strict=True)) for c in palette)
            for p in pixels
            if isinstance(p, tuple)
        ) / len(pixels)

    for style in ImageStyle:
        plain = draw("a kite over the river", style=style)
        related = draw("a kite over the river", style=style, reference_png=buffer.getvalue())
        assert closeness(related) < closeness(plain) / 2, style
    assert draw(reference_png=b"not a png").size == (1024, 768)


# --- the speaker ---------------------------------------------------------------------


def samples(wav: bytes) -> array.array[int]:
    with wave.open(io.BytesIO(wav)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        return array.array("h", reader.readframes(reader.getnframes()))


@pytest.mark.parametrize("language", ["hi-IN", "ta-IN", "en-IN"])
def test_the_speaker_says_real_speech(language: Language) -> None:
    speech = OfflineSpeaker().speak(SPOKEN[language], language)
    assert wav_duration(speech.wav) > 0.5
    pcm = samples(speech.wav)
    assert max(abs(s) for s in pcm) > 2000
    loud = sum(1 for s in pcm if abs(s) > 500)
    assert loud > len(pcm) / 10, "mostly silence"
    assert speech.usage.provider == "offline"
    assert speech.usage.characters == len(SPOKEN[language])


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_story_language_has_a_voice(language: Language) -> None:
    text = "आम। ஆம். হ্যাঁ। అవును. ಹೌದು. അതെ. होय. હા. ਹਾਂ। ହଁ। Yes."
    assert wav_duration(OfflineSpeaker().speak(text, language).wav) > 0.5


def test_longer_text_gives_longer_audio_and_the_estimate_is_close() -> None:
    speaker = OfflineSpeaker()
    for language, text in SPOKEN.items():
        short = wav_duration(speaker.speak(text, language).wav)
        long = wav_duration(speaker.speak(" ".join([text] * 3), language).wav)
        assert long > 2.5 * short
        estimate = speaker.seconds_per_char(language) * len(text) * 3
        assert 0.7 < long / estimate < 1.3, language


def test_the_speaker_refuses_empty_and_too_long_text() -> None:
    speaker = OfflineSpeaker()
    with pytest.raises(PermanentError, match="2500"):
        speaker.speak("a" * 2501, "en-IN")
    with pytest.raises(PermanentError, match="empty"):
        speaker.speak("  \n ", "hi-IN")
    assert wav_duration(speaker.speak("ab " * 833, "en-IN").wav) > 10  # 2499 characters


def test_four_threads_speaking_at_once_all_get_their_own_speech() -> None:
    speaker = OfflineSpeaker()
    jobs: list[tuple[Language, str]] = [
        ("hi-IN", SPOKEN["hi-IN"]),
        ("ta-IN", SPOKEN["ta-IN"]),
        ("en-IN", SPOKEN["en-IN"]),
        ("en-IN", SPOKEN["en-IN"] + " " + SPOKEN["en-IN"]),
    ]
    # eSpeak NG is not bit-exact from one call to the next (a few samples either way),
    # so a result is recognised by its length: mixed or cut buffers would be far off.
    expected = [wav_duration(speaker.speak(text, language).wav) for language, text in jobs]
    results: dict[int, list[float]] = {i: [] for i in range(len(jobs))}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def speak(index: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                wav = speaker.speak(jobs[index][1], jobs[index][0]).wav
                results[index].append(wav_duration(wav))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    for index, seconds in enumerate(expected):
        assert results[index] == pytest.approx([seconds] * 3, rel=0.01)


# --- the translator ------------------------------------------------------------------


def test_the_translator_returns_the_text_unchanged() -> None:
    translator = OfflineTranslator()
    text = "मेरा जन्म नासिक में हुआ।"
    written = translator.translate(text, "hi-IN", "ta-IN")
    assert written.text == text
    assert written.usage.provider == "offline"
    assert written.usage.characters == len(text)
    assert "translat" in translator.name
    with pytest.raises(PermanentError, match="5000"):
        translator.translate("a" * 5001, "en-IN", "hi-IN")

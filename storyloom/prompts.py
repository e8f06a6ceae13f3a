"""Every prompt storyloom sends to a model, and the JSON shapes it asks for, in one place.

Each function is pure: the same inputs give the same text, so a prompt can be part of a
task's cache key and tested without a model. Bump PROMPT_VERSION whenever any text or
schema here changes, so cached results written with the old prompts are not reused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from storyloom.models import Audience, ImageStyle, Language, Tone
from storyloom.providers.base import Revision, SectionBrief
from storyloom.writing import count_words

PROMPT_VERSION = "2026-12-09.1"

LANGUAGE_NAMES: dict[Language, str] = {
    "bn-IN": "Bengali",
    "en-IN": "English (Indian usage)",
    "gu-IN": "Gujarati",
    "hi-IN": "Hindi",
    "kn-IN": "Kannada",
    "ml-IN": "Malayalam",
    "mr-IN": "Marathi",
    "od-IN": "Odia",
    "pa-IN": "Punjabi",
    "ta-IN": "Tamil",
    "te-IN": "Telugu",
}

AUDIENCE_WORDING: dict[Audience, str] = {
    Audience.CHILDREN: "children aged 6 to 10: short sentences, simple everyday words, "
    "nothing frightening",
    Audience.YOUNG_ADULTS: "young adults: lively and direct, never condescending",
    Audience.ADULTS: "adults: rich, precise language and room for nuance",
    Audience.FAMILY: "the whole family, read aloud together: clear for a child, "
    "rewarding for a grandparent",
    Audience.SENIORS: "older readers, often the teller's own generation: unhurried, "
    "clear sentences, familiar words, respect for what they lived through",
}

TONE_WORDING: dict[Tone, str] = {
    Tone.WARM: "warm and affectionate",
    Tone.NOSTALGIC: "nostalgic, lingering on sights, sounds and smells of the past",
    Tone.REFLECTIVE: "reflective and unhurried",
    Tone.JOYFUL: "joyful and bright",
    Tone.HUMOROUS: "gently humorous",
    Tone.INSPIRATIONAL: "inspirational without preaching",
    Tone.FORMAL: "formal and dignified",
    Tone.NARRATIVE: "plain narrative storytelling: events in order, concrete and unadorned",
}

STYLE_WORDING: dict[ImageStyle, str] = {
    ImageStyle.REALISTIC: "a realistic, photographic illustration: natural light, true-to-life "
    "proportions and textures, shallow depth of field",
    ImageStyle.ARTISTIC: "a painterly storybook illustration: soft watercolour and gouache, "
    "visible brush texture, warm harmonious colours",
    ImageStyle.MINIMALIST: "a minimalist flat illustration: a few simple shapes, a limited "
    "palette of three or four colours, generous empty space",
}

# The image models draw words badly and readers get the text on the page anyway.
_NO_TEXT = "Do not draw any words, letters, captions or signatures in the image."
# Marks a quote may already come in (then it is not wrapped again).
_OPENING_QUOTES = '"“„«'
_CLOSING_QUOTES = '"”»'
_SENTENCE_ENDS = ".!?।" + _CLOSING_QUOTES


def language_name(language: Language) -> str:
    """The language's name as a model understands it."""
    return LANGUAGE_NAMES[language]


def writer_system(brief: SectionBrief) -> str:
    """The system instruction for every writing call about this brief's story."""
    language = language_name(brief.language)
    if brief.kind == "life":
        # A life story is someone's testimony: a made-up detail is a falsehood about them.
        truth = (
            "This is a true life story told by the person who lived it. Use only the facts "
            "in their material: never invent names, dates, places, numbers, people or "
            "events, and never change the ones they give. You may describe feelings and "
            "settings only as far as the material implies them."
        )
    else:
        truth = (
            "This is a creative story. Invent freely, but every part must serve the premise, "
            "and names, places and facts must stay consistent from section to section."
        )
    return "\n".join(
        [
            "You are an experienced storybook writer and ghostwriter.",
            truth,
            f"Write in {language}, in its own script, whatever language the material is in.",
            f"Tone: {TONE_WORDING[brief.tone]}.",
            f"Audience: {AUDIENCE_WORDING[brief.audience]}.",
            "Answer with the requested text only: no title unless asked, no notes, no "
            "markdown, no quotation marks around the answer.",
        ]
    )


def _context(brief: SectionBrief) -> list[str]:
    """The lines that place a section in its book.

    Only what stays put when another section's text is rewritten: the title, the premise,
    this section's place and its neighbours' headings, never their written text.
    """
    lines = [
        f'Book: "{brief.title}". Section {brief.position} of {brief.of}: {brief.heading}.',
    ]
    if brief.previous and brief.following:
        lines.append(
            f'It comes after the section "{brief.previous}" and before "{brief.following}".'
        )
    elif brief.following:
        lines.append(f'It opens the book; the next section is "{brief.following}".')
    elif brief.previous:
        lines.append(f'It closes the book, after the section "{brief.previous}".')
    if brief.premise:
        lines.append(f"Premise of the whole story: {brief.premise}")
    if brief.kind == "creative" and brief.of > 1:
        # Each part is written on its own: its place in the arc keeps the parts apart.
        lines.append(
            "Tell only this part of the story: the first part sets up the characters and "
            "their problem, the middle parts develop it, the last part resolves it."
        )
    return lines


def _one_line(text: str) -> str:
    """Text on one line: every instruction below is one line, so a line is one item."""
    return " ".join(text.split())


def _quoted(quote: str) -> str:
    """A quote in double quotation marks, unless it already comes in its own marks."""
    quote = _one_line(quote)
    if len(quote) >= 2 and quote[0] in _OPENING_QUOTES and quote[-1] in _CLOSING_QUOTES:
        return quote
    return f'"{quote}"'


def _continuity(brief: SectionBrief) -> list[str]:
    """Where the story has been and where it goes next (each section is written alone,
    so without these lines a model retells the neighbours' events or jumps ahead)."""
    lines = []
    if brief.came_before:
        told = _then(brief.came_before, "pick up from there without retelling it")
        lines.append(f"The story so far ended with: {told}")
    if brief.comes_next:
        lines.append(
            f"The next section begins with: {_then(brief.comes_next, 'do not tell it here')}"
        )
    return lines


def _then(memory: str, instruction: str) -> str:
    """A neighbour's memory, on one line, followed by what to do with it."""
    memory = _one_line(memory)
    if memory and memory[-1] in _SENTENCE_ENDS:
        return f"{memory} {instruction[0].upper()}{instruction[1:]}."
    return f"{memory}; {instruction}."


def _material(brief: SectionBrief) -> list[str]:
    """The teller's material between <material> tags, so it cannot be mistaken for an
    instruction (and a parser can find exactly where it starts and ends)."""
    if not brief.material.strip():
        return [
            "The teller gave no material for this section: bridge the sections before and "
            "after it gently, inventing no facts."
        ]
    return [
        "The teller's material for this section:",
        "<material>",
        brief.material.strip(),
        "</material>",
    ]


def _keep_lines(facts: Iterable[str], quotes: Iterable[str]) -> list[str]:
    """One `Keep fact:` line per fact and one `Keep verbatim:` line per quote."""
    lines = [f"Keep fact: {_one_line(fact)}" for fact in facts if fact.strip()]
    lines += [f"Keep verbatim: {_quoted(quote)}" for quote in quotes if quote.strip()]
    return lines


def _keep_intro(has_facts: bool, has_quotes: bool) -> list[str]:
    """What the `Keep fact:` and `Keep verbatim:` lines that follow mean."""
    lines = []
    if has_facts:
        lines.append(
            'Each "Keep fact:" line is a name, place, date or number the teller gave: use '
            "it exactly as written."
        )
    if has_quotes:
        lines.append(
            'Each "Keep verbatim:" line holds the teller\'s own words: quote them exactly, '
            "word for word, inside quotation marks, even where they are not grammatical."
        )
    return lines


def section_prompt(brief: SectionBrief) -> str:
    """Ask for one section of about brief.target_words words.

    Continuity lines place the section between its neighbours' memories; the facts and
    quotes the teller gave are listed one a line, because a model keeps what it is told
    to keep far better than what it has to notice in the material itself.
    """
    lines = _context(brief) + _continuity(brief)
    lines += ["", *_material(brief)]
    keep = _keep_lines(brief.facts, brief.quotes)
    if keep:
        lines += ["", *_keep_intro(bool(brief.facts), bool(brief.quotes)), *keep]
    lines += [
        "",
        "Write this section as flowing prose in paragraphs, with no heading. Cover the "
        "material in its order, use every fact it gives and invent none.",
        f"Write about {brief.target_words} words.",
    ]
    return "\n".join(lines)


def revise_prompt(brief: SectionBrief, text: str, revision: Revision) -> str:
    """Ask to rewrite a section: to revision.target_words words, with the facts fixed.

    One instruction per line (`Remove: X`, `Restore: Y`, `Keep fact: Z`, `Keep verbatim:
    "Q"`), explained once above them: a model follows a short checklist more reliably
    than a paragraph, and the lines can be read back by a parser (the test fake does).
    The material comes along so a restored fact can go back where the teller placed it.
    """
    target = revision.target_words
    have = count_words(text)
    dropped = {item.casefold() for item in (*revision.remove, *revision.restore)}
    kept = [fact for fact in brief.facts if fact.casefold() not in dropped]
    quotes = list(dict.fromkeys((*brief.quotes, *revision.quotes)))
    if have < target * 0.95:
        length = (
            f"The draft has {have} words and is too short: continue and expand it to about "
            f"{target} words with detail the material supports (the setting, the people, "
            "what they felt and did), inventing no names, dates, places or numbers."
        )
    elif have > target * 1.05:
        length = (
            f"The draft has {have} words and is too long: condense it to about {target} "
            "words, cutting repetition and description first, never a fact or a quote."
        )
    else:
        length = f"The draft has {have} words: keep it at about {target} words."
    lines = _context(brief) + _continuity(brief)
    lines += ["", *_material(brief), ""]
    lines += [
        "Revise the draft at the end. Apply every instruction line below (Target, "
        "Remove, Restore, Keep fact, Keep verbatim) and change nothing else: keep the "
        "order, the paragraphs, the voice and every other fact.",
        'Each "Remove:" line is a name, date, place or number the teller never gave: take '
        "it out, rewording or dropping what depends on it.",
        'Each "Restore:" line is a fact from the material that the draft lost: put it back '
        "where the material places it.",
        *_keep_intro(bool(kept), bool(quotes)),
        "",
        f"Target: about {target} words.",
        length,
        *(f"Remove: {_one_line(item)}" for item in revision.remove if item.strip()),
        *(f"Restore: {_one_line(item)}" for item in revision.restore if item.strip()),
        *_keep_lines(kept, quotes),
        "",
        "Draft:",
        "<draft>",
        text.strip(),
        "</draft>",
        "",
        f"Answer with the whole revised section only, about {target} words.",
    ]
    return "\n".join(lines)


def proofread_prompt(brief: SectionBrief, text: str) -> str:
    """Ask for the grammar pass: fix grammar and punctuation, keep meaning and length.

    The teller's quotes are listed: a proofreader's instinct is to correct them, and
    they must stay as spoken.
    """
    language = language_name(brief.language)
    lines = [
        f"Proofread this {language} text. Fix grammar, spelling and punctuation only. "
        "Keep the meaning, every fact, the paragraphs, the voice and the length; do not "
        "add or remove content.",
    ]
    if brief.quotes:
        lines += [*_keep_intro(False, True), *_keep_lines((), brief.quotes)]
    lines += [
        "",
        "Text:",
        "<text>",
        text.strip(),
        "</text>",
        "",
        f"Answer with the corrected text, about {count_words(text)} words.",
    ]
    return "\n".join(lines)


def continue_prompt(words_left: int) -> str:
    """Ask the model to carry on a text it stopped in the middle of."""
    return (
        "Your answer was cut off. Continue the text exactly where it stops, without "
        "repeating anything and without any preface, and bring it to a natural end in "
        f"about {max(words_left, 20)} words."
    )


def plan_system() -> str:
    """The system instruction for planning an illustration."""
    # One page at a time, so a page's prompt never changes when another page does; the
    # book's first picture, sent with every later one, keeps the characters the same.
    return (
        "You are the art director of an illustrated storybook. You write prompts for an "
        "image model: each one a single vivid scene, concrete about who is in it, what "
        "they are doing, where, the time of day and the mood. Describe the people as "
        "the text gives them (age, build, hair, clothes). Write the prompt in English "
        "whatever the language of the book."
    )


def plan_prompt(title: str, page_text: str, style: ImageStyle) -> str:
    """Ask for the image prompt of one page, from its text."""
    return "\n".join(
        [
            f'A page of the storybook "{title}" will be illustrated in this style: '
            f"{STYLE_WORDING[style]}.",
            "",
            "Page text:",
            page_text,
            "",
            "Write one image prompt of 40 to 80 words showing the page's most telling "
            "moment. Do not ask for any text in the image.",
            'Answer as JSON: {"prompt": "..."}.',
        ]
    )


def plan_schema() -> dict[str, Any]:
    """The JSON schema of an illustration plan: one prompt."""
    return {
        "type": "object",
        "properties": {"prompt": {"type": "string"}},
        "required": ["prompt"],
    }


def image_prompt(prompt: str, style: ImageStyle, *, has_reference: bool) -> str:
    """The words sent to the image model for one illustration."""
    lines = [f"Draw {STYLE_WORDING[style]}.", "", f"Scene: {prompt}", ""]
    if has_reference:
        # The reference is the book's first picture: later ones must match its people.
        lines.append(
            "The attached image is an earlier illustration from the same book. Keep every "
            "character who appears in both looking the same (face, age, hair, clothes, "
            "colours) and keep the same style; draw a new scene, do not copy its layout."
        )
    lines.append(_NO_TEXT)
    return "\n".join(lines)

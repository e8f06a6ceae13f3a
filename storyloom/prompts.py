"""Every prompt storyloom sends to a model, and the JSON shapes it asks for, in one place.

Each function is pure: the same inputs give the same text, so a prompt can be part of a
task's cache key and tested without a model. Bump PROMPT_VERSION whenever any text or
schema here changes, so cached results written with the old prompts are not reused.
"""

from __future__ import annotations

from typing import Any

from storyloom.models import Audience, ImageStyle, Language, Tone
from storyloom.providers.base import SectionBrief
from storyloom.writing import count_words

PROMPT_VERSION = "2026-12-08.1"

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
}

TONE_WORDING: dict[Tone, str] = {
    Tone.WARM: "warm and affectionate",
    Tone.NOSTALGIC: "nostalgic, lingering on sights, sounds and smells of the past",
    Tone.REFLECTIVE: "reflective and unhurried",
    Tone.JOYFUL: "joyful and bright",
    Tone.HUMOROUS: "gently humorous",
    Tone.INSPIRATIONAL: "inspirational without preaching",
    Tone.FORMAL: "formal and dignified",
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

    Only what stays put when another section is edited: the title, the premise, this
    section's place and its neighbours' headings, never their material or text.
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


def section_prompt(brief: SectionBrief) -> str:
    """Ask for one section of about brief.target_words words."""
    lines = _context(brief)
    lines += [
        "",
        "The teller's material for this section:",
        brief.material or "(none: bridge the sections before and after it gently)",
        "",
        "Write this section as flowing prose in paragraphs, with no heading. Cover the "
        "material in its order, use every fact it gives and invent none.",
        f"Write about {brief.target_words} words.",
    ]
    return "\n".join(lines)


def adjust_prompt(brief: SectionBrief, text: str) -> str:
    """Ask to rewrite a section that missed its length to about brief.target_words words."""
    lines = _context(brief)
    lines += [
        "",
        f"This draft has {count_words(text)} words; it should have about "
        f"{brief.target_words}. Rewrite it to that length: keep every fact, the order "
        "and the voice; expand with detail the material supports, or tighten without "
        "losing facts.",
        "",
        "Draft:",
        text,
        "",
        f"Rewrite it to about {brief.target_words} words.",
    ]
    return "\n".join(lines)


def proofread_prompt(brief: SectionBrief, text: str) -> str:
    """Ask for the grammar pass: fix grammar and punctuation, keep meaning and length."""
    language = language_name(brief.language)
    return "\n".join(
        [
            f"Proofread this {language} text. Fix grammar, spelling and punctuation only. "
            "Keep the meaning, every fact, the paragraphs, the voice and the length; do not "
            "add or remove content.",
            "",
            "Text:",
            text,
            "",
            f"Answer with the corrected text, about {count_words(text)} words.",
        ]
    )


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

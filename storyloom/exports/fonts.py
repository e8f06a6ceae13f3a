"""The fonts the book files use: Noto Sans for Latin text and for each Indic script.

Shipped with the project (storyloom/exports/fonts, SIL Open Font License, see OFL.txt)
so the reader, the EPUB and the PDF show every script the narration languages use on
any machine, with nothing to install. Text is matched to fonts by Unicode block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FONT_DIR = Path(__file__).parent / "fonts"


@dataclass(frozen=True)
class Script:
    name: str  # the font's family suffix: "Devanagari", "Tamil" ...
    first: int  # the Unicode block, inclusive
    last: int

    @property
    def family(self) -> str:
        return f"Noto Sans {self.name}"

    @property
    def regular(self) -> Path:
        return FONT_DIR / f"NotoSans{self.name}-Regular.ttf"


# Indic scripts of the narration languages (Marathi shares Devanagari, Odia is "Oriya").
SCRIPTS: tuple[Script, ...] = (
    Script("Devanagari", 0x0900, 0x097F),
    Script("Bengali", 0x0980, 0x09FF),
    Script("Gurmukhi", 0x0A00, 0x0A7F),
    Script("Gujarati", 0x0A80, 0x0AFF),
    Script("Oriya", 0x0B00, 0x0B7F),
    Script("Tamil", 0x0B80, 0x0BFF),
    Script("Telugu", 0x0C00, 0x0C7F),
    Script("Kannada", 0x0C80, 0x0CFF),
    Script("Malayalam", 0x0D00, 0x0D7F),
)
LATIN_FAMILY = "Noto Sans"
LATIN_REGULAR = FONT_DIR / "NotoSans-Regular.ttf"
LATIN_BOLD = FONT_DIR / "NotoSans-Bold.ttf"

_BY_LANGUAGE = {
    "hi-IN": "Devanagari",
    "mr-IN": "Devanagari",
    "bn-IN": "Bengali",
    "pa-IN": "Gurmukhi",
    "gu-IN": "Gujarati",
    "od-IN": "Oriya",
    "ta-IN": "Tamil",
    "te-IN": "Telugu",
    "kn-IN": "Kannada",
    "ml-IN": "Malayalam",
}


def script_of(char: str) -> Script | None:
    """The Indic script a character belongs to; None for Latin, digits and punctuation."""
    code = ord(char)
    for script in SCRIPTS:
        if script.first <= code <= script.last:
            return script
    return None


def scripts_in(text: str) -> list[Script]:
    """The Indic scripts text uses, in the order of SCRIPTS."""
    found = {s for s in map(script_of, set(text)) if s is not None}
    return [s for s in SCRIPTS if s in found]


def script_for_language(language: str) -> Script | None:
    """The script a narration language is written in; None for English."""
    name = _BY_LANGUAGE.get(language)
    return next((s for s in SCRIPTS if s.name == name), None)

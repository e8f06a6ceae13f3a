"""The small protocols every provider implements, and the values they exchange.

A writer turns raw material into text, an illustrator draws, a speaker speaks, a
translator translates. Each has an offline implementation (offline.py) and a real one;
the rest of storyloom only sees these protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from storyloom.models import Audience, ImageStyle, Language, Tone, Usage


@dataclass(frozen=True)
class SectionBrief:
    """Everything a writer needs to write one section of the book.

    Nothing here changes when another section's material does (its neighbours appear
    only by heading), so editing one section re-pays only that section's writing.
    """

    story_id: str
    title: str
    kind: str  # "life" or "creative"
    language: Language
    key: str  # a life stage ("childhood") or a creative part ("part-2")
    heading: str
    material: str  # the teller's raw words for this section
    target_words: int
    tone: Tone
    audience: Audience
    position: int  # 1-based
    of: int  # number of sections in the book
    premise: str = ""  # creative stories: the premise every section must serve
    previous: str = ""  # the heading of the section before ("" for the first)
    following: str = ""  # the heading of the section after ("" for the last)
    # Continuity: where the story has been and where it goes next, taken from the
    # neighbours' material (the last memory of the section before, the first of the one
    # after), so an edit inside another section leaves this brief, and its cache, alone.
    came_before: str = ""
    comes_next: str = ""
    # The teller's facts this section must keep: names, places, dates, numbers, and
    # quoted words to be kept verbatim (from storyloom.facts).
    facts: tuple[str, ...] = ()
    quotes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Revision:
    """What a rewrite of a section must fix: its length, and the facts the check found.

    target_words is the length to reach. remove: names, dates, places or numbers the
    teller never gave (to be taken out). restore: the teller's facts the text dropped (to
    be put back). quotes: the teller's quoted words, to appear verbatim.
    """

    target_words: int
    remove: tuple[str, ...] = ()
    restore: tuple[str, ...] = ()
    quotes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Written:
    text: str
    usage: Usage


@dataclass(frozen=True)
class IllustrationPlan:
    prompt: str  # the scene to draw for one page
    usage: Usage


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    style: ImageStyle
    aspect_ratio: str = "4:3"
    # The first illustration, passed to later ones so the characters stay the same.
    reference_png: bytes | None = None


@dataclass(frozen=True)
class Picture:
    data: bytes
    mime_type: str
    width: int
    height: int
    usage: Usage


@dataclass(frozen=True)
class Speech:
    wav: bytes
    usage: Usage


@runtime_checkable
class Writer(Protocol):
    name: str

    def write_section(self, brief: SectionBrief) -> Written:
        """Write one section of about brief.target_words words."""
        ...

    def revise(self, brief: SectionBrief, text: str, revision: Revision) -> Written:
        """Rewrite a section to revision.target_words words, taking out what
        revision.remove names, putting back revision.restore and keeping
        revision.quotes verbatim; everything else as it is."""
        ...

    def proofread(self, brief: SectionBrief, text: str) -> Written:
        """The grammar pass: fix grammar and punctuation, keep meaning and length."""
        ...

    def plan_illustration(self, title: str, page_text: str, style: ImageStyle) -> IllustrationPlan:
        """The image prompt for one page, from that page's text alone."""
        ...


@runtime_checkable
class Illustrator(Protocol):
    name: str

    def draw(self, request: ImageRequest) -> Picture: ...


@runtime_checkable
class Speaker(Protocol):
    name: str
    max_chars: int  # the longest text one request may carry

    def speak(self, text: str, language: Language) -> Speech:
        """Speak text (at most max_chars characters) as a mono 16-bit WAV."""
        ...

    def seconds_per_char(self, language: Language) -> float:
        """A planning estimate of speaking time per character; audio is measured after."""
        ...


@runtime_checkable
class Translator(Protocol):
    name: str
    max_chars: int

    def translate(self, text: str, source: Language, target: Language) -> Written: ...


@dataclass
class Providers:
    """The providers serving one run, chosen by storyloom.providers.select."""

    writer: Writer
    illustrator: Illustrator
    speaker: Speaker
    translator: Translator
    # role -> the provider's cache identity: its name and every setting that shapes its
    # output (model, prompt version, voice, sample rate, image size). Every paid task
    # takes it as an input, so changing one pays again for exactly what it affects.
    notes: dict[str, str] = field(default_factory=dict)

"""The reader page: one self-contained HTML file per book, opened from a folder, no server.

Title and banner on top, then one page at a time with previous/next buttons. A selector
switches between the book's own text and each narration language; a narrated language
shows its chapters' sentences (each a span with its chapter and times) and a player
that plays the chapters one after another, highlights the sentence being spoken, turns
to its page, and plays from any sentence that is clicked.

Everything is inside the file: CSS and JS inline, pictures and audio as data: URIs, the
Noto Sans fonts subset to the characters the page uses (all OpenType layout features
kept, so Indic scripts shape in the browser). The same book renders to the same bytes.
"""

from __future__ import annotations

import base64
import functools
import io
import re
from dataclasses import dataclass
from pathlib import Path

from fontTools import subset  # type: ignore[import-untyped]
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]
from jinja2 import Environment, PackageLoader, StrictUndefined

from storyloom.exports import BookSource
from storyloom.exports.fonts import (
    LATIN_BOLD,
    LATIN_REGULAR,
    Script,
    script_of,
    scripts_in,
)
from storyloom.models import AudioChapter, Illustration, Language, SentenceTiming

# Each language's own name, for the language selector.
NATIVE_NAMES: dict[str, str] = {
    "bn-IN": "বাংলা",
    "en-IN": "English",
    "gu-IN": "ગુજરાતી",
    "hi-IN": "हिन्दी",
    "kn-IN": "ಕನ್ನಡ",
    "ml-IN": "മലയാളം",
    "mr-IN": "मराठी",
    "od-IN": "ଓଡ଼ିଆ",
    "pa-IN": "ਪੰਜਾਬੀ",
    "ta-IN": "தமிழ்",
    "te-IN": "తెలుగు",
}
# The Latin subset has all of ASCII (the reader's own words, page numbers the script
# writes) and the pager's arrows.
_ASCII = "".join(map(chr, range(0x20, 0x7F)))
_UI_TEXT = "‹›"
# Joiners and the dotted circle take part in Indic shaping: they go with the script fonts.
_SHAPING = "\u200c\u200d\u25cc"
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")

_ENV = Environment(
    loader=PackageLoader("storyloom.exports", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class FontFace:
    family: str
    weight: int
    data: bytes

    @property
    def src(self) -> str:
        return _data_uri("font/ttf", self.data)


@dataclass(frozen=True)
class Picture:
    src: str  # a data: URI
    alt: str
    width: int
    height: int


@dataclass(frozen=True)
class Sentence:
    id: str
    chapter: int
    start: str  # seconds in the chapter's file, as written in the page
    end: str
    text: str


@dataclass(frozen=True)
class Text:
    """One page's text in one view: sentences of a narration, or the page's paragraphs."""

    view: Language
    lang: str  # the HTML lang attribute
    shown: bool
    sentences: list[Sentence] | None
    paragraphs: list[str]


@dataclass(frozen=True)
class PageView:
    number: int
    pictures: list[Picture]
    texts: list[Text]


@dataclass(frozen=True)
class View:
    language: Language
    label: str
    narrated: bool


@dataclass(frozen=True)
class ChapterAudio:
    position: int
    title: str
    src: str  # a data: URI


@dataclass(frozen=True)
class Player:
    language: Language
    lang: str
    label: str
    shown: bool
    chapters: list[ChapterAudio]


def render_html(source: BookSource) -> bytes:
    """The book's reader page: one HTML file with everything it shows inside it."""
    book = source.book
    own = book.story.language
    narrated = source.languages
    views = [View(own, _label(own, own in narrated), own in narrated)] + [
        View(language, _label(language, True), True) for language in narrated if language != own
    ]
    sentences = {language: _sentences(source, language) for language in narrated}
    page_text = {page.number: page.text for page in book.pages}
    numbers = sorted(set(page_text) | {n for by_page in sentences.values() for n in by_page})

    banner = next((i for i in book.illustrations if i.position == 1), None)
    pages = []
    for number in numbers:
        texts = [
            Text(
                view=view.language,
                lang=html_lang(view.language),
                shown=view.language == own,
                # A page its narration does not reach shows the page's own text, if any.
                sentences=sentences[view.language].get(number) if view.narrated else None,
                paragraphs=_paragraphs(page_text.get(number, "")) if view.language == own else [],
            )
            for view in views
        ]
        # The banner is shown once, above the reader: its bytes are not embedded twice.
        pictures = [
            _picture(source, illustration)
            for illustration in source.illustrations_on(number)
            if not illustration.is_banner
        ]
        pages.append(PageView(number, pictures, texts))

    players = [
        Player(
            language=language,
            lang=html_lang(language),
            label=NATIVE_NAMES.get(language, language),
            shown=language == own,
            chapters=[
                ChapterAudio(chapter.position, chapter.title, _audio_uri(source.read(chapter.url)))
                for chapter in source.chapters(language)
            ],
        )
        for language in narrated
    ]

    shown_text = "".join(
        [book.story.title, _UI_TEXT]
        + [view.label for view in views]
        + [page.text for page in book.pages]
        + [s.text for by_page in sentences.values() for ss in by_page.values() for s in ss]
        + [c.title for player in players for c in player.chapters]
    )
    html = _ENV.get_template("reader.html.j2").render(
        title=book.story.title,
        title_lang=html_lang(own),
        banner=_picture(source, banner) if banner is not None else None,
        views=views,
        default_view=own,
        pages=pages,
        players=players,
        fonts=_fonts(shown_text, bold_text=book.story.title),
        font_families=_families(shown_text),
    )
    return html.encode("utf-8")


def html_lang(language: str) -> str:
    """The HTML lang of a narration language: hi-IN -> hi (Odia's code is "or")."""
    code = language.split("-")[0]
    return "or" if code == "od" else code


def _label(language: Language, narrated: bool) -> str:
    name = NATIVE_NAMES.get(language, language)
    return f"{name} (narrated)" if narrated else name


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in _PARAGRAPH.split(text) if p.strip()]


def _timings(chapter: AudioChapter) -> list[SentenceTiming]:
    """A chapter's sentences; a chapter without timings is one sentence, the whole file."""
    if chapter.sentences:
        return chapter.sentences
    if not chapter.text.strip():
        return []
    end = max(chapter.duration_seconds, 0.0)
    return [SentenceTiming(text=chapter.text, start=0.0, end=end, page=chapter.first_page)]


def _sentences(source: BookSource, language: Language) -> dict[int, list[Sentence]]:
    """A narration language's sentences by the page they come from, in reading order."""
    by_page: dict[int, list[Sentence]] = {}
    for chapter in source.chapters(language):
        for index, timing in enumerate(_timings(chapter), start=1):
            by_page.setdefault(timing.page, []).append(
                Sentence(
                    id=f"s-{language}-{chapter.position}-{index}",
                    chapter=chapter.position,
                    start=f"{timing.start:.3f}",
                    end=f"{timing.end:.3f}",
                    text=" ".join(timing.text.split()),
                )
            )
    return by_page


def _picture(source: BookSource, illustration: Illustration) -> Picture:
    data = source.read(illustration.url)
    return Picture(
        src=_data_uri(_image_type(data), data),
        alt=illustration.prompt,
        width=illustration.width,
        height=illustration.height,
    )


def _data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def _image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"GIF8":
        return "image/gif"
    return "application/octet-stream"


def _audio_uri(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _data_uri("audio/wav", data)
    if data[:4] == b"OggS":
        return _data_uri("audio/ogg", data)
    return _data_uri("audio/mpeg", data)


# Fonts ---------------------------------------------------------------------------------


def _family(script: Script | None) -> str:
    return "storyloom-latin" if script is None else f"storyloom-{script.name.lower()}"


def _families(text: str) -> list[str]:
    """Latin first (it has no Indic glyphs), then the fonts of the scripts text uses."""
    return [_family(None)] + [_family(s) for s in scripts_in(text)]


def _fonts(text: str, *, bold_text: str) -> list[FontFace]:
    """The faces: Latin (regular, and bold for bold_text) and each script text uses."""
    latin = {c for c in text + _ASCII if script_of(c) is None} - set(_SHAPING)
    faces = [FontFace(_family(None), 400, _subset_font(LATIN_REGULAR, latin))]
    bold = {c for c in bold_text if script_of(c) is None} - set(_SHAPING)
    if bold:
        faces.append(FontFace(_family(None), 700, _subset_font(LATIN_BOLD, bold)))
    for script in scripts_in(text):
        chars = {c for c in text if script_of(c) is script} | set(_SHAPING)
        faces.append(FontFace(_family(script), 400, _subset_font(script.regular, chars)))
    return faces


def _subset_font(path: Path, chars: set[str]) -> bytes:
    """The font with only the glyphs chars need, every layout feature kept."""
    return _subset(path, "".join(sorted(chars)))


@functools.lru_cache(maxsize=32)  # a book rendered again subsets its fonts once
def _subset(path: Path, text: str) -> bytes:
    options = subset.Options()
    options.layout_features = ["*"]  # Indic shaping: half forms, conjuncts, reph, marks
    options.recalc_timestamp = False
    font = TTFont(path, recalcTimestamp=False)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text)
    subsetter.subset(font)
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


__all__ = ["NATIVE_NAMES", "html_lang", "render_html"]

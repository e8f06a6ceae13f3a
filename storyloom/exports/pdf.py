"""The book as a PDF for print: a title page, then each page with its pictures and text.

Text is shaped with HarfBuzz (fpdf2's text shaping over uharfbuzz), so conjuncts, reordered
vowel signs and Tamil split vowels come out as the font draws them, in the Noto Sans fonts
shipped with the project (storyloom.exports.fonts), embedded as subsets.

Fonts: a block of text is set in the font of its own script (the story language's script
first), and every other added font is a fallback for the characters that font lacks, so a
Latin word or a Tamil name inside Hindi text still prints. The Indic Noto fonts carry the
space, digits, punctuation, the dandas and ZWJ/ZWNJ, so a run of Indic text never leaves
its font mid-cluster; fpdf2 splits the text into runs by font and by Unicode script and
shapes each run on its own, with HarfBuzz guessing the run's script. The text maps
(ToUnicode) are fpdf2's but for shaped clusters, so that copying or extracting the text gives
back the words as written (see _ExtractableFont).

The same book renders to the same bytes: the creation date is the generation's, fpdf2's
font subset prefix is fixed, and its file id is a hash of the content.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import TTFFont
from PIL import Image

from storyloom.exports import BookSource
from storyloom.exports.fonts import (
    LATIN_BOLD,
    LATIN_REGULAR,
    SCRIPTS,
    Script,
    script_for_language,
    scripts_in,
)
from storyloom.models import Illustration

log = logging.getLogger(__name__)

# A5 portrait (148 x 210 mm): the usual trim size of a printed storybook, held in the
# hand; at A4 the lines of text would be too long to read comfortably and the pictures,
# scaled to the text width, would print at too low a resolution (a 1024 px picture
# across A5's text block is ~230 dpi, across A4's ~150 dpi).
PAGE_WIDTH, PAGE_HEIGHT = 148.0, 210.0  # mm
# Margins for print: wide enough for binding and trimming on every side.
MARGIN_SIDE = 18.0
MARGIN_TOP = 18.0
MARGIN_BOTTOM = 22.0  # the page number sits inside it
FOOTER_FROM_BOTTOM = 13.0
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN_SIDE
CONTENT_HEIGHT = PAGE_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

LATIN = "latin"  # the fpdf2 family names: "latin", then each script's name in lower case
TITLE_SIZE = 24.0  # pt
TEXT_SIZE = 12.5
FOOTER_SIZE = 9.0
LINE_SPACING = 1.7  # Indic scripts need the room above and below for vowel signs
PT = 25.4 / 72  # mm per point
PICTURES_SHARE = 0.55  # of the text block's height, at most, for a page's pictures
BANNER_SHARE = 0.6  # of the text block's height, at most, for the title page's banner
GAP = 5.0  # mm between a picture and what follows it


def render_pdf(source: BookSource) -> bytes:
    """The book as a PDF: a title page with the title and the banner, then each page of
    the book on its own sheet (a long page flows onto the next) with its pictures above
    its text and its number below. Pictures that cannot be read are left out."""
    book = source.book
    language = book.story.language
    texts = [source.title, *(page.text for page in book.pages)]
    pdf = _BookPDF(
        scripts=scripts_in("".join(texts)),
        preferred=script_for_language(language),
        bold_title=not scripts_in(source.title),
    )
    pdf.set_title(source.title)
    pdf.set_lang(language)
    pdf.set_creator("storyloom")
    # The generation's start: the same bytes before and after it is published.
    pdf.set_creation_date(book.created_at)
    # The shaping language picks language forms where a font has them (Marathi's ल, श);
    # the script is left to HarfBuzz, per run of text.
    pdf.set_text_shaping(True, language=language.split("-")[0])

    read: dict[str, _Picture | None] = {}  # by URL: the banner is also page 1's picture

    def picture_of(illustration: Illustration) -> _Picture | None:
        if illustration.url not in read:
            read[illustration.url] = _picture(source, illustration)
        return read[illustration.url]

    pdf.add_page()
    banner = next((i for i in book.illustrations if i.is_banner), None)
    pdf.title_page(source.title, picture_of(banner) if banner else None)

    for page in book.pages:
        pdf.add_page()  # the sheet before gets its footer here, with its own number
        pdf.folio = str(page.number)
        shown = [p for i in source.illustrations_on(page.number) if (p := picture_of(i))]
        for picture in shown:
            pdf.picture(picture, CONTENT_HEIGHT * PICTURES_SHARE / len(shown))
        pdf.paragraphs(page.text)
    return bytes(pdf.output())


@dataclass(frozen=True)
class _Picture:
    data: bytes
    width: int  # pixels
    height: int


def _picture(source: BookSource, illustration: Illustration) -> _Picture | None:
    """The picture's bytes and size; None, logged, when it cannot be read: one missing
    picture never sinks the book."""
    try:
        data = source.read(illustration.url)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            width, height = image.size
    except Exception as error:  # a failed read or a broken file: the text still prints
        log.warning("PDF: picture %s left out: %r", illustration.url, error)
        return None
    if width <= 0 or height <= 0:
        return None
    return _Picture(data, width, height)


class _BookPDF(FPDF):
    """An A5 book with the fonts its text needs and a page number footer."""

    def __init__(self, scripts: list[Script], preferred: Script | None, bold_title: bool):
        super().__init__(orientation="portrait", unit="mm", format=(PAGE_WIDTH, PAGE_HEIGHT))
        self.folio: str | None = None  # the number in the footer; none on the title page
        self.preferred = preferred
        self.set_margins(MARGIN_SIDE, MARGIN_TOP, MARGIN_SIDE)
        self.set_auto_page_break(True, margin=MARGIN_BOTTOM)
        self.c_margin = 0  # text starts exactly at the margin
        # Only the fonts the text uses: every added font is embedded, used or not.
        self.add_font(LATIN, "", LATIN_REGULAR)  # the page numbers, any Latin text
        if bold_title:
            self.add_font(LATIN, "B", LATIN_BOLD)
        self.scripts = [s for s in SCRIPTS if s in scripts]
        for script in self.scripts:
            self.add_font(script.name.lower(), "", script.regular)
        for font in self.fonts.values():
            if type(font) is TTFFont:
                font.__class__ = _ExtractableFont
        # Any font can stand in for a character the current one lacks; the bold title
        # may fall back on a regular Indic font (exact_match=False).
        self.set_fallback_fonts([LATIN, *(s.name.lower() for s in self.scripts)], exact_match=False)

    def family_for(self, text: str) -> str:
        """The font for a block of text: its language's script if the text uses it, else
        the first Indic script it uses, else Latin."""
        used = scripts_in(text)
        if self.preferred in used:
            return self.preferred.name.lower()
        return used[0].name.lower() if used else LATIN

    def footer(self) -> None:
        if self.folio is None:
            return
        self.set_y(-FOOTER_FROM_BOTTOM)
        self.set_font(LATIN, size=FOOTER_SIZE)
        self.cell(0, FOOTER_SIZE * PT * 1.2, self.folio, align="C")

    def title_page(self, title: str, banner: _Picture | None) -> None:
        family = self.family_for(title)
        style = "B" if family == LATIN and (LATIN + "B") in self.fonts else ""
        self.set_font(family, style, TITLE_SIZE)
        self.set_y(MARGIN_TOP + CONTENT_HEIGHT * 0.12)
        self.multi_cell(
            0, TITLE_SIZE * PT * 1.5, title, align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        self.ln(GAP * 2)
        if banner is not None:
            self.picture(banner, CONTENT_HEIGHT * BANNER_SHARE)

    def picture(self, picture: _Picture, max_height: float) -> None:
        """A picture at the full text width, keeping its aspect, no taller than
        max_height (then centred), on the next sheet if it does not fit on this one."""
        width = CONTENT_WIDTH
        height = width * picture.height / picture.width
        if height > max_height:
            height = max_height
            width = height * picture.width / picture.height
        if self.get_y() + height > self.page_break_trigger:
            self.add_page()
        y = self.get_y()
        self.image(io.BytesIO(picture.data), x=MARGIN_SIDE + (CONTENT_WIDTH - width) / 2,
                   y=y, w=width, h=height)  # fmt: skip
        self.set_y(y + height + GAP)

    def paragraphs(self, text: str) -> None:
        """A page's text, paragraph by paragraph, in its script's font, ragged right
        (justifying shaped Indic text only stretches the gaps between words)."""
        self.set_font(self.family_for(text), "", TEXT_SIZE)
        line = TEXT_SIZE * PT * LINE_SPACING
        for number, paragraph in enumerate(p for p in re.split(r"\n\s*\n", text) if p.strip()):
            if number:
                self.ln(line / 2)
            self.multi_cell(
                0, line, paragraph.strip(), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
            )


class _ExtractableFont(TTFFont):
    """fpdf2's font, with text that comes back out of the PDF as it went in.

    A PDF viewer extracts text glyph by glyph, in the order they are drawn, through the
    font's ToUnicode map; a glyph without an entry is dropped and the room it takes
    reads as a gap between words. fpdf2 maps the whole text of a HarfBuzz cluster to the
    cluster's first glyph and leaves the others unmapped, so where shaping draws a
    vowel sign before its consonant (Hindi कि: the ि glyph, then क; Tamil கொ: ெ, க, ா)
    the consonant prints as a gap: "कोशि श". Here each cluster's text is spread over its
    glyphs that take room, in drawing order, so their texts together are the cluster's
    text ("कि": ि -> "क", क -> "ि"); a split vowel sign drawn as more glyphs than it has
    characters is given its canonical decomposition (ொ = ெ + ா). Zero-width glyphs (vowel
    signs above or below) join the cluster before them and stay unmapped, taking no
    room. What is drawn is unchanged: only the ToUnicode entries differ.
    """

    __slots__ = ()

    def shape_text(
        self, text: str, font_size_pt: float, text_shaping_params: dict[str, Any] | None
    ) -> Sequence[dict[str, Any]]:
        if not text:
            return []
        infos, positions = self.perform_harfbuzz_shaping(text, font_size_pt, text_shaping_params)
        clusters = [int(info.cluster) for info in infos]
        if clusters != sorted(clusters):  # right to left: fpdf2's own mapping
            return super().shape_text(text, font_size_pt, text_shaping_params)
        groups: list[list[int]] = []  # glyph indices, one list per cluster
        for index, cluster in enumerate(clusters):
            joins = groups and (
                cluster == clusters[groups[-1][0]] or positions[index].x_advance == 0
            )
            if joins:
                groups[-1].append(index)
            else:
                groups.append([index])
        starts = [clusters[group[0]] for group in groups] + [len(text)]
        unicode: list[str] = [""] * len(infos)
        number = 0
        while number < len(groups):
            group, end = groups[number], number + 1
            # A cluster with fewer characters than glyphs that take room takes in the
            # next: HarfBuzz gives the ா of கொ (ெ க ா) the cluster of ொ, apart from ெ க.
            while end < len(groups) and _spacing(group, positions) > _room(
                text[starts[number] : starts[end]]
            ):
                group, end = group + groups[end], end + 1
            for index, piece in _spread(text[starts[number] : starts[end]], group, positions):
                unicode[index] = piece
            number = end
        shaped = []
        for index, (info, position) in enumerate(zip(infos, positions, strict=True)):
            name = self.ttfont.getGlyphName(info.codepoint)
            width = round(self.scale * self.ttfont["hmtx"].metrics[name][0])
            glyph = self.subset.get_glyph(
                glyph=info.codepoint,
                unicode=tuple(map(ord, unicode[index])),
                glyph_name=name,
                glyph_width=width,
            )
            if glyph is None:
                continue
            moved = (position.x_offset, position.y_offset, position.y_advance) != (0, 0, 0)
            shaped.append(
                {
                    "mapped_char": self.subset.pick_glyph(glyph),
                    "x_advance": position.x_advance,
                    "y_advance": position.y_advance,
                    "x_offset": position.x_offset,
                    "y_offset": position.y_offset,
                    "force_positioning": moved or width != position.x_advance,
                }
            )
        return shaped


def _spacing(group: list[int], positions: Sequence[Any]) -> int:
    """How many of a cluster's glyphs take room."""
    return sum(1 for index in group if positions[index].x_advance != 0)


def _room(text: str) -> int:
    """How many glyphs a text can be spread over: its characters, decomposed."""
    return max(len(text), len(unicodedata.normalize("NFD", text)))


def _spread(text: str, group: list[int], positions: Sequence[Any]) -> list[tuple[int, str]]:
    """A cluster's text over its glyphs that take room, in order: one character each,
    the rest to the last one; the decomposed text if the glyphs outnumber the characters.
    """
    spacing = [index for index in group if positions[index].x_advance != 0] or group[:1]
    chars = list(text)
    if len(spacing) > len(chars):
        chars = list(unicodedata.normalize("NFD", text))
    if len(spacing) > len(chars):  # more glyphs than even the decomposition: the first
        return [(spacing[0], text)]
    head = len(spacing) - 1
    return [*zip(spacing[:head], chars[:head], strict=True), (spacing[head], "".join(chars[head:]))]

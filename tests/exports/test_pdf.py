"""The PDF for print: fonts embedded, text shaped by HarfBuzz and extractable, pictures,
metadata, determinism; checked with poppler's tools (pdffonts, pdftotext, pdfimages,
pdfinfo, pdftoppm) and against uharfbuzz's own shaping of the shipped fonts."""

from __future__ import annotations

import collections
import functools
import io
import logging
import os
import re
import subprocess
import sys
import unicodedata
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uharfbuzz as hb
from fontTools.pens.recordingPen import DecomposingRecordingPen
from fontTools.ttLib import TTFont
from fpdf.fonts import TTFFont
from PIL import Image

from storyloom.exports import BookSource
from storyloom.exports import pdf as pdf_module
from storyloom.exports.fonts import SCRIPTS, Script
from storyloom.exports.pdf import render_pdf
from storyloom.models import Page
from tests.exports.books import TEXTS, book
from tests.exports.tools import artifact, require_tool

A5_POINTS = (419.53, 595.28)
SCRIPT = {"hi-IN": "Devanagari", "ta-IN": "Tamil"}
# Words whose shaping is not one glyph per character: conjuncts (क्ष, श्री), the vowel
# sign ि drawn before its consonant (कोशिश), Tamil vowel signs drawn around it (கொ, கோ).
SHAPED = {"hi-IN": "क्षमा श्री कोशिश", "ta-IN": "கொடி கோயில்"}


# --- rendering and poppler ---------------------------------------------------------------


@functools.cache
def rendered(language: str) -> bytes:
    return render_pdf(book(language, ())[0])


def with_pages(source: BookSource, *texts: str) -> BookSource:
    pages = [Page(number=n, text=text, words=len(text.split())) for n, text in enumerate(texts, 1)]
    return BookSource(source.book.model_copy(update={"pages": pages}), source.read)


def save(data: bytes, path: Path) -> Path:
    path.write_bytes(data)
    return path


def poppler(tool: str, *args: str | Path) -> str:
    command = [require_tool(tool, "poppler-utils"), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout


def sheet_text(path: Path, sheet: int) -> str:
    return poppler("pdftotext", "-f", str(sheet), "-l", str(sheet), path, "-")


def words(text: str) -> list[str]:
    """The words of a text, compared in NFC: where shaping draws a two-part vowel sign as
    three glyphs (Tamil கொ: ெ க ா) the PDF gives it back decomposed (க + ெ + ா), the
    same text in Unicode's terms (see pdf._ExtractableFont)."""
    return unicodedata.normalize("NFC", text).split()


def fonts(path: Path) -> dict[str, tuple[str, str]]:
    """pdffonts: each font's name (subset prefix dropped) -> (embedded, has ToUnicode)."""
    rows = poppler("pdffonts", path).splitlines()[2:]
    found = {}
    for row in rows:
        cells = row.split()  # name, type (words), encoding, emb, sub, uni, object, gen
        found[cells[0].split("+")[-1]] = (cells[-5], cells[-3])
    return found


def images(path: Path) -> list[tuple[int, int, int]]:
    """pdfimages -list: (sheet, width, height) of each image drawn."""
    rows = poppler("pdfimages", "-list", path).splitlines()[2:]
    return [(int(c[0]), int(c[3]), int(c[4])) for c in (row.split() for row in rows)]


def info(path: Path) -> dict[str, str]:
    return dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in poppler("pdfinfo", path).splitlines())
    )


def png(path: Path, sheet: int, out: Path) -> Image.Image:
    """The sheet rendered by pdftoppm at 80 dpi, saved at out."""
    prefix = out.with_suffix("")
    poppler("pdftoppm", "-r", "80", "-png", "-f", str(sheet), "-l", str(sheet), "-singlefile",
            path, prefix)  # fmt: skip
    with Image.open(out) as image:
        return image.convert("RGB")


# --- a small PDF reader: the glyphs a sheet draws in a font ------------------------------


def objects(data: bytes) -> dict[int, tuple[bytes, bytes | None]]:
    """Each object of an fpdf2 PDF: its dictionary and its stream, inflated."""
    found: dict[int, tuple[bytes, bytes | None]] = {}
    position = 0
    while match := re.compile(rb"(\d+) 0 obj").search(data, position):
        start = match.end()
        end = data.index(b"endobj", start)
        stream = data.find(b"\nstream", start, end)
        if stream < 0:
            found[int(match.group(1))] = (data[start:end], None)
            position = end
            continue
        head = data[start:stream]
        length = re.search(rb"/Length (\d+)", head)
        assert length is not None
        body_start = (
            stream + len(b"\nstream") + (2 if data[stream + 7 : stream + 9] == b"\r\n" else 1)
        )
        body = data[body_start : body_start + int(length.group(1))]
        found[int(match.group(1))] = (
            head,
            zlib.decompress(body) if b"/FlateDecode" in head else body,
        )
        position = data.index(b"endobj", body_start + int(length.group(1)))
    return found


def ref(head: bytes, key: str) -> int:
    match = re.search(rb"/" + key.encode() + rb" (\d+) 0 R", head)
    assert match is not None, (key, head)
    return int(match.group(1))


def outline(glyphs: object, name: str) -> tuple[object, ...]:
    """A glyph's drawing (components resolved) and advance: what it looks like."""
    glyph = glyphs[name]  # type: ignore[index]
    pen = DecomposingRecordingPen(glyphs)
    glyph.draw(pen)
    return (glyph.width, *((op, tuple(args)) for op, args in pen.value))


@functools.cache
def names_by_outline(script: Script) -> dict[tuple[object, ...], frozenset[str]]:
    """The shipped font's glyph names by what they look like (some glyphs look alike)."""
    font = TTFont(script.regular)
    glyphs = font.getGlyphSet()
    by: dict[tuple[object, ...], set[str]] = collections.defaultdict(set)
    for name in font.getGlyphOrder():
        by[outline(glyphs, name)].add(name)
    return {key: frozenset(value) for key, value in by.items()}


def drawn_glyphs(data: bytes, sheet: int, script: Script) -> list[frozenset[str]]:
    """The glyphs the sheet draws in the script's font, in drawing order, each as the
    names of the shipped font's glyphs it could be (the subset drops glyph names, so a
    glyph is known by its outline)."""
    objs = objects(data)
    [pages] = [n for n, (head, _) in objs.items() if b"/Type /Pages" in head]
    kids = [int(n) for n in re.findall(rb"(\d+) 0 R", objs[pages][0].split(b"/Kids")[1])]
    page = objs[kids[sheet - 1]][0]
    base = f"+NotoSans{script.name}".encode()
    [type0] = [n for n, (h, _) in objs.items() if base in h and b"/Subtype /Type0" in h]
    [cid] = [n for n, (h, _) in objs.items() if base in h and b"/CIDFontType2" in h]
    cid_to_gid = objs[ref(objs[cid][0], "CIDToGIDMap")][1]
    file = objs[ref(objs[ref(objs[cid][0], "FontDescriptor")][0], "FontFile2")][1]
    assert cid_to_gid is not None
    assert file is not None
    subset = TTFont(io.BytesIO(file))
    subset_glyphs = subset.getGlyphSet()
    resources = objs[ref(page, "Resources")][0]
    resource = re.search(rb"/(F\d+) " + str(type0).encode() + rb" 0 R", resources)
    assert resource is not None
    content = objs[ref(page, "Contents")][1]
    assert content is not None
    by_outline = names_by_outline(script)
    found, current = [], b""
    for op in re.finditer(rb"/(F\d+) [\d.]+ Tf|\(((?:\\.|[^\\)])*)\) ?Tj", content, re.S):
        if op.group(1):
            current = op.group(1)
            continue
        if current != resource.group(1):
            continue
        raw = re.sub(rb"\\(.)", lambda m: b"\r" if m.group(1) == b"r" else m.group(1), op.group(2))
        for at in range(0, len(raw), 2):
            code = int.from_bytes(raw[at : at + 2], "big")
            gid = int.from_bytes(cid_to_gid[2 * code : 2 * code + 2], "big")
            found.append(by_outline[outline(subset_glyphs, subset.getGlyphName(gid))])
    return found


def harfbuzz(text: str, script: Script, language: str) -> list[str]:
    """The glyph names HarfBuzz shapes the text into with the shipped font."""
    font = hb.Font(hb.Face(hb.Blob.from_file_path(str(script.regular))))
    buffer = hb.Buffer()
    buffer.add_str(text)
    buffer.guess_segment_properties()
    buffer.language = language
    hb.shape(font, buffer, {})
    return [font.glyph_to_string(info.codepoint) for info in buffer.glyph_infos]


def script(name: str) -> Script:
    return next(s for s in SCRIPTS if s.name == name)


# --- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["hi-IN", "ta-IN"])
def test_fonts_are_embedded_with_the_script_font(language: str, tmp_path: Path) -> None:
    found = fonts(save(rendered(language), tmp_path / "book.pdf"))
    assert found == {
        "NotoSansBold": ("yes", "yes"),  # the title
        "NotoSans": ("yes", "yes"),  # the page numbers
        f"NotoSans{SCRIPT[language]}": ("yes", "yes"),  # the pages
    }


@pytest.mark.parametrize("language", ["hi-IN", "ta-IN", "en-IN"])
def test_every_page_s_text_is_extracted(language: str, tmp_path: Path) -> None:
    """pdftotext gives back each sheet's words, in order, then the page number: with
    fpdf2's own ToUnicode maps a reordered vowel sign split its word ("कोशि श"); see
    pdf._ExtractableFont."""
    path = save(rendered(language), tmp_path / "book.pdf")
    assert words(sheet_text(path, 1)) == ["The", "Lantern", "Keeper"]
    for number, text in enumerate(TEXTS[language], start=1):
        assert words(sheet_text(path, number + 1)) == [*words(text), str(number)]
    # Exactly, without normalising: every word but those with a two-part vowel sign.
    extracted = poppler("pdftotext", path, "-").split()
    exact = collections.Counter(extracted) & collections.Counter(
        w for text in TEXTS[language] for w in text.split()
    )
    inexact = {w for text in TEXTS[language] for w in text.split()} - set(exact)
    assert all(re.search("[\u0bca\u0bcb\u0bcc]", w) for w in inexact), inexact
    assert sum(exact.values()) >= 0.95 * sum(len(t.split()) for t in TEXTS[language])


@pytest.mark.parametrize("language", ["hi-IN", "ta-IN"])
def test_text_is_shaped_as_harfbuzz_shapes_it(language: str, tmp_path: Path) -> None:
    """The glyphs the PDF draws for conjuncts and reordered vowel signs are HarfBuzz's
    shaping of the text with the shipped font, not one glyph per character."""
    source = with_pages(book(language, ())[0], SHAPED[language])
    font = script(SCRIPT[language])
    drawn = drawn_glyphs(render_pdf(source), 2, font)
    shaped = harfbuzz(SHAPED[language], font, language.split("-")[0])
    cmap = TTFont(font.regular).getBestCmap()
    naive = [cmap[ord(char)] for char in SHAPED[language]]
    assert shaped != naive  # the words do need shaping
    assert len(drawn) == len(shaped)
    assert all(name in choices for name, choices in zip(shaped, drawn, strict=True))
    assert len(drawn) != len(naive) or any(
        name not in choices for name, choices in zip(naive, drawn, strict=True)
    )


def test_mapping_for_extraction_does_not_change_the_drawing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_ExtractableFont changes only the ToUnicode maps: the sheet renders to the same
    pixels as with fpdf2's own mapping."""
    source = with_pages(book("hi-IN", ())[0], SHAPED["hi-IN"] + " " + TEXTS["hi-IN"][0])
    ours = png(save(render_pdf(source), tmp_path / "ours.pdf"), 2, tmp_path / "ours.png")
    monkeypatch.setattr(pdf_module._ExtractableFont, "shape_text", TTFFont.shape_text)
    theirs = png(save(render_pdf(source), tmp_path / "fpdf2.pdf"), 2, tmp_path / "fpdf2.png")
    assert ours.tobytes() == theirs.tobytes()


@pytest.mark.parametrize(("language", "name"), [("hi-IN", "hi"), ("ta-IN", "ta")])
def test_page_two_rendered_for_a_person(language: str, name: str, tmp_path: Path) -> None:
    """pdftoppm renders the book's first page (sheet 2): saved for a person to look at.
    The picture is at the top, full width; text below it; the page number at the foot."""
    path = save(rendered(language), tmp_path / "book.pdf")
    image = png(path, 2, artifact(f"book-{name}-page2.png"))
    width, height = image.size
    assert abs(width - 148 / 25.4 * 80) < 1.5  # A5 at 80 dpi
    assert abs(height - 210 / 25.4 * 80) < 1.5

    gray = image.convert("L")

    def dark(top_mm: float, bottom_mm: float) -> int:
        box = (0, round(top_mm / 210 * height), width, round(bottom_mm / 210 * height))
        return sum(gray.crop(box).histogram()[:128])

    # The picture (the text block's width, 640 x 400: 112 x 70 mm) below the top margin.
    assert image.getpixel((width // 2, round(50 / 210 * height))) == (40, 90, 140)
    assert image.getpixel((width // 2, round(15 / 210 * height))) == (255, 255, 255)
    assert dark(0, 17) == 0  # the top margin
    assert dark(90, 185) > 1000  # the text, below the picture
    assert 0 < dark(190, 210) < 100  # the page number


@pytest.mark.parametrize("language", ["hi-IN", "ta-IN", "en-IN"])
def test_pictures_and_metadata(language: str, tmp_path: Path) -> None:
    path = save(rendered(language), tmp_path / "book.pdf")
    # The banner on the title page, page 1's picture on sheet 2, page 3's on sheet 4.
    assert images(path) == [(1, 640, 400), (2, 640, 400), (4, 640, 400)]
    meta = info(path)
    assert meta["Title"] == "The Lantern Keeper"
    assert meta["Creator"] == "storyloom"
    assert meta["Pages"] == "4"
    assert meta["Page size"].startswith(f"{A5_POINTS[0]} x {A5_POINTS[1]} pts")
    assert meta["CreationDate"] == "Tue Dec  1 00:00:00 2026 UTC"
    assert f"/Lang ({language})".encode() in rendered(language)


def test_the_same_book_gives_the_same_bytes() -> None:
    """Twice in this process, and once in another with another hash seed (no set order,
    no clock, no random id in the file)."""
    first = render_pdf(book("hi-IN", ())[0])
    assert render_pdf(book("hi-IN", ())[0]) == first
    code = (
        "import sys; from tests.exports.books import book; "
        "from storyloom.exports.pdf import render_pdf; "
        "sys.stdout.buffer.write(render_pdf(book('hi-IN', ())[0]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, env=env, timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout  # fmt: skip
    assert other == first
    # The date is the generation's start: another start, other bytes; its publishing
    # (finished_at) changes nothing, so the stored file and an export are the same.
    source = book("hi-IN", ())[0]
    later = source.book.model_copy(update={"created_at": datetime(2027, 1, 1, tzinfo=UTC)})
    assert render_pdf(BookSource(later, source.read)) != first
    published = source.book.model_copy(update={"finished_at": datetime(2027, 1, 1, tzinfo=UTC)})
    assert render_pdf(BookSource(published, source.read)) == first


def test_a_missing_or_broken_picture_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One picture that cannot be read leaves out that picture, nothing else."""
    source, files = book("hi-IN", ())
    banner, page_3 = source.illustrations_on(1)[0].url, source.illustrations_on(3)[0].url
    missing = {url: data for url, data in files.items() if url != page_3}  # read: KeyError
    broken = {**files, banner: b"\x89PNG but not one"}  # the banner is page 1's picture
    with caplog.at_level(logging.WARNING, logger="storyloom.exports.pdf"):
        without_3 = save(
            render_pdf(BookSource(source.book, missing.__getitem__)), tmp_path / "a.pdf"
        )
        without_1 = save(
            render_pdf(BookSource(source.book, broken.__getitem__)), tmp_path / "b.pdf"
        )
    assert images(without_3) == [(1, 640, 400), (2, 640, 400)]
    assert images(without_1) == [(4, 640, 400)]
    for path in (without_3, without_1):
        assert info(path)["Pages"] == "4"
        for number, text in enumerate(TEXTS["hi-IN"], start=1):
            assert words(sheet_text(path, number + 1)) == [*words(text), str(number)]
    messages = [record.getMessage() for record in caplog.records]
    assert sum(page_3 in m for m in messages) == 1
    assert sum(banner in m for m in messages) == 1  # read once for the title page and page 1


def test_a_book_without_pictures(tmp_path: Path) -> None:
    path = save(render_pdf(book("ta-IN", (), pictures=False)[0]), tmp_path / "book.pdf")
    assert images(path) == []
    assert info(path)["Pages"] == "4"
    assert words(sheet_text(path, 4)) == [*words(TEXTS["ta-IN"][2]), "3"]


def test_mixed_scripts_use_fallback_fonts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Latin words, digits and a Tamil word inside Hindi, a Hindi title with English in
    it: every character is drawn from a font that has it, and comes back out."""
    text = "अंजलि ने Fort Kochi में 2026 में கொச்சி देखा। Hello, दुनिया!"
    source = with_pages(book("hi-IN", ())[0], text)
    story = source.book.story.model_copy(update={"title": "लालटेन (The Lantern Keeper)"})
    source = BookSource(source.book.model_copy(update={"story": story}), source.read)
    with caplog.at_level(logging.WARNING):
        data = render_pdf(source)
    assert not [r for r in caplog.records if "missing" in r.getMessage()]
    path = save(data, tmp_path / "book.pdf")
    assert set(fonts(path)) == {"NotoSans", "NotoSansDevanagari", "NotoSansTamil"}
    assert all(value == ("yes", "yes") for value in fonts(path).values())
    assert words(sheet_text(path, 1)) == words(story.title)
    assert words(sheet_text(path, 2)) == [*words(text), "1"]


def test_a_long_page_flows_onto_the_next_sheet(tmp_path: Path) -> None:
    long = "\n\n".join([TEXTS["hi-IN"][0]] * 8)
    path = save(render_pdf(with_pages(book("hi-IN", ())[0], long, "अंत।")), tmp_path / "a.pdf")
    sheets = int(info(path)["Pages"])
    assert sheets > 3  # the title, page 1 on two sheets or more, page 2
    extracted = [w for s in range(2, sheets) for w in words(sheet_text(path, s)) if w != "1"]
    assert extracted == words(long)
    assert words(sheet_text(path, sheets)) == ["अंत।", "2"]


def test_marathi_gets_its_own_letter_forms() -> None:
    """The shaping language is the book's: Marathi's ल and श are the font's MAR forms."""
    source = with_pages(book("hi-IN", ())[0], "लाल शाळा")
    story = source.book.story.model_copy(update={"language": "mr-IN"})
    marathi = BookSource(source.book.model_copy(update={"story": story}), source.read)
    drawn = drawn_glyphs(render_pdf(marathi), 2, script("Devanagari"))
    assert {"ladevaMAR", "shadevaMAR"} <= set().union(*drawn)
    assert "ladeva" not in set().union(*drawn)
    assert b"/Lang (mr-IN)" in render_pdf(marathi)

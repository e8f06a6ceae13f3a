"""The EPUB 3 export: its package, its media overlays against the narration's timings,
its fonts, its determinism, and epubcheck's verdict on it."""

from __future__ import annotations

import functools
import io
import json
import re
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import uharfbuzz as hb
from fontTools.ttLib import TTFont

from storyloom.exports import BookSource
from storyloom.exports import epub as epub_module
from storyloom.exports.epub import render_epub
from storyloom.exports.fonts import FONT_DIR, LATIN_REGULAR
from storyloom.models import Language
from tests.exports.books import book
from tests.exports.tools import artifact, require_tool

NS = {
    "opf": "http://www.idpf.org/2007/opf",
    "dc": "http://purl.org/dc/elements/1.1/",
    "smil": "http://www.w3.org/ns/SMIL",
    "x": "http://www.w3.org/1999/xhtml",
    "epub": "http://www.idpf.org/2007/ops",
    "c": "urn:oasis:names:tc:opendocument:xmlns:container",
}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
TITLE = 'Tom & Jerry <and> the "Lantern" Keeper'
CHAPTER_TITLE = "One <& two>"
SENTENCE = "Salt & <pepper> for the 'fish'."


def parse(data: bytes) -> ET.Element:
    return ET.fromstring(data)  # noqa: S314 (the renderer's own output)


def tricky() -> BookSource:
    """The English book narrated in English, with markup characters in what people
    wrote: the title, a chapter's title, a sentence."""
    source, _ = book("en-IN", ("en-IN",))
    chapters = source.chapters("en-IN")
    first = chapters[0]
    sentences = [first.sentences[0].model_copy(update={"text": SENTENCE}), *first.sentences[1:]]
    chapters[0] = first.model_copy(update={"title": CHAPTER_TITLE, "sentences": sentences})
    story = source.book.story.model_copy(update={"title": TITLE})
    changed = source.book.model_copy(update={"story": story, "chapters": {"en-IN": chapters}})
    return BookSource(changed, source.read)


def make(case: str) -> tuple[BookSource, Language | None]:
    if case == "en":
        return tricky(), "en-IN"
    if case == "hi":
        return book("hi-IN", ("hi-IN",))[0], "hi-IN"
    if case == "pages":
        return book("en-IN", ())[0], None
    if case == "en-book-hi-narration":
        return book("en-IN", ("en-IN", "hi-IN"))[0], "hi-IN"
    raise AssertionError(case)


@functools.cache
def rendered(case: str) -> tuple[BookSource, bytes]:
    source, language = make(case)
    return source, render_epub(source, language)


class Epub:
    """An EPUB opened for the tests: its zip, package document and manifest."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.zip = zipfile.ZipFile(io.BytesIO(data))
        container = parse(self.zip.read("META-INF/container.xml"))
        rootfile = container.find("c:rootfiles/c:rootfile", NS)
        assert rootfile is not None
        self.opf_path = rootfile.attrib["full-path"]
        self.base = PurePosixPath(self.opf_path).parent
        self.opf = parse(self.zip.read(self.opf_path))
        self.items = {
            item.attrib["id"]: item.attrib
            for item in self.opf.iterfind("opf:manifest/opf:item", NS)
        }

    def path(self, href: str, relative_to: str | None = None) -> str:
        folder = PurePosixPath(relative_to).parent if relative_to else PurePosixPath(".")
        return str(self.base / folder / href)

    def read(self, href: str) -> bytes:
        return self.zip.read(self.path(href))

    def xml(self, href: str) -> ET.Element:
        return parse(self.read(href))

    def spine(self) -> list[str]:
        return [ref.attrib["idref"] for ref in self.opf.iterfind("opf:spine/opf:itemref", NS)]

    def metas(self, prop: str) -> list[ET.Element]:
        return [
            m for m in self.opf.iterfind("opf:metadata/opf:meta", NS) if m.get("property") == prop
        ]

    def item_at(self, path: str) -> dict[str, str]:
        return next(i for i in self.items.values() if self.path(i["href"]) == path)

    def meta(self, name: str) -> str:
        """The text of the one dc: element, e.g. meta("language")."""
        [element] = self.opf.iterfind(f"opf:metadata/dc:{name}", NS)
        return element.text or ""


def epub(case: str) -> Epub:
    return Epub(rendered(case)[1])


def seconds(clock: str) -> float:
    """A SMIL clock value in seconds: 1:02:03.5, 02:03.5, 3.5s, 3500ms, 3.5h ..."""
    if ":" in clock:
        total = 0.0
        for part in clock.split(":"):
            total = total * 60 + float(part)
        return total
    match = re.fullmatch(r"([\d.]+)(h|min|s|ms)?", clock)
    assert match, clock
    scale = {"h": 3600, "min": 60, "s": 1, "ms": 0.001, None: 1}[match.group(2)]
    return float(match.group(1)) * scale


def text_of(element: ET.Element) -> str:
    return "".join(element.itertext())


def ids_in(document: ET.Element) -> dict[str, ET.Element]:
    return {e.attrib["id"]: e for e in document.iter() if "id" in e.attrib}


@pytest.mark.parametrize("case", ["en", "pages"])
def test_mimetype_comes_first_and_uncompressed(case: str) -> None:
    data = rendered(case)[1]
    first = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    assert first.filename == "mimetype"
    assert first.compress_type == zipfile.ZIP_STORED
    assert first.extra == b""
    # Readers sniff it at a fixed offset: the name at 30, the media type at 38.
    assert data[30:38] == b"mimetype"
    assert data[38:58] == b"application/epub+zip"


@pytest.mark.parametrize("case", ["en", "hi", "pages"])
def test_the_manifest_lists_exactly_the_files_of_the_zip(case: str) -> None:
    book_file = epub(case)
    hrefs = [item["href"] for item in book_file.items.values()]
    names = set(book_file.zip.namelist())
    for href in hrefs:
        assert book_file.path(href) in names, href
    declared = {book_file.path(h) for h in hrefs}
    assert names - declared == {"mimetype", "META-INF/container.xml", book_file.opf_path}
    assert set(book_file.spine()) <= set(book_file.items)
    for name in names:
        if name.endswith((".xhtml", ".smil", ".opf", ".xml")):
            parse(book_file.zip.read(name))  # well-formed


@pytest.mark.parametrize("case", ["en", "hi"])
def test_each_overlay_times_its_chapters_sentences(case: str) -> None:
    source, _ = rendered(case)
    language = make(case)[1]
    assert language is not None
    book_file = epub(case)
    chapters = source.chapters(language)
    documents = [
        book_file.items[i] for i in book_file.spine() if "media-overlay" in book_file.items[i]
    ]
    assert len(documents) == len(chapters)
    for chapter, document in zip(chapters, documents, strict=True):
        overlay = book_file.items[document["media-overlay"]]
        assert overlay["media-type"] == "application/smil+xml"
        smil = book_file.xml(overlay["href"])
        xhtml_ids = ids_in(book_file.xml(document["href"]))
        pars = list(smil.iter(f"{{{NS['smil']}}}par"))
        assert len(pars) == len(chapter.sentences)
        for par, sentence in zip(pars, chapter.sentences, strict=True):
            text = par.find("smil:text", NS)
            audio = par.find("smil:audio", NS)
            assert text is not None
            assert audio is not None
            href, fragment = text.attrib["src"].split("#")
            assert book_file.path(href, overlay["href"]) == book_file.path(document["href"])
            assert text_of(xhtml_ids[fragment]) == sentence.text
            assert seconds(audio.attrib["clipBegin"]) == pytest.approx(sentence.start, abs=5e-4)
            assert seconds(audio.attrib["clipEnd"]) == pytest.approx(sentence.end, abs=5e-4)
            sound = book_file.path(audio.attrib["src"], overlay["href"])
            assert book_file.zip.read(sound) == source.read(chapter.url)
            assert book_file.item_at(sound)["media-type"] == "audio/mpeg"


@pytest.mark.parametrize("case", ["en", "hi"])
def test_media_durations_are_the_chapters_and_their_sum(case: str) -> None:
    source, _ = rendered(case)
    language = make(case)[1]
    assert language is not None
    book_file = epub(case)
    chapters = source.chapters(language)
    durations = book_file.metas("media:duration")
    by_item = {m.attrib["refines"].lstrip("#"): seconds(m.text or "") for m in durations
               if "refines" in m.attrib}  # fmt: skip
    total = [seconds(m.text or "") for m in durations if "refines" not in m.attrib]
    overlays = [book_file.items[i]["media-overlay"] for i in book_file.spine()
                if "media-overlay" in book_file.items[i]]  # fmt: skip
    assert set(by_item) == set(overlays)
    for chapter, overlay in zip(chapters, overlays, strict=True):
        assert by_item[overlay] == pytest.approx(chapter.duration_seconds, abs=5e-4)
    assert total == [pytest.approx(sum(c.duration_seconds for c in chapters), abs=1e-3)]


def test_the_active_class_is_declared_and_styled() -> None:
    book_file = epub("en")
    [active] = book_file.metas("media:active-class")
    css = book_file.read(book_file.items["style"]["href"]).decode()
    assert re.search(rf"\.{re.escape(active.text or '')}\s*\{{[^}}]*background", css)


@pytest.mark.parametrize("case", ["en", "pages"])
def test_the_same_book_gives_the_same_bytes(case: str) -> None:
    epub_module._subset.cache_clear()  # subset the fonts again too
    source, language = make(case)
    assert render_epub(source, language) == rendered(case)[1]
    dates = {info.date_time for info in epub(case).zip.infolist()}
    assert dates == {(1980, 1, 1, 0, 0, 0)}  # not the time it was made


def test_what_people_wrote_is_escaped() -> None:
    book_file = epub("en")
    assert book_file.meta("title") == TITLE
    cover = book_file.xml("cover.xhtml")
    assert [text_of(h) for h in cover.iter(f"{{{NS['x']}}}h1")] == [TITLE]
    nav = book_file.xml(book_file.items["nav"]["href"])
    assert CHAPTER_TITLE in [text_of(a) for a in nav.iter(f"{{{NS['x']}}}a")]
    chapter = book_file.xml("chapter-01.xhtml")
    assert [text_of(h) for h in chapter.iter(f"{{{NS['x']}}}h1")] == [CHAPTER_TITLE]
    assert text_of(ids_in(chapter)["s1-1"]) == SENTENCE


def test_without_narration_it_is_the_books_pages() -> None:
    source, _ = rendered("pages")
    book_file = epub("pages")
    assert not [i for i in book_file.items.values() if i["media-type"] == "application/smil+xml"]
    assert not book_file.metas("media:duration")
    assert not book_file.metas("media:active-class")
    assert book_file.meta("language") == "en"
    spine = book_file.spine()
    assert spine[0] == "cover"
    pages = source.book.pages
    assert len(spine) == 1 + len(pages)
    for page, item_id in zip(pages, spine[1:], strict=True):
        document = book_file.xml(book_file.items[item_id]["href"])
        paragraphs = [text_of(p) for p in document.iter(f"{{{NS['x']}}}p")]
        assert " ".join(paragraphs) == page.text
        pictures = [img.attrib["src"] for img in document.iter(f"{{{NS['x']}}}img")]
        assert pictures == (["images/picture-02.png"] if page.number == 3 else [])


def test_pictures_go_to_the_cover_and_to_the_chapter_reading_their_page() -> None:
    source, _ = rendered("en")
    book_file = epub("en")
    banner, picture = source.book.illustrations
    cover_images = [i for i in book_file.items.values() if "cover-image" in i.get("properties", "")]
    assert [book_file.read(i["href"]) for i in cover_images] == [source.read(banner.url)]
    cover = book_file.xml("cover.xhtml")
    assert [img.attrib["src"] for img in cover.iter(f"{{{NS['x']}}}img")] == [
        cover_images[0]["href"]
    ]
    found = {}
    for item_id in book_file.spine()[1:]:
        document = book_file.xml(book_file.items[item_id]["href"])
        found[item_id] = [
            book_file.read(img.attrib["src"]) for img in document.iter(f"{{{NS['x']}}}img")
        ]
    # Chapter 3 reads page 3, the second picture's page.
    assert found == {"chapter-01": [], "chapter-02": [], "chapter-03": [source.read(picture.url)]}


def test_the_text_is_the_narrations_in_its_language() -> None:
    source, _ = rendered("en-book-hi-narration")
    book_file = epub("en-book-hi-narration")
    assert book_file.meta("language") == "hi"
    spoken = []
    for item_id in book_file.spine()[1:]:
        document = book_file.xml(book_file.items[item_id]["href"])
        assert document.attrib["lang"] == document.attrib[XML_LANG] == "hi"
        spoken += [text_of(s) for s in document.iter(f"{{{NS['x']}}}span")]
    assert spoken == [s.text for c in source.chapters("hi-IN") for s in c.sentences]
    english = Epub(render_epub(source, "en-IN"))
    assert english.meta("identifier") != book_file.meta("identifier")


def test_a_language_without_narration_is_refused() -> None:
    source, _ = book("en-IN", ("en-IN",))
    with pytest.raises(ValueError, match="no narration in ta-IN"):
        render_epub(source, "ta-IN")


def test_a_chapter_without_timings_has_its_text_and_a_player_but_no_overlay() -> None:
    source, _ = book("en-IN", ("en-IN",))
    chapters = source.chapters("en-IN")
    chapters[1] = chapters[1].model_copy(update={"sentences": []})
    changed = BookSource(
        source.book.model_copy(update={"chapters": {"en-IN": chapters}}), source.read
    )
    book_file = Epub(render_epub(changed, "en-IN"))
    assert "media-overlay" not in book_file.items["chapter-02"]
    document = book_file.xml("chapter-02.xhtml")
    assert " ".join(text_of(p) for p in document.iter(f"{{{NS['x']}}}p")) == chapters[1].text
    [player] = document.iter(f"{{{NS['x']}}}audio")
    assert book_file.read(player.attrib["src"]) == source.read(chapters[1].url)
    [total] = [m for m in book_file.metas("media:duration") if "refines" not in m.attrib]
    expected = chapters[0].duration_seconds + chapters[2].duration_seconds
    assert seconds(total.text or "") == pytest.approx(expected, abs=1e-3)


def test_identity_and_date() -> None:
    source, _ = rendered("en")
    book_file = epub("en")
    [identifier] = book_file.opf.iterfind("opf:metadata/dc:identifier", NS)
    assert identifier.get("id") == book_file.opf.attrib["unique-identifier"]
    assert identifier.text
    other = source.book.model_copy(update={"generation_id": "g-2"})
    again = Epub(render_epub(BookSource(other, source.read), "en-IN"))
    assert again.meta("identifier") != identifier.text
    [modified] = book_file.metas("dcterms:modified")
    assert modified.text == "2026-12-01T00:00:00Z"


def shaped(font_data: bytes, text: str) -> list[tuple[int, int, int, int]]:
    """How HarfBuzz sets text in the font: each glyph's cluster, advance and offsets."""
    font = hb.Font(hb.Face(font_data))
    buffer = hb.Buffer()
    buffer.add_str(text)
    buffer.guess_segment_properties()
    hb.shape(font, buffer, {})
    return [
        (info.cluster, pos.x_advance, pos.x_offset, pos.y_offset)
        for info, pos in zip(buffer.glyph_infos, buffer.glyph_positions, strict=True)
    ]


def features(font: TTFont) -> set[str]:
    return {record.FeatureTag for record in font["GSUB"].table.FeatureList.FeatureRecord}


def test_fonts_are_subsets_that_set_the_text_as_the_full_fonts_do() -> None:
    source, _ = rendered("hi")
    book_file = epub("hi")
    fonts = {i["href"]: i for i in book_file.items.values() if i["href"].startswith("fonts/")}
    assert {i["media-type"] for i in fonts.values()} == {"font/ttf"}
    devanagari = "fonts/NotoSansDevanagari-Regular.ttf"
    assert devanagari in fonts
    css = book_file.read("style.css").decode()
    for href in fonts:
        assert f'url("{href}")' in css
    assert '"Noto Sans Devanagari"' in css
    full = (FONT_DIR / "NotoSansDevanagari-Regular.ttf").read_bytes()
    small = book_file.read(devanagari)
    assert len(small) < len(full) / 2
    for chapter in source.chapters("hi-IN"):
        for sentence in chapter.sentences:
            assert shaped(small, sentence.text) == shaped(full, sentence.text), sentence.text
    latin_full = TTFont(LATIN_REGULAR)
    latin = TTFont(io.BytesIO(book_file.read("fonts/NotoSans-Regular.ttf")))
    # Features fontTools drops by default (small capitals) are kept.
    assert {"smcp", "c2sc"} <= features(latin)
    assert latin["head"].modified == latin_full["head"].modified  # no timestamp of today
    english = {i["href"] for i in epub("en").items.values() if i["href"].startswith("fonts/")}
    assert english <= {"fonts/NotoSans-Regular.ttf", "fonts/NotoSans-Bold.ttf"}


def epubcheck(path: Path, report: Path) -> list[dict[str, Any]]:
    """epubcheck's messages about the EPUB at path."""
    tool = require_tool("epubcheck", "epubcheck")
    command = [tool]
    with open(tool, "rb") as head:
        if head.read(2) == b"PK":  # Debian's is the jar itself, run by binfmt_misc if set up
            command = [require_tool("java", "default-jre-headless"), "-jar", tool]
    run = subprocess.run(
        [*command, str(path), "--json", str(report)], capture_output=True, text=True, timeout=600
    )
    assert report.exists(), f"epubcheck wrote no report:\n{run.stdout}\n{run.stderr}"
    messages: list[dict[str, Any]] = json.loads(report.read_text())["messages"]
    return messages


def describe(message: dict[str, Any]) -> str:
    places = [
        f"{place['path']}:{place.get('line')}:{place.get('column')}"
        for place in message.get("locations") or []
    ]
    return f"{message['severity']} {message['ID']} {', '.join(places)}: {message['message']}"


@pytest.mark.parametrize("case", ["en", "hi", "pages"])
def test_epubcheck_finds_nothing_wrong(case: str, tmp_path: Path) -> None:
    data = rendered(case)[1]
    path = artifact("book-hi.epub") if case == "hi" else tmp_path / f"book-{case}.epub"
    path.write_bytes(data)
    messages = epubcheck(path, tmp_path / "epubcheck.json")
    problems = [m for m in messages if m["severity"] in ("FATAL", "ERROR", "WARNING")]
    assert not problems, "\n".join(map(describe, problems))

"""The reader page: what it embeds and escapes, and how it reads, plays and renders in
headless Chromium (opened from a file, as a reader opens it from a folder)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
import soundfile
import uharfbuzz as hb
from fontTools.ttLib import TTFont
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from storyloom.exports import BookSource
from storyloom.exports import html as reader
from storyloom.exports.fonts import SCRIPTS, script_of
from storyloom.exports.html import html_lang, render_html
from tests.exports.books import RATE, book, tone
from tests.exports.tools import artifact, require_tool

ROOT = Path(__file__).resolve().parents[2]

# A minimal DOM: every element in document order with its attributes and inner text.


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parents: list[Element]
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    def has_class(self, name: str) -> bool:
        return name in self.attrs.get("class", "").split()

    def inside(self, tag: str) -> Element | None:
        return next((p for p in reversed(self.parents) if p.tag == tag), None)


_VOID = {"meta", "img", "br", "input", "link", "source", "hr"}


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, list(self.open))
        self.elements.append(element)
        if tag not in _VOID:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            if self.open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element.parts.append(data)


def parse(html: bytes) -> list[Element]:
    parser = _Parser()
    parser.feed(html.decode("utf-8"))
    parser.close()
    return parser.elements


def sentences(doc: list[Element], view: str) -> list[Element]:
    return [
        e
        for e in doc
        if e.has_class("sentence") and (block := _block(e)) and block.attrs["data-view"] == view
    ]


def _block(element: Element) -> Element | None:
    return next((p for p in reversed(element.parents) if p.has_class("text")), None)


def texts(doc: list[Element], view: str) -> list[Element]:
    return [e for e in doc if e.has_class("text") and e.attrs["data-view"] == view]


def decode(uri: str) -> tuple[str, bytes]:
    match = re.fullmatch(r"data:([\w/+.-]+);base64,([A-Za-z0-9+/=]+)", uri)
    assert match, uri[:80]
    return match[1], base64.b64decode(match[2], validate=True)


def font_faces(html: bytes) -> dict[tuple[str, int], bytes]:
    faces = re.findall(
        rb'font-family: "([^"]+)"; font-weight: (\d+);[^}]*?src: url\(data:font/ttf;base64,'
        rb"([A-Za-z0-9+/=]+)\)",
        html,
    )
    return {(f.decode(), int(w)): base64.b64decode(data) for f, w, data in faces}


# Unit tests ----------------------------------------------------------------------------


def test_every_page_text_and_sentence_appears_once_in_order() -> None:
    source, _ = book("en-IN", ("hi-IN", "ta-IN"))
    doc = parse(render_html(source))
    all_text = [e.text for e in doc if e.has_class("text")]

    # The book's own language is not narrated: its pages' text, one block a page.
    pages = [" ".join(p.text.split()) for p in source.book.pages]
    assert [e.text for e in texts(doc, "en-IN")] == pages
    for text in pages:
        assert sum(t.count(text) for t in all_text) == 1
    assert not sentences(doc, "en-IN")

    for language in ("hi-IN", "ta-IN"):
        spans = sentences(doc, language)
        timings = [(c.position, s) for c in source.chapters(language) for s in c.sentences]
        assert [e.text for e in spans] == [s.text for _, s in timings]
        for span, (chapter, timing) in zip(spans, timings, strict=True):
            assert span.attrs["data-chapter"] == str(chapter)
            assert float(span.attrs["data-start"]) == pytest.approx(timing.start, abs=5e-4)
            assert float(span.attrs["data-end"]) == pytest.approx(timing.end, abs=5e-4)
            page = span.inside("article")
            assert page is not None
            assert page.attrs["data-page"] == str(timing.page)
            assert sum(t.count(timing.text) for t in all_text) == 1
        ids = [e.attrs["id"] for e in spans]
        assert len(set(ids)) == len(ids)
    every_id = [e.attrs["id"] for e in doc if "id" in e.attrs]
    assert len(set(every_id)) == len(every_id)


def test_narrated_book_language_shows_its_sentences_once() -> None:
    source, _ = book("hi-IN", ("hi-IN", "en-IN"))
    doc = parse(render_html(source))
    options = [e.attrs["value"] for e in doc if e.tag == "option"]
    assert options == ["hi-IN", "en-IN"]  # the book's own language first, once
    blocks = texts(doc, "hi-IN")
    assert [b.text for b in blocks] == [" ".join(p.text.split()) for p in source.book.pages]
    assert all(b.inside("article") for b in blocks)
    assert len(sentences(doc, "hi-IN")) == sum(len(c.sentences) for c in source.chapters("hi-IN"))
    # It is the page shown first, and its player the one shown.
    assert all("hidden" not in b.attrs for b in blocks)
    assert all("hidden" in b.attrs for b in texts(doc, "en-IN"))
    players = {e.attrs["data-lang"]: e for e in doc if e.has_class("player")}
    assert "hidden" not in players["hi-IN"].attrs
    assert "hidden" in players["en-IN"].attrs


def test_a_page_the_narration_misses_shows_the_page_text() -> None:
    source, files = book("hi-IN", ("hi-IN", "en-IN"))
    chapters = {k: [c for c in v if c.position != 2] for k, v in source.book.chapters.items()}
    partial = BookSource(source.book.model_copy(update={"chapters": chapters}), files.__getitem__)
    doc = parse(render_html(partial))
    hindi = texts(doc, "hi-IN")
    assert [b.text for b in hindi] == [" ".join(p.text.split()) for p in source.book.pages]
    spans = sentences(doc, "hi-IN")
    assert [any(_block(e) is b for e in spans) for b in hindi] == [True, False, True]
    assert [b.text for b in texts(doc, "en-IN")][1] == ""


def test_pictures_and_audio_are_embedded() -> None:
    source, files = book("en-IN", ("en-IN", "hi-IN"))
    doc = parse(render_html(source))
    images = [e for e in doc if e.tag == "img"]
    banner, *pictures = images
    assert banner.has_class("banner")
    assert decode(banner.attrs["src"]) == ("image/png", files[source.book.illustrations[0].url])
    assert banner.attrs["alt"] == source.book.illustrations[0].prompt
    # Page 3's picture is on page 3; the banner (page 1's) is embedded once, on top.
    (third,) = pictures
    article = third.inside("article")
    assert article is not None
    assert article.attrs["data-page"] == "3"
    assert decode(third.attrs["src"]) == ("image/png", files[source.book.illustrations[1].url])
    assert len(images) == len(source.book.illustrations)

    for language in ("en-IN", "hi-IN"):
        (player,) = [e for e in doc if e.has_class("player") and e.attrs["data-lang"] == language]
        audio = [e for e in doc if e.tag == "audio" and e.parents[-1] is player]
        assert len(audio) == 1
        assert "controls" in audio[0].attrs
        buttons = [e for e in doc if e.has_class("chapter") and player in e.parents]
        assert [b.attrs["data-chapter"] for b in buttons] == ["1", "2", "3"]
        for button, chapter in zip(buttons, source.chapters(language), strict=True):
            assert decode(button.attrs["data-src"]) == ("audio/mpeg", files[chapter.url])


def test_media_types_are_sniffed_from_the_bytes() -> None:
    source, files = book("en-IN", ("en-IN",))
    wav = io.BytesIO()
    soundfile.write(wav, tone(0.3, 440), RATE, format="WAV")
    jpeg, webp = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (32, 20), (200, 40, 40)).save(jpeg, format="JPEG")
    Image.new("RGB", (32, 20), (40, 200, 40)).save(webp, format="WEBP")
    banner, third = (i.url for i in source.book.illustrations)
    swapped = {banner: jpeg.getvalue(), third: webp.getvalue()} | {
        c.url: wav.getvalue() for c in source.chapters("en-IN")
    }
    doc = parse(render_html(BookSource(source.book, lambda url: swapped.get(url, files[url]))))
    assert [decode(e.attrs["src"]) for e in doc if e.tag == "img"] == [
        ("image/jpeg", jpeg.getvalue()),
        ("image/webp", webp.getvalue()),
    ]
    assert {decode(e.attrs["data-src"]) for e in doc if e.has_class("chapter")} == {
        ("audio/wav", wav.getvalue())
    }


def test_no_reference_leaves_the_file() -> None:
    source, _ = book("ta-IN", ("ta-IN", "en-IN", "hi-IN"))  # the media URLs are file:// ones
    html = render_html(source)
    assert re.search(rb"(?i)(https?|file):", html) is None
    assert re.search(rb"(?i)<(link|iframe|object|embed)\b|@import|\bsrc=\"(?!data:)", html) is None
    doc = parse(html)
    for element in doc:
        for name in ("src", "href", "data-src", "poster"):
            if name in element.attrs:
                assert element.attrs[name].startswith("data:"), (element.tag, name)
    assert all("src" not in e.attrs for e in doc if e.tag == "script")
    # The fonts are inline too: every url() in the CSS is a data: URI.
    (style,) = [e for e in doc if e.tag == "style"]
    assert re.findall(r"url\((?!data:)", "".join(style.parts)) == []


def test_the_same_book_gives_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    first = render_html(book("hi-IN", ("hi-IN", "ta-IN"))[0])
    reader._subset.cache_clear()  # subset the fonts again, a day later
    later = time.time() + 86_400
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: later)
        again = render_html(book("hi-IN", ("hi-IN", "ta-IN"))[0])
    assert again == first
    # And in another process, with another hash seed (set order differs).
    script = (
        "import hashlib, sys\n"
        "from storyloom.exports.html import render_html\n"
        "from tests.exports.books import book\n"
        "html = render_html(book('hi-IN', ('hi-IN', 'ta-IN'))[0])\n"
        "sys.stdout.write(hashlib.sha256(html).hexdigest())\n"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    digest = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout  # fmt: skip
    assert digest == hashlib.sha256(first).hexdigest()


def test_user_text_is_escaped() -> None:
    source, files = book("en-IN", ("en-IN",))
    title = '<script>alert("x")</script> & Sons'
    text = "Tom & Jerry <b>bold</b> \"double\" 'single' </div>"
    prompt = 'a "harbour" <img src=x onerror=alert(1)> & boats'
    spoken = "<i>spoken</i> & heard </span>."
    b = source.book
    chapter = b.chapters["en-IN"][0]
    chapters = [
        chapter.model_copy(
            update={
                "title": "<u>One</u>",
                "sentences": [
                    chapter.sentences[0].model_copy(update={"text": spoken}),
                    *chapter.sentences[1:],
                ],
            }
        ),
        *b.chapters["en-IN"][1:],
    ]
    evil = b.model_copy(
        update={
            "story": b.story.model_copy(update={"title": title, "language": "hi-IN"}),
            "pages": [b.pages[0].model_copy(update={"text": text}), *b.pages[1:]],
            "illustrations": [b.illustrations[0].model_copy(update={"prompt": prompt})],
            "chapters": {"en-IN": chapters},
        }
    )
    html = render_html(BookSource(evil, files.__getitem__))
    for raw in ("<script>alert", "<b>bold", "<img src=x", "<i>spoken", "<u>One", "</span>."):
        assert raw.encode() not in html
    assert html.count(b"<script") == 1  # the page's own
    doc = parse(html)
    assert [e.text for e in doc if e.tag in ("title", "h1")] == [title, title]
    assert texts(doc, "hi-IN")[0].text == text
    assert sentences(doc, "en-IN")[0].text == " ".join(spoken.split())
    assert [e.attrs["alt"] for e in doc if e.tag == "img"] == [prompt]
    assert next(e.text for e in doc if e.has_class("chapter")) == "<u>One</u>"


def test_fonts_only_for_the_scripts_the_book_uses() -> None:
    hindi, _ = book("hi-IN", ("hi-IN",))
    html = render_html(hindi)
    faces = font_faces(html)
    assert set(faces) == {
        ("storyloom-latin", 400),
        ("storyloom-latin", 700),
        ("storyloom-devanagari", 400),
    }
    assert b"storyloom-tamil" not in html
    words = " ".join(s.text for c in hindi.chapters("hi-IN") for s in c.sentences)
    devanagari = TTFont(io.BytesIO(faces["storyloom-devanagari", 400]))
    latin = TTFont(io.BytesIO(faces["storyloom-latin", 400]))
    assert {c for c in words if script_of(c)} <= set(map(chr, devanagari.getBestCmap()))
    shown = hindi.title + "Page 123 of 3 Previous Next"
    assert {c for c in shown if not script_of(c)} <= set(map(chr, latin.getBestCmap()))
    (script,) = [s for s in SCRIPTS if s.name == "Devanagari"]
    whole = TTFont(script.regular)
    assert len(devanagari.getGlyphOrder()) < len(whole.getGlyphOrder()) * 2 / 3  # a subset
    assert "GSUB" in devanagari
    assert "GPOS" in devanagari

    tamil, _ = book("ta-IN", ("ta-IN",))
    assert {f for f, _ in font_faces(render_html(tamil))} == {
        "storyloom-latin",
        "storyloom-tamil",
    }
    english, _ = book("en-IN", ("en-IN",))
    assert {f for f, _ in font_faces(render_html(english))} == {"storyloom-latin"}


def _shape(font: bytes, text: str) -> list[tuple[int, int, int]]:
    buffer = hb.Buffer()
    buffer.add_str(text)
    buffer.guess_segment_properties()
    hb.shape(hb.Font(hb.Face(font)), buffer)
    return [
        (info.cluster, pos.x_advance, pos.x_offset)
        for info, pos in zip(buffer.glyph_infos, buffer.glyph_positions, strict=True)
    ]


def test_the_devanagari_subset_shapes_like_the_whole_font() -> None:
    source, _ = book("hi-IN", ("hi-IN",))
    subset = font_faces(render_html(source))["storyloom-devanagari", 400]
    (script,) = [s for s in SCRIPTS if s.name == "Devanagari"]
    whole = script.regular.read_bytes()
    for page in source.book.pages:
        for word in page.text.split():
            word = "".join(c for c in word if script_of(c) is script)  # the comma is Latin's
            assert _shape(subset, word) == _shape(whole, word), word
    # Conjuncts and matras really are shaped: fewer glyphs than characters.
    assert len(_shape(subset, "मस्तूल")) < len("मस्तूल")


def test_a_book_without_narration_just_shows_its_pages() -> None:
    source, _ = book("en-IN", ())
    html = render_html(source)
    doc = parse(html)
    assert b"<audio" not in html
    assert not [e for e in doc if e.has_class("player") or e.has_class("sentence")]
    assert not [e for e in doc if e.tag == "select"]
    assert [e.attrs["data-page"] for e in doc if e.tag == "article"] == ["1", "2", "3"]
    assert [e.text for e in doc if e.attrs.get("id") == "page-status"] == ["Page 1 of 3"]

    bare, _ = book("en-IN", (), pictures=False)
    assert b"<img" not in render_html(bare)


def test_languages_and_phone_layout_are_declared() -> None:
    source, _ = book("en-IN", ("en-IN", "hi-IN", "ta-IN"))
    doc = parse(render_html(source))
    assert {(b.attrs["data-view"], b.attrs["lang"]) for b in doc if b.has_class("text")} == {
        ("en-IN", "en"),
        ("hi-IN", "hi"),
        ("ta-IN", "ta"),
    }
    assert [e.attrs["lang"] for e in doc if e.tag == "h1"] == ["en"]
    assert html_lang("od-IN") == "or"
    (viewport,) = [e for e in doc if e.tag == "meta" and e.attrs.get("name") == "viewport"]
    assert "width=device-width" in viewport.attrs["content"]
    assert [(e.attrs["value"], e.text) for e in doc if e.tag == "option"] == [
        ("en-IN", "English (narrated)"),
        ("hi-IN", "हिन्दी (narrated)"),
        ("ta-IN", "தமிழ் (narrated)"),
    ]


# In the browser --------------------------------------------------------------------------

AUDIO = '.player[data-lang="hi-IN"] audio'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_tool("chromium", "chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, args=["--autoplay-policy=no-user-gesture-required"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def hindi_book(tmp_path_factory: pytest.TempPathFactory) -> tuple[BookSource, Path]:
    source, _ = book("hi-IN", ("hi-IN", "en-IN"))
    path = tmp_path_factory.mktemp("reader") / "book.html"
    path.write_bytes(render_html(source))
    return source, path


@pytest.fixture
def page(browser: Browser, hindi_book: tuple[BookSource, Path]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(hindi_book[1].as_uri())
    opened.wait_for_function(f"document.querySelector('{AUDIO}').readyState >= 1")
    yield opened
    context.close()
    assert errors == []


def _seek_to(page: Page, seconds: float) -> None:
    """Sets the Hindi player's currentTime and waits for the seek to finish."""
    page.evaluate(
        """([selector, seconds]) => new Promise((resolve) => {
            const audio = document.querySelector(selector);
            audio.addEventListener("seeked", () => setTimeout(resolve, 0), { once: true });
            audio.currentTime = seconds;
        })""",
        [AUDIO, seconds],
    )


def test_the_playing_sentence_is_highlighted_on_its_page(
    page: Page, hindi_book: tuple[BookSource, Path]
) -> None:
    source, _ = hindi_book
    chapter = source.chapters("hi-IN")[2]
    target = chapter.sentences[1]
    assert target.page == 3
    # Chapter 3 in the player, waiting for its seek to end: the reader follows a seek
    # to the sentence there, so a page turned before "seeked" fires is turned back.
    page.evaluate(
        """(selector) => new Promise((resolve) => {
            const audio = document.querySelector(selector);
            audio.addEventListener("seeked", () => setTimeout(resolve, 0), { once: true });
            storyloomReader.seek(3, 0);
        })""",
        AUDIO,
    )
    assert page.evaluate("storyloomReader.currentChapter()") == 3
    page.evaluate("() => storyloomReader.showPage(1)")
    assert page.evaluate("storyloomReader.currentPage()") == 1

    _seek_to(page, target.start + 0.01)

    active = page.eval_on_selector_all(".sentence.active", "els => els.map((e) => e.id)")
    assert active == ["s-hi-IN-3-2"]
    assert page.text_content("#s-hi-IN-3-2") == target.text
    assert page.evaluate("storyloomReader.currentPage()") == 3
    assert page.is_visible("#s-hi-IN-3-2")
    assert not page.is_visible("#page-1")
    assert page.text_content("#page-status") == "Page 3 of 3"
    background = page.eval_on_selector(
        ".sentence.active", "e => getComputedStyle(e).backgroundColor"
    )
    assert background not in ("rgba(0, 0, 0, 0)", "transparent")

    _seek_to(page, chapter.sentences[0].start + 0.01)  # back one sentence
    active = page.eval_on_selector_all(".sentence.active", "els => els.map((e) => e.id)")
    assert active == ["s-hi-IN-3-1"]


def test_a_click_on_a_sentence_plays_from_it(
    page: Page, hindi_book: tuple[BookSource, Path]
) -> None:
    source, _ = hindi_book
    target = source.chapters("hi-IN")[1].sentences[1]
    page.click("#next")
    assert page.text_content("#page-status") == "Page 2 of 3"
    page.evaluate(
        """(selector) => {
            const audio = document.querySelector(selector);
            audio.addEventListener("seeked", () => {
                window.seekedAt = {
                    time: audio.currentTime,
                    chapter: audio.dataset.chapter,
                    src: audio.currentSrc === document.querySelector(
                        '.player[data-lang="hi-IN"] button[data-chapter="2"]').dataset.src,
                };
            }, { once: true });
        }""",
        AUDIO,
    )
    page.click("#s-hi-IN-2-2")
    page.wait_for_function("window.seekedAt !== undefined")
    seeked = page.evaluate("window.seekedAt")
    assert seeked["chapter"] == "2"
    assert seeked["src"] is True
    assert seeked["time"] == pytest.approx(target.start, abs=0.05)
    page.wait_for_function(f"!document.querySelector('{AUDIO}').paused")
    page.wait_for_function("document.querySelector('.sentence.active') !== null")
    assert page.eval_on_selector_all(".sentence.active", "els => els.map((e) => e.id)") == [
        "s-hi-IN-2-2"
    ]


def test_the_next_chapter_plays_when_one_ends(page: Page) -> None:
    page.evaluate(
        """(selector) => {
            const audio = document.querySelector(selector);
            audio.currentTime = audio.duration - 0.15;
            return audio.play();
        }""",
        AUDIO,
    )
    page.wait_for_function(
        f"""storyloomReader.currentChapter() === 2
            && !document.querySelector('{AUDIO}').paused
            && document.querySelector('{AUDIO}').currentTime > 0""",
        timeout=10_000,
    )
    assert page.eval_on_selector_all(".sentence.active", "els => els.map((e) => e.id)") == [
        "s-hi-IN-2-1"
    ]
    assert page.evaluate("storyloomReader.currentPage()") == 2


def test_the_language_selector_switches_text_and_player(page: Page) -> None:
    assert page.is_visible("#s-hi-IN-1-1")
    page.select_option("#language", "en-IN")
    assert page.evaluate("storyloomReader.language()") == "en-IN"
    assert page.is_visible("#s-en-IN-1-1")
    assert not page.is_visible("#s-hi-IN-1-1")
    assert page.is_visible('.player[data-lang="en-IN"] audio')
    assert not page.is_visible(AUDIO)
    page.keyboard.press("ArrowRight")
    assert page.evaluate("storyloomReader.currentPage()") == 2
    assert page.is_visible("#s-en-IN-2-1")


def test_hindi_renders_in_the_embedded_devanagari_font(
    browser: Browser, page: Page, hindi_book: tuple[BookSource, Path]
) -> None:
    page.evaluate("document.fonts.ready")
    faces = page.evaluate(
        "[...document.fonts].map((f) => [f.family.replaceAll('\"', ''), f.weight, f.status])"
    )
    assert ["storyloom-devanagari", "400", "loaded"] in faces
    text = page.text_content("#s-hi-IN-1-1")
    assert text
    assert page.evaluate(
        "(text) => document.fonts.check('16px \"storyloom-devanagari\"', text)", text
    )
    # The glyphs on screen come from the embedded font, not from a system one.
    session = page.context.new_cdp_session(page)
    session.send("DOM.enable")
    session.send("CSS.enable")
    root = session.send("DOM.getDocument")["root"]["nodeId"]
    node = session.send("DOM.querySelector", {"nodeId": root, "selector": "#s-hi-IN-1-1"})
    used = session.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})["fonts"]
    by_glyphs = sorted(used, key=lambda f: -f["glyphCount"])
    assert by_glyphs[0]["familyName"] == "Noto Sans Devanagari"
    assert all(f["isCustomFont"] for f in used), used
    # Words set in the embedded face are as wide as HarfBuzz shapes them with the whole
    # Noto Sans Devanagari: its glyphs, its conjuncts and its marks, not a fallback's.
    (script,) = [s for s in SCRIPTS if s.name == "Devanagari"]
    whole = script.regular.read_bytes()
    upem = hb.Face(whole).upem
    words = [w for w in text.split() if all(script_of(c) is script for c in w)]
    assert len(words) >= 5
    widths = page.evaluate(
        """(words) => words.map((word) => {
            const span = document.createElement("span");
            span.style.cssText = 'font: 100px "storyloom-devanagari"; white-space: pre';
            span.textContent = word;
            document.body.append(span);
            const width = span.getBoundingClientRect().width;
            span.remove();
            return width;
        })""",
        words,
    )
    for word, width in zip(words, widths, strict=True):
        shaped = sum(advance for _, advance, _ in _shape(whole, word)) * 100 / upem
        assert width == pytest.approx(shaped, abs=0.5), word
    page.screenshot(path=artifact("reader-hi.png"), full_page=True)

    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
        has_touch=True,
    )  # fmt: skip
    try:
        small = phone.new_page()
        small.goto(hindi_book[1].as_uri())
        small.evaluate("document.fonts.ready")
        small.evaluate("() => storyloomReader.seek(1, 0.01)")
        small.wait_for_selector(".sentence.active")
        for width in (390, 360):
            small.set_viewport_size({"width": width, "height": 844})
            overflow = small.evaluate("document.documentElement.scrollWidth - innerWidth")
            assert overflow <= 0, f"{overflow}px wider than a {width}px screen"
        small.set_viewport_size({"width": 390, "height": 844})
        small.screenshot(path=artifact("reader-hi-phone.png"))
    finally:
        phone.close()

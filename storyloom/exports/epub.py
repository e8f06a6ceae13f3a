"""The book as an EPUB 3 with media overlays: the narration read along with its text.

With a narration language, the EPUB's text is that language's narration: one content
document per chapter (its title, its sentences as `<span>`s in paragraphs by book page)
with a SMIL media overlay timing each sentence in the chapter's MP3, so a reading system
highlights the sentence being spoken. Without one, it is the book's own pages, one
document per page, and no audio.

The package (every path fixed, every entry dated 1980-01-01, in a fixed order, so the
same book always gives the same bytes):

    mimetype                      first and stored, as the OCF requires
    META-INF/container.xml
    EPUB/package.opf              metadata, manifest, spine
    EPUB/nav.xhtml                table of contents and landmarks
    EPUB/style.css
    EPUB/cover.xhtml              the title and the banner picture
    EPUB/chapter-01.xhtml         (narrated) a chapter's text ...
    EPUB/chapter-01.smil          ... its media overlay ...
    EPUB/audio/chapter-01.mp3     ... and its narration
    EPUB/page-01.xhtml            (not narrated) a page of the book
    EPUB/images/picture-01.png    the pictures, by position
    EPUB/fonts/NotoSans*.ttf      the fonts the text needs, subset to its characters
"""

from __future__ import annotations

import functools
import html
import io
import re
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from fontTools import subset  # type: ignore[import-untyped]
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]
from PIL import Image, UnidentifiedImageError

from storyloom.exports import BookSource
from storyloom.exports.fonts import LATIN_BOLD, LATIN_FAMILY, LATIN_REGULAR, scripts_in
from storyloom.models import AudioChapter, Illustration, Language, Page

ACTIVE_CLASS = "-epub-media-overlay-active"  # the sentence being read
FOLDER = "EPUB"  # where the package document and its resources live
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Formats a zip cannot shrink: stored as they are.
_STORED = (".mp3", ".m4a", ".png", ".jpg", ".gif")
# Kept in every font subset: joiners and the dotted circle shapers show for a lone mark.
_SHAPING_CHARS = "\u200c\u200d\u25cc "
# Characters XML 1.0 does not allow, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_PARAGRAPHS = re.compile(r"\n[^\S\n]*\n")
# BCP 47 primary subtags where the project's language code differs (Odia is "or").
_TAGS = {"od": "or"}


def render_epub(source: BookSource, language: Language | None) -> bytes:
    """The book as an EPUB 3: narrated in `language` with media overlays, or, with None,
    the book's own pages without audio. Raises ValueError for a language the book has no
    narration in."""
    book = source.book
    chapters = source.chapters(language) if language is not None else []
    if language is not None and not chapters:
        have = ", ".join(source.languages) or "none"
        raise ValueError(f"the book has no narration in {language} (narration languages: {have})")
    pictures = {i.position: _picture(i, source.read(i.url)) for i in book.illustrations}
    banner = next((i for i in book.illustrations if i.is_banner), None)
    inside = sorted((i for i in book.illustrations if not i.is_banner), key=_position)
    if language is None:
        tag = _language_tag(book.story.language)
        parts = _page_parts(book.pages, inside, pictures)
    else:
        tag = _language_tag(language)
        parts = _chapter_parts(chapters, inside, pictures, source.read)
    title = source.title
    cover = _cover(title, pictures[banner.position] if banner else None, banner)
    fonts = _fonts(
        text=" ".join([title, *(p.label for p in parts), *(p.text for p in parts)]),
        headings=" ".join([title, *(p.heading for p in parts)]),
    )
    documents = [cover, *parts]

    items: list[_Item] = [
        _Item("nav", "nav.xhtml", "application/xhtml+xml", _nav(title, tag, parts), "nav"),
        _Item("style", "style.css", "text/css", _css(fonts)),
    ]
    for document in documents:
        overlay = f"{document.name}-overlay" if document.overlay else ""
        body = _xhtml(document.title or title, tag, document.body)
        items.append(
            _Item(document.name, f"{document.name}.xhtml", "application/xhtml+xml", body,
                  media_overlay=overlay)
        )  # fmt: skip
        if document.overlay:
            smil = document.overlay.encode()
            items.append(_Item(overlay, f"{document.name}.smil", "application/smil+xml", smil))
        items.extend(document.resources)
    for position in sorted(pictures):
        picture = pictures[position]
        cover_image = "cover-image" if banner and position == banner.position else ""
        items.append(replace(picture, properties=cover_image))
    items.extend(font.item for font in fonts)

    opf = _package(
        source,
        language=language,
        tag=tag,
        items=items,
        spine=[d.name for d in documents],
        durations={f"{d.name}-overlay": d.duration_ms for d in documents if d.overlay},
        pictures=bool(pictures),
    )
    files = [
        ("mimetype", b"application/epub+zip"),
        ("META-INF/container.xml", _CONTAINER.encode()),
        (f"{FOLDER}/package.opf", opf),
        *((f"{FOLDER}/{item.href}", item.data) for item in items),
    ]
    return _zip(files)


@dataclass(frozen=True)
class _Item:
    """A manifest item: a file of the package under EPUB/."""

    id: str
    href: str
    media_type: str
    data: bytes
    properties: str = ""
    media_overlay: str = ""  # the id of the item's SMIL overlay


@dataclass(frozen=True)
class _Font:
    item: _Item
    family: str
    weight: str  # normal, bold


@dataclass
class _Document:
    """A content document of the spine, before it is wrapped as XHTML."""

    name: str  # chapter-01: chapter-01.xhtml, its overlay chapter-01.smil
    label: str  # in the table of contents
    heading: str  # shown as its heading ("" for none)
    body: str  # the XHTML inside <body>
    text: str = ""  # all the text it shows (for fonts)
    title: str = ""  # its <title>; the book's title when empty
    overlay: str = ""  # the SMIL document
    duration_ms: int = 0  # the overlay's
    resources: list[_Item] = field(default_factory=list)  # its audio


def _chapter_parts(
    chapters: list[AudioChapter],
    inside: list[Illustration],
    pictures: dict[int, _Item],
    read: Callable[[str], bytes],
) -> list[_Document]:
    """A document per narration chapter, each with its overlay and audio."""
    placed = _place(inside, chapters)
    parts = []
    for number, chapter in enumerate(chapters, start=1):
        name = f"chapter-{chapter.position:02d}"
        label = chapter.title.strip() or str(number)
        audio = _audio(f"{name}-audio", f"audio/{name}", read(chapter.url))
        figures = placed.get(chapter.position, [])
        lines = [
            f'<section id="{name}" epub:type="chapter" role="doc-chapter"'
            f' aria-labelledby="{name}-title">',
            f'<h1 id="{name}-title">{_esc(label)}</h1>',
        ]
        overlay = ""
        if chapter.sentences:
            pars = []
            groups: list[tuple[int, list[str]]] = []
            for index, sentence in enumerate(chapter.sentences, start=1):
                span_id = f"s{chapter.position}-{index}"
                span = f'<span id="{span_id}">{_esc(sentence.text)}</span>'
                if groups and groups[-1][0] == sentence.page:
                    groups[-1][1].append(span)
                else:
                    groups.append((sentence.page, [span]))
                pars.append(
                    f'<par id="par-{chapter.position}-{index}">'
                    f'<text src="{name}.xhtml#{span_id}"/>'
                    f'<audio src="{audio.href}" clipBegin="{_clock(sentence.start)}"'
                    f' clipEnd="{_clock(sentence.end)}"/></par>'
                )
            for page, spans in groups:
                lines += _take_figures(figures, page, pictures)
                lines.append(f'<p id="p{chapter.position}-{page}">{" ".join(spans)}</p>')
            overlay = _smil(name, pars)
        else:
            # No sentence timings to follow: the text, and the narration as a player.
            lines += _take_figures(figures, chapter.first_page, pictures)
            lines += [f"<p>{_esc(p)}</p>" for p in _paragraphs(chapter.text)]
            lines.append(f'<audio controls="controls" src="{audio.href}"></audio>')
        lines += _take_figures(figures, None, pictures)
        lines.append("</section>")
        text = " ".join(s.text for s in chapter.sentences) or chapter.text
        parts.append(
            _Document(
                name=name, label=label, heading=label, body="\n".join(lines), text=text,
                title=label, overlay=overlay,
                duration_ms=_ms(chapter.duration_seconds) if overlay else 0,
                resources=[audio],
            )
        )  # fmt: skip
    return parts


def _page_parts(
    pages: list[Page], inside: list[Illustration], pictures: dict[int, _Item]
) -> list[_Document]:
    """A document per page of the book, with the page's pictures before its text."""
    parts = []
    for page in sorted(pages, key=lambda p: p.number):
        name = f"page-{page.number:02d}"
        figures = [i for i in inside if i.page_number == page.number]
        lines = [f'<section id="{name}" class="page">']
        lines += _take_figures(figures, None, pictures)
        lines += [f"<p>{_esc(p)}</p>" for p in _paragraphs(page.text)]
        lines.append("</section>")
        parts.append(
            _Document(name=name, label=str(page.number), heading="", body="\n".join(lines),
                      text=page.text)
        )  # fmt: skip
    return parts


def _place(
    illustrations: list[Illustration], chapters: list[AudioChapter]
) -> dict[int, list[Illustration]]:
    """The pictures of each chapter, by chapter position: a picture goes to the first
    chapter reading its page; failing that, to the last starting at or before its page."""
    placed: dict[int, list[Illustration]] = {}
    for illustration in illustrations:
        page = illustration.page_number
        chapter = next((c for c in chapters if any(s.page == page for s in c.sentences)), None)
        if chapter is None:
            before = [c for c in chapters if c.first_page <= page]
            chapter = before[-1] if before else chapters[0]
        placed.setdefault(chapter.position, []).append(illustration)
    return placed


def _take_figures(
    figures: list[Illustration], page: int | None, pictures: dict[int, _Item]
) -> list[str]:
    """The <figure>s of the pictures of `page` (every one left, for None), taken out of
    `figures`."""
    taken = [i for i in figures if page is None or i.page_number == page]
    for illustration in taken:
        figures.remove(illustration)
    return [_figure(i, pictures[i.position]) for i in taken]


def _figure(illustration: Illustration, picture: _Item) -> str:
    size = ""
    if illustration.width > 0 and illustration.height > 0:
        size = f' width="{illustration.width}" height="{illustration.height}"'
    return (
        f'<figure class="picture"><img src="{picture.href}"'
        f' alt="{_esc(illustration.prompt)}"{size}/></figure>'
    )


def _cover(title: str, picture: _Item | None, banner: Illustration | None) -> _Document:
    lines = ['<section id="cover" class="cover" epub:type="cover">']
    if picture is not None and banner is not None:
        lines.append(_figure(banner, picture))
    lines += [f"<h1>{_esc(title)}</h1>", "</section>"]
    return _Document(name="cover", label=title, heading=title, body="\n".join(lines))


def _smil(name: str, pars: list[str]) -> str:
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<smil xmlns="http://www.w3.org/ns/SMIL" xmlns:epub="http://www.idpf.org/2007/ops"'
            ' version="3.0">',
            "<body>",
            f'<seq id="seq-{name}" epub:textref="{name}.xhtml#{name}" epub:type="chapter">',
            *pars,
            "</seq>",
            "</body>",
            "</smil>",
            "",
        ]
    )


def _xhtml(title: str, tag: str, body: str) -> bytes:
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            "<!DOCTYPE html>",
            '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"'
            f' lang="{tag}" xml:lang="{tag}">',
            "<head>",
            '<meta charset="UTF-8"/>',
            f"<title>{_esc(title)}</title>",
            '<link rel="stylesheet" type="text/css" href="style.css"/>',
            "</head>",
            "<body>",
            body,
            "</body>",
            "</html>",
            "",
        ]
    ).encode()


def _nav(title: str, tag: str, parts: list[_Document]) -> bytes:
    entries = [f'<li><a href="{p.name}.xhtml">{_esc(p.label)}</a></li>' for p in parts]
    body = [
        '<nav id="toc" epub:type="toc" role="doc-toc">',
        f"<h1>{_esc(title)}</h1>",
        "<ol>",
        *entries,
        "</ol>",
        "</nav>",
        '<nav id="landmarks" epub:type="landmarks" hidden="hidden">',
        "<ol>",
        f'<li><a epub:type="cover" href="cover.xhtml">{_esc(title)}</a></li>',
    ]
    if parts:
        first = parts[0]
        body.append(
            f'<li><a epub:type="bodymatter" href="{first.name}.xhtml">{_esc(first.label)}</a></li>'
        )
    body += ["</ol>", "</nav>"]
    return _xhtml(title, tag, "\n".join(body))


def _css(fonts: list[_Font]) -> bytes:
    faces, families = [], []
    for font in fonts:
        faces.append(
            f'@font-face {{ font-family: "{font.family}"; font-style: normal;'
            f' font-weight: {font.weight}; src: url("{font.item.href}") format("truetype"); }}'
        )
        if f'"{font.family}"' not in families:
            families.append(f'"{font.family}"')
    stack = ", ".join([*families, "sans-serif"])
    rules = f"""
body {{ font-family: {stack}; line-height: 1.7; margin: 0 1em; }}
h1 {{ font-size: 1.5em; line-height: 1.4; margin: 1em 0 0.8em; }}
p {{ margin: 0 0 1em; }}
figure {{ margin: 1em 0; text-align: center; }}
figure img {{ max-width: 100%; height: auto; }}
.cover {{ text-align: center; }}
.cover h1 {{ font-size: 2em; }}
audio {{ width: 100%; }}
.{ACTIVE_CLASS} {{ background-color: #ffe58f; color: #1a1a1a; }}
"""
    return ("\n".join(faces) + "\n" + rules.lstrip()).encode()


def _fonts(text: str, headings: str) -> list[_Font]:
    """The fonts the text needs, each subset to the characters it shows: Noto Sans, its
    bold for Latin in headings, and Noto Sans of each Indic script the text uses."""
    chosen: list[tuple[Path, str, str, str]] = [(LATIN_REGULAR, LATIN_FAMILY, "normal", text)]
    bold_chars = {c for c in headings if not c.isspace()}
    if bold_chars & _cmap(LATIN_BOLD):
        chosen.append((LATIN_BOLD, LATIN_FAMILY, "bold", headings))
    chosen += [(s.regular, s.family, "normal", text) for s in scripts_in(text)]
    items = []
    for path, family, weight, chars in chosen:
        data = _subset(path, "".join(sorted(set(chars + _SHAPING_CHARS))))
        item = _Item(f"font-{path.stem.lower()}", f"fonts/{path.name}", "font/ttf", data)
        items.append(_Font(item, family, weight))
    return items


@functools.cache
def _cmap(path: Path) -> frozenset[str]:
    font = TTFont(path, lazy=True)
    return frozenset(chr(code) for code in font.getBestCmap())


@functools.lru_cache(maxsize=32)
def _subset(path: Path, chars: str) -> bytes:
    """The font with only the glyphs for chars, every layout feature kept (Indic
    conjuncts and marks are built by them) and its names (copyright, licence) too."""
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    options.hinting = False  # a third of an Indic font; screens today do without
    options.recalc_timestamp = False  # the same bytes every time
    font = subset.load_font(str(path), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=chars)
    subsetter.subset(font)
    out = io.BytesIO()
    subset.save_font(font, out, options)
    return out.getvalue()


def _picture(illustration: Illustration, data: bytes) -> _Item:
    """An illustration as a manifest item; formats EPUB readers need not show (WebP...)
    are converted to PNG."""
    name = f"images/picture-{illustration.position:02d}"
    item_id = f"picture-{illustration.position:02d}"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _Item(item_id, f"{name}.png", "image/png", data)
    if data.startswith(b"\xff\xd8\xff"):
        return _Item(item_id, f"{name}.jpg", "image/jpeg", data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _Item(item_id, f"{name}.gif", "image/gif", data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            converted = image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGBA")
            converted.save(out, format="PNG")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"picture {illustration.url} is not an image: {error}") from error
    return _Item(item_id, f"{name}.png", "image/png", out.getvalue())


def _audio(item_id: str, name: str, data: bytes) -> _Item:
    if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return _Item(item_id, f"{name}.mp3", "audio/mpeg", data)
    if data[4:8] == b"ftyp":
        return _Item(item_id, f"{name}.m4a", "audio/mp4", data)
    raise ValueError(f"{name}: the narration is neither MP3 nor MP4 audio")


def _package(
    source: BookSource,
    *,
    language: Language | None,
    tag: str,
    items: list[_Item],
    spine: list[str],
    durations: dict[str, int],
    pictures: bool,
) -> bytes:
    book = source.book
    key = f"storyloom:{book.story.id}/{book.generation_id}/{language or 'pages'}"
    identifier = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}"
    # The generation's start: the files are the same before and after it is published.
    modified = _utc(book.created_at).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = [
        f'<dc:identifier id="book-id">{identifier}</dc:identifier>',
        f"<dc:title>{_esc(source.title)}</dc:title>",
        f"<dc:language>{tag}</dc:language>",
        f'<meta property="dcterms:modified">{modified}</meta>',
    ]
    if durations:
        meta += [
            f'<meta property="media:duration" refines="#{item_id}">{_clock_ms(ms)}</meta>'
            for item_id, ms in durations.items()
        ]
        meta += [
            f'<meta property="media:duration">{_clock_ms(sum(durations.values()))}</meta>',
            f'<meta property="media:active-class">{ACTIVE_CLASS}</meta>',
        ]
    # What the book offers readers who rely on one sense or another (schema.org).
    modes = ["textual"] + ["visual"] * pictures + ["auditory"] * bool(durations)
    features = ["structuralNavigation", "tableOfContents", "readingOrder"]
    features += ["synchronizedAudioText"] * bool(durations)
    meta += [f'<meta property="schema:accessMode">{m}</meta>' for m in modes]
    meta.append('<meta property="schema:accessModeSufficient">textual</meta>')
    meta += [f'<meta property="schema:accessibilityFeature">{f}</meta>' for f in features]
    meta.append('<meta property="schema:accessibilityHazard">none</meta>')

    manifest = []
    for item in items:
        extra = f' properties="{item.properties}"' if item.properties else ""
        if item.media_overlay:
            extra += f' media-overlay="{item.media_overlay}"'
        manifest.append(
            f'<item id="{item.id}" href="{item.href}" media-type="{item.media_type}"{extra}/>'
        )
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<package xmlns="http://www.idpf.org/2007/opf" version="3.0"'
            f' unique-identifier="book-id" xml:lang="{tag}">',
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">',
            *meta,
            "</metadata>",
            "<manifest>",
            *manifest,
            "</manifest>",
            "<spine>",
            *(f'<itemref idref="{name}"/>' for name in spine),
            "</spine>",
            "</package>",
            "",
        ]
    ).encode()


_CONTAINER = """<?xml version="1.0" encoding="UTF-8"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles>
<rootfile full-path="EPUB/package.opf" media-type="application/oebps-package+xml"/>
</rootfiles>
</container>
"""


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    """The files zipped in their order, each dated 1980-01-01: the same files always give
    the same bytes. The mimetype comes first, stored, with no extra field."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.create_system = 3  # Unix, wherever it runs
            info.external_attr = 0o100644 << 16
            stored = name == "mimetype" or name.endswith(_STORED)
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=None if stored else 9)
    return out.getvalue()


def _language_tag(language: str) -> str:
    """The BCP 47 tag of a narration language, as dc:language: hi-IN -> hi."""
    primary = language.split("-")[0].lower()
    return _TAGS.get(primary, primary)


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _PARAGRAPHS.split(text) if p.strip()]


def _esc(text: str) -> str:
    """Text for XML content or an attribute value: escaped, characters XML forbids gone."""
    return html.escape(_NOT_XML.sub("", text), quote=True)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _clock(seconds: float) -> str:
    return _clock_ms(_ms(seconds))


def _clock_ms(ms: int) -> str:
    """A SMIL full clock value: 0:01:02.345."""
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _position(illustration: Illustration) -> int:
    return illustration.position

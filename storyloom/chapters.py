"""Sentences (Indic scripts too), one-minute narration chapters and speech-sized chunks.

Pure functions: no I/O, no Prefect. The narration flow turns pages into chapters of
about a minute and each chapter into chunks a speech provider accepts in one request.
A chapter never crosses the start of a section, so a section's chapters depend on its
own pages only and stay the same (and cached) when another section is edited.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

_DANDAS = "।॥"
_TERMINATORS = ".?!…" + _DANDAS
_CLOSERS = "\"'”’»›)]}"
_OPENERS = "\"'“‘«‹([{"
_END = re.compile(f"([{re.escape(_TERMINATORS)}]+)([{re.escape(_CLOSERS)}]*)$")
_TOKEN = re.compile(r"\S+")
# A danda ends a sentence even when the next word follows without a space.
_DANDA_PIECE = re.compile(f"[^{_DANDAS}]*[{_DANDAS}]+[{re.escape(_CLOSERS)}]*|[^{_DANDAS}]+")
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")
_CLAUSE_BREAK = re.compile(r"(?<=[,;،，；])\s+")
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")

# Never end a sentence: they always introduce a name or an example.
_TITLES = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "smt", "shri", "sri", "rev", "e.g", "i.e", "cf", "viz"}
    | {"डॉ", "पं", "स्व", "प्रो"}  # Hindi, Marathi: Dr, Pandit, the late, Prof
    | {"திரு", "திருமதி", "செல்வி"}  # Tamil: Mr, Mrs, Miss
)
# End a sentence unless the next word starts in lowercase.
_ABBREVIATIONS = frozenset(
    {"st", "jr", "sr", "etc", "vs", "co", "ltd", "inc", "approx", "fig", "vol", "no"}
)

_CHAPTER_WORDS: dict[str, str] = {
    "hi-IN": "अध्याय",
    "mr-IN": "अध्याय",
    "bn-IN": "অধ্যায়",
    "ta-IN": "அத்தியாயம்",
    "te-IN": "అధ్యాయం",
    "kn-IN": "ಅಧ್ಯಾಯ",
    "ml-IN": "അധ്യായം",
    "gu-IN": "પ્રકરણ",
    "pa-IN": "ਅਧਿਆਇ",
    "od-IN": "ଅଧ୍ୟାୟ",
}


@dataclass(frozen=True)
class ChapterPlan:
    """One planned narration chapter: its text, where it starts, its sentences and the
    page each sentence comes from."""

    position: int
    text: str
    first_page: int
    sentences: tuple[str, ...]
    estimated_seconds: float
    pages: tuple[int, ...] = ()  # one per sentence


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) offsets of each sentence of text, trimmed, in order."""
    tokens = list(_tokens(text))
    words = [text[s:e] for s, e in tokens]
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for i, (s, e) in enumerate(tokens):
        if start is None:
            start = s
        last = i + 1 == len(tokens)
        if (
            last
            or _PARAGRAPH.search(text, e, tokens[i + 1][0]) is not None
            or _ends_sentence(words[i], words[i - 1] if i else None, words[i + 1])
        ):
            spans.append((start, e))
            start = None
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of text, terminators kept, trimmed; paragraph breaks end sentences."""
    return [text[s:e] for s, e in sentence_spans(text)]


def plan_chapters(
    pages: list[tuple[int, str]],
    seconds_per_char: float,
    target_seconds: float = 60.0,
    max_seconds: float = 75.0,
    section_starts: Collection[int] = (),
) -> list[ChapterPlan]:
    """Pack the pages' sentences, in order, into chapters of about target_seconds each.

    A page whose number is in section_starts always begins a new chapter, and each
    section's chapters are planned from its own pages alone.
    """
    if seconds_per_char <= 0:
        raise ValueError(f"seconds_per_char must be positive, got {seconds_per_char}")
    if target_seconds <= 0 or max_seconds < target_seconds:
        raise ValueError(
            f"need 0 < target_seconds <= max_seconds, got {target_seconds} and {max_seconds}"
        )
    max_chars = _max_chars(seconds_per_char, max_seconds)
    sections: list[list[tuple[int, str]]] = []
    for page, page_text in pages:
        if not sections or page in section_starts:
            sections.append([])
        for sentence in split_sentences(page_text):
            if len(sentence) * seconds_per_char > max_seconds:
                sections[-1].extend((page, piece) for piece in _fit(sentence, max_chars))
            else:
                sections[-1].append((page, sentence))
    groups = [
        group
        for items in sections
        for group in _pack(items, seconds_per_char, target_seconds, max_seconds)
    ]

    chapters: list[ChapterPlan] = []
    for position, group in enumerate(groups, start=1):
        sentences = tuple(s for _, s in group)
        text = " ".join(sentences)
        chapters.append(
            ChapterPlan(
                position=position,
                text=text,
                first_page=group[0][0],
                sentences=sentences,
                estimated_seconds=len(text) * seconds_per_char,
                pages=tuple(page for page, _ in group),
            )
        )
    return chapters


def _pack(
    items: list[tuple[int, str]],
    seconds_per_char: float,
    target_seconds: float,
    max_seconds: float,
) -> list[list[tuple[int, str]]]:
    """(page, sentence) items, in order, in chapters as even as the sentences allow.

    As many chapters as make them closest to target_seconds (and enough that none runs
    past max_seconds), cut where the chapters' lengths are most even: a section of 145 s
    becomes two of about 72 s, not 60 + 60 + 25.
    """
    if not items:
        return []
    prefix = [0]
    for _, sentence in items:
        prefix.append(prefix[-1] + len(sentence) + 1)  # a joining space after each

    def chars(a: int, b: int) -> int:
        return prefix[b] - prefix[a] - 1

    total = chars(0, len(items))
    seconds = total * seconds_per_char
    count = max(1, round(seconds / target_seconds), math.ceil(seconds / max_seconds))
    max_chars = max_seconds / seconds_per_char
    for n in range(min(count, len(items)), len(items) + 1):
        cuts = _even_cuts(len(items), n, chars, max_chars)
        if cuts is not None:
            return [items[a:b] for a, b in itertools.pairwise([0, *cuts, len(items)])]
    return [[item] for item in items]  # every sentence fits a chapter alone (_fit)


def _even_cuts(
    count: int, parts: int, chars: Callable[[int, int], int], max_chars: float
) -> list[int] | None:
    """parts-1 cut points over count items minimising the squared distance of each part
    from an even share, no part over max_chars; None when that cannot be done."""
    ideal = chars(0, count) / parts
    cost: dict[int, float] = {0: 0.0}
    back: list[dict[int, int]] = []
    for k in range(1, parts + 1):
        step: dict[int, float] = {}
        came: dict[int, int] = {}
        ends = [count] if k == parts else range(k, count - (parts - k) + 1)
        for end in ends:
            for start, before in cost.items():
                if start >= end or chars(start, end) > max_chars:
                    continue
                weight = before + (chars(start, end) - ideal) ** 2
                if end not in step or weight < step[end]:
                    step[end], came[end] = weight, start
        cost = step
        back.append(came)
    if count not in cost:
        return None
    cuts: list[int] = []
    end = count
    for k in range(parts, 1, -1):
        end = back[k - 1][end]
        cuts.append(end)
    return cuts[::-1]


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Whole sentences packed into chunks of at most max_chars characters, for speech."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    chunks: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        for part in _fit(sentence, max_chars):
            if current and len(current) + 1 + len(part) <= max_chars:
                current = f"{current} {part}"
            else:
                if current:
                    chunks.append(current)
                current = part
    if current:
        chunks.append(current)
    return chunks


def speech_chunks(sentences: Sequence[str], max_chars: int) -> list[list[tuple[int, str]]]:
    """A chapter's sentences packed, in order, into requests of at most max_chars: each
    chunk a list of (sentence index, text) parts. A sentence longer than one request is
    cut (at clauses, then words) into parts that keep its index."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    chunks: list[list[tuple[int, str]]] = []
    size = 0
    for index, sentence in enumerate(sentences):
        for part in _fit(sentence, max_chars):
            if chunks and size + 1 + len(part) <= max_chars:
                chunks[-1].append((index, part))
                size += 1 + len(part)
            else:
                chunks.append([(index, part)])
                size = len(part)
    return chunks


def chapter_title(position: int, language: str) -> str:
    """A chapter's title in the narration language ("Chapter 2", "अध्याय 2" ...)."""
    if position < 1:
        raise ValueError(f"chapter position must be at least 1, got {position}")
    return f"{_CHAPTER_WORDS.get(language, 'Chapter')} {position}"


def _tokens(text: str) -> Iterator[tuple[int, int]]:
    for match in _TOKEN.finditer(text):
        start, end = match.span()
        token = match.group()
        if any(d in token for d in _DANDAS):
            for piece in _DANDA_PIECE.finditer(token):
                yield start + piece.start(), start + piece.end()
        else:
            yield start, end


def _ends_sentence(token: str, previous: str | None, following: str) -> bool:
    match = _END.search(token)
    if match is None:
        return False
    run, closers = match.group(1), match.group(2)
    if any(d in run for d in _DANDAS):
        return True
    lower_next = _starts_lower(following)
    if run != ".":
        # '"Where?" he asked' and 'I thought... maybe' go on after the mark.
        ellipsis = "…" in run or ".." in run
        return not ((closers or ellipsis) and lower_next)
    if closers:
        return not lower_next
    body = token[: match.start()].lstrip(_OPENERS)
    if not body:
        return True
    folded = body.lower()
    if folded in _TITLES:
        return False
    if (folded in _ABBREVIATIONS or _DOTTED.fullmatch(body)) and lower_next:
        return False
    if _is_letter(body):
        # Initials: "A. P. J. Abdul Kalam", "ए. पी. जे. अब्दुल कलाम", "J. Krishnamurti".
        chained = _is_initial(previous) or _is_initial(following)
        named = body[0].isupper() and _starts_upper(following)
        return not (chained or named)
    return True


def _is_letter(body: str) -> bool:
    # One letter with its combining marks: "A", "पी", "ஜே" (one akshara).
    return unicodedata.category(body[0]).startswith("L") and all(
        unicodedata.category(c).startswith("M") for c in body[1:]
    )


def _is_initial(token: str | None) -> bool:
    if token is None or not token.endswith(".") or token.endswith(".."):
        return False
    body = token[:-1].lstrip(_OPENERS)
    return bool(body) and _is_letter(body)


def _first_letter(token: str) -> str:
    return token.lstrip(_OPENERS)[:1]


def _starts_lower(token: str) -> bool:
    return _first_letter(token).islower()


def _starts_upper(token: str) -> bool:
    return _first_letter(token).isupper()


def _chars(group: list[tuple[int, str]]) -> int:
    return sum(len(s) for _, s in group) + len(group) - 1


def _max_chars(seconds_per_char: float, max_seconds: float) -> int:
    limit = max(1, int(max_seconds / seconds_per_char))
    # Float division can round up; the estimate must still fit under max_seconds.
    while limit > 1 and limit * seconds_per_char > max_seconds:
        limit -= 1
    return limit


def _fit(sentence: str, max_chars: int) -> list[str]:
    """Cut a sentence into pieces of at most max_chars: at clauses, then words, then hard."""
    if len(sentence) <= max_chars:
        return [sentence]
    atoms: list[str] = []
    for clause in _CLAUSE_BREAK.split(sentence):
        if len(clause) <= max_chars:
            atoms.append(clause)
            continue
        for word in clause.split():
            atoms.extend(_hard_split(word, max_chars))
    pieces: list[str] = []
    current = ""
    for atom in atoms:
        if current and len(current) + 1 + len(atom) <= max_chars:
            current = f"{current} {atom}"
        else:
            if current:
                pieces.append(current)
            current = atom
    pieces.append(current)
    return pieces


def _hard_split(word: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    start = 0
    while len(word) - start > max_chars:
        cut = start + max_chars
        # Back off so a letter keeps its vowel signs and a conjunct stays whole.
        while cut > start and _joined(word, cut):
            cut -= 1
        if cut == start:
            cut = start + max_chars
        pieces.append(word[start:cut])
        start = cut
    pieces.append(word[start:])
    return pieces


def _joined(word: str, cut: int) -> bool:
    after, before = word[cut], word[cut - 1]
    return (
        unicodedata.category(after).startswith("M")
        or after in "\u200c\u200d"
        or before in "\u200c\u200d"
        or unicodedata.combining(before) == 9  # a virama binds the next consonant
    )

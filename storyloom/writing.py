"""Section budgets in whole pages, the length check and pagination.

Pure functions: no I/O, no Prefect. The story flow asks plan_sections how many pages
(and so words) each section gets, checks what the writer sent back with length_ok, and
cuts each section's text into exactly its own pages with paginate_sections.

Why whole pages: a section that starts on its own page and fills a fixed number of pages
cannot move the pages of any other section, so editing one stage of a life story
changes only that stage's pages, pictures and chapters, and a regeneration pays only
for them. With more sections than pages (seven stages in four pages), consecutive
sections are grouped so that every page starts a group: the sections of a group are
still written one by one, each to its share of the page, and share only that page.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby, pairwise

from storyloom.chapters import sentence_spans
from storyloom.models import Page

_TOKEN = re.compile(r"\S+")
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")
WORDS_PER_CREATIVE_PART = 750
MAX_CREATIVE_PARTS = 12
PAGE_WINDOW = 0.10  # break points may move this share of an average page off target
PAGE_TOLERANCE_PERCENT = 15  # pages stay this close to words_per_page when the total allows
_SLICE_WINDOW = 0.20

# Boundary strengths, strongest preferred.
_WORD, _CLAUSE, _SENTENCE, _PARAGRAPH_END = 0, 1, 2, 3
_CLAUSE_MARKS = ",;:—–"


@dataclass(frozen=True)
class SectionBudget:
    """One section of the book: its key, the teller's material, its words and its pages.

    The section starts on first_page; it fills `pages` pages, shared with the sections of
    its group (the sections with the same first_page) when there are more sections than
    pages.
    """

    key: str
    material: str
    target_words: int
    first_page: int
    pages: int


def _is_word(token: str) -> bool:
    # Vowel signs and viramas are marks, not letters, but a word always has a base letter.
    return any(c.isalnum() for c in token)


def count_words(text: str) -> int:
    """Whitespace-separated tokens holding at least one letter or digit, in any script."""
    return sum(1 for token in text.split() if _is_word(token))


def plan_sections(
    kind: str, material: list[tuple[str, str]], pages: int, words_per_page: int
) -> list[SectionBudget]:
    """Give the story's sections (life stages or creative parts) whole pages, `pages` in all."""
    if pages < 1:
        raise ValueError(f"pages must be at least 1, got {pages}")
    if words_per_page < 1:
        raise ValueError(f"words_per_page must be at least 1, got {words_per_page}")
    if not material or not any(text.strip() for _, text in material):
        raise ValueError("the story has no material to write from")
    if kind == "life":
        # Square root: a stage told in one line still gets room, a long one does not swamp.
        weights = [math.sqrt(max(1, count_words(text))) for _, text in material]
        return _lay_out(material, weights, pages, words_per_page)
    if kind == "creative":
        parts = _creative_parts(material, pages, words_per_page)
        return _lay_out(parts, [1.0] * len(parts), pages, words_per_page)
    raise ValueError(f"unknown story kind {kind!r}: expected 'life' or 'creative'")


def section_starts(
    kind: str, material: list[tuple[str, str]], pages: int, words_per_page: int
) -> frozenset[int]:
    """The pages on which a section (or a group of sections sharing pages) starts."""
    return frozenset(b.first_page for b in plan_sections(kind, material, pages, words_per_page))


def length_gap(actual: int, target: int) -> float:
    """How far actual is from target, relative and signed: -0.1 is 10% short."""
    if target < 1:
        raise ValueError(f"target must be at least 1, got {target}")
    return (actual - target) / target


def length_ok(actual: int, target: int, tolerance: float = 0.05) -> bool:
    """Whether actual is within tolerance (relative) of target."""
    if tolerance < 0:
        raise ValueError(f"tolerance must not be negative, got {tolerance}")
    return abs(length_gap(actual, target)) <= tolerance


def paginate(text: str, pages: int, words_per_page: int) -> list[Page]:
    """Cut text into exactly `pages` pages, each starting at the start of a sentence.

    Pages break at paragraph ends where one is near, else at sentence ends. Only a
    sentence longer than a page may be split inside, at a clause (after , ; : or a dash),
    else at a word. Every page holds between 85% and 115% of words_per_page whenever the
    total allows it; otherwise pages are as even as the sentences allow. A text with
    fewer sentences than pages is the one case where pages break mid-sentence.
    """
    if pages < 1:
        raise ValueError(f"pages must be at least 1, got {pages}")
    if words_per_page < 1:
        raise ValueError(f"words_per_page must be at least 1, got {words_per_page}")
    units = _word_units(text)
    total = len(units)
    if total < pages:
        raise ValueError(f"the text has {total} words, too few for {pages} pages")

    levels = _boundary_levels(text, units)
    low = -(-words_per_page * (100 - PAGE_TOLERANCE_PERCENT) // 100)  # ceiling
    high = words_per_page * (100 + PAGE_TOLERANCE_PERCENT) // 100
    sizes = (low, high) if pages * low <= total <= pages * high else None
    allowed = _allowed_breaks(levels, max(high, -(-total // pages)))
    breaks = _page_breaks(allowed, levels, total, pages, sizes)
    if breaks is None:
        # Fewer sentences than pages: every word boundary is allowed.
        breaks = _page_breaks(list(range(1, total)), levels, total, pages, None)
    assert breaks is not None  # total >= pages: one word a page always fits

    result: list[Page] = []
    bounds = [0, *breaks, total]
    for number, (first, last) in enumerate(pairwise(bounds), start=1):
        page_text = text[units[first][0] : units[last - 1][1]]
        result.append(Page(number=number, text=page_text, words=last - first))
    return result


def _boundary_levels(text: str, units: Sequence[tuple[int, int]]) -> list[int]:
    """levels[j]: the strength of the boundary before word j (levels[0] is unused)."""
    sentence_ends = {end for _, end in sentence_spans(text)}
    levels = [_WORD] * len(units)
    for j in range(1, len(units)):
        gap_start, gap_end = units[j - 1][1], units[j][0]
        if _PARAGRAPH.search(text, gap_start, gap_end):
            levels[j] = _PARAGRAPH_END
        elif gap_start in sentence_ends:
            levels[j] = _SENTENCE
        elif text[gap_start - 1] in _CLAUSE_MARKS:
            levels[j] = _CLAUSE
    return levels


def _allowed_breaks(levels: Sequence[int], longest: int) -> list[int]:
    """Where a page may start: every sentence start, and any word of a sentence longer
    than `longest` words (the page-break costs make its clause starts preferred)."""
    total = len(levels)
    starts = [j for j in range(1, total) if levels[j] >= _SENTENCE]
    allowed: list[int] = []
    for a, b in pairwise([0, *starts, total]):
        if a:
            allowed.append(a)
        if b - a > longest:
            allowed.extend(range(a + 1, b))
    return allowed


def _page_breaks(
    allowed: Sequence[int],
    levels: Sequence[int],
    total: int,
    pages: int,
    sizes: tuple[int, int] | None,
) -> list[int] | None:
    """The pages-1 break points among `allowed` that make the pages most even.

    Dynamic programming over (page, break): the cost of a page is its squared distance
    from the even share, plus a penalty for a weaker boundary (a paragraph end a tenth of
    a page off the even share costs what a sentence end on it does). With sizes=(low,
    high) every page must hold low..high words when any choice allows it; None when no
    choice gives exactly `pages` pages.
    """
    ideal = total / pages
    # Moving a break by d words changes two pages by d: 2 d² in cost.
    unit = 2 * (PAGE_WINDOW * ideal) ** 2
    penalty = {_PARAGRAPH_END: 0.0, _SENTENCE: unit, _CLAUSE: 4 * unit, _WORD: 16 * unit}
    points = [0, *allowed, total]
    # Page sizes tried in turn: the tolerance around words_per_page, the same around the
    # even share, half a share either way, and anything at all.
    ladder = [sizes] if sizes is not None else []
    for spread in (PAGE_TOLERANCE_PERCENT / 100, 0.5):
        ladder.append((max(1, math.floor(ideal * (1 - spread))), math.ceil(ideal * (1 + spread))))
    ladder.append((1, total))
    for lo, hi in ladder:
        # cost[i], back[k][i]: the best k pages ending at points[i].
        cost = {0: 0.0}
        back: list[dict[int, int]] = []
        for k in range(1, pages + 1):
            remaining = pages - k
            step: dict[int, float] = {}
            came: dict[int, int] = {}
            if not cost:
                break
            # Only points reachable from the last step whose remainder still fits the
            # remaining pages.
            reach_lo = max(points[min(cost)] + lo, total - remaining * hi)
            reach_hi = min(points[max(cost)] + hi, total - remaining * lo)
            for i in range(
                max(1, bisect.bisect_left(points, reach_lo)),
                bisect.bisect_right(points, reach_hi),
            ):
                p = points[i]
                if (k == pages) != (p == total):
                    continue
                first = bisect.bisect_left(points, p - hi)
                last = bisect.bisect_right(points, p - lo)
                best: tuple[float, int] | None = None
                for h in range(first, min(last, i)):
                    before = cost.get(h)
                    if before is None:
                        continue
                    size = p - points[h]
                    weight = before + (size - ideal) ** 2
                    if p != total:
                        weight += penalty[levels[p]]
                    if best is None or weight < best[0]:
                        best = (weight, h)
                if best is not None:
                    step[i], came[i] = best
            cost = step
            back.append(came)
        end = len(points) - 1
        if end in cost:
            breaks: list[int] = []
            i = end
            for k in range(pages, 1, -1):
                i = back[k - 1][i]
                breaks.append(points[i])
            return breaks[::-1]
    return None


def paginate_sections(
    texts: Sequence[str], budgets: Sequence[SectionBudget], words_per_page: int
) -> list[Page]:
    """Paginate each section (or group of sections) into exactly its own pages.

    texts[i] is the written text of budgets[i]; the sections of a group are joined as
    paragraphs. Pages are numbered through the book, so a section's pages never depend on
    the length of another section's text.
    """
    if len(texts) != len(budgets):
        raise ValueError(f"{len(texts)} texts for {len(budgets)} sections")
    result: list[Page] = []
    members = zip(budgets, texts, strict=True)
    for (first_page, pages), group in groupby(members, key=lambda m: (m[0].first_page, m[0].pages)):
        if first_page != len(result) + 1:
            raise ValueError(f"a section starts on page {first_page}, not {len(result) + 1}")
        text = "\n\n".join(t.strip() for _, t in group)
        for page in paginate(text, pages, words_per_page):
            number = first_page - 1 + page.number
            result.append(Page(number=number, text=page.text, words=page.words))
    return result


def illustration_pages(pages: int, count: int) -> list[int]:
    """`count` distinct page numbers spread evenly over the book, starting at page 1."""
    if pages < 1:
        raise ValueError(f"pages must be at least 1, got {pages}")
    if count < 0 or count > pages:
        raise ValueError(f"count must be between 0 and pages ({pages}), got {count}")
    return [1 + i * pages // count for i in range(count)]


def _lay_out(
    sections: list[tuple[str, str]], weights: Sequence[float], pages: int, words_per_page: int
) -> list[SectionBudget]:
    """Whole pages per section by weight; with more sections than pages, one page per group."""
    if len(sections) <= pages:
        groups = [[i] for i in range(len(sections))]
        sizes = _apportion(weights, pages)  # at least one page each, as pages >= sections
    else:
        groups = _group(weights, pages)
        sizes = [1] * pages
    if any(words_per_page < len(group) for group in groups):
        raise ValueError(f"{words_per_page} words a page is too few to share between sections")
    budgets: list[SectionBudget] = []
    first_page = 1
    for group, size in zip(groups, sizes, strict=True):
        words = _apportion([weights[i] for i in group], size * words_per_page)
        for i, target in zip(group, words, strict=True):
            key, text = sections[i]
            budgets.append(SectionBudget(key, text, target, first_page, size))
        first_page += size
    return budgets


def _group(weights: Sequence[float], groups: int) -> list[list[int]]:
    """Consecutive sections in `groups` non-empty groups of weights as even as can be.

    Dynamic programming over the cut points, minimising the sum of squared group weights;
    there are at most a dozen sections, so the cubic cost is nothing.
    """
    n = len(weights)
    prefix = [0.0]
    for weight in weights:
        prefix.append(prefix[-1] + weight)
    cost = [[math.inf] * (n + 1) for _ in range(groups + 1)]
    cut = [[0] * (n + 1) for _ in range(groups + 1)]
    cost[0][0] = 0.0
    for k in range(1, groups + 1):
        for j in range(k, n - (groups - k) + 1):
            for i in range(k - 1, j):
                candidate = cost[k - 1][i] + (prefix[j] - prefix[i]) ** 2
                if candidate < cost[k][j]:
                    cost[k][j], cut[k][j] = candidate, i
    bounds = [n]
    for k in range(groups, 0, -1):
        bounds.append(cut[k][bounds[-1]])
    bounds.reverse()
    return [list(range(a, b)) for a, b in pairwise(bounds)]


def _creative_parts(
    material: list[tuple[str, str]], pages: int, words_per_page: int
) -> list[tuple[str, str]]:
    """The creative story's parts: about WORDS_PER_CREATIVE_PART words each, at most one a
    page, each with its slice of the content (or, with too little content, all of it)."""
    parts = dict(material)
    premise, content = parts.get("premise", "").strip(), parts.get("content", "").strip()
    total_words = pages * words_per_page
    # Round half up: 1125 words make two parts, not banker's-rounded ones.
    n = min(
        MAX_CREATIVE_PARTS,
        pages,
        max(1, (2 * total_words + WORDS_PER_CREATIVE_PART) // (2 * WORDS_PER_CREATIVE_PART)),
    )
    slices = _slice_content(content, n) if content else None
    if slices is None:
        # Too little content to share out: every part sees all of it, with the premise.
        shared = "\n\n".join(t for t in (premise, content) if t)
        slices = [shared] * n
    return [(f"part-{i}", piece) for i, piece in enumerate(slices, start=1)]


def _slice_content(content: str, n: int) -> list[str] | None:
    """Cut content into n contiguous slices balanced by words, or None if it is too short."""
    units: list[list[int]] = []  # [start, end, words] per sentence
    for start, end in sentence_spans(content):
        words = count_words(content[start:end])
        if words == 0 and units:
            # A stray mark ("—", "* * *") rides with the sentence before it.
            units[-1][1] = end
        elif units and units[-1][2] == 0:
            units[-1][1:] = [end, words]
        else:
            units.append([start, end, words])
    if len(units) < n:
        return None
    cumulative = [0]
    for unit in units:
        cumulative.append(cumulative[-1] + unit[2])
    levels = [_SENTENCE] * len(units)
    for j in range(1, len(units)):
        if _PARAGRAPH.search(content, units[j - 1][1], units[j][0]):
            levels[j] = _PARAGRAPH_END
    window = _SLICE_WINDOW * cumulative[-1] / n
    bounds = [0, *_choose_breaks(cumulative, levels, n, window, None), len(units)]
    return [content[units[a][0] : units[b - 1][1]] for a, b in pairwise(bounds)]


def _apportion(weights: Sequence[float], total: int) -> list[int]:
    """Integer shares of total proportional to weights (largest remainder), summing to it."""
    whole = sum(weights)
    quotas = [total * w / whole for w in weights]
    shares = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: (shares[i] - quotas[i], i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    # A section with nothing is no section: lend it one when possible, from the share
    # furthest above its quota, so that a larger weight never ends up with less.
    if total >= len(shares):
        for i, share in enumerate(shares):
            if share == 0:
                donor = max(
                    (j for j, s in enumerate(shares) if s > 1),
                    key=lambda j: (shares[j] - quotas[j], -j),
                )
                shares[donor] -= 1
                shares[i] = 1
    return shares


def _word_units(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word, with any lone marks ("—", "।") attached to a neighbour."""
    units: list[tuple[int, int]] = []
    pending: int | None = None  # start of marks seen before the first word
    for match in _TOKEN.finditer(text):
        start, end = match.span()
        if _is_word(match.group()):
            units.append((start if pending is None else pending, end))
            pending = None
        elif units:
            units[-1] = (units[-1][0], end)
        elif pending is None:
            pending = start
    return units


def _choose_breaks(
    cumulative: Sequence[int],
    levels: Sequence[int],
    parts: int,
    window: float,
    sizes: tuple[int, int] | None,
) -> list[int]:
    """Choose parts-1 break indexes into units, each near an even share of the words.

    cumulative[j] is the word count of units[:j] (non-decreasing, len(units)+1 items);
    levels[j] the strength of the boundary before unit j. Within `window` words of the
    ideal point the strongest boundary wins, then the nearest; outside it, the nearest.
    With sizes=(low, high), every part gets between low and high words.
    """
    units = len(cumulative) - 1
    total = cumulative[-1]
    breaks: list[int] = []
    previous = 0
    for k in range(1, parts):
        target = k * total / parts
        first, last = previous + 1, units - (parts - k)  # at least one unit per part
        if sizes is not None:
            low, high = sizes
            remaining = parts - k
            lo_words = max(cumulative[previous] + low, total - remaining * high)
            hi_words = min(cumulative[previous] + high, total - remaining * low)
            narrowed = (
                max(first, bisect.bisect_left(cumulative, lo_words)),
                min(last, bisect.bisect_right(cumulative, hi_words) - 1),
            )
            if narrowed[0] <= narrowed[1]:
                first, last = narrowed
        lo_in = max(first, bisect.bisect_left(cumulative, target - window))
        hi_in = min(last, bisect.bisect_right(cumulative, target + window) - 1)
        if lo_in <= hi_in:
            choice = min(
                range(lo_in, hi_in + 1),
                key=lambda j: (-levels[j], abs(cumulative[j] - target), j),
            )
        else:
            near = min(max(bisect.bisect_left(cumulative, target), first), last)
            choice = min(
                {max(first, near - 1), near},
                key=lambda j: (abs(cumulative[j] - target), j),
            )
        breaks.append(choice)
        previous = choice
    return breaks

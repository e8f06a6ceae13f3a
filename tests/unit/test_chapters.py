"""Sentence splitting, chapter planning, speech chunks and chapter titles."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from storyloom.chapters import (
    chapter_title,
    chunk_text,
    plan_chapters,
    sentence_spans,
    split_sentences,
)

MIXED = "abcdefgh ABCDEFG 0123456789 कखगमनसहािीुेो्ं अबतथ ক খ গ া ি அஆகசதநப ா ி ் .?!।॥…,;\"'”)(— \n\n\n  "
texts = st.text(alphabet=MIXED, max_size=400)


def stream(text: str) -> str:
    """Every non-space character, in order: what no split may lose or reorder."""
    return "".join(text.split())


def sentence(length: int) -> str:
    """A one-token sentence of exactly `length` characters."""
    return "x" * (length - 1) + "."


# ---------------------------------------------------------------- split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The sun rose. The birds sang!", ["The sun rose.", "The birds sang!"]),
        ("Is it? Yes.", ["Is it?", "Yes."]),
        ("What?! No way.", ["What?!", "No way."]),
        ("He said “go home.” She left.", ["He said “go home.”", "She left."]),
        ('"Where?" he asked. Nobody knew.', ['"Where?" he asked.', "Nobody knew."]),
        ("(It rained.) We stayed in.", ["(It rained.)", "We stayed in."]),
        ("Wait… Then go.", ["Wait…", "Then go."]),
        ("I thought... maybe not.", ["I thought... maybe not."]),
        ("It cost 3.5 rupees. Cheap.", ["It cost 3.5 rupees.", "Cheap."]),
        (
            "Dr. Rao met Mr. Iyer and Mrs. Das. They ate.",
            ["Dr. Rao met Mr. Iyer and Mrs. Das.", "They ate."],
        ),
        ("He lived on Park St. near the fort.", ["He lived on Park St. near the fort."]),
        ("Fruit, e.g. mango, i.e. the best.", ["Fruit, e.g. mango, i.e. the best."]),
        (
            "Pots, pans etc. were sold. Then we left.",
            ["Pots, pans etc. were sold.", "Then we left."],
        ),
        ("Martin Luther King Jr. was there.", ["Martin Luther King Jr. was there."]),
        (
            "A. P. J. Abdul Kalam was born in 1931. He flew.",
            ["A. P. J. Abdul Kalam was born in 1931.", "He flew."],
        ),
        ("We read J. Krishnamurti. It helped.", ["We read J. Krishnamurti.", "It helped."]),
        ("A heading\n\nA paragraph without a stop", ["A heading", "A paragraph without a stop"]),
        ("  Line one\nstill one.  \n \n  Two.  ", ["Line one\nstill one.", "Two."]),
        ("No terminator at all", ["No terminator at all"]),
        ("", []),
        (" \n\n \t ", []),
    ],
)
def test_split_sentences_english(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Hindi: the danda ends sentences; double danda too; a spaced danda stays.
        ("मैं घर गया। फिर सो गया।", ["मैं घर गया।", "फिर सो गया।"]),
        ("राम वन गए॥ सीता साथ थीं।", ["राम वन गए॥", "सीता साथ थीं।"]),
        ("वह आया । वह गया ।", ["वह आया ।", "वह गया ।"]),
        ("पहला वाक्य।दूसरा वाक्य।", ["पहला वाक्य।", "दूसरा वाक्य।"]),
        ("क्या तुम आओगे? हाँ!", ["क्या तुम आओगे?", "हाँ!"]),
        ("उसने कहा, “चलो।” हम चले।", ["उसने कहा, “चलो।”", "हम चले।"]),
        ("डॉ. शर्मा आए। बैठे।", ["डॉ. शर्मा आए।", "बैठे।"]),
        ("ए. पी. जे. अब्दुल कलाम आए. फिर गए.", ["ए. पी. जे. अब्दुल कलाम आए.", "फिर गए."]),
        ("திரு. ராமன் வந்தார். அமர்ந்தார்.", ["திரு. ராமன் வந்தார்.", "அமர்ந்தார்."]),
        # Bengali uses the same danda.
        ("আমি বাড়ি গেলাম। তারপর ঘুমালাম।", ["আমি বাড়ি গেলাম।", "তারপর ঘুমালাম।"]),
        # Tamil ends sentences with a full stop.
        (
            "அவன் வீட்டுக்குப் போனான். பிறகு தூங்கினான்.",
            ["அவன் வீட்டுக்குப் போனான்.", "பிறகு தூங்கினான்."],
        ),
        ("ஏ. பி. ஜே. அப்துல் கலாம் வந்தார். மகிழ்ந்தோம்.", ["ஏ. பி. ஜே. அப்துல் கலாம் வந்தார்.", "மகிழ்ந்தோம்."]),
        # Mixed scripts in one text.
        (
            "Amma said, “घर चलो।” We went. அவள் சிரித்தாள்.",
            ["Amma said, “घर चलो।”", "We went.", "அவள் சிரித்தாள்."],
        ),
    ],
)
def test_split_sentences_indic(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_sentence_spans_slice_to_the_sentences() -> None:
    text = "  One.  Two?\n\nThree।"
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["One.", "Two?", "Three।"]
    assert spans == sorted(spans)


@given(texts)
def test_split_sentences_loses_nothing(text: str) -> None:
    sentences = split_sentences(text)
    assert all(s and s == s.strip() for s in sentences)
    assert stream("".join(sentences)) == stream(text)


@given(texts)
def test_sentence_spans_are_ordered_and_disjoint(text: str) -> None:
    spans = sentence_spans(text)
    flat = [offset for span in spans for offset in span]
    assert flat == sorted(flat)
    assert all(s < e for s, e in spans)


# ---------------------------------------------------------------- plan_chapters


def test_no_pages_no_chapters() -> None:
    assert plan_chapters([], 0.07) == []
    assert plan_chapters([(1, ""), (2, "  \n\n ")], 0.07) == []


def test_short_book_is_one_chapter() -> None:
    chapters = plan_chapters([(1, "One. Two."), (2, "Three.")], 0.1)
    assert len(chapters) == 1
    only = chapters[0]
    assert (only.position, only.first_page, only.text) == (1, 1, "One. Two. Three.")
    assert only.sentences == ("One.", "Two.", "Three.")
    assert only.estimated_seconds == pytest.approx(len(only.text) * 0.1)


def test_chapter_closes_when_overshoot_beats_undershoot() -> None:
    # One character is one second; 55 + 12 would overshoot 60 by 8, stopping misses by 5.
    pages = [(1, sentence(55)), (2, sentence(12)), (3, sentence(50))]
    chapters = plan_chapters(pages, 1.0, 60.0, 75.0)
    assert [c.sentences for c in chapters] == [
        (sentence(55),),
        (sentence(12), sentence(50)),
    ]
    assert [c.first_page for c in chapters] == [1, 2]
    assert [c.position for c in chapters] == [1, 2]


def test_chapter_goes_on_when_overshoot_is_smaller() -> None:
    # 50 + 15 overshoots by 6, stopping at 50 would miss by 10: keep going.
    chapters = plan_chapters([(1, f"{sentence(50)} {sentence(15)}")], 1.0, 60.0, 75.0)
    assert len(chapters) == 1
    assert chapters[0].estimated_seconds == 66.0


def test_chapter_never_passes_max_even_if_closer_to_target() -> None:
    pages = [(1, f"{sentence(30)} {sentence(50)} {sentence(40)}")]
    chapters = plan_chapters(pages, 1.0, 60.0, 62.0)
    assert all(c.estimated_seconds <= 62.0 for c in chapters)
    assert [len(c.sentences) for c in chapters] == [1, 1, 1]


def test_short_last_chapter_merges_when_it_fits() -> None:
    chapters = plan_chapters([(1, sentence(60)), (2, sentence(12))], 1.0, 60.0, 75.0)
    assert len(chapters) == 1
    assert chapters[0].estimated_seconds == 73.0
    assert chapters[0].first_page == 1


def test_short_last_chapter_stays_when_merging_would_pass_max() -> None:
    chapters = plan_chapters([(1, sentence(70)), (2, sentence(12))], 1.0, 60.0, 75.0)
    assert [c.estimated_seconds for c in chapters] == [70.0, 12.0]
    assert chapters[1].first_page == 2


def test_short_last_chapter_that_cannot_merge_shares_the_text_evenly() -> None:
    # 30 + 30 and a tail of 12: merged, 74 passes the max of 62; so 30 and 30 + 12.
    pages = [(1, f"{sentence(30)} {sentence(30)}"), (2, sentence(12))]
    chapters = plan_chapters(pages, 1.0, 60.0, 62.0)
    assert [c.sentences for c in chapters] == [(sentence(30),), (sentence(30), sentence(12))]
    assert [c.first_page for c in chapters] == [1, 1]


def test_overlong_sentence_is_split_at_commas_under_max() -> None:
    clause = "word " * 9 + "word,"  # 50 characters
    long_sentence = " ".join([clause] * 4)[:-1] + "."
    chapters = plan_chapters([(3, long_sentence)], 1.0, 60.0, 75.0)
    assert all(c.estimated_seconds <= 75.0 for c in chapters)
    assert len(chapters) > 1
    pieces = [p for c in chapters for p in c.sentences]
    assert all(p.endswith((",", ".")) for p in pieces)
    assert stream(" ".join(pieces)) == stream(long_sentence)
    assert {c.first_page for c in chapters} == {3}


def test_hindi_and_tamil_chapters() -> None:
    hindi = "मैं बचपन में गाँव में रहता था। हर सुबह नदी पर जाता था। " * 6
    tamil = "அவள் பள்ளிக்குச் சென்றாள். மாலையில் வீடு திரும்பினாள். " * 6
    chapters = plan_chapters([(1, hindi), (2, tamil)], 0.1, 20.0, 25.0)
    assert all(c.estimated_seconds <= 25.0 for c in chapters)
    sentences = [s for c in chapters for s in c.sentences]
    assert sentences[0] == "मैं बचपन में गाँव में रहता था।"
    assert sentences[-1] == "மாலையில் வீடு திரும்பினாள்."
    assert all(s.endswith(("।", ".")) for s in sentences)
    assert chapters[0].first_page == 1
    assert chapters[-1].first_page == 2


def test_chapter_text_is_its_sentences_joined() -> None:
    chapters = plan_chapters([(1, "A b c.\n\nD e f. G h।"), (2, "I j k?")], 0.5, 5.0, 7.0)
    for chapter in chapters:
        assert chapter.text == " ".join(chapter.sentences)


@pytest.mark.parametrize(
    ("spc", "target", "maximum"),
    [(0.0, 60.0, 75.0), (-1.0, 60.0, 75.0), (0.1, 60.0, 50.0), (0.1, 0.0, 1.0)],
)
def test_plan_chapters_rejects_bad_timings(spc: float, target: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        plan_chapters([(1, "Hello.")], spc, target, maximum)


@given(
    st.lists(st.tuples(st.integers(1, 200), texts), max_size=6),
    st.floats(0.01, 2.0),
    st.floats(1.0, 60.0),
    st.floats(1.0, 2.0),
)
@settings(max_examples=150)
def test_chapter_properties(
    raw_pages: list[tuple[int, str]], spc: float, target: float, slack: float
) -> None:
    pages = sorted(raw_pages, key=lambda p: p[0])
    maximum = target * slack
    assume(maximum >= spc)  # below that, not even one character fits in a chapter
    chapters = plan_chapters(pages, spc, target, maximum)
    assert [c.position for c in chapters] == list(range(1, len(chapters) + 1))
    assert all(c.estimated_seconds <= maximum for c in chapters)
    assert all(c.text == " ".join(c.sentences) and c.sentences for c in chapters)
    assert stream("".join(c.text for c in chapters)) == stream("".join(t for _, t in pages))
    firsts = [c.first_page for c in chapters]
    assert firsts == sorted(firsts)
    for chapter in chapters:
        # the first sentence begins on first_page: its first characters are there
        page_text = " ".join(t for n, t in pages if n == chapter.first_page)
        assert stream(chapter.sentences[0])[:1] in stream(page_text)


def test_a_section_start_begins_a_new_chapter() -> None:
    pages = [(1, sentence(20)), (2, sentence(20)), (3, sentence(20))]
    assert len(plan_chapters(pages, 1.0, 60.0, 75.0)) == 1

    chapters = plan_chapters(pages, 1.0, 60.0, 75.0, section_starts={1, 2})

    assert [c.sentences for c in chapters] == [(sentence(20),), (sentence(20), sentence(20))]
    assert [(c.position, c.first_page) for c in chapters] == [(1, 1), (2, 2)]


def test_a_short_section_end_is_not_merged_into_the_next_section() -> None:
    pages = [(1, sentence(60)), (2, sentence(12))]
    chapters = plan_chapters(pages, 1.0, 60.0, 75.0, section_starts={2})
    assert [c.estimated_seconds for c in chapters] == [60.0, 12.0]


def sections_of(pages: list[tuple[int, str]], starts: set[int]) -> list[list[tuple[int, str]]]:
    runs: list[list[tuple[int, str]]] = []
    for page in pages:
        if not runs or page[0] in starts:
            runs.append([])
        runs[-1].append(page)
    return runs


@given(
    st.lists(texts, min_size=1, max_size=8),
    st.sets(st.integers(1, 8)),
    st.integers(0, 7),
    texts,
    st.floats(0.01, 0.5),
)
@settings(max_examples=150, deadline=None)
def test_chapters_stay_inside_their_section(
    page_texts: list[str], starts: set[int], edited: int, new_text: str, spc: float
) -> None:
    pages = list(enumerate(page_texts, start=1))
    runs = sections_of(pages, starts)
    changed = list(pages)
    changed[edited % len(pages)] = (edited % len(pages) + 1, new_text)

    def per_section(book: list[tuple[int, str]]) -> list[list[str]]:
        chapters = plan_chapters(book, spc, 20.0, 30.0, section_starts=starts)
        found = []
        for run in sections_of(book, starts):
            numbers = {n for n, _ in run}
            own = [c for c in chapters if c.first_page in numbers]
            # A chapter never crosses a section start: the section's chapters hold exactly
            # its pages' text.
            assert stream("".join(c.text for c in own)) == stream("".join(t for _, t in run))
            found.append([c.text for c in own])
        return found

    before, after = per_section(pages), per_section(changed)
    for i, run in enumerate(runs):
        if all(n != edited % len(pages) + 1 for n, _ in run):
            assert before[i] == after[i]


# ---------------------------------------------------------------- chunk_text


def test_chunk_text_packs_whole_sentences() -> None:
    text = "One two. Three four. Five six seven."
    assert chunk_text(text, 20) == ["One two. Three four.", "Five six seven."]
    assert chunk_text(text, 1000) == [text]


def test_chunk_text_splits_long_sentence_at_commas_then_spaces_then_hard() -> None:
    assert chunk_text("aaa bbb, ccc ddd; eee fff.", 9) == ["aaa bbb,", "ccc ddd;", "eee fff."]
    assert chunk_text("aaaa bbbb cccc dddd.", 9) == ["aaaa bbbb", "cccc", "dddd."]
    assert chunk_text("abcdefghij.", 4) == ["abcd", "efgh", "ij."]


def test_chunk_text_hard_split_keeps_indic_letters_whole() -> None:
    # "नमस्ते" is न म स ् त े: a cut after 4 characters would strand the conjunct स्त.
    assert chunk_text("नमस्ते।", 4) == ["नम", "स्ते", "।"]
    # "தமிழ்" is த மி ழ்: the pulli (virama) stays with its letter.
    assert chunk_text("தமிழ்", 4) == ["தமி", "ழ்"]


def test_chunk_text_hindi_and_tamil() -> None:
    text = "मैं घर गया। फिर सो गया। அவன் போனான். பிறகு தூங்கினான்."
    chunks = chunk_text(text, 25)
    assert chunks == ["मैं घर गया। फिर सो गया।", "அவன் போனான்.", "பிறகு தூங்கினான்."]


def test_chunk_text_empty_and_bad_limit() -> None:
    assert chunk_text("", 10) == []
    assert chunk_text(" \n ", 10) == []
    with pytest.raises(ValueError, match="max_chars"):
        chunk_text("Hello.", 0)


@given(texts, st.integers(1, 120))
@settings(max_examples=200)
def test_chunk_properties(text: str, max_chars: int) -> None:
    chunks = chunk_text(text, max_chars)
    assert all(0 < len(c) <= max_chars for c in chunks)
    assert all(c == c.strip() for c in chunks)
    assert stream("".join(chunks)) == stream(text)


@given(
    st.lists(
        st.text(alphabet="abcdeकखगािअஅகா்.,;?!", min_size=1, max_size=12).filter(
            lambda w: w.strip() == w
        ),
        max_size=60,
    ),
    st.integers(12, 80),
)
def test_chunks_give_back_every_word_in_order(words: list[str], max_chars: int) -> None:
    text = " ".join(words)
    assert " ".join(chunk_text(text, max_chars)).split() == text.split()


# ---------------------------------------------------------------- chapter_title


@pytest.mark.parametrize(
    ("language", "title"),
    [
        ("en-IN", "Chapter 2"),
        ("hi-IN", "अध्याय 2"),
        ("mr-IN", "अध्याय 2"),
        ("bn-IN", "অধ্যায় 2"),
        ("ta-IN", "அத்தியாயம் 2"),
        ("te-IN", "అధ్యాయం 2"),
        ("kn-IN", "ಅಧ್ಯಾಯ 2"),
        ("ml-IN", "അധ്യായം 2"),
        ("gu-IN", "પ્રકરણ 2"),
        ("pa-IN", "ਅਧਿਆਇ 2"),
        ("od-IN", "ଅଧ୍ୟାୟ 2"),
        ("fr-FR", "Chapter 2"),
    ],
)
def test_chapter_title(language: str, title: str) -> None:
    assert chapter_title(2, language) == title


def test_chapter_title_rejects_position_zero() -> None:
    with pytest.raises(ValueError, match="position"):
        chapter_title(0, "en-IN")

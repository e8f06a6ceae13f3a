"""The fact ledger: extraction, presence matching, checks, figures and JSON."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storyloom.facts import (
    Fact,
    FactCheck,
    Figures,
    Ledger,
    SectionLedger,
    check,
    collect,
    entities,
    fact_key,
    figures,
    is_present,
    quotes,
)


def name(text: str) -> Fact:
    return Fact(text, "name")


def place(text: str) -> Fact:
    return Fact(text, "place")


def date(text: str) -> Fact:
    return Fact(text, "date")


def number(text: str) -> Fact:
    return Fact(text, "number")


def quote(text: str) -> Fact:
    return Fact(text, "quote")


CHILDHOOD = """Lakshmi Iyer was born on 12 March 1962 in Madurai, the second of 5 children.
Her father, Mr. Rao, taught at St. Joseph's School near the Meenakshi Temple. Amma's
kitchen always smelled of cardamom. In 1971 the family moved to New Delhi, where Appa
earned 1,200 rupees a month. Every Sunday Grandfather said, “Work hard and stay kind.”
Growing up, she loved the monsoon. The memory of it has stayed bright for years."""

CHILDHOOD_FACTS = (
    name("Lakshmi Iyer"),
    date("12 March 1962"),
    place("Madurai"),
    number("5"),
    name("Mr. Rao"),
    place("St. Joseph's School"),
    place("Meenakshi Temple"),
    name("Amma"),
    date("1971"),
    place("New Delhi"),
    name("Appa"),
    number("1,200"),
    name("Grandfather"),
    quote("Work hard and stay kind"),
)

YOUTH = "In 1980 Lakshmi joined Presidency College in Chennai with her friend Meera."

EXTRA = "Lakshmi's Madurai\nA memoir for her grandson Arjun"

# Says everything of CHILDHOOD in other words: other date form, number word, no line breaks
# where the material had them, a possessive, curly apostrophes and straight quote marks.
FAITHFUL = """On March 12, 1962, in the temple town of Madurai, a girl named Lakshmi
Iyer came into the world, the second of five children. Her father, Mr Rao, was a teacher at
St Joseph’s School, close to the Meenakshi Temple, and Amma’s kitchen always smelled of
cardamom. The family moved to New Delhi in 1971. There Appa earned 1200 rupees each month.
"Work hard and stay kind," Grandfather would tell them every Sunday. The memory of it has
stayed bright for years."""


@pytest.fixture
def ledger() -> Ledger:
    return collect([("childhood", CHILDHOOD), ("youth", YOUTH)], "en-IN", extra=EXTRA)


# ------------------------------------------------------------------------------ extraction


def test_collect_finds_the_facts_of_a_life_stage_in_order(ledger: Ledger) -> None:
    childhood = ledger.section("childhood")
    assert childhood.facts == CHILDHOOD_FACTS
    assert childhood.quotes == (quote("Work hard and stay kind"),)
    assert childhood.entities == CHILDHOOD_FACTS[:-1]
    assert ledger.section("youth").facts == (
        date("1980"),
        name("Lakshmi"),
        place("Presidency College"),
        place("Chennai"),
        name("Meera"),
    )
    assert [s.key for s in ledger.sections] == ["childhood", "youth"]


def test_entities_leave_quotes_out() -> None:
    assert entities(CHILDHOOD, "en-IN") == list(CHILDHOOD_FACTS[:-1])
    assert quotes(CHILDHOOD, "en-IN") == [quote("Work hard and stay kind")]


def test_the_uncle_from_lisbon() -> None:
    assert entities("Uncle Rupert came from Lisbon in 1937.", "en-IN") == [
        name("Uncle Rupert"),
        place("Lisbon"),
        date("1937"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "The memory of it has stayed bright for years.",
        "Those were the days. Looking back, nothing seemed hard.",
        "Somehow the house always felt full. Everyone remembered those evenings.",
        "Years later, she would say it was the happiest time of her life.",
        "Finally, after a long wait, the rains came. Memories like these never fade.",
        "Every Sunday they sat together. It was, she said, enough.",
        "When I think of it now, I smile. Nobody could have known.",
        "She smiled. Time moved on, and the seasons turned, one after another.",
        "Happiness was simple then: a warm meal, a full house, and laughter.",
        "Growing up, they never had much. Still, nothing was missing.",
    ],
)
def test_connective_text_has_no_entities(text: str) -> None:
    assert entities(text, "en-IN") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Born on 12 March 1962.", [date("12 March 1962")]),
        ("Born on March 12, 1962.", [date("March 12, 1962")]),
        ("Born on the 12th of March, 1962.", [date("12th of March, 1962")]),
        ("Born on 12/03/1962 at dawn.", [date("12/03/1962")]),
        ("Born on 1962-03-12 at dawn.", [date("1962-03-12")]),
        ("We met in March 1962 and again on 5 May.", [date("March 1962"), date("5 May")]),
        ("In June it rained.", [date("June")]),
        ("May I come in? Yes.", []),
        ("It was the 1950s, or the '60s.", [date("1950s"), date("'60s")]),
        ("He paid Rs. 1500 for 2000 bricks in 1950.", [
            number("1500"), date("2000"), date("1950")
        ]),
        ("It cost 1500 rupees.", [number("1500")]),
        ("A crowd of 12,00,000 and 3.5 km of road.", [number("12,00,000"), number("3.5")]),
    ],
)  # fmt: skip
def test_dates_and_numbers(text: str, expected: list[Fact]) -> None:
    assert entities(text, "en-IN") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Her teacher was R. K. Narayan.", [name("R. K. Narayan")]),
        ("A. P. J. Abdul Kalam visited.", [name("A. P. J. Abdul Kalam")]),
        ("They banked with the Bank of Baroda.", [name("Bank of Baroda")]),
        ("We lived in Ahmedabad, then Jaipur.", [place("Ahmedabad"), place("Jaipur")]),
        ("Dr. Sharma came, and Dr. came too.", [name("Dr. Sharma")]),
        ("\"I can't,\" said Ravi. Priya's bag fell.", [name("Ravi"), name("Priya")]),
        ("Smt. Kamala Devi sang at Gandhi Road.", [name("Smt. Kamala Devi"), place("Gandhi Road")]),
        ("Mother laughed. Father worked in Kochi.", [
            name("Mother"), name("Father"), place("Kochi")
        ]),
        ("Lakshmi\nIyer went to the\nMeenakshi Temple.", [
            name("Lakshmi Iyer"), place("Meenakshi Temple")
        ]),
        ("Lakshmi Iyer came. Lakshmi sang. Iyer slept.", [name("Lakshmi Iyer")]),
        ("Kumbakonam had temples. We lived in Kumbakonam.", [place("Kumbakonam")]),
    ],
)  # fmt: skip
def test_names_and_places(text: str, expected: list[Fact]) -> None:
    assert entities(text, "en-IN") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He said “we will manage somehow.” Then he left.", ["we will manage somehow"]),
        ('She said "come home now," and smiled.', ["come home now"]),
        ("She said ‘come home now’ near the boys’ bicycles.", ["come home now"]),
        ("Amma’s words: “Eat.” and «Go well, child»", ["Go well, child"]),
        ('"Wait..." she said.', []),
        ('"Are you coming?" "Not today!"', ["Are you coming?", "Not today!"]),
    ],
)
def test_quotes(text: str, expected: list[str]) -> None:
    assert [f.text for f in quotes(text, "en-IN")] == expected


HINDI = (
    "मेरा जन्म 12 मार्च 1962 को मदुरै में हुआ। हम ५ भाई-बहन थे। अम्मा कहती थीं, "
    "“मेहनत करो और दयालु रहो।” १९७१ में हम दिल्ली गए, जहाँ Lakshmi Iyer से मिले।"
)
TAMIL = (
    "நான் 1962ஆம் ஆண்டு மார்ச் 12ஆம் தேதி மதுரையில் பிறந்தேன். எங்கள் வீட்டில் ௫ பேர். "
    'அப்பா சொன்னார்: "கடினமாக உழைக்க வேண்டும்". 1971-ல் Chennai வந்தோம்.'
)


def test_hindi_dates_numbers_quotes_and_latin_names() -> None:
    assert collect([("childhood", HINDI)], "hi-IN").section("childhood").facts == (
        date("12 मार्च 1962"),
        number("५"),
        quote("मेहनत करो और दयालु रहो"),
        date("१९७१"),
        name("Lakshmi Iyer"),
    )


def test_tamil_dates_with_suffixes_numbers_and_quotes() -> None:
    assert collect([("childhood", TAMIL)], "ta-IN").section("childhood").facts == (
        date("1962ஆம் ஆண்டு மார்ச் 12ஆம்"),
        number("௫"),
        quote("கடினமாக உழைக்க வேண்டும்"),
        date("1971"),
        name("Chennai"),
    )


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("১৯৬২ সালের ১২ মার্চ আমার জন্ম। ২৫ টাকা।", "bn-IN", ["১৯৬২ সালের ১২ মার্চ", "২৫"]),
        ("೧೨ ಮಾರ್ಚ್ ೧೯೬೨ ರಂದು", "kn-IN", ["೧೨ ಮಾರ್ಚ್ ೧೯೬೨"]),
        ("ഏപ്രിൽ 1970 ൽ", "ml-IN", ["ഏപ്രിൽ 1970"]),
        ("మార్చి 12, 1962 న", "te-IN", ["మార్చి 12, 1962"]),
        ("૧૯૬૨માં ૩ દીકરા", "gu-IN", ["૧૯૬૨", "૩"]),
        ("ਮੈਂ ੧੯੬੨ ਵਿੱਚ", "pa-IN", ["੧੯੬੨"]),
        ("ମୁଁ ୧୯୬୨ ରେ", "od-IN", ["୧୯୬୨"]),
        ("मेरा नाम राम है और मैं मदुरै में रहता हूँ।", "hi-IN", []),
    ],
)
def test_other_scripts(text: str, language: str, expected: list[str]) -> None:
    assert [f.text for f in entities(text, language)] == expected


def test_a_number_of_any_script_matches_by_value() -> None:
    assert fact_key(number("1,200")) == fact_key(number("1200")) == fact_key(number("१२००"))
    assert fact_key(date("१९७१")) == fact_key(date("1971")) == "date:1971"
    assert fact_key(date("12 March 1962")) == fact_key(date("March 12, 1962"))
    assert fact_key(date("12 मार्च 1962")) == "date:1962-03-12"


# -------------------------------------------------------------------------------- presence


@pytest.mark.parametrize(
    ("fact", "text", "present"),
    [
        (name("Amma"), "It was Amma's kitchen.", True),
        (name("Amma"), "It was amma’s kitchen.", True),
        (name("Amma"), "It was Ammamma's kitchen.", False),
        (name("Lakshmi Iyer"), "Lakshmi\n   Iyer came.", True),
        (name("Lakshmi Iyer"), "Lakshmi came.", False),
        (name("Uncle Rupert"), "Rupert came.", True),
        (place("St. Joseph's School"), "at St Joseph’s School", True),
        (number("1,200"), "1200 rupees", True),
        (number("5"), "five children", True),
        (number("25"), "twenty-five children", True),
        (number("2"), "दो भाई", False),
        (number("1500"), "a payment of 1,500", True),
        (date("12 March 1962"), "on March 12, 1962", True),
        (date("12 March 1962"), "on 12.03.1962", True),
        (date("12 March 1962"), "in March 1962", False),
        (date("1962"), "on 12 March 1962", True),
        (date("March"), "on 12 March 1962", True),
        (date("1960s"), "in 1962", True),
        (date("1962"), "१९६२ में", True),
        (quote("Work hard and stay kind"), "“Work hard and  stay\nkind.”", True),
        (quote("Work hard and stay kind"), "Work hard, stay kind.", False),
        (quote("Work hard and stay kind"), "work hard and stay kind", False),
        (quote("Don’t go"), '"Don\'t go!"', True),
    ],
)
def test_presence(fact: Fact, text: str, present: bool) -> None:
    assert is_present(fact, text, "en-IN") is present


def test_hindi_number_words_count_in_hindi() -> None:
    assert is_present(number("2"), "हम दो भाई थे।", "hi-IN")
    assert not is_present(number("2"), "हम दोन भाऊ होतो.", "hi-IN")
    assert is_present(number("2"), "हम दोन भाऊ होतो.", "mr-IN")


# ----------------------------------------------------------------------------------- check


def test_a_faithful_rewrite_passes(ledger: Ledger) -> None:
    result = check(FAITHFUL, ledger.section("childhood"), ledger, "en-IN")
    assert result == FactCheck(invented=(), missing=(), altered=())
    assert result.ok


def test_check_finds_invented_dropped_and_altered_facts(ledger: Ledger) -> None:
    text = """Lakshmi Iyer was born in Madurai in 1962, the second of 5 children. Her father,
Mr. Rao, taught at St. Joseph's School near the Meenakshi Temple. Amma's kitchen smelled of
cardamom. In 1971 the family moved to New Delhi, where Appa earned 1,200 rupees a month, and
in 1975 Uncle Rupert arrived from Lisbon. Grandfather said, “Work hard, stay kind.”"""
    result = check(text, ledger.section("childhood"), ledger, "en-IN")
    assert result.invented == (date("1975"), name("Uncle Rupert"), place("Lisbon"))
    assert result.missing == (date("12 March 1962"),)
    assert result.altered == (quote("Work hard and stay kind"),)
    assert not result.ok
    assert result.to_json() == {
        "ok": False,
        "invented": [
            {"text": "1975", "kind": "date"},
            {"text": "Uncle Rupert", "kind": "name"},
            {"text": "Lisbon", "kind": "place"},
        ],
        "missing": [{"text": "12 March 1962", "kind": "date"}],
        "altered": [{"text": "Work hard and stay kind", "kind": "quote"}],
    }


def test_other_sections_title_and_premise_are_known(ledger: Ledger) -> None:
    # Chennai and Meera come from another section, Arjun from the premise; the names'
    # parts, a year of a known date, its month and decade, and "Mother" are known too.
    text = (
        CHILDHOOD + " Years later Meera wrote from Chennai to Arjun. Lakshmi loved the 1960s,"
        " every March, and 1962 most. Grandfather's Madurai was home."
    )
    assert check(text, ledger.section("childhood"), ledger, "en-IN").ok


def test_kinship_words_of_the_material_are_known_in_any_case() -> None:
    ledger = collect([("a", "my mother sang to us every night.")], "en-IN")
    assert check("Mother sang every night.", ledger.sections[0], ledger, "en-IN").ok
    assert check("Father sang.", ledger.sections[0], ledger, "en-IN").invented == (name("Father"),)


def test_a_number_word_of_the_material_supports_digits() -> None:
    ledger = collect([("a", "We were three sisters.")], "en-IN")
    assert ledger.sections[0].facts == ()
    assert check("We were 3 sisters.", ledger.sections[0], ledger, "en-IN").ok
    assert not check("We were 4 sisters.", ledger.sections[0], ledger, "en-IN").ok


def test_check_in_hindi() -> None:
    ledger = collect([("childhood", HINDI)], "hi-IN")
    section = ledger.section("childhood")
    faithful = (
        "मैं १२ मार्च १९६२ को मदुरै में पैदा हुई। हम पाँच भाई-बहन थे। "
        'अम्मा कहती थीं, "मेहनत करो और दयालु रहो"। 1971 में हम दिल्ली आए और Lakshmi Iyer से मिले।'
    )
    assert check(faithful, section, ledger, "hi-IN").ok
    unfaithful = "मैं 1963 में पैदा हुई। Rupert मेरे चाचा थे। अम्मा कहती थीं, “मेहनत करो, दयालु रहो।”"
    assert check(unfaithful, section, ledger, "hi-IN") == FactCheck(
        invented=(date("1963"), name("Rupert")),
        missing=(date("12 मार्च 1962"), number("५"), date("१९७१"), name("Lakshmi Iyer")),
        altered=(quote("मेहनत करो और दयालु रहो"),),
    )


# --------------------------------------------------------------------------------- figures


def test_figures_of_a_scripted_book() -> None:
    ledger = collect(
        [
            ("a", "Lakshmi was born in Madurai in 1962."),  # Lakshmi, Madurai, 1962
            ("b", "She had 3 brothers and moved to Chennai."),  # 3, Chennai
        ],
        "en-IN",
    )
    texts = [
        "Lakshmi was born in Madurai in 1962.",
        # Pune and 1975 are invented; Chennai is dropped; Lakshmi is counted once.
        "Lakshmi moved to Pune with her 3 brothers in 1975.",
    ]
    result = figures(texts, ledger, "en-IN")
    assert result == Figures(
        precision=4 / 6, recall=4 / 5, generated=6, supported=4, ledger=5, found=4
    )
    assert result.to_json()["recall"] == 0.8


def test_figures_without_entities_are_none() -> None:
    ledger = collect([("a", "The days were long.")], "en-IN")
    assert figures(["It rained."], ledger, "en-IN") == Figures(
        precision=None, recall=None, generated=0, supported=0, ledger=0, found=0
    )


def test_figures_of_the_faithful_book(ledger: Ledger) -> None:
    result = figures([FAITHFUL, YOUTH], ledger, "en-IN")
    assert (result.precision, result.recall) == (1.0, 1.0)
    assert (result.ledger, result.found) == (18, 18)


# ------------------------------------------------------------------------------------ JSON


def test_ledger_json_round_trip(ledger: Ledger) -> None:
    data = ledger.to_json()
    assert data["sections"][1] == {
        "key": "youth",
        "facts": [
            {"text": "1980", "kind": "date"},
            {"text": "Lakshmi", "kind": "name"},
            {"text": "Presidency College", "kind": "place"},
            {"text": "Chennai", "kind": "place"},
            {"text": "Meera", "kind": "name"},
        ],
    }
    assert "name:arjun" in data["known"]
    assert data["known"] == sorted(data["known"])
    assert Ledger.from_json(data) == ledger


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"sections": [], "known": "x"},
        {"sections": [{"key": "a"}], "known": []},
        {"sections": [{"key": "a", "facts": [{"text": "x", "kind": "person"}]}], "known": []},
        {"sections": [{"facts": []}], "known": []},
        {"sections": [], "known": [1]},
    ],
)
def test_ledger_from_bad_json(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        Ledger.from_json(data)


def test_ledger_sections() -> None:
    ledger = collect([("part-1", "Rupert sailed."), ("part-2", "")], "en-IN")
    assert ledger.section("part-2") == SectionLedger(key="part-2", facts=())
    with pytest.raises(KeyError):
        ledger.section("part-3")
    with pytest.raises(ValueError, match="twice"):
        collect([("a", "x"), ("a", "y")], "en-IN")


# ------------------------------------------------------------------------------ properties

FIRST = ["Lakshmi", "Ravi", "Meera", "Arjun", "Kamala", "Rupert"]
LAST = ["Iyer", "Kumar", "Pillai", "Sharma", "Das"]
PLACES = ["Madurai", "Chennai", "Lisbon", "Kanpur", "Hyderabad", "Kochi"]
MONTHS = ["January", "March", "June", "August", "October", "December"]
CONNECTIVE = [
    "The memory of it has stayed bright for years.",
    "Those were the days.",
    "Nothing was ever the same again.",
    "Looking back, it all seemed simple.",
]


@st.composite
def material(draw: st.DrawFn) -> str:
    sentences: list[str] = []
    for _ in range(draw(st.integers(1, 6))):
        who = f"{draw(st.sampled_from(FIRST))} {draw(st.sampled_from(LAST))}"
        where = draw(st.sampled_from(PLACES))
        year = draw(st.integers(1900, 2020))
        day = draw(st.integers(1, 28))
        month = draw(st.sampled_from(MONTHS))
        count = draw(st.integers(2, 999))
        sentences.append(
            draw(
                st.sampled_from(
                    [
                        f"{who} moved to {where} in {year}.",
                        f"On {day} {month} {year}, {who} saw {count} lamps.",
                        f'{who} said, "we stayed in {where} for {count} days."',
                        f"In {where}, {who} was born on {month} {day}, {year}.",
                        draw(st.sampled_from(CONNECTIVE)),
                    ]
                )
            )
        )
    return draw(st.sampled_from([" ", "\n"])).join(sentences)


@settings(max_examples=60, deadline=None)
@given(st.lists(material(), min_size=1, max_size=3))
def test_the_material_itself_passes_its_own_checks(texts: list[str]) -> None:
    ledger = collect([(f"part-{i}", text) for i, text in enumerate(texts)], "en-IN")
    for section, text in zip(ledger.sections, texts, strict=True):
        assert check(text, section, ledger, "en-IN").ok
        keys = [fact_key(fact) for fact in section.facts]
        assert len(keys) == len(set(keys))
    result = figures(texts, ledger, "en-IN")
    assert result.precision in (1.0, None)
    assert result.recall in (1.0, None)
    assert Ledger.from_json(ledger.to_json()) == ledger


MIXED = "abAB Ma Mr. St 0123 १२३ ௫ ক খ া ি அ ா ் मार्च March .?!।,'’‘“”\"- \n"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=MIXED, max_size=200))
def test_extraction_never_fails_and_never_repeats(text: str) -> None:
    found = entities(text, "hi-IN")
    keys = [fact_key(fact) for fact in found]
    assert len(keys) == len(set(keys))
    assert all(fact.kind in ("name", "place", "date", "number") for fact in found)
    ledger = collect([("a", text)], "hi-IN")
    assert check(text, ledger.sections[0], ledger, "hi-IN").ok

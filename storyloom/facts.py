"""A fact ledger: the names, places, dates, numbers and quotes of the teller's material.

Pure functions: no I/O, no Prefect. Before writing, `collect` gathers the facts of each
section's material (a life stage or a creative part) into a `Ledger`. After a model writes a
section, `check` compares its text with the ledger: an entity of the text that the book's
material never mentions is *invented*, an entity of the section's material absent from the
text is *missing*, and a quote of the material not found verbatim in the text is *altered*.
`figures` gives the book's entity precision and recall.

Why rules and not a model: no maintained named-entity library serves English and the Indian
scripts while installing from the package registry alone (spaCy, Stanza, Flair and GLiNER
all fetch their models from elsewhere at run time). This module is the rule-based fallback.

What it detects
---------------
Any script:
  * dates: years 1000-2099 standing alone, decades ("1950s", "1950's", "'50s"), day + month
    (+ year) and month + day (+ year) in either order ("12 March 1962", "March 12, 1962",
    "the 12th of March", "March 1962"), numeric dates "12/03/1962", "12-03-1962",
    "12.03.1962" (day first, as in India, unless only month first is valid) and
    "1962-03-12"; in Indian-language order also year (+ one word) + month + day and year
    (+ one word) + day + month ("1962ஆம் ஆண்டு மார்ச் 12", "১৯৬২ সালের ১২ মার্চ"). Month
    names are English (capitalised; abbreviations like "Sept." only next to a number) or the
    Indian-script names of the Gregorian months (Devanagari, Bengali, Gurmukhi, Gujarati,
    Odia, Tamil, Telugu, Kannada, Malayalam); an Indian-script month counts only next to a
    day or year number. Days and years may carry an attached Indian-script suffix
    ("1962ஆம்", "12-ஆம்"), and so may Tamil, Telugu, Kannada and Malayalam month names
    ("மார்ச்சில்"). A capitalised English month name alone ("in June") is a date, except
    "May" at the start of a sentence.
  * numbers: runs of decimal digits of any script (Devanagari, Bengali, Tamil, Telugu,
    Gujarati, Gurmukhi, Kannada, Malayalam, Odia, ASCII...), with Western ("1,200,000") or
    Indian ("12,00,000") grouping and a decimal part; digits inside a date are not counted
    again; a four-digit number 1000-2099 is a year unless money or a unit follows or
    precedes it ("Rs. 1500", "1500 rupees"). Number words are not extracted (they read as
    connective text: "one day", "the two of them"), but they do satisfy a number fact when
    checking presence: English up to ninety-nine plus "a hundred"/"a thousand" for every
    language, and the common Hindi or Marathi number words when the language is hi or mr.
  * quotes: text inside "...", “...”, «...» and ‘...’ (the last only when the opening mark
    follows a space or a bracket and the closing mark is not followed by a letter, so
    apostrophes are not quotes) of at least two words; trailing ",", ";", ":" and "." are
    not part of the quote.

Latin script (English, and Latin-script words inside Indian-language text):
  * names and places: capitalised words and runs of them ("Lakshmi Iyer", "New Delhi",
    "St. Joseph's School", "R. K. Narayan", "Bank of Baroda"), joined across spaces, single
    line breaks, hyphens, and the dot after a title or an initial. A possessive ends a run
    (unless a place word follows) and is not part of the fact ("Amma's" gives "Amma").
    Stopwords (pronouns, determiners, conjunctions, prepositions, common adverbs and
    sentence-starting words, weekdays, number words) never start or join a run. A word at
    the start of a sentence is an entity only if it is not a stopword and does not look like
    an ordinary word: it is not written in lowercase elsewhere in the same text and does not
    end like an adverb, gerund or abstract noun ("Finally", "Growing", "Happiness"), unless
    it also appears capitalised mid-sentence or starts a run of capitalised words. A later
    word of an earlier multi-word name is no new fact ("Lakshmi" after "Lakshmi Iyer").
  * kinship words and honorifics ("Amma", "Appa", "Paati", "Grandfather", "Uncle") are
    names even alone; titles ("Mr.", "Dr.", "Smt.", "St.") only with a name after them.
  * a run is a place when it contains a place word (Street, Road, Nagar, School, College,
    Village, City, Temple...), ends in a place suffix (-pur, -puram, -abad, -nagar, -ganj,
    -garh, -halli, -palayam, -kottai, -wadi...), or follows "in/at/from/to/near/into/
    towards/outside/across/via" (unless it is a kinship or title run or possessive);
    otherwise it is a name.

Matching
--------
A name or place is present in a text when its words appear in order, ignoring case, dots,
apostrophes, hyphens and whitespace (line breaks too) between them, not inside a longer
word; possessives therefore match ("Amma's" contains "Amma"), and a titled name is also
present through its name alone ("Uncle Rupert" through "Rupert"). Numbers match by value
("1,200" == "1200" == "१२००"), also against a number word. A date is present when the text
holds a date at least as precise with the same parts in any supported form: "12 March 1962"
is present in "March 12, 1962" or "12/03/1962", the year "1962" in any date of 1962 or the
bare number, "March" in any March date, "1960s" in any year of the decade. A quote is
present when its words appear verbatim (case-sensitive) after whitespace is collapsed and
curly quote marks are made straight.

An entity of a generated text is supported (not invented) when its normalised key is in
`Ledger.known`, which holds every entity of the book's material and of the extra text
(title, premise) together with their parts: the words of multi-word names, the name of a
titled name, every coarser form of a date (year, decade, month, month-day, year-month),
years as numbers and numbers as years, the values of number words in the material, and
kinship words written in any case ("my mother" lets the book say "Mother"). A multi-word
generated name whose every word is known is supported too ("Uncle Rupert" when "Rupert" is
known; but also "Lakshmi Rao" when "Lakshmi Iyer" and "Mr. Rao" are: words, not people).

Keys of `Ledger.known`: "name:<lowercased words>" for names and places alike (a place may be
mentioned as a name: "Madurai was hot"), "date:<ISO-like>" ("date:1962-03-12", "date:1962-03",
"date:1962", "date:1960s", "date:--03-12", "date:--03") and "number:<value>" ("number:1200").

What it cannot do
-----------------
  * Names and places written in Indian scripts are not detected: those scripts have no
    capital letters, and telling a name from a word needs a trained model or a lexicon.
    Indian-language text yields dates, numbers, quotes and Latin-script names only.
  * Lowercase names ("lakshmi"), names that are also stopwords ("Will", "Dear", "May" at a
    sentence start), and sentence-initial names that the same text also uses as ordinary
    lowercase words ("Rose" with "the sun rose") are missed. A month before a name is read
    as a date ("June Carter" gives June and Carter).
  * A multi-word name is present only in full ("Lakshmi" alone leaves "Lakshmi Iyer"
    missing); only a title or kinship word may be dropped ("Mr. Rao" through "Rao").
  * Capitalised common words in Title Case headings are taken for names, and so are
    sentence-initial common nouns missing from the stopword list ("Room 12 was ours");
    capitalised non-names mid-sentence ("the Partition", "Tamil songs") count as names.
  * Place versus name is a guess from context and spelling; the two share one key, so the
    guess never changes a check's outcome.
  * Dates written in words ("the fifties", "nineteen sixty-two"), relative dates ("two
    years later"), Indian calendars and eras (Saka, Vikram Samvat), and two-digit years
    are not understood; month-first numeric dates are read day-first when both fit.
  * Spelling variants and transliterations ("Chennai"/"Madras", "Lakshmi"/"Laxmi") are
    different names.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal, cast

FactKind = Literal["name", "place", "date", "number", "quote"]
FACT_KINDS: tuple[FactKind, ...] = ("name", "place", "date", "number", "quote")


# ------------------------------------------------------------------------------ data types


@dataclass(frozen=True)
class Fact:
    """One fact as written in the material: a name, place, date, number or quote's words."""

    text: str
    kind: FactKind

    def to_json(self) -> dict[str, str]:
        return {"text": self.text, "kind": self.kind}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fact:
        text, kind = data.get("text"), data.get("kind")
        if not isinstance(text, str) or kind not in FACT_KINDS:
            raise ValueError(f"not a fact: {data!r}")
        return cls(text=text, kind=cast("FactKind", kind))


@dataclass(frozen=True)
class SectionLedger:
    """The facts of one section's material, in order of first appearance, without duplicates."""

    key: str
    facts: tuple[Fact, ...]

    @property
    def entities(self) -> tuple[Fact, ...]:
        """Names, places, dates and numbers: everything but the quotes."""
        return tuple(fact for fact in self.facts if fact.kind != "quote")

    @property
    def quotes(self) -> tuple[Fact, ...]:
        return tuple(fact for fact in self.facts if fact.kind == "quote")


@dataclass(frozen=True)
class Ledger:
    """The facts of every section, plus the keys of everything the book may mention."""

    sections: tuple[SectionLedger, ...]
    known: frozenset[str]

    def section(self, key: str) -> SectionLedger:
        for section in self.sections:
            if section.key == key:
                return section
        raise KeyError(f"the ledger has no section {key!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "sections": [
                {"key": s.key, "facts": [fact.to_json() for fact in s.facts]} for s in self.sections
            ],
            "known": sorted(self.known),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        raw_sections = data.get("sections")
        raw_known = data.get("known")
        if not isinstance(raw_sections, list) or not isinstance(raw_known, list):
            raise ValueError("a ledger needs a list of sections and a list of known keys")
        sections: list[SectionLedger] = []
        for raw in raw_sections:
            if not isinstance(raw, dict) or not isinstance(raw.get("key"), str):
                raise ValueError(f"not a section ledger: {raw!r}")
            facts = raw.get("facts")
            if not isinstance(facts, list):
                raise ValueError(f"section {raw['key']!r} has no list of facts")
            sections.append(
                SectionLedger(key=raw["key"], facts=tuple(Fact.from_json(f) for f in facts))
            )
        if not all(isinstance(key, str) for key in raw_known):
            raise ValueError("known keys must be strings")
        return cls(sections=tuple(sections), known=frozenset(raw_known))


@dataclass(frozen=True)
class FactCheck:
    """What a section's text invents, drops and misquotes."""

    invented: tuple[Fact, ...]
    missing: tuple[Fact, ...]
    altered: tuple[Fact, ...]

    @property
    def ok(self) -> bool:
        return not (self.invented or self.missing or self.altered)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "invented": [fact.to_json() for fact in self.invented],
            "missing": [fact.to_json() for fact in self.missing],
            "altered": [fact.to_json() for fact in self.altered],
        }


@dataclass(frozen=True)
class Figures:
    """Entity precision and recall of a whole book against its ledger.

    Entities are counted once each per book (by normalised key), however often they occur.
    """

    precision: float | None
    recall: float | None
    generated: int
    supported: int
    ledger: int
    found: int

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "generated": self.generated,
            "supported": self.supported,
            "ledger": self.ledger,
            "found": self.found,
        }


# ---------------------------------------------------------------------------- vocabularies


def _words(text: str) -> tuple[str, ...]:
    """The whitespace-separated words of a vocabulary written as one string."""
    return tuple(text.split())


def _indic_letters() -> str:
    """A character-class body for the letters and marks of the Indian scripts.

    Devanagari to Malayalam, without digits, dandas and signs, plus the zero-width (non-)joiner:
    Python's \\w misses the vowel signs and viramas. Unassigned code points (which no text
    holds) join the ranges around them: 20 ranges instead of 100, and the date patterns,
    which repeat the class about 1,400 times, compile seven times faster.
    """
    ranges: list[tuple[int, int]] = []
    for code in range(0x0900, 0x0E00):
        category = unicodedata.category(chr(code))
        if category[0] in "LM" or category == "Cn":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    body = "".join(f"\\u{a:04x}-\\u{b:04x}" if a < b else f"\\u{a:04x}" for a, b in ranges)
    return body + "\\u200c\\u200d"


_INDIC = _indic_letters()
_INDIC_LETTER = f"[{_INDIC}]"
_WORD_CHAR = rf"(?:[^\W_]|{_INDIC_LETTER})"
_DRAVIDIAN = ("\u0b80", "\u0d7f")  # Tamil, Telugu, Kannada, Malayalam blocks

_LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
_LATIN_CHAR = re.compile(f"[{_LATIN}]")
_TOKEN = re.compile(rf"[{_LATIN}]+(?:['’][{_LATIN}]+)*")

_EN_MONTHS: dict[str, int] = {
    name: number
    for number, names in enumerate(
        (
            "January Jan",
            "February Feb",
            "March Mar",
            "April Apr",
            "May",
            "June Jun",
            "July Jul",
            "August Aug",
            "September Sept Sep",
            "October Oct",
            "November Nov",
            "December Dec",
        ),
        start=1,
    )
    for name in names.split()
}
_EN_FULL_MONTHS = frozenset(
    _words("January February March April May June July August September October November December")
)

# The Gregorian months in the Indian scripts, January first, spelling variants space-separated.
_INDIC_MONTHS_BY_SCRIPT: tuple[tuple[str, ...], ...] = (
    (  # Devanagari: Hindi, then Marathi spellings
        "जनवरी जानेवारी",
        "फ़रवरी फरवरी फेब्रुवारी",
        "मार्च",
        "अप्रैल अप्रेल एप्रिल",
        "मई मे",
        "जून",
        "जुलाई जुलै",
        "अगस्त ऑगस्ट",
        "सितंबर सितम्बर सप्टेंबर",
        "अक्टूबर अक्तूबर ऑक्टोबर",
        "नवंबर नवम्बर नोव्हेंबर",
        "दिसंबर दिसम्बर डिसेंबर",
    ),
    (  # Bengali
        "জানুয়ারি জানুয়ারী",
        "ফেব্রুয়ারি ফেব্রুয়ারী",
        "মার্চ",
        "এপ্রিল",
        "মে",
        "জুন",
        "জুলাই",
        "আগস্ট",
        "সেপ্টেম্বর",
        "অক্টোবর",
        "নভেম্বর",
        "ডিসেম্বর",
    ),
    (  # Gurmukhi
        "ਜਨਵਰੀ",
        "ਫ਼ਰਵਰੀ ਫਰਵਰੀ",
        "ਮਾਰਚ",
        "ਅਪ੍ਰੈਲ ਅਪਰੈਲ",
        "ਮਈ",
        "ਜੂਨ",
        "ਜੁਲਾਈ",
        "ਅਗਸਤ",
        "ਸਤੰਬਰ",
        "ਅਕਤੂਬਰ",
        "ਨਵੰਬਰ",
        "ਦਸੰਬਰ",
    ),
    (  # Gujarati
        "જાન્યુઆરી",
        "ફેબ્રુઆરી",
        "માર્ચ",
        "એપ્રિલ",
        "મે",
        "જૂન",
        "જુલાઈ",
        "ઓગસ્ટ",
        "સપ્ટેમ્બર",
        "ઓક્ટોબર",
        "નવેમ્બર",
        "ડિસેમ્બર",
    ),
    (  # Odia
        "ଜାନୁଆରୀ",
        "ଫେବୃଆରୀ",
        "ମାର୍ଚ୍ଚ",
        "ଅପ୍ରେଲ ଏପ୍ରିଲ",
        "ମେ",
        "ଜୁନ",
        "ଜୁଲାଇ",
        "ଅଗଷ୍ଟ",
        "ସେପ୍ଟେମ୍ବର",
        "ଅକ୍ଟୋବର",
        "ନଭେମ୍ବର",
        "ଡିସେମ୍ବର",
    ),
    (  # Tamil
        "ஜனவரி",
        "பிப்ரவரி",
        "மார்ச் மார்ச்சு",
        "ஏப்ரல்",
        "மே",
        "ஜூன்",
        "ஜூலை",
        "ஆகஸ்ட் ஆகஸ்டு",
        "செப்டம்பர்",
        "அக்டோபர்",
        "நவம்பர்",
        "டிசம்பர்",
    ),
    (  # Telugu
        "జనవరి",
        "ఫిబ్రవరి",
        "మార్చి",
        "ఏప్రిల్",
        "మే",
        "జూన్",
        "జూలై జులై",
        "ఆగస్టు ఆగష్టు",
        "సెప్టెంబరు సెప్టెంబర్",
        "అక్టోబరు అక్టోబర్",
        "నవంబరు నవంబర్",
        "డిసెంబరు డిసెంబర్",
    ),
    (  # Kannada
        "ಜನವರಿ",
        "ಫೆಬ್ರವರಿ",
        "ಮಾರ್ಚ್",
        "ಏಪ್ರಿಲ್",
        "ಮೇ",
        "ಜೂನ್",
        "ಜುಲೈ",
        "ಆಗಸ್ಟ್",
        "ಸೆಪ್ಟೆಂಬರ್",
        "ಅಕ್ಟೋಬರ್",
        "ನವೆಂಬರ್",
        "ಡಿಸೆಂಬರ್",
    ),
    (  # Malayalam
        "ജനുവരി",
        "ഫെബ്രുവരി",
        "മാർച്ച്",
        "ഏപ്രിൽ",
        "മേയ് മെയ്",
        "ജൂൺ",
        "ജൂലൈ",
        "ഓഗസ്റ്റ് ആഗസ്റ്റ്",
        "സെപ്റ്റംബർ",
        "ഒക്ടോബർ",
        "നവംബർ",
        "ഡിസംബർ",
    ),
)
_INDIC_MONTHS: dict[str, int] = {
    unicodedata.normalize("NFC", name): number
    for script in _INDIC_MONTHS_BY_SCRIPT
    for number, names in enumerate(script, start=1)
    for name in names.split()
}

_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday"
_NUMBER_WORDS_EN: dict[str, int] = {
    word: value
    for value, word in enumerate(
        _words(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen"
        )
    )
}
_TENS_EN: dict[str, int] = {
    word: 10 * value
    for value, word in enumerate(
        _words("twenty thirty forty fifty sixty seventy eighty ninety"), start=2
    )
}
_NUMBER_WORDS_BY_LANGUAGE: dict[str, dict[str, int]] = {
    "hi": {
        "एक": 1, "दो": 2, "तीन": 3, "चार": 4, "पाँच": 5, "पांच": 5, "छह": 6, "छः": 6,
        "सात": 7, "आठ": 8, "नौ": 9, "दस": 10, "ग्यारह": 11, "बारह": 12, "बीस": 20,
        "पचास": 50, "सौ": 100, "हज़ार": 1000, "हजार": 1000,
    },
    "mr": {
        "एक": 1, "दोन": 2, "तीन": 3, "चार": 4, "पाच": 5, "सहा": 6, "सात": 7, "आठ": 8,
        "नऊ": 9, "दहा": 10, "बारा": 12, "वीस": 20, "पन्नास": 50, "शंभर": 100,
        "हजार": 1000,
    },
}  # fmt: skip

# Never an entity on their own, never part of a run. Casefolded.
_STOPWORDS = (
    frozenset(
        _words("""
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him
    his himself she her hers herself it its itself they them their theirs themselves one
    ones someone somebody something somewhere anyone anybody anything anywhere everyone
    everybody everything everywhere nobody nothing nowhere none who whom whose which what
    whatever whoever whichever whenever wherever however
    the a an this that these those each every either neither some any all both few many
    much more most less least several such no other another own same
    and but or nor so yet for because although though if unless while whilst when where
    whether since until till as once after before than then also
    in on at by with without from to into onto of off over under up down about above below
    across along around among amongst between behind beyond beside besides despite during
    except inside outside near past through throughout toward towards upon within against
    like unlike via per beneath underneath
    now here there today tomorrow yesterday tonight soon later still even just only very
    always never sometimes often usually again already perhaps maybe indeed therefore thus
    hence instead meanwhile otherwise anyway finally eventually suddenly slowly quickly
    together alone away back far long ago yes not well oh ah please thanks thank hello hi
    bye sorry why how almost nearly rather quite really truly simply surely certainly
    mostly lately sadly gladly luckily clearly once twice ever forever somehow sometime
    sooner else elsewhere afterwards afterward abroad overseas home upstairs downstairs
    outdoors indoors nevertheless nonetheless moreover furthermore likewise similarly
    actually basically especially honestly naturally obviously apparently fortunately
    unfortunately hopefully thankfully soon sure yeah ok okay wow alas hey hmm
    is am are was were be been being have has had having do does did doing done will would
    shall should can could may might must let lets go goes went gone come comes came take
    took give gave make made get got keep kept tell told say said says see saw look looked
    listen wait stop remember remembered eat sit stand run walk hold bring put try think
    know knew leave left born married raised grew growing living imagine picture
    good bad best better worst small young dear happy sad poor
    rich long short high low full empty whole true real right wrong early late different
    next last first second third fourth fifth
    life love time times day days night nights morning mornings evening evenings afternoon
    afternoons year years month months week weeks decade decades summer summers winter
    winters spring autumn monsoon monsoons rain rains memory memories moment moments story
    stories thing things people person family families friend friends child children kid
    kids baby babies boy boys girl girls man men woman women work food music money war
    peace world truth nature word words news letter letters photo photos chapter part page
    book title end beginning
    zero two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy
    eighty ninety hundred thousand lakh lakhs crore crores million millions billion dozen
    half rs inr km kms kg kgs no nos etc
    """)
    )
    | frozenset(_WEEKDAYS.split())
    | frozenset(day + "s" for day in _WEEKDAYS.split())
    | frozenset(month.casefold() for month in _EN_FULL_MONTHS)
)

# Kinship words and honorifics that name a person even alone ("Amma said", "Grandfather").
_KIN = frozenset(
    _words("""
    amma appa paati patti thatha thaatha ammamma ammachi appachan achan ammumma appuppan
    acha achchan nana nani dada dadi dadu dida didi bhaiya bhaiyya bhabhi chacha chachi
    chachu mama mami maama maami mausi masi mashi bua pishi kaka kaki tau tai baba ma maa
    papa pappa mummy mumma mom mum mother father dad daddy grandma grandpa grandmother
    grandfather granny gran grandad granddad uncle aunt auntie aunty akka anna thambi
    thangai chithi chithappa periyamma periyappa athai athimber thakuma thakurda boudi
    ammi abba abbu nanima dadima nanaji dadaji bapuji bapu
    """)
)
# Titles that name a person only with a name after them ("Mr. Rao"; "Dr." alone is nothing).
_TITLES = frozenset(
    _words("""
    mr mrs ms miss dr prof professor st saint smt shri sri srimathi thiru thirumathi lt col
    capt captain gen general major sgt rev fr sr jr sir lady lord justice pandit swami
    sheikh haji sister brother madam
    """)
)
# Titles that are written with a dot that does not end the sentence.
_DOTTED_TITLES = frozenset(
    _words("mr mrs ms dr prof st smt shri sri lt col capt gen sgt rev fr sr jr")
)
# Start or join a run of capitalised words but are no name alone ("New Delhi", "Old Town").
_RUN_ONLY = frozenset(
    _words("new old great little big grand north south east west upper lower central royal")
)
_CONNECTORS = frozenset(_words("of de da del van von bin"))
_PLACE_WORDS = frozenset(
    _words("""
    street st road rd lane marg chowk gali nagar colony layout extension school college
    university village city town district state temple church mosque masjid mandir gurdwara
    hospital station market bazaar bazar park lake river hill hills mountain mountains beach
    bridge square avenue institute convent mills mill factory camp cantonment fort palace
    island bay valley estate garden gardens port harbour harbor airport circle cross
    junction halli puram pettai
    """)
) - {"st"}
_PLACE_SUFFIXES = (
    "pur", "puram", "abad", "nagar", "ganj", "garh", "halli", "palli", "palayam", "pettai",
    "kottai", "wadi", "gaon", "patnam",
)  # fmt: skip
_PLACE_PREPOSITIONS = frozenset(_words("in at from to near into towards toward outside across via"))
# Endings of sentence-starting adverbs and gerunds ("Finally", "Growing", "Happiness").
_COMMON_ENDINGS = ("ness", "ment", "tion", "sion", "ity", "ful", "less", "hood", "ship")

_QUOTE_MARKS = str.maketrans({"“": '"', "”": '"', "„": '"', "‟": '"', "«": '"', "»": '"',
                              "‘": "'", "’": "'", "‚": "'", "‛": "'"})  # fmt: skip
_TERMINATORS = ".!?…:।॥"
_CLOSERS = "\"'”’»)]"
_OPEN_QUOTES = "\"“‘«'"
_BULLETS = "-*•–—"


# ------------------------------------------------------------------------------ extraction


@dataclass(frozen=True)
class _Found:
    start: int
    fact: Fact


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _lang(language: str) -> str:
    return language.split("-")[0].split("_")[0].lower()


def _month_pattern() -> str:
    full = "|".join(sorted(_EN_FULL_MONTHS, key=len, reverse=True))
    short = "|".join(sorted(set(_EN_MONTHS) - _EN_FULL_MONTHS, key=len, reverse=True))
    indic: list[str] = []
    for name in sorted(_INDIC_MONTHS, key=len, reverse=True):
        suffix = (
            f"{_INDIC_LETTER}*"
            if _DRAVIDIAN[0] <= name[0] <= _DRAVIDIAN[1] and len(name) >= 4
            else ""
        )
        indic.append(re.escape(name) + suffix + f"(?!{_INDIC_LETTER})")
    english = rf"(?:{full})(?![{_LATIN}])|(?:{short})(?![{_LATIN}])\.?"
    return rf"(?P<m>{english}|{'|'.join(indic)})"


_M = _month_pattern()
_SUFFIX = rf"(?:st|nd|rd|th|-?{_INDIC_LETTER}+)?"
_D = rf"(?<!\d)(?P<d>\d{{1,2}}){_SUFFIX}(?!\d)"
_Y = r"(?<!\d)(?P<y>\d{4})(?!\d)"
_DATE_SOURCES: tuple[str, ...] = (
    rf"{_D}(?:\s+of)?\s+{_M},?\s+{_Y}{_SUFFIX}",  # 12 March 1962, 12th of March, 1962
    rf"{_M}\s+{_D},?\s+{_Y}{_SUFFIX}",  # March 12, 1962
    rf"{_Y}{_SUFFIX}(?:\s+{_INDIC_LETTER}+)?\s+{_M}\s+{_D}",  # 1962ஆம் ஆண்டு மார்ச் 12
    rf"{_Y}{_SUFFIX}(?:\s+{_INDIC_LETTER}+)?\s+{_D}\s+{_M}",  # ১৯৬২ সালের ১২ মার্চ
    r"(?<![\d/.-])(?P<d>\d{1,2})(?P<sep>[/.-])(?P<m>\d{1,2})(?P=sep)(?P<y>\d{4})(?![\d/-]|\.\d)",
    r"(?<![\d/.-])(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?![\d/-]|\.\d)",
    rf"{_D}(?:\s+of)?\s+{_M}",  # 12 March
    rf"{_M}\s+{_D}",  # March 12
    rf"{_M},?\s+(?:of\s+)?{_Y}{_SUFFIX}",  # March 1962
    r"(?<![\d.,])(?P<dec>\d{3}0)['’]?s(?![A-Za-z])",  # 1950s
    r"(?<![\w])['’](?P<dec2>\d0)s(?![A-Za-z])",  # '50s
    r"(?<![\d.,])(?<![A-Za-z])(?P<y>\d{4})(?!\d|[.,]\d)",  # 1962 (checked below)
    r"(?P<m>" + "|".join(sorted(_EN_FULL_MONTHS, key=len, reverse=True)) + r")(?!\w)",
)
_YEAR_ALONE = len(_DATE_SOURCES) - 2
_MONTH_ALONE = len(_DATE_SOURCES) - 1


@lru_cache(maxsize=1)
def _date_patterns() -> tuple[re.Pattern[str], ...]:
    """Compiled at first use, not at import: every process that imports the flows (a
    flow run's engine, the CLI) would otherwise pay for it, most without using it."""
    return tuple(re.compile(source) for source in _DATE_SOURCES)


_NUMBER = re.compile(
    r"(?<![A-Za-z\d])(?<!\d[.,])(?:\d{1,3}(?:,\d{2,3})*,\d{3}|\d+)(?:\.\d+)?(?!\d|[.,]\d)"
)
_MONEY_BEFORE = re.compile(r"(?:₹|\$|£|€|\brs\.?|\binr|\busd)\s*$", re.IGNORECASE)
_UNIT_AFTER = re.compile(
    r"\s*(?:%|per\s?cent\b|rupees?\b|rs\b|paise\b|dollars?\b|pounds\b|km?s?\b|kilomet|mile"
    r"|met(?:re|er)s?\b|feet\b|ft\b|kgs?\b|kilos?\b|grams?\b|acres?\b|people\b|persons\b"
    r"|men\b|women\b|children\b|students\b|soldiers\b|copies\b|pages\b|words\b|times\b"
    r"|रुपय|रुपए|ரூபாய்|రూపాయ|ರೂಪಾಯ|രൂപ|টাকা)",
    re.IGNORECASE,
)


def _is_sentence_start(text: str, pos: int) -> bool:
    """Whether the word at `pos` starts a sentence, a line of a list, or a quotation."""
    i = pos
    if i > 0 and text[i - 1] in _OPEN_QUOTES:
        return True
    while i > 0 and text[i - 1] in "([{":
        i -= 1
    newlines = 0
    while i > 0 and text[i - 1].isspace():
        newlines += text[i - 1] == "\n"
        i -= 1
    if i == 0 or newlines >= 2:
        return True
    if text[i - 1] in _BULLETS and (i == 1 or text[i - 2] == "\n"):
        return True
    while i > 0 and text[i - 1] in _CLOSERS:
        i -= 1
    if i == 0:
        return True
    if text[i - 1] not in _TERMINATORS:
        return False
    if text[i - 1] == ".":
        j = i - 1
        while j > 0 and _LATIN_CHAR.fullmatch(text[j - 1]):
            j -= 1
        before = text[j : i - 1]
        if before.casefold() in _DOTTED_TITLES or (len(before) == 1 and before.isupper()):
            return False
    return True


def _date_parts(match: re.Match[str]) -> tuple[int | None, int | None, int | None, int | None]:
    """(year, month, day, decade) of a date match, or all None when the date is impossible."""
    groups = match.groupdict()
    none = (None, None, None, None)
    if groups.get("dec"):
        return (None, None, None, int(groups["dec"]))
    if groups.get("dec2"):
        return (None, None, None, 1900 + int(groups["dec2"]))
    year = int(groups["y"]) if groups.get("y") else None
    day = int(groups["d"]) if groups.get("d") else None
    month: int | None = None
    raw_month = groups.get("m")
    if raw_month is not None:
        if raw_month.isdecimal():
            month = int(raw_month)
            if groups.get("sep") and day is not None and month > 12 >= day:
                day, month = month, day  # month first: 03/25/1962
        else:
            month = _month_number(raw_month)
    if year is not None and not 1000 <= year <= 2099:
        return none
    if month is not None and not 1 <= month <= 12:
        return none
    if day is not None and not 1 <= day <= 31:
        return none
    return (year, month, day, None)


def _month_number(raw: str) -> int | None:
    name = raw.rstrip(".")
    if name in _EN_MONTHS:
        return _EN_MONTHS[name]
    prefixes = [indic for indic in _INDIC_MONTHS if name.startswith(indic)]
    return _INDIC_MONTHS[max(prefixes, key=len)] if prefixes else None


def _find_dates(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, key) of the dates of `text`, more precise forms first."""
    spans: list[tuple[int, int, str]] = []
    taken = bytearray(len(text))
    for index, pattern in enumerate(_date_patterns()):
        for match in pattern.finditer(text):
            start, end = match.span()
            if 1 in taken[start:end]:
                continue
            if index == _YEAR_ALONE and (
                _MONEY_BEFORE.search(text[max(0, start - 6) : start])
                or _UNIT_AFTER.match(text, end)
            ):
                continue
            if (
                index == _MONTH_ALONE
                and match.group("m") == "May"
                and _is_sentence_start(text, start)
            ):
                continue
            key = _date_key(*_date_parts(match))
            if key is None:
                continue
            taken[start:end] = b"\x01" * (end - start)
            spans.append((start, end, key))
    return sorted(spans)


def _date_key(
    year: int | None, month: int | None, day: int | None, decade: int | None
) -> str | None:
    if decade is not None:
        return f"{decade}s"
    if year is not None and month is not None and day is not None:
        return f"{year:04d}-{month:02d}-{day:02d}"
    if year is not None and month is not None:
        return f"{year:04d}-{month:02d}"
    if year is not None:
        return f"{year:04d}"
    if month is not None and day is not None:
        return f"--{month:02d}-{day:02d}"
    if month is not None:
        return f"--{month:02d}"
    return None


def _coarser(key: str) -> set[str]:
    """A date key and every less precise key it implies."""
    keys = {key}
    if key.endswith("s"):
        return keys
    if key.startswith("--"):
        keys.add(key[:4])
        return keys
    year = key[:4]
    keys |= {year, f"{year[:3]}0s"}
    if len(key) >= 7:
        keys |= {key[:7], "--" + key[5:7]}
    if len(key) == 10:
        keys.add("--" + key[5:])
    return keys


def _number_value(raw: str) -> str | None:
    digits = "".join(str(unicodedata.digit(c)) if c.isdecimal() else c for c in raw if c != ",")
    try:
        value = Decimal(digits)
    except InvalidOperation:
        return None
    text = format(value.normalize(), "f")
    return text


def _is_year_value(value: str) -> bool:
    return value.isdigit() and 1000 <= int(value) <= 2099


def _is_year_text(raw: str) -> bool:
    """Whether a number as written could be a year: four digits, no grouping, 1000-2099."""
    return len(raw) == 4 and raw.isdecimal() and _is_year_value(_number_value(raw) or "")


def _mask(text: str, spans: Iterable[tuple[int, int, str]]) -> bytearray:
    """One byte per character of `text`: 1 inside one of the spans."""
    mask = bytearray(len(text))
    for start, end, _ in spans:
        mask[start:end] = b"\x01" * (end - start)
    return mask


def _find_numbers(text: str, dates: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    found: list[tuple[int, int, str]] = []
    masked = _mask(text, dates)
    for match in _NUMBER.finditer(text):
        start, end = match.span()
        if 1 in masked[start:end]:
            continue
        value = _number_value(match.group())
        if value is not None:
            found.append((start, end, value))
    return found


def _number_word_values(text: str, language: str) -> set[str]:
    """The values of the number words of `text` (English, and Hindi or Marathi by language)."""
    values: set[str] = set()
    words = re.findall(r"[A-Za-z]+", text.casefold())
    for chunk in (*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))):
        value = _english_number(chunk)
        if value is not None:
            values.add(str(value))
    table = _NUMBER_WORDS_BY_LANGUAGE.get(_lang(language), {})
    if table:
        for word in re.findall(f"{_INDIC_LETTER}+", text):
            if word in table:
                values.add(str(table[word]))
    return values


def _english_number(words: str) -> int | None:
    parts = re.split(r"[-\s]+", words)
    if len(parts) == 1:
        word = parts[0]
        return _NUMBER_WORDS_EN.get(word, _TENS_EN.get(word))
    if len(parts) == 2:
        first, second = parts
        if first in _TENS_EN and second in _NUMBER_WORDS_EN and 0 < _NUMBER_WORDS_EN[second] < 10:
            return _TENS_EN[first] + _NUMBER_WORDS_EN[second]
        if first in ("a", "one") and second in ("hundred", "thousand"):
            return 100 if second == "hundred" else 1000
    return None


_QUOTE_PATTERNS = (
    re.compile(r"“(?P<q>[^“”]+?)”"),
    re.compile(r"«(?P<q>[^«»]+?)»"),
    re.compile(r'"(?P<q>(?:[^"\n]|\n(?![^\S\n]*\n))+?)"'),
    re.compile(rf"(?<![^\s(\[—–-])‘(?P<q>\S(?:[^‘’]|’(?=[{_LATIN}]))*?)’(?![{_LATIN}])"),
)


def _find_quotes(text: str) -> list[tuple[int, str]]:
    quotes: list[tuple[int, str]] = []
    for pattern in _QUOTE_PATTERNS:
        for match in pattern.finditer(text):
            inner = _squash(match.group("q")).strip()
            inner = re.sub(r"(?<!\.)\.$|[,;:।॥]+$", "", inner).rstrip()
            if len(inner.split()) >= 2:
                quotes.append((match.start(), inner))
    return quotes


@dataclass(frozen=True)
class _Tok:
    start: int
    end: int
    word: str
    base: str  # without a possessive or contraction ending
    initial: bool
    masked: bool

    @property
    def capital(self) -> bool:
        return self.word[0].isupper()

    @property
    def fold(self) -> str:
        return self.base.casefold()

    @property
    def possessive(self) -> bool:
        return len(self.base) < len(self.word)


def _base(word: str) -> str:
    head, sep, tail = word.replace("’", "'").rpartition("'")
    if sep and tail.casefold() in {"s", "m", "ll", "ve", "d", "re", "t"} and head:
        return word[: len(head)]
    return word


def _is_stop(tok: _Tok) -> bool:
    word = tok.word.casefold().replace("’", "'")
    return tok.fold in _STOPWORDS or word in _STOPWORDS or word.endswith("n't")


def _looks_common(tok: _Tok, lowercase: set[str]) -> bool:
    """Whether a sentence-initial word looks like an ordinary word rather than a name."""
    fold = tok.fold
    if fold in lowercase:
        return True
    if len(fold) >= 7 and fold.endswith("ly"):
        return True
    if len(fold) >= 6 and fold.endswith("ing"):
        return True
    if len(fold) >= 5 and fold.endswith("ies"):
        return True
    return any(len(fold) > len(end) + 2 and fold.endswith(end) for end in _COMMON_ENDINGS)


def _is_place(run: Sequence[_Tok], text: str, previous: _Tok | None) -> bool:
    folds = [tok.fold for tok in run]
    if any(fold in _PLACE_WORDS for fold in folds):
        return True
    last = folds[-1]
    if any(last.endswith(suffix) and len(last) >= len(suffix) + 3 for suffix in _PLACE_SUFFIXES):
        return True
    if folds[0] in _KIN or folds[0] in _TITLES or run[-1].possessive:
        return False
    if previous is None or previous.fold not in _PLACE_PREPOSITIONS:
        return False
    return text[previous.end : run[0].start].isspace()


def _joinable(text: str, left: _Tok, right: _Tok) -> bool:
    gap = text[left.end : right.start]
    if gap == "-":
        return True
    if gap.startswith(".") and (
        left.fold in _DOTTED_TITLES or (len(left.word) == 1 and left.word.isupper())
    ):
        gap = gap[1:]
        if gap == "":
            return True
    return gap != "" and gap.isspace() and gap.count("\n") <= 1


def _can_continue(tok: _Tok, text: str) -> bool:
    """Whether a token may start or join a run of capitalised words."""
    if not tok.capital or tok.masked:
        return False
    if len(tok.word) == 1 and text.startswith(".", tok.end):
        return True  # an initial, even "A." or "I."
    return not _is_stop(tok)


def _find_names(text: str, dates: list[tuple[int, int, str]]) -> list[_Found]:
    toks: list[_Tok] = []
    masked = _mask(text, dates)
    for match in _TOKEN.finditer(text):
        start, end = match.span()
        word = match.group()
        toks.append(
            _Tok(
                start=start,
                end=end,
                word=word,
                base=_base(word),
                initial=_is_sentence_start(text, start),
                masked=1 in masked[start:end],
            )
        )
    lowercase = {tok.fold for tok in toks if not tok.capital}
    capital_inside = {tok.fold for tok in toks if tok.capital and not tok.initial}

    found: list[_Found] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if not _can_continue(tok, text):
            i += 1
            continue
        j = i
        while j + 1 < len(toks):
            nxt = toks[j + 1]
            if toks[j].possessive and nxt.fold not in _PLACE_WORDS:
                break
            if _can_continue(nxt, text) and _joinable(text, toks[j], nxt):
                j += 1
                continue
            if (
                j + 2 < len(toks)
                and nxt.word in _CONNECTORS
                and _joinable(text, toks[j], nxt)
                and _can_continue(toks[j + 2], text)
                and _joinable(text, nxt, toks[j + 2])
            ):
                j += 2
                continue
            break
        run = toks[i : j + 1]
        previous = toks[i - 1] if i > 0 else None
        i = j + 1
        # A sentence's first word that reads as an ordinary word is not part of the name.
        first = run[0]
        if (
            first.initial
            and not (first.fold in _RUN_ONLY and len(run) > 1)
            and first.fold not in _KIN
            and first.fold not in _TITLES
            and first.fold not in capital_inside
            and _looks_common(first, lowercase)
        ):
            previous, run = first, run[1:]
        if not run:
            continue
        if len(run) == 1:
            only = run[0]
            if only.fold in _TITLES | _PLACE_WORDS | _RUN_ONLY or len(only.base) < 2:
                continue
        elif all(tok.fold in _TITLES for tok in run):
            continue
        if run[-1].fold in _TITLES and len(run) > 1 and run[-1].fold not in _KIN:
            run = run[:-1]
        fact_text = _squash(text[run[0].start : run[-1].start + len(run[-1].base)])
        kind: FactKind = "place" if _is_place(run, text, previous) else "name"
        found.append(_Found(run[0].start, Fact(fact_text, kind)))
    return found


def _extract(text: str, language: str, *, quotes: bool) -> list[Fact]:
    """The deduplicated facts of `text` in order of first appearance."""
    text = _nfc(text)
    dates = _find_dates(text)
    found: list[_Found] = [
        _Found(start, Fact(_squash(text[start:end]), "date")) for start, end, _ in dates
    ]
    found += [
        _Found(start, Fact(_squash(text[start:end]), "number"))
        for start, end, _ in _find_numbers(text, dates)
    ]
    found += _find_names(text, dates)
    if quotes:
        found += [_Found(start, Fact(inner, "quote")) for start, inner in _find_quotes(text)]
    found.sort(key=lambda item: item.start)
    return _dedupe(item.fact for item in found)


def _dedupe(facts: Iterable[Fact]) -> list[Fact]:
    """Drop repeats (by key) and later names that only repeat part of an earlier name.

    A name or place seen once as a place is a place.
    """
    kept: list[Fact] = []
    index: dict[str, int] = {}
    aliases: set[str] = set()
    for fact in facts:
        key = fact_key(fact)
        if key in index:
            if fact.kind == "place" and kept[index[key]].kind == "name":
                kept[index[key]] = replace(kept[index[key]], kind="place")
            continue
        if fact.kind == "name" and key in aliases:
            continue
        index[key] = len(kept)
        kept.append(fact)
        if fact.kind == "name":
            aliases |= _name_aliases(fact.text) - {key}
    return kept


# ---------------------------------------------------------------------------------- keys


def _name_words(text: str) -> list[str]:
    """The words of a name, casefolded, without a possessive ending."""
    words = re.findall(rf"[{_LATIN}]+(?:['’][{_LATIN}]+)*", _nfc(text))
    return [_base(word).casefold() for word in words]


def _name_key(text: str) -> str:
    return "name:" + " ".join(_name_words(text))


def _core_words(words: list[str]) -> list[str]:
    """A name without its leading titles and kinship words ("Uncle Rupert" -> "rupert")."""
    i = 0
    while i < len(words) and (words[i] in _TITLES or words[i] in _KIN):
        i += 1
    return words[i:]


def _name_aliases(text: str) -> set[str]:
    """The keys that a name makes known: itself, its bare name, and its significant words."""
    words = _name_words(text)
    keys = {"name:" + " ".join(words)}
    core = _core_words(words)
    if core:
        keys.add("name:" + " ".join(core))
    for word in words:
        if word not in _TITLES and word not in _CONNECTORS and word not in _PLACE_WORDS:
            keys.add("name:" + word)
    return keys


@lru_cache(maxsize=4096)
def _date_key_of(text: str) -> str | None:
    """The key of a date fact's text, whatever form it was written in."""
    text = _nfc(text)
    for pattern in _date_patterns():
        match = pattern.fullmatch(text)
        if match:
            key = _date_key(*_date_parts(match))
            if key is not None:
                return key
    return None


def fact_key(fact: Fact) -> str:
    """The normalised key of a fact: equal keys mean the same fact.

    "name:<words>" for names and places, "date:<ISO-like>", "number:<value>", and
    "quote:<casefolded words>" for quotes.
    """
    if fact.kind in ("name", "place"):
        return _name_key(fact.text)
    if fact.kind == "date":
        key = _date_key_of(fact.text)
        return f"date:{key}" if key else "date:" + _squash(fact.text).casefold()
    if fact.kind == "number":
        value = _number_value(fact.text)
        return f"number:{value}" if value else "number:" + fact.text
    return "quote:" + _normalise_quote(fact.text).casefold()


def _support_keys(fact: Fact) -> set[str]:
    """The keys a ledger fact makes known."""
    if fact.kind in ("name", "place"):
        return _name_aliases(fact.text)
    key = fact_key(fact)
    if fact.kind == "date":
        value = key.removeprefix("date:")
        keys = {f"date:{k}" for k in _coarser(value)} if _date_key_of(fact.text) else {key}
        if _is_year_value(value):
            keys.add(f"number:{value}")
        return keys
    if fact.kind == "number":
        value = key.removeprefix("number:")
        return {key, f"date:{value}"} if _is_year_text(fact.text) else {key}
    return set()


def _is_supported(fact: Fact, known: frozenset[str]) -> bool:
    key = fact_key(fact)
    if key in known:
        return True
    if fact.kind in ("name", "place"):
        words = _name_words(fact.text)
        core = _core_words(words)
        if core and "name:" + " ".join(core) in known:
            return True
        significant = [w for w in core if w not in _CONNECTORS and w not in _PLACE_WORDS]
        return bool(significant) and all("name:" + w in known for w in significant)
    if fact.kind == "number":
        value = key.removeprefix("number:")
        return _is_year_text(fact.text) and f"date:{value}" in known
    if fact.kind == "date":
        value = key.removeprefix("date:")
        return _is_year_value(value) and f"number:{value}" in known
    return False


# -------------------------------------------------------------------------------- presence


def _normalise_quote(text: str) -> str:
    return _squash(_nfc(text).translate(_QUOTE_MARKS))


@dataclass(frozen=True)
class _Index:
    """A text prepared for presence checks."""

    text: str  # NFC, straight quote marks, whitespace collapsed
    keys: frozenset[str]  # date keys (with coarser forms) and number values present

    @classmethod
    def of(cls, text: str, language: str) -> _Index:
        # Dates and numbers are found as extraction finds them: in the text as written.
        text = _nfc(text)
        keys: set[str] = set()
        dates = _find_dates(text)
        for _, _, key in dates:
            keys |= {f"date:{k}" for k in _coarser(key)}
        for start, end, value in _find_numbers(text, []):
            keys.add(f"number:{value}")
            if _is_year_text(text[start:end]):
                keys |= {f"date:{value}", f"date:{value[:3]}0s"}
        keys |= {f"number:{value}" for value in _number_word_values(text, language)}
        return cls(text=_normalise_quote(text), keys=frozenset(keys))


@lru_cache(maxsize=4096)
def _name_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    body = r"[\s.\-]*".join(re.escape(word.replace("’", "'")) + "(?:'s|')?" for word in words)
    # Names are Latin-script words, found the way _TOKEN finds them: between non-Latin letters.
    return re.compile(rf"(?<![{_LATIN}]){body}(?![{_LATIN}])", re.IGNORECASE)


def _is_present(fact: Fact, index: _Index) -> bool:
    if fact.kind in ("name", "place"):
        words = _name_words(fact.text)
        if not words:
            return False
        if _name_pattern(tuple(words)).search(index.text):
            return True
        core = _core_words(words)
        return bool(core) and core != words and bool(_name_pattern(tuple(core)).search(index.text))
    if fact.kind == "quote":
        quote = _normalise_quote(fact.text)
        pattern = rf"(?<!{_WORD_CHAR}){re.escape(quote)}(?!{_WORD_CHAR})"
        return quote != "" and re.search(pattern, index.text) is not None
    key = fact_key(fact)
    if key in index.keys:
        return True
    value = key.split(":", 1)[1]
    if fact.kind == "number" and _is_year_text(fact.text):
        return f"date:{value}" in index.keys
    return False


# ------------------------------------------------------------------------------------ API


def entities(text: str, language: str) -> list[Fact]:
    """The names, places, dates and numbers a text mentions, once each, in order."""
    return [fact for fact in _extract(text, language, quotes=False) if fact.kind != "quote"]


def quotes(text: str, language: str) -> list[Fact]:
    """The quotes (of two words or more) of a text, once each, in order."""
    return [fact for fact in _extract(text, language, quotes=True) if fact.kind == "quote"]


def collect(sections: Sequence[tuple[str, str]], language: str, extra: str = "") -> Ledger:
    """The ledger of a book's material.

    sections: (key, material) in book order; language: a code like "en-IN", "hi-IN",
    "ta-IN"; extra: title and premise, whose entities are known but belong to no section.
    """
    seen: set[str] = set()
    ledgers: list[SectionLedger] = []
    known: set[str] = set()
    for key, material in sections:
        if key in seen:
            raise ValueError(f"section {key!r} appears twice")
        seen.add(key)
        facts = tuple(_extract(material, language, quotes=True))
        ledgers.append(SectionLedger(key=key, facts=facts))
        for fact in facts:
            known |= _support_keys(fact)
        known |= _word_keys(material, language)
    for fact in entities(extra, language):
        known |= _support_keys(fact)
    known |= _word_keys(extra, language)
    return Ledger(sections=tuple(ledgers), known=frozenset(known))


def _word_keys(text: str, language: str) -> set[str]:
    """Keys made known by ordinary words: number words, and kinship words in any case.

    "my mother" in the material lets the book say "Mother"; "two sons" lets it say "2 sons".
    """
    text = _nfc(text)
    keys = {f"number:{value}" for value in _number_word_values(text, language)}
    keys |= {"name:" + word.casefold() for word in _TOKEN.findall(text) if word.casefold() in _KIN}
    return keys


def check(text: str, section: SectionLedger, ledger: Ledger, language: str) -> FactCheck:
    """Compare a section's generated text with the section's facts and the book's ledger."""
    index = _Index.of(text, language)
    invented = tuple(f for f in entities(text, language) if not _is_supported(f, ledger.known))
    missing = tuple(f for f in section.entities if not _is_present(f, index))
    altered = tuple(f for f in section.quotes if not _is_present(f, index))
    return FactCheck(invented=invented, missing=missing, altered=altered)


def is_present(fact: Fact, text: str, language: str) -> bool:
    """Whether `text` mentions `fact` (by the matching rules of this module)."""
    return _is_present(fact, _Index.of(text, language))


def figures(texts: Sequence[str], ledger: Ledger, language: str) -> Figures:
    """Entity precision and recall of a book: texts are the final text of every section."""
    generated: dict[str, Fact] = {}
    for text in texts:
        for fact in entities(text, language):
            generated.setdefault(fact_key(fact), fact)
    supported = sum(_is_supported(fact, ledger.known) for fact in generated.values())
    in_ledger: dict[str, Fact] = {}
    for section in ledger.sections:
        for fact in section.entities:
            in_ledger.setdefault(fact_key(fact), fact)
    index = _Index.of("\n\n".join(texts), language)
    found = sum(_is_present(fact, index) for fact in in_ledger.values())
    return Figures(
        precision=supported / len(generated) if generated else None,
        recall=found / len(in_ledger) if in_ledger else None,
        generated=len(generated),
        supported=supported,
        ledger=len(in_ledger),
        found=found,
    )

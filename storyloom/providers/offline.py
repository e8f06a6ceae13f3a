"""The embedded default providers: deterministic, no network, no keys.

The writer weaves the teller's own sentences with connective sentences from a small
template bank (English, and Hindi for hi-IN stories) and says in the book that it did
so. The illustrator draws with Pillow. The speaker is eSpeak NG from the
espeakng-loader wheel, through ctypes. The translator cannot translate and says so.
"""

from __future__ import annotations

import colorsys
import ctypes
import hashlib
import io
import math
import os
import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import espeakng_loader
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from storyloom.audio import pcm16_to_wav
from storyloom.models import Audience, ImageStyle, Language, Tone, Usage
from storyloom.providers.base import (
    IllustrationPlan,
    ImageRequest,
    Picture,
    SectionBrief,
    Speech,
    Written,
)
from storyloom.providers.errors import PermanentError

PROVIDER = "offline"


def _usage(**counts: int) -> Usage:
    return Usage(provider=PROVIDER, **counts)


def _rng(*parts: str) -> random.Random:
    # A private generator seeded from the inputs: same inputs, same choices, in any process.
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ---------------------------------------------------------------------------------------
# Text: words and sentences (kept local: the writer must not depend on writing.py)

_TERMINALS = ".!?।॥…"
_CLOSERS = "\"'”’)]"
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no"}
)


def _word_count(text: str) -> int:
    # A word is a whitespace-separated token with a letter or digit in it, so a stray
    # dash or danda standing alone is not counted.
    return sum(1 for token in text.split() if any(ch.isalnum() for ch in token))


def _ends_sentence(chunk: str) -> bool:
    stripped = chunk.rstrip(_CLOSERS)
    if not stripped or stripped[-1] not in _TERMINALS:
        return False
    if stripped[-1] == ".":
        last = stripped.rsplit(maxsplit=1)[-1][:-1].lower().lstrip("(\"'“‘")
        # "Mr. Rao" and initials like "A. P. J." do not end a sentence.
        if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
            return False
    return True


def _sentences(text: str) -> list[str]:
    """Split text into sentences at . ! ? । ॥ and at line breaks."""
    out: list[str] = []
    for line in text.splitlines():
        start = 0
        for gap in re.finditer(r"\s+", line):
            if _ends_sentence(line[start : gap.start()]):
                out.append(line[start : gap.start()])
                start = gap.end()
        out.append(line[start:])
    return [s.strip() for s in out if s.strip()]


def _paragraphs(text: str) -> list[list[str]]:
    return [p for p in (_sentences(" ".join(b.split())) for b in re.split(r"\n\s*\n", text)) if p]


def _join(paragraphs: Sequence[Sequence[str]]) -> str:
    return "\n\n".join(" ".join(p) for p in paragraphs if p)


def _terminated(sentence: str, stop: str) -> str:
    if sentence.rstrip(_CLOSERS)[-1:] in tuple(_TERMINALS):
        return sentence
    return sentence.rstrip(",;:—- ") + stop


def _first_words(text: str, count: int, stop: str) -> str:
    words = text.split()
    return _terminated(" ".join(words[:count]), stop) if count > 0 else ""


# ---------------------------------------------------------------------------------------
# The template bank. No apostrophes or hyphens, so any word counter agrees on its words.


@dataclass(frozen=True)
class _Bank:
    stop: str
    note_life: str
    note_creative: str
    note_short: str
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    tone: dict[Tone, tuple[str, ...]]
    audience: dict[Audience, tuple[str, ...]]
    fillers: tuple[str, ...]  # together they cover every length from 1 to 12 words

    def fillers_of(self, words: int) -> list[str]:
        return [f for f in self.fillers if _word_count(f) == words]


_EN = _Bank(
    stop=".",
    note_life=(
        "This book was drafted by the storyloom offline writer from the words of the teller."
    ),
    note_creative=(
        "This book was drafted by the storyloom offline writer from the premise it was given."
    ),
    note_short="Drafted offline by storyloom.",
    openers=(
        "Here the story turns to a new chapter.",
        "This is where the next part of the story begins.",
        "The story continues here.",
    ),
    closers=(
        "And so this part of the story comes to a close.",
        "With that, the story moves on.",
        "That is how this part of the story unfolded.",
    ),
    tone={
        Tone.WARM: (
            "There is a quiet warmth in remembering this.",
            "These moments were held close and cherished.",
            "Kindness ran through those days like a thread through cloth.",
            "It was the kind of memory that still feels like home.",
            "Small gestures meant a great deal then, and they still do.",
            "Everyone who was there remembers the warmth of it.",
        ),
        Tone.NOSTALGIC: (
            "Looking back, those days seem to glow.",
            "Some things from that time are gone now, but the memory stays.",
            "The sounds and smells of those years still come back easily.",
            "It feels like a long time ago, and also like yesterday.",
            "Those were simpler days, or so they seem now.",
            "Memory has a way of keeping the best parts bright.",
        ),
        Tone.REFLECTIVE: (
            "It is worth pausing here to think about what this meant.",
            "Only later did the meaning of these days become clear.",
            "Every choice made then shaped what came after.",
            "There is a lesson here, though it took years to see it.",
            "Looking closely, one can see how each step led to the next.",
            "Time has a way of showing what truly mattered.",
        ),
        Tone.JOYFUL: (
            "There was so much laughter in those days.",
            "It was a bright and happy time.",
            "Joy seemed to be waiting around every corner.",
            "Even ordinary days felt like small celebrations.",
            "The happiness of that time is easy to remember.",
            "Everyone seemed to be smiling then.",
        ),
        Tone.HUMOROUS: (
            "Not everything went to plan, which made it all the more fun.",
            "Looking back, it is hard not to laugh.",
            "There was always someone ready with a joke.",
            "Some of these moments are still retold with a grin.",
            "Nobody could have planned such a comedy of small mistakes.",
            "The family still teases each other about this part.",
        ),
        Tone.INSPIRATIONAL: (
            "Courage often looks like simply carrying on.",
            "Each challenge became a step forward.",
            "It showed what patience and hard work can build.",
            "Hope was never far away, even on hard days.",
            "There is strength in a life lived honestly.",
            "Every small effort added up to something lasting.",
        ),
        Tone.FORMAL: (
            "This period is recorded here as it was recounted.",
            "The events that follow are set down in order.",
            "These circumstances shaped the years that followed.",
            "It is noted here as an important part of the account.",
            "The record of this time is kept in the words of the teller.",
            "These facts are presented as they were remembered.",
        ),
    },
    audience={
        Audience.CHILDREN: (
            "Can you imagine what that was like?",
            "It was a little bit like an adventure.",
            "Close your eyes and picture it.",
            "What would you have done?",
        ),
        Audience.YOUNG_ADULTS: (
            "Every generation faces its own version of this moment.",
            "It was a time of finding out who to become.",
            "Growing up rarely follows a straight line.",
            "Choices made at this age echo for a long time.",
        ),
        Audience.ADULTS: (
            "Life rarely offers simple answers, and this was no exception.",
            "Responsibilities and hopes pulled in different directions.",
            "Experience brought both wisdom and a few regrets.",
            "The years had a way of testing every plan.",
        ),
        Audience.FAMILY: (
            "The family still tells this part of the story.",
            "Children and grandchildren have heard this many times.",
            "It is a memory the whole family shares.",
            "These are the stories that hold a family together.",
        ),
    },
    fillers=(
        "Indeed.",
        "Truly.",
        "Time passed.",
        "Days passed.",
        "Life went on.",
        "The days passed.",
        "The days went by.",
        "And life went on.",
        "Each day brought something new.",
        "The seasons came and went.",
        "And so the story moved on.",
        "Every day added to the story.",
        "Those days are still remembered with care.",
        "Little by little, the years rolled on.",
        "Each season left its mark on the family.",
        "There was always more to tell about it.",
        "The memory of it has stayed bright for years.",
        "Those days are still remembered with great care and love.",
        "The memory of it has stayed bright over all the years.",
        "Each of those small moments became a part of the larger story.",
        "The years went by, and each one added something to the story.",
    ),
)

_HI = _Bank(
    stop="।",
    # "offline writer" stays in English too, so the note is found whatever the reader's script.
    note_life=(
        "यह किताब storyloom के ऑफ़लाइन लेखक (offline writer) ने कहने वाले के अपने शब्दों से तैयार की है।"
    ),
    note_creative=("यह किताब storyloom के ऑफ़लाइन लेखक (offline writer) ने दिए गए विचार से तैयार की है।"),
    note_short="storyloom का ऑफ़लाइन (offline) मसौदा।",
    openers=(
        "यहाँ से कहानी एक नए दौर में पहुँचती है।",
        "कहानी का अगला हिस्सा यहीं से शुरू होता है।",
        "अब कहानी आगे बढ़ती है।",
    ),
    closers=(
        "और इस तरह कहानी का यह हिस्सा पूरा होता है।",
        "इसके साथ कहानी आगे बढ़ती है।",
        "ज़िंदगी का यह अध्याय कुछ ऐसे ही बीता।",
    ),
    tone={
        Tone.WARM: (
            "इन यादों में आज भी एक अपनापन है।",
            "उन दिनों की गर्माहट आज भी दिल में बसी है।",
            "छोटी छोटी बातों में बड़ा प्यार छिपा था।",
            "वह समय घर जैसा सुकून देता था।",
        ),
        Tone.NOSTALGIC: (
            "पीछे मुड़कर देखें तो वे दिन सुनहरे लगते हैं।",
            "वह समय अब बीत गया, पर यादें आज भी ताज़ा हैं।",
            "उन दिनों की खुशबू आज भी याद आती है।",
            "लगता है जैसे यह सब कल की ही बात हो।",
        ),
        Tone.REFLECTIVE: (
            "यहाँ रुककर सोचना ज़रूरी है कि इसका क्या अर्थ था।",
            "इन दिनों का मतलब बहुत बाद में समझ आया।",
            "उस समय के हर फ़ैसले ने आगे का रास्ता तय किया।",
            "समय ने दिखाया कि सच में क्या ज़रूरी था।",
        ),
        Tone.JOYFUL: (
            "उन दिनों घर हँसी से भरा रहता था।",
            "वह बहुत ख़ुशी और उजाले का समय था।",
            "हर साधारण दिन भी एक छोटा त्योहार लगता था।",
            "सबके चेहरों पर मुस्कान रहती थी।",
        ),
        Tone.HUMOROUS: (
            "सब कुछ योजना के मुताबिक़ नहीं हुआ, और इसी में मज़ा था।",
            "आज भी यह याद करके हँसी आ जाती है।",
            "कोई न कोई हमेशा मज़ाक करने को तैयार रहता था।",
            "परिवार आज भी इस बात पर एक दूसरे को छेड़ता है।",
        ),
        Tone.INSPIRATIONAL: (
            "हिम्मत का मतलब अक्सर बस चलते रहना होता है।",
            "हर मुश्किल आगे बढ़ने की एक सीढ़ी बनी।",
            "इससे पता चलता है कि धैर्य और मेहनत क्या बना सकते हैं।",
            "मुश्किल दिनों में भी उम्मीद कभी दूर नहीं थी।",
        ),
        Tone.FORMAL: (
            "यह समय यहाँ वैसे ही दर्ज है जैसे बताया गया।",
            "आगे की घटनाएँ क्रम से लिखी गई हैं।",
            "इन परिस्थितियों ने आने वाले वर्षों को आकार दिया।",
            "यह विवरण कहने वाले के अपने शब्दों पर आधारित है।",
        ),
    },
    audience={
        Audience.CHILDREN: (
            "सोचो, वह कैसा लगता होगा?",
            "यह एक छोटे से रोमांच जैसा था।",
            "आँखें बंद करो और इसकी कल्पना करो।",
            "तुम होते तो क्या करते?",
        ),
        Audience.YOUNG_ADULTS: (
            "हर पीढ़ी के सामने ऐसा एक पल आता है।",
            "यह ख़ुद को पहचानने का समय था।",
            "बड़े होने का रास्ता कभी सीधा नहीं होता।",
        ),
        Audience.ADULTS: (
            "ज़िंदगी आसान जवाब कम ही देती है।",
            "ज़िम्मेदारियाँ और सपने अलग अलग दिशाओं में खींचते थे।",
            "अनुभव अपने साथ समझ भी लाया और कुछ पछतावे भी।",
        ),
        Audience.FAMILY: (
            "परिवार आज भी यह किस्सा सुनाता है।",
            "बच्चों और पोते पोतियों ने यह कई बार सुना है।",
            "यह याद पूरे परिवार की साझी है।",
            "ऐसी ही कहानियाँ परिवार को जोड़े रखती हैं।",
        ),
    },
    fillers=(
        "सचमुच।",
        "दिन बीते।",
        "समय बदला।",
        "समय बीतता गया।",
        "और दिन बीतते गए।",
        "ज़िंदगी आगे बढ़ती रही।",
        "समय अपनी चाल चलता रहा।",
        "हर मौसम कुछ नया लाया।",
        "और इस तरह कहानी आगे बढ़ी।",
        "धीरे धीरे साल आगे बढ़ते गए।",
        "वे दिन आज भी याद आते हैं।",
        "हर मौसम ने परिवार पर अपनी छाप छोड़ी।",
        "हर छोटे पल ने कहानी में कुछ जोड़ा।",
        "इस बारे में कहने को कुछ और होता था।",
        "उस समय की हर बात आज भी याद है।",
        "वे दिन आज भी प्यार से याद किए जाते हैं।",
        "उस समय की यादें आज भी उतनी ही ताज़ा हैं।",
        "उस समय की यादें बरसों बाद भी उतनी ही ताज़ा हैं।",
        "हर छोटे पल ने मिलकर उस समय को ख़ास बना दिया।",
        "हर छोटे पल ने मिलकर उस समय को सचमुच ख़ास बना दिया।",
        "साल बीतते गए, और हर साल ने कहानी में कुछ नया जोड़ा।",
    ),
)

_MAX_FILLER = 12
# Languages that end a sentence with a danda when the teller left it open.
_DANDA_LANGUAGES = frozenset({"hi-IN", "bn-IN", "pa-IN", "od-IN"})


def _bank(language: str) -> _Bank:
    # Other languages keep English connective sentences around the teller's own words.
    return _HI if language == "hi-IN" else _EN


def _stop(language: str) -> str:
    return "।" if language in _DANDA_LANGUAGES else "."


def _template_sentences() -> frozenset[str]:
    found: set[str] = set()
    for bank in (_EN, _HI):
        found.update((bank.note_life, bank.note_creative, bank.note_short))
        found.update(bank.openers + bank.closers + bank.fillers)
        for group in (*bank.tone.values(), *bank.audience.values()):
            found.update(group)
    return frozenset(found)


_TEMPLATES = _template_sentences()


def _fill(bank: _Bank, rng: random.Random, words: int, tone: Tone, audience: Audience) -> list[str]:
    """Connective sentences adding up to exactly `words` words."""
    out: list[str] = []
    pool: list[str] = []
    left = words
    while left > 2 * _MAX_FILLER:
        if not pool:
            # Tone and audience first; the longer neutral fillers only widen the variety.
            pool = [*bank.tone[tone], *bank.audience[audience]]
            pool += [f for f in bank.fillers if _word_count(f) >= 6]
            rng.shuffle(pool)
        sentence = pool.pop()
        size = _word_count(sentence)
        if size <= left - 2:
            out.append(sentence)
            left -= size
    # The rest (at most 24 words) in one or two sentences of exactly the right lengths,
    # of different lengths where possible so the same sentence does not come twice.
    sizes = [left] if left <= _MAX_FILLER else [left - left // 2, left // 2]
    if len(sizes) == 2 and sizes[0] == sizes[1] < _MAX_FILLER:
        sizes = [sizes[0] + 1, sizes[1] - 1]
    for size in sizes:
        if size > 0:
            fresh = [f for f in bank.fillers_of(size) if f not in out]
            out.append(rng.choice(fresh or bank.fillers_of(size)))
    return out


def _append(paragraphs: list[list[str]], sentences: list[str], rng: random.Random) -> None:
    """Add sentences at the end, starting a new paragraph when the last one grows long."""
    if not paragraphs:
        paragraphs.append([])
    limit = rng.randint(60, 90)
    for sentence in sentences:
        if _word_count(" ".join(paragraphs[-1])) >= limit:
            paragraphs.append([])
            limit = rng.randint(60, 90)
        paragraphs[-1].append(sentence)


def _within(words: int, target: int) -> bool:
    return abs(words - target) <= 0.02 * target


@dataclass(frozen=True)
class _Item:
    sentence: str
    new_memory: bool = False


class OfflineWriter:
    """Writes deterministically from the teller's own sentences; says in the book it did."""

    name = "offline-writer"

    def probe(self) -> str:
        """Nothing to reach: the writer is code in this process."""
        return "ready (deterministic, no network)"

    def write_section(self, brief: SectionBrief) -> Written:
        """Write exactly brief.target_words words from the material and connective sentences."""
        bank = _bank(brief.language)
        rng = _rng("write", repr(brief))
        target = brief.target_words
        items: list[_Item] = []
        if brief.position == 1:
            note = bank.note_life if brief.kind == "life" else bank.note_creative
            if target < 4 * _word_count(note):
                note = bank.note_short
            items.append(_Item(note))
        budget = target - sum(_word_count(i.sentence) for i in items)
        memory = self._memory(brief)
        kept: list[_Item] = []
        free = budget
        for item in memory:
            # Material longer than the budget: as many sentences as fit, in order.
            if _word_count(item.sentence) <= free:
                kept.append(item)
                free -= _word_count(item.sentence)
        if memory and not kept and budget > 0:
            kept = [_Item(_first_words(memory[0].sentence, budget, bank.stop), True)]
            free = budget - _word_count(kept[0].sentence)
        opener: list[str] = []
        closer: list[str] = []
        if free >= 40:
            opener, closer = [rng.choice(bank.openers)], [rng.choice(bank.closers)]
            free -= _word_count(opener[0]) + _word_count(closer[0])
        middle = _fill(bank, rng, max(free, 0), brief.tone, brief.audience)
        items += [_Item(s) for s in opener]
        items += self._weave(kept, middle)
        items += [_Item(s) for s in closer]
        return Written(self._layout(items, rng), _usage())

    @staticmethod
    def _memory(brief: SectionBrief) -> list[_Item]:
        stop = _stop(brief.language)
        out: list[_Item] = []
        for block in re.split(r"\n\s*\n", brief.material):
            for i, sentence in enumerate(_sentences(block)):
                out.append(_Item(_terminated(sentence, stop), new_memory=i == 0))
        return out

    @staticmethod
    def _weave(memory: list[_Item], connectives: list[str]) -> list[_Item]:
        # Connectives go between units of up to three of the teller's sentences, never
        # inside one, spread evenly from before the first unit to after the last.
        units: list[list[_Item]] = []
        for item in memory:
            if item.new_memory or not units or len(units[-1]) == 3:
                units.append([])
            units[-1].append(item)
        slots: list[list[_Item]] = [[] for _ in range(len(units) + 1)]
        for j, sentence in enumerate(connectives):
            slot = min(len(slots) - 1, int((j + 0.5) * len(slots) / len(connectives)))
            slots[slot].append(_Item(sentence))
        woven: list[_Item] = list(slots[0])
        for unit, after in zip(units, slots[1:], strict=True):
            woven += unit + after
        return woven

    @staticmethod
    def _layout(items: list[_Item], rng: random.Random) -> str:
        paragraphs: list[list[str]] = [[]]
        size, limit = 0, rng.randint(50, 90)
        for item in items:
            if paragraphs[-1] and (size >= limit or (item.new_memory and size >= 30)):
                paragraphs.append([])
                size, limit = 0, rng.randint(50, 90)
            paragraphs[-1].append(item.sentence)
            size += _word_count(item.sentence)
        return _join(paragraphs)

    def adjust_length(self, brief: SectionBrief, text: str) -> Written:
        """Trim at sentence ends or pad with connective sentences to brief.target_words."""
        target = brief.target_words
        if _within(_word_count(text), target):
            return Written(text, _usage())
        bank = _bank(brief.language)
        rng = _rng("adjust", repr(brief), text)
        paragraphs = _paragraphs(text)
        words = sum(_word_count(s) for p in paragraphs for s in p)
        if words > target:
            words = self._trim(paragraphs, brief, words, target)
        _append(paragraphs, _fill(bank, rng, target - words, brief.tone, brief.audience), rng)
        return Written(_join(paragraphs), _usage())

    @staticmethod
    def _trim(paragraphs: list[list[str]], brief: SectionBrief, words: int, target: int) -> int:
        """Drop sentences from the end until the text fits; returns the words left."""
        memory = {" ".join(s.split()) for s in _sentences(brief.material)}

        def is_memory(sentence: str) -> bool:
            return sentence in memory or sentence.rstrip(_TERMINALS) in memory

        places = [(p, s) for p in range(len(paragraphs)) for s in range(len(paragraphs[p]))]
        # Connective sentences go first, the teller's sentences only if they must; the
        # offline note (the first sentence of section 1) stays.
        protected = {places[0]} if brief.position == 1 and places else set()
        order = [x for x in reversed(places) if not is_memory(paragraphs[x[0]][x[1]])]
        order += [x for x in reversed(places) if is_memory(paragraphs[x[0]][x[1]])]
        dropped: set[tuple[int, int]] = set()
        for place in order:
            if words <= target:
                break
            if place in protected:
                continue
            dropped.add(place)
            words -= _word_count(paragraphs[place[0]][place[1]])
        kept = [
            [s for i, s in enumerate(p) if (n, i) not in dropped] for n, p in enumerate(paragraphs)
        ]
        paragraphs[:] = [p for p in kept if p]
        if words > target and paragraphs:
            # Only the note is left and it is too long on its own: cut it at a word.
            paragraphs[:] = [[_first_words(" ".join(paragraphs[0]), target, _stop(brief.language))]]
            words = _word_count(paragraphs[0][0])
        return words

    def proofread(self, brief: SectionBrief, text: str) -> Written:
        """Fix spacing, capitals, doubled words and end punctuation; keep the length."""
        before = _word_count(text)
        paragraphs = [
            _proofread_paragraph(" ".join(block.split()), brief.language)
            for block in re.split(r"\n\s*\n", text)
        ]
        fixed = [p for p in paragraphs if p]
        after = sum(_word_count(p) for p in fixed)
        if before - after > 0.01 * before:
            # Removing many doubled words would shorten the page: give the words back.
            rng = _rng("proofread", repr(brief), text)
            extra = _fill(_bank(brief.language), rng, before - after, brief.tone, brief.audience)
            fixed[-1] = " ".join([fixed[-1], *extra])
        return Written("\n\n".join(fixed), _usage())

    def plan_illustration(self, title: str, page_text: str, style: ImageStyle) -> IllustrationPlan:
        """The page's prompt: its key sentence, the book's title and the style."""
        lead, look = _STYLE_WORDS[style]
        prompt = (
            f'{lead} for the storybook "{title}": '
            f"{_key_sentence(page_text) or title}. Style: {look}."
        )
        return IllustrationPlan(prompt=prompt, usage=_usage())


_STYLE_WORDS: dict[ImageStyle, tuple[str, str]] = {
    ImageStyle.REALISTIC: (
        "A realistic illustration",
        "realistic, soft natural light, gentle colours, a detailed landscape",
    ),
    ImageStyle.ARTISTIC: (
        "A painterly illustration",
        "painterly, bold brush strokes, a warm palette, expressive shapes",
    ),
    ImageStyle.MINIMALIST: (
        "A minimalist illustration",
        "minimalist, flat colours, one or two simple geometric shapes, empty space",
    ),
}


def _key_sentence(text: str) -> str:
    """The page's most telling sentence: the longest one that is not a template."""
    sentences = [s for s in _sentences(text) if s not in _TEMPLATES and "storyloom" not in s]
    fitting = [s for s in sentences if _word_count(s) <= 40]
    pool = fitting or sentences
    if not pool:
        return ""
    best = max(pool, key=_word_count)  # the first of the longest, so it is stable
    return " ".join(best.split()[:40]).rstrip(_TERMINALS + ",;: ")


# Not "example.com": a web address is not two sentences.
_GLUED_SENTENCE = re.compile(
    r"(?<=[a-z]{2})([.!?])(?=[A-Za-z][a-z]+\b)(?!(?:com|org|net|in|io|gov|edu)\b)"
)
_LEGIT_DOUBLES = frozenset({"had", "that"})
# Abbreviations that end in a full stop mid-sentence ("at 5 p.m. and then").
_NO_CAPITAL_AFTER = frozenset(
    {"e.g.", "i.e.", "vs.", "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "a.m.", "p.m."}
)


def _doubled(match: re.Match[str]) -> str:
    word = match.group(1)
    return match.group(0) if word.lower() in _LEGIT_DOUBLES else word


def _capital(match: re.Match[str]) -> str:
    lead = match.group(1)
    before = match.string[: match.start()].rsplit(maxsplit=1)
    previous = (before[-1] if before else "") + lead.strip()
    if previous.lower().strip("\"'“‘(") in _NO_CAPITAL_AFTER:
        return match.group(0)
    return lead + match.group(2).upper()


def _proofread_paragraph(p: str, language: str) -> str:
    """One paragraph through the rule-based grammar pass."""
    if not p:
        return p
    p = re.sub(r"\s+([,.;:!?।॥%)\]}])", r"\1", p)  # no space before punctuation
    p = re.sub(r"([(\[{])\s+", r"\1", p)
    p = re.sub(r",{2,}", ",", p)
    p = re.sub(r"(?<!\.)\.\.(?!\.)", ".", p)  # ".." is a slip, "..." an ellipsis
    p = re.sub(r"(?<=[^\W\d_]),(?=[^\W\d_])", ", ", p)  # a space after a comma; not 1,000
    p = re.sub(_GLUED_SENTENCE, r"\1 ", p)  # "end.The", "mat.it"
    p = re.sub(r"([।॥])(?=[^\s\"'”’)\]।॥])", r"\1 ", p)
    # Only Latin words: reduplication is grammar in Hindi and Tamil (धीरे धीरे).
    p = re.sub(r"(?<![A-Za-z'’])([A-Za-z]+)(?:\s+\1)+(?![A-Za-z'’])", _doubled, p, flags=re.I)
    if language == "en-IN":
        p = re.sub(r"(?<![\w'’-])i(?=\s|['’](?:m|ve|ll|d)\b|[,;:!?]|\.(?![A-Za-z])|$)", "I", p)
    p = re.sub(r"^([\"'“‘(\[]*)([a-z])", _capital, p)
    p = re.sub(r"((?<=[.!?])[\"'”’)\]]*\s+[\"'“‘(\[]*)([a-z])", _capital, p)
    if p.rstrip(_CLOSERS)[-1:] not in tuple(_TERMINALS):
        p = p.rstrip(",;:—- ") + _stop(language)
    return p


# ---------------------------------------------------------------------------------------
# Illustrations

_LONG_SIDE = 1024
RGB = tuple[int, int, int]

_DEFAULT_PALETTES: dict[ImageStyle, tuple[RGB, ...]] = {
    ImageStyle.REALISTIC: (
        (250, 214, 165), (135, 185, 235), (140, 170, 130), (98, 150, 96), (66, 118, 74),
        (42, 84, 56),
    ),
    ImageStyle.ARTISTIC: (
        (246, 214, 150), (214, 88, 45), (240, 170, 60), (180, 50, 60), (120, 60, 40), (90, 40, 70),
    ),
    ImageStyle.MINIMALIST: (
        (244, 239, 229), (220, 96, 72), (38, 62, 92), (236, 190, 80), (120, 160, 150), (60, 60, 60),
    ),
}  # fmt: skip


def _image_size(aspect_ratio: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*", aspect_ratio)
    ratio = float(match.group(1)) / float(match.group(2)) if match and float(match[2]) else 0.0
    if not 0.25 <= ratio <= 4:
        raise PermanentError("offline-illustrator", f"aspect ratio {aspect_ratio!r} not usable")
    if ratio >= 1:
        return _LONG_SIDE, round(_LONG_SIDE / ratio)
    return round(_LONG_SIDE * ratio), _LONG_SIDE


def _shift(colour: RGB, rng: random.Random, spread: float = 0.04) -> RGB:
    """The colour with its hue nudged, so each picture varies but keeps its palette."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in colour))
    h = (h + rng.uniform(-spread, spread)) % 1.0
    s = min(1.0, max(0.0, s * rng.uniform(0.9, 1.1)))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _luminance(c: RGB) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _reference_palette(png: bytes) -> list[RGB] | None:
    """The dominant colours of a picture, most common first; None if it cannot be read."""
    try:
        with Image.open(io.BytesIO(png)) as source:
            picture = source.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    # Leave out the caption band at the bottom: it is the same on every picture.
    picture = picture.crop((0, 0, picture.width, max(1, picture.height * 88 // 100)))
    picture.thumbnail((96, 96))
    quantized = picture.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    flat = quantized.getpalette() or []
    counts = sorted(quantized.getcolors() or [], key=lambda pair: pair[0], reverse=True)
    indices = [i for _, i in counts if isinstance(i, int) and 3 * i + 2 < len(flat)]
    palette: list[RGB] = [(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]) for i in indices]
    return palette or None


def _palette_for(request: ImageRequest, rng: random.Random) -> list[RGB]:
    base = _DEFAULT_PALETTES[request.style]
    reference = _reference_palette(request.reference_png) if request.reference_png else None
    if reference is None:
        return [_shift(c, rng) for c in base]
    # Keep the reference's colours exactly (and their order), topping up from the default.
    return (reference + [_shift(c, rng) for c in base])[: max(len(base), len(reference))]


def _draw_realistic(img: Image.Image, palette: list[RGB], rng: random.Random) -> None:
    w, h = img.size
    by_light = sorted(palette[:6], key=_luminance, reverse=True)
    horizon, sky = by_light[0], by_light[1]
    hills = by_light[2:] or [_mix(sky, (0, 0, 0), 0.5)]
    gradient = Image.linear_gradient("L").resize((w, h))
    img.paste(Image.composite(Image.new("RGB", (w, h), horizon), Image.new("RGB", (w, h), sky),
                              gradient))  # fmt: skip
    sun = _mix(horizon, (255, 255, 240), 0.6)
    cx, cy, r = rng.uniform(0.2, 0.8) * w, rng.uniform(0.15, 0.4) * h, h * rng.uniform(0.05, 0.08)
    glow = Image.new("L", (w, h), 0)
    ImageDraw.Draw(glow).ellipse((cx - 3 * r, cy - 3 * r, cx + 3 * r, cy + 3 * r), fill=150)
    img.paste(Image.new("RGB", (w, h), sun), mask=glow.filter(ImageFilter.GaussianBlur(r)))
    ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=sun)
    draw = ImageDraw.Draw(img)
    layers = max(3, len(hills))
    for layer in range(layers):
        # Far hills fade into the horizon, as air does to a real landscape.
        colour = _mix(hills[layer % len(hills)], horizon, 0.45 * (layers - 1 - layer) / layers)
        base = h * (0.5 + 0.14 * layer)
        amp, freq, phase = h * rng.uniform(0.04, 0.09), rng.uniform(1.0, 3.0), rng.uniform(0, 6.3)
        points = [
            (x, base - amp * math.sin(freq * x / w * math.pi + phase)
             - amp * 0.4 * math.sin(3.1 * freq * x / w * math.pi + phase * 1.7))
            for x in range(0, w + 8, 8)
        ]  # fmt: skip
        draw.polygon([*points, (w, h), (0, h)], fill=colour)
    img.paste(img.filter(ImageFilter.GaussianBlur(1.5)))


def _draw_artistic(img: Image.Image, palette: list[RGB], rng: random.Random) -> None:
    w, h = img.size
    img.paste(palette[0], (0, 0, w, h))
    draw = ImageDraw.Draw(img, "RGBA")
    colours = palette[1:] or [_mix(palette[0], (0, 0, 0), 0.4)]
    for _ in range(10):  # broad washes of colour
        c = rng.choice(colours)
        x, y, rx, ry = rng.uniform(0, w), rng.uniform(0, h), w * rng.uniform(0.1, 0.35), h * 0.2
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=(*c, 110))
    for _ in range(120):  # bold, curving brush strokes
        c = _shift(rng.choice(colours), rng, 0.03)
        x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        angle, length = rng.uniform(0, math.tau), rng.uniform(0.05, 0.25) * w
        bend = rng.uniform(-0.6, 0.6)
        points = []
        for step in range(6):
            t = step / 5
            a = angle + bend * t
            points.append((x + math.cos(a) * length * t, y + math.sin(a) * length * t))
        # Opaque: translucent segments would darken where they overlap at each joint.
        draw.line(points, fill=c, width=rng.randint(8, 34), joint="curve")
    cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.6) * h, h * 0.18
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colours[0], width=18)
    img.paste(img.filter(ImageFilter.SMOOTH_MORE))


def _draw_minimalist(img: Image.Image, palette: list[RGB], rng: random.Random) -> None:
    w, h = img.size
    img.paste(palette[0], (0, 0, w, h))
    draw = ImageDraw.Draw(img)
    shapes = rng.sample(["circle", "square", "triangle"], k=rng.choice([1, 2]))
    colours = sorted(palette[1:3] or [_mix(palette[0], (0, 0, 0), 0.5)], key=_luminance)
    for index, shape in enumerate(shapes):
        c = colours[index % len(colours)]
        cx = w * (0.5 if len(shapes) == 1 else (0.35 + 0.3 * index))
        cy, r = h * rng.uniform(0.38, 0.5), h * rng.uniform(0.14, 0.24)
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=c)
        elif shape == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=c)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=c)


_DRAW = {
    ImageStyle.REALISTIC: _draw_realistic,
    ImageStyle.ARTISTIC: _draw_artistic,
    ImageStyle.MINIMALIST: _draw_minimalist,
}


def _caption(prompt: str, limit: int) -> str:
    """The prompt's printable-ASCII words, cut to fit: the default font has no Indic glyphs."""
    words = [t for t in prompt.split() if all(32 <= ord(ch) < 127 for ch in t)]
    text = " ".join(words)
    if len(text) > limit:
        text = text[: limit - 3].rsplit(" ", 1)[0] + "..."
    return text


def _draw_caption(img: Image.Image, prompt: str) -> None:
    w, h = img.size
    band = max(24, h // 20)
    draw = ImageDraw.Draw(img, "RGBA")
    draw.rectangle((0, h - band, w, h), fill=(20, 20, 20, 170))
    size = band * 9 // 16
    text = _caption(prompt, limit=int(w / (size * 0.55)))
    if text:
        font = ImageFont.load_default(size=size)
        draw.text((size, h - band + (band - size) // 2), text, fill=(245, 245, 245), font=font)


class OfflineIllustrator:
    """Draws a deterministic picture with Pillow; the look follows the style."""

    name = "offline-illustrator"

    def probe(self) -> str:
        """Nothing to reach: Pillow draws in this process."""
        return "ready (draws with Pillow, no network)"

    def draw(self, request: ImageRequest) -> Picture:
        """A PNG of the request's aspect ratio (long side 1024), deterministic from its prompt."""
        width, height = _image_size(request.aspect_ratio)
        rng = _rng("draw", request.prompt, request.style.value, request.aspect_ratio)
        palette = _palette_for(request, rng)
        img = Image.new("RGB", (width, height))
        _DRAW[request.style](img, palette, rng)
        _draw_caption(img, request.prompt)
        out = io.BytesIO()
        img.save(out, format="PNG")
        return Picture(out.getvalue(), "image/png", width, height, _usage())


# ---------------------------------------------------------------------------------------
# Speech: eSpeak NG through ctypes

_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
# Without this flag a failed initialisation calls exit() and takes the worker with it.
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1

# Voice names as the shipped espeak-ng-data spells them (checked: each one loads).
_VOICES: dict[str, str] = {
    "hi-IN": "hi", "en-IN": "en", "ta-IN": "ta", "bn-IN": "bn", "te-IN": "te", "kn-IN": "kn",
    "ml-IN": "ml", "mr-IN": "mr", "gu-IN": "gu", "pa-IN": "pa", "od-IN": "or",
}  # fmt: skip

# Measured with eSpeak NG 1.52 (espeakng-loader) at its default rate: the same three
# sentences (a grandmother, a village, a market) in each language, repeated four times
# (615-915 characters), seconds of audio divided by len(text).
_SECONDS_PER_CHAR: dict[str, float] = {
    "en-IN": 0.053, "hi-IN": 0.069, "ta-IN": 0.060, "bn-IN": 0.074, "te-IN": 0.076,
    "kn-IN": 0.069, "ml-IN": 0.062, "mr-IN": 0.072, "gu-IN": 0.075, "pa-IN": 0.067,
    "od-IN": 0.081,
}  # fmt: skip

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _ESpeak:
    """The process's one eSpeak NG engine; only ever used with _ESPEAK_LOCK held."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
            data_path = str(espeakng_loader.get_data_path())
        except (OSError, RuntimeError) as error:
            raise PermanentError("offline-espeak", f"eSpeak NG not loadable: {error}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise PermanentError("offline-espeak", f"eSpeak NG failed to start ({rate})")
        self.lib = lib
        self.sample_rate = int(rate)
        self.samples = bytearray()
        # Kept on the instance: if ctypes' wrapper were collected, C would call freed memory.
        self.callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        # An exception cannot cross back into C: stop the synthesis instead of raising.
        try:
            if wav and count > 0:
                self.samples += ctypes.string_at(wav, count * 2)
        except Exception:
            return 1
        return 0

    def synthesize(self, text: str, voice: str) -> bytes:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise PermanentError("offline-espeak", f"no eSpeak NG voice {voice!r}")
        self.samples = bytearray()
        data = text.encode("utf-8")
        status = self.lib.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        self.lib.espeak_Synchronize()
        if status != 0:
            raise PermanentError("offline-espeak", f"eSpeak NG synthesis failed ({status})")
        return bytes(self.samples)


_ESPEAK_LOCK = threading.Lock()
_engine: _ESpeak | None = None


def _reset_lock_in_child() -> None:
    # A fork taken while another thread held the lock would leave the child locked out.
    global _ESPEAK_LOCK
    _ESPEAK_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def _espeak(text: str, voice: str) -> tuple[bytes, int]:
    global _engine
    with _ESPEAK_LOCK:
        if _engine is None:
            _engine = _ESpeak()
        return _engine.synthesize(text, voice), _engine.sample_rate


class OfflineSpeaker:
    """Speaks with eSpeak NG from the espeakng-loader wheel: robotic, but real speech."""

    name = "offline-espeak"
    max_chars = 2500

    def probe(self) -> str:
        """Speak one word: proves the library loads and finds its voice data."""
        samples, _ = _espeak("hello", _VOICES["en-IN"])
        if not samples:
            raise PermanentError(self.name, "eSpeak NG spoke no audio for a test word")
        return f"spoke 1 word; voice data at {espeakng_loader.get_data_path()}"

    def speak(self, text: str, language: Language) -> Speech:
        """A mono 16-bit WAV of the text in the language's eSpeak NG voice."""
        if not text.strip():
            raise PermanentError(self.name, "nothing to say: the text is empty")
        if len(text) > self.max_chars:
            raise PermanentError(
                self.name, f"text of {len(text)} characters is over the {self.max_chars} limit"
            )
        voice = _VOICES.get(language)
        if voice is None:
            raise PermanentError(self.name, f"no voice for language {language!r}")
        samples, rate = _espeak(text, voice)
        return Speech(pcm16_to_wav(samples, rate), _usage(characters=len(text)))

    def seconds_per_char(self, language: Language) -> float:
        """eSpeak NG's measured speaking time per character in this language."""
        return _SECONDS_PER_CHAR.get(language, _SECONDS_PER_CHAR["en-IN"])


class OfflineTranslator:
    """Cannot translate: returns the text unchanged, whatever the languages."""

    name = "offline-translator"
    max_chars = 5000

    def probe(self) -> str:
        """Nothing to reach; says what offline translation means."""
        return "ready (cannot translate: narration in another language reads the original)"

    def translate(self, text: str, source: Language, target: Language) -> Written:
        """The text itself, untranslated (there is no offline translation model)."""
        if len(text) > self.max_chars:
            raise PermanentError(
                self.name, f"text of {len(text)} characters is over the {self.max_chars} limit"
            )
        return Written(text, _usage(characters=len(text)))

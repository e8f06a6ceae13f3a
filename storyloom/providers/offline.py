"""The embedded default providers: deterministic, no network, no keys.

The writer puts the teller's own sentences first, every one, in order, and joins and
pads them with connective sentences from a bank (English, and Hindi for hi-IN stories)
large enough that a book of twenty pages repeats none of them more than twice; it says
in the book that it did so. The illustrator draws with Pillow. The speaker is eSpeak NG from the
espeakng-loader wheel, through ctypes. The translator cannot translate and says so.
"""

from __future__ import annotations

import colorsys
import ctypes
import functools
import hashlib
import io
import math
import os
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
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
    Revision,
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


# ---------------------------------------------------------------------------------------
# The connective bank.
#
# No apostrophes or hyphens, so any word counter agrees on its words; no names, places,
# dates or numbers, so a fact check never finds in a connective sentence something the
# teller did not say.


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


@dataclass(frozen=True)
class _Bank:
    """One language's connective sentences.

    The hand-written sentences (general, and one set per tone and per audience) come
    first. Past them, a sentence is a starter ("Even now,") put before a clause ("the
    memory comes back clear and whole"): a few dozen clauses and a dozen starters make
    hundreds of different sentences, so a long book still repeats none more than twice.
    """

    stop: str
    note_life: str
    note_creative: str
    note_short: str
    general: tuple[str, ...]
    tone: Mapping[Tone, tuple[str, ...]]
    audience: Mapping[Audience, tuple[str, ...]]
    starters: tuple[str, ...]  # "" (the clause on its own) first
    clauses: tuple[str, ...]
    tone_clauses: Mapping[Tone, tuple[str, ...]]
    audience_clauses: Mapping[Audience, tuple[str, ...]]
    tiny: tuple[str, ...]  # one to four words: the last few words of a small section
    # Continuity: "{f}" is a few of the teller's own words from the neighbouring section.
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    # When no words of the neighbour can be quoted (or there is no neighbour's text).
    plain_openers: tuple[str, ...]
    plain_closers: tuple[str, ...]
    endings: tuple[str, ...]  # the book's last section
    number_words: frozenset[str]  # never quoted: a number is a fact
    # Capitalised, these may still open a quote: "My father", not a name.
    function_words: frozenset[str]
    # A quoted fragment does not end on these: "I was born", not "I was born in".
    dangling: frozenset[str]

    def sentence(self, starter: str, clause: str) -> str:
        if not starter:
            return clause[:1].upper() + clause[1:] + self.stop
        return f"{starter} {clause}{self.stop}"

    def combinations(self, tone: Tone, audience: Audience) -> list[str]:
        clauses = (*self.clauses, *self.tone_clauses[tone], *self.audience_clauses[audience])
        return [self.sentence(s, c) for c in clauses for s in self.starters]


_EN = _Bank(
    stop=".",
    note_life=(
        "This book was drafted by the storyloom offline writer, which keeps the words of the "
        "teller as they were given and adds only the sentences that join them."
    ),
    note_creative=(
        "This book was drafted by the storyloom offline writer, which keeps the words it was "
        "given and adds only the sentences that join them."
    ),
    note_short="Drafted by the storyloom offline writer.",
    general=(
        "Some memories arrive whole, as if they had been waiting.",
        "It is the small details that make a life feel near.",
        "Those were days worth setting down in words.",
        "Every family keeps its stories in its own way.",
        "Much of what mattered then still matters now.",
        "A story like this is built from many quiet moments.",
        "Nothing about it seems small when it is remembered well.",
        "The years have not worn these memories thin.",
        "What was said then is still worth hearing.",
        "Some days leave a mark that never quite fades.",
        "It is good to have these words written down at last.",
        "Each memory opens onto another.",
        "The telling of it brings the whole time back.",
        "There is a shape to these years that only distance shows.",
        "People and places live on in the way they are remembered.",
        "Ordinary days have a way of becoming treasures.",
        "Memory keeps what the heart chooses to keep.",
        "The past is close here, almost close enough to touch.",
        "This is how a life gathers its meaning, day by day.",
        "Not every moment needs a lesson; some are simply worth keeping.",
        "The details may blur, but the feeling stays sharp.",
        "It all belongs to the story, the hard parts and the easy ones.",
        "These are the threads the rest of the story is woven from.",
        "Some of it was planned, and much of it simply happened.",
        "Life seldom waits for anyone to be ready.",
        "Change came slowly, and then all at once.",
        "There is always more to a memory than words can hold.",
        "Each season brought its own work and its own rewards.",
        "The world outside was changing, and so was life at home.",
        "Seen from here, it is clear how much it shaped what followed.",
        "Stories like this are how the past speaks to the present.",
        "It was a time of learning, often without knowing it.",
        "Habits formed in those days lasted a lifetime.",
        "Much was learned simply by watching and listening.",
        "The people in this story are part of everything that came after.",
        "Time moved differently then, or so it seems now.",
        "Some lessons are taught without a word being said.",
        "Every life has chapters like this.",
        "A good memory is a kind of inheritance.",
        "The heart remembers what the calendar forgets.",
        "Those days asked a great deal, and gave a great deal back.",
        "Not all of it was easy, but all of it was lived.",
        "These memories are kept the way old letters are kept.",
        "It is worth remembering exactly as it was.",
        "Words cannot hold everything, but they can hold a great deal.",
        "Even the quiet days had their stories.",
        "The story would not be the same without this part.",
        "Some moments ask only to be remembered.",
    ),
    tone={
        Tone.WARM: (
            "There is a quiet warmth in remembering this.",
            "These moments were held close and cherished.",
            "Kindness ran through those days like a thread through cloth.",
            "It was the kind of memory that still feels like home.",
            "Small gestures meant a great deal then, and they still do.",
            "Everyone who was there remembers the warmth of it.",
            "Love showed itself in small and steady ways.",
            "There was always room for another at the table.",
            "Care was given freely and without fuss.",
            "These are memories to hold gently.",
            "Affection lived in the everyday things most of all.",
            "The warmth of those people has outlasted the years.",
        ),
        Tone.NOSTALGIC: (
            "Looking back, those days seem to glow.",
            "Some things from that time are gone now, but the memory stays.",
            "The sounds and smells of those years still come back easily.",
            "It feels like a long time ago, and also like yesterday.",
            "Those were simpler days, or so they seem now.",
            "Memory has a way of keeping the best parts bright.",
            "Some of those places have changed beyond recognition.",
            "It is hard not to miss the pace of those years.",
            "The old ways had a charm all their own.",
            "So much has changed since, and yet the memory has not.",
            "A familiar sound can still carry it all back.",
            "Those years seem golden from this distance.",
        ),
        Tone.REFLECTIVE: (
            "It is worth pausing here to think about what this meant.",
            "Only later did the meaning of these days become clear.",
            "Every choice made then shaped what came after.",
            "There is a lesson here, though it took years to see it.",
            "Looking closely, one can see how each step led to the next.",
            "Time has a way of showing what truly mattered.",
            "Meaning often arrives long after the moment has passed.",
            "It is strange how the smallest choices turn out to matter most.",
            "Perhaps this is where so much of what followed began.",
            "Understanding came slowly, as it usually does.",
            "Some questions from that time still have no easy answer.",
            "In hindsight, the pattern is easy to see.",
        ),
        Tone.JOYFUL: (
            "There was so much laughter in those days.",
            "It was a bright and happy time.",
            "Joy seemed to be waiting around every corner.",
            "Even ordinary days felt like small celebrations.",
            "The happiness of that time is easy to remember.",
            "Everyone seemed to be smiling then.",
            "Laughter was never far from the surface.",
            "There was music in the everyday business of living.",
            "Good news seemed to travel fast in those days.",
            "Happiness came easily, and it came often.",
            "It was a season of bright mornings and full evenings.",
            "Delight was found in the simplest things.",
        ),
        Tone.HUMOROUS: (
            "Not everything went to plan, which made it all the more fun.",
            "Looking back, it is hard not to laugh.",
            "There was always someone ready with a joke.",
            "Some of these moments are still retold with a grin.",
            "Nobody could have planned such a comedy of small mistakes.",
            "The family still teases each other about this part.",
            "Dignity was not always preserved, but the stories were.",
            "Some plans looked better on paper than in practice.",
            "It is a wonder anyone kept a straight face.",
            "Every family needs a few stories like this.",
            "The retelling has grown funnier with every year.",
            "Mishaps, it turns out, make the best memories.",
        ),
        Tone.INSPIRATIONAL: (
            "Courage often looks like simply carrying on.",
            "Each challenge became a step forward.",
            "It showed what patience and hard work can build.",
            "Hope was never far away, even on hard days.",
            "There is strength in a life lived honestly.",
            "Every small effort added up to something lasting.",
            "Determination did what luck could not.",
            "Hard work was the surest path, and it was taken.",
            "Small acts of courage added up over the years.",
            "Even setbacks became part of the foundation.",
            "Faith in the future kept everyone going.",
            "What was built then still stands in the lives it touched.",
        ),
        Tone.FORMAL: (
            "This period is recorded here as it was recounted.",
            "The events that follow are set down in order.",
            "These circumstances shaped the years that followed.",
            "It is noted here as an important part of the account.",
            "The record of this time is kept in the words of the teller.",
            "These facts are presented as they were remembered.",
            "The account continues in the order in which it was given.",
            "The particulars are set down here without embellishment.",
            "This portion of the record concerns the period described.",
            "The significance of these events is noted for those who follow.",
            "The matters recounted here are of lasting importance to the family.",
            "What follows is presented faithfully and in sequence.",
        ),
        Tone.NARRATIVE: (
            "Then the story moved on, as stories do.",
            "Events followed each other in their own order.",
            "After that, life took its next turn.",
            "Day followed day, and the story went on.",
            "So it went, from that time to the next.",
            "The days that followed brought their own events.",
            "That is how things stood at the time.",
            "And that is what happened next.",
            "Things went on in this way for a while.",
            "Meanwhile, life carried on as it always had.",
            "From there, events took their course.",
            "The next turn in the story was not long in coming.",
        ),
    },
    audience={
        Audience.CHILDREN: (
            "Can you imagine what that was like?",
            "Does it sound a little like an adventure?",
            "Close your eyes and picture it.",
            "What would you have done?",
            "Have you ever felt something like that?",
            "What do you think happened next?",
            "How do you think that felt?",
            "Imagine being there yourself.",
            "Would you have been brave enough?",
            "Who do you think laughed the loudest?",
        ),
        Audience.YOUNG_ADULTS: (
            "Every generation faces its own version of this moment.",
            "It was a time of finding out who to become.",
            "Growing up rarely follows a straight line.",
            "Choices made at this age echo for a long time.",
            "Finding a path is rarely simple at any age.",
            "Big decisions often look small at the time.",
            "Independence came with its own surprises.",
            "There is always more to learn than school can teach.",
        ),
        Audience.ADULTS: (
            "Life rarely offers simple answers, and this was no exception.",
            "Responsibilities and hopes pulled in different directions.",
            "Experience brought both wisdom and a few regrets.",
            "The years had a way of testing every plan.",
            "Duty and desire do not always agree.",
            "Some compromises turned out to be wise ones.",
            "Every choice closed some doors and opened others.",
            "Responsibility arrived, as it does, before anyone felt ready.",
        ),
        Audience.FAMILY: (
            "The family still tells this part of the story.",
            "Children and grandchildren have heard this many times.",
            "It is a memory the whole family shares.",
            "These are the stories that hold a family together.",
            "Ask any of them, and they will tell it the same way.",
            "This is part of what the family carries forward.",
            "Every generation adds its own chapter.",
            "Some of these stories are told at every gathering.",
        ),
        Audience.SENIORS: (
            "Many who lived through those years will recognise this.",
            "It is the kind of memory that grows dearer with age.",
            "Those who remember those times will know the feeling.",
            "There is a quiet pride in having seen so much.",
            "The world has changed a great deal since then.",
            "A long life gathers many such moments.",
            "Some things are understood only after many years.",
            "Old friends would nod at this part of the story.",
        ),
    },
    starters=(
        "",
        "Even now,",
        "Looking back,",
        "Years later,",
        "To this day,",
        "In the telling,",
        "Time and again,",
        "Somehow,",
        "In the end,",
        "All the same,",
        "Even after so long,",
        "In a way,",
        "Remembering it now,",
        "After all this time,",
        "Without a doubt,",
    ),
    clauses=(
        "the smallest details are the ones that stay",
        "these are the moments that come back first",
        "it is easy to hear the voices of that time",
        "the memory comes back clear and whole",
        "what was ordinary then seems precious now",
        "a single detail can bring the whole day back",
        "the picture of it has hardly faded",
        "it is plain how much those days mattered",
        "the rhythm of those years can still be felt",
        "the meaning of it keeps growing",
        "the feeling of that time is close at hand",
        "each part of the story leads to the next",
        "the past has a way of staying near",
        "those days still have something to say",
        "the story holds together like a well worn cloth",
        "nothing about it feels far away",
        "the thread of those years runs through everything since",
        "there is more here than the words alone can carry",
        "it all seems to belong together",
        "the memory keeps its colour",
        "those years remain part of who the family is",
        "the echo of those days is easy to hear",
        "much of it still rings true",
        "the faces from that time are easy to picture",
    ),
    tone_clauses={
        Tone.WARM: (
            "there is a quiet warmth in remembering it",
            "the kindness of those people is easy to feel",
            "it feels like coming home",
            "the love in it is plain to see",
            "every gesture of care still counts",
            "the warmth of it has not cooled",
        ),
        Tone.NOSTALGIC: (
            "those days seem to glow",
            "the old sounds and smells come drifting back",
            "it feels like yesterday",
            "the years in between seem to fall away",
            "there is a gentle ache in remembering it",
            "those simpler days are sorely missed",
        ),
        Tone.REFLECTIVE: (
            "its meaning has become clearer",
            "it is worth asking what it taught",
            "the lesson in it is easier to see",
            "each step seems to lead to the next",
            "it shows what truly mattered",
            "the choices made then look wiser than they felt",
        ),
        Tone.JOYFUL: (
            "it is a pleasure to remember",
            "the laughter of that time rings out again",
            "the happiness of it is still catching",
            "it brings a smile every time",
            "those bright days shine as they did",
            "the joy in it has not faded",
        ),
        Tone.HUMOROUS: (
            "it is hard not to laugh",
            "it is hard to tell this part with a straight face",
            "the family still teases about it",
            "the funny side is impossible to miss",
            "nobody could have planned such a comedy",
            "it gets a grin at every retelling",
        ),
        Tone.INSPIRATIONAL: (
            "it shows what patience can build",
            "the courage in it still inspires",
            "it proves that hard work pays",
            "hope shines through every part of it",
            "it is a reminder that setbacks pass",
            "the strength of it still gives heart to others",
        ),
        Tone.FORMAL: (
            "the account stands as it was given",
            "these events are recorded faithfully",
            "the record speaks for itself",
            "the significance of this period is clear",
            "the facts are set down without embellishment",
            "this part of the record deserves its place",
        ),
        Tone.NARRATIVE: (
            "the story simply goes on",
            "events unfold in their own order",
            "this is how things happened",
            "the next part follows from this",
            "the telling keeps to the order of events",
            "things moved on from here",
        ),
    },
    audience_clauses={
        Audience.CHILDREN: (
            "it sounds a little like an adventure",
            "it is the kind of thing a child never forgets",
            "it is fun to imagine being there",
            "it is a story worth telling at bedtime",
        ),
        Audience.YOUNG_ADULTS: (
            "growing up looks different in every generation",
            "finding a path is never a straight line",
            "every choice at that age echoes for years",
            "it is a reminder that a future is made slowly",
        ),
        Audience.ADULTS: (
            "life rarely offers simple answers",
            "responsibility and hope pull in different directions",
            "experience brings wisdom and a few regrets",
            "the years test every plan",
        ),
        Audience.FAMILY: (
            "the whole family knows this part",
            "this is a story the family shares",
            "children and grandchildren know it well",
            "stories like this hold a family together",
        ),
        Audience.SENIORS: (
            "those who lived through those years will understand",
            "it grows dearer with age",
            "many of that generation will recognise it",
            "a long life gathers many such moments",
        ),
    },
    tiny=(
        "Indeed.",
        "Truly.",
        "Certainly.",
        "Always.",
        "Time passed.",
        "Days passed.",
        "Seasons turned.",
        "Years passed.",
        "Life went on.",
        "Time moved on.",
        "So it went.",
        "The days passed.",
        "The days went by.",
        "And life went on.",
        "The seasons turned again.",
        "Such were those days.",
    ),
    openers=(
        "After “{f}”, the story moves on.",
        "The story has told of “{f}”, and now it goes on.",
        "From “{f}”, the telling turns to what came next.",
        "Picking up after “{f}”, the story continues.",
    ),
    closers=(
        "Still ahead is “{f}”, and all that came with it.",
        "The story goes on toward “{f}”, and what followed.",
        "Soon the telling reaches “{f}”, and the next part begins.",
        "Next, the story turns toward “{f}”, and on from there.",
    ),
    plain_openers=(
        "Here the story turns to a new chapter.",
        "This is where the next part of the story begins.",
        "The story continues here.",
        "And so the telling goes on.",
        "Now the story takes its next step.",
        "A new part of the story begins here.",
    ),
    plain_closers=(
        "And so this part of the story comes to a close.",
        "With that, the story moves on.",
        "That is how this part of the story unfolded.",
        "Here this part of the telling rests.",
        "From here, the story goes on to its next part.",
        "So ends this part, and the next begins.",
    ),
    endings=(
        "Here the telling comes to rest, though the story itself goes on.",
        "And so the story ends here, for now, in the words of the teller.",
        "That is where this telling ends, and where the memories live on.",
    ),
    number_words=_words(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty "
        "sixty seventy eighty ninety hundred thousand million lakh lakhs crore crores "
        "first second third fourth fifth sixth seventh eighth ninth tenth dozen half "
        "twice thrice hundreds thousands"
    ),
    function_words=_words(
        "i my we our the a an in on at every each when after before then there it he she "
        "they his her their that this those these for as so and but with from by once later "
        "years much many some all if since while until only even still most sometimes "
        "nobody everyone everybody nothing ask"
    ),
    dangling=_words(
        "a an the in on at to of for with and but or by from as my our his her their "
        "that which who whom was were is are had has have be been would could its your"
    ),
)

_HI = _Bank(
    stop="।",
    # "offline writer" stays in English too, so the note is found whatever the reader's script.
    note_life=(
        "यह किताब storyloom के ऑफ़लाइन लेखक (offline writer) ने तैयार की है: यादें कहने वाले "
        "के अपने शब्दों में हैं, और उन्हें जोड़ने वाले वाक्य लेखक के हैं।"
    ),
    note_creative=(
        "यह किताब storyloom के ऑफ़लाइन लेखक (offline writer) ने तैयार की है: दिए गए शब्द "
        "वैसे ही हैं, और उन्हें जोड़ने वाले वाक्य लेखक के हैं।"
    ),
    note_short="storyloom के ऑफ़लाइन लेखक (offline writer) का मसौदा।",
    general=(
        "कुछ यादें पूरी की पूरी लौट आती हैं, जैसे इंतज़ार कर रही हों।",
        "छोटी छोटी बातें ही ज़िंदगी को क़रीब लाती हैं।",
        "वे दिन शब्दों में सहेजने लायक़ थे।",
        "हर परिवार अपनी कहानियाँ अपने ढंग से सँभालता है।",
        "जो बातें तब ज़रूरी थीं, वे आज भी ज़रूरी हैं।",
        "ऐसी कहानी कई शांत पलों से मिलकर बनती है।",
        "बरसों ने इन यादों को धुँधला नहीं किया।",
        "तब जो कहा गया, वह आज भी सुनने लायक़ है।",
        "कुछ दिन ऐसी छाप छोड़ जाते हैं जो कभी नहीं मिटती।",
        "अच्छा है कि ये बातें आख़िरकार लिखी जा रही हैं।",
        "हर याद किसी और याद का दरवाज़ा खोलती है।",
        "इन बातों को कहते ही पूरा समय लौट आता है।",
        "साधारण दिन भी धीरे धीरे ख़ज़ाना बन जाते हैं।",
        "मन वही सँभालता है जो उसे सबसे प्यारा हो।",
        "बीता समय यहाँ बहुत पास लगता है।",
        "हर पल में कोई सीख हो, ज़रूरी नहीं; कुछ पल बस सहेजने के लिए होते हैं।",
        "बातें धुँधली हो सकती हैं, पर एहसास साफ़ रहता है।",
        "कठिन और आसान, दोनों तरह के दिन इस कहानी का हिस्सा हैं।",
        "इन्हीं धागों से बाक़ी कहानी बुनी गई है।",
        "कुछ बातें सोची समझी थीं, और बहुत सी बस हो गईं।",
        "ज़िंदगी किसी के तैयार होने का इंतज़ार नहीं करती।",
        "बदलाव धीरे धीरे आया, और फिर अचानक सब बदल गया।",
        "हर याद में शब्दों से ज़्यादा कुछ होता है।",
        "हर मौसम अपना काम और अपना फल लेकर आया।",
        "बाहर की दुनिया बदल रही थी, और घर के भीतर भी।",
        "आज देखें तो साफ़ है कि इसने आगे की राह कितनी तय की।",
        "ऐसी कहानियों से ही बीता समय आज से बात करता है।",
        "वह सीखने का समय था, अक्सर बिना जाने ही।",
        "उन दिनों की आदतें उम्र भर साथ रहीं।",
        "बहुत कुछ बस देखकर और सुनकर सीखा गया।",
        "इस कहानी के लोग आगे की हर बात का हिस्सा हैं।",
        "तब समय की चाल कुछ और थी, या अब ऐसा लगता है।",
        "कुछ सबक बिना कुछ कहे सिखा दिए जाते हैं।",
        "हर ज़िंदगी में ऐसे अध्याय होते हैं।",
        "अच्छी याद भी एक तरह की विरासत है।",
        "उन दिनों ने बहुत माँगा, और बहुत लौटाया भी।",
        "सब आसान नहीं था, पर सब पूरे मन से जिया गया।",
        "इस हिस्से के बिना कहानी अधूरी रहती।",
        "शांत दिनों की भी अपनी कहानियाँ थीं।",
        "इसे ठीक वैसे ही याद रखना अच्छा है जैसा यह था।",
    ),
    tone={
        Tone.WARM: (
            "इन यादों में आज भी एक अपनापन है।",
            "उन दिनों की गर्माहट आज भी दिल में बसी है।",
            "छोटी छोटी बातों में बड़ा प्यार छिपा था।",
            "वह समय घर जैसा सुकून देता था।",
            "प्यार छोटी छोटी रोज़ की बातों में दिखता था।",
            "देखभाल बिना किसी दिखावे के होती थी।",
            "इन यादों को सहेजकर रखने का मन करता है।",
            "उन लोगों की गर्माहट बरसों बाद भी बाक़ी है।",
        ),
        Tone.NOSTALGIC: (
            "पीछे मुड़कर देखें तो वे दिन सुनहरे लगते हैं।",
            "वह समय अब बीत गया, पर यादें आज भी ताज़ा हैं।",
            "उन दिनों की खुशबू आज भी याद आती है।",
            "लगता है जैसे यह सब कल की ही बात हो।",
            "उन जगहों में से कई अब पहचान में नहीं आतीं।",
            "उन बरसों की धीमी चाल की कमी खलती है।",
            "पुराने तौर तरीक़ों की अपनी ही बात थी।",
            "इतना कुछ बदल गया, पर यह याद नहीं बदली।",
        ),
        Tone.REFLECTIVE: (
            "यहाँ रुककर सोचना ज़रूरी है कि इसका क्या अर्थ था।",
            "इन दिनों का मतलब बहुत बाद में समझ आया।",
            "उस समय के हर फ़ैसले ने आगे का रास्ता तय किया।",
            "समय ने दिखाया कि सच में क्या ज़रूरी था।",
            "किसी पल का अर्थ अक्सर बहुत बाद में समझ आता है।",
            "अजीब है कि सबसे छोटे फ़ैसले सबसे ज़्यादा मायने रखते हैं।",
            "शायद आगे की बहुत सी बातें यहीं से शुरू हुईं।",
            "समझ धीरे धीरे आई, जैसे अक्सर आती है।",
        ),
        Tone.JOYFUL: (
            "उन दिनों घर हँसी से भरा रहता था।",
            "वह बहुत ख़ुशी और उजाले का समय था।",
            "हर साधारण दिन भी एक छोटा त्योहार लगता था।",
            "सबके चेहरों पर मुस्कान रहती थी।",
            "हँसी कभी दूर नहीं रहती थी।",
            "रोज़ की भागदौड़ में भी एक संगीत था।",
            "ख़ुशी आसानी से आती थी, और बार बार आती थी।",
            "सबसे साधारण चीज़ों में भी आनंद मिल जाता था।",
        ),
        Tone.HUMOROUS: (
            "सब कुछ योजना के मुताबिक़ नहीं हुआ, और इसी में मज़ा था।",
            "आज भी यह याद करके हँसी आ जाती है।",
            "कोई न कोई हमेशा मज़ाक करने को तैयार रहता था।",
            "परिवार आज भी इस बात पर एक दूसरे को छेड़ता है।",
            "योजनाएँ काग़ज़ पर जितनी अच्छी थीं, असल में उतनी नहीं निकलीं।",
            "हैरानी है कि किसी ने हँसी कैसे रोकी होगी।",
            "हर बार सुनाने पर यह किस्सा और मज़ेदार हो जाता है।",
            "गड़बड़ियाँ ही सबसे अच्छी यादें बनती हैं।",
        ),
        Tone.INSPIRATIONAL: (
            "हिम्मत का मतलब अक्सर बस चलते रहना होता है।",
            "हर मुश्किल आगे बढ़ने की एक सीढ़ी बनी।",
            "इससे पता चलता है कि धैर्य और मेहनत क्या बना सकते हैं।",
            "मुश्किल दिनों में भी उम्मीद कभी दूर नहीं थी।",
            "जो क़िस्मत न कर सकी, वह लगन ने कर दिखाया।",
            "छोटी छोटी हिम्मत बरसों में बड़ी बन गई।",
            "रुकावटें भी नींव का हिस्सा बन गईं।",
            "आने वाले कल पर भरोसे ने सबको आगे बढ़ाए रखा।",
        ),
        Tone.FORMAL: (
            "यह समय यहाँ वैसे ही दर्ज है जैसे बताया गया।",
            "आगे की घटनाएँ क्रम से लिखी गई हैं।",
            "इन परिस्थितियों ने आने वाले वर्षों को आकार दिया।",
            "यह विवरण कहने वाले के अपने शब्दों पर आधारित है।",
            "विवरण उसी क्रम में आगे बढ़ता है जिसमें बताया गया।",
            "यहाँ बातें बिना किसी सजावट के दर्ज हैं।",
            "इन घटनाओं का महत्त्व आने वाली पीढ़ियों के लिए दर्ज है।",
            "आगे का विवरण पूरी ईमानदारी से क्रम में दिया गया है।",
        ),
        Tone.NARRATIVE: (
            "फिर कहानी आगे बढ़ी, जैसे कहानियाँ बढ़ती हैं।",
            "बातें अपने क्रम में होती गईं।",
            "इसके बाद ज़िंदगी ने नया मोड़ लिया।",
            "दिन पर दिन बीतते गए, और कहानी चलती रही।",
            "उस समय बातें कुछ ऐसी ही थीं।",
            "और फिर आगे यह हुआ।",
            "कुछ समय तक सब ऐसे ही चलता रहा।",
            "इस बीच ज़िंदगी अपनी रफ़्तार से चलती रही।",
        ),
    },
    audience={
        Audience.CHILDREN: (
            "सोचो, वह कैसा लगता होगा?",
            "क्या यह किसी छोटे से रोमांच जैसा नहीं लगता?",
            "आँखें बंद करो और इसकी कल्पना करो।",
            "तुम होते तो क्या करते?",
            "क्या तुमने कभी ऐसा महसूस किया है?",
            "सोचो, आगे क्या हुआ होगा?",
            "क्या तुम्हें भी ऐसा कुछ याद है?",
        ),
        Audience.YOUNG_ADULTS: (
            "हर पीढ़ी के सामने ऐसा एक पल आता है।",
            "यह ख़ुद को पहचानने का समय था।",
            "बड़े होने का रास्ता कभी सीधा नहीं होता।",
            "बड़े फ़ैसले उस वक़्त अक्सर छोटे लगते हैं।",
            "आज़ादी अपने साथ कई हैरानियाँ लाई।",
            "स्कूल से बाहर भी सीखने को बहुत कुछ होता है।",
        ),
        Audience.ADULTS: (
            "ज़िंदगी आसान जवाब कम ही देती है।",
            "ज़िम्मेदारियाँ और सपने अलग अलग दिशाओं में खींचते थे।",
            "अनुभव अपने साथ समझ भी लाया और कुछ पछतावे भी।",
            "फ़र्ज़ और चाहत हमेशा साथ नहीं चलते।",
            "कुछ समझौते बाद में समझदारी साबित हुए।",
            "हर फ़ैसले ने कुछ दरवाज़े बंद किए और कुछ खोले।",
        ),
        Audience.FAMILY: (
            "परिवार आज भी यह किस्सा सुनाता है।",
            "बच्चों और पोते पोतियों ने यह कई बार सुना है।",
            "यह याद पूरे परिवार की साझी है।",
            "ऐसी ही कहानियाँ परिवार को जोड़े रखती हैं।",
            "हर पीढ़ी इसमें अपना अध्याय जोड़ती है।",
            "यह किस्सा हर मेल मिलाप में सुनाया जाता है।",
        ),
        Audience.SENIORS: (
            "उन बरसों को जीने वाले यह बात पहचानेंगे।",
            "उम्र के साथ ऐसी यादें और प्यारी हो जाती हैं।",
            "जिन्होंने वह समय देखा है, वे यह एहसास जानते हैं।",
            "इतना कुछ देख लेने में एक शांत गर्व है।",
            "तब से दुनिया बहुत बदल गई है।",
            "लंबी ज़िंदगी ऐसे बहुत से पल समेट लेती है।",
        ),
    },
    starters=(
        "",
        "आज भी",
        "पीछे मुड़कर देखें तो",
        "बरसों बाद भी",
        "सच कहें तो",
        "इतने समय बाद भी",
        "कभी कभी",
        "अक्सर",
        "मन ही मन",
        "सोचकर देखें तो",
        "याद करते ही",
        "कहते कहते",
    ),
    clauses=(
        "वे दिन आँखों के सामने आ जाते हैं",
        "छोटी छोटी बातें ही सबसे ज़्यादा याद रहती हैं",
        "उस समय की आवाज़ें सुनाई देने लगती हैं",
        "पूरी याद साफ़ साफ़ लौट आती है",
        "जो तब साधारण था, वह अब अनमोल लगता है",
        "कोई छोटी सी बात पूरा दिन लौटा लाती है",
        "उस तस्वीर का रंग ज़रा भी फीका नहीं लगता",
        "साफ़ दिखता है कि वे दिन कितने ज़रूरी थे",
        "उन बरसों की लय महसूस होती है",
        "इसका अर्थ और गहरा होता जाता है",
        "उस समय का एहसास पास ही लगता है",
        "कहानी का हर हिस्सा अगले से जुड़ता है",
        "बीता समय पास ही ठहरा लगता है",
        "उन दिनों के पास कहने को बहुत कुछ है",
        "कुछ भी दूर नहीं लगता",
        "उन बरसों का धागा आगे की हर बात में दिखता है",
        "यहाँ शब्दों से ज़्यादा कुछ कहा गया लगता है",
        "उस समय के चेहरे आसानी से याद आ जाते हैं",
    ),
    tone_clauses={
        Tone.WARM: (
            "इन यादों में एक अपनापन है",
            "उन लोगों की ममता महसूस होती है",
            "यह सब घर लौटने जैसा लगता है",
            "इसमें छिपा प्यार साफ़ दिखता है",
            "उसकी गर्माहट कम नहीं हुई",
        ),
        Tone.NOSTALGIC: (
            "वे दिन सुनहरे लगते हैं",
            "पुरानी ख़ुशबुएँ लौट आती हैं",
            "लगता है जैसे यह कल की बात हो",
            "बीच के बरस जैसे मिट जाते हैं",
            "उन सीधे सादे दिनों की याद आती है",
        ),
        Tone.REFLECTIVE: (
            "इसका अर्थ और साफ़ हो गया है",
            "यह सोचने लायक़ है कि इसने क्या सिखाया",
            "इसमें छिपा सबक अब दिखता है",
            "समझ आता है कि सच में क्या ज़रूरी था",
            "तब के फ़ैसले अब ज़्यादा समझदार लगते हैं",
        ),
        Tone.JOYFUL: (
            "इसे याद करना ख़ुशी देता है",
            "उस समय की हँसी फिर गूँजती है",
            "चेहरे पर मुस्कान आ जाती है",
            "उन उजले दिनों की चमक बाक़ी है",
            "उसकी ख़ुशी आज भी ताज़ा है",
        ),
        Tone.HUMOROUS: (
            "हँसी रोकना मुश्किल है",
            "यह किस्सा सुनाते हुए हँसी छूट जाती है",
            "परिवार इस पर छेड़ना नहीं छोड़ता",
            "इसका मज़ेदार पहलू छिपता नहीं",
            "सब मुस्कुरा देते हैं",
        ),
        Tone.INSPIRATIONAL: (
            "दिखता है कि धैर्य क्या बना सकता है",
            "इसकी हिम्मत प्रेरणा देती है",
            "मेहनत का फल साफ़ दिखता है",
            "हर हिस्से में उम्मीद झलकती है",
            "याद आता है कि मुश्किलें भी बीत जाती हैं",
        ),
        Tone.FORMAL: (
            "यह विवरण वैसे ही दर्ज लगता है जैसे बताया गया",
            "इन घटनाओं का क्रम साफ़ दिखता है",
            "यह विवरण अपनी बात ख़ुद कहता है",
            "इस दौर का महत्त्व साफ़ है",
            "यह हिस्सा दर्ज किए जाने लायक़ है",
        ),
        Tone.NARRATIVE: (
            "कहानी बस आगे चलती है",
            "घटनाएँ अपने क्रम में आती हैं",
            "बातें ऐसे ही होती गईं",
            "अगला हिस्सा इसी से निकलता है",
            "बात यहीं से आगे बढ़ती है",
        ),
    },
    audience_clauses={
        Audience.CHILDREN: (
            "यह किसी रोमांच जैसा लगता है",
            "ऐसी बात बच्चे कभी नहीं भूलते",
            "वहाँ होने की कल्पना करना मज़ेदार है",
        ),
        Audience.YOUNG_ADULTS: (
            "हर पीढ़ी का बड़ा होना अलग होता है",
            "अपना रास्ता ढूँढना कभी सीधा नहीं होता",
            "उस उम्र के फ़ैसले बरसों तक गूँजते हैं",
        ),
        Audience.ADULTS: (
            "ज़िंदगी आसान जवाब कम ही देती है",
            "ज़िम्मेदारी और उम्मीद अलग दिशाओं में खींचती हैं",
            "अनुभव समझ भी लाता है और कुछ पछतावे भी",
        ),
        Audience.FAMILY: (
            "पूरा परिवार यह हिस्सा जानता है",
            "यह कहानी पूरे परिवार की साझी है",
            "ऐसी कहानियाँ परिवार को जोड़े रखती हैं",
        ),
        Audience.SENIORS: (
            "उस समय को जीने वाले यह बात समझेंगे",
            "उम्र के साथ यह और प्यारी होती जाती है",
            "उस पीढ़ी के बहुत से लोग इसे पहचानेंगे",
        ),
    },
    tiny=(
        "सचमुच।",
        "हाँ।",
        "बेशक।",
        "ज़रूर।",
        "दिन बीते।",
        "समय बदला।",
        "मौसम बदले।",
        "बरस बीते।",
        "समय बीतता गया।",
        "दिन बीतते गए।",
        "ज़िंदगी चलती रही।",
        "मौसम बदलते रहे।",
        "और दिन बीतते गए।",
        "ज़िंदगी आगे बढ़ती रही।",
        "समय अपनी चाल चला।",
        "हर मौसम कुछ लाया।",
    ),
    openers=(
        "“{f}” के बाद कहानी आगे बढ़ती है।",
        "कहानी “{f}” तक पहुँची थी, और यहीं से आगे चलती है।",
        "“{f}” से आगे अब कहानी का अगला हिस्सा है।",
    ),
    closers=(
        "आगे की कहानी में “{f}” की बात आती है।",
        "अब कहानी “{f}” की ओर बढ़ती है।",
        "इसके बाद की याद में “{f}” का ज़िक्र है।",
    ),
    plain_openers=(
        "यहाँ से कहानी एक नए दौर में पहुँचती है।",
        "कहानी का अगला हिस्सा यहीं से शुरू होता है।",
        "अब कहानी आगे बढ़ती है।",
        "और इस तरह बात आगे चलती है।",
        "यहाँ से कहानी का नया पन्ना खुलता है।",
    ),
    plain_closers=(
        "और इस तरह कहानी का यह हिस्सा पूरा होता है।",
        "इसके साथ कहानी आगे बढ़ती है।",
        "ज़िंदगी का यह अध्याय कुछ ऐसे ही बीता।",
        "यहाँ कहानी का यह हिस्सा थमता है।",
        "आगे की बात अगले हिस्से में है।",
    ),
    endings=(
        "यहीं यह कहानी थमती है, पर यादें आगे चलती रहती हैं।",
        "और यहीं, कहने वाले के शब्दों में, यह कहानी पूरी होती है।",
    ),
    number_words=_words(
        "शून्य एक दो तीन चार पाँच पांच छह छः सात आठ नौ दस ग्यारह बारह तेरह चौदह पंद्रह सोलह "
        "सत्रह अठारह उन्नीस बीस तीस चालीस पचास साठ सत्तर अस्सी नब्बे सौ हज़ार हजार लाख करोड़ "
        "पहला पहली दूसरा दूसरी तीसरा तीसरी चौथा चौथी आधा आधी दर्जन"
    ),
    function_words=frozenset(),
    dangling=_words("में से का की के को ने पर और तक लिए या कि एक भी तो ही"),
)

_BANKS: dict[str, _Bank] = {"en": _EN, "hi": _HI}
# Languages that end a sentence with a danda when the teller left it open.
_DANDA_LANGUAGES = frozenset({"hi-IN", "bn-IN", "pa-IN", "od-IN"})
_MIN_FILL = 4  # the shortest connective sentence drawn in order; shorter ones are `tiny`
_FRAGMENT_WORDS = 6  # at most this many of the teller's words quoted for continuity
_NOTE_BEFORE = 200  # in section 1 the offline note comes within this many words
_OPENER_ROOM = 40  # an opening connective only when the section has this much to fill
_CLOSER_ROOM = 20
_TOLERANCE = 0.05  # the flow's length check: revise leaves a text this close alone
_QUOTE_MARKS = '"“”‘’«»()[]'
_STOPS = ".,;:!?।॥…"


def _bank_key(language: str) -> str:
    # Other languages keep English connective sentences around the teller's own words.
    return "hi" if language == "hi-IN" else "en"


def _bank(language: str) -> _Bank:
    return _BANKS[_bank_key(language)]


def _stop(language: str) -> str:
    return "।" if language in _DANDA_LANGUAGES else "."


def _notes() -> frozenset[str]:
    return frozenset(
        note for b in _BANKS.values() for note in (b.note_life, b.note_creative, b.note_short)
    )


_NOTES = _notes()


def _template_sentences() -> frozenset[str]:
    """Every sentence the bank can produce (continuity sentences aside: see _CONTINUITY)."""
    found: set[str] = set(_NOTES)
    for bank in _BANKS.values():
        found.update(bank.general + bank.tiny + bank.endings)
        found.update(bank.plain_openers + bank.plain_closers)
        for group in (*bank.tone.values(), *bank.audience.values()):
            found.update(group)
        for tone in Tone:
            for audience in Audience:
                found.update(bank.combinations(tone, audience))
    return frozenset(found)


_TEMPLATES = _template_sentences()
# The continuity sentences, whatever the teller's words quoted in them.
_CONTINUITY = tuple(
    re.compile(re.escape(template).replace(re.escape("{f}"), ".+?"))
    for bank in _BANKS.values()
    for template in bank.openers + bank.closers
)


def _is_template(sentence: str) -> bool:
    return sentence in _TEMPLATES or any(p.fullmatch(sentence) for p in _CONTINUITY)


def _shuffled(items: Sequence[str], *seed: str) -> list[str]:
    pool = list(items)
    _rng(*seed).shuffle(pool)
    return pool


@functools.lru_cache(maxsize=256)
def _sequence(
    bank_key: str, story_id: str, tone: Tone, audience: Audience, slot: int, of: int
) -> tuple[str, ...]:
    """The connective sentences of one section, in the order it uses them.

    Every section of a book shuffles the same sentences the same way (the seed is the
    story, not the section) and takes every of-th one from its own slot, so no two
    sections share a sentence: sections are written apart, from their own briefs, and
    still a book repeats a sentence only when one section needs more than all of its
    share (then its own, once more). Hand-written sentences come first, tone, general
    and audience in turn; then the starter-and-clause sentences, a round of different
    clauses at a time so the same clause does not come back soon.
    """
    bank = _BANKS[bank_key]
    seed = (story_id, bank_key, tone.value, audience.value)

    def share(name: str, items: Sequence[str]) -> list[str]:
        return _shuffled(items, "bank", name, *seed)[slot::of]

    tone_share = iter(share("tone", bank.tone[tone]))
    general = iter(share("general", bank.general))
    audience_share = iter(share("audience", bank.audience[audience]))
    pattern = (tone_share, general, audience_share, general)
    order: list[str] = []
    while True:
        drawn = [s for s in (next(stream, None) for stream in pattern) if s is not None]
        if not drawn:
            break
        order += drawn
    written = {s for group in (*bank.tone.values(), *bank.audience.values()) for s in group}
    written.update(bank.general)
    combos = [s for s in bank.combinations(tone, audience) if s not in written]
    mine = _shuffled(combos, "combos", *seed)[slot::of]
    rounds: list[list[str]] = []
    seen: dict[str, int] = {}
    for sentence in mine:
        clause = _parts(bank, sentence)[1]
        n = seen.get(clause, 0)
        seen[clause] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(sentence)
    # Within each round, no two sentences in a row open with the same starter.
    spread: list[str] = []
    for sentences in rounds:
        pending = list(sentences)
        while pending:
            before = _parts(bank, spread[-1])[0] if spread else None
            pick = next((k for k, s in enumerate(pending) if _parts(bank, s)[0] != before), 0)
            spread.append(pending.pop(pick))
    return tuple(order + spread)


def _parts(bank: _Bank, sentence: str) -> tuple[str, str]:
    """The starter and the clause a starter-and-clause sentence was made from."""
    body = sentence.removesuffix(bank.stop)
    for starter in bank.starters:
        if starter and body.startswith(starter + " "):
            return starter, body[len(starter) + 1 :]
    return "", body[:1].lower() + body[1:]


class _Connectives:
    """A section's connective sentences, drawn in its own order to an exact word count.

    `present` are sentences already in the text: they count as used, so a revision or
    a proofread adds sentences the section does not have yet.
    """

    def __init__(self, brief: SectionBrief, present: Sequence[str] = ()) -> None:
        self.bank = _bank(brief.language)
        of = max(1, brief.of)
        slot = (brief.position - 1) % of
        key = _bank_key(brief.language)
        self.order = _sequence(key, brief.story_id, brief.tone, brief.audience, slot, of)
        self.sizes = [_word_count(s) for s in self.order]
        self.largest = max(self.sizes)
        self.uses: dict[str, int] = {}
        for sentence in present:
            self.uses[sentence] = self.uses.get(sentence, 0) + 1
        self.cursor = 0
        self.position = brief.position

    def _use(self, sentence: str) -> str:
        self.uses[sentence] = self.uses.get(sentence, 0) + 1
        return sentence

    def _ranked(self) -> list[int]:
        """Indexes of the order, the least used first, then the next in order first."""
        n = len(self.order)
        return sorted(
            range(n), key=lambda i: (self.uses.get(self.order[i], 0), (i - self.cursor) % n)
        )

    def _finish(self, words: int, *, fresh: bool) -> list[str] | None:
        """Exactly `words` words in one, two or three sentences (the fewest that do it);
        fresh: only sentences not used yet (in this pass). None if there are none such."""
        ranked = self._ranked()
        allowed = self.cursor // len(self.order)  # uses a sentence may already have

        def split(left: int, count: int, taken: frozenset[int], fresh: bool) -> list[int] | None:
            tried: set[int] = set()
            for i in ranked:
                size = self.sizes[i]
                if i in taken or size in tried:
                    continue
                if fresh and self.uses.get(self.order[i], 0) > allowed:
                    continue
                if count == 1:
                    if size == left:
                        return [i]
                    continue
                if size > left - _MIN_FILL:
                    continue
                tried.add(size)
                rest = split(left - size, count - 1, taken | {i}, fresh)
                if rest is not None:
                    return [i, *rest]
            return None

        for count in (1, 2, 3):
            found = split(words, count, frozenset(), fresh)
            if found is not None:
                return [self._use(self.order[i]) for i in found]
        return None

    def _tiny(self, words: int) -> list[str]:
        """`words` words (at most a handful) in very short sentences, picked by position
        so that sections of one book reach for different ones."""
        by_size: dict[int, list[str]] = {}
        for sentence in self.bank.tiny:
            by_size.setdefault(_word_count(sentence), []).append(sentence)
        out: list[str] = []
        left = words
        turn = self.position
        while left > 0:
            size = min(left, max(by_size))
            options = by_size[size]
            out.append(self._use(options[turn % len(options)]))
            left -= size
            turn += 1
        return out

    def take(self, words: int) -> list[str]:
        """Sentences adding up to exactly `words` words, in this section's order.

        In order while much is left; the last few dozen words in the fewest sentences
        that fit exactly; only a remainder under _MIN_FILL words takes tiny sentences.
        """
        out: list[str] = []
        left = words
        n = len(self.order)
        idle = 0
        while left > 0:
            if left < _MIN_FILL:
                out += self._tiny(left)
                break
            if left <= 3 * self.largest:
                finish = self._finish(left, fresh=True)
                if finish is not None:
                    out += finish
                    break
            index = self.cursor % n
            passes = self.cursor // n  # later passes allow a sentence once more each
            sentence, size = self.order[index], self.sizes[index]
            self.cursor += 1
            if size <= left - _MIN_FILL and self.uses.get(sentence, 0) <= passes:
                out.append(self._use(sentence))
                left -= size
                idle = 0
            else:
                idle += 1
                if idle > 2 * n:  # nothing unused fits what is left: use a sentence again
                    out += self._finish(left, fresh=False) or self._tiny(left)
                    break
        return out


# ---------------------------------------------------------------------------------------
# The teller's material, and continuity


@dataclass(frozen=True)
class _Item:
    sentence: str
    new_memory: bool = False


def _memory(brief: SectionBrief) -> list[_Item]:
    """The teller's sentences, each ended, marking where a memory (a paragraph) begins."""
    stop = _stop(brief.language)
    out: list[_Item] = []
    for block in re.split(r"\n\s*\n", brief.material):
        for i, sentence in enumerate(_sentences(block)):
            out.append(_Item(_terminated(sentence, stop), new_memory=i == 0))
    return out


def _key(sentence: str) -> str:
    """A sentence compared loosely: a proofread may change its case, spacing or stop."""
    return " ".join(sentence.casefold().split()).rstrip(_STOPS + _CLOSERS + " ")


def _quotable(bank: _Bank, sentence: str) -> str:
    """The opening words of a sentence that can be quoted without quoting a fact.

    Stops at a digit, a number word, a capitalised word (a name or a place; a capitalised
    first word only if it is a common one, "My", "We"), a quotation mark or a clause
    break, and never ends on a word that leaves the quote hanging ("in", "the"). Fewer
    than three words: nothing.
    """
    taken: list[str] = []
    for i, token in enumerate(sentence.split()[:_FRAGMENT_WORDS]):
        core = token.strip(_STOPS)
        if not core or any(ch in _QUOTE_MARKS or ch in ";:!?" for ch in token):
            break
        if any(ch.isdigit() for ch in core):
            break
        lowered = core.casefold()
        if any(part in bank.number_words for part in re.split(r"[-‐–]", lowered)):
            break
        capital = core[:1] != core[:1].lower()
        if capital and core != "I" and not (i == 0 and lowered in bank.function_words):
            break
        taken.append(token)
        if token.rstrip(_CLOSERS)[-1:] in tuple(".!?।॥…"):
            break  # the sentence ended
    while taken and taken[-1].strip(_STOPS).casefold() in bank.dangling:
        taken.pop()
    if len(taken) < 3:
        return ""
    taken[-1] = taken[-1].rstrip(_STOPS)
    return " ".join(taken)


def _fragment(bank: _Bank, text: str, *, last: bool) -> str:
    """A quotable fragment of the neighbour's memory: from its last sentences (the story
    came from there) or its first (the story goes there)."""
    sentences = _sentences(" ".join(text.split()))
    for sentence in reversed(sentences) if last else sentences:
        fragment = _quotable(bank, sentence)
        if fragment:
            return fragment
    return ""


def _opener(brief: SectionBrief, bank: _Bank, rng: random.Random) -> str:
    fragment = _fragment(bank, brief.came_before, last=True)
    if fragment:
        return rng.choice(bank.openers).format(f=fragment)
    return bank.plain_openers[(brief.position - 1) % len(bank.plain_openers)]


def _closer(brief: SectionBrief, bank: _Bank, rng: random.Random) -> str:
    if brief.position >= brief.of:
        return rng.choice(bank.endings)
    fragment = _fragment(bank, brief.comes_next, last=False)
    if fragment:
        return rng.choice(bank.closers).format(f=fragment)
    return bank.plain_closers[(brief.position - 1) % len(bank.plain_closers)]


def _note_after(memory: Sequence[_Item]) -> int:
    """The index of the teller's sentence the offline note follows in section 1.

    After all of them when they are short, so the teller's words run unbroken; else at
    the last memory boundary (or, failing that, sentence) within _NOTE_BEFORE words, so
    the note stays on the book's first page.
    """
    ends: list[int] = []
    total = 0
    for item in memory:
        total += _word_count(item.sentence)
        ends.append(total)
    if not memory or total <= _NOTE_BEFORE:
        return len(memory) - 1
    fitting = [i for i, end in enumerate(ends) if end <= _NOTE_BEFORE]
    boundaries = [i for i in fitting if i + 1 < len(memory) and memory[i + 1].new_memory]
    return (boundaries or fitting or [0])[-1]


def _append(paragraphs: list[list[str]], sentences: Sequence[str], rng: random.Random) -> None:
    """Connective sentences at the end, in paragraphs of their own of 50 to 90 words."""
    if not sentences:
        return
    paragraphs.append([])
    size, limit = 0, rng.randint(50, 90)
    for sentence in sentences:
        if paragraphs[-1] and size >= limit:
            paragraphs.append([])
            size, limit = 0, rng.randint(50, 90)
        paragraphs[-1].append(sentence)
        size += _word_count(sentence)


def _within(words: int, target: int, tolerance: float = _TOLERANCE) -> bool:
    return abs(words - target) <= tolerance * target


def _worth_filling(words: int, target: int) -> bool:
    # Under _MIN_FILL words only tiny sentences fit: not worth it when the text is
    # already within the tolerance without them.
    return words > 0 and (words >= _MIN_FILL or words > _TOLERANCE * target)


class OfflineWriter:
    """Writes deterministically from the teller's own sentences; says in the book it did.

    A section is the teller's material, every sentence once and in order, first; then
    connective sentences to the target length. The connectives come from the bank in an
    order shared by the book's sections (see _sequence), so sections written apart
    still do not repeat each other.
    """

    name = "offline-writer"

    def probe(self) -> str:
        """Nothing to reach: the writer is code in this process."""
        return "ready (deterministic, no network)"

    def write_section(self, brief: SectionBrief) -> Written:
        """brief.target_words words: the teller's words, then connective sentences.

        The teller's sentences are never dropped: when they (with section 1's note) are
        longer than the target, the text is just them, longer than asked.
        """
        bank = _bank(brief.language)
        rng = _rng("write", repr(brief))
        target = brief.target_words
        memory = _memory(brief)
        free = target - sum(_word_count(i.sentence) for i in memory)
        note = ""
        if brief.position == 1:
            note = bank.note_life if brief.kind == "life" else bank.note_creative
            if free < _word_count(note) + _CLOSER_ROOM:
                note = bank.note_short
            free -= _word_count(note)
        opener = closer = ""
        if brief.position > 1 and free >= _OPENER_ROOM:
            opener = _opener(brief, bank, rng)
            free -= _word_count(opener)
        if free >= _CLOSER_ROOM:
            closer = _closer(brief, bank, rng)
            free -= _word_count(closer)
        tail = _Connectives(brief).take(free) if _worth_filling(free, target) else []

        paragraphs: list[list[str]] = [[opener] if opener else []]
        after = _note_after(memory) if note else -1
        for index, item in enumerate(memory):
            if item.new_memory and any(s != opener for s in paragraphs[-1]):
                paragraphs.append([])
            paragraphs[-1].append(item.sentence)
            if index == after and index + 1 < len(memory):
                paragraphs += [[note], []]
                note = ""
        paragraphs = [p for p in paragraphs if p]
        _append(paragraphs, [s for s in (note, *tail, closer) if s], rng)
        return Written(_join(paragraphs), _usage())

    def revise(self, brief: SectionBrief, text: str, revision: Revision) -> Written:
        """The text with revision.remove taken out, revision.restore and revision.quotes
        put back, at revision.target_words words.

        Only connective sentences are taken out (the teller's words are the truth the
        check compares against); a missing fact or quote comes back as the teller's
        sentence that carries it, in the teller's order. A text already within 5% of
        the target with nothing to fix is returned as it is.
        """
        paragraphs = _paragraphs(text)
        material = [item.sentence for item in _memory(brief)]
        index: dict[str, int] = {}
        for i, sentence in enumerate(material):
            index.setdefault(_key(sentence), i)

        def teller(sentence: str) -> bool:
            return sentence in _NOTES or _key(sentence) in index

        changed = False
        for item in revision.remove:
            if not item.strip():
                continue
            naming = re.compile(r"(?<!\w)" + re.escape(" ".join(item.split())) + r"(?!\w)")
            for paragraph in paragraphs:
                kept = [s for s in paragraph if teller(s) or not naming.search(s)]
                changed |= len(kept) != len(paragraph)
                paragraph[:] = kept
        paragraphs = [p for p in paragraphs if p]
        for item in (*revision.restore, *revision.quotes):
            wanted = " ".join(item.split())
            if not wanted or wanted in " ".join(" ".join(p) for p in paragraphs):
                continue
            for i in _carrying(material, wanted):
                changed |= _put_back(paragraphs, material, index, i)

        target = revision.target_words
        words = sum(_word_count(s) for p in paragraphs for s in p)
        if not changed and _within(words, target):
            return Written(text, _usage())
        rng = _rng("revise", repr(brief), text, repr(revision))
        words = _trim(paragraphs, teller, words, target)
        left = target - words
        if _worth_filling(left, target):
            present = [s for p in paragraphs for s in p]
            extra = _Connectives(brief, present).take(left)
            # Before a closing connective, so the section still ends where it ended.
            last = paragraphs[-1][-1] if paragraphs else ""
            if last and not teller(last) and _closes(last):
                paragraphs[-1].pop()
                paragraphs[:] = [p for p in paragraphs if p]
                extra.append(last)
            _extend(paragraphs, extra, rng)
        return Written(_join(paragraphs), _usage())

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
            present = [s for p in fixed for s in _sentences(p)]
            extra = _Connectives(brief, present).take(before - after)
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


_CLOSING = frozenset(s for b in _BANKS.values() for s in b.endings + b.plain_closers)
_CLOSING_PATTERNS = tuple(
    re.compile(re.escape(template).replace(re.escape("{f}"), ".+?"))
    for bank in _BANKS.values()
    for template in bank.closers
)


def _closes(sentence: str) -> bool:
    """Whether a sentence is one that ends a section (a continuity closer, an ending)."""
    return sentence in _CLOSING or any(p.fullmatch(sentence) for p in _CLOSING_PATTERNS)


def _extend(paragraphs: list[list[str]], sentences: Sequence[str], rng: random.Random) -> None:
    """Connective sentences at the end: first topping up a last paragraph made of the
    bank's sentences (never one with the teller's words), then in paragraphs of their own."""
    rest = list(sentences)
    if paragraphs and all(_is_template(s) for s in paragraphs[-1]):
        size = sum(_word_count(s) for s in paragraphs[-1])
        while rest and size < 70:
            size += _word_count(rest[0])
            paragraphs[-1].append(rest.pop(0))
    _append(paragraphs, rest, rng)


def _carrying(material: Sequence[str], wanted: str) -> list[int]:
    """The indexes of the teller's sentences that carry `wanted`: one sentence, or the
    fewest consecutive ones (a quote may run over a sentence break); none if the teller
    never said it (then nothing is put back: the writer invents nothing)."""
    flat = [" ".join(s.split()) for s in material]
    for i, sentence in enumerate(flat):
        if wanted in sentence:
            return [i]
    for size in range(2, min(len(flat), 6) + 1):
        for i in range(len(flat) - size + 1):
            if wanted in " ".join(flat[i : i + size]):
                return list(range(i, i + size))
    return []


def _put_back(
    paragraphs: list[list[str]], material: Sequence[str], index: dict[str, int], i: int
) -> bool:
    """Make the teller's sentence i appear as the teller wrote it; whether anything changed.

    A sentence that is there in another form (a proofread changed its case or stop) is
    replaced; a missing one goes after the last of the teller's sentences before it.
    """
    places = [(p, s) for p in range(len(paragraphs)) for s in range(len(paragraphs[p]))]
    for p, s in places:
        if index.get(_key(paragraphs[p][s])) == i:
            if paragraphs[p][s] == material[i]:
                return False
            paragraphs[p][s] = material[i]
            return True
    earlier = [(p, s) for p, s in places if index.get(_key(paragraphs[p][s]), i) < i]
    later = [(p, s) for p, s in places if index.get(_key(paragraphs[p][s]), -1) > i]
    if earlier:
        p, s = earlier[-1]
        paragraphs[p].insert(s + 1, material[i])
    elif later:
        p, s = later[0]
        paragraphs[p].insert(s, material[i])
    elif paragraphs:
        paragraphs[0].insert(0, material[i])
    else:
        paragraphs.append([material[i]])
    return True


def _trim(paragraphs: list[list[str]], keep: Callable[[str], bool], words: int, target: int) -> int:
    """Drop connective sentences until the text fits; returns the words left.

    From the end backwards, the section's first and last sentences (its opening and
    closing connectives) last of all; the teller's sentences and the note never.
    """
    places = [(p, s) for p in range(len(paragraphs)) for s in range(len(paragraphs[p]))]
    droppable = [x for x in places if not keep(paragraphs[x[0]][x[1]])]
    edges = {places[0], places[-1]} if places else set()
    order = [x for x in reversed(droppable) if x not in edges]
    order += [x for x in reversed(droppable) if x in edges]
    dropped: set[tuple[int, int]] = set()
    for place in order:
        if words <= target:
            break
        dropped.add(place)
        words -= _word_count(paragraphs[place[0]][place[1]])
    kept = [[s for j, s in enumerate(p) if (n, j) not in dropped] for n, p in enumerate(paragraphs)]
    paragraphs[:] = [p for p in kept if p]
    return words


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
    sentences = [s for s in _sentences(text) if not _is_template(s) and "storyloom" not in s]
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

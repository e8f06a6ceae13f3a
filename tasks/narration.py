"""Tasks that translate and speak: the paid calls (speech's bytes the result storage keeps
for a few days), and each chapter as it is delivered, kept for good as the tag of the
bytes the media store holds (tasks/retention.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from storyloom import services
from storyloom.audio import AudioFormat, assemble, deliver, sentence_starts, split_at
from storyloom.media.base import content_tag
from storyloom.models import Language, Usage
from storyloom.providers.base import Speech, Written
from tasks.policy import api_slot, honour_retry_after, paid_call_options
from tasks.retention import committed_at_once, cost, expiring, kept_call_options

PAID = paid_call_options()


@task(name="translate", **PAID)
def translate(text: str, source: Language, target: Language, via: str) -> Written:
    """Translate one piece of text that fits in one request."""
    translator = services.providers().translator
    with honour_retry_after(), api_slot("translation", translator.name):
        return translator.translate(text, source, target)


@task(name="speak", **PAID)
def speak(text: str, language: Language, via: str) -> Speech:
    """Speak one piece of a chapter that fits in one request."""
    speaker = services.providers().speaker
    with honour_retry_after(), api_slot("speech", speaker.name):
        return speaker.speak(text, language)


@dataclass(frozen=True)
class KeptChapter:
    """A chapter as delivered, as the lasting cache keeps it: the content tag of its file
    (the media store holds it, named by it), its duration, where each sentence is in it,
    and what speaking it cost (one usage a request).

    The file's bytes ride along in memory when the chapter was just voiced, for the flow
    to store; they never reach the result storage (`__getstate__` leaves them out), so a
    result read back from the cache has `data` None.
    """

    tag: str
    extension: str
    duration: float
    spans: tuple[tuple[float, float], ...]
    usages: tuple[Usage, ...]
    data: bytes | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "data": None}


@task(name="voice-chapter", **kept_call_options(INPUTS + TASK_SOURCE))
def voice_chapter(
    chunks: list[list[tuple[int, str]]],
    language: Language,
    via: str,
    audio_format: AudioFormat,
    bitrate_kbps: int,
    gap_seconds: float,
) -> KeptChapter:
    """Voice one chapter unless it is kept: each chunk of its sentences (sentence index,
    text) spoken in one request (through speak, whose bytes expire), the first alone,
    the rest side by side.

    Speech models return no timestamps, so the sentence boundaries inside a request are
    measured from the audio's pauses; between requests they are known, with gap_seconds
    of silence. The pieces are joined, encoded and measured on the delivered file.
    """
    speaking = expiring(speak)
    with committed_at_once():
        # The first alone: a refused account fails after one call, not after a chapter.
        first = speaking.submit(_said(chunks[0]), language, via)
        first.result()
        futures = [first, *(speaking.submit(_said(c), language, via) for c in chunks[1:])]
        spoken = [(future.result(), future.state) for future in futures]
    pieces: list[bytes] = []
    owners: list[int] = []  # the sentence each piece belongs to
    gaps: list[float] = []
    for chunk, (speech, _) in zip(chunks, spoken, strict=True):
        starts = sentence_starts(speech.wav, [len(text) for _, text in chunk])
        pieces += split_at(speech.wav, starts)
        owners += [index for index, _ in chunk]
        gaps += [0.0] * (len(chunk) - 1) + [gap_seconds]
    gaps[-1] = 0.0  # the chapter ends where its last sentence does
    wav, spans = assemble(pieces, gaps)
    # A sentence cut across requests spans its pieces.
    by_sentence: dict[int, tuple[int, int]] = {}
    for owner, (start, end) in zip(owners, spans, strict=True):
        by_sentence[owner] = (by_sentence.get(owner, (start, end))[0], end)
    built = deliver(wav, [by_sentence[i] for i in sorted(by_sentence)], audio_format, bitrate_kbps)
    return KeptChapter(
        tag=content_tag(built.data),
        extension=built.extension,
        duration=built.duration,
        spans=tuple(built.spans),
        usages=tuple(cost(speech.usage, state) for speech, state in spoken),
        data=built.data,
    )


def _said(chunk: list[tuple[int, str]]) -> str:
    return " ".join(text for _, text in chunk)

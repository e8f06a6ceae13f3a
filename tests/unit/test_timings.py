"""Sentence timings: a chapter built from known pieces, encoded, measured; sentence
boundaries found in one spoken piece from its pauses."""

from __future__ import annotations

import io
import itertools
import math
import struct

import numpy as np
import pytest
import soundfile

from storyloom.audio import (
    assemble,
    deliver,
    measure,
    pcm16_to_wav,
    sentence_starts,
    split_at,
    wav_duration,
)

RATE = 24000


def tone(seconds: float, hz: float = 220.0, amplitude: int = 6000) -> bytes:
    frames = round(seconds * RATE)
    return b"".join(
        struct.pack("<h", round(amplitude * math.sin(2 * math.pi * hz * i / RATE)))
        for i in range(frames)
    )


def hush(seconds: float) -> bytes:
    return b"\0\0" * round(seconds * RATE)


def test_a_chapter_of_known_pieces_has_their_timings() -> None:
    lengths = [1.3, 0.7, 2.05, 1.0]
    pieces = [pcm16_to_wav(tone(s, 200 + 50 * i), RATE) for i, s in enumerate(lengths)]
    gaps = [0.25, 0.0, 0.5, 0.0]

    wav, spans = assemble(pieces, gaps)

    expected = list(
        itertools.accumulate(round((s + g) * RATE) for s, g in zip(lengths, gaps, strict=True))
    )
    assert [end for _, end in spans] == expected
    assert [start for start, _ in spans] == [0, *expected[:-1]]
    assert spans[-1][1] / RATE == pytest.approx(wav_duration(wav))


@pytest.mark.parametrize("audio_format", ["mp3", "wav"])
def test_timings_are_measured_on_the_delivered_file(audio_format: str) -> None:
    lengths = [4.0, 6.5, 3.25, 9.0]
    pieces = [pcm16_to_wav(tone(s, 180 + 40 * i), RATE) for i, s in enumerate(lengths)]
    wav, spans = assemble(pieces, [0.3, 0.3, 0.3, 0.0])

    delivered = deliver(wav, spans, audio_format, 48)  # type: ignore[arg-type]

    duration = measure(delivered.data)
    assert delivered.duration == pytest.approx(duration, abs=0.001)
    assert delivered.spans[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(delivered.spans))
    assert delivered.spans[-1][1] == pytest.approx(duration, abs=0.001)  # ends at the file's end
    # Each piece starts in the delivered file where its sound starts when it is decoded
    # (an MP3 plays the encoder's delay first), found here without the code under test.
    samples, rate = soundfile.read(io.BytesIO(delivered.data), dtype="int16")
    loud = np.abs(samples.astype(np.int32)) > 1500
    before = np.concatenate([[0], np.cumsum(loud)])  # loud samples before each index
    quiet_before = before[np.arange(len(loud))] - before[np.maximum(np.arange(len(loud)) - 2400, 0)]
    onsets = [i / rate for i in np.flatnonzero(loud & (quiet_before == 0))]
    assert len(onsets) == len(lengths)
    assert [start for start, _ in delivered.spans[1:]] == pytest.approx(onsets[1:], abs=0.005)
    if audio_format == "mp3":
        with soundfile.SoundFile(io.BytesIO(delivered.data)) as decoded:
            assert (decoded.format, decoded.channels) == ("MP3", 1)
        assert len(delivered.data) / (duration / 60) <= 0.6e6  # at most 0.6 MB a minute
        assert len(delivered.data) < len(wav) / 5


def test_a_low_bitrate_makes_a_smaller_file() -> None:
    wav, spans = assemble([pcm16_to_wav(tone(20.0), RATE)], [0.0])
    small = deliver(wav, spans, "mp3", 24)
    large = deliver(wav, spans, "mp3", 96)
    assert len(small.data) < len(large.data) * 0.5


def test_an_unknown_format_is_refused() -> None:
    wav, spans = assemble([pcm16_to_wav(tone(1.0), RATE)], [0.0])
    with pytest.raises(ValueError, match="ogg"):
        deliver(wav, spans, "ogg", 48)  # type: ignore[arg-type]


def spoken(sentences: list[tuple[float, list[float]]], pause: float) -> tuple[bytes, list[float]]:
    """A voice reading sentences: each a list of clause lengths (a comma's short pause
    between clauses), a pause after each; and where each sentence starts."""
    audio, starts = b"", []
    for number, (_, clauses) in enumerate(sentences):
        starts.append(len(audio) / 2 / RATE)
        for i, seconds in enumerate(clauses):
            audio += tone(seconds, 190 + 30 * number)
            if i < len(clauses) - 1:
                audio += hush(0.12)
        if number < len(sentences) - 1:
            audio += hush(pause)
    return pcm16_to_wav(audio, RATE), starts


def test_boundaries_are_found_at_the_pauses_not_where_the_lengths_put_them() -> None:
    # Characters and speaking time disagree (a voice slows on some sentences), and
    # commas make short pauses that are not sentence ends.
    sentences = [(40, [1.2, 0.9]), (120, [2.0]), (60, [1.5, 1.1, 0.6]), (30, [2.4]), (90, [1.0])]
    wav, truth = spoken(sentences, pause=0.35)

    starts = sentence_starts(wav, [chars for chars, _ in sentences])

    found = [s / RATE for s in starts]
    assert found == pytest.approx(truth[1:], abs=0.07)
    # A split by characters alone would be far off: the check above is not a given.
    total = wav_duration(wav)
    chars = list(itertools.accumulate(c for c, _ in sentences))
    by_length = [total * c / chars[-1] for c in chars[:-1]]
    assert max(abs(a - b) for a, b in zip(by_length, truth[1:], strict=True)) > 0.5


def test_a_voice_without_pauses_falls_back_to_the_lengths() -> None:
    wav = pcm16_to_wav(tone(6.0), RATE)
    starts = sentence_starts(wav, [10, 20, 30])
    assert [s / RATE for s in starts] == pytest.approx([1.0, 3.0], abs=0.01)


def test_every_sentence_keeps_some_audio() -> None:
    wav = pcm16_to_wav(tone(0.001), RATE)  # 24 frames for 5 sentences
    starts = sentence_starts(wav, [1, 1, 1, 1, 1])
    assert starts == sorted(set(starts))
    assert starts[0] > 0
    assert starts[-1] < round(0.001 * RATE)


def test_split_at_cuts_a_wav_into_pieces() -> None:
    wav = pcm16_to_wav(tone(1.0), RATE)
    parts = split_at(wav, [RATE // 4, RATE // 2])
    assert [wav_duration(p) for p in parts] == pytest.approx([0.25, 0.25, 0.5])
    with pytest.raises(ValueError, match="ascending"):
        split_at(wav, [RATE // 2, RATE // 4])

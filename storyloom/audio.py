"""WAV arithmetic: measure, build, silence and join PCM WAVs, with the standard library only."""

from __future__ import annotations

import io
import itertools
import struct
import wave
from dataclasses import dataclass
from typing import Any, Literal

_FORMAT_PCM = 0x0001
_FORMAT_EXTENSIBLE = 0xFFFE
# Streaming writers leave the data size as 0 or all ones because they cannot seek back.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class _Wav:
    format_tag: int
    channels: int
    sample_rate: int
    block_align: int
    bits: int
    data: bytes

    @property
    def is_pcm(self) -> bool:
        return self.format_tag == _FORMAT_PCM

    def describe(self) -> str:
        return f"{self.sample_rate} Hz, {self.bits}-bit, {self.channels} channel(s)"


def _parse(wav: bytes) -> _Wav:
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a WAV file: it does not start with a RIFF/WAVE header")
    fmt: tuple[int, int, int, int, int] | None = None
    data: bytes | None = None
    offset = 12
    while offset + 8 <= len(wav):
        chunk_id = wav[offset : offset + 4]
        (size,) = struct.unpack_from("<I", wav, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(wav):
                raise ValueError("not a valid WAV file: its fmt chunk is truncated")
            tag, channels, rate, _byte_rate, align, bits = struct.unpack_from("<HHIIHH", wav, body)
            if tag == _FORMAT_EXTENSIBLE and size >= 40:
                # The real format is the first two bytes of the sub-format GUID.
                (tag,) = struct.unpack_from("<H", wav, body + 24)
            fmt = (tag, channels, rate, align, bits)
        elif chunk_id == b"data":
            end = body + size
            if size in _UNKNOWN_SIZES or end > len(wav):
                end = len(wav)
            data = wav[body:end]
            if fmt is not None:
                break
            offset = end + (end - body) % 2
            continue
        offset = body + size + size % 2  # chunks are padded to an even length
    if fmt is None:
        raise ValueError("not a valid WAV file: it has no fmt chunk")
    if data is None:
        raise ValueError("not a valid WAV file: it has no data chunk")
    tag, channels, rate, align, bits = fmt
    if channels < 1 or rate < 1 or bits < 1:
        raise ValueError(f"not a valid WAV file: {rate} Hz, {bits}-bit, {channels} channel(s)")
    if align < 1:
        align = channels * ((bits + 7) // 8)
    return _Wav(tag, channels, rate, align, bits, data)


def wav_duration(wav: bytes) -> float:
    """Seconds of audio in a WAV, measured from its fmt and data chunks."""
    parsed = _parse(wav)
    return (len(parsed.data) // parsed.block_align) / parsed.sample_rate


def _write(frames: bytes, sample_rate: int, channels: int, width: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(sample_rate)
        writer.writeframes(frames)
    return out.getvalue()


def pcm16_to_wav(samples: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Wrap little-endian 16-bit PCM samples in a WAV container."""
    if sample_rate < 1 or channels < 1:
        raise ValueError(f"bad format: {sample_rate} Hz, {channels} channel(s)")
    if len(samples) % (2 * channels):
        raise ValueError(f"{len(samples)} bytes is not a whole number of 16-bit frames")
    return _write(samples, sample_rate, channels, 2)


def _silent_frames(seconds: float, sample_rate: int, channels: int, width: int) -> bytes:
    if seconds < 0:
        raise ValueError(f"a silence cannot last {seconds} seconds")
    # 8-bit PCM is unsigned: its silence is the midpoint, not zero.
    byte = b"\x80" if width == 1 else b"\x00"
    return byte * (round(seconds * sample_rate) * channels * width)


def silence(seconds: float, sample_rate: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV of silence."""
    return pcm16_to_wav(_silent_frames(seconds, sample_rate, channels, 2), sample_rate, channels)


def join_wavs(wavs: list[bytes], gap_seconds: float = 0.0) -> bytes:
    """One WAV from PCM WAVs of the same format, with gap_seconds of silence between pieces."""
    if not wavs:
        raise ValueError("no WAVs to join")
    pieces = _same_format([_parse(w) for w in wavs])
    first = pieces[0]
    width = first.block_align // first.channels
    gap = _silent_frames(gap_seconds, first.sample_rate, first.channels, width)
    return _write(
        gap.join(_whole_frames(p) for p in pieces), first.sample_rate, first.channels, width
    )


def _same_format(pieces: list[_Wav]) -> list[_Wav]:
    """The pieces, once each is known to be PCM in the first one's format."""
    first = pieces[0]
    for number, piece in enumerate(pieces, start=1):
        if not piece.is_pcm:
            raise ValueError(f"WAV {number} is not PCM (format tag {piece.format_tag})")
        for what, mine, theirs in (
            ("sample rate", piece.sample_rate, first.sample_rate),
            ("sample width (bits)", piece.bits, first.bits),
            ("channel count", piece.channels, first.channels),
        ):
            if mine != theirs:
                raise ValueError(
                    f"WAV {number} has {what} {mine}, WAV 1 has {theirs}: "
                    f"{piece.describe()} vs {first.describe()}"
                )
    return pieces


def _whole_frames(piece: _Wav) -> bytes:
    # A trailing partial frame (a truncated stream) would shift every later sample.
    return piece.data[: len(piece.data) - len(piece.data) % piece.block_align]


# --- chapters with sentence timings, delivered compressed ------------------------------

AudioFormat = Literal["mp3", "wav"]
MIME_TYPES: dict[str, str] = {"mp3": "audio/mpeg", "wav": "audio/wav"}


@dataclass(frozen=True)
class TimedAudio:
    """A chapter's delivered file and where each of its sentences is in it, in seconds.

    The spans tile the file: the first starts at 0, each starts where the one before
    ends (the pause after a sentence belongs to it), the last ends at `duration`.
    """

    data: bytes
    extension: str
    duration: float
    spans: list[tuple[float, float]]


def assemble(pieces: list[bytes], gaps: list[float]) -> tuple[bytes, list[tuple[int, int]]]:
    """One PCM WAV from pieces of the same format, gaps[i] seconds of silence after
    piece i (counted as part of it), and the [start, end) frames of every piece in it."""
    if not pieces:
        raise ValueError("nothing to assemble")
    if len(gaps) != len(pieces):
        raise ValueError(f"{len(gaps)} gaps for {len(pieces)} pieces")
    parsed = _same_format([_parse(w) for w in pieces])
    first = parsed[0]
    width = first.block_align // first.channels
    joined: list[bytes] = []
    spans: list[tuple[int, int]] = []
    at = 0
    for piece, gap in zip(parsed, gaps, strict=True):
        frames = _whole_frames(piece) + _silent_frames(
            gap, first.sample_rate, first.channels, width
        )
        count = len(frames) // first.block_align
        spans.append((at, at + count))
        at += count
        joined.append(frames)
    return _write(b"".join(joined), first.sample_rate, first.channels, width), spans


def split_at(wav: bytes, cuts: list[int]) -> list[bytes]:
    """The WAV cut at the given frame offsets (ascending, inside it) into len(cuts)+1 WAVs."""
    parsed = _parse(wav)
    frames = len(parsed.data) // parsed.block_align
    bounds = [0, *cuts, frames]
    if any(b >= a_next for b, a_next in itertools.pairwise(bounds)):
        raise ValueError(f"cuts {cuts} are not ascending inside 0..{frames}")
    align = parsed.block_align
    return [
        _write(parsed.data[a * align : b * align], parsed.sample_rate, parsed.channels,
               align // parsed.channels)
        for a, b in itertools.pairwise(bounds)
    ]  # fmt: skip


# Pause detection: the loudness of 10 ms windows; a window quieter than PAUSE_DB below
# the piece's loud speech is silent, and MIN_PAUSE of silent windows is a pause.
_WINDOW_SECONDS = 0.01
PAUSE_DB = 30.0
MIN_PAUSE_SECONDS = 0.06
# A pause a second long outweighs ten seconds of distance from the estimate.
PAUSE_WEIGHT = 10.0


def sentence_starts(wav: bytes, lengths: list[int]) -> list[int]:
    """Where each sentence after the first starts in one spoken piece of several, in
    frames: at the end of the pause that best separates it from the one before.

    Speech models return no timestamps, but they pause after a sentence. The pauses in
    the audio are measured, and the len(lengths)-1 boundaries are matched, in order, to
    the pauses nearest where the sentences' lengths in characters put them, preferring
    long pauses (a comma's pause is shorter than a full stop's). A boundary with no
    pause near it (a voice that runs sentences together) falls back to that estimate.
    """
    import numpy as np  # with soundfile: only narration needs it

    if len(lengths) < 2:
        return []
    parsed = _parse(wav)
    if not parsed.is_pcm or parsed.bits != 16:
        raise ValueError(f"only 16-bit PCM is measured, not {parsed.describe()}")
    samples = np.frombuffer(_whole_frames(parsed), dtype="<i2")[:: parsed.channels]
    frames = len(samples)
    window = max(1, round(parsed.sample_rate * _WINDOW_SECONDS))
    count = frames // window
    weights = np.cumsum([max(n, 1) for n in lengths])
    estimates = [round(frames * w / weights[-1]) for w in weights[:-1]]
    if count < 3:
        return _ascending(estimates, frames)
    power = (samples[: count * window].astype(np.float64) ** 2).reshape(count, window).mean(1)
    loud = float(np.percentile(power, 90))
    silent = power <= loud * 10 ** (-PAUSE_DB / 10) if loud > 0 else np.ones(count, bool)
    pauses = _runs(silent.tolist(), round(MIN_PAUSE_SECONDS / _WINDOW_SECONDS))
    # A pause is (first silent window, end window); the sentence starts at its end, less
    # a little of it, so the highlight moves just before the voice does.
    candidates = [(a * window, b * window) for a, b in pauses if a > 0 and b < count]
    chosen = _match(candidates, estimates, frames)
    lead = round(parsed.sample_rate * 0.05)
    starts = [
        estimate if pause is None else max(pause[1] - min(lead, (pause[1] - pause[0]) // 2), 1)
        for estimate, pause in zip(estimates, chosen, strict=True)
    ]
    return _ascending(starts, frames)


def _runs(flags: list[bool], minimum: int) -> list[tuple[int, int]]:
    """[start, end) of every run of True at least `minimum` long."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= minimum:
                runs.append((start, i))
            start = None
    return runs


def _match(
    pauses: list[tuple[int, int]], estimates: list[int], frames: int
) -> list[tuple[int, int] | None]:
    """For each estimated boundary, in order, a distinct pause after the one before (or
    None), minimising the distance from the estimates less a reward for long pauses."""
    # cost of boundary j at pause p: (|middle - estimate| - PAUSE_WEIGHT * length) / frames;
    # a boundary left without a pause costs SKIP (a pause this far off is worse).
    skip = 0.08
    n, m = len(estimates), len(pauses)
    inf = float("inf")
    # best[j][p]: the cheapest way to place boundaries 0..j-1 using pauses before p.
    best = [[inf] * (m + 1) for _ in range(n + 1)]
    move: list[list[tuple[int, int, int] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    best[0] = [0.0] * (m + 1)
    for j in range(1, n + 1):
        for p in range(m + 1):
            # boundary j-1 without a pause
            if best[j - 1][p] + skip < best[j][p]:
                best[j][p], move[j][p] = best[j - 1][p] + skip, (j - 1, p, -1)
            # pause p-1 used by boundary j-1, or pause p-1 left unused
            if p > 0:
                a, b = pauses[p - 1]
                cost = (
                    abs((a + b) / 2 - estimates[j - 1]) / frames - PAUSE_WEIGHT * (b - a) / frames
                )
                if best[j - 1][p - 1] + cost < best[j][p]:
                    best[j][p], move[j][p] = best[j - 1][p - 1] + cost, (j - 1, p - 1, p - 1)
                if best[j][p - 1] < best[j][p]:
                    best[j][p], move[j][p] = best[j][p - 1], (j, p - 1, -1)
    chosen: list[tuple[int, int] | None] = [None] * n
    j, p = n, m
    while j > 0:
        step = move[j][p]
        assert step is not None
        nj, np_, used = step
        if nj == j - 1 and used >= 0:
            chosen[j - 1] = pauses[used]
        j, p = nj, np_
    return chosen


def _ascending(starts: list[int], frames: int) -> list[int]:
    """Starts made strictly ascending inside (0, frames): every sentence keeps a frame."""
    out: list[int] = []
    for i, start in enumerate(starts):
        low = (out[-1] if out else 0) + 1
        high = frames - (len(starts) - i)
        out.append(min(max(start, low), high))
    return out


def deliver(
    wav: bytes, spans: list[tuple[int, int]], audio_format: AudioFormat, bitrate_kbps: int
) -> TimedAudio:
    """The chapter as delivered (MP3 through libsndfile, or WAV), with the sentence spans
    measured on the delivered file.

    An MP3 decodes longer than its PCM: the encoder's delay (about 1,100 samples of
    silence) comes first, and players play it. The delay is measured by matching the
    decoded audio against the PCM, and every span moves by it; the first sentence
    starts at 0 and the last ends at the decoded file's end.
    """
    parsed = _parse(wav)
    if audio_format == "wav":
        return TimedAudio(wav, "wav", round(wav_duration(wav), 3), _seconds(spans, 0, parsed))
    if audio_format != "mp3":
        raise ValueError(f"unknown audio format {audio_format!r}: use mp3 or wav")
    data = _mp3(parsed, bitrate_kbps)
    decoded, _ = _decode(data)
    delay = _delay(_samples(parsed), decoded)
    duration = len(decoded) / parsed.sample_rate
    seconds = _seconds(spans, delay, parsed)
    if seconds:
        seconds[-1] = (seconds[-1][0], round(duration, 3))
    return TimedAudio(data, "mp3", round(duration, 3), seconds)


def _seconds(spans: list[tuple[int, int]], delay: int, wav: _Wav) -> list[tuple[float, float]]:
    """Frame spans, moved by delay frames, in seconds; the first starts at 0."""
    rate = wav.sample_rate
    seconds = [(round((a + delay) / rate, 3), round((b + delay) / rate, 3)) for a, b in spans]
    if seconds:
        seconds[0] = (0.0, seconds[0][1])
    return seconds


def measure(data: bytes) -> float:
    """Seconds of audio in a WAV or MP3 file, counted by decoding it."""
    if data[:4] == b"RIFF":
        return wav_duration(data)
    samples, rate = _decode(data)
    return float(len(samples) / rate)


def _decode(data: bytes) -> tuple[Any, int]:
    """The first channel of a compressed file's samples (int16) and its sample rate,
    decoded in one read: reading an MP3 in blocks makes the decoder stumble on its bit
    reservoir."""
    import soundfile  # libsndfile, from the wheel: slow to import, needed only here

    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    return samples[:, 0], int(rate)


def _samples(wav: _Wav) -> Any:
    import numpy as np

    return np.frombuffer(_whole_frames(wav), dtype="<i2")[:: wav.channels]


def _delay(original: Any, decoded: Any, longest: int = 4096) -> int:
    """How many frames later the decoded audio plays the original: the lag (at most
    `longest`) where they match best, over the first few seconds that carry sound."""
    import numpy as np

    span = min(len(original), len(decoded) - longest, 8 * 24000)
    if span <= 0:
        return max(0, len(decoded) - len(original))
    a = original[:span].astype(np.float64)
    b = decoded[: span + longest].astype(np.float64)
    if not a.any():
        return max(0, min(longest, len(decoded) - len(original)))
    size = 1 << (len(b) + len(a)).bit_length()
    # Cross-correlation by FFT: score[lag] = sum(a[i] * b[i + lag]).
    score = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    return int(np.argmax(score[: longest + 1]))


# libsndfile sets a constant MP3 bitrate from a compression level between the MPEG
# version's highest and lowest bitrates (kbps), and the version follows the sample rate.
def _bitrate_range(sample_rate: int) -> tuple[int, int]:
    if sample_rate >= 32000:
        return 32, 320  # MPEG-1
    if sample_rate >= 16000:
        return 8, 160  # MPEG-2
    return 8, 64  # MPEG-2.5


def _mp3(wav: _Wav, bitrate_kbps: int) -> bytes:
    import soundfile

    if not wav.is_pcm or wav.bits != 16:
        raise ValueError(f"only 16-bit PCM is encoded, not {wav.describe()}")
    low, high = _bitrate_range(wav.sample_rate)
    level = min(max((high - bitrate_kbps) / (high - low), 0.0), 0.99)
    out = io.BytesIO()
    with soundfile.SoundFile(
        out, "w", wav.sample_rate, wav.channels, "MPEG_LAYER_III", format="MP3",
        compression_level=level, bitrate_mode="CONSTANT",
    ) as encoder:  # fmt: skip
        encoder.buffer_write(wav.data[: len(wav.data) - len(wav.data) % wav.block_align], "int16")
    return out.getvalue()

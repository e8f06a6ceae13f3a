"""WAV arithmetic: measure, build, silence and join PCM WAVs, with the standard library only."""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

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
    pieces = [_parse(w) for w in wavs]
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
    width = first.block_align // first.channels
    gap = _silent_frames(gap_seconds, first.sample_rate, first.channels, width)
    # A trailing partial frame (a truncated stream) would shift every later sample.
    frames = [p.data[: len(p.data) - len(p.data) % p.block_align] for p in pieces]
    return _write(gap.join(frames), first.sample_rate, first.channels, width)

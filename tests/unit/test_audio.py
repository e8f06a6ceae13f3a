"""WAV arithmetic: durations measured from the chunks, joins, gaps and refusals."""

from __future__ import annotations

import io
import math
import struct
import wave

import pytest

from storyloom.audio import join_wavs, pcm16_to_wav, silence, wav_duration


def tone(seconds: float, rate: int = 22050, channels: int = 1, hz: float = 440.0) -> bytes:
    """16-bit PCM samples of a sine wave (the same sample on every channel)."""
    frames = round(seconds * rate)
    values = [round(12000 * math.sin(2 * math.pi * hz * n / rate)) for n in range(frames)]
    return b"".join(struct.pack("<h", v) * channels for v in values)


def read(wav: bytes) -> tuple[wave._wave_params, bytes]:
    with wave.open(io.BytesIO(wav)) as reader:
        return reader.getparams(), reader.readframes(reader.getnframes())


def chunk(chunk_id: bytes, body: bytes, size: int | None = None) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return chunk_id + struct.pack("<I", len(body) if size is None else size) + body + pad


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt(rate: int = 16000, channels: int = 1, bits: int = 16) -> bytes:
    align = channels * bits // 8
    return chunk(b"fmt ", struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, bits))


@pytest.mark.parametrize(("seconds", "rate", "channels"), [(1.0, 22050, 1), (0.25, 8000, 2)])
def test_pcm16_to_wav_is_a_wav_of_the_right_length(
    seconds: float, rate: int, channels: int
) -> None:
    samples = tone(seconds, rate, channels)
    wav = pcm16_to_wav(samples, rate, channels)
    params, frames = read(wav)
    assert (params.framerate, params.nchannels, params.sampwidth) == (rate, channels, 2)
    assert frames == samples
    assert wav_duration(wav) == pytest.approx(seconds)


def test_pcm16_to_wav_refuses_a_partial_frame() -> None:
    with pytest.raises(ValueError, match="16-bit frames"):
        pcm16_to_wav(b"\x00\x00\x00", 16000, channels=1)
    with pytest.raises(ValueError, match="16-bit frames"):
        pcm16_to_wav(b"\x00\x00", 16000, channels=2)


def test_duration_walks_the_chunks_instead_of_assuming_44_bytes() -> None:
    data = b"\x01\x00" * 8000  # half a second at 16 kHz
    meta = chunk(b"LIST", b"INFOsome text!")
    wav = riff(chunk(b"JUNK", b"odd"), fmt(), meta, chunk(b"data", data))
    assert wav_duration(wav) == pytest.approx(0.5)


def test_duration_reads_a_data_chunk_after_trailing_metadata() -> None:
    wav = riff(fmt(rate=8000), chunk(b"data", b"\x00\x00" * 4000), chunk(b"LIST", b"x" * 5000))
    assert wav_duration(wav) == pytest.approx(0.5)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_duration_of_a_streamed_wav_uses_the_bytes_present(size: int) -> None:
    wav = riff(fmt(rate=16000), chunk(b"data", b"\x00\x00" * 16000, size=size))
    assert wav_duration(wav) == pytest.approx(1.0)


def test_duration_of_a_truncated_wav_uses_the_bytes_present() -> None:
    whole = pcm16_to_wav(tone(2.0, 16000), 16000)
    cut = whole[: len(whole) - 16000 * 2]  # the header still claims two seconds
    assert wav_duration(cut) == pytest.approx(1.0)


def test_duration_counts_stereo_and_8_bit_frames() -> None:
    stereo = riff(fmt(rate=8000, channels=2), chunk(b"data", b"\x00" * 4 * 8000))
    eight = riff(fmt(rate=8000, bits=8), chunk(b"data", b"\x80" * 4000))
    assert wav_duration(stereo) == pytest.approx(1.0)
    assert wav_duration(eight) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        (b"", "RIFF/WAVE"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00mp3 data here", "RIFF/WAVE"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "RIFF/WAVE"),
        (riff(chunk(b"data", b"\x00" * 100)), "no fmt chunk"),
        (riff(fmt()), "no data chunk"),
        (riff(chunk(b"fmt ", b"\x01\x00")), "fmt chunk is truncated"),
    ],
)
def test_garbage_is_refused_with_a_clear_message(garbage: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wav_duration(garbage)


def test_silence_is_silent_and_lasts() -> None:
    wav = silence(1.5, 16000, channels=2)
    params, frames = read(wav)
    assert (params.nchannels, params.framerate, params.nframes) == (2, 16000, 24000)
    assert set(frames) == {0}
    assert wav_duration(wav) == pytest.approx(1.5)
    assert wav_duration(silence(0, 16000)) == 0


def test_join_adds_the_pieces_and_the_gaps() -> None:
    pieces = [pcm16_to_wav(tone(s, 22050), 22050) for s in (0.5, 1.0, 0.25)]
    joined = join_wavs(pieces, gap_seconds=0.2)
    assert wav_duration(joined) == pytest.approx(0.5 + 1.0 + 0.25 + 2 * 0.2, abs=1e-4)


def test_join_keeps_the_samples_in_order_with_silence_between() -> None:
    a, b = tone(0.1, 8000, hz=300), tone(0.2, 8000, hz=500)
    joined = join_wavs([pcm16_to_wav(a, 8000), pcm16_to_wav(b, 8000)], gap_seconds=0.05)
    params, frames = read(joined)
    assert params.framerate == 8000
    assert frames == a + b"\x00\x00" * 400 + b


def test_join_of_one_returns_an_equivalent_wav() -> None:
    original = riff(chunk(b"LIST", b"meta"), fmt(rate=11025), chunk(b"data", tone(0.3, 11025)))
    joined = join_wavs([original], gap_seconds=1.0)
    assert read(joined)[0].framerate == 11025
    assert read(joined)[1] == tone(0.3, 11025)
    assert wav_duration(joined) == pytest.approx(wav_duration(original))


def test_join_of_8_bit_pieces_pads_with_8_bit_silence() -> None:
    piece = riff(fmt(rate=8000, bits=8), chunk(b"data", b"\x10\xf0" * 400))
    _, frames = read(join_wavs([piece, piece], gap_seconds=0.01))
    assert frames == b"\x10\xf0" * 400 + b"\x80" * 80 + b"\x10\xf0" * 400


@pytest.mark.parametrize(
    ("other", "named"),
    [
        (pcm16_to_wav(tone(0.1, 16000), 16000), "sample rate"),
        (pcm16_to_wav(tone(0.1, 22050, channels=2), 22050, channels=2), "channel count"),
        (riff(fmt(rate=22050, bits=8), chunk(b"data", b"\x80" * 100)), "sample width"),
    ],
)
def test_join_refuses_mismatched_formats_and_names_the_difference(other: bytes, named: str) -> None:
    first = pcm16_to_wav(tone(0.1, 22050), 22050)
    with pytest.raises(ValueError, match=named):
        join_wavs([first, other])


def test_join_refuses_nothing_garbage_float_and_negative_gaps() -> None:
    wav = pcm16_to_wav(tone(0.1, 8000), 8000)
    float_fmt = chunk(b"fmt ", struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32))
    with pytest.raises(ValueError, match="no WAVs"):
        join_wavs([])
    with pytest.raises(ValueError, match="RIFF/WAVE"):
        join_wavs([wav, b"not a wav"])
    with pytest.raises(ValueError, match="not PCM"):
        join_wavs([riff(float_fmt, chunk(b"data", b"\x00" * 400))])
    with pytest.raises(ValueError, match="silence"):
        join_wavs([wav, wav], gap_seconds=-1)

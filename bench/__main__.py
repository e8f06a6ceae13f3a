"""`make bench`: how fast the pure parts and the offline providers are on this machine.

Prints one line per figure. Times are the best of a few repeats (the least disturbed by
whatever else the machine is doing).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from functools import partial

from bench import writing
from storyloom.audio import wav_duration
from storyloom.chapters import plan_chapters, split_sentences
from storyloom.models import Audience, ImageStyle, Tone
from storyloom.providers.base import ImageRequest, SectionBrief
from storyloom.providers.offline import OfflineIllustrator, OfflineSpeaker, OfflineWriter
from storyloom.writing import count_words, paginate

REPEATS = 3


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """The fastest of `repeats` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def book_text(words: int) -> str:
    brief = SectionBrief(
        story_id="bench", title="Bench", kind="life", language="en-IN", key="childhood",
        heading="Childhood", material="We climbed the mango tree every summer. It was tall.",
        target_words=words, tone=Tone.WARM, audience=Audience.FAMILY, position=2, of=7,
    )  # fmt: skip
    return OfflineWriter().write_section(brief).text


def main() -> None:
    text = book_text(50_000)
    print(f"book text: {count_words(text)} words")

    seconds = best_of(lambda: paginate(text, 200, 250))
    print(f"paginate 200 pages x 250 words: {seconds * 1000:.1f} ms")

    pages = [(p.number, p.text) for p in paginate(text, 200, 250)]
    seconds = best_of(lambda: plan_chapters(pages, seconds_per_char=0.06))
    chapters = plan_chapters(pages, seconds_per_char=0.06)
    print(f"plan {len(chapters)} one-minute chapters from 50,000 words: {seconds * 1000:.1f} ms")

    hindi = "मेरे दादा-दादी 1947 में लखनऊ आए। उनके पास दो संदूक और एक पीतल का दीया था। " * 8
    seconds = best_of(lambda: split_sentences(hindi * 50))
    print(f"split {len(split_sentences(hindi * 50))} Hindi sentences: {seconds * 1000:.1f} ms")

    speaker = OfflineSpeaker()
    speech = speaker.speak(hindi, "hi-IN")  # also loads eSpeak once, outside the timing
    seconds = best_of(lambda: speaker.speak(hindi, "hi-IN"))
    audio = wav_duration(speech.wav)
    print(
        f"eSpeak NG, Hindi: {audio:.1f} s of speech in {seconds * 1000:.0f} ms "
        f"({audio / seconds:.0f}x real time)"
    )

    illustrator = OfflineIllustrator()
    for style in ImageStyle:
        request = ImageRequest(f"A mango tree in a courtyard ({style.value})", style)
        seconds = best_of(partial(illustrator.draw, request))
        print(f"offline illustration, {style.value}: {seconds * 1000:.0f} ms")

    tracemalloc.start()
    paginate(text, 200, 250)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"paginate 200 pages: peak {peak / 2**20:.1f} MiB allocated")


if __name__ == "__main__":
    main()
    print()
    writing.main()

"""Books to render: real PNG pictures, real MP3 chapters whose sentence timings are the
lengths of the tones they were built from, in English, Hindi and Tamil."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import soundfile
from PIL import Image, ImageDraw

from storyloom.chapters import split_sentences
from storyloom.exports import BookSource
from storyloom.models import (
    AudioChapter,
    CreativeStory,
    GenerationConfig,
    Illustration,
    Page,
    SentenceTiming,
)
from storyloom.store.records import StoryBook

RATE = 22050

TEXTS = {
    "en-IN": [
        "Anjali lived above her grandfather's lamp shop in Fort Kochi. Every evening he lit "
        "the forty lanterns on the harbour wall. She watched him from the window.",
        "One year the monsoon came early and he fell ill. Anjali took the brass pole herself. "
        "The wind blew out her matches, but she tried again.",
        "At the end of the wall the oldest lantern showed her a ship. It had three masts and "
        "a torn red sail. She knew it was trying to come home.",
    ],
    "hi-IN": [
        "अंजलि फोर्ट कोच्चि में अपने दादाजी की दीये की दुकान के ऊपर रहती थी। हर शाम वह बंदरगाह "
        "की दीवार पर चालीस लालटेन जलाते थे। वह खिड़की से उन्हें देखती थी।",
        "एक साल मानसून जल्दी आया और वह बीमार पड़ गए। अंजलि ने ख़ुद पीतल का डंडा उठाया। हवा "
        "ने उसकी तीलियाँ बुझा दीं, पर उसने फिर कोशिश की।",
        "दीवार के आख़िर में सबसे पुरानी लालटेन ने उसे एक जहाज़ दिखाया। उसके तीन मस्तूल और एक "
        "फटा हुआ लाल पाल था। वह जानती थी कि जहाज़ घर लौटना चाहता है।",
    ],
    "ta-IN": [
        "அஞ்சலி கொச்சியில் தன் தாத்தாவின் விளக்குக் கடைக்கு மேலே வாழ்ந்தாள். ஒவ்வொரு மாலையும் "
        "அவர் நாற்பது விளக்குகளை ஏற்றினார். அவள் சன்னல் வழியே பார்த்தாள்.",
        "ஒரு வருடம் பருவமழை முன்னதாகவே வந்தது. அஞ்சலி தானே பித்தளைக் கம்பை எடுத்தாள். காற்று "
        "தீக்குச்சிகளை அணைத்தது, ஆனால் அவள் மீண்டும் முயன்றாள்.",
        "சுவரின் முடிவில் பழைய விளக்கு அவளுக்கு ஒரு கப்பலைக் காட்டியது. அதற்கு மூன்று பாய்மரங்கள் "
        "இருந்தன. அது வீடு திரும்ப முயல்கிறது என்று அவள் அறிந்தாள்.",
    ],
}


def tone(seconds: float, pitch: float) -> np.ndarray:
    """A sentence stand-in: a tone of exactly `seconds` (whole samples)."""
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * pitch * t) * 32767).astype(np.int16)


def mp3(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, RATE, format="MP3", subtype="MPEG_LAYER_III",
                    compression_level=0.7, bitrate_mode="CONSTANT")  # fmt: skip
    return out.getvalue()


def png(label: str, width: int = 640, height: int = 400) -> bytes:
    image = Image.new("RGB", (width, height), (40, 90, 140))
    ImageDraw.Draw(image).text((20, 20), label, fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def book(
    page_language: str = "en-IN",
    narration: tuple[str, ...] = ("en-IN",),
    *,
    pictures: bool = True,
) -> tuple[BookSource, dict[str, bytes]]:
    """A three-page book in page_language, narrated in each language of `narration`
    (one chapter per page; each sentence a tone of 0.6 s + 0.1 s a sentence index),
    with the files by URL."""
    files: dict[str, bytes] = {}
    story = CreativeStory(
        id="lantern-keeper", kind="creative", title="The Lantern Keeper",
        language=page_language, premise="A girl keeps the lanterns of an old harbour.",
    )  # fmt: skip
    pages = [
        Page(number=n, text=text, words=len(text.split()))
        for n, text in enumerate(TEXTS[page_language], start=1)
    ]
    illustrations = []
    if pictures:
        for position, page in enumerate((1, 3), start=1):
            url = f"file:///media/stories/lantern-keeper/images/page-0{page}.png"
            files[url] = png(f"page {page}")
            illustrations.append(
                Illustration(
                    position=position, page_number=page, prompt=f"page {page}",
                    public_id=f"stories/lantern-keeper/images/page-0{page}", url=url,
                    thumbnail_url=url, width=640, height=400,
                )
            )  # fmt: skip
    chapters: dict[str, list[AudioChapter]] = {}
    for language in narration:
        chapters[language] = []
        for number, text in enumerate(TEXTS[language], start=1):
            timings, pieces, at = [], [], 0.0
            for index, sentence in enumerate(split_sentences(text)):
                piece = tone(0.6 + 0.1 * index, 220 + 40 * index)
                pieces.append(piece)
                end = at + len(piece) / RATE
                timings.append(SentenceTiming(text=sentence, start=at, end=end, page=number))
                at = end
            url = f"file:///media/stories/lantern-keeper/audio/{language}/chapter-0{number}.mp3"
            files[url] = mp3(np.concatenate(pieces))
            chapters[language].append(
                AudioChapter(
                    language=language, position=number, title=f"Chapter {number}", text=text,
                    first_page=number, duration_seconds=round(at, 3),
                    public_id=f"stories/lantern-keeper/audio/{language}/chapter-0{number}",
                    url=url, sentences=timings,
                )
            )  # fmt: skip
    now = datetime(2026, 12, 1, tzinfo=UTC)
    result = StoryBook(
        story=story, generation_id="g-1", status="complete",
        config=GenerationConfig(pages=3, narration_languages=list(narration)),
        prompt_version="test", flow_run_id=None, error=None, pages=pages,
        illustrations=illustrations, chapters=chapters,
        banner_url=illustrations[0].url if illustrations else None,
        thumbnail_url=illustrations[0].url if illustrations else None,
        usage=[], created_at=now, finished_at=now,
    )  # fmt: skip
    return BookSource(result, files.__getitem__), files

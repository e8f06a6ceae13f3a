"""The story, its generation config and its outputs; all input validation lives here."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

LANGUAGES: tuple[str, ...] = (
    "bn-IN", "en-IN", "gu-IN", "hi-IN", "kn-IN", "ml-IN",
    "mr-IN", "od-IN", "pa-IN", "ta-IN", "te-IN",
)  # fmt: skip
Language = Literal[
    "bn-IN", "en-IN", "gu-IN", "hi-IN", "kn-IN", "ml-IN",
    "mr-IN", "od-IN", "pa-IN", "ta-IN", "te-IN",
]  # fmt: skip

PRESET_PAGE_COUNTS: tuple[int, ...] = (4, 8, 12, 16, 20)
MAX_PAGES = 200

# A story id becomes a folder name and a Cloudinary public-id segment: nothing else passes.
StoryId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class LifeStage(StrEnum):
    """The seven stages of a life, in the order a life story is told."""

    ORIGINS = "origins"
    CHILDHOOD = "childhood"
    YOUTH = "youth"
    COMING_OF_AGE = "coming_of_age"
    LOVE_AND_FAMILY = "love_and_family"
    WORK_AND_PURPOSE = "work_and_purpose"
    LEGACY = "legacy"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


class Tone(StrEnum):
    WARM = "warm"
    NOSTALGIC = "nostalgic"
    REFLECTIVE = "reflective"
    JOYFUL = "joyful"
    HUMOROUS = "humorous"
    INSPIRATIONAL = "inspirational"
    FORMAL = "formal"
    NARRATIVE = "narrative"


class Audience(StrEnum):
    CHILDREN = "children"
    YOUNG_ADULTS = "young_adults"
    ADULTS = "adults"
    FAMILY = "family"
    SENIORS = "seniors"


class ImageStyle(StrEnum):
    REALISTIC = "realistic"
    ARTISTIC = "artistic"
    MINIMALIST = "minimalist"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LifeStory(_Strict):
    """A person's memories, sorted into the seven stages of a life."""

    id: StoryId
    kind: Literal["life"]
    title: Title
    language: Language
    stages: dict[LifeStage, list[Text]]

    @field_validator("stages", mode="before")
    @classmethod
    def _memories_as_lists(cls, value: object) -> object:
        # A stage may be written as one text or as a list of memories.
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("stages")
    @classmethod
    def _drop_blank_memories(cls, stages: dict[LifeStage, list[str]]) -> dict[LifeStage, list[str]]:
        kept = {stage: [m for m in stages.get(stage, []) if m] for stage in LifeStage}
        if not any(kept.values()):
            raise ValueError("every stage is empty: write at least one memory")
        return kept

    def material(self) -> list[tuple[str, str]]:
        """The non-empty stages in life order, as (key, text) pairs."""
        return [(stage.value, "\n\n".join(m)) for stage, m in self.stages.items() if m]


class CreativeStory(_Strict):
    """The premise and raw content of a creative story."""

    id: StoryId
    kind: Literal["creative"]
    title: Title
    language: Language
    premise: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    content: Text = ""

    def material(self) -> list[tuple[str, str]]:
        return [("premise", self.premise)] + ([("content", self.content)] if self.content else [])


Story = Annotated[LifeStory | CreativeStory, Field(discriminator="kind")]
STORY_ADAPTER: TypeAdapter[LifeStory | CreativeStory] = TypeAdapter(Story)


def parse_story(raw: str | bytes) -> LifeStory | CreativeStory:
    """Parse and validate a story file's JSON; raises pydantic.ValidationError."""
    return STORY_ADAPTER.validate_json(raw)


class GenerationConfig(_Strict):
    """How to turn a story into a book; validated before any work starts, saved with it."""

    pages: int = Field(8, ge=1, le=MAX_PAGES, description="4, 8, 12, 16, 20 or any 1-200")
    words_per_page: int = Field(250, ge=50, le=1000)
    tone: Tone = Tone.WARM
    audience: Audience = Audience.FAMILY
    improve_grammar: bool = True
    images: bool = True
    image_style: ImageStyle = ImageStyle.ARTISTIC
    image_count: int | None = Field(
        None, ge=1, le=MAX_PAGES, description="illustrations; default one per page"
    )
    narration_languages: list[Language] | None = Field(
        None, description="default: the story's language; [] for no narration"
    )

    @field_validator("narration_languages")
    @classmethod
    def _unique_languages(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a language is listed twice")
        return value

    @model_validator(mode="after")
    def _images_fit_pages(self) -> GenerationConfig:
        if self.image_count is not None and self.image_count > self.pages:
            raise ValueError(
                f"image_count ({self.image_count}) is more than pages ({self.pages})"
            )
        return self

    @property
    def total_words(self) -> int:
        return self.pages * self.words_per_page

    @property
    def illustrations(self) -> int:
        """How many illustrations this config asks for."""
        if not self.images:
            return 0
        return self.image_count if self.image_count is not None else self.pages

    def for_story(self, story: LifeStory | CreativeStory) -> GenerationConfig:
        """The config with its defaults resolved against the story (what gets saved)."""
        languages = self.narration_languages
        return self.model_copy(
            update={
                "image_count": self.illustrations if self.images else self.image_count,
                "narration_languages": [story.language] if languages is None else languages,
            }
        )


class Page(_Strict):
    number: int = Field(ge=1)
    text: str
    words: int = Field(ge=0)


class Illustration(_Strict):
    position: int = Field(ge=1, description="1 is the banner and thumbnail")
    page_number: int = Field(ge=1)
    prompt: str
    public_id: str
    url: str
    thumbnail_url: str
    width: int
    height: int
    version: str = ""

    @property
    def is_banner(self) -> bool:
        return self.position == 1


class SentenceTiming(_Strict):
    """Where one sentence of a chapter is spoken in the chapter's delivered file.

    A chapter's sentences tile its file: the first starts at 0, each starts where the
    one before ends (the pause after a sentence is its own), the last ends at the
    file's duration. `page` is the page of the book the sentence comes from.
    """

    text: str
    start: float = Field(ge=0, description="seconds from the start of the chapter's file")
    end: float = Field(ge=0)
    page: int = Field(ge=1)


class AudioChapter(_Strict):
    language: Language
    position: int = Field(ge=1)
    title: str
    text: str
    first_page: int = Field(ge=1)
    duration_seconds: float = Field(ge=0)
    public_id: str
    url: str
    version: str = ""
    sentences: list[SentenceTiming] = Field(default_factory=list)


ExportFormat = Literal["html", "epub", "pdf"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("html", "epub", "pdf")


class BookExport(_Strict):
    """One file of the book (reader page, EPUB, PDF), stored as media of its generation."""

    format: ExportFormat
    language: Language | None = None  # an EPUB's narration language; None: every one
    public_id: str
    url: str
    version: str = ""
    bytes: int = Field(ge=0)
    # What it was rendered from (storyloom.exports.book_digest): a new generation whose
    # book is the same reuses the file instead of rendering (and downloading) again.
    digest: str = ""


class Usage(_Strict):
    """What one provider call cost: calls, tokens (text models), characters (speech).

    A call answered from the cache costs nothing: it counts as `reused`, not in `calls`.
    """

    provider: str
    calls: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    characters: int = 0
    reused: int = Field(0, description="calls answered from the cache: paid once, not again")

    def as_reused(self) -> Usage:
        """This call's usage when its result came from the cache: nothing spent."""
        return Usage(provider=self.provider, calls=0, reused=self.calls + self.reused)


class SectionReport(_Strict):
    """How one section of the book was written: its place in the outline, its length
    against its budget, and what the fact check left for the teller to approve."""

    key: str
    heading: str
    first_page: int = Field(ge=1)
    pages: int = Field(ge=1)
    target_words: int = Field(ge=1)
    words: int = Field(ge=0)
    gap: float = Field(description="relative and signed: -0.1 is 10% short")
    calls: int = Field(ge=0, description="writer calls for this section")
    revisions: int = Field(ge=0)
    proofread: bool = Field(description="the grammar pass's text is the one kept")
    came_before: str = ""  # the outline's continuity: the last memory of the section before
    comes_next: str = ""  # and the first memory of the one after
    length_miss: str | None = None  # by how much and why, when outside 5%
    grammar_note: str | None = None
    invented: list[str] = Field(default_factory=list)  # kept, flagged for approval
    missing: list[str] = Field(default_factory=list)  # the teller's facts not in the text
    altered: list[str] = Field(default_factory=list)  # quotes not found verbatim

    @property
    def flags(self) -> list[str]:
        return (
            [f"invented: {t}" for t in self.invented]
            + [f"missing: {t}" for t in self.missing]
            + [f"quote altered: {t}" for t in self.altered]
        )


class WritingReport(_Strict):
    """The writing record a generation keeps: outline, ledger, flags, misses, figures."""

    target_words: int = Field(ge=1)
    words: int = Field(ge=0)
    gap: float
    length_note: str | None = None  # set when the book is more than 5% off its target
    sections: list[SectionReport]
    ledger: dict[str, object]  # storyloom.facts.Ledger.to_json()
    precision: float | None = None  # generated entities found in the ledger
    recall: float | None = None  # ledger entities found in the book
    figures: dict[str, object] = Field(default_factory=dict)

    @property
    def flags(self) -> list[str]:
        return [f"{s.heading}: {flag}" for s in self.sections for flag in s.flags]

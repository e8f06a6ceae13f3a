"""Tasks that write the book: the outline, each section, the length fix, the grammar pass."""

from __future__ import annotations

from prefect import task

from storyloom import services
from storyloom.models import CreativeStory, GenerationConfig, ImageStyle, LifeStage, LifeStory
from storyloom.providers.base import IllustrationPlan, Outline, SectionBrief, Written
from storyloom.writing import plan_sections
from tasks.policy import api_slot, honour_retry_after, paid_call_options

PAID = paid_call_options()


def section_briefs(
    story: LifeStory | CreativeStory, config: GenerationConfig
) -> list[SectionBrief]:
    """Budget the book into sections (pure): one per life stage or creative part."""
    budgets = plan_sections(story.kind, story.material(), config.total_words)
    premise = story.premise if isinstance(story, CreativeStory) else ""
    return [
        SectionBrief(
            story_id=story.id,
            title=story.title,
            kind=story.kind,
            language=story.language,
            key=budget.key,
            heading=_default_heading(budget.key),
            material=budget.material,
            target_words=budget.target_words,
            tone=config.tone,
            audience=config.audience,
            position=i,
            of=len(budgets),
            premise=premise,
        )
        for i, budget in enumerate(budgets, start=1)
    ]


def _default_heading(key: str) -> str:
    if key in LifeStage._value2member_map_:
        return LifeStage(key).label
    return key.replace("-", " ").capitalize()


@task(name="outline", **PAID)
def outline(briefs: list[SectionBrief], via: str) -> Outline:
    """Give each section its heading and beats."""
    writer = services.providers().writer
    with honour_retry_after(), api_slot("text", writer.name):
        return writer.outline(briefs)


@task(name="write-section", **PAID)
def write_section(brief: SectionBrief, via: str) -> Written:
    """Write one section to its word budget."""
    writer = services.providers().writer
    with honour_retry_after(), api_slot("text", writer.name):
        return writer.write_section(brief)


@task(name="fit-length", **PAID)
def fit_length(brief: SectionBrief, text: str, via: str) -> Written:
    """Rewrite a section that missed its word budget."""
    writer = services.providers().writer
    with honour_retry_after(), api_slot("text", writer.name):
        return writer.adjust_length(brief, text)


@task(name="proofread", **PAID)
def proofread(brief: SectionBrief, text: str, via: str) -> Written:
    """The optional grammar pass over one section."""
    writer = services.providers().writer
    with honour_retry_after(), api_slot("text", writer.name):
        return writer.proofread(brief, text)


@task(name="plan-illustrations", **PAID)
def plan_illustrations(
    title: str, page_texts: list[str], style: ImageStyle, via: str
) -> IllustrationPlan:
    """One image prompt per illustrated page, in one call."""
    writer = services.providers().writer
    with honour_retry_after(), api_slot("text", writer.name):
        return writer.plan_illustrations(title, page_texts, style)

"""Tasks that write the book: each section, its revisions (length and facts), the grammar
pass, and the illustration prompt of each page. What to call next is decided in
storyloom.composing; each call here is one cached, paid task."""

from __future__ import annotations

from prefect import task

from storyloom import facts, services
from storyloom.composing import continuity
from storyloom.models import CreativeStory, GenerationConfig, ImageStyle, LifeStage, LifeStory
from storyloom.providers.base import IllustrationPlan, Revision, SectionBrief, Written
from storyloom.writing import SectionBudget
from tasks.policy import api_slot, honour_retry_after, paid_call_options

PAID = paid_call_options()


def section_briefs(
    story: LifeStory | CreativeStory,
    config: GenerationConfig,
    budgets: list[SectionBudget],
    ledger: facts.Ledger,
) -> list[SectionBrief]:
    """One brief per planned section (pure): its own material and facts, the book's fixed
    context, and the neighbours' edges (the last memory before it, the first after)."""
    premise = story.premise if isinstance(story, CreativeStory) else ""
    headings = [_default_heading(budget.key) for budget in budgets]
    edges = continuity([budget.material for budget in budgets])
    briefs = []
    for i, budget in enumerate(budgets, start=1):
        own = ledger.section(budget.key)
        briefs.append(
            SectionBrief(
                story_id=story.id,
                title=story.title,
                kind=story.kind,
                language=story.language,
                key=budget.key,
                heading=headings[i - 1],
                material=budget.material,
                target_words=budget.target_words,
                tone=config.tone,
                audience=config.audience,
                position=i,
                of=len(budgets),
                premise=premise,
                previous=headings[i - 2] if i > 1 else "",
                following=headings[i] if i < len(budgets) else "",
                came_before=edges[i - 1][0],
                comes_next=edges[i - 1][1],
                facts=tuple(f.text for f in own.entities),
                quotes=tuple(f.text for f in own.quotes),
            )
        )
    return briefs


def _default_heading(key: str) -> str:
    if key in LifeStage._value2member_map_:
        return LifeStage(key).label
    return key.replace("-", " ").capitalize()


@task(name="write-section", **PAID)
def write_section(brief: SectionBrief, via: str) -> Written:
    """Write one section to its word budget."""
    writer = services.providers().writer
    with honour_retry_after(), api_slot("text", writer.name):
        return writer.write_section(brief)


@task(name="revise-section", **PAID)
def revise_section(brief: SectionBrief, text: str, revision: Revision, via: str) -> Written:
    """Rewrite a section to its length, without what the fact check found invented and
    with what it found missing or altered."""
    writer = services.providers().writer
    with honour_retry_after(), api_slot("text", writer.name):
        return writer.revise(brief, text, revision)


@task(name="proofread", **PAID)
def proofread(brief: SectionBrief, text: str, via: str) -> Written:
    """The optional grammar pass over one section."""
    writer = services.providers().writer
    with honour_retry_after(), api_slot("text", writer.name):
        return writer.proofread(brief, text)


@task(name="plan-illustration", **PAID)
def plan_illustration(title: str, page_text: str, style: ImageStyle, via: str) -> IllustrationPlan:
    """The image prompt of one page: keyed by that page's text, so an edit elsewhere in the
    book leaves it cached."""
    writer = services.providers().writer
    with honour_retry_after(), api_slot("text", writer.name):
        return writer.plan_illustration(title, page_text, style)

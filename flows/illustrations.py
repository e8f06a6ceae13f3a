"""Flow `illustrations`: plan the prompts, draw each image, store it; the first is the banner.

Runs as a child of `story` (into that run's generation) or on its own, to redraw the
pictures of a finished story without touching its text or narration.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture
from pydantic import BaseModel

from flows.fanout import submit_many
from flows.progress import Progress
from flows.publishing import Generation, open_generation
from flows.spending import paid
from storyloom import report, services
from storyloom.media.base import image_public_id
from storyloom.media.local import preview_src
from storyloom.models import Illustration, ImageStyle, Usage
from storyloom.providers.base import ImageRequest, Picture
from storyloom.providers.errors import AccountError
from storyloom.settings import get_settings
from storyloom.writing import illustration_pages
from tasks.illustrations import draw_image
from tasks.media import store_media
from tasks.writing import plan_illustration


class IllustrationsResult(BaseModel):
    story_id: str
    generation_id: str
    illustrations: int
    failed_pages: list[int]
    banner_url: str | None
    usage: list[Usage]


@flow(
    name="illustrations",
    description="Draw and store a story's illustrations.",
    persist_result=True,  # read by a parent that started this run from its deployment
)
def illustrations(
    story_id: str,
    generation_id: str | None = None,
    image_style: ImageStyle | None = None,
    image_count: int | None = None,
) -> IllustrationsResult:
    """Illustrate a story: into `generation_id` if given, else as a new generation."""
    with open_generation(
        story_id,
        generation_id,
        copy=("pages", "chapters"),
        overrides={"image_style": image_style, "image_count": image_count, "images": True},
    ) as gen:
        result = _illustrate(gen)
        gen.add_usage(result.usage)
        return result


def _illustrate(gen: Generation) -> IllustrationsResult:
    logger = get_run_logger()
    config, pages = gen.config, gen.pages()
    numbers = illustration_pages(len(pages), config.illustrations) if config.illustrations else []
    progress = Progress(
        "illustrations", gen.story_id, 1 + 2 * len(numbers), f"{len(numbers)} illustrations"
    )
    providers, media = services.providers(), services.media()
    usage: list[Usage] = []
    items: list[Illustration] = []
    failed: list[int] = []

    def settled(future: PrefectFuture[Picture], page: int) -> Picture | None:
        # One failed image never sinks the rest: log it and go on without it.
        future.wait()
        progress.advance(f"page {page} drawn")
        try:
            picture, cost = paid(future)
        except AccountError:
            raise  # every other picture would fail the same way
        except Exception as exc:
            logger.warning("page %d: the illustration failed and is skipped: %s", page, exc)
            failed.append(page)
            return None
        usage.append(cost)
        return picture

    if numbers:
        via = providers.notes["image"]
        # One call per page, keyed by that page's text: an edit elsewhere leaves it cached.
        planned = [
            paid(future)
            for future in submit_many(
                plan_illustration,
                [(gen.story.title, pages[n - 1].text, config.image_style,
                  providers.notes["text"]) for n in numbers],
            )
        ]  # fmt: skip
        usage += [cost for _, cost in planned]
        prompts = [plan.prompt for plan, _ in planned]
        progress.advance("prompts planned")
        aspect = get_settings().gemini_image_aspect_ratio

        def request(prompt: str, reference: Picture | None) -> ImageRequest:
            return ImageRequest(
                prompt, config.image_style, aspect, reference.data if reference else None
            )

        # The first picture is drawn alone: the others get it as their reference so the
        # characters stay the same. If it fails, the others are drawn without one.
        first = settled(draw_image.submit(request(prompts[0], None), via), numbers[0])
        rest = [draw_image.submit(request(p, first), via) for p in prompts[1:]]
        pictures = [first] + [settled(f, n) for f, n in zip(rest, numbers[1:], strict=True)]

        drawn = [
            (number, prompt, picture)
            for number, prompt, picture in zip(numbers, prompts, pictures, strict=True)
            if picture is not None
        ]
        uploads = submit_many(
            store_media,
            [(gen.id, image_public_id(gen.story_id, n, pic.data), pic.data, "image", "png",
              media.name) for n, _, pic in drawn],
        )  # fmt: skip
        for (number, prompt, picture), upload in zip(drawn, uploads, strict=True):
            upload.wait()
            progress.advance(f"page {number} stored")
            try:
                stored = upload.result()
            except AccountError:
                raise
            except Exception as exc:
                logger.warning("page %d: storing the illustration failed: %s", number, exc)
                failed.append(number)
                continue
            items.append(
                Illustration(
                    position=len(items) + 1,  # 1, the first one stored, is the banner
                    page_number=number,
                    prompt=prompt,
                    public_id=stored.public_id,
                    url=stored.url,
                    thumbnail_url=stored.thumbnail_url or stored.url,
                    width=picture.width,
                    height=picture.height,
                    version=stored.version,
                )
            )
    gen.save_illustrations(items)
    progress.finish(f"{len(items)} illustrations, {len(failed)} failed")
    create_markdown_artifact(
        report.illustrations_markdown(gen.story.title, items, sorted(failed), preview_src),
        key=f"illustrations-{gen.story_id}",
        description=f"Illustrations of {gen.story.title}",
    )
    return IllustrationsResult(
        story_id=gen.story_id,
        generation_id=gen.id,
        illustrations=len(items),
        failed_pages=sorted(failed),
        banner_url=items[0].url if items else None,
        usage=usage,
    )

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
from storyloom.media.base import StoredMedia, image_public_id_for, tag_of
from storyloom.media.local import preview_src
from storyloom.models import Illustration, ImageStyle, Usage
from storyloom.providers.base import ImageRequest
from storyloom.providers.errors import AccountError
from storyloom.settings import get_settings
from storyloom.writing import illustration_pages
from tasks.illustrations import KeptPicture, keep_picture
from tasks.media import reuse_media, store_media
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
    config, pages = gen.config, gen.pages()
    numbers = illustration_pages(len(pages), config.illustrations) if config.illustrations else []
    progress = Progress(
        "illustrations", gen.story_id, 1 + 2 * len(numbers), f"{len(numbers)} illustrations"
    )
    providers, media = services.providers(), services.media()
    usage: list[Usage] = []
    items: list[Illustration] = []
    failed: list[int] = []

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
        progress.advance("prompts planned")
        aspect = get_settings().gemini_image_aspect_ratio
        requests = [ImageRequest(plan.prompt, config.image_style, aspect) for plan, _ in planned]
        pictures = _Pictures(gen, numbers, requests, via, media.name, progress, failed)

        # The first picture is drawn alone: the others get it as their reference so the
        # characters stay the same. If it fails, the others are drawn without one.
        first = pictures.draw([0], None)
        rest = pictures.draw(list(range(1, len(numbers))), pictures.reference(first))
        for index, (kept, stored) in sorted({**first, **rest}.items()):
            number = numbers[index]
            progress.advance(f"page {number} stored")
            items.append(
                Illustration(
                    position=len(items) + 1,  # 1, the first one stored, is the banner
                    page_number=number,
                    prompt=requests[index].prompt,
                    public_id=stored.public_id,
                    url=stored.url,
                    thumbnail_url=stored.thumbnail_url or stored.url,
                    width=kept.width,
                    height=kept.height,
                    version=stored.version,
                )
            )
        usage += pictures.spent()
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


Placed = dict[int, tuple[KeptPicture, StoredMedia]]  # by index in the pages illustrated
Reference = tuple[KeptPicture, str | None]  # the first picture, and its file if stored


class _Pictures:
    """Drawing the pictures and storing them in the generation.

    Each page's picture comes from keep-picture: kept for good as the tag of its bytes,
    drawn (and so paid for) only when no run kept one for that request. A kept picture
    is this generation's when its file is stored: the same file (an unchanged page), a
    copy of it (the same picture on another page), or, when no generation uses it any
    more and its file is gone, the picture again: from draw-image's cache while that
    lasts (`result_days`), else drawn anew.
    """

    def __init__(
        self,
        gen: Generation,
        numbers: list[int],
        requests: list[ImageRequest],
        via: str,
        media_name: str,
        progress: Progress,
        failed: list[int],
    ) -> None:
        self.gen, self.numbers, self.requests = gen, numbers, requests
        self.via, self.media_name, self.progress, self.failed = via, media_name, progress, failed
        self.costs: dict[int, Usage] = {}
        self.kept: dict[int, KeptPicture] = {}
        self.logger = get_run_logger()
        # The current book's pictures by tag: where a kept picture's bytes may be stored.
        book = services.store().book(gen.story_id)
        self.elsewhere: dict[str, list[str]] = {}
        for item in book.illustrations if book else []:
            self.elsewhere.setdefault(tag_of(item.public_id), []).append(item.public_id)

    def spent(self) -> list[Usage]:
        return [self.costs[i] for i in sorted(self.costs)]

    def reference(self, first: Placed) -> Reference | None:
        """The first picture as the others' reference: its bytes in memory, or its file."""
        picture = self.kept.get(0)
        stored = first.get(0)
        if picture is None or (picture.data is None and stored is None):
            return None
        return picture, stored[1].public_id if stored else None

    def draw(self, indexes: list[int], reference: Reference | None) -> Placed:
        """The pictures of these pages, each stored in the generation; a picture that
        failed is logged and left out."""
        kept = self._settle({i: self._keep(i, reference) for i in indexes})
        placed: Placed = {}
        gone: list[int] = []
        for i, (picture, stored) in self._store(kept).items():
            if stored is None:
                gone.append(i)
            else:
                placed[i] = (picture, stored)
        if gone:
            retried = {i: self._keep(i, reference, again=True) for i in gone}
            again = self._settle(retried, again=True)
            for i, (picture, stored) in self._store(again).items():
                if stored is not None:
                    placed[i] = (picture, stored)
        return placed

    def _keep(
        self, index: int, reference: Reference | None, *, again: bool = False
    ) -> PrefectFuture[KeptPicture]:
        task = keep_picture.with_options(refresh_cache=True) if again else keep_picture
        request = self.requests[index]
        if reference is None:
            return task.submit(request, None, self.via)
        picture, stored_at = reference
        return task.submit(request, picture.tag, self.via, picture.data, stored_at)

    def _settle(
        self, futures: dict[int, PrefectFuture[KeptPicture]], *, again: bool = False
    ) -> dict[int, KeptPicture]:
        # One failed image never sinks the rest: log it and go on without it.
        settled: dict[int, KeptPicture] = {}
        for index, future in futures.items():
            future.wait()
            if not again:
                self.progress.advance(f"page {self.numbers[index]} drawn")
            try:
                picture, cost = paid(future)
            except AccountError:
                raise  # every other picture would fail the same way
            except Exception as exc:
                page = self.numbers[index]
                self.logger.warning(
                    "page %d: the illustration failed and is skipped: %s", page, exc
                )
                self.failed.append(page)
                continue
            self.costs[index] = cost  # a picture drawn again replaces what its first try cost
            self.kept[index] = settled[index] = picture
        return settled

    def _store(
        self, pictures: dict[int, KeptPicture]
    ) -> dict[int, tuple[KeptPicture, StoredMedia | None]]:
        """Each picture's file in the generation (None: no longer stored anywhere); a
        picture whose storing failed is logged and left out."""
        futures: dict[int, PrefectFuture[StoredMedia] | PrefectFuture[StoredMedia | None]] = {}
        for index, picture in pictures.items():
            public_id = image_public_id_for(self.gen.story_id, self.numbers[index], picture.tag)
            if picture.data is not None:
                futures[index] = store_media.submit(
                    self.gen.id, public_id, picture.data, "image", "png", self.media_name
                )
            else:
                futures[index] = reuse_media.submit(
                    self.gen.id, public_id, self.elsewhere.get(picture.tag, []), "image",
                    "png", self.media_name,
                )  # fmt: skip
        stored: dict[int, tuple[KeptPicture, StoredMedia | None]] = {}
        for index, future in futures.items():
            future.wait()
            try:
                stored[index] = (pictures[index], future.result())
            except AccountError:
                raise
            except Exception as exc:
                page = self.numbers[index]
                self.logger.warning("page %d: storing the illustration failed: %s", page, exc)
                self.failed.append(page)
        return stored

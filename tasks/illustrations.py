"""Tasks that draw illustrations: the paid call, whose bytes the result storage keeps for
a few days, and the picture kept for good as the tag of the bytes the media store holds
(tasks/retention.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from storyloom import services
from storyloom.media.base import content_tag
from storyloom.models import Usage
from storyloom.providers.base import ImageRequest, Picture
from tasks.media import read_media
from tasks.policy import api_slot, honour_retry_after, paid_call_options
from tasks.retention import committed_at_once, cost, expiring, kept_call_options


@task(name="draw-image", **paid_call_options())
def draw_image(request: ImageRequest, via: str) -> Picture:
    """Draw one illustration (the reference image, if any, keeps the characters the same)."""
    illustrator = services.providers().illustrator
    with honour_retry_after(), api_slot("image", illustrator.name):
        return illustrator.draw(request)


@dataclass(frozen=True)
class KeptPicture:
    """A drawn picture as the lasting cache keeps it: the content tag of its bytes (the
    media store holds them, named by it), its size, and what drawing it cost.

    The bytes ride along in memory when the picture was just drawn, for the flow to
    store; they never reach the result storage (`__getstate__` leaves them out), so a
    result read back from the cache has `data` None.
    """

    tag: str
    mime_type: str
    width: int
    height: int
    usage: Usage
    data: bytes | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "data": None}


# Keyed like a paid call by what is drawn, the reference by the tag of its bytes: where
# those bytes are (in memory, or in which stored file) changes nothing in the picture.
KEEP_PICTURE_CACHE = (INPUTS - "reference_png" - "reference_at") + TASK_SOURCE


@task(name="keep-picture", **kept_call_options(KEEP_PICTURE_CACHE))
def keep_picture(
    request: ImageRequest,
    reference: str | None,
    via: str,
    reference_png: bytes | None = None,
    reference_at: str | None = None,
) -> KeptPicture:
    """Draw one illustration (through draw-image, whose bytes expire) unless a picture
    for this request is kept. `request` carries no reference image: `reference` is the
    tag of its bytes, given in memory (`reference_png`) or read from the stored file
    `reference_at` only when the picture must be drawn."""
    if reference is not None and reference_png is None:
        if reference_at is None:
            raise ValueError("a reference picture needs its bytes or the file holding them")
        reference_png = read_media(reference_at, "image", "png", services.media().name)
    drawing = replace(request, reference_png=reference_png)
    with committed_at_once():
        state = expiring(draw_image)(drawing, via, return_state=True)
    picture = state.result()
    return KeptPicture(
        tag=content_tag(picture.data),
        mime_type=picture.mime_type,
        width=picture.width,
        height=picture.height,
        usage=cost(picture.usage, state),
        data=picture.data,
    )

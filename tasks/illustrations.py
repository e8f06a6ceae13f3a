"""Tasks that draw illustrations."""

from __future__ import annotations

from prefect import task

from storyloom import services
from storyloom.providers.base import ImageRequest, Picture
from tasks.policy import api_slot, honour_retry_after, paid_call_options


@task(name="draw-image", **paid_call_options())
def draw_image(request: ImageRequest, via: str) -> Picture:
    """Draw one illustration (the reference image, if any, keeps the characters the same)."""
    illustrator = services.providers().illustrator
    with honour_retry_after(), api_slot("image", illustrator.name):
        return illustrator.draw(request)

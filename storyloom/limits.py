"""The external APIs whose calls are limited, and which provider calls which.

Pure (no Prefect): tasks/ take slots under these names, deployments/ (`storyloom setup`)
creates the limits. Each API has two Prefect global concurrency limits:

- `api:<name>`, without slot decay: calls in flight. A slot is held for the call.
- `rate:<name>`, with slot decay: the sustained rate. A slot is taken before the call
  and decays on its own; the decay per second is the rate.

Two, because a slot of a limit with decay decays while it is held: one limit with
decay does not cap calls in flight once a call lasts longer than 1/decay seconds.
"""

from __future__ import annotations

from typing import Final, Literal

Role = Literal["text", "image", "speech", "translation", "media"]

GEMINI_TEXT: Final = "gemini-text"
GEMINI_IMAGE: Final = "gemini-image"
SARVAM: Final = "sarvam"
CLOUDINARY: Final = "cloudinary"
APIS: Final = (GEMINI_TEXT, GEMINI_IMAGE, SARVAM, CLOUDINARY)

# Role → (how the real provider's name starts, the API it calls). The names are the
# providers' `name` attributes: "gemini:<model>" (google.py), "sarvam/<model>"
# (sarvam.py), "cloudinary" (media/cloudinary.py). The offline providers and local
# files call nothing and match none.
_CALLERS: Final[dict[Role, tuple[str, str]]] = {
    "text": ("gemini:", GEMINI_TEXT),
    "image": ("gemini:", GEMINI_IMAGE),
    "speech": ("sarvam/", SARVAM),
    "translation": ("sarvam/", SARVAM),
    "media": ("cloudinary", CLOUDINARY),
}


def in_flight_limit(api: str) -> str:
    """The global concurrency limit (no decay) on one API's calls in flight."""
    return f"api:{api}"


def rate_limit_name(api: str) -> str:
    """The global concurrency limit (with slot decay) on one API's rate of calls."""
    return f"rate:{api}"


def api_for(role: Role, provider_name: str) -> str | None:
    """The external API a provider of this role calls; None for one that calls none."""
    prefix, api = _CALLERS[role]
    return api if provider_name.startswith(prefix) else None

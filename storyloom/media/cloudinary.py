"""Media on Cloudinary, in the same `stories/{id}/...` layout as the local store.

The SDK keeps one process-wide config, read from CLOUDINARY_URL when it is imported.
This store never relies on it: every call passes the account (cloud, key, secret,
upload prefix, signature settings) and every option the SDK would otherwise fill in
from that global config, so two stores with different accounts do not clash and a
stray CLOUDINARY_* variable cannot redirect an upload or change a URL.

Uploads are deterministic (full path as public id, overwrite, no random suffix), so a
repeat overwrites; each overwrite bumps `version`, which every URL carries, so CDN
caches never serve a stale file. Errors leave as TransientError (worth a retry) or
PermanentError, from one function, and never hold the api secret.

One deliberate process-wide change: the SDK's urllib3 pools retry on their own (a
DELETE answered 429 or 503 with Retry-After is slept on and repeated, up to three
times, inside the call). Retries belong to Prefect, which honours Retry-After across
workers, so the first store built turns the SDK transport's retries off.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import cloudinary.api
import cloudinary.api_client.call_api
import cloudinary.exceptions
import cloudinary.uploader
import cloudinary.utils
import httpx
import urllib3.exceptions

from storyloom.media.base import MediaKind, StoredMedia, story_prefix
from storyloom.providers.errors import (
    AccountError,
    PermanentError,
    ProviderError,
    TransientError,
)

PROVIDER = "cloudinary"
POOL_CONNECTIONS = 16

# Audio goes up as "video": Cloudinary has no audio resource type.
RESOURCE_TYPES: dict[MediaKind, str] = {"image": "image", "audio": "video", "file": "raw"}

# Plain path segments only: a dot would read as a format, and "..", "?" or "#" would
# make an id whose URL means something else.
_PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
_EXTENSION = re.compile(r"[a-z0-9]{1,5}")

# Everything cloudinary_url() would otherwise read from the global config: pinned so
# a URL depends on this store's account alone.
_URL_PINS: dict[str, Any] = {
    "type": "upload",
    "secure": True,
    "cname": None,
    "cdn_subdomain": False,
    "secure_cdn_subdomain": False,
    "shorten": False,
    "sign_url": False,
    "use_root_path": False,
    "force_version": True,
    "auth_token": False,
    "use_fetch_format": False,
    "responsive_width": False,
    "dpr": None,
    "long_url_signature": False,
}

# Query parameters a CLOUDINARY_URL may carry that this store understands.
_URL_PARAMS = frozenset({"upload_prefix", "signature_algorithm", "secure_distribution", "timeout"})


class CloudinaryMediaStore:
    """A MediaStore on one Cloudinary account; holds no SDK state of its own."""

    name = "cloudinary"

    def __init__(
        self,
        *,
        cloud_name: str,
        api_key: str,
        api_secret: str,
        upload_prefix: str | None = None,
        signature_algorithm: str = "sha1",
        secure_distribution: str | None = None,
        timeout: float = 60.0,
        thumbnail_size: tuple[int, int] = (400, 300),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """upload_prefix moves both APIs (a loopback fake in tests); None is the real one.

        signature_algorithm must match the account's setting ("sha1" or "sha256");
        secure_distribution is a private CDN host; clock is only read to turn a rate
        limit's "try again on <time>" into seconds.
        """
        if not (cloud_name and api_key and api_secret):
            raise ValueError("Cloudinary needs a cloud name, an API key and an API secret")
        if signature_algorithm not in ("sha1", "sha256"):
            raise ValueError(f"unknown signature_algorithm {signature_algorithm!r}")
        self.cloud_name = cloud_name
        self.api_key = api_key
        self._api_secret = api_secret
        self.upload_prefix = upload_prefix.rstrip("/") if upload_prefix else None
        self.signature_algorithm = signature_algorithm
        self.secure_distribution = secure_distribution
        self.timeout = timeout
        self.thumbnail_size = thumbnail_size
        self._clock = clock
        _without_transport_retries()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> CloudinaryMediaStore:
        """From `cloudinary://KEY:SECRET@CLOUD[/private-cdn-host]?upload_prefix=...`.

        Parsed as the SDK parses CLOUDINARY_URL. Error messages never repeat the URL: it
        holds the secret.
        """
        parts = urlsplit(url.strip())
        if parts.scheme != "cloudinary":
            raise ValueError("a Cloudinary URL starts with cloudinary://")
        if not (parts.hostname and parts.username and parts.password):
            raise ValueError("a Cloudinary URL reads cloudinary://API_KEY:API_SECRET@CLOUD_NAME")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - _URL_PARAMS)
        if unknown:
            # Only names, never values: a value could be anything, a secret included.
            raise ValueError(f"unsupported Cloudinary URL parameters: {', '.join(unknown)}")
        return cls(
            cloud_name=parts.hostname,
            api_key=unquote(parts.username),
            api_secret=unquote(parts.password),
            upload_prefix=query.get("upload_prefix"),
            signature_algorithm=query.get("signature_algorithm", "sha1"),
            # A path names a private CDN host, as the SDK reads it.
            secure_distribution=parts.path.strip("/") or query.get("secure_distribution"),
            timeout=timeout if timeout is not None else float(query.get("timeout", 60.0)),
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"CloudinaryMediaStore(cloud_name={self.cloud_name!r}, api_key={self.api_key!r})"

    # --- MediaStore -----------------------------------------------------------------

    def put(self, public_id: str, data: bytes, *, kind: MediaKind, extension: str) -> StoredMedia:
        """Upload data as public_id, replacing what was there; URLs carry the new version."""
        _check_public_id(public_id)
        if not _EXTENSION.fullmatch(extension):
            raise ValueError(f"not a file extension: {extension!r}")
        if not data:
            raise ValueError(f"nothing to upload for {public_id!r}")
        resource_type = RESOURCE_TYPES[kind]
        folder, _, leaf = public_id.rpartition("/")
        answer = self._upload_api(
            cloudinary.uploader.upload,
            data,
            resource_type=resource_type,
            public_id=public_id,
            # Dynamic-folder accounts place an asset by asset_folder, not by its id.
            asset_folder=folder,
            overwrite=True,
            unique_filename=False,
            invalidate=True,
            # The SDK would add a preset from the global config; a preset can rename ids.
            upload_preset=None,
            filename=f"{leaf}.{extension}",
        )
        stored_id = answer.get("public_id")
        if stored_id != public_id:
            raise PermanentError(
                PROVIDER,
                f"Cloudinary stored {public_id!r} as {stored_id!r}: an upload preset or "
                "folder setting renames ids, so repeats would no longer overwrite",
            )
        version = str(answer.get("version") or "")
        if not version.isdigit():
            raise PermanentError(
                PROVIDER, f"Cloudinary answered without a version for {public_id!r}"
            )
        if kind == "image":
            width, height = self.thumbnail_size
            url = self.url(public_id, version, kind, fetch_format="auto", quality="auto")
            thumbnail = self.url(
                public_id,
                version,
                kind,
                crop="fill",
                width=width,
                height=height,
                fetch_format="auto",
                quality="auto",
            )
        elif kind == "audio":
            # Audio is delivered as stored: no transformation, its own format.
            fmt = str(answer.get("format") or extension)
            url = self.url(public_id, version, kind, format=fmt)
            thumbnail = ""
        else:
            # A raw file's URL is its id: Cloudinary transforms and converts nothing.
            url = self.url(public_id, version, kind)
            thumbnail = ""
        return StoredMedia(
            public_id=public_id,
            url=url,
            version=version,
            bytes=int(answer.get("bytes") or len(data)),
            thumbnail_url=thumbnail,
        )

    def delete_story(self, story_id: str) -> int:
        """Delete every image and audio file of a story, then its folder; returns how many."""
        prefix = story_prefix(story_id)  # refuses ids that would widen the delete
        deleted = 0
        for resource_type in RESOURCE_TYPES.values():
            while True:
                answer = self._admin_api(
                    cloudinary.api.delete_resources_by_prefix,
                    prefix,
                    resource_type=resource_type,
                    invalidate=True,
                )
                page = answer.get("deleted") or {}
                gone = sum(1 for status in page.values() if status == "deleted")
                deleted += gone
                # At most 1000 go per call; "partial" says there are more.
                if not answer.get("partial"):
                    break
                if not page:
                    raise TransientError(
                        PROVIDER, f"Cloudinary reported more under {prefix} but deleted none"
                    )
        try:
            self._admin_api(cloudinary.api.delete_folder, prefix.rstrip("/"))
        except PermanentError as exc:
            if exc.status != 404:  # no folder: nothing was ever stored, or it is gone
                raise
        return deleted

    # --- beyond the protocol ------------------------------------------------------------

    def probe(self) -> str:
        """The Admin API's ping: proves the cloud, key and secret; costs no upload."""
        answer = self._admin_api(cloudinary.api.ping)
        if answer.get("status") != "ok":
            raise PermanentError(PROVIDER, "Cloudinary answered the ping without status ok")
        return "ping ok"

    def delete(self, public_id: str, *, kind: MediaKind) -> bool:
        """Delete one file; True if it was there."""
        _check_public_id(public_id)
        answer = self._upload_api(
            cloudinary.uploader.destroy,
            public_id,
            resource_type=RESOURCE_TYPES[kind],
            invalidate=True,
        )
        return answer.get("result") == "ok"

    def read(self, public_id: str, *, kind: MediaKind, extension: str) -> bytes:
        """The stored bytes, through the Upload API's signed download (on the API host,
        like every other call), not a CDN URL. The signed URL never reaches a message."""
        _check_public_id(public_id)
        url = cloudinary.utils.private_download_url(
            public_id,
            "" if kind == "file" else extension,
            resource_type=RESOURCE_TYPES[kind],
            type="upload",
            **self._account(),
        )
        try:
            response = httpx.get(url, timeout=self.timeout, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise cloudinary_error(
                OSError(f"download failed: {type(exc).__name__}"),
                secret=self._api_secret,
                now=self._clock(),
            ) from None
        if response.status_code == 404:
            raise FileNotFoundError(f"Cloudinary has no {kind} {public_id!r}")
        if response.status_code != 200:
            try:
                message = str(response.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                message = response.reason_phrase
            raise cloudinary_error(
                cloudinary.exceptions.Error(message),
                status=response.status_code,
                secret=self._api_secret,
                now=self._clock(),
            )
        return response.content

    def url(self, public_id: str, version: str, kind: MediaKind, **transformation: Any) -> str:
        """The versioned delivery URL of public_id, with an optional transformation."""
        built, _ = cloudinary.utils.cloudinary_url(
            public_id,
            resource_type=RESOURCE_TYPES[kind],
            version=version,
            cloud_name=self.cloud_name,
            private_cdn=self.secure_distribution is not None,
            secure_distribution=self.secure_distribution,
            api_secret=None,  # URLs are unsigned; the secret has no business here
            signature_algorithm=self.signature_algorithm,
            **_URL_PINS,
            **transformation,
        )
        return str(built)

    # --- calls ------------------------------------------------------------------------------

    def _account(self) -> dict[str, Any]:
        """The per-call options that replace the SDK's global config."""
        return {
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self._api_secret,
            "upload_prefix": self.upload_prefix,
            "oauth_token": None,  # else a global token would replace the signature
            "signature_algorithm": self.signature_algorithm,
            "signature_version": 2,
            "timeout": self.timeout,
        }

    def _upload_api(self, call: Callable[..., Any], *args: Any, **options: Any) -> dict[str, Any]:
        """An Upload API call; its errors come back with their HTTP status."""
        # return_error: the SDK then hands back the status instead of dropping it for
        # statuses it has no exception class for (502, 504 ...).
        answer = self._call(call, *args, return_error=True, **self._account(), **options)
        error = answer.get("error")
        if isinstance(error, Mapping):
            status = error.get("http_code")
            raise cloudinary_error(
                cloudinary.exceptions.Error(str(error.get("message", ""))),
                status=status if isinstance(status, int) else None,
                secret=self._api_secret,
                now=self._clock(),
            )
        return answer

    def _admin_api(self, call: Callable[..., Any], *args: Any, **options: Any) -> dict[str, Any]:
        """An Admin API call (Basic auth)."""
        return self._call(call, *args, **self._account(), **options)

    def _call(self, call: Callable[..., Any], *args: Any, **options: Any) -> dict[str, Any]:
        try:
            answer = call(*args, **options)
        except Exception as exc:  # the SDK raises bare Exception too; classify them all
            raise cloudinary_error(exc, secret=self._api_secret, now=self._clock()) from exc
        if not isinstance(answer, Mapping):
            raise PermanentError(PROVIDER, f"Cloudinary answered {type(answer).__name__}, not JSON")
        return dict(answer)


def _without_transport_retries() -> None:
    """Make the SDK's two connection pools answer with what the server said, at once.

    The managers are module globals built at import; new pools take `retries` from
    connection_pool_kw, and clear() drops pools built before. Idempotent. The pools also
    keep as many connections as a flow uploads at once (urllib3 keeps one by default and
    drops the rest with a warning).
    """
    for module in (cloudinary.uploader, cloudinary.api_client.call_api):
        manager = getattr(module, "_http", None)
        pool_kw = getattr(manager, "connection_pool_kw", None)
        if (
            manager is not None
            and isinstance(pool_kw, dict)
            and pool_kw.get("retries") is not False
        ):
            pool_kw["retries"] = False
            pool_kw["maxsize"] = POOL_CONNECTIONS
            manager.clear()


def _check_public_id(public_id: str) -> None:
    if not _PUBLIC_ID.fullmatch(public_id):
        raise ValueError(f"not a public id this store writes: {public_id!r}")


# How the SDK words what it knows: the Admin API prefixes "Error 429 - ", both APIs say
# "(502)" when the body was not JSON, and transport failures start as below.
_ADMIN_STATUS = re.compile(r"^Error (\d{3}) - ")
_PARSE_STATUS = re.compile(r"^Error parsing server response \((\d{3})\)")
_TRANSPORT = ("Unexpected error", "Socket error", "Socket Error")
# The real rate-limit text names the reset time: "... Try again on 2026-11-29 14:00:00 UTC".
_TRY_AGAIN_ON = re.compile(r"Try again on (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC")

_CLASS_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (cloudinary.exceptions.BadRequest, 400),
    (cloudinary.exceptions.AuthorizationRequired, 401),
    (cloudinary.exceptions.NotAllowed, 403),
    (cloudinary.exceptions.NotFound, 404),
    (cloudinary.exceptions.AlreadyExists, 409),
    (cloudinary.exceptions.RateLimited, 429),
)


def cloudinary_error(
    exc: BaseException, *, status: int | None = None, secret: str, now: float
) -> ProviderError:
    """The one place an SDK failure becomes TransientError or PermanentError.

    status is the HTTP status when the caller knows it (Upload API with return_error);
    otherwise it is read from the SDK's message or exception class. The secret is
    scrubbed from the message in case anything ever echoes it.
    """
    message = str(exc).strip()
    if secret:
        message = message.replace(secret, "***")
    if status is None:
        match = _ADMIN_STATUS.match(message) or _PARSE_STATUS.match(message)
        if match:
            status = int(match[1])
            message = _ADMIN_STATUS.sub("", message)
    if status is None:
        status = next((code for cls, code in _CLASS_STATUS if isinstance(exc, cls)), None)

    if status is None:
        if isinstance(exc, urllib3.exceptions.HTTPError | socket.error) or message.startswith(
            _TRANSPORT
        ):
            if "timed out" in message.lower() or isinstance(exc, TimeoutError):
                return TransientError(PROVIDER, f"Cloudinary did not answer in time: {message}")
            return TransientError(PROVIDER, f"could not reach Cloudinary: {message}")
        if isinstance(exc, cloudinary.exceptions.GeneralError):
            # The SDK's class for 500 and 503 when it cannot say more.
            return TransientError(PROVIDER, f"Cloudinary failed: {message}", status=500)
        # "Must supply api_key" and the like: no request could succeed as configured.
        return PermanentError(PROVIDER, f"Cloudinary call refused before sending: {message}")

    if status in (420, 429):
        return TransientError(
            PROVIDER,
            f"Cloudinary rate limit ({status}): {message}",
            status=status,
            retry_after=_retry_after(message, now),
        )
    if status == 408 or status >= 500:
        return TransientError(
            PROVIDER, f"Cloudinary server error ({status}): {message}", status=status
        )
    if status == 401:
        return AccountError(
            PROVIDER,
            f"Cloudinary rejected the credentials (401; check the API key and secret): {message}",
            status=status,
        )
    if status == 403:
        return AccountError(
            PROVIDER, f"Cloudinary refused the request (403): {message}", status=status
        )
    if status == 404:
        return PermanentError(
            PROVIDER, f"Cloudinary found nothing there (404): {message}", status=status
        )
    return PermanentError(
        PROVIDER, f"Cloudinary rejected the request ({status}): {message}", status=status
    )


def _retry_after(message: str, now: float) -> float | None:
    """Seconds until the reset time a rate-limit message names, if it names one.

    The SDK drops the response headers of a failed call, so the message is all there is.
    """
    match = _TRY_AGAIN_ON.search(message)
    if not match:
        return None
    reset = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return max(0.0, reset.timestamp() - now)

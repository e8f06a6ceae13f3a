"""Media on Cloudinary, in the same `stories/{id}/...` layout as the local store.

The HTTP is ours, the Cloudinary knowledge is the SDK's: the SDK's public helpers sign
(`cloudinary.utils.api_sign_request`, `private_download_url`) and build every URL
(`base_api_url` for the two APIs, `cloudinary_url` for delivery); this module sends the
requests through one httpx client per store. Why not the SDK's `uploader` and `api`
calls: they send through two urllib3 pools built when the SDK is imported and shared by
the whole process, and those pools retry on their own (a DELETE answered 429 or 503
with Retry-After is slept on and repeated up to three times inside the call, a refused
connection is tried again even for an upload), keep one connection, and the calls drop
the headers of a failed answer. Their public surface has no switch for any of it (a
timeout per call, a proxy from the global config, nothing else), and changing their
pools means writing the SDK's private module state. Sending ourselves gives retries by
Prefect's policy alone (a paid upload is never retried twice over), a connection pool
sized for a flow's parallel uploads, and the status and headers of every answer.

The SDK keeps one process-wide config, read from CLOUDINARY_URL when it is imported.
This store never relies on it: every SDK helper gets the account (cloud, key, secret,
upload prefix, signature settings) and every option it would otherwise fill in from
that global config, so two stores with different accounts do not clash and a stray
CLOUDINARY_* variable cannot redirect an upload or change a URL.

Uploads are deterministic (full path as public id, overwrite, no random suffix), so a
repeat overwrites; each overwrite bumps `version`, which every URL carries, so CDN
caches never serve a stale file. Errors leave as TransientError (worth a retry) or
PermanentError, and never hold the api secret (nor a signed URL).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import cloudinary
import cloudinary.utils
import httpx

from storyloom.media.base import MediaKind, StoredMedia, story_prefix
from storyloom.providers.errors import (
    AccountError,
    PermanentError,
    ProviderError,
    TransientError,
    parse_retry_after,
)

PROVIDER = "cloudinary"
# Connections kept open per store: as many as a flow uploads at once.
POOL_CONNECTIONS = 16
USER_AGENT = f"storyloom (cloudinary-python/{cloudinary.VERSION})"
_MAX_MESSAGE = 300  # server messages are quoted, but never a whole HTML error page

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


def make_http_client(timeout_seconds: float) -> httpx.Client:
    """The httpx client for one account: one timeout for every phase, no retries (httpx
    makes none), a pool as large as a flow's parallel uploads."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout_seconds),
        limits=httpx.Limits(
            max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS
        ),
        headers={"User-Agent": USER_AGENT},
    )


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
        http: httpx.Client | None = None,
    ) -> None:
        """upload_prefix moves both APIs (a loopback fake in tests); None is the real one.

        signature_algorithm must match the account's setting ("sha1" or "sha256");
        secure_distribution is a private CDN host; clock is only read to turn a rate
        limit's "try again on <time>" into seconds; http is the client every call goes
        through (built from timeout when not given, and then closed by close()).
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
        self._owns_http = http is None
        self._http = http if http is not None else make_http_client(timeout)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float | None = None,
        clock: Callable[[], float] = time.time,
        http: httpx.Client | None = None,
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
            http=http,
        )

    def __repr__(self) -> str:
        return f"CloudinaryMediaStore(cloud_name={self.cloud_name!r}, api_key={self.api_key!r})"

    def close(self) -> None:
        """Close the HTTP client, if this store built it."""
        if self._owns_http:
            self._http.close()

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
            resource_type,
            "upload",
            {
                "public_id": public_id,
                # Dynamic-folder accounts place an asset by asset_folder, not by its id.
                "asset_folder": folder,
                "overwrite": "1",
                "unique_filename": "0",
                "invalidate": "1",
                # No upload_preset: a preset can rename ids.
            },
            file=(f"{leaf}.{extension}", data),
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
                    "DELETE",
                    ["resources", resource_type, "upload"],
                    {"prefix": prefix, "invalidate": True},
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
            self._admin_api("DELETE", ["folders", prefix.rstrip("/")])
        except PermanentError as exc:
            if exc.status != 404:  # no folder: nothing was ever stored, or it is gone
                raise
        return deleted

    # --- beyond the protocol ------------------------------------------------------------

    def probe(self) -> str:
        """The Admin API's ping: proves the cloud, key and secret; costs no upload."""
        answer = self._admin_api("GET", ["ping"])
        if answer.get("status") != "ok":
            raise PermanentError(PROVIDER, "Cloudinary answered the ping without status ok")
        return "ping ok"

    def delete(self, public_id: str, *, kind: MediaKind) -> bool:
        """Delete one file; True if it was there."""
        _check_public_id(public_id)
        answer = self._upload_api(
            RESOURCE_TYPES[kind], "destroy", {"public_id": public_id, "invalidate": "1"}
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
            **self._signing(),
        )
        response = self._send("GET", url, follow_redirects=True)
        if response.status_code == 404:
            raise FileNotFoundError(f"Cloudinary has no {kind} {public_id!r}")
        if response.status_code != 200:
            raise self._failure(response)
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

    def _signing(self) -> dict[str, Any]:
        """What the SDK's URL and signing helpers would otherwise read from its global
        config."""
        return {
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self._api_secret,
            "upload_prefix": self.upload_prefix,  # None: the real API host
            "signature_algorithm": self.signature_algorithm,
            "signature_version": 2,  # a `&` inside a value cannot smuggle in a parameter
        }

    def _api_url(self, path: list[str]) -> str:
        return str(
            cloudinary.utils.base_api_url(
                path, cloud_name=self.cloud_name, upload_prefix=self.upload_prefix
            )
        )

    def _upload_api(
        self,
        resource_type: str,
        action: str,
        params: Mapping[str, str],
        *,
        file: tuple[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """A signed Upload API call: a form POST (multipart when it carries a file)."""
        fields = {k: v for k, v in params.items() if v != ""}
        fields["timestamp"] = cloudinary.utils.now()
        fields["signature"] = cloudinary.utils.api_sign_request(
            fields, self._api_secret, self.signature_algorithm, 2
        )
        fields["api_key"] = self.api_key
        response = self._send(
            "POST",
            self._api_url([resource_type, action]),
            data=fields,
            files={"file": file} if file is not None else None,
        )
        return self._answer(response)

    def _admin_api(
        self, method: str, path: list[str], body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """An Admin API call: Basic auth, a JSON body when there are parameters."""
        response = self._send(
            method,
            self._api_url(path),
            auth=(self.api_key, self._api_secret),
            content=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"} if body is not None else None,
        )
        return self._answer(response)

    def _send(self, method: str, url: str, **request: Any) -> httpx.Response:
        """One request, sent once; a failure to get an answer leaves as a ProviderError."""
        try:
            return self._http.request(method, url, **request)
        except httpx.HTTPError as exc:
            # Raised without its cause: an httpx error carries the request, and a request
            # carries a signed URL or the Basic auth header.
            raise transport_error(exc, secret=self._api_secret) from None
        except httpx.InvalidURL:
            # Its text may quote the URL, signature and all.
            raise PermanentError(
                PROVIDER, "Cloudinary call refused before sending: the upload prefix is not a URL"
            ) from None

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        """The JSON object of a successful answer; any other answer raises."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and "error" not in body:
            return body
        raise self._failure(response)

    def _failure(self, response: httpx.Response) -> ProviderError:
        """What an error answer means: its `{"error": {"message"}}`, status and headers."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
        elif response.status_code < 400:
            return PermanentError(
                PROVIDER,
                f"Cloudinary answered {response.status_code} with a body that is not JSON",
                status=response.status_code,
            )
        else:
            message = response.reason_phrase or "no message"
        return cloudinary_error(
            response.status_code,
            message,
            secret=self._api_secret,
            now=self._clock(),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )


def _check_public_id(public_id: str) -> None:
    if not _PUBLIC_ID.fullmatch(public_id):
        raise ValueError(f"not a public id this store writes: {public_id!r}")


# The real rate-limit text names the reset time: "... Try again on 2026-11-29 14:00:00 UTC".
_TRY_AGAIN_ON = re.compile(r"Try again on (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC")


def transport_error(exc: httpx.HTTPError, *, secret: str) -> ProviderError:
    """A call that got no answer: transient when the network or the server may heal."""
    detail = _scrub(f"{type(exc).__name__}: {exc}".rstrip(": "), secret)
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(PROVIDER, f"Cloudinary did not answer in time ({detail})")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError):
        return TransientError(PROVIDER, f"could not reach Cloudinary ({detail})")
    # An unsupported scheme, an invalid URL: no request could succeed as configured.
    return PermanentError(PROVIDER, f"Cloudinary call refused before sending ({detail})")


def cloudinary_error(
    status: int,
    message: str,
    *,
    secret: str,
    now: float,
    retry_after: float | None = None,
) -> ProviderError:
    """The one place an error answer becomes TransientError or PermanentError.

    message is the answer's `error.message`; retry_after the Retry-After header's seconds.
    A rate limit waits until the reset time its message names (read against `now`), else
    as long as the header says. The secret is scrubbed from the message in case anything
    ever echoes it.
    """
    message = _scrub(message.strip(), secret)[:_MAX_MESSAGE]
    if status in (420, 429):
        named = _retry_after(message, now)
        return TransientError(
            PROVIDER,
            f"Cloudinary rate limit ({status}): {message}",
            status=status,
            retry_after=named if named is not None else retry_after,
        )
    if status == 408 or status >= 500:
        return TransientError(
            PROVIDER,
            f"Cloudinary server error ({status}): {message}",
            status=status,
            retry_after=retry_after,
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


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _retry_after(message: str, now: float) -> float | None:
    """Seconds until the reset time a rate-limit message names, if it names one."""
    match = _TRY_AGAIN_ON.search(message)
    if not match:
        return None
    reset = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return max(0.0, reset.timestamp() - now)

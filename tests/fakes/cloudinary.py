"""A loopback Cloudinary: the Upload API and the Admin API calls storyloom makes
(upload, destroy, delete by prefix, delete folder, ping).

It checks what the real service checks (the upload signature, the API key, a stale
timestamp, Basic auth on the Admin API), keeps assets in memory by (resource type,
public id), bumps `version` on every overwrite and answers with the real field names
and error bodies (`{"error": {"message": ...}}`), so the real SDK runs against it
unchanged. Knobs: everything on FakeState (latency, faults, call log, calls in flight),
plus the account's signature algorithm, a clock skew, and how many assets one
delete-by-prefix call removes before it answers `partial: true`.

python-multipart is not installed, so the multipart body is parsed here, exactly
(split on the boundary): image bytes must reach Pillow unchanged. The Upload API also
takes a urlencoded form (what `curl -d` sends), as the real one does.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import threading
import time
import uuid
import wave
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import ErrorBody, FakeState, Fault, FaultMiddleware, serve

RESOURCE_TYPES = ("image", "video", "raw")
# Cloudinary leaves these out of the string it signs (and the signature itself).
UNSIGNED_PARAMS = frozenset({"file", "cloud_name", "resource_type", "api_key", "signature"})
PIL_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
ERROR_MESSAGES = {
    400: "Invalid request",
    401: "Invalid Signature",
    403: "Not allowed",
    404: "Resource not found",
    409: "Resource already exists",
    500: "General Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Asset:
    """One stored asset and what its last upload said."""

    public_id: str
    resource_type: str
    version: int
    data: bytes
    format: str
    asset_folder: str
    params: dict[str, str]  # the signed form fields of the last upload
    answer: dict[str, Any]


@dataclass
class CloudinaryState(FakeState):
    """FakeState plus the account and what it stores."""

    cloud: str = "demo"
    api_key: str = "123"
    api_secret: str = "s3cret"
    signature_algorithm: str = "sha1"  # an account setting: "sha1" or "sha256"
    max_timestamp_age: float = 3600.0  # older signed requests are "stale", as on the real API
    clock_skew: float = 0.0  # seconds the fake's clock runs ahead of the client's
    delete_page_size: int = 1000  # assets one delete-by-prefix call removes at most
    assets: dict[tuple[str, str], Asset] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)
    _store_lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.time() + self.clock_skew

    def reset(self) -> None:
        super().reset()
        with self._store_lock:
            self.assets.clear()
            self.folders.clear()
        self.signature_algorithm = "sha1"
        self.max_timestamp_age = 3600.0
        self.clock_skew = 0.0
        self.delete_page_size = 1000

    def asset(self, resource_type: str, public_id: str) -> Asset | None:
        with self._store_lock:
            return self.assets.get((resource_type, public_id))

    def public_ids(self, resource_type: str | None = None) -> list[str]:
        """Stored public ids, sorted; of one resource type, or all."""
        with self._store_lock:
            return sorted(
                pid for rt, pid in self.assets if resource_type is None or rt == resource_type
            )


class ApiError(Exception):
    """An answer the real API gives as `{"error": {"message": ...}}` with a status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def signature_for(params: Mapping[str, str], secret: str, algorithm: str = "sha1") -> str:
    """The Upload API signature, computed the way Cloudinary does it.

    Every param but file, cloud_name, resource_type, api_key (and signature), empty ones
    dropped, `k=v` sorted and joined with `&`, the secret appended, hex digest. Signature
    version 2 (the SDK's default) writes a `&` inside a value as `%26`, so a value cannot
    smuggle in another parameter; the server signs the same way.
    """
    pairs = [
        f"{k}={v}".replace("&", "%26")
        for k, v in params.items()
        if k not in UNSIGNED_PARAMS and v != ""
    ]
    to_sign = "&".join(sorted(pairs))
    return hashlib.new(algorithm, (to_sign + secret).encode()).hexdigest()


def rate_limit_message(reset_at: float) -> str:
    """The real rate-limit text; the reset time is the only place it says when to retry."""
    stamp = datetime.fromtimestamp(math.ceil(reset_at), UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"Rate Limit Exceeded. Limit of 500 api operations reached. Try again on {stamp} UTC"


def parse_form(body: bytes, content_type: str) -> tuple[dict[str, str], bytes | None, str]:
    """Form fields, the file's bytes and the file's name, from a multipart or a urlencoded
    body (the second has no file)."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode(), keep_blank_values=True)), None, ""
    return parse_multipart(body, content_type)


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], bytes | None, str]:
    """Form fields, the file's bytes and the file's name, from a multipart/form-data body."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ApiError(400, "Missing multipart boundary")
    fields: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    file_data: bytes | None = None
    filename = ""
    # Each part starts after CRLF--boundary; prefixing CRLF makes the first one uniform.
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode())
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part = Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            header_name, _, value = line.partition(":")
            part[header_name.strip()] = value.strip()
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        if name == "file":
            file_data = content
            part_filename = part.get_filename()
            filename = part_filename or ""
        elif name.endswith("[]"):
            # Lists arrive as repeated `k[]` fields and are signed as `k=a,b`.
            lists.setdefault(name[:-2], []).append(content.decode())
        else:
            fields[name] = content.decode()
    for name, values in lists.items():
        fields[name] = ",".join(values)
    return fields, file_data, filename


class CloudinaryFake:
    """The routes; one instance per fake server, sharing one CloudinaryState."""

    def __init__(self, state: CloudinaryState) -> None:
        self.state = state

    # --- checks the real API makes -------------------------------------------------

    def _check_cloud(self, request: Request) -> None:
        cloud = request.path_params["cloud"]
        if cloud != self.state.cloud:
            raise ApiError(401, f"Invalid cloud_name {cloud}")
        rt = request.path_params.get("rt")
        if rt is not None and rt not in (*RESOURCE_TYPES, "auto"):
            raise ApiError(404, f"Invalid resource type {rt}")

    def _check_signed(self, params: Mapping[str, str]) -> None:
        api_key = params.get("api_key", "")
        if not api_key:
            raise ApiError(401, "Must supply api_key")
        if api_key != self.state.api_key:
            raise ApiError(401, f"Unknown API key {api_key}")
        timestamp = params.get("timestamp", "")
        if not timestamp:
            raise ApiError(400, "Missing required parameter - timestamp")
        try:
            reported = int(timestamp)
        except ValueError as exc:
            raise ApiError(400, f"Invalid timestamp {timestamp}") from exc
        if self.state.now() - reported > self.state.max_timestamp_age:
            when = datetime.fromtimestamp(reported, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")
            raise ApiError(
                400, f"Stale request - reported time is {when} which is more than 1 hour ago"
            )
        expected = signature_for(params, self.state.api_secret, self.state.signature_algorithm)
        given = params.get("signature", "")
        if given != expected:
            pairs = sorted(
                f"{k}={v}" for k, v in params.items() if k not in UNSIGNED_PARAMS and v != ""
            )
            # The real message shows the string it signed (never the secret).
            to_sign = "&".join(pairs)
            raise ApiError(401, f"Invalid Signature {given}. String to sign - '{to_sign}'.")

    def _check_basic_auth(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise ApiError(401, "Must supply api_key")
        try:
            key, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError as exc:
            raise ApiError(401, "Invalid authorization header") from exc
        if key != self.state.api_key:
            raise ApiError(401, f"Unknown API key {key}")
        if secret != self.state.api_secret:
            raise ApiError(401, "api_secret mismatch")

    # --- routes -----------------------------------------------------------------------

    async def ping(self, request: Request) -> JSONResponse:
        """`GET /v1_1/{cloud}/ping` (Admin API, Basic auth): `{"status": "ok"}`."""
        try:
            self._check_cloud(request)
            self._check_basic_auth(request)
            return JSONResponse({"status": "ok"}, headers=self._rate_headers())
        except ApiError as exc:
            return error_response(exc)

    async def upload(self, request: Request) -> JSONResponse:
        try:
            self._check_cloud(request)
            params, data, filename = parse_form(
                await request.body(), request.headers.get("content-type", "")
            )
            self._check_signed(params)
            return JSONResponse(self._store(request.path_params["rt"], params, data, filename))
        except ApiError as exc:
            return error_response(exc)

    async def destroy(self, request: Request) -> JSONResponse:
        try:
            self._check_cloud(request)
            params, _, _ = parse_form(await request.body(), request.headers.get("content-type", ""))
            self._check_signed(params)
            key = (request.path_params["rt"], params.get("public_id", ""))
            with self.state._store_lock:
                gone = self.state.assets.pop(key, None)
            return JSONResponse({"result": "ok" if gone else "not found"})
        except ApiError as exc:
            return error_response(exc)

    async def delete_by_prefix(self, request: Request) -> JSONResponse:
        try:
            self._check_cloud(request)
            self._check_basic_auth(request)
            body = await request.body()
            payload: dict[str, Any] = json.loads(body) if body.strip() else {}
            # Current SDKs send a JSON body; older ones put the prefix in the query.
            prefix = str(payload.get("prefix") or request.query_params.get("prefix") or "")
            if not prefix:
                raise ApiError(400, "Missing required parameter - public_ids")
            rt = request.path_params["rt"]
            with self.state._store_lock:
                # Only the "upload" delivery type exists in this fake.
                uploads = request.path_params["type"] == "upload"
                matching = sorted(
                    pid
                    for (r, pid) in self.state.assets
                    if uploads and r == rt and pid.startswith(prefix)
                )
                batch = matching[: self.state.delete_page_size]
                for pid in batch:
                    del self.state.assets[(rt, pid)]
            return JSONResponse(
                {
                    "deleted": dict.fromkeys(batch, "deleted"),
                    "deleted_counts": {pid: {"original": 1, "derived": 0} for pid in batch},
                    "partial": len(matching) > len(batch),
                },
                headers=self._rate_headers(),
            )
        except ApiError as exc:
            return error_response(exc)

    async def delete_folder(self, request: Request) -> JSONResponse:
        try:
            self._check_cloud(request)
            self._check_basic_auth(request)
            path = request.path_params["path"].strip("/")
            with self.state._store_lock:
                if path not in self.state.folders:
                    raise ApiError(404, f"Can't find folder with path {path}")
                if any(
                    a.asset_folder == path or a.asset_folder.startswith(path + "/")
                    for a in self.state.assets.values()
                ):
                    raise ApiError(400, "Folder is not empty")
                gone = sorted(
                    f for f in self.state.folders if f == path or f.startswith(path + "/")
                )
                self.state.folders.difference_update(gone)
            return JSONResponse({"deleted": gone}, headers=self._rate_headers())
        except ApiError as exc:
            return error_response(exc)

    async def download(self, request: Request) -> Response:
        """`GET /v1_1/{cloud}/{rt}/download` (Upload API, signed query): the stored bytes
        of `public_id` (in `format`, which must be the stored one: the fake converts
        nothing)."""
        try:
            self._check_cloud(request)
            params = dict(request.query_params)
            self._check_signed(params)
            rt = request.path_params["rt"]
            public_id = params.get("public_id", "")
            if not public_id:
                raise ApiError(400, "Missing required parameter - public_id")
            asset = self.state.asset(rt, public_id)
            if asset is None or params.get("type", "upload") != "upload":
                raise ApiError(404, f"Resource not found - {public_id}")
            wanted = params.get("format", "")
            if wanted and asset.format and wanted != asset.format:
                raise ApiError(400, f"The fake cannot convert {asset.format} to {wanted}")
            return Response(asset.data, media_type="application/octet-stream")
        except ApiError as exc:
            return error_response(exc)

    # --- storing ------------------------------------------------------------------------

    def _store(
        self, rt: str, params: dict[str, str], data: bytes | None, filename: str
    ) -> dict[str, Any]:
        if not data:
            raise ApiError(400, "Missing required parameter - file")
        public_id = params.get("public_id") or uuid.uuid4().hex[:20]
        extension = filename.rpartition(".")[2].lower() if "." in filename else ""
        if rt == "auto":
            rt = "image" if _read_image(data) else ("video" if _read_wav(data) else "raw")
        details: dict[str, Any] = {}
        if rt == "image":
            image = _read_image(data)
            if image is None:
                raise ApiError(400, "Invalid image file")
            fmt, width, height = image
            details = {"width": width, "height": height}
        elif rt == "video":
            audio = _read_wav(data)
            if audio is not None:
                fmt = "wav"
                details = audio
            elif extension:
                fmt = extension  # a format the fake does not measure (mp3, mp4 ...)
            else:
                raise ApiError(400, "Invalid video file")
        else:
            fmt = extension
        # Without asset_folder the asset lands where its public id says (fixed folders).
        asset_folder = params.get("asset_folder", public_id.rpartition("/")[0])
        overwrite = params.get("overwrite", "1") not in ("0", "false")

        with self.state._store_lock:
            existing = self.state.assets.get((rt, public_id))
            if existing is not None and not overwrite:
                return {**existing.answer, "existing": True}
            # Real versions are upload timestamps; strictly increasing even within a second.
            version = int(self.state.now())
            if existing is not None:
                version = max(version, existing.version + 1)
            path = f"{rt}/upload/v{version}/{public_id}" + (f".{fmt}" if fmt else "")
            answer: dict[str, Any] = {
                "asset_id": uuid.uuid4().hex,
                "public_id": public_id,
                "version": version,
                "version_id": uuid.uuid4().hex,
                "signature": hashlib.sha256(f"{public_id}{version}".encode()).hexdigest()[:40],
                "format": fmt,
                "resource_type": rt,
                "created_at": datetime.fromtimestamp(version, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "tags": [],
                "bytes": len(data),
                "type": "upload",
                "etag": hashlib.md5(data).hexdigest(),  # noqa: S324  (an etag, not security)
                "placeholder": False,
                "url": f"http://res.cloudinary.com/{self.state.cloud}/{path}",
                "secure_url": f"https://res.cloudinary.com/{self.state.cloud}/{path}",
                "asset_folder": asset_folder,
                "display_name": public_id.rpartition("/")[2],
                "original_filename": filename.rpartition(".")[0] or "file",
                "api_key": self.state.api_key,
                **details,
            }
            if existing is not None:
                answer["overwritten"] = True
            self.state.assets[(rt, public_id)] = Asset(
                public_id, rt, version, data, fmt, asset_folder, dict(params), answer
            )
            # Creating an asset creates its folder and every ancestor, as the real API does.
            parts = asset_folder.split("/") if asset_folder else []
            self.state.folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return answer

    def _rate_headers(self) -> dict[str, str]:
        reset = datetime.fromtimestamp(self.state.now() + 3600, UTC)
        return {
            "X-FeatureRateLimit-Limit": "500",
            "X-FeatureRateLimit-Remaining": "499",
            "X-FeatureRateLimit-Reset": reset.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        }


def _read_image(data: bytes) -> tuple[str, int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = PIL_FORMATS.get(image.format or "", (image.format or "").lower())
            return fmt, image.width, image.height
    except (UnidentifiedImageError, OSError):
        return None


def _read_wav(data: bytes) -> dict[str, Any] | None:
    """What Cloudinary reports for audio uploaded as video: duration measured, audio info."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            frames = wav.getnframes()
    except (wave.Error, EOFError):
        return None
    return {
        "duration": round(frames / rate, 6) if rate else 0.0,
        "is_audio": True,
        "bit_rate": rate * channels * width * 8,
        "audio": {
            "codec": f"pcm_s{width * 8}le",
            "bit_rate": str(rate * channels * width * 8),
            "frequency": rate,
            "channels": channels,
            "channel_layout": "mono" if channels == 1 else "stereo",
        },
    }


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"message": exc.message}}, status_code=exc.status)


def make_error_body(state: CloudinaryState) -> ErrorBody:
    """The body of a scheduled fault: the real shape, and for rate limits the real text."""

    def body(status: int, fault: Fault) -> dict[str, Any]:
        if status in (420, 429):
            now = state.now()
            # The real API resets at the top of the hour unless told otherwise.
            top_of_hour = (now // 3600 + 1) * 3600
            reset = now + fault.retry_after if fault.retry_after is not None else top_of_hour
            return {"error": {"message": rate_limit_message(reset)}}
        return {"error": {"message": ERROR_MESSAGES.get(status, "General Error")}}

    return body


def build_app(state: CloudinaryState) -> FaultMiddleware:
    """The Starlette app for `state`, wrapped in the shared fault and latency knobs."""
    fake = CloudinaryFake(state)
    rt = "{rt:str}"
    app = Starlette(
        routes=[
            Route(
                f"/v1_1/{{cloud}}/resources/{rt}/{{type}}",
                fake.delete_by_prefix,
                methods=["DELETE"],
            ),
            Route("/v1_1/{cloud}/folders/{path:path}", fake.delete_folder, methods=["DELETE"]),
            Route("/v1_1/{cloud}/ping", fake.ping, methods=["GET"]),
            Route(f"/v1_1/{{cloud}}/{rt}/upload", fake.upload, methods=["POST"]),
            Route(f"/v1_1/{{cloud}}/{rt}/destroy", fake.destroy, methods=["POST"]),
            Route(f"/v1_1/{{cloud}}/{rt}/download", fake.download, methods=["GET"]),
        ]
    )
    return FaultMiddleware(app, state, make_error_body(state))


@contextmanager
def cloudinary_fake(
    cloud: str = "demo",
    api_key: str = "123",
    api_secret: str = "s3cret",  # noqa: S107  (the fake account's own secret)
) -> Iterator[tuple[str, CloudinaryState]]:
    """Serve a fake Cloudinary account on loopback; yields (base_url, state).

    base_url is what the SDK calls `upload_prefix`: it moves the Upload and Admin APIs.
    """
    state = CloudinaryState(cloud=cloud, api_key=api_key, api_secret=api_secret)
    with serve(build_app(state)) as base_url:
        yield base_url, state

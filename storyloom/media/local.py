"""Media as files under one folder, in the same layout Cloudinary gets."""

from __future__ import annotations

import base64
import glob
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from storyloom.media.base import MediaKind, StoredMedia, story_prefix
from storyloom.providers.errors import PermanentError


class LocalMediaStore:
    """`{root}/stories/{id}/images/page-01.png`; each write replaces the file atomically."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path_for(self, public_id: str, extension: str) -> Path:
        path = (self.root / f"{public_id}.{extension}").resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"public id escapes the media folder: {public_id!r}")
        return path

    def put(
        self, public_id: str, data: bytes, *, kind: MediaKind, extension: str
    ) -> StoredMedia:
        path = self.path_for(public_id, extension)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename over it: a reader sees the old file or the
        # new one, never half of one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        version = hashlib.sha256(data).hexdigest()[:12]
        url = f"{path.as_uri()}?v={version}"
        return StoredMedia(
            public_id=public_id,
            url=url,
            version=version,
            bytes=len(data),
            thumbnail_url=url if kind == "image" else "",
        )

    def probe(self) -> str:
        """Whether files can be written here: creates the folder if missing, then writes and
        removes one empty file."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            os.close(fd)
            Path(tmp).unlink()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise PermanentError(self.name, f"cannot write to {self.root}: {reason}") from None
        return f"folder {self.root} is writable"

    def read(self, public_id: str, *, kind: MediaKind, extension: str) -> bytes:
        return self.path_for(public_id, extension).read_bytes()

    def delete(self, public_id: str, *, kind: MediaKind) -> bool:
        # The extension is not part of the public id: any file of that name goes.
        path = self.path_for(public_id, "x")
        found = [p for p in path.parent.glob(f"{glob.escape(path.stem)}.*") if p.is_file()]
        for file in found:
            file.unlink(missing_ok=True)
        return bool(found)

    def delete_story(self, story_id: str) -> int:
        folder = self.root / story_prefix(story_id)  # refuses ids that would widen it
        if not folder.is_dir():
            return 0
        count = sum(1 for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder)
        return count


def preview_src(url: str, max_side: int = 360) -> str:
    """What a browser can show for a stored image: a local file becomes a small inline
    JPEG (a Prefect artifact cannot load file:// URLs); any other URL is kept."""
    if not url.startswith("file://"):
        return url
    from PIL import Image

    path = Path(url2pathname(urlparse(url).path))
    try:
        with Image.open(path) as image:
            image.thumbnail((max_side, max_side))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=80)
    except OSError:
        return url
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

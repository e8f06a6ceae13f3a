"""LocalMediaStore: the folder layout Cloudinary also gets, atomic replacement, versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from storyloom.media.base import MediaStore
from storyloom.media.local import LocalMediaStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
def store(root: Path) -> LocalMediaStore:
    return LocalMediaStore(root)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_is_a_media_store(store: LocalMediaStore) -> None:
    assert isinstance(store, MediaStore)
    assert store.name == "local"


def test_layout_is_the_cloudinary_layout(store: LocalMediaStore, root: Path) -> None:
    store.put("stories/s1/images/page-03", b"png", kind="image", extension="png")
    store.put("stories/s1/audio/hi-IN/chapter-01", b"wav", kind="audio", extension="wav")

    assert files_under(root) == [
        "stories/s1/audio/hi-IN/chapter-01.wav",
        "stories/s1/images/page-03.png",
    ]


def test_put_answers_with_a_versioned_file_url(store: LocalMediaStore, root: Path) -> None:
    image = store.put("stories/s1/images/page-01", b"picture", kind="image", extension="png")
    audio = store.put("stories/s1/audio/ta-IN/chapter-02", b"speech", kind="audio", extension="wav")

    path = root / "stories/s1/images/page-01.png"
    assert image.public_id == "stories/s1/images/page-01"
    assert image.url == f"{path.resolve().as_uri()}?v={image.version}"
    assert image.bytes == len(b"picture")
    assert image.thumbnail_url == image.url
    assert audio.thumbnail_url == ""
    assert audio.url.endswith(f"chapter-02.wav?v={audio.version}")


def test_version_follows_the_content(store: LocalMediaStore) -> None:
    pid = "stories/s1/images/page-01"
    first = store.put(pid, b"one", kind="image", extension="png")
    same = store.put(pid, b"one", kind="image", extension="png")
    changed = store.put(pid, b"two", kind="image", extension="png")

    assert same.version == first.version  # a repeat of the same bytes keeps its URL
    assert changed.version != first.version
    assert changed.url != first.url


def test_a_write_replaces_the_file_instead_of_rewriting_it(
    store: LocalMediaStore, root: Path
) -> None:
    pid = "stories/s1/images/page-01"
    store.put(pid, b"old picture", kind="image", extension="png")
    path = root / "stories/s1/images/page-01.png"

    with path.open("rb") as reader:
        store.put(pid, b"new picture", kind="image", extension="png")
        # A reader that opened the old file still reads it whole: the new one was
        # renamed over it, never written into it.
        assert reader.read() == b"old picture"
    assert path.read_bytes() == b"new picture"
    assert files_under(root) == ["stories/s1/images/page-01.png"]  # no temp file left


def test_a_failed_write_leaves_no_temp_file(store: LocalMediaStore, root: Path) -> None:
    # A folder where the file should go: the final rename fails, as a full disk would.
    (root / "stories/s1/images/page-01.png").mkdir(parents=True)

    with pytest.raises(IsADirectoryError):
        store.put("stories/s1/images/page-01", b"picture", kind="image", extension="png")
    assert files_under(root) == []


@pytest.mark.parametrize("public_id", ["../outside", "stories/../../outside", "/etc/passwd"])
def test_a_public_id_cannot_escape_the_media_folder(
    store: LocalMediaStore, root: Path, public_id: str
) -> None:
    with pytest.raises(ValueError, match="escapes the media folder"):
        store.put(public_id, b"x", kind="image", extension="png")
    assert not (root.parent / "outside.png").exists()


def test_delete_story_removes_only_that_story(store: LocalMediaStore, root: Path) -> None:
    store.put("stories/s1/images/page-01", b"a", kind="image", extension="png")
    store.put("stories/s1/images/page-02", b"b", kind="image", extension="png")
    store.put("stories/s1/audio/hi-IN/chapter-01", b"c", kind="audio", extension="wav")
    store.put("stories/s10/images/page-01", b"d", kind="image", extension="png")

    assert store.delete_story("s1") == 3

    assert not (root / "stories/s1").exists()
    assert files_under(root) == ["stories/s10/images/page-01.png"]


def test_delete_story_of_nothing_is_zero(store: LocalMediaStore) -> None:
    assert store.delete_story("never-stored") == 0


@pytest.mark.parametrize("story_id", ["", ".."])
def test_delete_story_refuses_ids_that_widen_the_delete(
    store: LocalMediaStore, root: Path, story_id: str
) -> None:
    store.put("stories/s1/images/page-01", b"a", kind="image", extension="png")

    with pytest.raises(ValueError, match="not a story id"):
        store.delete_story(story_id)
    assert files_under(root) == ["stories/s1/images/page-01.png"]


def test_delete_one_file_leaves_its_neighbours(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path / "media")
    store.put("stories/s1/images/page-01-aa", b"a", kind="image", extension="png")
    store.put("stories/s1/images/page-01-bb", b"b", kind="image", extension="png")
    assert store.delete("stories/s1/images/page-01-aa", kind="image") is True
    assert store.delete("stories/s1/images/page-01-aa", kind="image") is False
    left = sorted(p.name for p in (tmp_path / "media/stories/s1/images").iterdir())
    assert left == ["page-01-bb.png"]

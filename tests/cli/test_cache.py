"""`storyloom cache usage|prune` and the doctor's result storage row, on a result storage
of this test's own, written through Prefect's ResultStore as tasks write it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
from typer.testing import CliRunner

from storyloom import services
from storyloom.cli import app
from storyloom.media.base import content_tag, image_public_id
from storyloom.models import GenerationConfig, LifeStory, Usage
from storyloom.prompts import PROMPT_VERSION
from storyloom.providers.base import Picture, Speech, Written
from tasks.illustrations import KeptPicture
from tasks.media import store_media

runner = CliRunner()
USAGE = "offline"
PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 5_000
SHOWN = b"\x89PNG\r\n\x1a\n" + b"s" * 300


@pytest.fixture
def results(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "results"
    with temporary_settings(updates={PREFECT_RESULTS_LOCAL_STORAGE_PATH: folder}):
        yield folder


def write(folder: Path, key: str, result: Any, expires_in: timedelta | None = None) -> None:
    expiration: Any = datetime.now(UTC) + expires_in if expires_in is not None else None
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(folder)))
    store.write(result, key=key, expiration=expiration)


def kept_picture(data: bytes) -> KeptPicture:
    return KeptPicture(content_tag(data), "image/png", 4, 3, Usage(provider=USAGE))


def a_book_showing(picture: bytes) -> None:
    """A story whose running generation uses one stored picture (the media table)."""
    tale = LifeStory(
        id="kept-tale", kind="life", title="Kept", language="en-IN",
        stages={"childhood": ["We lived by the river."]},
    )  # fmt: skip
    store = services.store()
    store.add_story(tale)
    generation = store.start_generation(
        tale.id, GenerationConfig(pages=1), prompt_version=PROMPT_VERSION
    )
    public_id = image_public_id(tale.id, 1, picture)
    store_media.fn(generation, public_id, picture, "image", "png", "local")


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else result.stdout


def test_prune_removes_what_no_kept_generation_needs_and_says_how_much(results: Path) -> None:
    usage = Usage(provider=USAGE)
    a_book_showing(SHOWN)
    write(results, "expired-picture", Picture(PNG, "image/png", 4, 3, usage), timedelta(hours=-1))
    write(results, "fresh-speech", Speech(b"RIFF" + b"w" * 4_000, usage), timedelta(days=2))
    write(results, "kept-shown", kept_picture(SHOWN))  # its file is the book's
    write(results, "kept-gone", kept_picture(PNG))  # no generation uses its file
    write(results, "text", Written("Once upon a time.", usage))
    before = {p.name: p.stat().st_size for p in results.iterdir()}

    dry = invoke("cache", "prune", "--dry-run", "--json")
    assert dry["dry_run"] is True
    assert {r["key"]: r["kind"] for r in dry["removed"]} == {
        "expired-picture": "payload",
        "kept-gone": "kept",
    }
    assert dry["bytes_freed"] == before["expired-picture"] + before["kept-gone"]
    assert {p.name for p in results.iterdir()} == set(before)  # a dry run removes nothing

    said = invoke("cache", "prune")
    assert "removed expired-picture" in said
    assert "removed kept-gone" in said
    assert f"removed 2 files ({(dry['bytes_freed'] / 1000):.1f} kB)" in said
    assert {p.name for p in results.iterdir()} == {"fresh-speech", "kept-shown", "text"}

    usage_now = invoke("cache", "usage", "--json")
    assert usage_now["files"] == 3
    assert usage_now["bytes"] == sum(before[n] for n in ("fresh-speech", "kept-shown", "text"))
    assert {k: v["files"] for k, v in usage_now["kinds"].items()} == {
        "payload": 1,
        "kept": 1,
        "paid": 1,
    }
    assert invoke("cache", "prune", "--json")["removed"] == []


def test_doctor_reports_the_result_storage(results: Path) -> None:
    write(results, "text", Written("Once upon a time.", Usage(provider=USAGE)))
    size = (results / "text").stat().st_size
    report = invoke("doctor", "--json")
    row = next(check for check in report["checks"] if check["role"] == "results")
    assert row["ok"] is True
    assert row["detail"].startswith(f"{results}: 1 file, {size} B")

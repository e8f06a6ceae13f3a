"""`storyloom demo`, as `make demo` runs it: a fresh Prefect, the whole book, no leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def processes_with(marker: str) -> list[int]:
    """Processes whose environment mentions marker (the demo's own Prefect home)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find leftovers")
def test_demo_runs_end_to_end_and_leaves_no_process(tmp_path: Path) -> None:
    prefect_home = tmp_path / "prefect-home"
    env = {
        **os.environ,
        "STORYLOOM_HOME": str(tmp_path / "var"),
        "PREFECT_HOME": str(prefect_home),
        "COLUMNS": "200",
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("STORYLOOM_EXPORTS", None)  # the demo makes the book's files, as a user's does
    storyloom = Path(sys.executable).parent / "storyloom"

    done = subprocess.run(
        [str(storyloom), "demo"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 pages" in done.stdout
    assert "make ui" in done.stdout
    media = tmp_path / "var" / "media" / "stories" / "asha-verma"
    assert len(list((media / "images").glob("page-*.png"))) == 8
    for language in ("en-IN", "hi-IN"):
        assert list((media / "audio" / language).glob("chapter-*.mp3"))
    # The book as files, and the demo says where they are.
    books = media / "books"
    [reader] = books.glob("reader-*.html")
    assert f"reader: {reader}" in done.stdout
    assert len(list(books.glob("book-*-IN-*.epub"))) == 2
    [pdf] = books.glob("book-*.pdf")
    assert f"PDF: {pdf}" in done.stdout
    assert "file:" not in reader.read_text()  # self-contained: it opens from anywhere
    # Prefect's database stayed inside the demo's home, not the user's.
    assert (prefect_home / "prefect.db").exists()
    assert processes_with(str(prefect_home)) == []

"""The installed `storyloom` command with its output in a pipe: every printed path, URL
and id stays whole on one line (tables too), whatever COLUMNS says, and each `--json`
prints JSON a script can read.

The home's path is long (over 150 characters) so that every path and URL printed is
longer than any terminal. One home for the module: a generation costs about half a
minute of Prefect's overhead, so the book is made twice (once per output mode) and every
other command reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

STORYLOOM = Path(sys.executable).parent / "storyloom"
# 60 characters: an id as long as a story id gets (64) folds in a table of 40 columns.
STORY_ID = "a-kite-that-wanted-to-see-the-sea-and-followed-the-river-there"
TITLE = "The Kite That Wanted to See the Sea, and the River That Showed It the Way"
STORY = {
    "id": STORY_ID,
    "kind": "creative",
    "title": TITLE,
    "language": "en-IN",
    "premise": "A kite that wanted to see the sea.",
    "content": "The kite flew over the fields. It saw the river. It followed the river to the sea.",
}
# Rich reads "[draft]" as a style tag: a path holding one must still print as it is.
OUTPUT_FOLDER = "the book [draft]"
COLUMNS = [None, "40"]


@dataclass
class Home:
    """The module's storyloom home and what making its book printed."""

    root: Path
    env: dict[str, str]
    text_run: subprocess.CompletedProcess[str]  # `generate`, COLUMNS=40
    json_run: dict[str, Any]  # `generate --json`, COLUMNS unset

    def run(self, *args: str, columns: str | None = None) -> subprocess.CompletedProcess[str]:
        """The installed command, its stdout and stderr pipes."""
        env = dict(self.env)
        if columns is not None:
            env["COLUMNS"] = columns
        return subprocess.run(
            [str(STORYLOOM), *args],
            env=env,
            capture_output=True,  # stdout and stderr are pipes
            text=True,
            timeout=300,
            check=False,
        )

    def ok(self, *args: str, columns: str | None = None) -> str:
        done = self.run(*args, columns=columns)
        assert done.returncode == 0, f"storyloom {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


def _pipe_env(root: Path) -> dict[str, str]:
    """The environment of a script's pipe: no keys, no terminal hints, no COLUMNS, no
    Prefect server (the embedded one, its home beside the story home)."""
    dropped = ("STORYLOOM_", "GEMINI_", "GOOGLE_", "SARVAM_", "CLOUDINARY_")
    hints = {"COLUMNS", "LINES", "FORCE_COLOR", "FORCE_TERMINAL", "TTY_COMPATIBLE",
             "TTY_INTERACTIVE", "PREFECT_API_URL", "PREFECT_HOME"}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k not in hints}
    env.update(
        STORYLOOM_HOME=str(root),
        STORYLOOM_RETRY_WAIT_SCALE="0",
        STORYLOOM_EXPORTS='["html"]',  # one book file is enough to print its path
        PREFECT_HOME=str(root.parent / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    base = tmp_path_factory.mktemp("pipe")
    root = base / ("a-storyloom-home-whose-path-is-longer-than-any-terminal-" * 3).rstrip("-")
    assert len(str(root)) > 150
    root.mkdir()
    story = root / "story.json"
    story.write_text(json.dumps(STORY))
    env = _pipe_env(root)
    first = Home(root, env, subprocess.CompletedProcess([], 0), {})
    first.ok("db", "upgrade")
    first.ok("stories", "add", str(story))
    making = ("generate", STORY_ID, "--pages", "1", "--words-per-page", "60",
              "--image-count", "1", "--languages", "en-IN")  # fmt: skip
    text_run = first.run(*making, columns="40")
    assert text_run.returncode == 0, text_run.stderr
    json_run = first.json(*making)
    return Home(root, env, text_run, json_run)


def whole(output: str, *texts: str) -> None:
    """Each text appears unbroken within one line of output."""
    lines = output.splitlines()
    for text in texts:
        assert any(text in line for line in lines), f"not whole on one line: {text}\n{output}"


def urls_of(view: dict[str, Any]) -> list[str]:
    """The banner, picture and chapter URLs and book file paths of a `generate --json`."""
    outputs = view["outputs"]
    return [
        outputs["banner_url"],
        *(item["url"] for item in outputs["illustrations"]),
        *(c["url"] for chapters in outputs["chapters"].values() for c in chapters),
        *(e["path"] for e in outputs["exports"]),
    ]


# --- generate ----------------------------------------------------------------------------


def test_generate_prints_its_paths_whole(home: Home) -> None:
    out = home.text_run.stdout
    media = home.root / "media" / "stories" / STORY_ID
    whole(out, f"database: sqlite:///{home.root}/storyloom.db", f"media:    {media}")
    # The book the JSON run made is the same (the same inputs, the same files).
    whole(out, f"banner:   {home.json_run['outputs']['banner_url']}")
    [reader] = [e["path"] for e in home.json_run["outputs"]["exports"]]
    whole(out, f"reader: {reader}")


def test_generate_json_holds_the_generation_and_its_outputs(home: Home) -> None:
    view = home.json_run
    assert view["story"] == STORY_ID
    assert view["state"] == "complete"
    assert len(view["generation_id"]) == 36
    outputs = view["outputs"]
    assert [(i["position"], i["page"]) for i in outputs["illustrations"]] == [(1, 1)]
    assert outputs["banner_url"] == outputs["illustrations"][0]["url"]
    [chapter] = outputs["chapters"]["en-IN"]
    assert chapter["url"].startswith(f"file://{home.root}/media/stories/{STORY_ID}/audio/")
    assert chapter["seconds"] > 0
    [reader] = outputs["exports"]
    assert reader["format"] == "html"
    assert Path(reader["path"]).is_file()
    assert outputs["narration_failures"] == {}


# --- stories ----------------------------------------------------------------------------


@pytest.mark.parametrize("columns", COLUMNS)
def test_stories_list_keeps_each_row_on_one_line(home: Home, columns: str | None) -> None:
    out = home.ok("stories", "list", columns=columns)
    whole(out, STORY_ID, TITLE)
    [row] = [line for line in out.splitlines() if STORY_ID in line]
    assert TITLE in row
    assert "complete" in row


def test_stories_list_json(home: Home) -> None:
    [story] = home.json("stories", "list")
    assert story["id"] == STORY_ID
    assert story["title"] == TITLE
    assert story["status"] == "complete"
    assert story["pages"] == 1


def test_stories_add_json(home: Home) -> None:
    other = home.root / "another.json"
    other.write_text(json.dumps({**STORY, "id": "another-kite", "title": "Another Kite"}))
    saved = home.json("stories", "add", str(other))
    assert saved == {
        "id": "another-kite",
        "kind": "creative",
        "title": "Another Kite",
        "language": "en-IN",
    }
    assert home.ok("stories", "delete", "another-kite", "--yes")


@pytest.mark.parametrize("columns", COLUMNS)
def test_stories_show_prints_every_url_whole(home: Home, columns: str | None) -> None:
    out = home.ok("stories", "show", STORY_ID, columns=columns)
    whole(out, *urls_of(home.json_run))


def test_an_unreadable_story_file_is_named_whole(home: Home) -> None:
    missing = home.root / "no-such-story.json"
    refused = home.run("stories", "add", str(missing), columns="40")
    assert refused.returncode == 2
    whole(refused.stderr, str(missing))


# --- export -----------------------------------------------------------------------------


@pytest.mark.parametrize("columns", COLUMNS)
def test_export_prints_each_file_whole(home: Home, columns: str | None) -> None:
    folder = home.root / OUTPUT_FOLDER
    out = home.ok("export", STORY_ID, "--output", str(folder), "--format", "html", columns=columns)
    path = folder / f"{STORY_ID}.html"
    assert out.splitlines() == [f"html: {path}"]
    assert path.is_file()


def test_export_json_names_the_files_written(home: Home) -> None:
    folder = home.root / OUTPUT_FOLDER
    written = home.json("export", STORY_ID, "--output", str(folder), "-f", "html", "-f", "pdf")
    assert written["story"] == STORY_ID
    assert [(f["format"], f["language"]) for f in written["files"]] == [
        ("html", None),
        ("pdf", None),
    ]
    for file in written["files"]:
        assert Path(file["path"]).is_file()
        assert Path(file["path"]).stat().st_size == file["bytes"]
        assert Path(file["path"]).parent == folder


# --- doctor, db ---------------------------------------------------------------------------


@pytest.mark.parametrize("columns", COLUMNS)
def test_doctor_table_keeps_paths_whole(home: Home, columns: str | None) -> None:
    out = home.ok("doctor", columns=columns)
    whole(out, f"folder {home.root / 'media'} is writable", f"sqlite:///{home.root}/storyloom.db")
    assert not any("…" in line for line in out.splitlines())


def test_doctor_json(home: Home) -> None:
    report = home.json("doctor")
    assert report["ok"] is True
    roles = {check["role"] for check in report["checks"]}
    assert roles >= {"text", "image", "speech", "translation", "media", "database"}
    assert all(set(c) == {"role", "provider", "real", "ok", "detail"} for c in report["checks"])


@pytest.mark.parametrize("columns", COLUMNS)
def test_db_status_prints_the_database_whole(home: Home, columns: str | None) -> None:
    out = home.ok("db", "status", columns=columns)
    whole(out, f"database: sqlite:///{home.root}/storyloom.db")


# --- tenants ------------------------------------------------------------------------------


def test_tenants_add_json_shows_the_key_once_and_list_reads_it(home: Home) -> None:
    added = home.run("tenants", "add", "pipe-tenant", "--name", "Pipe [test] Books", "--json")
    assert added.returncode == 0, added.stderr
    tenant = json.loads(added.stdout)
    assert tenant["id"] == "pipe-tenant"
    assert tenant["name"] == "Pipe [test] Books"
    key = tenant["key"]
    assert key.startswith("sl_")
    assert added.stdout.count(key) == 1
    assert key not in added.stderr

    listed = home.ok("tenants", "list", columns="40")
    assert "pipe-tenant\tPipe [test] Books" in listed.splitlines()
    assert {"id": "pipe-tenant", "name": "Pipe [test] Books"} in home.json("tenants", "list")


# --- setup --------------------------------------------------------------------------------


def test_setup_json_says_what_it_would_change(home: Home) -> None:
    report = home.json("setup", "--dry-run")
    assert report["dry_run"] is True
    assert report["ok"] is True
    names = {(item["kind"], item["name"]) for item in report["items"]}
    assert ("work pool", "story") in names
    assert ("deployment", "story/generate") in {(i["kind"], i["name"]) for i in report["changed"]}
    assert all(item["outcome"] in ("created", "updated") for item in report["changed"])

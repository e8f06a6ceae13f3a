"""One home for every command, from any folder: the settings never read the current
directory (no `.env` there, no relative default), so a command run elsewhere finds the
same stories and the same cache rather than an empty database that pays again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storyloom.settings import Settings, get_settings, read_settings

BIN = Path(sys.executable).parent
SAMPLE = Path(__file__).parents[2] / "storyloom" / "samples" / "life-story.json"


def _storyloom(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "storyloom"), *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_cli_run_from_another_folder_finds_the_same_story(tmp_path: Path) -> None:
    # No STORYLOOM_HOME: the documented per-user default, under XDG_DATA_HOME.
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    env.update(XDG_DATA_HOME=str(data), XDG_CONFIG_HOME=str(tmp_path / "config"))
    here, there = tmp_path / "here", tmp_path / "elsewhere" / "deeper"
    here.mkdir()
    there.mkdir(parents=True)
    # A .env in the folder must not move the home (it used to be read from there).
    (there / ".env").write_text(f"STORYLOOM_HOME={tmp_path / 'decoy'}\n")

    for args in (["db", "upgrade"], ["stories", "add", str(SAMPLE)]):
        done = _storyloom(*args, cwd=here, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    listed = _storyloom("stories", "list", "--json", cwd=there, env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert [story["id"] for story in json.loads(listed.stdout)] == ["asha-verma"]
    assert (data / "storyloom" / "storyloom.db").is_file()
    assert not (tmp_path / "decoy").exists()
    assert not (here / "var").exists()
    assert not (there / "var").exists()


def test_a_relative_home_is_made_absolute_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STORYLOOM_HOME", "books")
    settings = Settings()
    assert settings.home == tmp_path / "books"
    assert settings.media_dir == tmp_path / "books" / "media"
    assert settings.database_url == f"sqlite:///{tmp_path / 'books' / 'storyloom.db'}"
    # Another folder later: the settings already read keep the first answer.
    monkeypatch.chdir(tmp_path.parent)
    assert settings.home == tmp_path / "books"


def test_settings_come_from_the_named_env_file_and_variables_win(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "storyloom.env"
    env_file.write_text(
        f"STORYLOOM_HOME={tmp_path / 'from-file'}\nSTORYLOOM_STORY_POOL_LIMIT=5\n"
        "STORYLOOM_WORKER_GRACE_SECONDS=42\n"
    )
    monkeypatch.delenv("STORYLOOM_HOME")  # the test's own, set by clean_env
    monkeypatch.setenv("STORYLOOM_ENV_FILE", str(env_file))
    monkeypatch.setenv("STORYLOOM_STORY_POOL_LIMIT", "3")
    settings = read_settings()
    assert settings.home == tmp_path / "from-file"
    assert settings.story_pool_limit == 3  # the variable wins over the file
    assert settings.worker_grace_seconds == 42  # a worker's knob in the same class
    get_settings.cache_clear()
    assert get_settings().home == tmp_path / "from-file"


def test_the_per_user_env_file_is_read_without_being_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    (config / "storyloom").mkdir(parents=True)
    (config / "storyloom" / "env").write_text("STORYLOOM_AUDIO_POOL_LIMIT=7\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    assert read_settings().audio_pool_limit == 7

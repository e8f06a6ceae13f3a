"""`storyloom stories ...` and `generate` refusals: bad input is refused, nothing is saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from storyloom import services
from storyloom.cli import app

runner = CliRunner()
SAMPLES = Path(__file__).parents[2] / "storyloom" / "samples"


def life(**changes: Any) -> dict[str, Any]:
    story = json.loads((SAMPLES / "life-story.json").read_text())
    story.update(changes)
    return story


def add(tmp_path: Path, content: str | dict[str, Any]) -> Any:
    path = tmp_path / "story.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return runner.invoke(app, ["stories", "add", str(path)])


def database_rows() -> list[tuple[str, str]]:
    return [(s.id, s.title) for s in services.store().list_stories()]


def test_add_list_and_show(tmp_path: Path) -> None:
    result = add(tmp_path, life())
    assert result.exit_code == 0, result.output
    assert "asha-verma" in result.output

    listed = runner.invoke(app, ["stories", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    assert "The Mango Tree" in listed.output

    shown = runner.invoke(app, ["stories", "show", "asha-verma"])
    assert shown.exit_code == 0
    assert "No book yet" in shown.output

    as_json = runner.invoke(app, ["stories", "show", "asha-verma", "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["story"]["stages"]["childhood"][0].startswith("I was born")


def test_adding_twice_needs_replace(tmp_path: Path) -> None:
    assert add(tmp_path, life()).exit_code == 0
    again = add(tmp_path, life(title="Another title"))
    assert again.exit_code == 1
    assert "--replace" in again.output
    assert database_rows() == [("asha-verma", "The Mango Tree at Number Nine")]

    path = tmp_path / "story.json"
    replaced = runner.invoke(app, ["stories", "add", str(path), "--replace"])
    assert replaced.exit_code == 0
    assert database_rows() == [("asha-verma", "Another title")]


def _without_stages(story: dict[str, Any], *names: str) -> dict[str, Any]:
    story["stages"] = {k: v for k, v in story["stages"].items() if k not in names}
    return story


EMPTY_STAGES = dict.fromkeys(
    ["origins", "childhood", "youth", "coming_of_age", "love_and_family",
     "work_and_purpose", "legacy"], "",
)  # fmt: skip


@pytest.mark.parametrize(
    ("content", "field"),
    [
        pytest.param(
            life(stages={**life()["stages"], "adulthood": "x"}), "stages.adulthood",
            id="unknown-stage",
        ),
        pytest.param(life(stages=EMPTY_STAGES), "stages", id="empty-story"),
        pytest.param(life(stages={}), "stages", id="no-stages"),
        pytest.param(life(id="Asha Verma"), "id", id="bad-id-spaces"),
        pytest.param(life(id="../../etc"), "id", id="bad-id-path"),
        pytest.param(life(id="a" * 65), "id", id="bad-id-long"),
        pytest.param(life(id=""), "id", id="bad-id-empty"),
        pytest.param(life(language="hi"), "language", id="bad-language"),
        pytest.param(life(language="fr-FR"), "language", id="foreign-language"),
        pytest.param(life(nickname="Ashu"), "nickname", id="unknown-field"),
        pytest.param(life(title="  "), "title", id="blank-title"),
        pytest.param(life(kind="poem"), "kind", id="bad-kind"),
        pytest.param(
            {"id": "x", "kind": "creative", "title": "T", "language": "hi-IN", "premise": ""},
            "premise", id="empty-premise",
        ),
        pytest.param('{"id": "x", "kind": "life",', "file", id="invalid-json"),
        pytest.param("[1, 2]", "story", id="not-an-object"),
    ],
)  # fmt: skip
def test_bad_stories_are_refused_and_nothing_is_saved(
    tmp_path: Path, content: str | dict[str, Any], field: str
) -> None:
    assert add(tmp_path, life(id="already-here")).exit_code == 0
    before = database_rows()

    result = add(tmp_path, content)

    assert result.exit_code == 2, result.output
    assert f"{field}:" in result.output
    assert "nothing was saved" in result.output
    assert database_rows() == before


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stories", "add", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_show_unknown_story() -> None:
    result = runner.invoke(app, ["stories", "show", "nobody"])
    assert result.exit_code == 1
    assert "no story with id 'nobody'" in result.output


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--pages", "0"], "pages"),
        (["--pages", "201"], "pages"),
        (["--words-per-page", "5"], "words_per_page"),
        (["--pages", "4", "--image-count", "5"], "image_count"),
        (["--languages", "hi-IN,xx-YY"], "narration_languages"),
        (["--languages", "hi-IN,hi-IN"], "narration_languages"),
    ],
)
def test_bad_generation_config_is_refused_before_any_work(
    tmp_path: Path, args: list[str], field: str
) -> None:
    assert add(tmp_path, life()).exit_code == 0
    result = runner.invoke(app, ["generate", "asha-verma", *args])
    assert result.exit_code == 2, result.output
    assert field in result.output
    assert services.store().latest_generation("asha-verma") is None


def test_generate_an_unknown_story_is_refused() -> None:
    result = runner.invoke(app, ["generate", "nobody"])
    assert result.exit_code == 1
    assert "no story with id 'nobody'" in result.output


def test_doctor_offline_says_every_role_answers() -> None:
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for role in ("text", "image", "speech", "translation", "media", "database"):
        assert role in result.output
    assert "offline-espeak" in result.output
    assert "FAIL" not in result.output


def test_doctor_fails_when_a_forced_provider_has_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORYLOOM_SPEECH_PROVIDER", "real")
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "SARVAM_API_KEY" in result.output

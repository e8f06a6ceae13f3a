"""Reading prefect.yaml and the ops settings: no server needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from deployments.config import api_limit_sizes, mask_url, pool_limits, reprocess_schedule
from deployments.project import (
    SET_WORKING_DIRECTORY,
    ProjectFileError,
    pull_steps,
    read_project,
)
from storyloom.settings import Settings

ROOT = Path(__file__).parents[2]


def _write(root: Path, text: str) -> Path:
    (root / "prefect.yaml").write_text(text)
    return root


def test_the_checkouts_prefect_yaml_is_accepted() -> None:
    project = read_project(ROOT)
    names = {(d.entrypoint, d.work_pool.name) for d in project.deployments}
    assert ("flows/story.py:story", "story") in names
    assert ("flows/reprocess.py:reprocess", "maintenance") in names
    for entry in project.deployments:
        assert pull_steps(project, entry, ROOT) == [
            {SET_WORKING_DIRECTORY: {"directory": str(ROOT)}}
        ]


def test_pull_steps_follow_prefects_precedence(tmp_path: Path) -> None:
    project = read_project(
        _write(
            tmp_path,
            "pull:\n"
            "  - prefect.deployments.steps.set_working_directory:\n"
            "      directory: /srv/storyloom\n"
            "deployments:\n"
            "  - {name: a, entrypoint: flows/a.py:a, work_pool: {name: story}}\n"
            "  - {name: b, entrypoint: flows/b.py:b, work_pool: {name: story}, pull: []}\n",
        )
    )
    first, second = project.deployments
    assert pull_steps(project, first, tmp_path) == [
        {SET_WORKING_DIRECTORY: {"directory": "/srv/storyloom"}}
    ]
    assert pull_steps(project, second, tmp_path) == []


@pytest.mark.parametrize(
    "text",
    [
        # a key setup would silently ignore
        "deployments:\n  - {name: a, entrypoint: f.py:a, work_pool: {name: story}, schedule: x}\n",
        # a build step setup does not run
        "build:\n  - prefect_docker.deployments.steps.build_docker_image: {}\n",
        # a template setup does not resolve
        "deployments:\n  - {name: a, entrypoint: f.py:a, work_pool: {name: '{{ $POOL }}'}}\n",
    ],
)
def test_what_setup_cannot_honour_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ProjectFileError):
        read_project(_write(tmp_path, text))


def test_settings_defaults_match_the_design() -> None:
    settings = Settings()
    assert pool_limits(settings) == {"story": 2, "images": 1, "audio": 2, "maintenance": 1}
    assert api_limit_sizes(settings)["api:sarvam"] == (4, 0.0)  # 4 in flight
    assert api_limit_sizes(settings)["rate:sarvam"] == (4, 0.5)  # 30 calls a minute
    assert set(api_limit_sizes(settings)) == {
        f"{kind}:{api}"
        for kind in ("api", "rate")
        for api in ("gemini-text", "gemini-image", "sarvam", "cloudinary")
    }
    assert (settings.reprocess_cron, settings.reprocess_timezone) == ("0 2 * * *", "Asia/Kolkata")
    assert settings.alert_webhook_url is None
    # Heartbeats at Prefect's minimum; Crashed after three silent beats; three reruns.
    assert (settings.heartbeat_seconds, settings.crashed_after_seconds) == (30, 90)
    assert settings.crash_reruns == 3


def test_settings_come_from_storyloom_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORYLOOM_AUDIO_POOL_LIMIT", "4")
    monkeypatch.setenv("STORYLOOM_GEMINI_IMAGE_PER_SECOND", "0.1")
    monkeypatch.setenv("STORYLOOM_GEMINI_IMAGE_IN_FLIGHT", "3")
    settings = Settings()
    assert pool_limits(settings)["audio"] == 4
    assert api_limit_sizes(settings)["rate:gemini-image"] == (3, 0.1)
    assert api_limit_sizes(settings)["api:gemini-image"] == (3, 0.0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STORYLOOM_REPROCESS_CRON", "every night"),
        ("STORYLOOM_REPROCESS_TIMEZONE", "India/Elsewhere"),
        ("STORYLOOM_IMAGES_POOL_LIMIT", "0"),
        ("STORYLOOM_SARVAM_IN_FLIGHT", "0"),
        ("STORYLOOM_CLOUDINARY_PER_SECOND", "0"),
        ("STORYLOOM_ALERT_NOTIFICATION_BLOCK", "just-a-name"),
        ("STORYLOOM_HEARTBEAT_SECONDS", "10"),  # Prefect's minimum is 30
        ("STORYLOOM_CRASHED_AFTER_SECONDS", "45"),  # under two heartbeats
        ("STORYLOOM_CRASH_RERUNS", "-1"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        Settings()


def test_a_cron_prefect_refuses_fails_when_setup_plans() -> None:
    # Five fields, so the settings take it; Prefect's schedule, built before setup
    # writes anything, refuses it with the setting's name.
    settings = Settings(reprocess_cron="0 25 * * *")
    with pytest.raises(ValueError, match="STORYLOOM_REPROCESS_CRON"):
        reprocess_schedule(settings)


def test_a_bad_webhook_url_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORYLOOM_ALERT_WEBHOOK_URL", "hooks.example.com/secret-token")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "secret-token" not in str(caught.value)


def test_a_masked_url_keeps_only_scheme_and_host() -> None:
    assert (
        mask_url("https://user:pw@hooks.example.com/T0/B1/secret") == "https://hooks.example.com/…"
    )
    assert mask_url("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/…"

"""`storyloom setup` against a real Prefect server: what it creates, and that it converges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import pytest
from prefect import flow
from prefect.blocks.notifications import SlackWebhook
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate, WorkPoolUpdate
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.events.actions import (
    CallWebhook,
    ChangeFlowRunState,
    RunDeployment,
    SendNotification,
)
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import get_current_settings
from pydantic import SecretStr

from deployments.config import (
    AUTOMATION_NAME,
    CLOSE_AUTOMATION,
    RERUN_AUTOMATION,
    SILENT_RUN_AUTOMATION,
)
from deployments.project import SET_WORKING_DIRECTORY
from deployments.report import Outcome, SetupReport
from deployments.setup import run_setup

# Prefect's own name: the test spells it out rather than import ours.
SIGTERM_ENV = "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"

pytestmark = pytest.mark.flows

ROOT = Path(__file__).parents[2]
# Nothing listens on the discard port: the automation's calls fail, harmlessly.
WEBHOOK = "http://127.0.0.1:9/hook"
POOLS = {"story": 2, "images": 1, "audio": 2, "maintenance": 1}
# Per API: calls in flight (no decay), and a rate (slot decay) as deep as the in-flight cap.
API_LIMITS = {
    "api:gemini-text": (8, 0.0),
    "rate:gemini-text": (8, 1.0),
    "api:gemini-image": (2, 0.0),
    "rate:gemini-image": (2, 0.2),
    "api:sarvam": (4, 0.0),
    "rate:sarvam": (4, 0.5),
    "api:cloudinary": (8, 0.0),
    "rate:cloudinary": (8, 10.0),
}
DEPLOYMENTS = {
    "story/generate": "story",
    "illustrations/generate": "images",
    "narration/generate": "audio",
    # It waits on the story runs it submits: on `story` it would hold a slot they need.
    "reprocess/nightly": "maintenance",
    # A few seconds of closing a crashed run's generation, where story workers run.
    "generation/close": "story",
}
GENERATION_RUNS = ("story/generate", "illustrations/generate", "narration/generate")
STORY_PARAMETERS = {
    "story_id",
    "pages",
    "words_per_page",
    "tone",
    "audience",
    "improve_grammar",
    "images",
    "image_style",
    "image_count",
    "narration_languages",
}


@pytest.fixture(scope="module")
def first_report(tmp_path_factory: pytest.TempPathFactory) -> SetupReport:
    """The first setup on this folder's fresh server, with a webhook configured."""
    # Module-scoped, so it runs before the autouse clean_env: clean the same way here.
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("STORYLOOM_"):
                env.delenv(name)
        env.setenv("STORYLOOM_ALERT_WEBHOOK_URL", WEBHOOK)
        env.chdir(tmp_path_factory.mktemp("setup"))
        return run_setup()


@pytest.fixture
def client() -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as sync_client:
        yield sync_client


@pytest.fixture
def webhook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORYLOOM_ALERT_WEBHOOK_URL", WEBHOOK)


def test_first_run_creates_the_pools_with_their_limits(
    first_report: SetupReport, client: SyncPrefectClient
) -> None:
    for name, limit in POOLS.items():
        assert first_report.item("work pool", name).outcome is Outcome.CREATED
        pool = client.read_work_pool(name)
        assert (pool.type, pool.concurrency_limit) == ("process", limit)
        # A process worker needs the job template the CLI would have given the pool,
        # with runs that a SIGTERM hands back to the pool (Prefect's supervisor).
        properties = pool.base_job_template["variables"]["properties"]
        assert "working_dir" in properties
        assert properties["env"]["default"] == {SIGTERM_ENV: "reschedule"}


@pytest.mark.usefixtures("first_report", "webhook_env")
def test_a_pool_made_by_hand_gets_the_hand_back_setting_and_keeps_its_env(
    client: SyncPrefectClient,
) -> None:
    template = client.read_work_pool("audio").base_job_template
    template["variables"]["properties"]["env"]["default"] = {"MINE": "1"}
    client.update_work_pool("audio", WorkPoolUpdate(base_job_template=template))

    item = run_setup().item("work pool", "audio")
    assert item.outcome is Outcome.UPDATED
    assert item.changes == [f"job template: env {SIGTERM_ENV}=reschedule"]
    env = client.read_work_pool("audio").base_job_template["variables"]["properties"]["env"]
    assert env["default"] == {"MINE": "1", SIGTERM_ENV: "reschedule"}
    assert run_setup().item("work pool", "audio").outcome is Outcome.UNCHANGED


def test_first_run_creates_an_in_flight_and_a_rate_limit_per_api(
    first_report: SetupReport, client: SyncPrefectClient
) -> None:
    for name, (limit, decay) in API_LIMITS.items():
        assert first_report.item("concurrency limit", name).outcome is Outcome.CREATED
        gcl = client.read_global_concurrency_limit_by_name(name)
        assert (gcl.limit, gcl.slot_decay_per_second, gcl.active) == (limit, decay, True)


def test_first_run_creates_the_deployments_on_their_pools(
    first_report: SetupReport, client: SyncPrefectClient
) -> None:
    for name, pool in DEPLOYMENTS.items():
        assert first_report.item("deployment", name).outcome is Outcome.CREATED
        deployment = client.read_deployment_by_name(name)
        assert deployment.work_pool_name == pool
        assert deployment.enforce_parameter_schema
        # A worker started anywhere runs the flow from this checkout.
        assert deployment.pull_steps == [{SET_WORKING_DIRECTORY: {"directory": str(ROOT)}}]
        assert deployment.entrypoint is not None
        source = deployment.entrypoint.split(":")[0]
        assert (ROOT / source).is_file()

    story = client.read_deployment_by_name("story/generate")
    assert story.parameter_openapi_schema is not None
    assert set(story.parameter_openapi_schema["properties"]) == STORY_PARAMETERS
    assert story.parameter_openapi_schema["required"] == ["story_id"]

    nightly = client.read_deployment_by_name("reprocess/nightly")
    assert [(s.schedule, s.active) for s in nightly.schedules] == [
        (CronSchedule(cron="0 2 * * *", timezone="Asia/Kolkata"), True)
    ]
    assert nightly.parameter_openapi_schema is not None
    assert {"batch_size", "max_stories", "dry_run"} <= set(
        nightly.parameter_openapi_schema["properties"]
    )


def test_the_nightly_deployment_follows_the_configured_schedule(
    first_report: SetupReport,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client: SyncPrefectClient,
) -> None:
    # A project of its own, so its schedule changes without touching the checkout's.
    project = _project(tmp_path, with_reprocess=True)
    report = run_setup(root=project)
    assert report.item("deployment", "reprocess/nightly").outcome is not Outcome.FAILED
    nightly = client.read_deployment_by_name("reprocess/nightly")
    assert [(s.schedule, s.active) for s in nightly.schedules] == [
        (CronSchedule(cron="0 2 * * *", timezone="Asia/Kolkata"), True)
    ]
    assert nightly.pull_steps == [{SET_WORKING_DIRECTORY: {"directory": str(project)}}]
    assert run_setup(root=project).changed == []

    monkeypatch.setenv("STORYLOOM_REPROCESS_CRON", "30 3 * * *")
    (item,) = run_setup(root=project).changed
    assert (item.name, item.changes) == ("reprocess/nightly", ["schedules"])
    (schedule,) = client.read_deployment_by_name("reprocess/nightly").schedules
    assert schedule.schedule == CronSchedule(cron="30 3 * * *", timezone="Asia/Kolkata")


@pytest.mark.usefixtures("first_report")
def test_a_flow_not_written_yet_is_skipped(tmp_path: Path) -> None:
    report = run_setup(root=_project(tmp_path, with_reprocess=False))
    item = report.item("deployment", "reprocess/nightly")
    assert item.outcome is Outcome.SKIPPED
    assert "flows/reprocess.py does not exist" in item.note
    assert report.ok


@pytest.mark.usefixtures("first_report")
def test_a_deployment_on_a_pool_nobody_made_fails(tmp_path: Path) -> None:
    project = _project(tmp_path, with_reprocess=True)
    yaml_text = (project / "prefect.yaml").read_text()
    yaml_text = yaml_text.replace("name: maintenance", "name: elsewhere")
    (project / "prefect.yaml").write_text(yaml_text)
    report = run_setup(root=project)
    assert report.item("deployment", "reprocess/nightly").outcome is Outcome.FAILED
    assert not report.ok


def _project(root: Path, *, with_reprocess: bool) -> Path:
    (root / "prefect.yaml").write_text(
        "deployments:\n"
        "  - name: nightly\n"
        "    entrypoint: flows/reprocess.py:reprocess\n"
        "    work_pool:\n"
        "      name: maintenance\n"
    )
    if with_reprocess:
        (root / "flows").mkdir()
        (root / "flows" / "reprocess.py").write_text(
            "from prefect import flow\n\n\n"
            '@flow(name="reprocess")\n'
            "def reprocess(batch_size: int = 10) -> None:\n"
            "    pass\n"
        )
    return root


def test_prefect_finds_story_generate_by_name_and_validates_its_parameters(
    first_report: SetupReport, client: SyncPrefectClient
) -> None:
    # What `prefect deployment run story/generate -p ...` does first.
    deployment = client.read_deployment_by_name("story/generate")
    # The server checks parameters against the schema before a run is queued.
    with pytest.raises(PrefectHTTPStatusError, match="409"):
        client.create_flow_run_from_deployment(
            deployment.id, parameters={"story_id": "tale", "pages": "many"}
        )


def test_first_run_creates_the_alert_on_failed_runs(
    first_report: SetupReport, client: SyncPrefectClient
) -> None:
    assert first_report.item("block", "storyloom-alerts").outcome is Outcome.CREATED
    assert first_report.item("automation", AUTOMATION_NAME).outcome is Outcome.CREATED
    (automation,) = client.read_automations_by_name(AUTOMATION_NAME)
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert (trigger.posture, trigger.threshold) == (Posture.Reactive, 1)
    (action,) = automation.actions
    assert isinstance(action, CallWebhook)
    block = client.read_block_document_by_name("storyloom-alerts", "webhook")
    assert action.block_document_id == block.id
    assert block.data["url"] == WEBHOOK


def test_every_deployment_runs_with_heartbeats(
    first_report: SetupReport, client: SyncPrefectClient
) -> None:
    # In the job variables, so every worker type hands it to the flow-run process.
    for name in DEPLOYMENTS:
        env = client.read_deployment_by_name(name).job_variables["env"]
        assert env == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}


def test_first_run_creates_the_crash_automations_for_its_deployments(
    first_report: SetupReport, client: SyncPrefectClient
) -> None:
    assert first_report.item("automation", SILENT_RUN_AUTOMATION).outcome is Outcome.CREATED
    assert first_report.item("automation", RERUN_AUTOMATION).outcome is Outcome.CREATED
    run_setup()  # tests above ran setup on projects of their own
    ids = {name: client.read_deployment_by_name(name).id for name in DEPLOYMENTS}

    (silent,) = client.read_automations_by_name(SILENT_RUN_AUTOMATION)
    trigger = silent.trigger
    assert isinstance(trigger, EventTrigger)
    assert (trigger.posture, trigger.threshold) == (Posture.Proactive, 1)
    assert trigger.within == timedelta(seconds=90)
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed"} <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert _watched(trigger) == set(ids.values())
    (crash,) = silent.actions
    assert isinstance(crash, ChangeFlowRunState)
    assert (crash.state, crash.force) == (StateType.CRASHED, False)

    (rerun,) = client.read_automations_by_name(RERUN_AUTOMATION)
    assert rerun.enabled
    trigger = rerun.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.expect == {"prefect.flow-run.Crashed"}
    assert trigger.match["prefect.run-count"] == ["1", "2", "3"]
    # Reprocess is not rerun: it would submit its story runs again.
    assert _watched(trigger) == {ids[n] for n in GENERATION_RUNS}
    (again,) = rerun.actions
    assert isinstance(again, ChangeFlowRunState)
    assert (again.state, again.name) == (StateType.SCHEDULED, "AwaitingRetry")

    # A generation run that ends Crashed or Cancelled starts generation/close for itself.
    assert first_report.item("automation", CLOSE_AUTOMATION).outcome is Outcome.CREATED
    (closing,) = client.read_automations_by_name(CLOSE_AUTOMATION)
    trigger = closing.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.expect == {"prefect.flow-run.Crashed", "prefect.flow-run.Cancelled"}
    assert trigger.for_each == {"prefect.resource.id"}
    assert _watched(trigger) == {ids[n] for n in GENERATION_RUNS}
    (close,) = closing.actions
    assert isinstance(close, RunDeployment)
    assert close.deployment_id == ids["generation/close"]
    assert close.parameters == {"flow_run": "{{ event.resource.id }}", "reruns": 3}


def _watched(trigger: EventTrigger) -> set[UUID]:
    """The deployment ids a crash automation's trigger is scoped to."""
    related = trigger.match_related
    (spec,) = related if isinstance(related, list) else [related]
    return {UUID(r.removeprefix("prefect.deployment.")) for r in spec["prefect.resource.id"]}


@pytest.mark.usefixtures("first_report", "webhook_env")
def test_crash_settings_update_the_automations(
    monkeypatch: pytest.MonkeyPatch, client: SyncPrefectClient
) -> None:
    run_setup()
    monkeypatch.setenv("STORYLOOM_CRASH_RERUNS", "0")
    changed = {(i.name, i.outcome) for i in run_setup().changed}
    # Crashed runs stay Crashed, and the closing flow closes their generation at once.
    assert changed == {
        (RERUN_AUTOMATION, Outcome.UPDATED),
        (CLOSE_AUTOMATION, Outcome.UPDATED),
    }
    (rerun,) = client.read_automations_by_name(RERUN_AUTOMATION)
    assert not rerun.enabled
    (closing,) = client.read_automations_by_name(CLOSE_AUTOMATION)
    (close,) = closing.actions
    assert isinstance(close, RunDeployment)
    assert close.parameters is not None
    assert close.parameters["reruns"] == 0

    monkeypatch.delenv("STORYLOOM_CRASH_RERUNS")
    monkeypatch.setenv("STORYLOOM_HEARTBEAT_SECONDS", "40")
    monkeypatch.setenv("STORYLOOM_CRASHED_AFTER_SECONDS", "120")
    changed = {(i.kind, i.name) for i in run_setup().changed}
    assert changed == {("deployment", name) for name in DEPLOYMENTS} | {
        ("automation", SILENT_RUN_AUTOMATION),
        ("automation", RERUN_AUTOMATION),
        ("automation", CLOSE_AUTOMATION),
    }
    env = client.read_deployment_by_name("story/generate").job_variables["env"]
    assert env == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "40"}

    monkeypatch.setenv("STORYLOOM_CRASHED_AFTER_SECONDS", "60")
    with pytest.raises(ValueError, match="at least twice heartbeat_seconds"):
        run_setup()

    monkeypatch.delenv("STORYLOOM_HEARTBEAT_SECONDS")
    monkeypatch.delenv("STORYLOOM_CRASHED_AFTER_SECONDS")
    assert len(run_setup().changed) == len(DEPLOYMENTS) + 1
    assert run_setup().changed == []


def test_the_webhook_url_is_shown_only_down_to_its_host(first_report: SetupReport) -> None:
    text = first_report.render() + first_report.model_dump_json()
    assert "http://127.0.0.1:9/" in text
    assert "/hook" not in text


@pytest.mark.usefixtures("first_report", "webhook_env")
def test_a_second_run_changes_nothing() -> None:
    run_setup()  # whatever other tests left, back to the configured state
    report = run_setup()
    assert report.changed == []
    assert report.ok
    # + block, alert, and the three crash automations
    expected = len(POOLS) + len(API_LIMITS) + len(DEPLOYMENTS) + 5
    assert len(report.items) == expected
    assert {i.outcome for i in report.items} <= {Outcome.UNCHANGED, Outcome.SKIPPED}


@pytest.mark.usefixtures("first_report", "webhook_env")
def test_a_changed_limit_updates_exactly_that_item(
    monkeypatch: pytest.MonkeyPatch, client: SyncPrefectClient
) -> None:
    run_setup()
    monkeypatch.setenv("STORYLOOM_IMAGES_POOL_LIMIT", "3")
    report = run_setup()
    (item,) = report.changed
    assert (item.kind, item.name, item.outcome) == ("work pool", "images", Outcome.UPDATED)
    assert item.changes == ["concurrency_limit: 1 → 3"]
    assert client.read_work_pool("images").concurrency_limit == 3

    monkeypatch.setenv("STORYLOOM_SARVAM_PER_SECOND", "0.25")
    (item,) = run_setup().changed
    assert (item.kind, item.name) == ("concurrency limit", "rate:sarvam")
    assert item.changes == ["slot_decay_per_second: 0.5 → 0.25"]
    assert client.read_global_concurrency_limit_by_name("rate:sarvam").slot_decay_per_second == 0.25

    monkeypatch.setenv("STORYLOOM_GEMINI_IMAGE_IN_FLIGHT", "3")
    changed = run_setup().changed
    assert {(i.name, tuple(i.changes)) for i in changed} == {
        ("api:gemini-image", ("limit: 2 → 3",)),
        ("rate:gemini-image", ("limit: 2 → 3",)),
    }

    monkeypatch.delenv("STORYLOOM_IMAGES_POOL_LIMIT")
    monkeypatch.delenv("STORYLOOM_SARVAM_PER_SECOND")
    monkeypatch.delenv("STORYLOOM_GEMINI_IMAGE_IN_FLIGHT")
    assert {i.name for i in run_setup().changed} == {
        "images",
        "rate:sarvam",
        "api:gemini-image",
        "rate:gemini-image",
    }


@pytest.mark.usefixtures("first_report", "webhook_env")
def test_an_in_flight_limit_made_with_decay_loses_it_and_its_stale_slots(
    client: SyncPrefectClient,
) -> None:
    # What an older setup made: api:<name> with slot decay. A decayed-away slot stays
    # counted in the row, so dropping the decay alone would leave it taken for good.
    client.update_global_concurrency_limit(
        "api:cloudinary",
        GlobalConcurrencyLimitUpdate(limit=8, slot_decay_per_second=0.001, active_slots=5),
    )
    (item,) = run_setup().changed
    assert (item.name, item.outcome) == ("api:cloudinary", Outcome.UPDATED)
    assert item.changes == ["slot_decay_per_second: 0.001 → 0", "active_slots: reset to 0"]
    gcl = client.read_global_concurrency_limit_by_name("api:cloudinary")
    assert (gcl.limit, gcl.slot_decay_per_second, gcl.active_slots) == (8, 0.0, 0)
    assert run_setup().changed == []


@pytest.mark.usefixtures("first_report", "webhook_env")
def test_a_dry_run_reports_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, client: SyncPrefectClient
) -> None:
    run_setup()
    monkeypatch.setenv("STORYLOOM_STORY_POOL_LIMIT", "5")
    report = run_setup(dry_run=True)
    assert [(i.kind, i.name, i.outcome) for i in report.changed] == [
        ("work pool", "story", Outcome.UPDATED)
    ]
    assert "would update" in report.render()
    assert client.read_work_pool("story").concurrency_limit == 2


@pytest.mark.usefixtures("first_report")
def test_without_an_alert_target_the_automation_is_skipped_and_kept(
    client: SyncPrefectClient,
) -> None:
    report = run_setup()
    item = report.item("automation", AUTOMATION_NAME)
    assert item.outcome is Outcome.SKIPPED
    assert "STORYLOOM_ALERT_WEBHOOK_URL" in item.note
    assert len(client.read_automations_by_name(AUTOMATION_NAME)) == 1


@pytest.mark.usefixtures("first_report")
def test_a_named_notification_block_is_used_and_a_missing_one_fails(
    monkeypatch: pytest.MonkeyPatch, client: SyncPrefectClient
) -> None:
    SlackWebhook(url=SecretStr("http://127.0.0.1:9/slack")).save("ops", overwrite=True)
    monkeypatch.setenv("STORYLOOM_ALERT_NOTIFICATION_BLOCK", "slack-webhook/ops")
    run_setup()
    assert run_setup().changed == []
    (automation,) = client.read_automations_by_name(AUTOMATION_NAME)
    (action,) = automation.actions
    assert isinstance(action, SendNotification)
    assert action.block_document_id == client.read_block_document_by_name("ops", "slack-webhook").id

    monkeypatch.setenv("STORYLOOM_ALERT_NOTIFICATION_BLOCK", "slack-webhook/nobody")
    report = run_setup()
    assert report.item("block", "slack-webhook/nobody").outcome is Outcome.FAILED
    assert not report.ok


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[Any]] = []  # what the automation posted, in order

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@flow(name="doomed")
def doomed() -> None:
    raise RuntimeError("a run that fails")


@pytest.mark.usefixtures("first_report")
def test_a_failed_run_reaches_the_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(
            "STORYLOOM_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/alerts"
        )
        run_setup()
        with pytest.raises(RuntimeError, match="a run that fails"):
            doomed()
        deadline = time.monotonic() + 60
        while not _Receiver.bodies and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        server.shutdown()
    (body, *_) = _Receiver.bodies
    assert (body["flow"], body["state"]) == ("doomed", "Failed")
    assert "a run that fails" in body["message"]


@pytest.mark.usefixtures("first_report")
def test_python_m_deployments_prints_the_report(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "STORYLOOM_ALERT_WEBHOOK_URL": WEBHOOK,
    }
    run_setup_twice = [sys.executable, "-m", "deployments"]
    subprocess.run(run_setup_twice, env=env, cwd=tmp_path, check=True, capture_output=True)
    done = subprocess.run(
        run_setup_twice, env=env, cwd=tmp_path, check=True, capture_output=True, text=True
    )
    assert "work pool" in done.stdout
    assert "created" not in done.stdout
    assert "updated" not in done.stdout
    assert "/hook" not in done.stdout + done.stderr

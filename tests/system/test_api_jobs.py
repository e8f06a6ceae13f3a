"""The job API against a production-shaped cluster (Prefect server on PostgreSQL, real
workers per pool, the loopback fakes): submit, follow over SSE, idempotency, cancel,
tenant isolation and limits, webhooks signed and retried, admin routes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storyloom.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.fakes.server import serve
from tests.system.cluster import BIN, ROOT, Cluster, free_port, working_cluster

pytestmark = pytest.mark.timeout(900)
QUICK = {"kind": "story", "pages": 4, "images": False, "narration_languages": []}


class Api:
    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url, self.keys = url, keys

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=30
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with working_cluster(
        tmp_path_factory.mktemp("api"), {"STORYLOOM_TENANT_MAX_JOBS": "2"}
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[Api]:
    keys = {}
    for tenant in ("acme", "zenith"):
        added = cluster.run("storyloom", "tenants", "add", tenant)
        assert added.returncode == 0, added.stderr
        keys[tenant] = added.stdout.strip().splitlines()[-1]
    admin = cluster.run("storyloom", "tenants", "key", "--admin")
    keys["admin"] = admin.stdout.strip().splitlines()[-1]
    port = free_port()
    log = (cluster.logs / "api.log").open("ab")
    process = subprocess.Popen(
        [str(BIN / "storyloom"), "api", "--port", str(port)], env=cluster.env, cwd=ROOT,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, "the API exited"
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.3)
    try:
        yield Api(url, keys)
    finally:
        process.terminate()
        process.wait(timeout=30)
    # Keys never reach the API's log.
    logged = (cluster.logs / "api.log").read_text()
    assert not any(key in logged for key in keys.values())


def create_story(cluster: Cluster, api: Api, tenant: str, story_id: str) -> None:
    # The sample under its own id and title: paid work is cached by its inputs.
    raw = json.loads((ROOT / "storyloom" / "samples" / "life-story.json").read_text())
    raw |= {"id": story_id, "title": f"The Mango Tree ({story_id})"}
    with api.client(tenant) as client:
        created = client.post("/v1/stories", json=raw)
        assert created.status_code == 201, created.text


def events(api: Api, tenant: str, job_id: str, timeout: float = 300) -> list[tuple[str, Any]]:
    """Every Server-Sent Event of the job, until the stream ends."""
    seen: list[tuple[str, Any]] = []
    with (
        api.client(tenant) as client,
        client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.append((event or "message", json.loads(line.removeprefix("data: "))))
    return seen


def test_a_job_is_followed_to_its_book_over_sse(cluster: Cluster, api: Api) -> None:
    create_story(cluster, api, "acme", "sse-story")
    with api.client("acme") as acme:
        submitted = acme.post("/v1/stories/sse-story/jobs", json=QUICK)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["state"] in ("scheduled", "pending", "running")

        stream = events(api, "acme", job["id"])

        kinds = [kind for kind, _ in stream]
        assert kinds[0] == "state"  # the current state first
        assert kinds[-1] == "end"
        assert "progress" in kinds
        states = [data["state"] for kind, data in stream if kind == "state"]
        assert "running" in states
        assert stream[-1][1]["state"] == "completed"
        steps = [data["step"] for kind, data in stream if kind == "progress"]
        assert any(steps)
        final = acme.get(f"/v1/jobs/{job['id']}").json()
        assert final["state"] == "completed"
        assert final["progress"] == 1.0
        assert final["finished_at"] is not None
        book = acme.get(final["book"]).json()
        assert len(book["pages"]) == 4

        # Late: the stream of a finished job is its state, then its end.
        late = events(api, "acme", job["id"])
        assert [kind for kind, _ in late] == ["state", "end"]
        # A finished job cannot be cancelled.
        assert acme.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_an_idempotency_key_gives_the_same_job(cluster: Cluster, api: Api) -> None:
    create_story(cluster, api, "acme", "idem-story")
    headers = {"Idempotency-Key": "order-42"}
    with api.client("acme") as acme:
        first = acme.post("/v1/stories/idem-story/jobs", json=QUICK, headers=headers)
        again = acme.post("/v1/stories/idem-story/jobs", json=QUICK, headers=headers)
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        other = acme.post(
            "/v1/stories/idem-story/jobs", json={**QUICK, "pages": 8}, headers=headers
        )
        assert other.status_code == 409
        events(api, "acme", first.json()["id"])  # let it finish: the tenant's limit is 2


def test_bad_job_options_are_422_naming_the_field(cluster: Cluster, api: Api) -> None:
    create_story(cluster, api, "acme", "bad-options")
    with api.client("acme") as acme:
        for body, field in (
            ({"kind": "poem"}, "kind"),
            ({"kind": "story", "pages": 0}, "pages"),
            ({"kind": "story", "colour": "red"}, "colour"),
            ({"kind": "narration", "languages": ["xx-XX"]}, "languages"),
        ):
            answer = acme.post("/v1/stories/bad-options/jobs", json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert any(field in e["loc"] for e in answer.json()["detail"]), answer.json()
        assert acme.get("/v1/jobs").json()["total"] >= 0


def test_a_tenant_sees_only_its_own_jobs(cluster: Cluster, api: Api) -> None:
    create_story(cluster, api, "acme", "private-story")
    with api.client("acme") as acme, api.client("zenith") as zenith:
        job = acme.post("/v1/stories/private-story/jobs", json=QUICK).json()
        for method, path in (
            ("GET", f"/v1/jobs/{job['id']}"),
            ("GET", f"/v1/jobs/{job['id']}/events"),
            ("POST", f"/v1/jobs/{job['id']}/cancel"),
            ("POST", "/v1/stories/private-story/jobs"),
        ):
            answer = zenith.request(method, path, json=QUICK if method == "POST" else None)
            assert answer.status_code == 404, (method, path)
        assert job["id"] not in {j["id"] for j in zenith.get("/v1/jobs").json()["items"]}
        assert zenith.get("/v1/admin/stats").status_code == 403
        events(api, "acme", job["id"])


def test_cancel_stops_the_job_and_its_paid_calls(cluster: Cluster, api: Api) -> None:
    create_story(cluster, api, "zenith", "cancel-story")
    cluster.fakes.gemini.reset()  # only this job's calls
    cluster.fakes.gemini.latency = 2.0  # slow: the job is mid-flight when cancelled
    try:
        with api.client("zenith") as zenith:
            job = zenith.post("/v1/stories/cancel-story/jobs", json={**QUICK, "pages": 8}).json()
            deadline = time.monotonic() + 120
            while zenith.get(f"/v1/jobs/{job['id']}").json()["state"] != "running":
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.5)
            # Paying: a call in flight (on a busy machine a run can take seconds from
            # running to its first call).
            while not cluster.fakes.gemini.in_flight:
                assert time.monotonic() < deadline, "the job never called Gemini"
                time.sleep(0.2)
            cancelled = zenith.post(f"/v1/jobs/{job['id']}/cancel")
            assert cancelled.status_code == 202
            seen = time.monotonic()  # the fakes' clock: they run in this process
            stream = events(api, "zenith", job["id"])
    finally:
        cluster.fakes.gemini.latency = 0.0
    assert stream[-1][1]["state"] == "cancelled"
    # No provider call started after the cancel was seen (a call already in flight
    # when it came may finish).
    calls = cluster.fakes.gemini.calls
    assert [c for c in calls if c.started < seen]  # it was paying when it was cancelled
    late = [c for c in calls if c.started > seen + 2.5]
    assert late == []


def test_a_tenant_past_its_limit_is_told_to_wait(cluster: Cluster, api: Api) -> None:
    for n in range(3):
        create_story(cluster, api, "zenith", f"burst-{n}")
    cluster.fakes.gemini.latency = 1.0
    try:
        with api.client("zenith") as zenith:
            answers = [zenith.post(f"/v1/stories/burst-{n}/jobs", json=QUICK) for n in range(3)]
            assert [a.status_code for a in answers] == [202, 202, 429]
            assert int(answers[2].headers["retry-after"]) > 0
            # Another tenant is not held back by zenith's burst.
            create_story(cluster, api, "acme", "other-tenant")
            with api.client("acme") as acme:
                assert acme.post("/v1/stories/other-tenant/jobs", json=QUICK).status_code == 202
            for answer in answers[:2]:
                events(api, "zenith", answer.json()["id"])
    finally:
        cluster.fakes.gemini.latency = 0.0


def test_webhooks_are_signed_retried_and_recorded(cluster: Cluster, api: Api) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    refuse_first = threading.Event()

    async def hook(request: Request) -> Response:
        body = await request.body()
        if not refuse_first.is_set():
            refuse_first.set()
            return Response(status_code=503)  # the receiver is down at first
        received.append((dict(request.headers), body))
        return Response(status_code=204)

    create_story(cluster, api, "acme", "hooked-story")
    receiver_app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    with serve(receiver_app) as receiver, api.client("acme") as acme:
        made = acme.post("/v1/webhooks", json={"url": f"{receiver}/hook"}).json()
        secret = made["secret"]
        job = acme.post("/v1/stories/hooked-story/jobs", json=QUICK).json()
        events(api, "acme", job["id"])
        deadline = time.monotonic() + 60
        while not received:
            assert time.monotonic() < deadline, "no webhook delivery"
            time.sleep(0.5)
        deliveries = acme.get(f"/v1/webhooks/{made['id']}/deliveries").json()
        assert acme.get("/v1/webhooks").json()[0]["secret"] is None  # shown once
        with api.client("zenith") as zenith:
            assert zenith.get(f"/v1/webhooks/{made['id']}/deliveries").status_code == 404
    headers, body = next((h, b) for h, b in received if json.loads(b)["job"]["id"] == job["id"])
    assert verify(
        secret, headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()]
    )
    assert not verify("whsec_wrong", headers[TIMESTAMP_HEADER.lower()], body,
                      headers[SIGNATURE_HEADER.lower()])  # fmt: skip
    assert json.loads(body)["job"]["state"] == "completed"
    mine = [d for d in deliveries if d["job_id"] == job["id"]]
    assert [(d["status"], d["attempts"]) for d in mine] == [("delivered", 2)]


def test_admin_routes(cluster: Cluster, api: Api) -> None:
    with api.client("admin") as admin, api.client("acme") as acme:
        stats = admin.get("/v1/admin/stats").json()
        assert set(stats["kinds"]) == {"story", "illustrations", "narration"}
        assert stats["kinds"]["story"]["pool_limit"] == 2
        assert stats["kinds"]["story"]["states"].get("completed", 0) >= 1
        assert "gemini-text" in json.dumps(stats["api_limits"]) or stats["api_limits"]
        listed = admin.get("/v1/admin/jobs", params={"tenant": "acme", "state": "completed"})
        assert listed.status_code == 200
        items = listed.json()["items"]
        assert items
        assert all(j["state"] == "completed" for j in items)
        assert {j["id"] for j in items} <= {j["id"] for j in acme.get("/v1/jobs").json()["items"]}
        assert acme.get("/v1/admin/jobs").status_code == 403
        assert httpx.get(f"{api.url}/v1/admin/stats").status_code == 401
    assert Path(cluster.logs / "api.log").exists()


def test_the_cli_runs_jobs_over_the_same_core(cluster: Cluster, api: Api) -> None:
    create_story(cluster, api, "acme", "cli-story")
    submitted = cluster.run(
        "storyloom", "jobs", "submit", "cli-story", "-p", "pages=4", "-p", "images=false",
        "-p", "narration_languages=[]", "--wait", "--json", timeout=300,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["state"] == "completed"
    assert job["progress"] == 1.0
    assert "Completed" in submitted.stderr  # the progress bar's last state

    status = cluster.run("storyloom", "jobs", "status", job["id"], "--json")
    assert json.loads(status.stdout)["state"] == "completed"
    listed = cluster.run("storyloom", "jobs", "list", "--story", "cli-story", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [job["id"]]
    stats = json.loads(cluster.run("storyloom", "jobs", "stats", "--json").stdout)
    assert stats["kinds"]["story"]["states"]["completed"] >= 1
    finished = cluster.run("storyloom", "jobs", "cancel", job["id"])
    assert finished.returncode == 1
    assert "has finished" in finished.stderr
    bad = cluster.run("storyloom", "jobs", "submit", "cli-story", "-p", "pages=0")
    assert bad.returncode == 2
    assert "pages" in bad.stderr

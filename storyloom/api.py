"""The HTTP API for applications: stories, books and their files, share links.

Every request but a share link's carries `Authorization: Bearer KEY`. A tenant's key
reaches that tenant's stories only (another tenant's story is a 404, as if it did not
exist); an admin key reaches every story. Keys are stored hashed (store/access.py)
and never logged. The book's files are served from where the generation stored them;
a share link serves the reader page to anyone holding it, until it expires or is
revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from storyloom import jobs, services
from storyloom.models import CreativeStory, ExportFormat, Language, LifeStory
from storyloom.settings import get_settings
from storyloom.store.access import Caller, JobExistsError, JobRecord
from storyloom.store.records import GenerationInfo, StoryBook, StorySummary
from storyloom.store.repository import StoryExistsError, StoryNotFoundError
from storyloom.webhooks import Deliverer

CONTENT_TYPES: dict[str, str] = {
    "html": "text/html; charset=utf-8",
    "epub": "application/epub+zip",
    "pdf": "application/pdf",
}
_bearer = HTTPBearer(auto_error=False, description="an API key: `Bearer sl_...`")


class Page(BaseModel):
    """One page of a list."""

    items: list[Any]
    total: int
    limit: int
    offset: int


class StoryPage(Page):
    items: list[StorySummary]


class ShareRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"expires_in_hours": 72}]})
    expires_in_hours: float = Field(168, gt=0, le=24 * 365, examples=[72])


class ShareLink(BaseModel):
    id: str
    story_id: str
    url: str | None = Field(None, description="shown once, when the link is made")
    created_at: datetime
    expires_at: datetime
    revoked: bool = False


class ChildJob(BaseModel):
    id: str
    kind: str
    state: str


class Job(BaseModel):
    """A job: one flow run of `story`, `illustrations` or `narration` for one story."""

    id: str
    kind: str
    story_id: str
    state: str = Field(description="Prefect's state type, lower case", examples=["running"])
    state_name: str = Field(description="Prefect's state name", examples=["Running"])
    progress: float | None = Field(None, ge=0, le=1, description="the run's own steps done")
    step: str | None = Field(None, description="what it is doing now")
    children: list[ChildJob] = []
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = Field(None, description="why it failed: no stack trace, no secret")
    book: str | None = Field(None, description="the book's URL, once complete")


class JobPage(Page):
    items: list[Job]


class WebhookIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"url": "https://example.com/storyloom-hook"}]}
    )
    url: AnyHttpUrl = Field(examples=["https://example.com/storyloom-hook"])


class WebhookOut(BaseModel):
    id: str
    url: str
    created_at: datetime
    secret: str | None = Field(None, description="the signing secret, shown once")


class DeliveryOut(BaseModel):
    id: str
    job_id: str
    state: str
    status: str
    attempts: int
    last_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None


JOB_EXAMPLE = {"kind": "story", "pages": 4, "narration_languages": ["ta-IN"]}
STORY_EXAMPLE = {
    "id": "asha-verma",
    "kind": "life",
    "title": "The Mango Tree",
    "language": "hi-IN",
    "stages": {
        "origins": "Born in 1948 in a village near Lucknow, the youngest of five.",
        "childhood": ["Climbing the mango tree behind the school.", "Monsoon kites."],
        "legacy": "Three grandchildren who still climb that tree.",
    },
}
StoryBody = Annotated[
    LifeStory | CreativeStory, Body(discriminator="kind", examples=[STORY_EXAMPLE])
]


class Problem(BaseModel):
    """What went wrong, for a person: `{"detail": "..."}`."""

    detail: str | list[Any]


# Every route may answer these; they are documented on all of them.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "a body that cannot be read as JSON"},
    401: {"model": Problem, "description": "no key, or not a valid one"},
    403: {"model": Problem, "description": "the key may not do this (an admin route)"},
    404: {"model": Problem, "description": "no such thing, or not the caller's"},
    409: {"model": Problem, "description": "it conflicts with what is there"},
    429: {"model": Problem, "description": "too many jobs at once: see Retry-After"},
}


def caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The key's owner; 401 without a valid key (the key is never echoed)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "an API key is needed: Authorization: Bearer KEY",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = services.store().caller(credentials.credentials)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the API key is not valid (unknown or revoked)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


Who = Annotated[Caller, Depends(caller)]


def admin(who: Who) -> Caller:
    if not who.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "an admin key is needed")
    return who


Admin = Annotated[Caller, Depends(admin)]


def _reachable(who: Caller, story_id: str) -> None:
    """404 unless the story exists and the caller may see it (admins see every story)."""
    exists, owner = services.store().owner(story_id)
    if not exists or (not who.is_admin and owner != who.tenant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no story {story_id!r}")


def describe(job_id: str) -> dict[str, Any] | None:
    """The job as `GET /v1/jobs/{id}` shows it (also a webhook's body); None if unknown."""
    record = services.store().job(job_id)
    if record is None:
        return None
    return _job(record).model_dump(mode="json")


def create_app(*, deliver_webhooks: bool = True) -> FastAPI:
    """The API. With deliver_webhooks, a background thread tells tenants' webhooks of
    every job's end while the app runs (started and stopped by the ASGI lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deliverer = Deliverer(describe) if deliver_webhooks else None
        if deliverer is not None:
            deliverer.start()
        try:
            yield
        finally:
            if deliverer is not None:
                await run_in_threadpool(deliverer.stop)

    app = FastAPI(
        title="storyloom",
        version="1",
        summary="Stories in, storybooks out: pages, pictures, read-along narration.",
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != status.HTTP_405_METHOD_NOT_ALLOWED:
            return await http_exception_handler(request, exc)
        # Starlette names only the first matching route's methods in Allow; a path
        # served by several routes (GET and POST /v1/stories) allows them all.
        allowed = sorted(
            {
                method
                for route in app.routes
                if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE
                for method in route.methods or ()
            }
        )
        return JSONResponse(
            {"detail": "Method Not Allowed"}, exc.status_code, headers={"Allow": ", ".join(allowed)}
        )

    @app.exception_handler(ValidationError)
    async def invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.errors(include_url=False, include_context=False)},
            status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.post("/v1/stories", status_code=201, tags=["stories"])
    def create_story(story: StoryBody, who: Who) -> LifeStory | CreativeStory:
        """Store a story (validated as the CLI validates it); 409 when its id is taken."""
        store = services.store()
        try:
            store.add_story(story)
        except StoryExistsError:
            raise HTTPException(status.HTTP_409_CONFLICT, f"story {story.id!r} exists") from None
        store.set_owner(story.id, who.tenant_id)
        return story

    @app.get("/v1/stories", tags=["stories"])
    def list_stories(
        who: Who,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> StoryPage:
        """The caller's stories, most recently updated first."""
        stories = services.store().list_stories(tenant_id=who.tenant_id)  # admin: every one
        return StoryPage(
            items=stories[offset : offset + limit], total=len(stories), limit=limit, offset=offset
        )

    @app.get("/v1/stories/{story_id}", tags=["stories"])
    def read_story(story_id: str, who: Who) -> LifeStory | CreativeStory:
        _reachable(who, story_id)
        return services.store().get_story(story_id)

    @app.put("/v1/stories/{story_id}", tags=["stories"])
    def replace_story(story_id: str, story: StoryBody, who: Who) -> LifeStory | CreativeStory:
        """Replace a story's material; its books stay until it is generated again."""
        _reachable(who, story_id)
        if story.id != story_id:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [
                    {
                        "loc": ["body", "id"],
                        "msg": f"must be {story_id!r}, the story's id",
                        "type": "value_error",
                    }
                ],
            )
        services.store().add_story(story, replace=True)
        return story

    @app.delete("/v1/stories/{story_id}", status_code=204, tags=["stories"])
    def delete_story(story_id: str, who: Who) -> Response:
        """Delete a story: every media file first, then its rows."""
        _reachable(who, story_id)
        services.media().delete_story(story_id)
        with contextlib.suppress(StoryNotFoundError):  # deleted meanwhile: the same end
            services.store().delete_story(story_id)
        return Response(status_code=204)

    @app.get("/v1/stories/{story_id}/book", tags=["books"])
    def read_book(story_id: str, who: Who) -> StoryBook:
        """The published book: pages, pictures, chapters per language with their
        sentences' timings, the book's files, how it was written, what it cost."""
        _reachable(who, story_id)
        book = services.store().book(story_id)
        if book is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"story {story_id!r} has no book yet")
        return book

    @app.get("/v1/stories/{story_id}/generations", tags=["books"])
    def list_generations(
        story_id: str, who: Who, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> list[GenerationInfo]:
        """The story's generations, newest first: status, when, error."""
        _reachable(who, story_id)
        return services.store().generations(story_id, limit=limit)

    @app.get(
        "/v1/stories/{story_id}/book/files/{file_format}",
        tags=["books"],
        response_class=Response,
        responses={200: {"content": {t.split(";")[0]: {} for t in CONTENT_TYPES.values()}}},
    )
    def read_book_file(
        story_id: str,
        file_format: ExportFormat,
        who: Who,
        language: Annotated[Language | None, Query(description="an EPUB's language")] = None,
    ) -> Response:
        """The book as a file: the reader page (html), an EPUB (one per narration
        language) or the PDF, as stored with the published generation."""
        _reachable(who, story_id)
        return _book_file(story_id, file_format, language)

    @app.post("/v1/stories/{story_id}/shares", status_code=201, tags=["shares"])
    def share(story_id: str, who: Who, request: Request, body: ShareRequest) -> ShareLink:
        """A link to the story's reader page for people without a key. Its URL is
        shown only in this answer; it expires, and can be revoked."""
        _reachable(who, story_id)
        made, token = services.store().add_share(story_id, timedelta(hours=body.expires_in_hours))
        url = str(request.url_for("shared_book", token=token))
        return ShareLink(
            id=made.id, story_id=story_id, url=url, created_at=made.created_at,
            expires_at=made.expires_at,
        )  # fmt: skip

    @app.get("/v1/stories/{story_id}/shares", tags=["shares"])
    def list_shares(story_id: str, who: Who) -> list[ShareLink]:
        _reachable(who, story_id)
        return [
            ShareLink(
                id=s.id,
                story_id=s.story_id,
                created_at=s.created_at,
                expires_at=s.expires_at,
                revoked=s.revoked_at is not None,
            )
            for s in services.store().shares(story_id)
        ]

    @app.delete("/v1/stories/{story_id}/shares/{share_id}", status_code=204, tags=["shares"])
    def revoke_share(story_id: str, share_id: str, who: Who) -> Response:
        _reachable(who, story_id)
        if not services.store().revoke_share(story_id, share_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live share {share_id!r}")
        return Response(status_code=204)

    @app.get("/s/{token}", name="shared_book", tags=["shares"], response_class=Response)
    def shared_book(token: str) -> Response:
        """The reader page a share link opens: no key needed, until it expires or is
        revoked (then 404)."""
        story_id = services.store().shared_story(token)
        if story_id is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "this link has expired or was revoked")
        return _book_file(story_id, "html", None)

    @app.post(
        "/v1/stories/{story_id}/jobs",
        status_code=202,
        tags=["jobs"],
        responses={409: {"description": "the Idempotency-Key was used with another body"},
                   429: {"description": "the tenant has as many jobs as it may have"}},
    )  # fmt: skip
    def submit_job(
        story_id: str,
        who: Who,
        response: Response,
        body: Annotated[
            dict[str, Any],
            Body(
                description="`kind` (story, illustrations, narration) and the job's "
                "options, flat: a story job takes the generation options",
                examples=[JOB_EXAMPLE],
            ),
        ],
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> Job:
        """Start a job. The same Idempotency-Key with the same body gives the same job."""
        _reachable(who, story_id)
        kind = body.get("kind")
        if kind not in jobs.JOB_KINDS:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [{"loc": ["body", "kind"], "msg": f"must be one of {', '.join(jobs.JOB_KINDS)}",
                  "type": "enum"}],
            )  # fmt: skip
        options = {k: v for k, v in body.items() if k != "kind"}
        try:
            parameters = jobs.job_parameters(kind, options)
        except ValidationError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [{**e, "loc": ["body", *e["loc"]]}
                 for e in exc.errors(include_url=False, include_context=False)],
            ) from None  # fmt: skip
        store = services.store()
        digest = hashlib.sha256(
            json.dumps([story_id, kind, parameters], sort_keys=True).encode()
        ).hexdigest()
        if idempotency_key is not None:
            existing = store.job_by_key(who.tenant_id, idempotency_key)
            if existing is not None:
                return _same_job(existing, story_id, digest, response)
        if not who.is_admin:
            _within_limit(who)
        owner = who.tenant_id or "admin"
        run_id = jobs.submit(
            kind,
            story_id,
            parameters,
            idempotency_key=f"{owner}:{idempotency_key}" if idempotency_key else None,
            tags=[f"tenant:{owner}"],
        )
        record = JobRecord(
            id=run_id, tenant_id=who.tenant_id, story_id=story_id, kind=kind,
            idempotency_key=idempotency_key, request_hash=digest, created_at=datetime.now(UTC),
        )  # fmt: skip
        try:
            store.record_job(record)
        except JobExistsError as exc:  # the same key at the same moment: one job
            return _same_job(exc.existing, story_id, digest, response)
        response.headers["Location"] = f"/v1/jobs/{run_id}"
        return _job(record)

    @app.get("/v1/jobs", tags=["jobs"])
    def list_jobs(
        who: Who,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> JobPage:
        """The caller's jobs, newest first."""
        records = services.store().jobs(
            tenant_id=who.tenant_id, all_tenants=who.is_admin, limit=offset + limit
        )
        page = records[offset : offset + limit]
        states = jobs.run_states([r.id for r in page])
        items = [_job_from(r, states.get(r.id)) for r in page]
        return JobPage(items=items, total=len(records), limit=limit, offset=offset)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def read_job(job_id: str, who: Who) -> Job:
        """A job's state, progress, current step, children, times, error and book."""
        return _job(_record(who, job_id))

    @app.post("/v1/jobs/{job_id}/cancel", status_code=202, tags=["jobs"],
              responses={409: {"description": "the job has finished"}})  # fmt: skip
    def cancel_job(job_id: str, who: Who) -> Job:
        """Cancel a job and its children: no provider call starts after the cancel is
        seen. A finished job is a 409."""
        record = _record(who, job_id)
        before = jobs.cancel(record.id)
        if before is not None and before.final:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"job {job_id} has finished: it is {before.state}"
            )
        return _job(record)

    @app.get(
        "/v1/jobs/{job_id}/events",
        tags=["jobs"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}},
                         "description": "`state` and `progress` events, then `end`"}},
    )  # fmt: skip
    def job_events(job_id: str, who: Who) -> StreamingResponse:
        """Server-Sent Events: the current state first, then every state change and
        progress step, ending with the final state."""
        record = _record(who, job_id)
        return StreamingResponse(
            _events(record), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )  # fmt: skip

    @app.get("/v1/admin/stats", tags=["admin"])
    def admin_stats(who: Admin) -> dict[str, Any]:
        """Per kind: jobs by state, the pool's limit and what runs now; per API limit:
        the slots in use."""
        return jobs.stats()

    @app.get("/v1/admin/jobs", tags=["admin"])
    def admin_jobs(
        who: Admin,
        kind: Annotated[jobs.JobKind | None, Query()] = None,
        state: Annotated[str | None, Query(examples=["running"])] = None,
        story: Annotated[str | None, Query()] = None,
        tenant: Annotated[str | None, Query()] = None,
        since: Annotated[datetime | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> JobPage:
        """Every tenant's jobs, filtered, newest first."""
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)  # a time without an offset is UTC
        records = services.store().jobs(
            tenant_id=tenant, all_tenants=tenant is None, kind=kind, story_id=story,
            since=since, limit=2000,
        )  # fmt: skip
        states = jobs.run_states([r.id for r in records])
        items = [_job_from(r, states.get(r.id)) for r in records]
        if state is not None:
            items = [j for j in items if j.state == state.lower()]
        return JobPage(
            items=items[offset : offset + limit], total=len(items), limit=limit, offset=offset
        )

    @app.post("/v1/webhooks", status_code=201, tags=["webhooks"])
    def add_webhook(body: WebhookIn, who: Who) -> WebhookOut:
        """Register a URL told of every job's final state, signed with the secret in
        this answer (shown once): `Storyloom-Signature: v1=HMAC-SHA256(secret,
        "<Storyloom-Timestamp>.<body>")`."""
        if who.tenant_id is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "webhooks belong to a tenant")
        hook, secret = services.store().add_webhook(who.tenant_id, str(body.url))
        return WebhookOut(id=hook.id, url=hook.url, created_at=hook.created_at, secret=secret)

    @app.get("/v1/webhooks", tags=["webhooks"])
    def list_webhooks(who: Who) -> list[WebhookOut]:
        if who.tenant_id is None:
            return []
        return [
            WebhookOut(id=h.id, url=h.url, created_at=h.created_at)
            for h in services.store().webhooks(who.tenant_id)
        ]

    @app.delete("/v1/webhooks/{webhook_id}", status_code=204, tags=["webhooks"])
    def delete_webhook(webhook_id: str, who: Who) -> Response:
        if who.tenant_id is None or not services.store().delete_webhook(who.tenant_id, webhook_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id!r}")
        return Response(status_code=204)

    @app.get("/v1/webhooks/{webhook_id}/deliveries", tags=["webhooks"])
    def list_deliveries(webhook_id: str, who: Who) -> list[DeliveryOut]:
        """Every delivery to the webhook, newest first, with its attempts."""
        found = services.store().webhook(webhook_id)
        if found is None or found[0].tenant_id != who.tenant_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id!r}")
        return [DeliveryOut(**d.__dict__) for d in services.store().deliveries(webhook_id)]

    return app


def _record(who: Caller, job_id: str) -> JobRecord:
    """The job, if the caller may see it; else 404."""
    record = services.store().job(job_id)
    if record is None or (not who.is_admin and record.tenant_id != who.tenant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return record


def _same_job(existing: JobRecord, story_id: str, digest: str, response: Response) -> Job:
    if existing.request_hash != digest or existing.story_id != story_id:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "this Idempotency-Key was used for another request: use a new key",
        )
    response.headers["Location"] = f"/v1/jobs/{existing.id}"
    return _job(existing)


def _within_limit(who: Caller) -> None:
    """429 when the tenant has as many jobs queued or running as it may."""
    limit = get_settings().tenant_max_jobs
    recent = services.store().jobs(tenant_id=who.tenant_id, limit=max(200, limit * 4))
    states = jobs.run_states([r.id for r in recent])
    open_jobs = sum(1 for r in recent if r.id in states and not states[r.id].final)
    if open_jobs >= limit:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"{open_jobs} jobs are queued or running, the most this tenant may have: "
            "try again when one has finished",
            headers={"Retry-After": "30"},
        )


def _job(record: JobRecord) -> Job:
    status_ = jobs.status(record.id)
    if status_ is None:
        return _job_from(record, None)
    job = _job_from(record, status_.run)
    return job.model_copy(
        update={
            "progress": status_.progress,
            "step": status_.step,
            "children": [ChildJob(id=c.id, kind=c.name, state=c.state) for c in status_.children],
        }
    )


def _job_from(record: JobRecord, run: jobs.RunState | None) -> Job:
    state = run.state if run is not None else "scheduled"
    return Job(
        id=record.id,
        kind=record.kind,
        story_id=record.story_id,
        state=state,
        state_name=run.state_name if run is not None else "Scheduled",
        created_at=record.created_at,
        started_at=run.started if run is not None else None,
        finished_at=run.finished if run is not None else None,
        error=run.error if run is not None else None,
        book=f"/v1/stories/{record.story_id}/book" if state == "completed" else None,
    )


async def _events(record: JobRecord) -> AsyncIterator[str]:
    """The job's events until its final state: `state` when its state changes,
    `progress` when its progress or step does; a comment every 15 s keeps proxies open."""
    poll = get_settings().job_events_poll_seconds
    last_state: tuple[Any, ...] | None = None
    last_progress: tuple[Any, ...] | None = None
    quiet_since = time.monotonic()
    while True:
        job = await run_in_threadpool(_job, record)
        data = job.model_dump_json()
        state = (job.state, job.state_name, tuple((c.id, c.state) for c in job.children))
        progress = (job.progress, job.step)
        if state != last_state:
            yield f"event: state\ndata: {data}\n\n"
            last_state, quiet_since = state, time.monotonic()
        if progress != last_progress and job.state not in jobs.FINAL_STATES:
            yield f"event: progress\ndata: {data}\n\n"
            last_progress, quiet_since = progress, time.monotonic()
        if job.state in jobs.FINAL_STATES:
            yield f"event: end\ndata: {data}\n\n"
            return
        if time.monotonic() - quiet_since > 15:
            yield ": still running\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll)


def _book_file(story_id: str, file_format: ExportFormat, language: Language | None) -> Response:
    book = services.store().book(story_id)
    if book is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"story {story_id!r} has no book yet")
    matches = [
        e
        for e in book.exports
        if e.format == file_format and (language is None or e.language == language)
    ]
    if not matches:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"the book has no {file_format} file" + (f" in {language}" if language else ""),
        )
    export = matches[0]
    data = services.media().read(export.public_id, kind="file", extension=file_format)
    name = f"{story_id}{'-' + export.language if export.language else ''}.{file_format}"
    headers = {"Cache-Control": "private, max-age=300"}
    if file_format != "html":
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(data, media_type=CONTENT_TYPES[file_format], headers=headers)

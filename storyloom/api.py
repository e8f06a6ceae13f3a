"""The HTTP API for applications: stories, books and their files, share links.

Every request but a share link's carries `Authorization: Bearer KEY`. A tenant's key
reaches that tenant's stories only (another tenant's story is a 404, as if it did not
exist); an admin key reaches every story. Keys are stored hashed (store/access.py)
and never logged. The book's files are served from where the generation stored them;
a share link serves the reader page to anyone holding it, until it expires or is
revoked.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError

from storyloom import services
from storyloom.models import CreativeStory, ExportFormat, Language, LifeStory, Story
from storyloom.store.access import Caller
from storyloom.store.records import GenerationInfo, StoryBook, StorySummary
from storyloom.store.repository import StoryExistsError, StoryNotFoundError

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
    expires_in_hours: float = Field(168, gt=0, le=24 * 365, examples=[72])


class ShareLink(BaseModel):
    id: str
    story_id: str
    url: str | None = Field(None, description="shown once, when the link is made")
    created_at: datetime
    expires_at: datetime
    revoked: bool = False


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


def _reachable(who: Caller, story_id: str) -> None:
    """404 unless the story exists and the caller may see it (admins see every story)."""
    exists, owner = services.store().owner(story_id)
    if not exists or (not who.is_admin and owner != who.tenant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no story {story_id!r}")


def create_app() -> FastAPI:
    app = FastAPI(
        title="storyloom",
        version="1",
        summary="Stories in, storybooks out: pages, pictures, read-along narration.",
    )

    @app.exception_handler(ValidationError)
    async def invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.errors(include_url=False, include_context=False)},
            status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.post("/v1/stories", status_code=201, tags=["stories"])
    def create_story(story: Story, who: Who) -> LifeStory | CreativeStory:
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
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> StoryPage:
        """The caller's stories, most recently updated first."""
        store = services.store()
        stories = store.list_stories()
        if not who.is_admin:
            assert who.tenant_id is not None
            mine = set(store.story_ids_of(who.tenant_id))
            stories = [s for s in stories if s.id in mine]
        return StoryPage(
            items=stories[offset : offset + limit], total=len(stories), limit=limit, offset=offset
        )

    @app.get("/v1/stories/{story_id}", tags=["stories"])
    def read_story(story_id: str, who: Who) -> LifeStory | CreativeStory:
        _reachable(who, story_id)
        return services.store().get_story(story_id)

    @app.put("/v1/stories/{story_id}", tags=["stories"])
    def replace_story(story_id: str, story: Story, who: Who) -> LifeStory | CreativeStory:
        """Replace a story's material; its books stay until it is generated again."""
        _reachable(who, story_id)
        if story.id != story_id:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [{"loc": ["body", "id"], "msg": f"must be {story_id!r}, the story's id"}],
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

    return app


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

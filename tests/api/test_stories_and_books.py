"""The HTTP API over real HTTP (uvicorn on loopback): keys, tenants, stories, books, the
book's files and share links."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from storyloom import services
from storyloom.api import create_app
from storyloom.models import BookExport, GenerationConfig, Page
from tests.fakes.server import serve

SAMPLES = Path(__file__).parents[2] / "storyloom" / "samples"
STORY = json.loads((SAMPLES / "creative-story.json").read_text())


@pytest.fixture
def api() -> Iterator[str]:
    with serve(create_app()) as base_url:
        yield base_url


@pytest.fixture
def keys() -> dict[str, str]:
    store = services.store()
    return {
        "a": store.add_tenant("tenant-a", "Tenant A"),
        "b": store.add_tenant("tenant-b"),
        "admin": store.add_key(None),
    }


def client(api: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api, headers=headers, timeout=10)


def story(story_id: str = "lantern", **changes: Any) -> dict[str, Any]:
    return {**STORY, "id": story_id, **changes}


def publish_book(story_id: str) -> dict[str, bytes]:
    """A published generation with pages and three stored book files; their bytes."""
    store, media = services.store(), services.media()
    generation = store.start_generation(story_id, GenerationConfig(pages=1), prompt_version="t")
    store.save_pages(generation, [Page(number=1, text="Once upon a time.", words=4)])
    files = {
        ("html", None): b"<!doctype html><title>reader</title>",
        ("epub", "en-IN"): b"PK\x03\x04 an epub",
        ("pdf", None): b"%PDF-1.7 a pdf",
    }
    exports = []
    for (fmt, language), data in files.items():
        stored = media.put(f"stories/{story_id}/books/book-{fmt}", data, kind="file", extension=fmt)
        store.record_media(generation, stored, "file")
        exports.append(
            BookExport(format=fmt, language=language, public_id=stored.public_id,  # type: ignore[arg-type]
                       url=stored.url, version=stored.version, bytes=stored.bytes)
        )  # fmt: skip
    store.save_exports(generation, exports)
    store.publish(generation)
    return {fmt: data for (fmt, _), data in files.items()}


def test_no_key_or_a_bad_key_is_401_and_the_key_is_never_echoed(
    api: str, keys: dict[str, str]
) -> None:
    answer = client(api, None).get("/v1/stories")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    forged = keys["a"][:-4] + "AAAA"
    for key in (forged, "not-a-key", "sl_000000000000_" + "x" * 40):
        answer = client(api, key).get("/v1/stories")
        assert answer.status_code == 401
        assert key not in answer.text
    services.store().revoke_key(keys["a"].split("_")[1])
    assert client(api, keys["a"]).get("/v1/stories").status_code == 401


def test_keys_are_stored_hashed(keys: dict[str, str]) -> None:
    store = services.store()
    with store.engine.connect() as connection:
        dumped = repr(connection.exec_driver_sql("select * from api_keys").fetchall())
    assert dumped.count("tenant-a") == 1  # the rows are there
    for key in keys.values():
        secret = key.split("_", 2)[2]
        assert secret not in dumped


def test_a_story_is_created_validated_and_replaced(api: str, keys: dict[str, str]) -> None:
    a = client(api, keys["a"])
    created = a.post("/v1/stories", json=story())
    assert created.status_code == 201, created.text
    assert created.json()["title"] == STORY["title"]
    assert a.post("/v1/stories", json=story()).status_code == 409

    bad = a.post("/v1/stories", json=story("other", language="xx-XX"))
    assert bad.status_code == 422
    assert any(e["loc"][-1] == "language" for e in bad.json()["detail"]), bad.json()
    missing = a.post("/v1/stories", json={k: v for k, v in story("other").items() if k != "title"})
    assert missing.status_code == 422
    assert any("title" in e["loc"] for e in missing.json()["detail"])

    replaced = a.put("/v1/stories/lantern", json=story(title="The Lantern, Again"))
    assert replaced.status_code == 200
    assert a.get("/v1/stories/lantern").json()["title"] == "The Lantern, Again"
    assert a.put("/v1/stories/lantern", json=story("elsewhere")).status_code == 422

    listed = a.get("/v1/stories", params={"limit": 1}).json()
    assert listed["total"] == 1
    assert [s["id"] for s in listed["items"]] == ["lantern"]


def test_a_tenant_reaches_only_its_own_stories(api: str, keys: dict[str, str]) -> None:
    a, b, admin = (client(api, keys[k]) for k in ("a", "b", "admin"))
    assert a.post("/v1/stories", json=story()).status_code == 201
    publish_book("lantern")
    a_share = a.post("/v1/stories/lantern/shares", json={}).json()

    for method, path in [
        ("GET", "/v1/stories/lantern"),
        ("PUT", "/v1/stories/lantern"),
        ("DELETE", "/v1/stories/lantern"),
        ("GET", "/v1/stories/lantern/book"),
        ("GET", "/v1/stories/lantern/generations"),
        ("GET", "/v1/stories/lantern/book/files/html"),
        ("POST", "/v1/stories/lantern/shares"),
        ("GET", "/v1/stories/lantern/shares"),
        ("DELETE", f"/v1/stories/lantern/shares/{a_share['id']}"),
    ]:
        body = story() if method == "PUT" else {} if method == "POST" else None
        answer = b.request(method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.status_code)
        assert "lantern" in answer.text or "no story" in answer.text
    assert b.get("/v1/stories").json()["items"] == []
    # The story is untouched, and an admin sees every story.
    assert a.get("/v1/stories/lantern").status_code == 200
    assert [s["id"] for s in admin.get("/v1/stories").json()["items"]] == ["lantern"]
    assert admin.get("/v1/stories/lantern/book").status_code == 200


def test_the_book_and_its_files(api: str, keys: dict[str, str]) -> None:
    a = client(api, keys["a"])
    a.post("/v1/stories", json=story())
    assert a.get("/v1/stories/lantern/book").status_code == 404  # nothing published yet
    files = publish_book("lantern")

    book = a.get("/v1/stories/lantern/book").json()
    assert [p["text"] for p in book["pages"]] == ["Once upon a time."]
    assert sorted(e["format"] for e in book["exports"]) == ["epub", "html", "pdf"]
    assert [g["status"] for g in a.get("/v1/stories/lantern/generations").json()] == ["complete"]

    for fmt, kind in (("html", "text/html"), ("epub", "application/epub+zip"),
                      ("pdf", "application/pdf")):  # fmt: skip
        answer = a.get(f"/v1/stories/lantern/book/files/{fmt}")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(kind)
        assert answer.content == files[fmt]
    epub = a.get("/v1/stories/lantern/book/files/epub", params={"language": "en-IN"})
    assert epub.headers["content-disposition"] == 'attachment; filename="lantern-en-IN.epub"'
    assert (
        a.get("/v1/stories/lantern/book/files/epub", params={"language": "ta-IN"}).status_code
        == 404
    )
    assert a.get("/v1/stories/lantern/book/files/docx").status_code == 422


def test_a_share_link_opens_the_reader_until_revoked_or_expired(
    api: str, keys: dict[str, str]
) -> None:
    a = client(api, keys["a"])
    a.post("/v1/stories", json=story())
    files = publish_book("lantern")
    anyone = httpx.Client(timeout=10)

    link = a.post("/v1/stories/lantern/shares", json={"expires_in_hours": 24}).json()
    opened = anyone.get(link["url"])
    assert opened.status_code == 200
    assert opened.content == files["html"]
    listed = a.get("/v1/stories/lantern/shares").json()
    assert [(s["id"], s["url"], s["revoked"]) for s in listed] == [(link["id"], None, False)]

    assert a.delete(f"/v1/stories/lantern/shares/{link['id']}").status_code == 204
    assert anyone.get(link["url"]).status_code == 404
    assert a.delete(f"/v1/stories/lantern/shares/{link['id']}").status_code == 404

    brief = a.post("/v1/stories/lantern/shares", json={"expires_in_hours": 1 / 3600}).json()
    time.sleep(1.2)
    assert anyone.get(brief["url"]).status_code == 404
    assert anyone.get(link["url"].rsplit("/", 1)[0] + "/made-up-token").status_code == 404


def test_deleting_a_story_deletes_its_files(api: str, keys: dict[str, str]) -> None:
    a = client(api, keys["a"])
    a.post("/v1/stories", json=story())
    publish_book("lantern")
    folder = services.media().root / "stories" / "lantern"  # type: ignore[attr-defined]
    assert any(folder.rglob("*.pdf"))

    assert a.delete("/v1/stories/lantern").status_code == 204

    assert not folder.exists()
    assert a.get("/v1/stories/lantern").status_code == 404
    assert services.store().list_stories() == []


def test_the_openapi_schema_documents_every_route(api: str) -> None:
    schema = httpx.get(f"{api}/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/v1/stories", "/v1/stories/{story_id}", "/v1/stories/{story_id}/book",
        "/v1/stories/{story_id}/generations", "/v1/stories/{story_id}/book/files/{file_format}",
        "/v1/stories/{story_id}/shares", "/v1/stories/{story_id}/shares/{share_id}", "/s/{token}",
    } <= paths  # fmt: skip
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # Every body an application sends comes with an example, every route with its
    # errors.
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if "requestBody" in operation:
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                if "$ref" in body:
                    body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
                assert "examples" in body or "example" in body, (method, path)
            if path.startswith("/v1/"):
                assert {"401", "404"} <= set(operation["responses"]), (method, path)

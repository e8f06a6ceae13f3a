"""CloudinaryMediaStore against the loopback Cloudinary fake, over real HTTP, signed and
addressed by the real cloudinary SDK's helpers; and the error mapping, which is pure."""

from __future__ import annotations

import io
import socket
import time
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import cloudinary
import cloudinary.utils
import httpx
import pytest
from PIL import Image

from storyloom.media.base import MediaStore, audio_public_id, image_public_id
from storyloom.media.cloudinary import CloudinaryMediaStore, cloudinary_error, transport_error
from storyloom.providers.errors import (
    AccountError,
    PermanentError,
    ProviderError,
    TransientError,
)
from tests.fakes.cloudinary import CloudinaryState, cloudinary_fake, signature_for
from tests.fakes.server import Fault

SECRET = "s3cret"
UPLOAD = "/demo/image/upload"  # the Upload API path only, not .../resources/image/upload
ADMIN = "/demo/resources/"


def png(width: int = 64, height: int = 48, colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def wav(seconds: float = 1.5, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x01" * int(seconds * rate))
    return buffer.getvalue()


def url_for(base_url: str, secret: str = SECRET) -> str:
    return f"cloudinary://123:{secret}@demo?upload_prefix={base_url}"


def messages(exc: BaseException) -> str:
    """The text of an exception and of everything chained to it."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, CloudinaryState]]:
    # One server for the module (starting and stopping one costs about 0.2 s); each test
    # starts from an empty account with every knob at its default.
    with cloudinary_fake() as base_url_and_state:
        yield base_url_and_state


@pytest.fixture
def fake(served: tuple[str, CloudinaryState]) -> tuple[str, CloudinaryState]:
    served[1].reset()
    return served


@pytest.fixture
def store(fake: tuple[str, CloudinaryState]) -> CloudinaryMediaStore:
    return CloudinaryMediaStore.from_url(url_for(fake[0]))


@pytest.fixture
def state(fake: tuple[str, CloudinaryState]) -> CloudinaryState:
    return fake[1]


# --- uploads ------------------------------------------------------------------------------


def test_is_a_media_store(store: CloudinaryMediaStore) -> None:
    assert isinstance(store, MediaStore)
    assert store.name == "cloudinary"


def test_image_upload_exact_public_id_and_options(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    data = png()
    stored = store.put("stories/s1/images/page-03", data, kind="image", extension="png")

    asset = state.asset("image", "stories/s1/images/page-03")
    assert asset is not None
    assert state.public_ids() == ["stories/s1/images/page-03"]  # nothing random, no suffix
    assert asset.data == data
    assert asset.format == "png"
    assert asset.answer["width"] == 64
    assert asset.answer["height"] == 48
    # Deterministic and idempotent: overwrite, no unique suffix, CDN invalidated.
    assert asset.params["overwrite"] == "1"
    assert asset.params["unique_filename"] == "0"
    assert asset.params["invalidate"] == "1"
    assert asset.params["asset_folder"] == "stories/s1/images"
    assert "upload_preset" not in asset.params
    assert stored.public_id == "stories/s1/images/page-03"
    assert stored.version == str(asset.version)
    assert stored.bytes == len(data)


def test_image_urls_are_versioned_with_auto_format_and_a_thumbnail(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    stored = store.put("stories/s1/images/page-01", png(), kind="image", extension="png")

    v = stored.version
    pid = "stories/s1/images/page-01"
    assert stored.url == f"https://res.cloudinary.com/demo/image/upload/f_auto,q_auto/v{v}/{pid}"
    assert stored.thumbnail_url == (
        f"https://res.cloudinary.com/demo/image/upload/c_fill,f_auto,h_300,q_auto,w_400/v{v}/{pid}"
    )


def test_audio_uploads_as_video_and_is_delivered_as_stored(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    data = wav(seconds=1.5)
    stored = store.put("stories/s1/audio/hi-IN/chapter-01", data, kind="audio", extension="wav")

    pid = "stories/s1/audio/hi-IN/chapter-01"
    assert state.public_ids("image") == []
    asset = state.asset("video", pid)
    assert asset is not None
    assert asset.answer["is_audio"] is True
    assert asset.answer["duration"] == pytest.approx(1.5)
    assert asset.answer["audio"]["frequency"] == 16000
    assert asset.params["asset_folder"] == "stories/s1/audio/hi-IN"
    assert stored.url == asset.answer["secure_url"]
    assert stored.url == f"https://res.cloudinary.com/demo/video/upload/v{stored.version}/{pid}.wav"
    assert stored.thumbnail_url == ""
    assert stored.bytes == len(data)


def test_overwrite_bumps_version_and_changes_every_url(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    pid = "stories/s1/images/page-02"
    first = store.put(pid, png(colour="red"), kind="image", extension="png")
    second = store.put(pid, png(colour="blue"), kind="image", extension="png")

    assert int(second.version) > int(first.version)
    assert second.url != first.url
    assert second.thumbnail_url != first.thumbnail_url
    assert state.public_ids() == [pid]  # replaced, not duplicated
    asset = state.asset("image", pid)
    assert asset is not None
    assert asset.data == png(colour="blue")


def test_folder_layout_matches_the_local_store(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    store.put("stories/s1/images/page-01", png(), kind="image", extension="png")
    store.put("stories/s1/audio/ta-IN/chapter-02", wav(), kind="audio", extension="wav")

    assert state.public_ids() == [
        "stories/s1/audio/ta-IN/chapter-02",
        "stories/s1/images/page-01",
    ]
    assert {"stories/s1/images", "stories/s1/audio/ta-IN"} <= state.folders


@pytest.mark.parametrize(
    "public_id", ["", "/stories/s1/x", "stories/s1/", "stories/../x", "stories/s1/page.01", "a b"]
)
def test_odd_public_ids_are_refused_before_any_call(
    store: CloudinaryMediaStore, state: CloudinaryState, public_id: str
) -> None:
    with pytest.raises(ValueError, match="public id"):
        store.put(public_id, png(), kind="image", extension="png")
    assert state.calls == []


def test_delete_one_file(store: CloudinaryMediaStore, state: CloudinaryState) -> None:
    pid = "stories/s1/audio/hi-IN/chapter-01"
    store.put(pid, wav(), kind="audio", extension="wav")

    assert store.delete(pid, kind="audio") is True
    assert state.public_ids() == []
    assert store.delete(pid, kind="audio") is False  # "not found" is an answer, not an error


def test_read_gives_back_the_stored_bytes(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    data = png()
    store.put("stories/s1/images/page-01", data, kind="image", extension="png")
    book = b"<html>a book</html>"
    store.put("stories/s1/books/book-hi-IN", book, kind="file", extension="html")

    assert store.read("stories/s1/images/page-01", kind="image", extension="png") == data
    assert store.read("stories/s1/books/book-hi-IN", kind="file", extension="html") == book
    with pytest.raises(FileNotFoundError):
        store.read("stories/s1/images/page-09", kind="image", extension="png")
    # Signed on the API host, like every other call.
    assert [c.path for c in state.calls_to("/download")] == [
        "/v1_1/demo/image/download",
        "/v1_1/demo/raw/download",
        "/v1_1/demo/image/download",
    ]


def test_parallel_uploads_run_side_by_side_on_one_client(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    """A flow uploads many files at once: the store's pool must not queue them."""
    state.latency = 0.3
    pids = [f"stories/s1/images/page-{n:02d}" for n in range(1, 9)]
    started = time.monotonic()

    with ThreadPoolExecutor(8) as pool:
        stored = list(
            pool.map(lambda pid: store.put(pid, png(), kind="image", extension="png"), pids)
        )

    assert [s.public_id for s in stored] == pids
    assert state.max_in_flight == 8
    assert time.monotonic() - started < 2.0  # eight in a row would take 2.4 s


def test_every_call_goes_through_the_client_it_is_given(fake: tuple[str, CloudinaryState]) -> None:
    base_url, _ = fake
    seen: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: seen.append(r.method)]})
    store = CloudinaryMediaStore.from_url(url_for(base_url), http=http)

    store.put("stories/s1/images/page-01", png(), kind="image", extension="png")
    store.delete_story("s1")
    store.close()  # not its client: left open

    assert seen == ["POST", "DELETE", "DELETE", "DELETE", "DELETE"]
    assert not http.is_closed
    http.close()


# --- signature, credentials, account isolation ---------------------------------------------


def test_fake_signs_like_the_sdk() -> None:
    """The fake's check is Cloudinary's: it agrees with the SDK, including `&` in a value."""
    params = {"public_id": "a&b", "timestamp": "1315060510", "overwrite": "1", "folder": ""}
    assert signature_for(params, "abcd") == cloudinary.utils.api_sign_request(params, "abcd")
    assert signature_for(params, "abcd", "sha256") == cloudinary.utils.api_sign_request(
        params, "abcd", "sha256"
    )


def test_wrong_secret_is_permanent_names_cloudinary_and_hides_the_secret(
    fake: tuple[str, CloudinaryState],
) -> None:
    base_url, state = fake
    wrong = "wrong-secret-9f8e7d"
    store = CloudinaryMediaStore.from_url(url_for(base_url, secret=wrong))

    with pytest.raises(PermanentError) as upload_failure:
        store.put("stories/s1/images/page-01", png(), kind="image", extension="png")
    with pytest.raises(PermanentError) as admin_failure:
        store.delete_story("s1")

    for failure in (upload_failure.value, admin_failure.value):
        assert failure.status == 401
        assert "Cloudinary rejected the credentials" in str(failure)
        assert wrong not in messages(failure)
    assert "Invalid Signature" in str(upload_failure.value)
    assert state.public_ids() == []
    assert wrong not in repr(store)
    assert wrong not in str(store)


def test_unknown_api_key_is_permanent(fake: tuple[str, CloudinaryState]) -> None:
    base_url, _ = fake
    store = CloudinaryMediaStore.from_url(
        f"cloudinary://999:{SECRET}@demo?upload_prefix={base_url}"
    )

    with pytest.raises(PermanentError, match="Unknown API key 999") as failure:
        store.put("stories/s1/images/page-01", png(), kind="image", extension="png")
    assert failure.value.status == 401


def test_signature_algorithm_must_match_the_account(fake: tuple[str, CloudinaryState]) -> None:
    base_url, state = fake
    state.signature_algorithm = "sha256"

    with pytest.raises(PermanentError, match="Invalid Signature"):
        CloudinaryMediaStore.from_url(url_for(base_url)).put(
            "stories/s1/images/page-01", png(), kind="image", extension="png"
        )
    stored = CloudinaryMediaStore.from_url(url_for(base_url) + "&signature_algorithm=sha256").put(
        "stories/s1/images/page-01", png(), kind="image", extension="png"
    )
    assert stored.version


def test_stale_timestamp_is_permanent(store: CloudinaryMediaStore, state: CloudinaryState) -> None:
    state.clock_skew = 2 * 3600  # the server's clock two hours ahead of ours

    with pytest.raises(PermanentError, match="Stale request") as failure:
        store.put("stories/s1/images/page-01", png(), kind="image", extension="png")
    assert failure.value.status == 400


def test_two_accounts_in_one_process_do_not_clash() -> None:
    with (
        cloudinary_fake(cloud="alpha", api_key="111", api_secret="secret-a") as (url_a, state_a),
        cloudinary_fake(cloud="beta", api_key="222", api_secret="secret-b") as (url_b, state_b),
    ):
        a = CloudinaryMediaStore.from_url(f"cloudinary://111:secret-a@alpha?upload_prefix={url_a}")
        b = CloudinaryMediaStore.from_url(f"cloudinary://222:secret-b@beta?upload_prefix={url_b}")
        # Interleaved: a global config switched per call would send one to the other.
        first_a = a.put("stories/s1/images/page-01", png(), kind="image", extension="png")
        first_b = b.put("stories/s2/images/page-01", png(), kind="image", extension="png")
        a.put("stories/s1/images/page-02", png(), kind="image", extension="png")

        assert state_a.public_ids() == ["stories/s1/images/page-01", "stories/s1/images/page-02"]
        assert state_b.public_ids() == ["stories/s2/images/page-01"]
        assert "/alpha/" in first_a.url
        assert "/beta/" in first_b.url


@pytest.fixture
def hostile_global_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The SDK's global config pointing somewhere else entirely, as a stray env could."""
    monkeypatch.setenv(
        "CLOUDINARY_URL",
        "cloudinary://666:evil-secret@evilcloud/cdn.evil.example?upload_prefix=http://127.0.0.1:9",
    )
    cloudinary.reset_config()
    cloudinary.config(upload_preset="renames-ids", oauth_token="stray-token", sign_url=True)
    yield
    monkeypatch.delenv("CLOUDINARY_URL")
    cloudinary.reset_config()


@pytest.mark.usefixtures("hostile_global_config")
def test_the_sdk_global_config_is_never_used(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    stored = store.put("stories/s1/images/page-01", png(), kind="image", extension="png")

    asset = state.asset("image", "stories/s1/images/page-01")
    assert asset is not None
    assert "upload_preset" not in asset.params
    assert stored.url.startswith("https://res.cloudinary.com/demo/image/upload/f_auto,q_auto/v")
    assert "s--" not in stored.url  # not signed with anybody's secret
    assert store.delete_story("s1") == 1


# --- delete_story -------------------------------------------------------------------------


def test_delete_story_loops_over_partial_pages_for_images_and_audio(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    for page in range(1, 6):
        picture = png()
        store.put(image_public_id("s1", page, picture), picture, kind="image", extension="png")
    for chapter in range(1, 4):
        speech = wav(0.1)
        store.put(
            audio_public_id("s1", "hi-IN", chapter, speech), speech, kind="audio", extension="wav"
        )
    # s1 is its prefix
    store.put("stories/s10/images/page-01", png(), kind="image", extension="png")
    state.delete_page_size = 2
    state.calls.clear()

    assert store.delete_story("s1") == 8

    assert state.public_ids() == ["stories/s10/images/page-01"]
    assert len(state.calls_to("/resources/image/upload")) == 3  # 2 + 2 + 1
    assert len(state.calls_to("/resources/video/upload")) == 2  # 2 + 1
    folder_calls = state.calls_to("/folders/")
    assert [c.path for c in folder_calls] == ["/v1_1/demo/folders/stories/s1"]
    assert folder_calls[0].status == 200
    assert not any(f.startswith("stories/s1/") or f == "stories/s1" for f in state.folders)
    assert "stories/s10/images" in state.folders
    # Admin API calls carry the key and secret as Basic auth, the prefix in a JSON body.
    first = state.calls_to("/resources/image/upload")[0]
    assert first.headers["authorization"].startswith("Basic ")
    assert b'"prefix": "stories/s1/"' in first.body


def test_delete_story_with_nothing_stored_is_not_an_error(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    assert store.delete_story("never-stored") == 0
    assert [c.status for c in state.calls_to("/folders/")] == [404]


@pytest.mark.parametrize("story_id", ["", "..", "a/b", "S1", "x" * 65])
def test_delete_story_refuses_ids_that_widen_the_prefix(
    store: CloudinaryMediaStore, state: CloudinaryState, story_id: str
) -> None:
    store.put("stories/s1/images/page-01", png(), kind="image", extension="png")

    with pytest.raises(ValueError, match="not a story id"):
        store.delete_story(story_id)
    assert state.public_ids() == ["stories/s1/images/page-01"]
    assert state.calls_to("/resources/") == []


# --- errors ----------------------------------------------------------------------------------


def upload_one(store: CloudinaryMediaStore) -> None:
    store.put("stories/s1/images/page-01", png(), kind="image", extension="png")


def delete_s1(store: CloudinaryMediaStore) -> None:
    store.delete_story("s1")


CALLS: dict[str, Callable[[CloudinaryMediaStore], None]] = {
    "upload": upload_one,  # Upload API: multipart POST, signed
    "admin": delete_s1,  # Admin API: DELETE, Basic auth
}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (420, TransientError),
        (429, TransientError),
        (500, TransientError),
        (502, TransientError),  # no SDK exception class: the status still decides
        (503, TransientError),
        (504, TransientError),
        (400, PermanentError),
        (403, AccountError),
        (404, PermanentError),
    ],
)
@pytest.mark.parametrize("api", ["upload", "admin"])
def test_error_classes_by_status(
    store: CloudinaryMediaStore,
    state: CloudinaryState,
    status: int,
    error: type[ProviderError],
    api: str,
) -> None:
    state.schedule(Fault(status=status, path_contains=UPLOAD if api == "upload" else ADMIN))

    with pytest.raises(ProviderError) as failure:
        CALLS[api](store)
    assert type(failure.value) is error
    assert failure.value.status == status
    assert "Cloudinary" in str(failure.value)


@pytest.mark.parametrize("api", ["upload", "admin"])
def test_rate_limit_carries_the_wait_the_answer_names(
    store: CloudinaryMediaStore, state: CloudinaryState, api: str
) -> None:
    state.schedule(
        Fault(status=420, retry_after=30, path_contains=UPLOAD if api == "upload" else ADMIN)
    )

    with pytest.raises(TransientError) as failure:
        CALLS[api](store)
    assert failure.value.retry_after is not None
    assert 28 <= failure.value.retry_after <= 31


def test_rate_limit_reset_is_read_against_the_injected_clock(
    fake: tuple[str, CloudinaryState],
) -> None:
    base_url, state = fake
    store = CloudinaryMediaStore.from_url(url_for(base_url), clock=lambda: time.time() - 100)
    state.schedule(Fault(status=429, retry_after=30, path_contains=UPLOAD))

    with pytest.raises(TransientError) as failure:
        store.put("stories/s1/images/page-01", png(), kind="image", extension="png")
    assert failure.value.retry_after is not None
    assert 128 <= failure.value.retry_after <= 131


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("api", ["upload", "admin"])
def test_no_call_is_retried_or_slept_on_inside_the_store(
    store: CloudinaryMediaStore, state: CloudinaryState, status: int, api: str
) -> None:
    """The SDK's urllib3 pools would sleep Retry-After and repeat a DELETE; Prefect owns
    retries, so the answer comes back at once with the wait it asked for."""
    path = UPLOAD if api == "upload" else ADMIN
    # A short wait, so a regression fails in a second instead of hanging.
    state.schedule(Fault(status=status, retry_after=1, path_contains=path))

    with pytest.raises(TransientError) as failure:
        CALLS[api](store)
    assert [c.status for c in state.calls_to(path)] == [status]
    assert failure.value.retry_after is not None
    assert 0 <= failure.value.retry_after <= 2  # the message names whole seconds


def test_a_retry_after_header_on_a_server_error_is_kept(
    store: CloudinaryMediaStore, state: CloudinaryState
) -> None:
    state.schedule(Fault(status=503, retry_after=7, path_contains=UPLOAD))

    with pytest.raises(TransientError) as failure:
        upload_one(store)
    assert failure.value.retry_after == 7


def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens there now.
    store = CloudinaryMediaStore.from_url(url_for(f"http://127.0.0.1:{port}"))

    with pytest.raises(TransientError, match="could not reach Cloudinary") as upload_failure:
        store.put("stories/s1/images/page-01", png(), kind="image", extension="png")
    with pytest.raises(TransientError, match="could not reach Cloudinary"):
        store.delete_story("s1")
    assert SECRET not in messages(upload_failure.value)


def test_timeout_is_transient() -> None:
    # Its own server: the slow answer is still pending when the test ends, and stopping
    # this server waits for it instead of letting it land in the next test's call log.
    with cloudinary_fake() as (base_url, state):
        store = CloudinaryMediaStore.from_url(url_for(base_url), timeout=0.1)
        state.schedule(Fault(status=None, delay=0.5, path_contains=UPLOAD))

        with pytest.raises(TransientError, match="did not answer in time"):
            store.put("stories/s1/images/page-01", png(), kind="image", extension="png")


def test_invalid_image_is_permanent(store: CloudinaryMediaStore) -> None:
    with pytest.raises(PermanentError, match="Invalid image file") as failure:
        store.put("stories/s1/images/page-01", b"not an image", kind="image", extension="png")
    assert failure.value.status == 400


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, PermanentError),
        (401, AccountError),
        (403, AccountError),
        (404, PermanentError),
        (408, TransientError),
        (409, PermanentError),
        (420, TransientError),
        (429, TransientError),
        (500, TransientError),
        (502, TransientError),
        (504, TransientError),
    ],
)
def test_error_mapping(status: int, error: type[ProviderError]) -> None:
    mapped = cloudinary_error(status, "what the server said", secret=SECRET, now=time.time())
    assert type(mapped) is error
    assert mapped.status == status
    assert mapped.provider == "cloudinary"
    assert "what the server said" in str(mapped)


def test_a_rate_limit_prefers_the_reset_time_its_message_names() -> None:
    text = "Rate Limit Exceeded. Try again on 2026-11-29 14:00:00 UTC"
    at_13_59 = 1_795_960_740.0  # 2026-11-29 13:59:00 UTC
    named = cloudinary_error(429, text, secret=SECRET, now=at_13_59, retry_after=5)
    unnamed = cloudinary_error(429, "Rate Limit Exceeded", secret=SECRET, now=0.0, retry_after=5)
    assert isinstance(named, TransientError)
    assert isinstance(unnamed, TransientError)
    assert named.retry_after == 60
    assert unnamed.retry_after == 5


@pytest.mark.parametrize(
    ("raised", "error", "said"),
    [
        (httpx.ReadTimeout("timed out"), TransientError, "did not answer in time"),
        (httpx.ConnectError("refused"), TransientError, "could not reach Cloudinary"),
        (httpx.RemoteProtocolError("dropped"), TransientError, "could not reach Cloudinary"),
        (httpx.UnsupportedProtocol("ftp"), PermanentError, "refused before sending"),
    ],
)
def test_transport_error_mapping(
    raised: httpx.HTTPError, error: type[ProviderError], said: str
) -> None:
    mapped = transport_error(raised, secret=SECRET)
    assert type(mapped) is error
    assert said in str(mapped)
    assert mapped.status is None


def test_error_mapping_scrubs_the_secret() -> None:
    mapped = cloudinary_error(400, f"echoed {SECRET} back", secret=SECRET, now=0.0)
    transported = transport_error(httpx.ConnectError(f"to {SECRET}"), secret=SECRET)
    for error in (mapped, transported):
        assert SECRET not in str(error)
        assert "***" in str(error)


# --- configuration ------------------------------------------------------------------------


def test_from_url_reads_the_cloudinary_url() -> None:
    store = CloudinaryMediaStore.from_url(
        "cloudinary://123:abc@mycloud?upload_prefix=http://127.0.0.1:5000/&signature_algorithm=sha256"
    )
    assert store.cloud_name == "mycloud"
    assert store.api_key == "123"
    assert store.upload_prefix == "http://127.0.0.1:5000"
    assert store.signature_algorithm == "sha256"
    assert repr(store) == "CloudinaryMediaStore(cloud_name='mycloud', api_key='123')"


def test_a_private_cdn_in_the_url_moves_delivery_urls() -> None:
    store = CloudinaryMediaStore.from_url("cloudinary://123:abc@mycloud/media.example.com")
    assert store.url("stories/s1/images/page-01", "7", "image") == (
        "https://media.example.com/image/upload/v7/stories/s1/images/page-01"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://123:hidden-secret@demo",
        "cloudinary://123@demo",
        "cloudinary://:hidden-secret@demo",
        "cloudinary://123:hidden-secret@demo?api_proxy=http://x",
    ],
)
def test_bad_urls_are_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(ValueError, match="Cloudinary") as failure:
        CloudinaryMediaStore.from_url(url)
    assert "hidden-secret" not in str(failure.value)


def test_explicit_construction_needs_every_credential() -> None:
    with pytest.raises(ValueError, match="API secret"):
        CloudinaryMediaStore(cloud_name="demo", api_key="123", api_secret="")

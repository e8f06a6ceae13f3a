"""storyloom.doctor.diagnose against the offline default and the three loopback fakes,
over real HTTP through the real SDKs: who serves each role, and whether it answers."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storyloom.doctor import ROLES, Check, check_target, diagnose
from storyloom.settings import Settings
from storyloom.store.migrator import head_revision
from storyloom.store.repository import StoryStore
from tests.fakes.cloudinary import CloudinaryState, cloudinary_fake
from tests.fakes.gemini import GeminiState, error_body, gemini_fake
from tests.fakes.sarvam import sarvam_fake
from tests.fakes.server import FakeState, Fault

GEMINI_KEY = "gemini-key-s3cret-4711"
SARVAM_KEY = "sarvam-key-s3cret-0815"
CLOUD = "storyloom-test"
CLOUDINARY_KEY = "614837298516243"
CLOUDINARY_SECRET = "cld-s3cret-9d8f7e"
DB_PASSWORD = "db-s3cret-pw"
SECRETS = (GEMINI_KEY, SARVAM_KEY, CLOUDINARY_KEY, CLOUDINARY_SECRET, DB_PASSWORD)


@pytest.fixture(scope="module")
def gemini() -> Iterator[tuple[str, GeminiState]]:
    with gemini_fake(api_key=GEMINI_KEY) as served:
        yield served


@pytest.fixture(scope="module")
def sarvam() -> Iterator[tuple[str, FakeState]]:
    with sarvam_fake(api_key=SARVAM_KEY) as served:
        yield served


@pytest.fixture(scope="module")
def cloudinary() -> Iterator[tuple[str, CloudinaryState]]:
    with cloudinary_fake(CLOUD, CLOUDINARY_KEY, CLOUDINARY_SECRET) as served:
        yield served


@pytest.fixture
def fakes(
    gemini: tuple[str, GeminiState],
    sarvam: tuple[str, FakeState],
    cloudinary: tuple[str, CloudinaryState],
) -> Iterator[dict[str, str]]:
    """The three fakes with clean logs; yields their base URLs by name."""
    states: list[FakeState] = [gemini[1], sarvam[1], cloudinary[1]]
    for state in states:
        state.reset()
    yield {"gemini": gemini[0], "sarvam": sarvam[0], "cloudinary": cloudinary[0]}
    for state in states:
        state.reset()


def cloudinary_url(
    base_url: str, key: str = CLOUDINARY_KEY, secret: str = CLOUDINARY_SECRET
) -> str:
    return f"cloudinary://{key}:{secret}@{CLOUD}?upload_prefix={base_url}"


def real_settings(urls: dict[str, str], **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "gemini_api_key": GEMINI_KEY,
        "gemini_base_url": urls["gemini"],
        "sarvam_api_key": SARVAM_KEY,
        "sarvam_base_url": urls["sarvam"],
        "cloudinary_url": cloudinary_url(urls["cloudinary"]),
    }
    values.update(changes)
    return Settings(**values)


def by_role(checks: list[Check]) -> dict[str, Check]:
    assert [c.role for c in checks] == list(ROLES)
    return {c.role: c for c in checks}


def assert_no_secret(checks: list[Check]) -> None:
    for check in checks:
        for secret in SECRETS:
            assert secret not in check.detail, (check.role, check.detail)
            assert secret not in check.provider


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A loopback server that takes connections and never answers; closing it resets them."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


# ---------------------------------------------------------------------- offline


def test_offline_default_is_all_ok_and_nothing_real(no_database: Path) -> None:
    checks = by_role(diagnose(Settings()))

    assert all(c.ok for c in checks.values()), checks
    assert not any(c.real for c in checks.values())
    assert checks["text"].provider == "offline-writer"
    assert checks["image"].provider == "offline-illustrator"
    assert checks["speech"].provider == "offline-espeak"
    assert "espeak-ng-data" in checks["speech"].detail
    assert checks["translation"].provider == "offline-translator"
    assert checks["translation"].detail.startswith("ready (cannot translate")
    assert checks["media"].provider == "local"
    assert (no_database / "media").is_dir()  # created, as a first run would
    assert checks["database"].provider == "sqlite"
    assert "no database yet" in checks["database"].detail
    assert not (no_database / "storyloom.db").exists()  # doctor creates no database


def test_a_migrated_database_is_reported_at_head(clean_env: Path) -> None:
    settings = Settings()
    StoryStore.open(settings.database_url, migrate=True).close()

    database = by_role(diagnose(settings))["database"]

    assert database.ok
    assert (
        database.detail == f"sqlite:///{clean_env}/storyloom.db: connected, schema at head "
        f"({head_revision()})"
    )


def test_an_empty_database_has_no_schema_yet(no_database: Path) -> None:
    no_database.mkdir(parents=True)
    sqlite3.connect(no_database / "storyloom.db").close()

    database = by_role(diagnose(Settings()))["database"]

    assert database.ok
    assert "no schema yet" in database.detail


def test_a_database_at_an_unknown_revision_fails(no_database: Path) -> None:
    no_database.mkdir(parents=True)
    with sqlite3.connect(no_database / "storyloom.db") as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('9999')")
    db.close()

    database = by_role(diagnose(Settings()))["database"]

    assert not database.ok
    assert "at 9999, a revision this code does not know" in database.detail


def test_an_unreachable_database_fails_quickly_with_its_password_hidden() -> None:
    port = closed_port()
    url = f"postgresql://story:{DB_PASSWORD}@127.0.0.1:{port}/storyloom"
    started = time.monotonic()

    checks = diagnose(Settings(database_url=url))

    assert time.monotonic() - started < 5
    database = by_role(checks)["database"]
    assert (database.provider, database.real, database.ok) == ("postgresql", True, False)
    assert database.detail.startswith(
        f"postgresql://story:***@127.0.0.1:{port}/storyloom: cannot connect: "
    )
    assert_no_secret(checks)


def test_a_database_url_that_does_not_parse_names_the_setting() -> None:
    checks = diagnose(Settings(database_url=f"postgresql://story:{DB_PASSWORD}@host:port/db"))

    database = by_role(checks)["database"]
    assert not database.ok
    assert "STORYLOOM_DATABASE_URL" in database.detail
    assert_no_secret(checks)


# ---------------------------------------------------------------------- real, all ok


def test_all_real_providers_answer_and_each_fake_saw_only_its_probe(
    fakes: dict[str, str],
    gemini: tuple[str, GeminiState],
    sarvam: tuple[str, FakeState],
    cloudinary: tuple[str, CloudinaryState],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The keys come the way a user gives them: environment variables by their usual names.
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.setenv("STORYLOOM_GEMINI_BASE_URL", fakes["gemini"])
    monkeypatch.setenv("SARVAM_API_KEY", SARVAM_KEY)
    monkeypatch.setenv("STORYLOOM_SARVAM_BASE_URL", fakes["sarvam"])
    monkeypatch.setenv("CLOUDINARY_URL", cloudinary_url(fakes["cloudinary"]))

    checks = diagnose(Settings())

    roles = by_role(checks)
    assert all(c.ok for c in checks), checks
    assert [c.role for c in checks if c.real] == ["text", "image", "speech", "translation", "media"]
    assert roles["text"] == Check(
        "text", "gemini:gemini-2.5-flash", True, True, "model gemini-2.5-flash found"
    )
    assert roles["image"].detail == "model gemini-3.1-flash-image found"
    assert roles["speech"] == Check(
        "speech", "sarvam/bulbul:v3", True, True, "answered (spoke 1 word as shubh)"
    )
    assert roles["translation"].detail == "answered (translated 2 words)"
    assert roles["media"] == Check("media", "cloudinary", True, True, "ping ok")

    def seen(state: FakeState) -> list[tuple[str, str, int]]:
        return sorted((c.method, c.path, c.status) for c in state.calls)

    assert seen(gemini[1]) == [
        ("GET", "/v1beta/models/gemini-2.5-flash", 200),
        ("GET", "/v1beta/models/gemini-3.1-flash-image", 200),
    ]
    assert all(c.headers["x-goog-api-key"] == GEMINI_KEY for c in gemini[1].calls)
    assert gemini[1].requests == []  # no generateContent: no tokens spent
    assert seen(sarvam[1]) == [("POST", "/text-to-speech", 200), ("POST", "/translate", 200)]
    assert seen(cloudinary[1]) == [("GET", f"/v1_1/{CLOUD}/ping", 200)]
    assert cloudinary[1].public_ids() == []  # nothing uploaded


def test_probes_run_side_by_side(
    fakes: dict[str, str],
    gemini: tuple[str, GeminiState],
    sarvam: tuple[str, FakeState],
    cloudinary: tuple[str, CloudinaryState],
) -> None:
    # Each fake answers in 0.4 s; one after another, six probes would take 2 s.
    for state in (gemini[1], sarvam[1], cloudinary[1]):
        state.latency = 0.4
    started = time.monotonic()

    checks = diagnose(real_settings(fakes))

    assert all(c.ok for c in checks), checks
    assert time.monotonic() - started < 1.5
    assert gemini[1].max_in_flight == 2
    assert sarvam[1].max_in_flight == 2


def test_an_unknown_model_fails_only_its_role(
    fakes: dict[str, str], gemini: tuple[str, GeminiState]
) -> None:
    gemini[1].models = frozenset({"gemini-2.5-flash"})

    roles = by_role(diagnose(real_settings(fakes)))

    assert roles["text"].ok
    assert not roles["image"].ok
    assert roles["image"].detail.startswith("gemini-image: Gemini does not know this model")
    assert "gemini-3.1-flash-image" in roles["image"].detail


# ---------------------------------------------------------------------- wrong keys


def test_a_wrong_gemini_key_fails_text_and_image_only(fakes: dict[str, str]) -> None:
    wrong = "gemini-wrong-s3cret-1234"
    checks = diagnose(real_settings(fakes, gemini_api_key=wrong))

    roles = by_role(checks)
    assert [c.role for c in checks if not c.ok] == ["text", "image"]
    assert roles["text"].detail.startswith("gemini-text: Gemini rejected the API key")
    assert roles["image"].detail.startswith("gemini-image: Gemini rejected the API key")
    assert all(wrong not in c.detail for c in checks)


def test_a_wrong_sarvam_key_fails_speech_and_translation_only(fakes: dict[str, str]) -> None:
    wrong = "sarvam-wrong-s3cret-1234"
    checks = diagnose(real_settings(fakes, sarvam_api_key=wrong))

    roles = by_role(checks)
    assert [c.role for c in checks if not c.ok] == ["speech", "translation"]
    assert roles["speech"].detail.startswith("sarvam-tts: Sarvam rejected the API key")
    assert roles["translation"].detail.startswith("sarvam-translate: Sarvam rejected the API key")


def test_a_wrong_cloudinary_secret_fails_media_only(fakes: dict[str, str]) -> None:
    wrong = "cld-wrong-s3cret"
    url = cloudinary_url(fakes["cloudinary"], secret=wrong)
    checks = diagnose(real_settings(fakes, cloudinary_url=url))

    assert [c.role for c in checks if not c.ok] == ["media"]
    media = by_role(checks)["media"]
    assert media.detail.startswith("cloudinary: Cloudinary rejected the credentials (401")
    assert wrong not in media.detail


def test_keys_the_services_echo_back_never_reach_a_detail(
    fakes: dict[str, str],
    gemini: tuple[str, GeminiState],
    sarvam: tuple[str, FakeState],
    cloudinary: tuple[str, CloudinaryState],
) -> None:
    # Each service quotes the credentials it was sent in its error message.
    gemini[1].schedule(
        Fault(status=403, body=error_body(403, f"key {GEMINI_KEY} may not call this")),
        Fault(status=403, body=error_body(403, f"key {GEMINI_KEY} may not call this")),
    )
    echo = {"error": {"message": f"bad key {SARVAM_KEY}", "code": "invalid_request_error"}}
    sarvam[1].schedule(Fault(status=400, body=echo), Fault(status=400, body=echo))
    # The fake Cloudinary names an unknown API key itself ("Unknown API key ...").
    url = cloudinary_url(fakes["cloudinary"], key="999888777666555")
    cloudinary[1].api_key = "another-key"
    try:
        checks = diagnose(real_settings(fakes, cloudinary_url=url))
    finally:
        cloudinary[1].api_key = CLOUDINARY_KEY

    assert [c.role for c in checks if not c.ok] == [
        "text",
        "image",
        "speech",
        "translation",
        "media",
    ]
    for check in checks[:5]:
        assert "***" in check.detail, check  # the echo arrived, and was masked
    assert all("999888777666555" not in c.detail for c in checks)
    assert_no_secret(checks)


# ---------------------------------------------------------------------- dead services


def test_unreachable_services_fail_quickly() -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    settings = real_settings({"gemini": dead, "sarvam": dead, "cloudinary": dead})
    started = time.monotonic()

    checks = diagnose(settings)

    assert time.monotonic() - started < 5
    roles = by_role(checks)
    assert [c.role for c in checks if not c.ok] == [
        "text",
        "image",
        "speech",
        "translation",
        "media",
    ]
    assert roles["text"].detail.startswith("gemini-text: could not reach Gemini")
    assert roles["speech"].detail.startswith("sarvam-tts: could not reach Sarvam")
    assert roles["media"].detail.startswith("cloudinary: could not reach Cloudinary")
    assert_no_secret(checks)


def test_a_service_that_never_answers_fails_at_the_deadline(
    fakes: dict[str, str], black_hole: str
) -> None:
    settings = real_settings(fakes, cloudinary_url=cloudinary_url(black_hole))
    started = time.monotonic()

    checks = diagnose(settings, timeout=0.3)

    assert time.monotonic() - started < 2
    roles = by_role(checks)
    assert [c.role for c in checks if not c.ok] == ["media"]
    assert roles["media"].detail == "cloudinary: did not answer within 0.3 s"


# ---------------------------------------------------------------------- configuration


def test_text_forced_real_without_a_key_names_the_settings() -> None:
    checks = diagnose(Settings(text_provider="real"))

    roles = by_role(checks)
    assert [c.role for c in checks if not c.ok] == ["text"]
    text = roles["text"]
    assert (text.provider, text.real) == ("gemini", True)
    assert text.detail == (
        "configuration refused: text is set to 'real' but GEMINI_API_KEY is not set "
        "(check STORYLOOM_TEXT_PROVIDER, GEMINI_API_KEY)"
    )
    assert roles["image"].provider == "offline-illustrator"


def test_a_speaker_of_another_model_names_the_speaker_setting(fakes: dict[str, str]) -> None:
    checks = diagnose(real_settings(fakes, sarvam_speaker="anushka"))

    roles = by_role(checks)
    assert [c.role for c in checks if not c.ok] == ["speech", "translation"]
    assert roles["speech"].detail.endswith("(check STORYLOOM_SARVAM_SPEAKER)")
    assert "'anushka' is not a voice of bulbul:v3" in roles["speech"].detail
    assert_no_secret(checks)


def test_a_malformed_cloudinary_url_names_it_without_showing_it(fakes: dict[str, str]) -> None:
    url = f"https://{CLOUDINARY_KEY}:{CLOUDINARY_SECRET}@{CLOUD}"
    checks = diagnose(real_settings(fakes, cloudinary_url=url))

    roles = by_role(checks)
    assert [c.role for c in checks if not c.ok] == ["media"]
    assert (roles["media"].provider, roles["media"].real) == ("cloudinary", True)
    assert "CLOUDINARY_URL" in roles["media"].detail
    assert_no_secret(checks)


def test_a_local_media_folder_that_cannot_be_created_fails(clean_env: Path) -> None:
    blocker = clean_env.parent / "a-file"
    blocker.write_text("not a folder")

    media = by_role(diagnose(Settings(media_root=blocker / "media")))["media"]

    assert not media.ok
    assert media.detail.startswith(f"local: cannot write to {blocker / 'media'}")


# ---------------------------------------------------------------------- one target


class _NoProbe:
    name = "plain"


class _LeakyProbe:
    name = "leaky"

    def probe(self) -> str:
        raise RuntimeError(f"the server said: key {GEMINI_KEY} is wrong")


def test_a_provider_without_a_probe_cannot_be_checked_and_fails() -> None:
    check = check_target("text", _NoProbe(), real=True)

    assert check == Check(
        "text", "plain", True, False, "plain: cannot be checked: _NoProbe has no probe()"
    )


def test_an_unexpected_failure_is_a_failed_check_with_secrets_masked() -> None:
    check = check_target("text", _LeakyProbe(), real=True, secrets=[GEMINI_KEY])

    assert not check.ok
    assert check.detail == "leaky: RuntimeError: the server said: key *** is wrong"

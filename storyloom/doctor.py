"""`storyloom doctor`: which provider serves each role, and whether it answers.

diagnose() builds each role the way a run would (providers.select, media.select), then
calls every provider's `probe()`: the cheapest real call that proves the service answers
with these credentials (a model lookup on Gemini, a ping on Cloudinary, two words
translated and one word spoken on Sarvam, which has no free endpoint), plus a database
connection. Probes run side by side, each under one deadline, on daemon threads: a dead
service makes its check fail after `timeout` seconds and cannot keep doctor, or the
process, from ending.

Nothing here raises for a bad setup: a configuration error becomes a failed Check that
names the setting to fix. No detail holds a secret: every key, secret and password the
settings hold is masked in whatever a provider or driver said.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from pydantic import AliasChoices
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from storyloom.media.base import MediaStore
from storyloom.media.local import LocalMediaStore
from storyloom.media.select import open_media
from storyloom.providers import offline
from storyloom.providers.errors import ProviderError
from storyloom.providers.select import choose_providers
from storyloom.settings import Choice, Settings

ROLES = ("text", "image", "speech", "translation", "media", "database")
DEFAULT_TIMEOUT = 15.0  # seconds each probe may take
MASK = "***"

_OFFLINE = (
    offline.OfflineWriter,
    offline.OfflineIllustrator,
    offline.OfflineSpeaker,
    offline.OfflineTranslator,
    LocalMediaStore,
)

# The settings that decide each role, to name when its configuration is refused.
_ROLE_SETTINGS: dict[str, tuple[str, ...]] = {
    "text": ("text_provider", "gemini_api_key", "gemini_base_url", "gemini_text_model"),
    "image": (
        "image_provider", "gemini_api_key", "gemini_base_url", "gemini_image_model",
        "gemini_image_size",
    ),
    "speech": (
        "speech_provider", "sarvam_api_key", "sarvam_base_url", "sarvam_tts_model",
        "sarvam_speaker", "sarvam_translate_model",
    ),
    "media": ("media_provider", "cloudinary_url"),
}  # fmt: skip
_KEYS = {
    "text": "gemini_api_key",
    "image": "gemini_api_key",
    "speech": "sarvam_api_key",
    "media": "cloudinary_url",
}
_SECRET_SETTINGS = frozenset(_KEYS.values())
# Who would serve a role whose configuration was refused, for the provider column.
_INTENDED = {"text": "gemini", "image": "gemini", "speech": "sarvam", "media": "cloudinary"}


@dataclass(frozen=True)
class Check:
    """One role: who serves it, whether that is a real service, and whether it answered."""

    role: str
    provider: str
    real: bool
    ok: bool
    detail: str


@dataclass(frozen=True)
class _Pending:
    role: str
    provider: str
    real: bool
    run: Callable[[], str]  # the probe: a short detail, or it raises


def diagnose(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> list[Check]:
    """One Check per role (text, image, speech, translation, media, database), in that order."""
    secrets = _secrets(settings)
    # Provider clients get the probe's deadline as their own timeout, so a probe that runs
    # out of time also stops waiting soon after (Cloudinary's comes from its URL).
    quick = settings.model_copy(
        update={
            "gemini_timeout_seconds": min(settings.gemini_timeout_seconds, timeout),
            "sarvam_timeout_seconds": min(settings.sarvam_timeout_seconds, timeout),
        }
    )
    work: list[_Pending | Check] = [
        *_providers(quick, settings, secrets),
        _media(quick, settings, secrets),
        _database(settings.database_url, secrets),
    ]
    return _run(work, timeout, secrets)


def check_target(role: str, target: object, *, real: bool, secrets: Iterable[str] = ()) -> Check:
    """Probe one built provider or media store here and now, without a deadline."""
    return _attempt(_pending(role, target, real=real), tuple(secrets))


def _pending(role: str, target: object, *, real: bool) -> _Pending:
    """The probe of a provider or media store; `probe` is not in the protocols (yet), so a
    class without one fails its check and says so."""
    name = str(getattr(target, "name", type(target).__name__))
    probe = getattr(target, "probe", None)

    def run() -> str:
        if not callable(probe):
            raise ProviderError(name, f"cannot be checked: {type(target).__name__} has no probe()")
        return str(probe())

    return _Pending(role, name, real, run)


# ------------------------------------------------------------------------- building


def _only(settings: Settings, role: str) -> Settings:
    """The settings with every provider role but this one forced offline, so a refused
    configuration is pinned on the role it belongs to."""
    others = {f"{r}_provider": "offline" for r in ("text", "image", "speech") if r != role}
    return settings.model_copy(update=others)


def _providers(
    quick: Settings, settings: Settings, secrets: tuple[str, ...]
) -> list[_Pending | Check]:
    found: list[_Pending | Check] = []
    for role in ("text", "image", "speech"):
        roles = ("speech", "translation") if role == "speech" else (role,)
        try:
            built = choose_providers(_only(quick, role))
        except Exception as error:  # a refused configuration: report it, never raise
            detail = _config_detail(role, error, settings, secrets)
            real = _wants_real(settings, role)
            found += [Check(r, _INTENDED[role], real, False, detail) for r in roles]
            continue
        targets: dict[str, object] = {
            "text": built.writer,
            "image": built.illustrator,
            "speech": built.speaker,
            "translation": built.translator,
        }
        found += [_pending(r, targets[r], real=not isinstance(targets[r], _OFFLINE)) for r in roles]
    return found


def _media(quick: Settings, settings: Settings, secrets: tuple[str, ...]) -> _Pending | Check:
    try:
        store: MediaStore = open_media(quick)
    except Exception as error:
        detail = _config_detail("media", error, settings, secrets)
        return Check("media", _INTENDED["media"], _wants_real(settings, "media"), False, detail)
    return _pending("media", store, real=not isinstance(store, _OFFLINE))


def _wants_real(settings: Settings, role: str) -> bool:
    choice: Choice = getattr(settings, f"{role}_provider")
    has_key = getattr(settings, _KEYS[role]) is not None
    return choice == "real" or (choice == "auto" and has_key)


def setting_name(field: str) -> str:
    """The environment variable a setting is usually given by (GEMINI_API_KEY, STORYLOOM_...)."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        plain = [c for c in alias.choices if isinstance(c, str) and not c.startswith("STORYLOOM_")]
        if plain:
            return plain[0]
    return f"STORYLOOM_{field.upper()}"


def _config_detail(
    role: str, error: Exception, settings: Settings, secrets: tuple[str, ...]
) -> str:
    """The refusal, and the settings it is about: those whose value or name it quotes, or
    else every setting of the role. Secret values are never compared or shown."""
    message = _scrub(str(error) or type(error).__name__, secrets)
    fields = _ROLE_SETTINGS[role]
    named = [
        f
        for f in fields
        if setting_name(f) in message
        or (
            f not in _SECRET_SETTINGS
            and (value := getattr(settings, f)) not in (None, "")
            and f"'{value}'" in message
        )
    ]
    names = ", ".join(setting_name(f) for f in named or fields)
    return f"configuration refused: {message} (check {names})"


# ------------------------------------------------------------------------- database


def _database(url: str, secrets: tuple[str, ...]) -> _Pending | Check:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message repeats the URL, password and all.
        return Check(
            "database", "?", False, False,
            "STORYLOOM_DATABASE_URL is not a SQLAlchemy URL (dialect://user:password@host/name)",
        )  # fmt: skip
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    database = parsed.database or ""
    is_file = backend == "sqlite" and database not in ("", ":memory:")
    if is_file and not database.startswith("file:") and not Path(database).exists():
        # Connecting would create it; doctor changes nothing.
        detail = f"{shown}: no database yet (`storyloom db upgrade` creates it)"
        return Check("database", backend, False, True, detail)

    def run() -> str:
        return f"{shown}: {_database_state(url, shown)}"

    return _Pending("database", backend, backend != "sqlite", run)


def _database_state(url: str, shown: str) -> str:
    """Connect, SELECT 1, and compare the schema's revision with the code's; failures are
    ProviderErrors named by the URL as shown (password hidden)."""
    from storyloom.store import migrator
    from storyloom.store.engine import create_store_engine, reader

    try:
        engine = create_store_engine(url)
        try:
            # Read-only transactions: on SQLite a writing one would queue behind a running
            # pipeline's writes instead of answering.
            with reader(engine).connect() as connection:
                connection.execute(text("SELECT 1"))
            current = migrator.current_revision(reader(engine))
        finally:
            engine.dispose()
    except SQLAlchemyError as error:
        # The driver's own words, first line: SQLAlchemy's adds the SQL and a link.
        said = str(getattr(error, "orig", None) or error).strip().splitlines()
        raise ProviderError(shown, f"cannot connect: {said[0] if said else error}") from None
    head = migrator.head_revision()
    if current == head:
        return f"connected, schema at head ({head})"
    if current is None:
        return f"connected, no schema yet (`storyloom db upgrade` migrates it to {head})"
    try:
        ScriptDirectory(str(migrator.MIGRATIONS)).get_revision(current)
    except CommandError:
        raise ProviderError(
            shown, f"schema at {current}, a revision this code does not know (newer code?)"
        ) from None
    return f"connected, schema at {current}, behind head {head} (run `storyloom db upgrade`)"


# ------------------------------------------------------------------------- running


def _run(work: list[_Pending | Check], timeout: float, secrets: tuple[str, ...]) -> list[Check]:
    """Every pending probe at once, each on a daemon thread, all under one deadline."""
    done: dict[int, Check] = {i: c for i, c in enumerate(work) if isinstance(c, Check)}
    lock = threading.Lock()
    threads: list[threading.Thread] = []
    for i, item in enumerate(work):
        if isinstance(item, Check):
            continue

        def target(i: int = i, item: _Pending = item) -> None:
            result = _attempt(item, secrets)
            with lock:
                done.setdefault(i, result)

        thread = threading.Thread(target=target, name=f"doctor-{item.role}", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        for i, item in enumerate(work):
            if isinstance(item, _Pending) and i not in done:
                late = f"{item.provider}: did not answer within {timeout:g} s"
                done[i] = Check(item.role, item.provider, item.real, False, late)
        return [done[i] for i in range(len(work))]


def _attempt(pending: _Pending, secrets: tuple[str, ...]) -> Check:
    try:
        detail, ok = pending.run(), True
    except ProviderError as error:
        detail, ok = str(error), False
    except Exception as error:  # anything else a driver or SDK raises: a failed check
        detail, ok = f"{pending.provider}: {type(error).__name__}: {error}", False
    return Check(pending.role, pending.provider, pending.real, ok, _scrub(detail, secrets))


# ------------------------------------------------------------------------- secrets


def _secrets(settings: Settings) -> tuple[str, ...]:
    """Every secret value the settings hold, and the parts of the ones that are URLs."""
    found: list[str] = []
    for field in _SECRET_SETTINGS:
        value = getattr(settings, field)
        if value is not None:
            found.append(value.get_secret_value())
    cloudinary = settings.cloudinary_url
    if cloudinary is not None:
        parts = urlsplit(cloudinary.get_secret_value().strip())
        found += [unquote(p) for p in (parts.username, parts.password) if p]
    try:
        password = make_url(settings.database_url).password
    except (ArgumentError, ValueError):
        password = None
    if password:
        found.append(str(password))
    # Longest first: a secret that contains another is masked whole.
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


def _scrub(detail: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        detail = detail.replace(secret, MASK)
    return detail

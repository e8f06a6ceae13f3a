"""Who may reach what: tenants, their API keys, and share links to a book.

Keys and share tokens are random secrets shown once; only their SHA-256 is stored, and
a presented secret is compared with `hmac.compare_digest`. A key reads
`sl_{id}_{secret}`: the id finds the row, the secret proves the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storyloom.store.tables import ApiKeyRow, ShareRow, StoryRow, TenantRow

_KEY = re.compile(r"sl_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})")
_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# Compared against when a key's id is unknown, so that answer takes as long as a miss.
_NOBODY = hashlib.sha256(b"nobody").hexdigest()


class AccessError(Exception):
    """A tenant, key or share link that cannot be made or used as asked."""


@dataclass(frozen=True)
class Caller:
    """Who a valid key belongs to: a tenant, or an admin (tenant None)."""

    key_id: str
    tenant_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None


@dataclass(frozen=True)
class Share:
    id: str
    story_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class AccessStore:
    """Tenants, keys and shares, on the story database (mixed into StoryStore)."""

    _write: sessionmaker[Session]
    _read: sessionmaker[Session]

    def add_tenant(self, tenant_id: str, name: str | None = None) -> str:
        """Create a tenant and its first API key; returns the key (shown once)."""
        if not _TENANT_ID.fullmatch(tenant_id):
            raise AccessError(
                f"not a tenant id: {tenant_id!r} (1 to 64 lowercase letters, digits, hyphens)"
            )
        try:
            with self._write.begin() as session:
                session.add(TenantRow(id=tenant_id, name=name or tenant_id, created_at=_now()))
                session.flush()
                return self._new_key(session, tenant_id)
        except IntegrityError:
            raise AccessError(f"tenant {tenant_id!r} already exists") from None

    def tenants(self) -> list[tuple[str, str]]:
        """(id, name) of every tenant."""
        with self._read.begin() as session:
            return [
                (t.id, t.name) for t in session.scalars(select(TenantRow).order_by(TenantRow.id))
            ]

    def add_key(self, tenant_id: str | None) -> str:
        """A new API key for the tenant, or an admin key (None); returns it (shown once)."""
        with self._write.begin() as session:
            if tenant_id is not None and session.get(TenantRow, tenant_id) is None:
                raise AccessError(f"no tenant {tenant_id!r}")
            return self._new_key(session, tenant_id)

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key by its id (the part after `sl_`); False when there is none."""
        with self._write.begin() as session:
            done = session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
            return bool(getattr(done, "rowcount", 0))

    def caller(self, key: str) -> Caller | None:
        """Whom a presented key belongs to; None for a malformed, unknown or revoked key."""
        match = _KEY.fullmatch(key.strip())
        key_id, secret = (match[1], match[2]) if match else ("", key)
        with self._read.begin() as session:
            row = session.get(ApiKeyRow, key_id) if key_id else None
        stored = row.secret_hash if row is not None else _NOBODY
        valid = hmac.compare_digest(stored, _hash(secret))
        if row is None or not valid or row.revoked_at is not None:
            return None
        return Caller(key_id=row.id, tenant_id=row.tenant_id)

    def _new_key(self, session: Session, tenant_id: str | None) -> str:
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        session.add(
            ApiKeyRow(id=key_id, tenant_id=tenant_id, secret_hash=_hash(secret), created_at=_now())
        )
        return f"sl_{key_id}_{secret}"

    # Ownership

    def set_owner(self, story_id: str, tenant_id: str | None) -> None:
        with self._write.begin() as session:
            session.execute(
                update(StoryRow).where(StoryRow.id == story_id).values(tenant_id=tenant_id)
            )

    def owner(self, story_id: str) -> tuple[bool, str | None]:
        """(whether the story exists, its tenant)."""
        with self._read.begin() as session:
            row = session.execute(
                select(StoryRow.tenant_id).where(StoryRow.id == story_id)
            ).one_or_none()
        return (row is not None, row[0] if row is not None else None)

    def story_ids_of(self, tenant_id: str) -> list[str]:
        with self._read.begin() as session:
            return list(
                session.scalars(
                    select(StoryRow.id).where(StoryRow.tenant_id == tenant_id).order_by(StoryRow.id)
                )
            )

    # Share links

    def add_share(self, story_id: str, lifetime: timedelta) -> tuple[Share, str]:
        """A link to the story's book valid for `lifetime`; returns it and its token
        (shown once)."""
        if lifetime <= timedelta(0):
            raise AccessError("a share link must live for some time")
        token = secrets.token_urlsafe(32)
        now = _now()
        row = ShareRow(
            id=secrets.token_hex(8),
            story_id=story_id,
            token_hash=_hash(token),
            created_at=now,
            expires_at=now + lifetime,
        )
        with self._write.begin() as session:
            session.add(row)
        return _share(row), token

    def shares(self, story_id: str) -> list[Share]:
        with self._read.begin() as session:
            rows = session.scalars(
                select(ShareRow).where(ShareRow.story_id == story_id).order_by(ShareRow.created_at)
            )
            return [_share(r) for r in rows]

    def revoke_share(self, story_id: str, share_id: str) -> bool:
        with self._write.begin() as session:
            done = session.execute(
                update(ShareRow)
                .where(
                    ShareRow.id == share_id,
                    ShareRow.story_id == story_id,
                    ShareRow.revoked_at.is_(None),
                )
                .values(revoked_at=_now())
            )
            return bool(getattr(done, "rowcount", 0))

    def shared_story(self, token: str) -> str | None:
        """The story a share token opens; None when unknown, expired or revoked."""
        with self._read.begin() as session:
            row = session.scalars(
                select(ShareRow).where(ShareRow.token_hash == _hash(token))
            ).one_or_none()
        if row is None or row.revoked_at is not None or row.expires_at <= _now():
            return None
        return row.story_id


def _share(row: Any) -> Share:
    return Share(
        id=row.id,
        story_id=row.story_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )

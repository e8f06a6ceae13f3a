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

from storyloom.store.tables import (
    ApiKeyRow,
    DeliveryRow,
    JobRow,
    ShareRow,
    StoryRow,
    TenantRow,
    WebhookRow,
)

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


@dataclass(frozen=True)
class JobRecord:
    """What storyloom keeps of a job; its state lives in Prefect (the flow run)."""

    id: str
    tenant_id: str | None
    story_id: str
    kind: str
    idempotency_key: str | None
    request_hash: str
    created_at: datetime


@dataclass(frozen=True)
class Webhook:
    id: str
    tenant_id: str
    url: str
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    id: str
    webhook_id: str
    job_id: str
    state: str
    status: str  # pending, delivered, failed
    attempts: int
    last_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None


class JobExistsError(AccessError):
    """The tenant already used this Idempotency-Key: `existing` is that job."""

    def __init__(self, existing: JobRecord) -> None:
        super().__init__(f"idempotency key already used for job {existing.id}")
        self.existing = existing


class JobStore(AccessStore):
    """Jobs, webhooks and deliveries, on the story database (mixed into StoryStore)."""

    def record_job(self, job: JobRecord) -> None:
        """Keep a submitted job; JobExistsError when its tenant used the key already."""
        try:
            with self._write.begin() as session:
                session.add(JobRow(**job.__dict__))
        except IntegrityError:
            existing = (
                self.job_by_key(job.tenant_id, job.idempotency_key) if job.idempotency_key else None
            )
            if existing is None:
                raise
            raise JobExistsError(existing) from None

    def job_by_key(self, tenant_id: str | None, key: str) -> JobRecord | None:
        with self._read.begin() as session:
            row = session.scalars(
                select(JobRow).where(JobRow.tenant_id == tenant_id, JobRow.idempotency_key == key)
            ).one_or_none()
            return _job(row) if row is not None else None

    def job(self, job_id: str) -> JobRecord | None:
        with self._read.begin() as session:
            row = session.get(JobRow, job_id)
            return _job(row) if row is not None else None

    def jobs(
        self,
        *,
        tenant_id: str | None = None,
        all_tenants: bool = False,
        kind: str | None = None,
        story_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[JobRecord]:
        """Jobs, newest first: a tenant's (or, with all_tenants, everyone's), filtered."""
        query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id)
        if not all_tenants:
            query = query.where(JobRow.tenant_id == tenant_id)
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        if story_id is not None:
            query = query.where(JobRow.story_id == story_id)
        if since is not None:
            query = query.where(JobRow.created_at >= since)
        if limit is not None:
            query = query.limit(limit)
        with self._read.begin() as session:
            return [_job(r) for r in session.scalars(query)]

    # Webhooks

    def add_webhook(self, tenant_id: str, url: str) -> tuple[Webhook, str]:
        """Register a URL; returns it and its signing secret (shown once)."""
        secret = "whsec_" + secrets.token_urlsafe(32)
        row = WebhookRow(
            id=secrets.token_hex(8), tenant_id=tenant_id, url=url, secret=secret,
            created_at=_now(),
        )  # fmt: skip
        with self._write.begin() as session:
            session.add(row)
        return _webhook(row), secret

    def webhooks(self, tenant_id: str) -> list[Webhook]:
        with self._read.begin() as session:
            rows = session.scalars(
                select(WebhookRow)
                .where(WebhookRow.tenant_id == tenant_id)
                .order_by(WebhookRow.created_at)
            )
            return [_webhook(r) for r in rows]

    def webhook(self, webhook_id: str) -> tuple[Webhook, str] | None:
        """A webhook and its signing secret."""
        with self._read.begin() as session:
            row = session.get(WebhookRow, webhook_id)
            return (_webhook(row), row.secret) if row is not None else None

    def delete_webhook(self, tenant_id: str, webhook_id: str) -> bool:
        with self._write.begin() as session:
            row = session.get(WebhookRow, webhook_id)
            if row is None or row.tenant_id != tenant_id:
                return False
            session.delete(row)
            return True

    def open_delivery(self, webhook_id: str, job_id: str, state: str) -> bool:
        """Queue telling the webhook of the job's final state; False when it was queued
        already (by this process or another): each job is told once per webhook."""
        try:
            with self._write.begin() as session:
                session.add(
                    DeliveryRow(
                        id=secrets.token_hex(8), webhook_id=webhook_id, job_id=job_id,
                        state=state, status="pending", attempts=0, next_attempt_at=_now(),
                        created_at=_now(),
                    )
                )  # fmt: skip
        except IntegrityError:
            return False
        return True

    def told(self, webhook_id: str) -> set[str]:
        """The jobs a webhook has a delivery for (pending, delivered or given up)."""
        with self._read.begin() as session:
            return set(
                session.scalars(
                    select(DeliveryRow.job_id).where(DeliveryRow.webhook_id == webhook_id)
                )
            )

    def due_deliveries(self, limit: int = 50) -> list[Delivery]:
        """Pending deliveries whose next attempt is due, oldest first."""
        with self._read.begin() as session:
            rows = session.scalars(
                select(DeliveryRow)
                .where(DeliveryRow.status == "pending", DeliveryRow.next_attempt_at <= _now())
                .order_by(DeliveryRow.next_attempt_at)
                .limit(limit)
            )
            return [_delivery(r) for r in rows]

    def record_attempt(
        self,
        delivery_id: str,
        *,
        code: int | None,
        error: str | None,
        delivered: bool,
        retry_at: datetime | None,
    ) -> None:
        """One attempt's outcome: delivered, retried at retry_at, or (None) given up."""
        with self._write.begin() as session:
            row = session.get(DeliveryRow, delivery_id)
            if row is None:
                return
            row.attempts += 1
            row.last_code, row.last_error = code, error
            if delivered or retry_at is None:
                row.status = "delivered" if delivered else "failed"
                row.next_attempt_at, row.finished_at = None, _now()
            else:
                row.next_attempt_at = retry_at

    def deliveries(self, webhook_id: str, limit: int = 100) -> list[Delivery]:
        with self._read.begin() as session:
            rows = session.scalars(
                select(DeliveryRow)
                .where(DeliveryRow.webhook_id == webhook_id)
                .order_by(DeliveryRow.created_at.desc())
                .limit(limit)
            )
            return [_delivery(r) for r in rows]


def _job(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id, tenant_id=row.tenant_id, story_id=row.story_id, kind=row.kind,
        idempotency_key=row.idempotency_key, request_hash=row.request_hash,
        created_at=row.created_at,
    )  # fmt: skip


def _webhook(row: WebhookRow) -> Webhook:
    return Webhook(id=row.id, tenant_id=row.tenant_id, url=row.url, created_at=row.created_at)


def _delivery(row: DeliveryRow) -> Delivery:
    return Delivery(
        id=row.id, webhook_id=row.webhook_id, job_id=row.job_id, state=row.state,
        status=row.status, attempts=row.attempts, last_code=row.last_code,
        last_error=row.last_error, next_attempt_at=row.next_attempt_at,
        created_at=row.created_at, finished_at=row.finished_at,
    )  # fmt: skip

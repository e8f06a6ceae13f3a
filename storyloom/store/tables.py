"""The story database's tables: stories, their generations, and each generation's outputs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Fixed constraint names, so migrations can address them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in as aware UTC and comes out as aware UTC on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        # SQLite drops the offset when it stores a timestamp, so store UTC everywhere.
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute as is
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[dict[str, Any]]: JSON(),
        dict[str, str]: JSON(),
    }


class TenantRow(Base):
    """An application (or a customer of one) that owns stories and reaches them with keys."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ApiKeyRow(Base):
    """A key to the HTTP API: its tenant's, or an admin key (no tenant). Only a hash of
    the key's secret is kept; the key itself is shown once, when it is made."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the key's public part
    tenant_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    secret_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 hex of the secret part
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ShareRow(Base):
    """A link to a story's reader page for people without a key: expires, revocable.
    Only a hash of its token is kept."""

    __tablename__ = "shares"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    story_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("stories.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class JobRow(Base):
    """A job submitted over the HTTP API: the flow run it is, whose it is, and the
    Idempotency-Key it came with (the same key and body give the same job)."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_jobs_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the flow run's id
    tenant_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    story_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class WebhookRow(Base):
    """A tenant's URL told of every job's final state, signed with its secret."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    # The HMAC key the receiver checks signatures with: shown once, kept to sign.
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class DeliveryRow(Base):
    """One job's final state told to one webhook: attempts until it is taken or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "job_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[str] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(16))  # the job's final state
    status: Mapped[str] = mapped_column(String(16))  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class StoryRow(Base):
    """A story's raw material; `current_generation_id` is the book readers see."""

    __tablename__ = "stories"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Who owns it: a tenant of the HTTP API, or nobody (made with the CLI).
    tenant_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(8))
    material: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # stories -> generations -> stories is a cycle: use_alter lets PostgreSQL create both
    # tables first and add this key after; SET NULL so pruning can never dangle it.
    current_generation_id: Mapped[str | None] = mapped_column(
        String(36),
        ForeignKey("generations.id", ondelete="SET NULL", use_alter=True),
        index=True,
    )


class GenerationRow(Base):
    """One attempt at a story's book: its config, status, cost and (through children) outputs."""

    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'complete', 'failed', 'cancelled')", name="status"),
        # Newest generation of a story, and pruning by age.
        Index("ix_generations_story_id_created_at", "story_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(64), ForeignKey("stories.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]]
    prompt_version: Mapped[str] = mapped_column(String(64))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    # The story's book when this generation started: publishing succeeds only while it
    # is still the book (compare and swap). No key: that generation may be pruned.
    base_generation_id: Mapped[str | None] = mapped_column(String(36))
    error: Mapped[str | None] = mapped_column(Text)
    usage: Mapped[list[dict[str, Any]]]
    # How the text was written (models.WritingReport): outline, fact ledger, flags for
    # the teller's approval, length misses, precision and recall. None before writing.
    writing: Mapped[dict[str, Any] | None]
    # Narration languages that failed after their retries: {language: reason}.
    narration_failures: Mapped[dict[str, str] | None]
    # The book's files (models.BookExport), built when the generation is published.
    exports: Mapped[list[dict[str, Any]] | None]
    banner_url: Mapped[str | None] = mapped_column(Text)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


def _generation_fk() -> Mapped[str]:
    # Outputs belong to exactly one generation and go when it goes.
    return mapped_column(
        String(36), ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True
    )


class PageRow(Base):
    __tablename__ = "pages"

    generation_id: Mapped[str] = _generation_fk()
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(Text)
    words: Mapped[int] = mapped_column(Integer)


class IllustrationRow(Base):
    __tablename__ = "illustrations"

    generation_id: Mapped[str] = _generation_fk()
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    page_number: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    public_id: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    thumbnail_url: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(64))


class AudioChapterRow(Base):
    __tablename__ = "audio_chapters"

    generation_id: Mapped[str] = _generation_fk()
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    first_page: Mapped[int] = mapped_column(Integer)
    duration_seconds: Mapped[float] = mapped_column(Double)
    public_id: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(String(64))
    # Where each sentence is spoken in the file (models.SentenceTiming), in order.
    sentences: Mapped[list[dict[str, Any]]] = mapped_column(JSON, server_default=sql_text("'[]'"))


class MediaRow(Base):
    """One stored file. Its public id holds a hash of its bytes, so a file is never
    replaced: a new picture or chapter is a new file, and identical bytes are one file
    that every generation using them shares."""

    __tablename__ = "media"

    public_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    story_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("stories.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(8))
    url: Mapped[str] = mapped_column(Text)
    thumbnail_url: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


class GenerationMediaRow(Base):
    """Which generation uses which file: a file no generation uses any more is deleted."""

    __tablename__ = "generation_media"

    generation_id: Mapped[str] = _generation_fk()
    public_id: Mapped[str] = mapped_column(
        String(255),
        ForeignKey("media.public_id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    )

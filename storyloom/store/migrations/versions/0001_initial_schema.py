"""Initial schema: stories, generations, pages, illustrations, audio chapters.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from tables.py: a revision is the schema as it was then.
_CURRENT_GENERATION_FK = "fk_stories_current_generation_id_generations"


def _generation_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["generation_id"],
        ["generations.id"],
        name=f"fk_{table}_generation_id_generations",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "stories",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("material", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_generation_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_stories"),
    )
    op.create_index("ix_stories_current_generation_id", "stories", ["current_generation_id"])
    op.create_table(
        "generations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("story_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("prompt_version", sa.String(length=64), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=False),
        sa.Column("banner_url", sa.Text(), nullable=True),
        sa.Column("thumbnail_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'complete', 'failed')", name="ck_generations_status"
        ),
        sa.ForeignKeyConstraint(
            ["story_id"],
            ["stories.id"],
            name="fk_generations_story_id_stories",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_generations"),
    )
    op.create_index("ix_generations_story_id_created_at", "generations", ["story_id", "created_at"])
    # stories and generations point at each other: the second key comes once both exist.
    # Batch mode so SQLite, which cannot add a constraint in place, copies the empty table.
    with op.batch_alter_table("stories") as batch:
        batch.create_foreign_key(
            _CURRENT_GENERATION_FK,
            "generations",
            ["current_generation_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_table(
        "pages",
        sa.Column("generation_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("words", sa.Integer(), nullable=False),
        _generation_fk("pages"),
        sa.PrimaryKeyConstraint("generation_id", "number", name="pk_pages"),
    )
    op.create_table(
        "illustrations",
        sa.Column("generation_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("page_number", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("public_id", sa.String(length=255), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("thumbnail_url", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        _generation_fk("illustrations"),
        sa.PrimaryKeyConstraint("generation_id", "position", name="pk_illustrations"),
    )
    op.create_table(
        "audio_chapters",
        sa.Column("generation_id", sa.String(length=36), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_page", sa.Integer(), nullable=False),
        sa.Column("duration_seconds", sa.Double(), nullable=False),
        sa.Column("public_id", sa.String(length=255), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        _generation_fk("audio_chapters"),
        sa.PrimaryKeyConstraint("generation_id", "language", "position", name="pk_audio_chapters"),
    )


def downgrade() -> None:
    """Drop every table."""
    op.drop_table("audio_chapters")
    op.drop_table("illustrations")
    op.drop_table("pages")
    # Break the stories <-> generations cycle before either table can go.
    with op.batch_alter_table("stories") as batch:
        batch.drop_constraint(_CURRENT_GENERATION_FK, type_="foreignkey")
    op.drop_index("ix_generations_story_id_created_at", table_name="generations")
    op.drop_table("generations")
    op.drop_index("ix_stories_current_generation_id", table_name="stories")
    op.drop_table("stories")

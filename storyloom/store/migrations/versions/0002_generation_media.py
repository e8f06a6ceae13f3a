"""Generations own their media: cancelled status, the base a generation started from,
and the media files with the generations that use them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0001 passed an already prefixed name through the naming convention, so its check
# constraint is called this on every database; this revision names it as tables.py does.
_OLD_STATUS = "ck_generations_ck_generations_status"
_STATUS = "ck_generations_status"


def upgrade() -> None:
    """Add the cancelled status, base_generation_id, media and generation_media."""
    with op.batch_alter_table("generations") as batch:
        batch.drop_constraint(op.f(_OLD_STATUS), type_="check")
        batch.create_check_constraint(
            op.f(_STATUS), "status IN ('running', 'complete', 'failed', 'cancelled')"
        )
        batch.add_column(sa.Column("base_generation_id", sa.String(length=36), nullable=True))
    op.create_table(
        "media",
        sa.Column("public_id", sa.String(length=255), nullable=False),
        sa.Column("story_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("thumbnail_url", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_media_story_id_stories", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("public_id", name="pk_media"),
    )
    op.create_index("ix_media_story_id", "media", ["story_id"])
    op.create_table(
        "generation_media",
        sa.Column("generation_id", sa.String(length=36), nullable=False),
        sa.Column("public_id", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["generations.id"],
            name="fk_generation_media_generation_id_generations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["public_id"],
            ["media.public_id"],
            name="fk_generation_media_public_id_media",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("generation_id", "public_id", name="pk_generation_media"),
    )
    op.create_index("ix_generation_media_public_id", "generation_media", ["public_id"])


def downgrade() -> None:
    """Drop the media tables and the new column; cancelled generations become failed."""
    op.drop_index("ix_generation_media_public_id", table_name="generation_media")
    op.drop_table("generation_media")
    op.drop_index("ix_media_story_id", table_name="media")
    op.drop_table("media")
    op.execute("UPDATE generations SET status = 'failed' WHERE status = 'cancelled'")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("base_generation_id")
        batch.drop_constraint(op.f(_STATUS), type_="check")
        batch.create_check_constraint(
            op.f(_OLD_STATUS), "status IN ('running', 'complete', 'failed')"
        )

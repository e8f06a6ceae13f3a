"""Chapters keep their sentences' timings; generations keep their failed narration
languages and their book files (reader page, EPUBs, PDF).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add audio_chapters.sentences (JSON, [] for chapters made before it) and
    generations.narration_failures and generations.exports (JSON, empty before it)."""
    with op.batch_alter_table("audio_chapters") as batch:
        batch.add_column(
            sa.Column("sentences", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("narration_failures", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("exports", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("exports")
        batch.drop_column("narration_failures")
    with op.batch_alter_table("audio_chapters") as batch:
        batch.drop_column("sentences")

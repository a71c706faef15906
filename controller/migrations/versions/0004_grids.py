"""Grids of the audit records: table ``grids`` (one row per distinct grid, by content hash).

From issue 11 each interval's audit record is self-contained: it references the grid it was
cleared on by ``grid_hash``, the SHA-256 of the grid's pandapower JSON (without the base case,
which the record holds itself: :func:`grid_models.grids.split_base_case`). The JSON is stored
here once, however many records reference it. A database upgraded from ``0003`` has no row:
its records predate grid references.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``grids`` (empty)."""
    op.create_table(
        "grids",
        sa.Column("grid_hash", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("pandapower_json", sa.Text(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("grid_hash"),
    )


def downgrade() -> None:
    """Drop ``grids`` (the records' grid references then dangle)."""
    op.drop_table("grids")

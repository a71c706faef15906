"""The operator's site actions: table ``site_actions``.

From issue 12 an operator can pause the market, resume it, and take a participant, device or
bus out of the market for a period with a reason (:mod:`controller.controls`, through the
HTTP API). Each action is one row, written before the action is acknowledged, so a restart
(or a crash) keeps them: ``action_id`` (their order), ``action`` (``pause``, ``resume`` or
``exclude``), for an exclusion ``target_kind`` (``participant``, ``device``, ``bus``),
``target``, ``start`` and ``end`` [UTC], and for every action ``reason``, ``by`` (the
operator's address) and ``at`` [UTC]. A database upgraded from ``0006`` has no row: nothing
was ever paused or excluded.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``site_actions`` (empty)."""
    op.create_table(
        "site_actions",
        sa.Column("action_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=True),
        sa.Column("target", sa.String(length=128), nullable=True),
        sa.Column("start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("by", sa.String(length=42), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("action_id"),
    )


def downgrade() -> None:
    """Drop ``site_actions`` (every pause and exclusion is forgotten)."""
    op.drop_table("site_actions")

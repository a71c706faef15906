"""The site a database belongs to: table ``site_identity`` (one row, written on binding).

See :mod:`controller.site_identity` for what the identity holds and
:meth:`controller.store.Store.check_site` for when it is written and compared. A database
upgraded from ``0001`` has no row: the first ``peergrid run`` (or ``demo``) binds it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``site_identity`` (no row: the database is not bound to a site yet)."""
    op.create_table(
        "site_identity",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("chain", sa.String(length=80), nullable=False),
        sa.Column("settlement", sa.String(length=42), nullable=False),
        sa.Column("grid_digest", sa.String(length=64), nullable=False),
        sa.Column("grid_spec", sa.Text(), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_site_identity_one_row"),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    """Drop ``site_identity`` (the binding with it)."""
    op.drop_table("site_identity")

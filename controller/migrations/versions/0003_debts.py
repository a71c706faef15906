"""Debts carried between intervals: table ``debts`` (one row per account changed by a batch).

A settlement batch never debits an account more than it can pay; the shortfall is carried as
a debt and collected by later batches (:mod:`market.settlement`, :func:`~market.settlement.
apply_debts`). Each row is what one batch did to one account's debt balance [token units]:
``balance_before`` and ``balance_after`` are signed, positive = the account owes COMMUNITY,
negative = COMMUNITY owes the account (a credit withheld because COMMUNITY could not front a
shortfall). The rows of a batch are written in the transaction that records its settlement
intent; an account's outstanding balance is the ``balance_after`` of its latest row (highest
``seq``). A database upgraded from ``0002`` has no row: nobody owes anything yet.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``debts`` (empty) and its index on ``account``."""
    op.create_table(
        "debts",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("interval_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(length=128), nullable=False),
        sa.Column("balance_before", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("interval_id", "account", name="uq_debt_interval_account"),
    )
    op.create_index("ix_debts_account", "debts", ["account"], unique=False)


def downgrade() -> None:
    """Drop ``debts`` (the carried balances with it)."""
    op.drop_index("ix_debts_account", table_name="debts")
    op.drop_table("debts")

"""The schema of PeerGrid 0.1.0, the last release before migrations (the baseline).

A database that release wrote (``metadata.create_all``, no ``alembic_version`` table) has
exactly these tables; :class:`controller.store.Store` recognises it, stamps it with this
revision and upgrades it from here.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the six tables of 0.1.0 and the index on ``readings.boundary``."""
    op.create_table(
        "intervals",
        sa.Column("interval_id", sa.BigInteger(), nullable=False),
        sa.Column("length_s", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("book_hash", sa.String(length=64), nullable=True),
        sa.Column("n_orders", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("setpoints", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("interval_id"),
    )
    op.create_table(
        "readings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("boundary", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("participant", sa.String(length=128), nullable=False),
        sa.Column("bus", sa.String(length=128), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("p_w", sa.BigInteger(), nullable=False),
        sa.Column("import_wh_total", sa.BigInteger(), nullable=False),
        sa.Column("export_wh_total", sa.BigInteger(), nullable=False),
        sa.Column("quality", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("soc_percent", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("boundary", "device_id", name="uq_reading_boundary_device"),
    )
    op.create_index("ix_readings_boundary", "readings", ["boundary"], unique=False)
    op.create_table(
        "settlements",
        sa.Column("interval_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("batch", sa.JSON(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("interval_id"),
        sa.UniqueConstraint("batch_id"),
    )
    op.create_table(
        "audit",
        sa.Column("interval_id", sa.BigInteger(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("record_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("interval_id"),
    )
    op.create_table(
        "ticks",
        sa.Column("boundary", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("boundary"),
    )
    op.create_table(
        "chain_nonces",
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("next", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )


def downgrade() -> None:
    """Drop every table (the data with them)."""
    op.drop_table("chain_nonces")
    op.drop_table("ticks")
    op.drop_table("audit")
    op.drop_table("settlements")
    op.drop_index("ix_readings_boundary", table_name="readings")
    op.drop_table("readings")
    op.drop_table("intervals")

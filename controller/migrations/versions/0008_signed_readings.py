"""Signed meter readings: ``readings.signed``, ``seq``, ``key_block``; table ``device_seqs``.

From issue 17 a device may sign its readings (:mod:`market.signed_readings`). Each stored
reading keeps what the device signed: ``signed`` (the OCMF form, JSON: the signed message
and its signature, so the record and anyone holding it can verify it again), ``seq`` (the
device's sequence number, for the next reading's replay check) and ``key_block`` (the block
of the device key registry the controller verified it against). A database upgraded from
``0007`` holds only unsigned readings: the three are NULL. ``device_seqs`` keeps each
signing device's last accepted sequence number and its boundary, so a boundary's replay check
reads one row per device, however long the history (empty after the upgrade).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the three columns (NULL for the readings already stored)."""
    with op.batch_alter_table("readings") as batch:
        batch.add_column(sa.Column("signed", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("key_block", sa.BigInteger(), nullable=True))
    op.create_table(
        "device_seqs",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("boundary", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )


def downgrade() -> None:
    """Drop them (every stored signature is forgotten)."""
    op.drop_table("device_seqs")
    with op.batch_alter_table("readings") as batch:
        batch.drop_column("key_block")
        batch.drop_column("seq")
        batch.drop_column("signed")

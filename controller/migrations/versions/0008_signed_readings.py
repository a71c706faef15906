"""Signed meter readings: ``readings.signed``, ``readings.seq`` and ``readings.key_block``.

From issue 17 a device may sign its readings (:mod:`market.signed_readings`). Each stored
reading keeps what the device signed: ``signed`` (the OCMF form, JSON: the signed message
and its signature, so the record and anyone holding it can verify it again), ``seq`` (the
device's sequence number, for the next reading's replay check) and ``key_block`` (the block
of the device key registry the controller verified it against). A database upgraded from
``0007`` holds only unsigned readings: the three are NULL.

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


def downgrade() -> None:
    """Drop them (every stored signature is forgotten)."""
    with op.batch_alter_table("readings") as batch:
        batch.drop_column("key_block")
        batch.drop_column("seq")
        batch.drop_column("signed")

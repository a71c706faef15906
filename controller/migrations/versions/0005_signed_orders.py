"""Signed orders of the HTTP front door: table ``signed_orders`` (one row per signed message).

From issue 12 prosumers place orders, standing orders and cancellations as EIP-712 typed data
(:mod:`adapters.chain.typed_data`, :mod:`controller.intake`). Each accepted message is stored
here, in one transaction, **before** it is acknowledged:

* ``digest`` (primary key): the EIP-712 digest, ``0x`` + 64 hex digits; the same signed
  message sent again finds its row and gets the first acknowledgement back;
* ``participant`` + ``nonce``: unique, so another message reusing a participant's nonce is
  refused (409); the nonce is a ``uint256`` and kept as its decimal string;
* ``kind``: ``Order``, ``StandingOrder`` or ``Cancel``; ``interval_id`` [Unix s] is an
  order's interval, ``valid_from`` / ``valid_until`` [Unix s] a standing order's window;
* ``message``, ``signature``, ``typed_data``: what the wallet signed, as signed (the audit
  record of each interval carries them, so an auditor can check every signature);
* ``status``: ``accepted`` or ``cancelled``; ``cancel_digest``: on an order, the Cancel that
  cancelled it; on a Cancel, the order it cancels (its ``orderDigest``); ``cancelled_from``
  [Unix s]: the first interval a cancelled order no longer applies to (the first whose gate
  was still open when the Cancel arrived; earlier intervals were already cleared with it).

A database upgraded from ``0004`` has no row: no signed order was ever placed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``signed_orders`` (empty) and its index on ``interval_id``."""
    op.create_table(
        "signed_orders",
        sa.Column("digest", sa.String(length=66), nullable=False),
        sa.Column("participant", sa.String(length=128), nullable=False),
        sa.Column("signer", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("interval_id", sa.BigInteger(), nullable=True),
        sa.Column("valid_from", sa.BigInteger(), nullable=True),
        sa.Column("valid_until", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("signature", sa.String(length=132), nullable=False),
        sa.Column("typed_data", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_digest", sa.String(length=66), nullable=True),
        sa.Column("cancelled_from", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("digest"),
        sa.UniqueConstraint("participant", "nonce", name="uq_signed_order_participant_nonce"),
    )
    op.create_index("ix_signed_orders_interval_id", "signed_orders", ["interval_id"], unique=False)


def downgrade() -> None:
    """Drop ``signed_orders`` (the signed orders with it)."""
    op.drop_index("ix_signed_orders_interval_id", table_name="signed_orders")
    op.drop_table("signed_orders")

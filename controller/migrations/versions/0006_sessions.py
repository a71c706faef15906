"""Sign-in of the HTTP front door: tables ``auth_nonces`` and ``sessions``.

From issue 12 people sign in by signing an EIP-4361 (Sign-In with Ethereum) message that
carries a nonce the server issued (:mod:`controller.auth`):

* ``auth_nonces``: one row per nonce issued (``nonce``, primary key), when it was issued and
  until when it may be used [UTC]; ``used_at`` is set, in the transaction that opens the
  session, by an update that only succeeds while it is still ``NULL``: a nonce signs in once;
* ``sessions``: one row per session, keyed by the SHA-256 of its bearer token (the token
  itself is never stored), with the address, role and participant it signed in as and its
  expiry [UTC]. Signing out deletes the row.

Expired rows of both are deleted when new nonces are issued. A database upgraded from
``0005`` has no row: nobody ever signed in.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``auth_nonces`` and ``sessions`` (empty)."""
    op.create_table(
        "auth_nonces",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_index("ix_auth_nonces_expires_at", "auth_nonces", ["expires_at"])
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("participant", sa.String(length=128), nullable=True),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])


def downgrade() -> None:
    """Drop ``sessions`` and ``auth_nonces`` (everyone signed in is signed out)."""
    op.drop_index("ix_sessions_expires_at", table_name="sessions")
    op.drop_table("sessions")
    op.drop_index("ix_auth_nonces_expires_at", table_name="auth_nonces")
    op.drop_table("auth_nonces")

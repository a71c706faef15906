"""One Alembic revision per module (Alembic skips this file)."""

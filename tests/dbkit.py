"""The two database backends of the tests (fixtures in ``tests/conftest.py``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from controller.pgcluster import Cluster

BACKENDS = ("sqlite", "postgresql")


def new_database_url(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    """A new, empty database of ``backend``: a SQLite file in ``folder`` or a fresh schema."""
    if backend == "sqlite":
        return f"sqlite:///{(folder / 'db.sqlite').as_posix()}"
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    database: str = request.getfixturevalue("pg_database")
    return cluster.url(database, schema=f"t_{uuid.uuid4().hex[:20]}")

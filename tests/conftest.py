"""Fixtures shared by every test folder: the two database backends.

``database_url`` runs a test once on SQLite (a file in the test's folder) and once on
PostgreSQL: a real server, a throwaway cluster this test process starts itself from Debian's
``postgresql`` binaries (:mod:`controller.pgcluster`, once per xdist worker, stopped at the
end), each test in a schema of its own (``?schema=...``, as ``peergrid worker`` keeps each
site). No mocks: a test that cannot start PostgreSQL fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dbkit import BACKENDS, new_database_url

from controller.pgcluster import Cluster, throwaway_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A running PostgreSQL cluster for this test process."""
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg_database(pg_cluster: Cluster) -> str:
    """One database of :func:`pg_cluster` the tests share, each in its own schema."""
    return pg_cluster.create_database("peergrid_tests")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database, once per backend."""
    return new_database_url(request, request.param, tmp_path)

"""The store's migrations on PostgreSQL: the same Alembic revisions, in a database or a site schema.

A real server (``pg_cluster``, :mod:`controller.pgcluster`); each test in a new database or
schema of it.
"""

from __future__ import annotations

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from controller.cli import main
from controller.errors import ConfigError, MissingDatabase
from controller.pgcluster import Cluster
from controller.store import (
    BASELINE_REVISION,
    MIGRATIONS,
    SchemaState,
    Store,
    head_revision,
    metadata,
    read_schema_status,
    split_schema,
)


def rows(cluster: Cluster, database: str, schema: str, table: str) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.conninfo(database)) as conn:
        return conn.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY 1').fetchall()  # noqa: S608


def tables_of(cluster: Cluster, database: str) -> dict[str, set[str]]:
    with psycopg.connect(cluster.conninfo(database)) as conn:
        found = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    out: dict[str, set[str]] = {}
    for schema, table in found:
        out.setdefault(schema, set()).add(table)
    return out


def test_a_schema_at_the_baseline_is_upgraded_keeping_its_rows(pg_cluster: Cluster) -> None:
    database = pg_cluster.create_database()
    engine = create_engine(pg_cluster.url(database))
    with engine.begin() as conn:  # what revision 0001 made, in schema "riverside"
        conn.execute(text('CREATE SCHEMA "riverside"'))
        conn.execute(text('SET LOCAL search_path TO "riverside"'))
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        config.attributes["schema"] = "riverside"
        command.upgrade(config, BASELINE_REVISION)
        conn.execute(
            text(
                "INSERT INTO intervals (interval_id, length_s, status, reason, n_orders, "
                "created_at) VALUES (1782032400, 900, 'cleared', '', 3, now())"
            )
        )
        conn.execute(text("INSERT INTO chain_nonces (address, next) VALUES ('0xab', 7)"))
    engine.dispose()
    url = pg_cluster.url(database, schema="riverside")
    status = read_schema_status(url)
    assert (status.revision, status.state) == ("0001", SchemaState.BEHIND)
    before = rows(pg_cluster, database, "riverside", "intervals")

    assert main(["db", "upgrade", "--db", url]) == 0
    status = read_schema_status(url)
    assert (status.revision, status.state) == (head_revision(), SchemaState.HEAD)
    assert rows(pg_cluster, database, "riverside", "intervals") == before
    store = Store(url, create=False)
    assert store.load_next_nonce("0xab") == 7
    assert not store.claim_interval(1_782_032_400, 900)  # the old claim still holds
    store.close()
    # everything in the site's schema, nothing in public
    found = tables_of(pg_cluster, database)
    assert "public" not in found
    assert {"alembic_version", "intervals", "site_identity", "signed_orders"} <= found["riverside"]


def test_sites_in_one_database_never_see_each_other(pg_cluster: Cluster) -> None:
    database = pg_cluster.create_database()
    a = Store(pg_cluster.url(database, schema="site_a"))
    b = Store(pg_cluster.url(database, schema="site_b"), shared=True)
    assert a.claim_interval(1_782_032_400, 900)
    assert b.claim_interval(1_782_032_400, 900)  # another site's interval, not a double claim
    assert not b.claim_interval(1_782_032_400, 900)
    a.save_next_nonce("0xab", 3)
    assert b.load_next_nonce("0xab") is None
    a.close()
    b.close()
    assert rows(pg_cluster, database, "site_a", "chain_nonces") == [("0xab", 3)]
    assert rows(pg_cluster, database, "site_b", "chain_nonces") == []


def test_the_migrations_build_exactly_the_tables_of_the_code_on_postgresql(
    pg_cluster: Cluster,
) -> None:
    database = pg_cluster.create_database()
    Store(pg_cluster.url(database)).close()
    engine = create_engine(pg_cluster.url(database))
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_a_missing_schema_is_not_created_by_commands_that_read(
    pg_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    database = pg_cluster.create_database()
    url = pg_cluster.url(database, schema="nowhere")
    with pytest.raises(MissingDatabase, match="holds no PeerGrid tables"):
        Store(url, create=False)
    assert main(["db", "current", "--db", url]) == 0
    assert capsys.readouterr().out.startswith("none (no PeerGrid tables")
    assert "nowhere" not in tables_of(pg_cluster, database)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sqlite:///x.sqlite?schema=a", "PostgreSQL only"),
        ("postgresql+psycopg://u@h/db?schema=Bad-Name", "lower-case letters"),
        ("postgresql+psycopg://u@h/db?schema=a&schema=b", "lower-case letters"),
    ],
)
def test_a_bad_schema_is_refused_in_one_line(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        split_schema(url)

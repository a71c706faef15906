"""The store's schema is Alembic's: old databases are upgraded keeping every row, others refused.

``tests/data/store_v0_1_0.sqlite`` was written by PeerGrid 0.1.0 (commit 5e0d3a9, the last
release before migrations) through its ``Store`` API: the first three intervals of a demo run
with their readings, results, settlements (one settled, one failed, one intent), audit records,
ticks and nonces, and a claimed interval without a result. Tests work on copies.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from controller.cli import main
from controller.errors import SchemaError
from controller.store import (
    BASELINE_REVISION,
    MIGRATIONS,
    SchemaState,
    Store,
    head_revision,
    metadata,
    read_schema_status,
)

FIXTURE = Path(__file__).parents[1] / "data" / "store_v0_1_0.sqlite"
TABLES = ("intervals", "readings", "settlements", "audit", "ticks", "chain_nonces")


def copy_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "old.sqlite"
    shutil.copyfile(FIXTURE, path)
    return path


def url(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Run one statement with the standard library's sqlite3 (committed) and return its rows."""
    with closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(sql).fetchall()


def rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every PeerGrid table, as stored (no type conversion)."""
    return {t: query(path, f"SELECT * FROM {t} ORDER BY 1") for t in TABLES}  # noqa: S608


def kept(before: dict[str, list[tuple[object, ...]]], path: Path) -> bool:
    """Whether every row of ``before`` is still in ``path``, unchanged, in the same order.

    Columns a migration added since (``readings.signed``, ``seq``, ``key_block``: 0008) come
    last in a row and must be NULL for the rows that were there before.
    """
    after = rows(path)
    for table, old in before.items():
        new = after[table]
        if len(new) != len(old):
            return False
        for a, b in zip(old, new, strict=True):
            if b[: len(a)] != a or any(v is not None for v in b[len(a) :]):
                return False
    return True


def schema_sql(path: Path) -> dict[str, object]:
    found = query(path, "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
    return {str(name): sql for name, sql in found if name != "alembic_version"}


def version_rows(path: Path) -> list[tuple[object, ...]]:
    return query(path, "SELECT version_num FROM alembic_version")


def has_version_table(path: Path) -> bool:
    return bool(query(path, "SELECT name FROM sqlite_master WHERE name = 'alembic_version'"))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_database_of_the_previous_release_is_upgraded_without_losing_a_row(
    tmp_path: Path,
) -> None:
    path = copy_fixture(tmp_path)
    before = rows(path)
    assert all(before[t] for t in TABLES), "the fixture has rows in every table"
    assert read_schema_status(url(path)).state is SchemaState.BASELINE

    store = Store(url(path))
    assert store.revision == head_revision()
    pending = [p.interval_id for p in store.pending_settlements()]
    first = before["intervals"][0][0]
    assert store.readings_at(int(first))  # the old rows read through today's API
    store.close()

    assert kept(before, path)
    assert version_rows(path) == [(head_revision(),)]
    assert len(pending) == 2  # the failed and the intent, as 0.1.0 left them
    status = read_schema_status(url(path))
    assert (status.revision, status.state) == (head_revision(), SchemaState.HEAD)


def test_a_database_at_0001_is_upgraded_to_0002_without_losing_a_row(tmp_path: Path) -> None:
    """Revision 0002 adds ``site_identity``, empty: the site is bound by the first run."""
    path = copy_fixture(tmp_path)
    engine = create_engine(url(path))
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.stamp(config, BASELINE_REVISION)
    engine.dispose()
    before = rows(path)
    status = read_schema_status(url(path))
    assert (status.revision, status.state) == ("0001", SchemaState.BEHIND)
    assert "site_identity" not in schema_sql(path)

    store = Store(url(path))
    assert store.revision == head_revision()
    assert store.site() is None  # not bound to a site yet
    store.close()

    assert kept(before, path)
    assert query(path, "SELECT COUNT(*) FROM site_identity") == [(0,)]
    oldest_first = [s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()][::-1]
    assert oldest_first[:2] == ["0001", "0002"]
    assert version_rows(path) == [(head_revision(),)]


def test_opening_an_upgraded_database_again_changes_nothing(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path)
    Store(url(path)).close()
    before = rows(path), schema_sql(path), version_rows(path)
    Store(url(path)).close()
    assert (rows(path), schema_sql(path), version_rows(path)) == before


def test_the_baseline_revision_is_the_schema_create_all_made(tmp_path: Path) -> None:
    """Revision 0001 writes the very DDL PeerGrid 0.1.0's ``metadata.create_all`` wrote."""
    path = tmp_path / "baseline.sqlite"
    engine = create_engine(url(path))
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, BASELINE_REVISION)
    engine.dispose()
    assert schema_sql(path) == schema_sql(copy_fixture(tmp_path))


def test_the_migrations_build_exactly_the_tables_of_the_code(tmp_path: Path) -> None:
    """A schema change without its migration fails here (autogenerate finds a difference)."""
    path = tmp_path / "new.sqlite"
    Store(url(path)).close()
    engine = create_engine(url(path))
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_a_new_database_gets_every_table_and_keeps_others(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    query(path, "CREATE TABLE other (x INTEGER)")
    query(path, "INSERT INTO other VALUES (7)")
    assert read_schema_status(url(path)).state is SchemaState.EMPTY
    store = Store(url(path))
    assert store.claim_interval(1_782_032_400, 900)
    store.close()
    assert set(schema_sql(path)) >= {*TABLES, "other"}
    assert query(path, "SELECT x FROM other") == [(7,)]


def test_an_unknown_revision_is_refused_and_the_database_left_unchanged(
    tmp_path: Path,
) -> None:
    path = copy_fixture(tmp_path)
    Store(url(path)).close()
    query(path, "UPDATE alembic_version SET version_num = 'f00dfeed0099'")
    before = file_digest(path), rows(path)

    with pytest.raises(SchemaError, match="f00dfeed0099 is unknown to this release") as info:
        Store(url(path))
    assert "newer software wrote this database" in str(info.value)
    assert "left unchanged" in str(info.value)
    with pytest.raises(SchemaError):
        read_schema_status(url(path))

    assert (file_digest(path), rows(path)) == before
    assert version_rows(path) == [("f00dfeed0099",)]


def test_tables_unlike_the_baseline_are_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path)
    query(path, "ALTER TABLE readings DROP COLUMN soc_percent")
    query(path, "DROP TABLE chain_nonces")
    before = file_digest(path)
    with pytest.raises(SchemaError, match="do not match the schema of PeerGrid") as info:
        Store(url(path))
    assert "table chain_nonces is missing" in str(info.value)
    assert "readings.soc_percent: missing" in str(info.value)
    assert file_digest(path) == before


# -- the command line -------------------------------------------------------------------------


def test_db_current_and_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_fixture(tmp_path)
    before = rows(path)
    head = head_revision()

    assert main(["db", "current", "--db", url(path)]) == 0
    assert capsys.readouterr().out.startswith("none (the tables of PeerGrid 0.1.0")
    assert not has_version_table(path)  # current only reads

    assert main(["db", "upgrade", "--db", url(path)]) == 0
    assert capsys.readouterr().out == f"{head} (head; upgraded from none, baseline)\n"
    assert kept(before, path)

    assert main(["db", "current", "--db", url(path)]) == 0
    assert capsys.readouterr().out == f"{head} (head)\n"
    assert main(["db", "upgrade", "--db", url(path)]) == 0
    assert capsys.readouterr().out == f"{head} (head; already up to date)\n"


def test_db_commands_take_the_sites_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.sqlite"
    demo = Path(__file__).parents[2] / "controller/sites/demo.toml"
    site = demo.read_text("utf-8").replace("sqlite:///peergrid-demo.sqlite", url(path))
    (tmp_path / "site.toml").write_text(site, "utf-8")
    head = head_revision()

    assert main(["db", "current", "--site", str(tmp_path / "site.toml")]) == 2  # reads only
    assert "no database at" in capsys.readouterr().err
    assert not path.exists()
    assert main(["db", "upgrade", "--site", str(tmp_path / "site.toml")]) == 0
    assert capsys.readouterr().out == f"{head} (head; upgraded from no database)\n"
    assert main(["db", "current", "--site", str(tmp_path / "site.toml")]) == 0
    assert capsys.readouterr().out == f"{head} (head)\n"


def test_db_commands_refuse_an_unknown_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy_fixture(tmp_path)
    Store(url(path)).close()
    query(path, "UPDATE alembic_version SET version_num = 'f00dfeed0099'")
    before = file_digest(path)
    for verb in ("current", "upgrade"):
        assert main(["db", verb, "--db", url(path)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("peergrid db: error: ")
        assert "f00dfeed0099 is unknown to this release" in captured.err
    assert file_digest(path) == before


def test_db_commands_report_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "current", "--db", "nosuchdialect://x"]) == 2
    assert "peergrid db: error: " in capsys.readouterr().err
    assert main(["db", "upgrade", "--site", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["db", "current"])  # --db or --site is required

"""Database URLs a person got wrong are refused in one line (ConfigError), before any connect."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import ConfigError
from controller.store import Store, open_engine, read_schema_status


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("not a url", r"not a database URL: 'not a url' \(e\.g\. sqlite:///peergrid\.sqlite"),
        ("nosuchdb://x", "unknown kind of database 'nosuchdb'"),
        ("postgresql+pg8000://u:secret@h/x", r"driver for postgresql\+pg8000://u:\*\*\*@h/x"),
        ("sqlite:////nonexistent-peergrid/dir/x.db", "no folder /nonexistent-peergrid/dir"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        open_engine(url)
    assert "secret" not in str(caught.value)


def test_a_url_with_credentials_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        open_engine("postgresql://u:secret@h:notaport/x")
    assert "secret" not in str(caught.value)


def test_sqlite_paths_that_are_no_database(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a SQLite database"):
        Store(f"sqlite:///{tmp_path}")
    text = tmp_path / "notes.db"
    text.write_text("hello, not a database")
    with pytest.raises(ConfigError, match=r"notes\.db is not a SQLite database"):
        read_schema_status(f"sqlite:///{text}")
    assert text.read_text() == "hello, not a database"


def test_an_empty_or_real_sqlite_file_is_fine(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    open_engine(f"sqlite:///{tmp_path / 'empty.db'}").dispose()
    Store(f"sqlite:///{tmp_path / 'real.db'}").close()
    open_engine(f"sqlite:///{tmp_path / 'real.db'}").dispose()

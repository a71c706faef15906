"""``peergrid db ...``: the store's schema revision, and its upgrade.

=============  ==============================================================================
``current``    prints the database's schema revision (``none`` before the first upgrade) and
               where it stands: at the head, behind it, PeerGrid 0.1.0's tables, or empty;
               then, once a ``run`` has bound it, the site it belongs to and its
               fingerprint; reads only, and a database that does not exist is an error
``upgrade``    upgrades the database to the head revision (what every command that opens
               the store, ``run`` and ``demo`` first, does) and prints the revision; creates
               the database if there is none. With ``--site``, a database bound to another
               site is refused (name, Settlement address and grid are compared)
=============  ==============================================================================

Each takes ``--db URL`` (a SQLAlchemy URL) or ``--site FILE`` (the site's ``database``).

Exit codes as ``peergrid``: 0 ok; 1 the database could not be reached; 2 bad input: a bad
URL (or its driver not installed) or site file, a database that does not exist (``current``),
another site's database, or a database this release refuses (a revision it does not know,
written by newer software, or tables that do not match the baseline), which is left unchanged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.config import read_site
from controller.errors import ConfigError, MissingDatabase, SchemaError, SiteMismatch

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def register(sub: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add ``peergrid db current`` and ``peergrid db upgrade`` to ``peergrid``'s subparsers.

    Parameters
    ----------
    sub
        The subparsers of ``peergrid``'s parser.
    """
    db = sub.add_parser("db", help="the database's schema revision: current, upgrade")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int]]] = [
        ("current", "print the database's schema revision (reads only)", cmd_current),
        ("upgrade", "upgrade the database's schema to this release's head", cmd_upgrade),
    ]
    for name, text, func in commands:
        parser = db_sub.add_parser(name, help=text)
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--db", default=None, help="database URL (sqlite:///file, ...)")
        where.add_argument("--site", default=None, help="site TOML file (its database)")
        parser.set_defaults(func=func)


def _url(args: argparse.Namespace) -> str:
    return str(args.db) if args.db else read_site(args.site).database


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL if it does not exist yet (``None`` otherwise)."""
    from controller.store import sqlite_file  # noqa: PLC0415 - SQLAlchemy only when asked

    path = sqlite_file(url)
    return None if path is None or path.exists() else path


def _run(body: Callable[[str], str], args: argparse.Namespace) -> int:
    """Run ``body(url)`` and print its text; refusals and bad input exit 2, no database 1."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError  # noqa: PLC0415

    try:
        text = body(_url(args))
    except (
        ConfigError,
        SchemaError,
        SiteMismatch,
        MissingDatabase,
        ArgumentError,
        NoSuchModuleError,
    ) as exc:
        sys.stderr.write(f"peergrid db: error: {exc}\n")
        return EXIT_BAD_INPUT
    except ImportError as exc:  # SQLAlchemy imports the URL's driver when it connects
        sys.stderr.write(f"peergrid db: error: the database driver is not installed: {exc}\n")
        return EXIT_BAD_INPUT
    except OperationalError as exc:
        sys.stderr.write(f"peergrid db: cannot open the database: {exc.orig}\n")
        return EXIT_FAILED
    sys.stdout.write(text + "\n")
    return EXIT_OK


def cmd_current(args: argparse.Namespace) -> int:
    """``peergrid db current``: print the schema revision without changing the database.

    Parameters
    ----------
    args
        The parsed arguments (``--db`` or ``--site``).
    """
    from controller.store import SchemaState, read_bound_site, read_schema_status  # noqa: PLC0415

    def body(url: str) -> str:
        missing = _missing_sqlite_file(url)
        if missing is not None:
            msg = (
                f"no database at {missing.resolve()}: nothing was created ('peergrid db "
                "upgrade' or 'peergrid run' creates it)"
            )
            raise MissingDatabase(msg)
        status = read_schema_status(url)
        notes = {
            SchemaState.HEAD: "head",
            SchemaState.BEHIND: f"head is {status.head}: run 'peergrid db upgrade'",
            SchemaState.BASELINE: (
                "the tables of PeerGrid 0.1.0, before migrations: 'peergrid db upgrade' "
                f"stamps them and upgrades to {status.head}"
            ),
            SchemaState.EMPTY: (
                f"no PeerGrid tables: 'peergrid db upgrade' creates them at {status.head}"
            ),
        }
        line = f"{status.revision or 'none'} ({notes[status.state]})"
        site = read_bound_site(url)
        if site is None:
            return line
        return f"{line}\nsite: {site.describe()}, fingerprint {site.fingerprint}"

    return _run(body, args)


def cmd_upgrade(args: argparse.Namespace) -> int:
    """``peergrid db upgrade``: upgrade the schema to the head revision and print it.

    Parameters
    ----------
    args
        The parsed arguments (``--db`` or ``--site``).
    """
    from controller.site_identity import site_identity  # noqa: PLC0415
    from controller.store import SchemaState, Store, read_schema_status  # noqa: PLC0415

    def body(url: str) -> str:
        site = site_identity(read_site(args.site)) if args.site else None
        before = None if _missing_sqlite_file(url) else read_schema_status(url)
        store = Store(url, site=site)
        store.close()
        if before is not None and before.state is SchemaState.HEAD:
            return f"{store.revision} (head; already up to date)"
        was = "no database" if before is None else (before.revision or f"none, {before.state}")
        return f"{store.revision} (head; upgraded from {was})"

    return _run(body, args)


__all__ = ["cmd_current", "cmd_upgrade", "register"]

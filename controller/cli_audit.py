"""``peergrid audit export`` and ``peergrid audit statement``: the utility's tables and statements.

``peergrid audit export (--site SITE | --db URL) --from DATE --to DATE --format csv|parquet
--out DIR`` writes the ten export tables of the intervals starting in ``[--from, --to)``
(:mod:`controller.audit_export`, which documents every column and unit) to
``DIR/<table>.<format>`` and prints what it wrote.

``peergrid audit statement (--site SITE | --db URL) --month YYYY-MM [--participant P]
[--format table|csv|json] [--out FILE]`` prints (or writes) each participant's monthly
statement. Where the chain is reachable (an anvil or rpc site, or ``--rpc`` with
``--settlement``), each participant's on-chain settlement entries for the month are summed
and compared with the statement; a difference is printed and the exit code is 1.

Both only read: a database that does not exist is an error (exit 2). pandas and pyarrow are
imported when a command runs, never at the CLI's start-up.

:func:`open_audit_sources` opens what ``peergrid audit verify`` and ``peergrid audit report``
read: the store, the chain (read once, :class:`controller.audit.ChainSnapshot`) and the
re-clears (:class:`controller.audit.Reclearer`; the site's, for records before issue 11).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli_types import utc_time
from controller.config import SiteConfig, read_site
from controller.errors import ConfigError

if TYPE_CHECKING:
    from adapters.chain import ChainClient
    from controller.audit import ChainSnapshot
    from controller.audit_export import ChainEntries
    from controller.store import Store

EXIT_OK = 0
EXIT_FAILED = 1

ChainFactory = Callable[[ExitStack, SiteConfig | None, str | None, str | None], Any]
"""``(stack, site, rpc_url, settlement) -> read-only chain client or None`` (from the CLI)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditSources:
    """What ``audit verify`` and ``audit report`` read (:func:`open_audit_sources`).

    Attributes
    ----------
    store : Store
        The database (only read).
    chain : ChainSnapshot or None
        The settlement contract, its logs read once; ``None`` without chain access.
    signing_domain : (int, str) or None
        The chain's id and the Settlement contract's address, which every signed order's
        EIP-712 domain must name; ``None`` without chain access.
    reclear : callable or None
        Re-clears a record from before issue 11 with the site's grid and tariffs (``--site``
        only); ``None`` with ``--no-reclear`` or without a site.
    reclear_anchored : callable or None
        Re-clears an anchored record from its recorded book, parameters and grid, keeping
        the parsed grid and linear models between records; ``None`` with ``--no-reclear``.
    governed_at : callable or None
        ``(registry, block) -> values``: the community registry a record names, read at its
        block (issue 16); ``None`` without chain access.
    device_key_at : callable or None
        ``(registry, owner, device, block) -> key``: the device key registry a record
        names (issue 17); ``None`` without chain access.
    """

    store: Store
    chain: ChainSnapshot | None
    signing_domain: tuple[int, str] | None
    reclear: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None
    reclear_anchored: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] | None
    governed_at: Callable[[str, int], Mapping[str, int]] | None = None
    device_key_at: Callable[[str, str, str, int], bytes | None] | None = None


def open_audit_sources(
    stack: ExitStack, args: argparse.Namespace, chain: ChainFactory
) -> AuditSources:
    """Open the store, the chain and the re-clears of ``audit verify``/``audit report``.

    With ``--site`` the store is opened through the site's runtime (its identity checked,
    its grid loaded for records before issue 11); without it, only the database is opened
    and the clearing stack is imported only if something is re-cleared.

    Parameters
    ----------
    stack : ExitStack
        Closes what is opened.
    args : argparse.Namespace
        ``site``, ``db``, ``rpc``, ``settlement``, ``no_reclear``, ``no_chain`` and
        ``audit_command``.
    chain : ChainFactory
        Opens a read-only client of the settlement contract.

    Returns
    -------
    AuditSources
        The store, the chain snapshot and the re-clears.
    """
    from controller.audit import ChainSnapshot, Reclearer  # noqa: PLC0415

    url, site = _database(args)
    legacy = None
    if site is not None:
        from controller.wiring import build_runtime  # noqa: PLC0415 - heavy: the whole runtime

        runtime = stack.enter_context(
            build_runtime(
                site,
                store_url=url,
                create_store=False,
                grid=not args.no_reclear,
                devices=False,
                chain=False,
            )
        )
        store = runtime.store
        legacy = None if args.no_reclear else runtime.cycle.reclear
    else:
        store, _ = _open_store(stack, args)
    client = None if args.no_chain else chain(stack, site, args.rpc, args.settlement)
    return AuditSources(
        store=store,
        chain=None if client is None else ChainSnapshot(client),
        signing_domain=None
        if client is None
        else (client.chain_id(), str(client.settlement.address)),
        reclear=legacy,
        reclear_anchored=None if args.no_reclear else Reclearer(store.grid_json),
        governed_at=None if client is None else _registry_reader(client),
        device_key_at=None if client is None else _key_reader(client),
    )


def _key_reader(client: ChainClient) -> Callable[[str, str, str, int], bytes | None]:
    from controller.wiring import registry_key_reader  # noqa: PLC0415 - heavy: the runtime

    return registry_key_reader(client)


def _registry_reader(client: ChainClient) -> Callable[[str, int], Mapping[str, int]]:
    from adapters.chain.governance import registry_reader  # noqa: PLC0415

    return registry_reader(client.contracts)


def register(audit_sub: Any, chain: ChainFactory) -> None:  # noqa: ANN401 - argparse's private type
    """Add ``export`` and ``statement`` to ``peergrid audit``'s subparsers.

    Parameters
    ----------
    audit_sub
        The subparsers of ``peergrid audit``.
    chain
        Opens a read-only client of the settlement contract (``None`` without chain access).
    """
    export = audit_sub.add_parser(
        "export", help="write intervals, orders, trades, prices, settlements ... as CSV/Parquet"
    )
    _source(export)
    export.add_argument(
        "--from", dest="start", type=utc_time, required=True, help="first interval (UTC)"
    )
    export.add_argument(
        "--to", dest="end", type=utc_time, required=True, help="end, exclusive (UTC)"
    )
    export.add_argument("--format", choices=["csv", "parquet"], default="csv")
    export.add_argument("--out", required=True, help="folder for <table>.<format>")
    export.add_argument("--json", action="store_true", help="print the files and rows as JSON")
    export.set_defaults(func=_cmd_export)

    statement = audit_sub.add_parser(
        "statement", help="monthly statement per participant, reconciled with the chain"
    )
    _source(statement)
    statement.add_argument("--month", required=True, help="YYYY-MM (UTC)")
    statement.add_argument("--participant", default=None, help="only this participant")
    statement.add_argument("--format", choices=["table", "csv", "json"], default="table")
    statement.add_argument("--out", default=None, help="write to this file instead of stdout")
    statement.add_argument("--rpc", default=None, help="chain JSON-RPC URL (read-only)")
    statement.add_argument("--settlement", default=None, help="settlement contract (0x..)")
    statement.add_argument(
        "--no-chain", action="store_true", help="do not reconcile with the chain"
    )
    statement.set_defaults(func=lambda args: _cmd_statement(args, chain))


def _source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", default=None, help="site TOML file (its database)")
    parser.add_argument("--db", default=None, help="database URL (default: the site's)")


def _database(args: argparse.Namespace) -> tuple[str, SiteConfig | None]:
    """The database URL (``--db``, else the site's) and the site file read (or ``None``)."""
    site = read_site(args.site) if args.site else None
    url = args.db or (site.database if site is not None else None)
    if not url:
        msg = f"audit {args.audit_command} needs --db URL (or --site with its database)"
        raise ConfigError(msg)
    return url, site


def _open_store(stack: ExitStack, args: argparse.Namespace) -> tuple[Store, SiteConfig | None]:
    from controller.store import Store  # noqa: PLC0415

    url, site = _database(args)
    store = Store(url, create=False)
    stack.callback(store.close)
    return store, site


def _cmd_export(args: argparse.Namespace) -> int:
    from controller.audit_export import export_tables, write_tables  # noqa: PLC0415

    start: datetime = args.start
    end: datetime = args.end
    with ExitStack() as stack:
        store, _ = _open_store(stack, args)
        tables = export_tables(store, start.astimezone(UTC), end.astimezone(UTC))
    files = write_tables(tables, Path(args.out), args.format)
    rows = {name: len(frame) for name, frame in tables.items()}
    if args.json:
        doc = {"files": [str(f) for f in files], "rows": rows}
        print(json.dumps(doc, indent=2))  # noqa: T201
    else:
        for path in files:
            print(f"{path}: {rows[path.stem]} rows")  # noqa: T201
    return EXIT_OK


def _cmd_statement(args: argparse.Namespace, chain: ChainFactory) -> int:
    from controller.audit_export import (  # noqa: PLC0415
        monthly_statements,
        statement_differences,
        to_json_rows,
    )

    with ExitStack() as stack:
        store, site = _open_store(stack, args)
        client: ChainEntries | None = (
            None if args.no_chain else chain(stack, site, args.rpc, args.settlement)
        )
        frame = monthly_statements(store, args.month, chain=client)
    if args.participant is not None:
        frame = frame[frame["participant"] == args.participant].reset_index(drop=True)
        if not len(frame):
            msg = f"participant {args.participant!r} has no settlement in {args.month}"
            raise ConfigError(msg)
    differences = statement_differences(frame)
    if args.format == "json":
        text = json.dumps(
            {
                "month": args.month,
                "chain_checked": client is not None,
                "statements": to_json_rows(frame),
                "differences": differences,
            },
            indent=2,
        )
    elif args.format == "csv":
        from controller.audit_export import STATEMENT_COLUMNS, csv_text  # noqa: PLC0415

        text = csv_text(frame, STATEMENT_COLUMNS)
    else:
        text = frame.drop(columns=["month"]).set_index("participant").T.to_string()
        text += "\n" + (
            "chain: "
            + ("not reconciled" if client is None else "reconciled")
            + ("" if client is None else f", {len(differences)} difference(s)")
        )
        text += "".join(f"\n  {d}" for d in differences)
    if args.out:
        Path(args.out).write_text(text + ("" if text.endswith("\n") else "\n"), "utf-8")
    else:
        sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    return EXIT_FAILED if differences else EXIT_OK

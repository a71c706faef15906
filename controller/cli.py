"""The ``peergrid`` command line.

Exit codes: 0 success; 1 the job ran but something failed (e.g. an interval not settled);
2 bad input (site file, orders, arguments), with a message naming the item.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from controller import (
    cli_audit,
    cli_db,
    cli_debts,
    cli_devices,
    cli_fleet,
    cli_gov,
    cli_grid,
    cli_keys,
    cli_order,
    cli_status,
)
from controller.cli_chain import register as register_chain
from controller.cli_types import (
    non_negative_int,
    per_unit_voltage,
    positive_int,
    positive_seconds,
    price_per_kwh,
    tcp_port_or_zero,
    utc_time,
)
from controller.config import SiteConfig, read_site
from controller.errors import ConfigError, MissingDatabase, SchemaError, SiteMismatch
from grid_models.errors import InvalidGrid, UnknownBus, UnknownGrid, UnsupportedTopology
from market.errors import InvalidOrder

if TYPE_CHECKING:
    from adapters.chain import ChainClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

INPUT_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    SchemaError,
    SiteMismatch,
    MissingDatabase,
    InvalidOrder,
    UnknownGrid,
    InvalidGrid,
    UnknownBus,
    UnsupportedTopology,
)
"""The errors that mean bad input (each message names the item): exit code 2, one line."""


class _Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors are one line (exit code 2), pointing at --help."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see 'PROG --help')`` to stderr and exit with 2."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _cmd_demo(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from controller.demo import (  # noqa: PLC0415
        DEMO_START,
        format_row,
        format_summary,
        run_demo,
        table_header,
    )

    start = args.start or DEMO_START
    console = _stderr_console()
    on_row = None
    if not args.json:  # the table's rows as the intervals settle (header first), flushed
        print("\n".join(table_header()), flush=True)

        def on_row(row: dict[str, Any]) -> None:
            print(format_row(row), flush=True)

    with Progress(
        TextColumn("[bold]peergrid demo[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} boundaries"),
        TimeElapsedColumn(),
        transient=True,
        console=console,
        disable=not console.is_terminal,  # no bar (and no stray newline) in logs and pipes
    ) as bar:
        task = bar.add_task("starting simulators and chain", total=args.intervals + 1)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"boundary {label} done")

        report = run_demo(
            intervals=args.intervals,
            start=start,
            out_dir=Path(args.out),
            progress=progress,
            chain=args.chain,
            on_row=on_row,
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_summary(report))
    ok = (
        report["all_settled"]
        and report["conservation"]["holds"]
        and not report["audit"]["problems"]
    )
    return EXIT_OK if ok else EXIT_FAILED


def _stderr_console() -> Any:  # noqa: ANN401 - rich's Console
    from rich.console import Console  # noqa: PLC0415

    return Console(stderr=True)


def _cmd_clear(args: argparse.Namespace) -> int:
    from controller.clearing_job import clear_orders_file  # noqa: PLC0415
    from market.domain import Mechanism  # noqa: PLC0415

    doc = clear_orders_file(
        args.grid,
        args.orders,
        time_step=args.time_step,
        mechanism=Mechanism(args.mechanism),
        import_price=args.import_price,
        export_price=args.export_price,
        vm_min_pu=args.vm_min,
        vm_max_pu=args.vm_max,
        time_limit_s=args.time_limit,
        engine=args.engine,
    )
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        check = doc["ac_check"] or {}
        print(f"{doc['status']}: {doc['reason']}")
        accepted = sum(o["accepted_wh"] for o in doc["orders"] if o["side"] == "buy")
        print(
            f"bought {accepted} Wh; grid import {doc['grid']['import_wh']} Wh, export "
            f"{doc['grid']['export_wh']} Wh; welfare {doc['welfare']}; "
            f"{len(doc['trades'])} trades; {doc['iterations']} solve(s)"
        )
        if check:
            print(
                f"AC: vm {check['min_vm_pu']:.4f}-{check['max_vm_pu']:.4f} p.u., "
                f"max line {check['max_line_loading_percent']:.1f} %, "
                f"max trafo {check['max_trafo_loading_percent']:.1f} %, "
                f"{len(check['violations'])} violation(s)"
            )
        print("timings: " + ", ".join(f"{k} {v:.3f}" for k, v in doc["timings"].items()))
    return EXIT_OK if doc["status"] in {"cleared", "no_crossing", "blocked"} else EXIT_FAILED


def _cmd_site_check(args: argparse.Namespace) -> int:
    """``peergrid site check``: the validation of ``run`` (file, then grid); ``--probe`` reads."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from controller.wiring import build_devices, describe, load_site_grid  # noqa: PLC0415

    site = read_site(args.site, runnable=True)
    load_site_grid(site)
    doc = describe(site)
    code = EXIT_OK
    if args.probe:
        devices = build_devices(site, timeout_s=args.timeout)
        try:
            probe = []
            for device_id, reader in devices.readers.items():
                reading = reader.read(datetime.now(UTC))
                probe.append(
                    {
                        "device": device_id,
                        "quality": reading.quality.value,
                        "p_w": reading.p_w,
                        "reason": reading.reason,
                    }
                )
        finally:
            devices.close()
        doc["probe"] = probe
        if any(r["quality"] != "ok" for r in probe):
            code = EXIT_FAILED
    print(json.dumps(doc, indent=2))
    return code


def _cmd_site_schema(args: argparse.Namespace) -> int:
    """``peergrid site schema``: the site file's JSON Schema."""
    from controller.config import site_schema  # noqa: PLC0415

    del args
    print(json.dumps(site_schema(), indent=2))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from controller.runner import run_site  # noqa: PLC0415

    return run_site(
        read_site(args.site, runnable=True), once=args.once, dev_interval_s=args.dev_interval_s
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from controller.serve import serve_demo, serve_site  # noqa: PLC0415

    if args.demo:
        return serve_demo(
            host=args.host,
            port=args.port,
            dev_interval_s=args.dev_interval_s,
            out_dir=args.out,
            public_url=args.public_url,
        )
    if args.fleet_site is not None:
        from controller.cli_fleet import fleet_site  # noqa: PLC0415

        if not args.front:
            msg = "--id serves a fleet's site in front of its workers: add --front"
            raise ConfigError(msg)
        site = fleet_site(args.db, args.fleet_site)
    elif args.site is None:
        msg = "serve needs --site FILE, --demo, or --front --db URL --id SITE"
        raise ConfigError(msg)
    else:
        site = read_site(args.site, runnable=not args.front)
    return serve_site(
        site,
        host=args.host,
        port=args.port,
        dev_interval_s=args.dev_interval_s,
        public_url=args.public_url,
        front=args.front,
    )


def _audit_chain(
    stack: ExitStack, site: SiteConfig | None, rpc_url: str | None, settlement: str | None
) -> ChainClient | None:
    """A read-only client of the settlement contract, or ``None`` without chain access.

    ``--rpc``/``--settlement`` win over the site file; an ``embedded`` chain (it lives only
    as long as its controller) or a site without a settlement address gives ``None``. A
    throwaway account stands in for the operator; no key is opened. The connection is closed
    with ``stack``.
    """
    from adapters.chain import ChainClient, connect, new_account  # noqa: PLC0415
    from adapters.chain.queries import settlement_token  # noqa: PLC0415

    confirmations = 0
    if rpc_url or settlement:
        if not (rpc_url and settlement):
            msg = "--rpc and --settlement go together (the node's URL and the contract)"
            raise ConfigError(msg)
        conn = connect("rpc", rpc_url=rpc_url)
    elif site is not None and site.chain.backend != "embedded" and site.chain.settlement_address:
        chain = site.chain
        settlement = chain.settlement_address
        confirmations = chain.confirmations
        conn = connect(
            chain.backend,
            rpc_url=chain.rpc_url or None,
            state_path=(chain.state_path or None) if chain.backend == "anvil" else None,
        )
    else:
        return None
    stack.callback(conn.close)
    client = ChainClient(conn.w3, new_account(), confirmations=confirmations)
    client.cache_chain_id()  # a reader: one eth_chainId request, not one per eth_call
    client.attach(settlement_token(conn.w3, settlement), settlement)
    return client


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from controller.audit import compare_with_chain, verify_records  # noqa: PLC0415

    with ExitStack() as stack:
        sources = cli_audit.open_audit_sources(stack, args, _audit_chain)
        store, snapshot = sources.store, sources.chain
        rows = store.audit_records()
        settlement_rows = store.settlement_rows()
        summary = verify_records(
            rows,
            reclear=sources.reclear,
            chain=snapshot,
            tables=store,
            reclear_anchored=sources.reclear_anchored,
            signing_domain=sources.signing_domain,
            governed_at=sources.governed_at,
            device_key_at=sources.device_key_at,
        )
        on_chain = None if snapshot is None else snapshot.events
    summary["chain_checked"] = on_chain is not None
    if snapshot is not None:
        mismatches = compare_with_chain(rows, snapshot.events, settlement_rows)
        recorded = {int(r["interval_id"]) for r in rows}
        chained = {c.interval_id for c in snapshot.events}
        summary["chain"] = {
            "from_block": snapshot.from_block,  # the Settlement contract's deployment, or 0
            "to_block": snapshot.to_block,
            "settled_on_chain": len(chained),
            "recorded_and_settled": len(chained & recorded),
            "pending": sorted(
                int(r["interval_id"])
                for r in settlement_rows
                if r["state"] != "settled" and int(r["interval_id"]) not in chained
            ),
            "mismatches": mismatches,
        }
        summary["problems"] = [*summary["problems"], *mismatches]
    summary["note"] = (
        "record hashes, batch ids, Merkle roots and zero sums recomputed; records compared "
        "with the readings and settlements tables"
        + (
            ""
            if args.no_reclear
            else ", every interval re-cleared from its stored book (recorded parameters and "
            "grid; records before issue 11 with the site's)"
        )
        + (
            "; each record's hash, batch id, roots and per-account entries compared with the "
            "chain, and the chain's Settled events with the records both ways"
            if on_chain is not None
            else "; not compared with the chain ("
            + ("--no-chain" if args.no_chain else "no --rpc/--settlement, or an embedded chain")
            + ")"
        )
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['verified']}/{summary['records']} interval records verified")
        if on_chain is not None:
            chain_summary = summary["chain"]
            print(
                f"{chain_summary['settled_on_chain']} intervals settled on-chain, "
                f"{chain_summary['recorded_and_settled']} of them with a record; "
                f"{len(chain_summary['pending'])} pending (not sent yet)"
            )
        for problem in summary["problems"]:
            print(f"  {problem}")
        for line in summary.get("accepted", []):  # wall-clock stops: what happened, as is
            print(f"  {line}")
        for line in summary.get("unverified", []):  # settled as rule 4b says: named, as is
            print(f"  unverified reading: {line}")
    return EXIT_OK if not summary["problems"] and summary["records"] else EXIT_FAILED


def _cmd_audit_report(args: argparse.Namespace) -> int:
    """``peergrid audit report``: HTML and PDF drawn from the exports, with verify's findings."""
    from controller.audit_report import collect, write_report  # noqa: PLC0415

    with ExitStack() as stack:
        sources = cli_audit.open_audit_sources(stack, args, _audit_chain)
        settled = None if sources.chain is None else sources.chain.events
        tables, findings = collect(
            sources.store,
            args.start,
            args.end,
            chain=sources.chain,
            settled=settled,
            reclear=sources.reclear,
            reclear_anchored=sources.reclear_anchored,
            signing_domain=sources.signing_domain,
            governed_at=sources.governed_at,
            device_key_at=sources.device_key_at,
        )
    files = write_report(
        tables, Path(args.out), start=args.start, end=args.end, chain=settled, findings=findings
    )
    print(
        f"{files.html} ({len(files.figures)} figures), {files.pdf} ({files.pdf_pages} pages), "
        f"{files.data}; {findings.verified}/{findings.records} records verified, "
        f"{len(findings.problems)} finding(s)"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``peergrid``."""
    parser = _Parser(
        prog="peergrid",
        description="Peer-to-peer energy trading microgrid controller.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    # Any: argparse's _SubParsersAction is invariant in its parser class (_Parser here)
    sub: Any = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole loop on embedded defaults")
    demo.add_argument(
        "--intervals",
        type=positive_int,
        default=16,
        help="intervals to run (default 16: 07:30-11:30 UTC on 21 June)",
    )
    demo.add_argument("--start", type=utc_time, default=None, help="first interval (UTC)")
    demo.add_argument("--out", default="peergrid-demo", help="folder for the report and database")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.add_argument(
        "--chain",
        choices=["embedded", "anvil"],
        default="embedded",
        help="embedded py-evm (default) or a local anvil node (npm @foundry-rs/anvil)",
    )
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser("run", help="run a site in real time, aligned to interval boundaries")
    run.add_argument("--site", required=True, help="site TOML file")
    run.add_argument("--once", action="store_true", help="run the current boundary and exit")
    run.add_argument(
        "--dev-interval-s",
        type=positive_int,
        default=None,
        metavar="N",
        help="DEVELOPMENT ONLY: N-second intervals (>= 2, divides 86400) instead of the "
        "site's, for kill tests and trials",
    )
    run.set_defaults(func=_cmd_run)

    serve = sub.add_parser(
        "serve", help="run a site's real-time cycle and its HTTP API in one process"
    )
    target = serve.add_mutually_exclusive_group(required=True)
    target.add_argument("--site", default=None, help="site TOML file")
    target.add_argument(
        "--demo",
        action="store_true",
        help="the demo site with its simulators and a trial chain, in real time",
    )
    target.add_argument(
        "--id",
        dest="fleet_site",
        default=None,
        help="a fleet's site (with --front --db URL): served in front of its workers",
    )
    serve.add_argument("--db", default=None, help="--id: the fleet's PostgreSQL URL")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument(
        "--public-url",
        default=None,
        metavar="URL",
        help="the URL clients reach the API at, behind a reverse proxy or TLS "
        "(https://HOST[:PORT]): sign-in messages name it; default http://HOST:PORT as bound",
    )
    serve.add_argument(
        "--port", type=tcp_port_or_zero, default=8080, help="port to listen on (0: a free one)"
    )
    serve.add_argument(
        "--dev-interval-s",
        type=positive_int,
        default=None,
        metavar="N",
        help="DEVELOPMENT ONLY: N-second intervals (>= 2, divides 86400) instead of the "
        "site's, for kill tests and trials",
    )
    serve.add_argument(
        "--front",
        action="store_true",
        help="--site: the API only, in front of a fleet's workers (no cycle, no site lock)",
    )
    serve.add_argument(
        "--out",
        type=Path,
        default=Path("peergrid-serve-demo"),
        help="--demo: folder of the demo's database (made afresh at each start)",
    )
    serve.set_defaults(func=_cmd_serve)

    site = sub.add_parser("site", help="site files; a fleet's sites (add, remove, list)")
    site_sub = site.add_subparsers(dest="site_command", required=True)
    check = site_sub.add_parser(
        "check", help="validate a site file as 'run' does (and its grid); exit 2 on problems"
    )
    check.add_argument("--site", required=True, help="site TOML file")
    check.add_argument(
        "--probe", action="store_true", help="also read every device once (exit 1 if one fails)"
    )
    check.add_argument(
        "--timeout", type=positive_seconds, default=2.0, help="--probe: answer timeout [s]"
    )
    check.set_defaults(func=_cmd_site_check)
    schema = site_sub.add_parser("schema", help="print the site file's JSON Schema")
    schema.set_defaults(func=_cmd_site_schema)
    cli_fleet.register_site(site_sub)

    clear = sub.add_parser("clear", help="clear an order file on a grid (with the AC check)")
    clear.add_argument("--grid", required=True, help="cigre-lv, simbench:<code> or a .json file")
    clear.add_argument("--orders", required=True, help="CSV or JSON order file")
    clear.add_argument(
        "--time-step", type=non_negative_int, default=None, help="SimBench 15-min step"
    )
    clear.add_argument("--mechanism", choices=["nodal", "uniform", "pay-as-bid"], default="nodal")
    clear.add_argument(
        "--engine",
        choices=["highspy", "pyomo"],
        default="highspy",
        help="how the LP reaches HiGHS: highspy (fast) or pyomo (the reference model)",
    )
    clear.add_argument(
        "--import-price", type=price_per_kwh, default=300_000, help="[base units/kWh]"
    )
    clear.add_argument(
        "--export-price", type=price_per_kwh, default=80_000, help="[base units/kWh]"
    )
    clear.add_argument("--vm-min", type=per_unit_voltage, default=0.95, help="[p.u.]")
    clear.add_argument("--vm-max", type=per_unit_voltage, default=1.05, help="[p.u.]")
    clear.add_argument(
        "--time-limit",
        type=positive_seconds,
        default=None,
        help="wall-clock budget of the clearing [s]; a stop it causes is the status "
        "time_limit (default: none, iteration counts alone decide: the same result on any "
        "machine)",
    )
    clear.add_argument("--json", action="store_true", help="print the result as JSON")
    clear.set_defaults(func=_cmd_clear)

    audit = sub.add_parser("audit", help="re-check stored interval records")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="recompute roots and batch ids, re-clear")
    verify.add_argument(
        "--site",
        default=None,
        help="site TOML file (optional: its database and chain; records before issue 11 "
        "are re-cleared with its grid and tariffs)",
    )
    verify.add_argument("--db", default=None, help="database URL (default: the site's)")
    verify.add_argument("--rpc", default=None, help="chain JSON-RPC URL (read-only)")
    verify.add_argument("--settlement", default=None, help="settlement contract address (0x..)")
    verify.add_argument("--no-reclear", action="store_true", help="skip re-clearing")
    verify.add_argument(
        "--no-chain",
        action="store_true",
        help="do not compare the records with the chain's settled intervals (anvil/rpc sites)",
    )
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(func=_cmd_audit_verify)
    report = audit_sub.add_parser(
        "report", help="HTML and PDF report with plots from the exports, and every finding"
    )
    report.add_argument("--site", default=None, help="site TOML file (optional, as for verify)")
    report.add_argument("--db", default=None, help="database URL (default: the site's)")
    report.add_argument("--rpc", default=None, help="chain JSON-RPC URL (read-only)")
    report.add_argument("--settlement", default=None, help="settlement contract address (0x..)")
    report.add_argument(
        "--from", dest="start", type=utc_time, required=True, help="first interval (UTC)"
    )
    report.add_argument(
        "--to", dest="end", type=utc_time, required=True, help="end, exclusive (UTC)"
    )
    report.add_argument("--out", required=True, help="folder for report.html and report.pdf")
    report.add_argument("--no-reclear", action="store_true", help="skip re-clearing")
    report.add_argument(
        "--no-chain", action="store_true", help="do not compare the records with the chain"
    )
    report.set_defaults(func=_cmd_audit_report)
    cli_audit.register(audit_sub, chain=_audit_chain)
    cli_devices.register(sub)
    register_chain(sub)
    cli_db.register(sub)
    cli_keys.register(sub)
    cli_grid.register(sub)
    cli_debts.register(sub)
    cli_order.register(sub)
    cli_status.register(sub)
    cli_fleet.register(sub)
    cli_gov.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``peergrid`` console script.

    Parameters
    ----------
    argv : list of str or None
        The arguments (``None``: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code (module docstring); a :class:`~controller.errors.ConfigError`, a
        :class:`~controller.errors.SchemaError` (a database this release refuses), a
        :class:`~controller.errors.SiteMismatch` (another site's database) or a
        :class:`~controller.errors.MissingDatabase` (no database for a command that reads),
        and the market's and grid's input errors (:data:`INPUT_ERRORS`) are printed on one
        line and give 2; so are argparse's usage errors.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except INPUT_ERRORS as exc:
        print(f"peergrid: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # the reader went away (``peergrid grid buses ... | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())

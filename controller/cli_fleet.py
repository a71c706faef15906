"""``peergrid worker`` and ``peergrid site add|remove|list``: many sites on one PostgreSQL.

=====================================  =====================================================
``peergrid site add --db URL --id ID   adds the site file as site ``ID`` (its store: schema
--site FILE``                          ``site_ID`` of the database); workers pick it up at
                                       its next event
``peergrid site remove --db URL        stops running it (its store and records stay)
--id ID``
``peergrid site list --db URL``        the sites (``--all``: removed ones too; ``--json``)
``peergrid worker --db URL``           runs a worker (:mod:`controller.worker`) until
                                       SIGINT/SIGTERM
``peergrid serve --front --db URL      serves a fleet site's API in front of the workers
--id ID``                              (:mod:`controller.serve`)
=====================================  =====================================================

``--db`` is a PostgreSQL URL (``postgresql+psycopg://user@host/dbname``); the environment
variable ``PEERGRID_DB`` is used when it is not given. Exit codes as ``peergrid``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from controller.cli_types import positive_int, positive_seconds
from controller.errors import ConfigError


def _db(args: argparse.Namespace) -> str:
    return _db_url(args.db)


def _db_url(given: str | None) -> str:
    url: str | None = given or os.environ.get("PEERGRID_DB")
    if not url:
        msg = "no database: give --db URL or set PEERGRID_DB (a PostgreSQL URL)"
        raise ConfigError(msg)
    return url


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=None, help="the fleet's PostgreSQL URL (default: $PEERGRID_DB)"
    )


def register_site(site_sub: Any) -> None:  # noqa: ANN401 - argparse's _SubParsersAction
    """Add ``site add|remove|list`` to the ``site`` command's subparsers."""
    add = site_sub.add_parser("add", help="add a site file to a fleet's database")
    _add_db(add)
    add.add_argument("--id", required=True, help="the site's id (a-z, 0-9, _)")
    add.add_argument("--site", required=True, type=Path, help="site TOML file")
    add.set_defaults(func=_cmd_site_add)
    remove = site_sub.add_parser("remove", help="stop running a site of a fleet")
    _add_db(remove)
    remove.add_argument("--id", required=True, help="the site's id")
    remove.set_defaults(func=_cmd_site_remove)
    listing = site_sub.add_parser("list", help="the sites of a fleet")
    _add_db(listing)
    listing.add_argument("--all", action="store_true", help="removed sites too")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_cmd_site_list)


def register(sub: Any) -> None:  # noqa: ANN401 - argparse's _SubParsersAction
    """Add ``worker`` to ``peergrid``'s subparsers."""
    worker = sub.add_parser("worker", help="run a worker of a fleet of sites (PostgreSQL)")
    _add_db(worker)
    worker.add_argument(
        "--concurrency", type=positive_int, default=1, help="site steps run at once (default 1)"
    )
    worker.add_argument(
        "--stall-s",
        type=positive_seconds,
        default=None,
        help="a worker silent this long [s] is dead: its sites go on elsewhere (default 30)",
    )
    worker.add_argument("--name", default="", help="the worker's name in logs and the engine")
    worker.add_argument(
        "--dev-interval-s",
        type=positive_int,
        default=None,
        metavar="N",
        help="DEVELOPMENT ONLY: N-second intervals for every site (all workers alike)",
    )
    worker.add_argument(
        "--simulate-devices",
        action="store_true",
        help="DEVELOPMENT ONLY: read devices simulated in-process, not over Modbus",
    )
    worker.add_argument(
        "--no-warm",
        action="store_true",
        help="build a site's runtime at its first step only, not all at start",
    )
    worker.set_defaults(func=_cmd_worker)


def fleet_site(db: str | None, site_id: str) -> Any:  # noqa: ANN401 - SiteConfig
    """The fleet's site ``site_id`` (its store: the site's schema), for ``serve --front``."""
    from controller.fleet import Fleet  # noqa: PLC0415

    return Fleet(_db_url(db), create=False).load_site(site_id)


def _cmd_site_add(args: argparse.Namespace) -> int:
    from controller.fleet import Fleet, site_schema  # noqa: PLC0415 - PostgreSQL when asked

    if not args.site.is_file():
        msg = f"no site file {args.site}"
        raise ConfigError(msg)
    site = Fleet(_db(args)).add_site(args.id, args.site)
    print(f"added site {args.id} ({site.name}); its store: schema {site_schema(args.id)}")  # noqa: T201
    return 0


def _cmd_site_remove(args: argparse.Namespace) -> int:
    from controller.fleet import Fleet  # noqa: PLC0415

    if not Fleet(_db(args)).remove_site(args.id):
        msg = f"no active site {args.id!r}"
        raise ConfigError(msg)
    print(f"removed site {args.id} (its store and records stay)")  # noqa: T201
    return 0


def _cmd_site_list(args: argparse.Namespace) -> int:
    from controller.fleet import Fleet  # noqa: PLC0415
    from market.domain import utc_label  # noqa: PLC0415

    rows = Fleet(_db(args)).list_sites(removed=args.all)
    if args.json:
        print(  # noqa: T201
            json.dumps(
                [
                    {
                        "id": r.site_id,
                        "name": r.name,
                        "added_at": r.added_at.isoformat(),
                        "removed_at": r.removed_at.isoformat() if r.removed_at else None,
                        "last_dispatched": r.dispatched_until or None,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return 0
    for r in rows:
        last = utc_label(r.dispatched_until) if r.dispatched_until else "never"
        gone = f"  removed {r.removed_at:%Y-%m-%d %H:%M}" if r.removed_at else ""
        print(f"{r.site_id:<20} {r.name:<30} last dispatched {last}{gone}")  # noqa: T201
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from controller.fleet import STALL_S  # noqa: PLC0415
    from controller.worker import WorkerOptions, run_worker  # noqa: PLC0415

    return run_worker(
        WorkerOptions(
            db_url=_db(args),
            concurrency=args.concurrency,
            stall_s=args.stall_s or STALL_S,
            dev_interval_s=args.dev_interval_s,
            simulate_devices=args.simulate_devices,
            name=args.name,
            warm=not args.no_warm,
        )
    )

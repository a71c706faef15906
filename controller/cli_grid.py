"""``peergrid grid buses --grid SPEC [--json]``: the buses a grid's orders and sites may name.

Prints one line per bus (pandapower index order): index, name, nominal voltage [kV], ``slack``
where the upstream connection (an ext_grid) is, ``out of service`` where the bus is not in
service. With ``--json`` a list of objects ``{"name", "index", "vn_kv", "slack",
"in_service"}``.

Exit codes as ``peergrid``: 0 ok; 2 a grid spec that names no grid or file (the message
suggests the closest built-in name).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from controller.cli_types import non_negative_int

EXIT_OK = 0


def register(sub: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add ``peergrid grid buses`` to the subparsers ``sub`` of ``peergrid``'s parser.

    Parameters
    ----------
    sub : argparse subparsers action
        What ``ArgumentParser.add_subparsers`` returned for ``peergrid``.
    """
    grid = sub.add_parser("grid", help="inspect a grid: its buses")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True)
    buses = grid_sub.add_parser(
        "buses", help="list a grid's buses: name, index, vn_kv, slack (names orders may use)"
    )
    buses.add_argument("--grid", required=True, help="cigre-lv, simbench:<code> or a .json file")
    buses.add_argument(
        "--time-step", type=non_negative_int, default=None, help="SimBench 15-min step"
    )
    buses.add_argument("--json", action="store_true", help="print JSON")
    buses.set_defaults(func=cmd_buses)


def cmd_buses(args: argparse.Namespace) -> int:
    """``peergrid grid buses``: print the grid's buses.

    Parameters
    ----------
    args : argparse.Namespace
        ``grid`` (the spec), ``time_step`` (or ``None``), ``json``.

    Returns
    -------
    int
        0; a bad spec raises :class:`~grid_models.errors.UnknownGrid` (or
        :class:`~grid_models.errors.InvalidGrid` for a bad time step), which ``peergrid``
        maps to exit code 2.
    """
    from grid_models.grids import load_grid_cached  # noqa: PLC0415 - pandapower, when asked

    grid = load_grid_cached(args.grid, args.time_step)
    buses = grid.buses()
    if args.json:
        sys.stdout.write(json.dumps([asdict(b) for b in buses], indent=2) + "\n")
        return EXIT_OK
    width = max((len(b.name) for b in buses), default=4)
    sys.stdout.write(f"{'index':>5}  {'name':<{width}}  {'vn_kv':>7}  notes\n")
    for b in buses:
        notes = ", ".join(
            text for text, on in (("slack", b.slack), ("out of service", not b.in_service)) if on
        )
        sys.stdout.write(f"{b.index:>5}  {b.name:<{width}}  {b.vn_kv:>7g}  {notes}".rstrip() + "\n")
    sys.stdout.write(f"{len(buses)} buses in {grid.spec}\n")
    return EXIT_OK

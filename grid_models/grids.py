"""Load feeders: the built-in CIGRE LV grid, SimBench grids by code, pandapower JSON files.

A grid *spec* is one of:

* ``cigre-lv``: :func:`pandapower.networks.create_cigre_network_lv` (44 buses, 3 feeders);
* ``cigre-mv``: :func:`pandapower.networks.create_cigre_network_mv` (15 buses, 20 kV, two
  feeders, its loop switches S1-S3 open: radial); ``cigre-mv-meshed``: the same with S1-S3
  closed (three loops: the feeders run meshed);
* ``simbench:<code>``, e.g. ``simbench:1-LV-rural1--0-sw`` (data installed with ``simbench``,
  no download); its load and generation profiles come along;
* a path to a pandapower JSON file (``*.json``).

Buses are named by their pandapower ``name``; unnamed buses get ``bus<index>``. Names must be
unique: participants and orders refer to buses by name. An unknown name is answered with the
closest names (:func:`closest_bus_names`); ``peergrid grid buses --grid SPEC`` lists them all
(:meth:`Grid.buses`).
"""

from __future__ import annotations

import copy
import difflib
import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandapower as pp
import pandapower.networks as pn

from grid_models.errors import InvalidGrid, UnknownBus, UnknownGrid
from market.domain import BusId

BUILTIN_GRIDS = ("cigre-lv", "cigre-mv", "cigre-mv-meshed")

CLOSE = 0.6
"""Least similarity of a name suggested for an unknown one (difflib's default cutoff) [-]."""


def closest_bus_names(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    """The names in ``names`` most like ``name`` (:func:`difflib.get_close_matches`).

    Parameters
    ----------
    name : str
        A bus name that is not in the grid.
    names : iterable of str
        The grid's bus names.
    n : int
        How many to return at most [-].

    Returns
    -------
    list of str
        Up to ``n`` names with a similarity (:meth:`difflib.SequenceMatcher.ratio`) of at
        least :data:`CLOSE`, the closest first and equally close ones in alphabetical order;
        empty when none is close.
    """
    matcher = difflib.SequenceMatcher(b=name)
    scored = []
    for candidate in set(names):
        matcher.set_seq1(candidate)
        if matcher.real_quick_ratio() >= CLOSE and matcher.quick_ratio() >= CLOSE:
            score = matcher.ratio()
            if score >= CLOSE:
                scored.append((-score, candidate))
    return [candidate for _, candidate in sorted(scored)[:n]]


def unknown_bus_message(name: str, names: Iterable[str], spec: str) -> str:
    """``unknown bus 'X' in grid SPEC``, with the closest names when some are close.

    Parameters
    ----------
    name : str
        The unknown bus name.
    names : iterable of str
        The grid's bus names.
    spec : str
        The grid spec, as the user gave it.

    Returns
    -------
    str
        E.g. ``unknown bus 'Bus R19' in grid cigre-lv (closest: 'Bus R1', 'Bus R11', 'Bus R10';
        'peergrid grid buses --grid cigre-lv' lists them all)``.
    """
    close = closest_bus_names(name, names)
    listing = f"'peergrid grid buses --grid {spec}' lists them all"
    hint = f"closest: {', '.join(repr(c) for c in close)}; {listing}" if close else listing
    return f"unknown bus {name!r} in grid {spec} ({hint})"


@dataclass(frozen=True, slots=True)
class BusInfo:
    """One bus of a grid, as ``peergrid grid buses`` lists it."""

    name: BusId
    """The name orders and participants use (pandapower ``name``, else ``bus<index>``)."""
    index: int
    """Pandapower index [-]."""
    vn_kv: float
    """Nominal voltage [kV]."""
    slack: bool
    """Whether an ext_grid (the upstream connection, the slack) sits at this bus."""
    in_service: bool
    """Whether the bus is in service (orders at an out-of-service bus are refused)."""


@dataclass(eq=False)
class Grid:
    """A pandapower feeder plus what PeerGrid needs around it.

    ``net`` is never mutated by PeerGrid's functions: every what-if runs on a copy.
    ``profiles`` holds SimBench's absolute profiles (``("load", "p_mw")`` ... -> DataFrame with
    one column per element, one row per 15-min step) when the grid came from SimBench.
    """

    spec: str
    net: Any
    profiles: dict[tuple[str, str], Any] | None = None
    time_step: int | None = None
    _names: dict[BusId, int] = field(default_factory=dict, repr=False)
    _by_index: dict[int, BusId] = field(default_factory=dict, repr=False)
    _branch_names: dict[str, dict[int, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        names: dict[BusId, int] = {}
        for idx, raw in zip(self.net.bus.index, self.net.bus["name"], strict=True):
            name = BusId(str(raw) if isinstance(raw, str) and raw.strip() else f"bus{idx}")
            if name in names:
                msg = f"{self.spec}: bus name {name!r} is used by buses {names[name]} and {idx}"
                raise InvalidGrid(msg)
            names[name] = int(idx)
        self._names = names
        self._by_index = {i: name for name, i in names.items()}

    @property
    def bus_names(self) -> tuple[BusId, ...]:
        """Names of the in-service buses, in pandapower index order."""
        in_service = self.net.bus["in_service"]
        return tuple(n for n, i in self._names.items() if bool(in_service.loc[i]))

    def buses(self) -> tuple[BusInfo, ...]:
        """Every bus (in service or not), in pandapower index order.

        Returns
        -------
        tuple of BusInfo
            Name, index, nominal voltage [kV], whether it is the slack, in service.
        """
        bus = self.net.bus
        slack = {
            int(b)
            for b, on in zip(self.net.ext_grid["bus"], self.net.ext_grid["in_service"], strict=True)
            if bool(on)
        }
        return tuple(
            BusInfo(
                name=name,
                index=idx,
                vn_kv=float(bus.at[idx, "vn_kv"]),
                slack=idx in slack,
                in_service=bool(bus.at[idx, "in_service"]),
            )
            for name, idx in sorted(self._names.items(), key=lambda item: item[1])
        )

    def bus_index(self, name: str) -> int:
        """Pandapower index of the bus called ``name``.

        Parameters
        ----------
        name : str
            The bus name (pandapower ``bus.name``).

        Returns
        -------
        int
            Its pandapower index.

        Raises
        ------
        UnknownBus
            If there is no such bus; the message names the closest ones.
        """
        try:
            return self._names[BusId(name)]
        except KeyError:
            msg = unknown_bus_message(name, self._names, self.spec)
            raise UnknownBus(msg) from None

    def bus_name(self, index: int) -> BusId:
        """Name of the bus with pandapower index ``index``.

        Parameters
        ----------
        index : int
            Pandapower bus index.

        Returns
        -------
        BusId
            Its ``name``, or ``bus<index>`` when it has none.
        """
        return self._by_index[int(index)]

    def branch_name(self, kind: str, index: int) -> str:
        """Name of the line or transformer ``index`` (``kind`` "line" or "trafo").

        Read once per kind from ``net.line`` / ``net.trafo`` (the AC check names every
        branch of a 5,000-bus feeder on each clearing).

        Parameters
        ----------
        kind : str
            ``"line"`` or ``"trafo"``.
        index : int
            Its pandapower index.

        Returns
        -------
        str
            Its ``name``, or ``<kind><index>`` when it has none.
        """
        names = self._branch_names.get(kind)
        if names is None:
            table = getattr(self.net, kind)
            raw = table["name"] if "name" in table else [None] * len(table)
            names = {
                int(i): str(r) if isinstance(r, str) and r.strip() else f"{kind}{int(i)}"
                for i, r in zip(table.index, raw, strict=True)
            }
            self._branch_names[kind] = names
        return names[int(index)]

    def copy(self) -> Grid:
        """A deep copy whose ``net`` may be changed freely."""
        return Grid(self.spec, copy.deepcopy(self.net), self.profiles, self.time_step)

    def at_time_step(self, step: int) -> Grid:
        """A copy with loads and sgens set from the SimBench profiles at ``step``.

        Parameters
        ----------
        step : int
            Index of the 15-min time step in the profiles' year [-].

        Returns
        -------
        Grid
            The copy, with ``time_step`` set.

        Raises
        ------
        InvalidGrid
            If the grid has no profiles or ``step`` is out of range.
        """
        if not self.profiles:
            msg = f"grid {self.spec} has no profiles; time steps need a SimBench grid"
            raise InvalidGrid(msg)
        loads = self.profiles[("load", "p_mw")]
        if not 0 <= step < len(loads):
            msg = f"time step {step} out of range 0..{len(loads) - 1} (15-min steps of a year)"
            raise InvalidGrid(msg)
        out = self.copy()
        for (element, column), frame in self.profiles.items():
            table = getattr(out.net, element)
            if len(frame.columns) and len(table):
                table.loc[frame.columns, column] = frame.iloc[step].to_numpy()
        out.time_step = step
        return out

    def scaled(self, load_scale: float = 1.0, sgen_scale: float = 1.0) -> Grid:
        """A copy with every load's P and Q and every sgen's P multiplied by factors.

        Parameters
        ----------
        load_scale, sgen_scale : float
            Factors for the loads and the static generators [-].

        Returns
        -------
        Grid
            The scaled copy.
        """
        out = self.copy()
        out.net.load["p_mw"] *= load_scale
        out.net.load["q_mvar"] *= load_scale
        out.net.sgen["p_mw"] *= sgen_scale
        return out


INJECTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("load", "p_mw"),
    ("load", "q_mvar"),
    ("sgen", "p_mw"),
    ("sgen", "q_mvar"),
    ("storage", "p_mw"),
    ("storage", "q_mvar"),
    ("gen", "p_mw"),
)
"""The columns a base case sets (profiles, load scaling); kept apart from the stored grid."""


def split_base_case(grid: Grid) -> tuple[str, dict[str, list[list[Any]]]]:
    """A grid as pandapower JSON without its base case, and the base case apart.

    The JSON (the grid's identity, stored once by content hash) has every column of
    :data:`INJECTION_COLUMNS` set to 0; the base case holds those columns' values, so one
    stored grid serves every interval of a site whose base case changes per interval.

    Parameters
    ----------
    grid : Grid
        A feeder with its base case set.

    Returns
    -------
    tuple of (str, dict)
        The pandapower JSON text, and ``{"<table>.<column>": [[index, value], ...]}`` in
        index order (power [MW], [Mvar]).
    """
    net = copy.deepcopy(grid.net)
    injections: dict[str, list[list[Any]]] = {}
    for table_name, column in INJECTION_COLUMNS:
        table = getattr(net, table_name, None)
        if table is None or column not in table or not len(table):
            continue
        injections[f"{table_name}.{column}"] = [
            [int(i), float(v)] for i, v in zip(table.index, table[column], strict=True)
        ]
        table[column] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = str(pp.to_json(net))
    return text, injections


def join_base_case(text: str, injections: dict[str, list[list[Any]]], spec: str) -> Grid:
    """The grid :func:`split_base_case` split, put back together.

    Parameters
    ----------
    text : str
        The pandapower JSON.
    injections : dict
        The base case (``{"<table>.<column>": [[index, value], ...]}``).
    spec : str
        What to call the grid in messages.

    Returns
    -------
    Grid
        The feeder with the base case set.

    Raises
    ------
    InvalidGrid
        If the JSON is not a pandapower network or the base case names an unknown element.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            net = pp.from_json_string(text)
        except Exception as exc:  # pandapower raises many kinds for a bad document
            msg = f"{spec}: not a pandapower JSON network: {_one_line(exc)}"
            raise InvalidGrid(msg) from exc
    for key, rows in injections.items():
        table_name, _, column = key.partition(".")
        table = getattr(net, table_name, None)
        if table is None or column not in table:
            msg = f"{spec}: the base case names {key}, which the grid does not have"
            raise InvalidGrid(msg)
        index = [int(i) for i, _ in rows]
        if not set(index) <= set(table.index):
            msg = f"{spec}: the base case names {table_name} elements the grid does not have"
            raise InvalidGrid(msg)
        table.loc[index, column] = [float(v) for _, v in rows]
    return Grid(spec, net)


def cache_dir() -> Path:
    """Where converted grids are cached: ``$PEERGRID_CACHE`` or ``~/.cache/peergrid``."""
    root = os.environ.get("PEERGRID_CACHE") or str(Path.home() / ".cache" / "peergrid")
    return Path(root) / "grids"


def load_grid_cached(spec: str, time_step: int | None = None) -> Grid:
    """:func:`load_grid` (at ``time_step`` for SimBench), cached as pandapower JSON.

    Converting a SimBench MV/LV grid with its profiles takes 5-25 s; the cached JSON of the
    converted net at one time step loads in about 1.5 s, so a one-shot CLI call does not pay
    the conversion twice. Non-SimBench specs are loaded directly (they are fast).

    Parameters
    ----------
    spec : str
        Grid spec (see the module docstring).
    time_step : int, optional
        SimBench 15-min time step to set the base case to [-].

    Returns
    -------
    Grid
        The grid at that time step (without profiles when read from the cache).

    Raises
    ------
    UnknownGrid
        As :func:`load_grid`.
    InvalidGrid
        If ``time_step`` is given for a grid without profiles, or out of range.
    """
    if time_step is not None and time_step < 0:
        msg = f"time step {time_step} out of range: steps count 15-min periods from 0"
        raise InvalidGrid(msg)
    if not spec.startswith("simbench:"):
        grid = load_grid(spec)
        return grid if time_step is None else grid.at_time_step(time_step)
    code = spec.removeprefix("simbench:")
    if not code.replace("-", "").replace("_", "").isalnum() or not code.isascii():
        msg = f"unknown SimBench code {code!r} (e.g. simbench:1-LV-rural1--0-sw)"
        raise UnknownGrid(msg)
    path = cache_dir() / "simbench" / f"{code}{'' if time_step is None else f'-t{time_step}'}.json"
    if path.is_file():
        try:
            net = pp.from_json(str(path))
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
        else:
            return Grid(spec, net, None, time_step)
    grid = load_grid(spec)
    if time_step is not None:
        grid = grid.at_time_step(time_step)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per writer: two processes converting the same grid never collide.
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    pp.to_json(grid.net, str(tmp))
    tmp.replace(path)
    return Grid(spec, grid.net, None, time_step)


def load_grid(spec: str) -> Grid:
    """Load the grid named by ``spec`` (see the module docstring).

    Parameters
    ----------
    spec : str
        ``cigre-lv``, ``cigre-mv``, ``cigre-mv-meshed``, ``simbench:<code>`` or a
        pandapower JSON file.

    Returns
    -------
    Grid
        The grid, with its SimBench profiles when it has some.

    Raises
    ------
    UnknownGrid
        If ``spec`` is neither built in, a SimBench code, nor a readable pandapower JSON file;
        a misspelt built-in name is answered with the right one.
    """
    spec = spec.strip()
    if spec == "cigre-lv":
        return Grid(spec, pn.create_cigre_network_lv())
    if spec in ("cigre-mv", "cigre-mv-meshed"):
        net = pn.create_cigre_network_mv(with_der=False)
        if spec == "cigre-mv-meshed":
            net.switch["closed"] = True  # S1, S2, S3: the loops closed
        return Grid(spec, net)
    if spec.startswith("simbench:"):
        return _get_simbench(spec, spec.removeprefix("simbench:"))
    path = Path(spec)
    if path.suffix.lower() == ".json":
        return read_pandapower_json(path)
    close = difflib.get_close_matches(spec.lower(), BUILTIN_GRIDS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    msg = (
        f"unknown grid {spec!r}: {hint}use one of {', '.join(BUILTIN_GRIDS)}, "
        "'simbench:<code>' or a pandapower JSON file (*.json)"
    )
    raise UnknownGrid(msg)


def _get_simbench(spec: str, code: str) -> Grid:
    import simbench as sb  # noqa: PLC0415 - slow import, only when a SimBench grid is asked

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            net = sb.get_simbench_net(code)
        except Exception as exc:  # simbench raises bare ValueError/KeyError for unknown codes
            msg = f"unknown SimBench code {code!r}: {_one_line(exc)}"
            raise UnknownGrid(msg) from exc
        profiles = sb.get_absolute_values(net, profiles_instead_of_study_cases=True)
    return Grid(spec, net, dict(profiles))


def read_pandapower_json(path: Path) -> Grid:
    """Read a pandapower JSON file.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    Grid
        The network, named by its path.

    Raises
    ------
    UnknownGrid
        If the file is missing, a folder, unreadable, not UTF-8 JSON, or not a pandapower
        network.
    """
    if path.is_dir():
        msg = f"grid file {path} is a directory, not a pandapower JSON file"
        raise UnknownGrid(msg)
    if not path.is_file():
        msg = f"grid file not found: {path}"
        raise UnknownGrid(msg)
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        msg = f"cannot read grid file {path}: {exc.strerror or exc}"
        raise UnknownGrid(msg) from None
    if b"\x00" in head:
        msg = f"grid file {path} is a binary file, not a pandapower JSON network"
        raise UnknownGrid(msg)
    try:
        net = pp.from_json(str(path))
    except Exception as exc:  # pandapower raises many kinds for a bad file
        msg = f"{path} is not a pandapower JSON network: {_one_line(exc)}"
        raise UnknownGrid(msg) from exc
    if not len(net.bus) or not len(net.ext_grid):
        msg = f"{path}: a grid needs buses and an ext_grid (the upstream connection)"
        raise UnknownGrid(msg)
    return Grid(str(path), net)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, for messages that quote a library's error."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."

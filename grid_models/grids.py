"""Load feeders: the built-in CIGRE LV grid, SimBench grids by code, pandapower JSON files.

A grid *spec* is one of:

* ``cigre-lv``: :func:`pandapower.networks.create_cigre_network_lv` (44 buses, 3 feeders);
* ``simbench:<code>``, e.g. ``simbench:1-LV-rural1--0-sw`` (data installed with ``simbench``,
  no download); its load and generation profiles come along;
* a path to a pandapower JSON file (``*.json``).

Buses are named by their pandapower ``name``; unnamed buses get ``bus<index>``. Names must be
unique: participants and orders refer to buses by name.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandapower as pp
import pandapower.networks as pn

from grid_models.errors import GridModelError, UnknownBus, UnknownGrid
from market.domain import BusId

BUILTIN_GRIDS = ("cigre-lv",)


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

    def __post_init__(self) -> None:
        names: dict[BusId, int] = {}
        for idx, raw in zip(self.net.bus.index, self.net.bus["name"], strict=True):
            name = BusId(str(raw) if isinstance(raw, str) and raw.strip() else f"bus{idx}")
            if name in names:
                msg = f"{self.spec}: bus name {name!r} is used by buses {names[name]} and {idx}"
                raise GridModelError(msg)
            names[name] = int(idx)
        self._names = names

    @property
    def bus_names(self) -> tuple[BusId, ...]:
        """Names of the in-service buses, in pandapower index order."""
        in_service = self.net.bus["in_service"]
        return tuple(n for n, i in self._names.items() if bool(in_service.loc[i]))

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
            If there is no such bus.
        """
        try:
            return self._names[BusId(name)]
        except KeyError:
            msg = f"unknown bus {name!r} in grid {self.spec}"
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
        raw = self.net.bus.at[index, "name"]
        return BusId(str(raw) if isinstance(raw, str) and raw.strip() else f"bus{index}")

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
        GridModelError
            If the grid has no profiles or ``step`` is out of range.
        """
        if not self.profiles:
            msg = f"grid {self.spec} has no profiles; time steps need a SimBench grid"
            raise GridModelError(msg)
        loads = self.profiles[("load", "p_mw")]
        if not 0 <= step < len(loads):
            msg = f"time step {step} out of range 0..{len(loads) - 1}"
            raise GridModelError(msg)
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
    GridModelError
        If ``time_step`` is given for a grid without profiles, or out of range.
    """
    if not spec.startswith("simbench:"):
        grid = load_grid(spec)
        return grid if time_step is None else grid.at_time_step(time_step)
    code = spec.removeprefix("simbench:")
    if not code.replace("-", "").replace("_", "").isalnum():
        msg = f"unknown SimBench code {code!r}"
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
    tmp = path.with_suffix(".tmp")
    pp.to_json(grid.net, str(tmp))
    tmp.replace(path)
    return Grid(spec, grid.net, None, time_step)


def load_grid(spec: str) -> Grid:
    """Load the grid named by ``spec`` (see the module docstring).

    Parameters
    ----------
    spec : str
        ``cigre-lv``, ``simbench:<code>`` or a pandapower JSON file.

    Returns
    -------
    Grid
        The grid, with its SimBench profiles when it has some.

    Raises
    ------
    UnknownGrid
        If ``spec`` is neither built in, a SimBench code, nor a readable pandapower JSON file.
    """
    spec = spec.strip()
    if spec == "cigre-lv":
        return Grid(spec, pn.create_cigre_network_lv())
    if spec.startswith("simbench:"):
        return _get_simbench(spec, spec.removeprefix("simbench:"))
    path = Path(spec)
    if path.suffix.lower() == ".json":
        return read_pandapower_json(path)
    msg = (
        f"unknown grid {spec!r}: use one of {', '.join(BUILTIN_GRIDS)}, "
        "'simbench:<code>' or a pandapower JSON file"
    )
    raise UnknownGrid(msg)


def _get_simbench(spec: str, code: str) -> Grid:
    import simbench as sb  # noqa: PLC0415 - slow import, only when a SimBench grid is asked

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            net = sb.get_simbench_net(code)
        except Exception as exc:  # simbench raises bare ValueError/KeyError for unknown codes
            msg = f"unknown SimBench code {code!r}: {exc}"
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
        If the file is missing or not a pandapower network.
    """
    if not path.is_file():
        msg = f"grid file not found: {path}"
        raise UnknownGrid(msg)
    try:
        net = pp.from_json(str(path))
    except Exception as exc:  # pandapower raises many kinds for a bad file
        msg = f"{path} is not a pandapower JSON network: {exc}"
        raise UnknownGrid(msg) from exc
    if not len(net.bus) or not len(net.ext_grid):
        msg = f"{path}: a grid needs buses and an ext_grid (the upstream connection)"
        raise UnknownGrid(msg)
    return Grid(str(path), net)

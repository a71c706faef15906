"""Exceptions of ``grid_models`` (the only package that imports pandapower).

::

    GridModelError
     ├── UnknownGrid (ValueError)          a grid spec that names no known grid or file
     ├── UnknownBus (KeyError)             a bus name that is not in the grid
     ├── UnsupportedTopology (ValueError)  e.g. a meshed feeder for the radial LinDistFlow model
     └── PowerFlowFailed (RuntimeError)    pandapower's LoadflowNotConverged, wrapped
"""

from __future__ import annotations


class GridModelError(Exception):
    """Root of every error raised by ``grid_models``."""


class UnknownGrid(GridModelError, ValueError):
    """The grid spec names no built-in grid, SimBench code or readable file."""


class UnknownBus(GridModelError, KeyError):
    """A bus name that the grid does not have."""


class UnsupportedTopology(GridModelError, ValueError):
    """The topology does not fit the network model (e.g. meshed for LinDistFlow)."""


class PowerFlowFailed(GridModelError, RuntimeError):
    """The AC power flow did not converge."""

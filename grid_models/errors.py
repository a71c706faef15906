"""Exceptions of ``grid_models`` (the only package that imports pandapower).

::

    GridModelError
     ├── UnknownGrid (ValueError)          a grid spec that names no known grid or file
     ├── InvalidGrid (ValueError)          a grid, or a request on it, that cannot be used:
     │                                     two buses of one name, a time step out of range
     ├── UnknownBus (KeyError)             a bus name that is not in the grid (with the
     │                                     closest names)
     ├── UnsupportedTopology (ValueError)  e.g. a meshed feeder for the radial LinDistFlow model
     └── PowerFlowFailed (RuntimeError)    pandapower's LoadflowNotConverged, wrapped
"""

from __future__ import annotations


class GridModelError(Exception):
    """Root of every error raised by ``grid_models``."""


class UnknownGrid(GridModelError, ValueError):
    """The grid spec names no built-in grid, SimBench code or readable file."""


class InvalidGrid(GridModelError, ValueError):
    """A grid (or a request on it) that cannot be used: duplicate bus names, a bad time step."""


class UnknownBus(GridModelError, KeyError):
    """A bus name that the grid does not have.

    ``str()`` is the message itself (a plain ``KeyError`` would print it quoted).
    """

    def __str__(self) -> str:
        """The message, unquoted."""
        return str(self.args[0]) if self.args else ""


class UnsupportedTopology(GridModelError, ValueError):
    """The topology does not fit the network model (e.g. meshed for LinDistFlow)."""


class PowerFlowFailed(GridModelError, RuntimeError):
    """The AC power flow did not converge."""

"""Tariffs and settings of one clearing (:class:`ClearingOptions`) and their kinds."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

from market.domain import Mechanism
from market.errors import InvalidOrder


class Engine(enum.StrEnum):
    """How the LP reaches HiGHS."""

    HIGHSPY = "highspy"
    """Sparse arrays straight into HiGHS (:mod:`market.clearing.lp`, the default)."""
    PYOMO = "pyomo"
    """The algebraic reference model through pyomo (:mod:`market.clearing.model`)."""


class HighsSolver(enum.StrEnum):
    """HiGHS's ``solver`` option."""

    CHOOSE = "choose"
    SIMPLEX = "simplex"
    IPM = "ipm"


_K = TypeVar("_K", bound=enum.StrEnum)


def _kind(kind: type[_K], value: str, what: str) -> _K:
    """``value`` as a member of ``kind`` (strings are accepted), or InvalidOrder."""
    try:
        return kind(value)
    except ValueError:
        available = ", ".join(member.value for member in kind)
        msg = f"unknown {what} {value!r}; available: {available}"
        raise InvalidOrder(msg) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearingOptions:
    """Tariffs and settings of one clearing.

    The three kinds also accept their string values (``mechanism="uniform"``); they are
    stored as the enum member.

    Parameters
    ----------
    import_price : int
        Price at which the upstream grid sells to the market [token base units / kWh].
    export_price : int
        Price at which the upstream grid buys from the market [token base units / kWh];
        must not exceed ``import_price``.
    time_limit_s : float
        Wall-clock limit for the solver [s].
    mechanism : Mechanism
        How accepted orders are priced (:mod:`market.clearing.pricing`): ``nodal`` (the
        default), ``uniform`` or ``pay-as-bid``.
    engine : Engine
        ``highspy`` (the default) or ``pyomo`` (the reference model).
    solver : HighsSolver
        HiGHS's ``solver`` option: ``choose``, ``simplex`` or ``ipm``.

    Raises
    ------
    InvalidOrder
        Negative tariffs, an export tariff above the import tariff, an unknown kind or a
        time limit that is not positive.
    """

    import_price: int = 300_000
    export_price: int = 80_000
    time_limit_s: float = 10.0
    mechanism: Mechanism = Mechanism.NODAL
    engine: Engine = Engine.HIGHSPY
    solver: HighsSolver = HighsSolver.CHOOSE

    def __post_init__(self) -> None:
        if self.import_price < 0 or self.export_price < 0:
            msg = "tariffs must be >= 0"
            raise InvalidOrder(msg)
        if self.export_price > self.import_price:
            msg = (
                f"export price {self.export_price} above import price {self.import_price} "
                "would let the market buy from the grid to sell back at a profit"
            )
            raise InvalidOrder(msg)
        object.__setattr__(self, "mechanism", _kind(Mechanism, self.mechanism, "pricing mechanism"))
        object.__setattr__(self, "engine", _kind(Engine, self.engine, "engine"))
        object.__setattr__(self, "solver", _kind(HighsSolver, self.solver, "solver"))
        if not self.time_limit_s > 0:
            msg = "time_limit_s must be > 0"
            raise InvalidOrder(msg)

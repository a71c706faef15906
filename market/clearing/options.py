"""Tariffs and settings of one clearing (:class:`ClearingOptions`) and their kinds.

**Iteration counts decide, not the wall clock.** HiGHS is bounded by its iteration limits
(:data:`SIMPLEX_ITERATION_LIMIT`, :data:`IPM_ITERATION_LIMIT`), which give the same outcome
on any machine; it gets no ``time_limit`` unless a wall-clock budget is asked for
(``time_limit_s``, production only: a stop it causes is recorded as
:attr:`~market.domain.ClearingStatus.TIME_LIMIT`, the one status no re-clear is expected to
reproduce).
"""

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


SIMPLEX_ITERATION_LIMIT = 1_000_000
"""HiGHS's ``simplex_iteration_limit`` [iterations] per run: generous. Measured
(``benchmarks/clearing.py``'s books of 100, 1,000 and 10,000 orders on 1-LV-rural1--0-sw and
1-MVLV-rural-all-0-sw, solver choose, simplex and ipm): at most 789 simplex iterations in one
run, so this stops only a solve that has gone wrong, the same way on any machine."""

IPM_ITERATION_LIMIT = 10_000
"""HiGHS's ``ipm_iteration_limit`` [iterations] per run: generous (measured as above: at most
23; HiGHS's crossover and clean-up after the interior point count simplex iterations)."""

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
    time_limit_s : float or None
        The **wall-clock budget** of the whole clearing [s], for production only; ``None``
        (the default): none, iteration counts alone decide and the outcome is the same on
        any machine. With a budget, HiGHS also gets the time left as its ``time_limit``;
        a stop caused by the budget is the status TIME_LIMIT (a re-clear need not
        reproduce it).
    mechanism : Mechanism
        How accepted orders are priced (:mod:`market.clearing.pricing`): ``nodal`` (the
        default), ``uniform`` or ``pay-as-bid``.
    engine : Engine
        ``highspy`` (the default) or ``pyomo`` (the reference model).
    solver : HighsSolver
        HiGHS's ``solver`` option: ``choose``, ``simplex`` or ``ipm``.
    simplex_iteration_limit : int
        HiGHS's ``simplex_iteration_limit`` [iterations] (:data:`SIMPLEX_ITERATION_LIMIT`).
    ipm_iteration_limit : int
        HiGHS's ``ipm_iteration_limit`` [iterations] (:data:`IPM_ITERATION_LIMIT`).

    Raises
    ------
    InvalidOrder
        Negative tariffs, an export tariff above the import tariff, an unknown kind, a
        time budget that is not positive or an iteration limit below 1.
    """

    import_price: int = 300_000
    export_price: int = 80_000
    time_limit_s: float | None = None
    mechanism: Mechanism = Mechanism.NODAL
    engine: Engine = Engine.HIGHSPY
    solver: HighsSolver = HighsSolver.CHOOSE
    simplex_iteration_limit: int = SIMPLEX_ITERATION_LIMIT
    ipm_iteration_limit: int = IPM_ITERATION_LIMIT

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
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            msg = "time_limit_s (the wall-clock budget) must be > 0, or None for none"
            raise InvalidOrder(msg)
        for name in ("simplex_iteration_limit", "ipm_iteration_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{name} must be a whole number >= 1, got {value!r}"
                raise InvalidOrder(msg)

    @property
    def deterministic(self) -> bool:
        """Whether iteration counts alone decide (no wall-clock budget)."""
        return self.time_limit_s is None

    def highs_options(self) -> dict[str, int | float | str]:
        """The HiGHS options these settings set (besides ``output_flag`` and ``threads``).

        Returns
        -------
        dict
            ``solver``, ``simplex_iteration_limit`` and ``ipm_iteration_limit``
            [iterations], and ``time_limit`` [s] only with a wall-clock budget.
        """
        options: dict[str, int | float | str] = {
            "solver": self.solver.value,
            "simplex_iteration_limit": self.simplex_iteration_limit,
            "ipm_iteration_limit": self.ipm_iteration_limit,
        }
        if self.time_limit_s is not None:
            options["time_limit"] = float(self.time_limit_s)
        return options

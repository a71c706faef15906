"""The market parameters a community governs, their units and limits (pure).

An energy community votes on its own rules (``Governor.vy``); the grid's safety limits
(voltage band, thermal limits) are not among them and stay with the grid operator. The
governed values live on the contracts that use them:

==========================  ==================================  ========================
parameter                   unit                                held by
==========================  ==================================  ========================
``community_fee_bps``       basis points of a local trade's     ``Parameters`` registry
                            buyer amount
``import_tariff_min``,      token base units per kWh            ``Parameters`` registry
``import_tariff_max``
``export_tariff_min``,      token base units per kWh            ``Parameters`` registry
``export_tariff_max``
``gate_closure_s``          s before an interval's start        ``Parameters`` registry
reward rate, reward cap     reward base units per kWh, per      ``Settlement``
                            interval
withdrawal delay            s                                   ``Settlement``
voting period, quorum       s, basis points of the members      ``Governor``
delay                       s                                   ``Timelock``
longest pause, pauser       h, address                          ``Guardian``
members                     one vote each                       ``Membership``
==========================  ==================================  ========================

:data:`REGISTRY` lists the registry's parameters: the controller reads them at each interval
boundary and applies them from the next interval on, and ``audit verify`` checks a record's
values against the registry at the block the record names. A value outside its limits is
refused when a proposal is made (:func:`check_value`) and again when the controller reads
it (the interval then keeps the values before it, and the problem is reported).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from market.errors import InvalidQuantity

BPS: Final = 10_000
"""Basis points in one whole."""

_MAX_PRICE: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class GovernedParameter:
    """One parameter of the ``Parameters`` registry.

    Attributes
    ----------
    name : str
        The registry key is ``keccak256`` of this name.
    unit : str
        The unit of its integer value.
    minimum, maximum : int
        Inclusive limits of a valid value.
    doc : str
        What it does, for ``peergrid gov`` and the dashboard.
    """

    name: str
    unit: str
    minimum: int
    maximum: int
    doc: str


REGISTRY: Final[Mapping[str, GovernedParameter]] = MappingProxyType(
    {
        p.name: p
        for p in (
            GovernedParameter(
                "community_fee_bps",
                "bps of the buyer amount",
                0,
                BPS,
                "fee on each local trade, deducted from the seller's revenue, paid to COMMUNITY",
            ),
            GovernedParameter(
                "import_tariff_min",
                "token base units per kWh",
                0,
                _MAX_PRICE,
                "lowest import tariff the operator may set",
            ),
            GovernedParameter(
                "import_tariff_max",
                "token base units per kWh",
                0,
                _MAX_PRICE,
                "highest import tariff the operator may set",
            ),
            GovernedParameter(
                "export_tariff_min",
                "token base units per kWh",
                0,
                _MAX_PRICE,
                "lowest export tariff the operator may set",
            ),
            GovernedParameter(
                "export_tariff_max",
                "token base units per kWh",
                0,
                _MAX_PRICE,
                "highest export tariff the operator may set",
            ),
            GovernedParameter(
                "gate_closure_s",
                "s before the interval's start",
                0,
                86_400,
                "when an interval's order book closes (overrides the site file's value)",
            ),
        )
    }
)
"""The registry's parameters, by name."""


def check_value(name: str, value: int) -> int:
    """``value`` if it is a valid value of registry parameter ``name``.

    Parameters
    ----------
    name : str
        A name in :data:`REGISTRY`.
    value : int
        The proposed value, in the parameter's unit.

    Returns
    -------
    int
        ``value``.

    Raises
    ------
    InvalidQuantity
        If ``name`` is not governed or ``value`` is outside its limits.
    """
    spec = REGISTRY.get(name)
    if spec is None:
        msg = f"{name!r} is not a governed parameter (governed: {', '.join(sorted(REGISTRY))})"
        raise InvalidQuantity(msg)
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an integer in {spec.unit}, got {value!r}"
        raise InvalidQuantity(msg)
    if not spec.minimum <= value <= spec.maximum:
        msg = f"{name} = {value} is outside {spec.minimum}..{spec.maximum} {spec.unit}"
        raise InvalidQuantity(msg)
    return value


def check_tariff_bounds(values: Mapping[str, int]) -> None:
    """Refuse tariff bounds whose minimum lies above their maximum.

    Parameters
    ----------
    values : Mapping[str, int]
        Registry values by name; bounds not in it are not checked.

    Raises
    ------
    InvalidQuantity
        If ``import_tariff_min > import_tariff_max`` or the same for export.
    """
    for side in ("import", "export"):
        low, high = values.get(f"{side}_tariff_min"), values.get(f"{side}_tariff_max")
        if low is not None and high is not None and low > high:
            msg = f"{side} tariff bounds: minimum {low} is above maximum {high}"
            raise InvalidQuantity(msg)


def community_fee(buyer_amount: int, fee_bps: int) -> int:
    """The community fee on one order's buyer amount [token base units], rounded down.

    Parameters
    ----------
    buyer_amount : int
        What the buyers pay for the energy the order sold [token base units].
    fee_bps : int
        ``community_fee_bps``.

    Returns
    -------
    int
        ``floor(buyer_amount * fee_bps / 10,000)``.
    """
    check_value("community_fee_bps", fee_bps)
    if buyer_amount < 0:
        msg = f"buyer amount must not be negative, got {buyer_amount}"
        raise InvalidQuantity(msg)
    return buyer_amount * fee_bps // BPS


@dataclass(frozen=True, slots=True, kw_only=True)
class GovernedValues:
    """The registry's values as read at one block (what an interval's record names).

    Attributes
    ----------
    registry : str
        The ``Parameters`` contract's address.
    block : int
        The block read.
    values : Mapping[str, int]
        Value per parameter set by then, by name.
    since_block : Mapping[str, int]
        The block that set each value.
    proposals : Mapping[str, int | None]
        The executed proposal that set each value; ``None`` for a value set at deployment.
    """

    registry: str
    block: int
    values: Mapping[str, int]
    since_block: Mapping[str, int]
    proposals: Mapping[str, int | None]

    def to_dict(self) -> dict[str, object]:
        """JSON form: ``registry``, ``block``; per name ``value``, ``since_block``, ``proposal``."""
        return {
            "registry": self.registry,
            "block": self.block,
            "values": {
                name: {
                    "value": value,
                    "since_block": self.since_block[name],
                    "proposal": self.proposals.get(name),
                }
                for name, value in sorted(self.values.items())
            },
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Terms:
    """What an interval is cleared and settled with, after the governed limits.

    Attributes
    ----------
    import_price, export_price : int
        The tariffs applied [token base units per kWh]: the operator's, moved into the
        governed bounds.
    community_fee_bps : int
        The community fee applied [basis points].
    notes : tuple[str, ...]
        What was changed or ignored, and why, for the record.
    """

    import_price: int
    export_price: int
    community_fee_bps: int
    notes: tuple[str, ...] = ()


def apply_governed(import_price: int, export_price: int, values: Mapping[str, int]) -> Terms:
    """The operator's tariffs within the governed bounds, and the governed fee.

    A tariff below its governed minimum is raised to it, one above its maximum lowered to
    it. A value outside its parameter's limits, or bounds whose minimum lies above their
    maximum, are not applied (the note says so), as if unset.

    Parameters
    ----------
    import_price, export_price : int
        The site's tariffs [token base units per kWh].
    values : Mapping[str, int]
        The registry's values by name (:attr:`GovernedValues.values`).

    Returns
    -------
    Terms
        The tariffs and fee to apply, with notes.
    """
    notes: list[str] = []
    valid: dict[str, int] = {}
    for name, value in sorted(values.items()):
        if name not in REGISTRY:
            continue
        try:
            valid[name] = check_value(name, value)
        except InvalidQuantity as exc:
            notes.append(f"not applied: {exc}")
    prices = {"import": import_price, "export": export_price}
    for side in ("import", "export"):
        low, high = valid.get(f"{side}_tariff_min"), valid.get(f"{side}_tariff_max")
        if low is not None and high is not None and low > high:
            notes.append(f"not applied: {side} tariff bounds {low} > {high}")
            continue
        price = prices[side]
        if low is not None and price < low:
            notes.append(f"{side} tariff {price} raised to the governed minimum {low}")
            prices[side] = low
        elif high is not None and price > high:
            notes.append(f"{side} tariff {price} lowered to the governed maximum {high}")
            prices[side] = high
    return Terms(
        import_price=prices["import"],
        export_price=prices["export"],
        community_fee_bps=valid.get("community_fee_bps", 0),
        notes=tuple(notes),
    )


def governed_gate_closure(
    site_gate_closure_s: int, interval_s: int, values: Mapping[str, int]
) -> tuple[int, str]:
    """The gate closure in force from the next interval on [s], and a note for the record.

    The governed ``gate_closure_s`` overrides the site file's when the registry holds a valid
    one that the site's intervals can honour (``0 <= g < interval_s``: an interval's book
    closes after the interval before it was cleared, see :mod:`controller.scheduler`);
    otherwise the site file's value stays, and the note says why.

    Parameters
    ----------
    site_gate_closure_s : int
        The site file's gate closure [s].
    interval_s : int
        The site's interval [s].
    values : Mapping[str, int]
        The registry's values by name (:attr:`GovernedValues.values`).

    Returns
    -------
    tuple of (int, str)
        The gate closure [s], and ``""`` or what was not applied and why.
    """
    if "gate_closure_s" not in values:
        return site_gate_closure_s, ""
    governed = values["gate_closure_s"]
    try:
        check_value("gate_closure_s", governed)
    except InvalidQuantity as exc:
        return site_gate_closure_s, f"not applied: {exc}"
    if governed >= interval_s:
        return site_gate_closure_s, (
            f"not applied: the governed gate_closure_s {governed} s is not below the site's "
            f"interval_s {interval_s} s; the site file's {site_gate_closure_s} s applies"
        )
    return governed, ""


__all__ = [
    "BPS",
    "REGISTRY",
    "GovernedParameter",
    "GovernedValues",
    "Terms",
    "apply_governed",
    "check_tariff_bounds",
    "check_value",
    "community_fee",
    "governed_gate_closure",
]

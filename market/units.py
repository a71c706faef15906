"""Integer units of energy, power and money, and THE rounding function.

Every quantity that crosses a package boundary is an integer in a named unit:

========================  ==========================================================
type                      unit
========================  ==========================================================
:data:`Wh`                watt-hour of energy
:data:`W`                 watt of active power
:data:`TokenUnits`        base units of the payment token (6 decimals: 1 unit = 1e-6)
:data:`PricePerKwh`       token base units per kWh (0.25 /kWh = 250_000)
========================  ==========================================================

Floats exist only inside the optimiser. They come back to integers through
:func:`round_half_even` and nowhere else, so an auditor knows the one rounding
mode used for quantities. Payments use the exact integer rules of
:func:`buyer_payment` (ceiling) and :func:`seller_revenue` (floor), applied once per
order (or per grid/community leg) to its whole accepted energy; :func:`apportion_exact`
then splits that amount over the order's trades by largest remainder, in integers. The
difference between what buyers pay and sellers receive is the community's remainder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NewType

from market.errors import InvalidQuantity

Wh = NewType("Wh", int)
W = NewType("W", int)
TokenUnits = NewType("TokenUnits", int)
PricePerKwh = NewType("PricePerKwh", int)

TOKEN_DECIMALS = 6
"""Decimals of the payment token: 1 token = 10**6 base units."""

WH_PER_KWH = 1000
SECONDS_PER_HOUR = 3600

MAX_PRICE_PER_KWH = PricePerKwh(10**9)
"""Highest price an order or a tariff may name [token base units / kWh] (1,000 tokens/kWh).

With :data:`MAX_ORDER_WH`, an order's amount is at most 10**15 base units, so every amount,
and the sums of a batch, fit the settlement contract's 64-bit lanes.
"""

MAX_ORDER_WH = Wh(10**9)
"""Most energy one order may name [Wh] (1 GWh)."""


def round_half_even(value: float) -> int:
    """Round a float from the optimiser to the nearest integer, ties to even.

    This is the single place where optimiser floats become integer quantities
    (Wh, token units, prices). The value goes through :class:`decimal.Decimal`
    so that the rounding is exact for the float given and identical on every
    platform.

    Parameters
    ----------
    value : float
        A finite number.

    Returns
    -------
    int
        The nearest integer; exact halves go to the even neighbour.

    Raises
    ------
    InvalidQuantity
        If ``value`` is NaN or infinite (a ``ValueError``).
    """
    if not math.isfinite(value):
        msg = f"cannot round a non-finite value to an integer: {value!r}"
        raise InvalidQuantity(msg)
    return int(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _amount_numerator(energy_wh: int, price: int) -> int:
    if energy_wh < 0:
        msg = f"energy_wh must be >= 0, got {energy_wh}"
        raise InvalidQuantity(msg)
    if price < 0:
        msg = f"price must be >= 0 for a payment, got {price}"
        raise InvalidQuantity(msg)
    return energy_wh * price


def buyer_payment(energy_wh: int, price: int) -> TokenUnits:
    """What a buyer pays for ``energy_wh`` at ``price``: ``ceil(wh * price / 1000)``.

    Parameters
    ----------
    energy_wh : int
        Energy [Wh], >= 0.
    price : int
        Price [token base units / kWh], >= 0.

    Returns
    -------
    TokenUnits
        Payment [token base units], rounded up so the community never funds a trade.

    Raises
    ------
    InvalidQuantity
        If ``energy_wh`` or ``price`` is negative (a ``ValueError``).
    """
    return TokenUnits(-(-_amount_numerator(energy_wh, price) // WH_PER_KWH))


def seller_revenue(energy_wh: int, price: int) -> TokenUnits:
    """What a seller receives for ``energy_wh`` at ``price``: ``floor(wh * price / 1000)``.

    Parameters
    ----------
    energy_wh : int
        Energy [Wh], >= 0.
    price : int
        Price [token base units / kWh], >= 0.

    Returns
    -------
    TokenUnits
        Revenue [token base units], rounded down.

    Raises
    ------
    InvalidQuantity
        If ``energy_wh`` or ``price`` is negative (a ``ValueError``).
    """
    return TokenUnits(_amount_numerator(energy_wh, price) // WH_PER_KWH)


def energy_to_power_w(energy_wh: int, interval_seconds: int) -> float:
    """Average power [W] that delivers ``energy_wh`` [Wh] over ``interval_seconds`` [s].

    Parameters
    ----------
    energy_wh : int
        Energy [Wh].
    interval_seconds : int
        Duration [s], > 0.

    Returns
    -------
    float
        Power [W]; a float on purpose: it feeds the optimiser and the AC check only.
    """
    return energy_wh * SECONDS_PER_HOUR / interval_seconds


def power_to_energy_wh(p_w: float, interval_seconds: int) -> Wh:
    """Energy [Wh] of a constant power ``p_w`` [W] held for ``interval_seconds`` [s].

    Parameters
    ----------
    p_w : float
        Power [W].
    interval_seconds : int
        Duration [s].

    Returns
    -------
    Wh
        Energy [Wh], rounded by :func:`round_half_even`.
    """
    return Wh(round_half_even(p_w * interval_seconds / SECONDS_PER_HOUR))


def format_tokens(units: int) -> str:
    """Format token base units as a decimal string with 6 places (``1_500_000`` -> ``1.500000``).

    Parameters
    ----------
    units : int
        Amount [token base units], signed.

    Returns
    -------
    str
        The amount in tokens, exact, with a ``-`` for negatives.
    """
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**TOKEN_DECIMALS)
    return f"{sign}{whole}.{frac:0{TOKEN_DECIMALS}d}"


def apportion(values: list[float], caps: list[int], total: int) -> list[int]:
    """Share an integer ``total`` among items by largest remainder (Hamilton's method).

    Each item gets the floor of its value (clamped to ``[0, cap]``), and the units still
    missing go one by one to the largest fractional parts, ties to the earlier item. The
    result sums to ``total`` exactly (if the caps allow it) and no item exceeds its cap. This
    is the apportionment companion of :func:`round_half_even`: it rounds many optimiser
    floats at once without creating or losing a unit.

    Parameters
    ----------
    values : list of float
        The exact shares (e.g. accepted energy [Wh] from the optimiser).
    caps : list of int
        Upper bound of each item.
    total : int
        The integer total to reach.

    Returns
    -------
    list of int
        One integer per item, within ``[0, cap]``.
    """
    clamped = [min(max(v, 0.0), float(c)) for v, c in zip(values, caps, strict=True)]
    floors = [min(math.floor(v), c) for v, c in zip(clamped, caps, strict=True)]
    missing = total - sum(floors)
    order = sorted(range(len(clamped)), key=lambda i: (-(clamped[i] - floors[i]), i))
    for i in order:
        if missing <= 0:
            break
        if floors[i] < caps[i]:
            floors[i] += 1
            missing -= 1
    return floors


def apportion_exact(numerators: Sequence[int], denominator: int, total: int) -> list[int]:
    """Share an integer ``total`` among exact rational quotas by largest remainder, in integers.

    Item ``i``'s quota is ``numerators[i] / denominator``. Each item gets the floor of its
    quota, and the ``total - sum(floors)`` units still missing go one each to the items with
    the largest remainders ``numerators[i] % denominator``, ties to the earlier item (so the
    caller's order is the tie-break and the result is deterministic). No float is involved.

    Used to split an order's amount over its trades (:mod:`market.matching`): the quotas are
    the trades' exact values ``wh_t * price / 1000`` and ``total`` is the order's rounded
    amount, so every trade receives its own exact value rounded down or up and the trades
    sum to the order to the unit.

    Parameters
    ----------
    numerators : sequence of int
        Quota numerators, each >= 0 (e.g. ``wh_t * price`` [Wh * token units / kWh]).
    denominator : int
        Common quota denominator, > 0 (e.g. 1000 [Wh / kWh]).
    total : int
        The integer total to reach (e.g. the order's amount [token base units]); it must lie
        between ``sum(floors)`` and ``sum(floors) + len(numerators)``, which holds for the
        floor or the ceiling of the sum of the quotas.

    Returns
    -------
    list of int
        One share per item, each the floor or the ceiling of its quota, summing to ``total``.

    Raises
    ------
    InvalidQuantity
        If ``denominator`` is not positive, a numerator is negative, or ``total`` cannot be
        reached by rounding each quota down or up (a ``ValueError``).
    """
    if denominator <= 0:
        msg = f"denominator must be > 0, got {denominator}"
        raise InvalidQuantity(msg)
    shares: list[int] = []
    remainders: list[int] = []
    for numerator in numerators:
        if numerator < 0:
            msg = f"quota numerators must be >= 0, got {numerator}"
            raise InvalidQuantity(msg)
        whole, rest = divmod(numerator, denominator)
        shares.append(whole)
        remainders.append(rest)
    missing = total - sum(shares)
    if not 0 <= missing <= sum(1 for r in remainders if r):
        msg = (
            f"cannot share {total} by rounding {len(shares)} quotas whose floors sum to "
            f"{sum(shares)}"
        )
        raise InvalidQuantity(msg)
    order = sorted(range(len(shares)), key=lambda i: (-remainders[i], i))
    for i in order[:missing]:
        shares[i] += 1
    return shares

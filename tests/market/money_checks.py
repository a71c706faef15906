"""The money rule of a clearing result, checked from its own integers (DESIGN.md section 3).

Not a test module (no ``test_`` prefix); the market tests import it by name (``tests/market``
is on ``sys.path``, see ``market_factories``). :func:`money_problems` returns the broken rules
in words instead of asserting, so a test can also show that a broken split is detected.

The rule, per side:

* a buy order pays exactly ``ceil(accepted_wh * price / 1000)``, a sell order receives exactly
  ``floor(accepted_wh * price / 1000)``; hence a buyer never pays more than
  ``ceil(accepted_wh * limit / 1000)`` and a seller never receives less than
  ``floor(accepted_wh * limit / 1000)``;
* a GRID or COMMUNITY leg (no order; one per account, side and price) is rounded the same way
  once on its whole energy;
* each order's or leg's amount is split over its trades by largest remainder: every trade gets
  its exact value ``wh * price / 1000`` rounded down or up, the rounded-up trades are those with
  the largest fractional parts (ties: the earlier trade), and the trades sum to the order.

Units: energies [Wh], prices [token base units / kWh], amounts [token base units].
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from market.domain import ClearingResult, OrderId, ParticipantId, Side, Trade
from market.units import buyer_payment, seller_revenue

LegKey = tuple[str, OrderId | ParticipantId, int]
"""(side, order id or system account, price): one leg of the matching."""


def legs_of(result: ClearingResult) -> dict[LegKey, list[tuple[int, int]]]:
    """Each leg's trades as (energy [Wh], amount [token base units]), in trade order.

    An order is one leg; GRID and COMMUNITY, which have no order, form one leg per side and
    price (the grid's import or export position, the community's loss position).
    """
    legs: dict[LegKey, list[tuple[int, int]]] = defaultdict(list)
    for t in result.trades:
        buyer = t.buyer_order if t.buyer_order is not None else t.buyer
        seller = t.seller_order if t.seller_order is not None else t.seller
        legs[("buy", buyer, t.buyer_price)].append((t.energy_wh, t.buyer_amount))
        legs[("sell", seller, t.seller_price)].append((t.energy_wh, t.seller_amount))
    return legs


def split_problems(key: LegKey, trades: list[tuple[int, int]]) -> list[str]:
    """What is wrong with one leg's amounts: its rounding and its largest-remainder split."""
    side, _, price = key
    problems: list[str] = []
    energy = sum(wh for wh, _ in trades)
    total = sum(amount for _, amount in trades)
    expected = (buyer_payment if side == "buy" else seller_revenue)(energy, price)
    if total != expected:
        problems.append(f"{key}: trades sum to {total}, the leg's formula is {expected}")
    up: list[tuple[int, int]] = []  # (remainder, position) of trades rounded up
    down: list[tuple[int, int]] = []  # the same for trades with a remainder rounded down
    for i, (wh, amount) in enumerate(trades):
        whole, rest = divmod(wh * price, 1000)
        if amount == whole + 1 and rest:
            up.append((rest, i))
        elif amount == whole:
            if rest:
                down.append((rest, i))
        else:
            problems.append(f"{key}: trade {i} ({wh} Wh) gets {amount}, not {whole} or up")
    if up and down:
        # every rounded-up trade ranks before every rounded-down one: larger remainder, or
        # the same remainder and earlier
        worst_up = max((-rest, i) for rest, i in up)
        best_down = min((-rest, i) for rest, i in down)
        if worst_up > best_down:
            problems.append(f"{key}: rounded up {worst_up} ranks after rounded down {best_down}")
    return problems


def money_problems(result: ClearingResult, limits: Mapping[OrderId, int]) -> list[str]:
    """Every broken money rule of ``result``, in words (empty when all hold).

    Parameters
    ----------
    result : ClearingResult
        Any result (ok or not).
    limits : mapping of OrderId to int
        Each order's limit price [token base units / kWh].

    Returns
    -------
    list of str
        One line per broken rule: order formula, limit bound, trades summing to each order
        (energy and amount), the per-leg split.
    """
    problems: list[str] = []
    energy: dict[OrderId, int] = defaultdict(int)
    paid: dict[OrderId, int] = defaultdict(int)
    for t in result.trades:
        if t.buyer_order is not None:
            energy[t.buyer_order] += t.energy_wh
            paid[t.buyer_order] += t.buyer_amount
        if t.seller_order is not None:
            energy[t.seller_order] += t.energy_wh
            paid[t.seller_order] += t.seller_amount
    for r in result.orders:
        limit = limits[r.order_id]
        if r.side is Side.BUY:
            formula = buyer_payment(r.accepted_wh, r.price)
            bound = buyer_payment(r.accepted_wh, limit)
            if r.amount > bound:
                problems.append(f"buyer {r.order_id} pays {r.amount} > limit's {bound}")
        else:
            formula = seller_revenue(r.accepted_wh, r.price)
            bound = seller_revenue(r.accepted_wh, limit)
            if r.amount < bound:
                problems.append(f"seller {r.order_id} receives {r.amount} < limit's {bound}")
        if r.amount != formula:
            problems.append(f"{r.side.value} {r.order_id}: amount {r.amount} != formula {formula}")
        if energy[r.order_id] != r.accepted_wh:
            problems.append(
                f"{r.order_id}: trades carry {energy[r.order_id]} Wh of {r.accepted_wh} accepted"
            )
        if paid[r.order_id] != r.amount:
            problems.append(f"{r.order_id}: trades carry {paid[r.order_id]} of {r.amount} units")
    for key, trades in legs_of(result).items():
        problems.extend(split_problems(key, trades))
    return problems


def per_trade_amounts(trade: Trade) -> tuple[int, int]:
    """The pre-issue-10 rule: each trade rounded on its own (buyer ceil, seller floor)."""
    return (
        buyer_payment(trade.energy_wh, trade.buyer_price),
        seller_revenue(trade.energy_wh, trade.seller_price),
    )

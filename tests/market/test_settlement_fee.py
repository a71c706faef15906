"""The community fee (rule 1a of ``market.settlement``, governed by the members, issue 16).

Each sell order pays ``floor(sum of its local trades' buyer amounts * bps / 10,000)``, at most
its revenue from them, to COMMUNITY; trades with GRID or COMMUNITY pay none. Literal cases
pin the arithmetic; a property holds the batch with a fee to the batch without one and to a
reference computed with exact fractions, one order at a time.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from fractions import Fraction
from math import floor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from market_factories import snapshots
from test_settlement import TARIFFS, TRADES, hand_result

from market.codec import batch_from_dict, batch_to_dict
from market.domain import COMMUNITY, GRID, ClearingResult, OrderId, ParticipantId
from market.errors import InvalidQuantity
from market.settlement import community_fees, settle

ALICE, BOB, CAROL = ParticipantId("alice"), ParticipantId("bob"), ParticipantId("carol")


def one_order_per_seller(result: ClearingResult) -> ClearingResult:
    """The same trades, each seller's sales as one sell order (fees are per order)."""
    trades = tuple(
        t if t.seller == GRID else dataclasses.replace(t, seller_order=OrderId(f"{t.seller}:sell"))
        for t in result.trades
    )
    return dataclasses.replace(result, trades=trades)


def test_a_sell_order_pays_the_fee_on_its_buyers_amounts_rounded_down_once() -> None:
    # alice sells 1,001 Wh to bob and 999 Wh to carol in one order, 333 Wh to the grid
    result = one_order_per_seller(
        hand_result(
            [
                (ALICE, BOB, 1_001, 100_000, 10_001),
                (ALICE, CAROL, 999, 100_000, 10_001),
                (ALICE, GRID, 333, 100_000, 0),
            ]
        )
    )
    local = [t for t in result.trades if t.buyer != GRID]
    gross = sum(t.buyer_amount for t in local)
    assert gross == 110_112 + 109_891  # ceil(1001 x 110.001) + ceil(999 x 110.001)
    fees = community_fees(result, 150)
    assert fees == {ALICE: floor(Fraction(gross * 150, 10_000))} == {ALICE: 3_300}
    # per order, not per trade: per trade it would be 1,651 + 1,648 = 3,299
    assert sum(floor(Fraction(t.buyer_amount * 150, 10_000)) for t in local) == 3_299

    plain = settle(result, *snapshots(), TARIFFS)
    charged = settle(result, *snapshots(), TARIFFS, community_fee_bps=150)
    before, after = dict(plain.amounts), dict(charged.amounts)
    assert after[ALICE] == before[ALICE] - 3_300
    assert after[COMMUNITY] == before[COMMUNITY] + 3_300
    assert (after[BOB], after[CAROL]) == (before[BOB], before[CAROL])
    (line,) = [ln for ln in charged.lines if ln.participant == ALICE]
    assert line.fee_amount == 3_300
    assert line.net_amount == after[ALICE]
    assert charged.batch_id != plain.batch_id
    # the stored form keeps the fee and rebuilds the same batch
    stored = batch_to_dict(charged)
    assert stored["community_fee_bps"] == 150
    assert batch_from_dict(stored, result.interval) == charged


def test_no_fee_leaves_the_batch_as_it_was() -> None:
    result = hand_result([(ALICE, BOB, 500, 90_000, 5_000)])
    plain = settle(result, *snapshots(), TARIFFS)
    zero = settle(result, *snapshots(), TARIFFS, community_fee_bps=0)
    assert zero == plain
    assert "community_fee_bps" not in batch_to_dict(zero)
    assert all("fee_amount" not in ln for ln in batch_to_dict(zero)["lines"])


def test_the_fee_never_exceeds_the_sellers_revenue() -> None:
    # 10,000 bps of the buyer's amount is more than the seller's revenue at a lower price
    result = hand_result([(ALICE, BOB, 1_000, 50_000, 50_000)])
    (trade,) = result.trades
    assert community_fees(result, 10_000) == {ALICE: trade.seller_amount}


def test_a_fee_outside_its_limits_is_refused() -> None:
    result = hand_result([(ALICE, BOB, 1_000, 50_000, 0)])
    for bps in (-1, 10_001):
        with pytest.raises(InvalidQuantity, match="community_fee_bps"):
            settle(result, *snapshots(), TARIFFS, community_fee_bps=bps)


@settings(max_examples=150)
@given(TRADES, st.integers(0, 10_000), st.booleans())
def test_the_fee_moves_exactly_each_orders_fee_from_seller_to_community(
    rows: list[tuple[ParticipantId, ParticipantId, int, int, int]], bps: int, merged: bool
) -> None:
    result = hand_result(rows)
    if merged:
        result = one_order_per_seller(result)
    plain = dict(settle(result, *snapshots(), TARIFFS).amounts)
    charged_batch = settle(result, *snapshots(), TARIFFS, community_fee_bps=bps)
    charged = dict(charged_batch.amounts)
    assert sum(charged.values()) == 0

    # reference: exact fractions, one sell order at a time, local trades only
    gross: dict[tuple[str, str], int] = defaultdict(int)
    revenue: dict[tuple[str, str], int] = defaultdict(int)
    for t in result.trades:
        if GRID in (t.seller, t.buyer):
            continue
        gross[(t.seller, str(t.seller_order))] += t.buyer_amount
        revenue[(t.seller, str(t.seller_order))] += t.seller_amount
    want: dict[str, int] = defaultdict(int)
    for key, amount in gross.items():
        want[key[0]] += min(floor(Fraction(amount * bps, 10_000)), revenue[key])

    for account in set(plain) | set(charged):
        moved = charged.get(account, 0) - plain.get(account, 0)
        if account == COMMUNITY:
            assert moved == sum(want.values())
        else:
            assert moved == -want.get(account, 0), account
    for line in charged_batch.lines:
        assert line.fee_amount == want.get(line.participant, 0)
        assert line.net_amount == charged.get(line.participant, 0)

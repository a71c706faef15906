"""Debts: no account is debited more than it can pay; the shortfall is carried, to the unit.

``market.settlement.carry_debts`` / ``apply_debts`` (rules 6-9 of the module docstring).
Literal cases first (numbers derived in the docstrings), then hypothesis properties on random
batches, and a many-interval simulation against an escrow ledger that refuses any overdraft,
the way the settlement contract does.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from market_factories import INTERVAL

from market.canonical import canonical_json
from market.codec import batch_from_dict, batch_to_dict
from market.domain import (
    COMMUNITY,
    GRID,
    DebtChange,
    ParticipantId,
    SettlementBatch,
    batch_id_of,
)
from market.errors import BatchMismatch, SettlementError
from market.settlement import apply_debts, carry_debts
from market.units import TokenUnits

A, B, C = ParticipantId("alice"), ParticipantId("bob"), ParticipantId("carol")
ROOT = bytes(32)


def batch(amounts: dict[ParticipantId, int]) -> SettlementBatch:
    return SettlementBatch(
        interval=INTERVAL,
        lines=(),
        amounts=tuple((p, TokenUnits(a)) for p, a in sorted(amounts.items()) if a),
        trades_root=ROOT,
        readings_root=ROOT,
        import_price=300_000,
        export_price=80_000,
    )


def change(account: str, before: int, after: int) -> DebtChange:
    return DebtChange(
        account=ParticipantId(account), before=TokenUnits(before), after=TokenUnits(after)
    )


# -- literal cases ----------------------------------------------------------------------------


def test_a_debit_beyond_escrow_is_capped_and_community_fronts_the_shortfall() -> None:
    """alice owes 1000 (imbalance bought from GRID) but has 300: she pays 300, owes 700.

    GRID still receives its 990, COMMUNITY's 10 remainder becomes 10 - 700 = -690: the
    community pays GRID for alice and is owed her 700.
    """
    amounts = {A: -1000, GRID: 990, COMMUNITY: 10}
    new, changes = carry_debts(amounts, {A: 300, GRID: 0, COMMUNITY: 10_000}, {})
    assert new == {A: -300, COMMUNITY: -690, GRID: 990}
    assert changes == (change("alice", 0, 700),)


def test_a_later_batch_collects_the_debt_first() -> None:
    """alice (owes 700) sells for 250 and has 1000 available again: 250 - 700 = -450 paid.

    COMMUNITY receives what she pays back: its own 5 plus 700.
    """
    amounts = {A: 250, B: -255, COMMUNITY: 5}
    new, changes = carry_debts(amounts, {A: 1000, B: 1000}, {A: 700})
    assert new == {A: -450, B: -255, COMMUNITY: 705}
    assert changes == (change("alice", 700, 0),)


def test_a_debt_is_collected_in_part_when_funds_are_still_short() -> None:
    """alice owes 700, has 200 and is not in the batch: 200 collected, 500 carried."""
    new, changes = carry_debts({B: -5, COMMUNITY: 5}, {A: 200, B: 100}, {A: 700})
    assert new == {A: -200, B: -5, COMMUNITY: 205}
    assert changes == (change("alice", 700, 500),)


def test_when_community_cannot_front_the_creditors_wait_pro_rata() -> None:
    """alice owes 1000 and has 0; COMMUNITY (10 remainder) has 0 available.

    COMMUNITY fronts what its own 10 credit covers; the other 990 is withheld from the
    credits (GRID 600, bob 390), pro rata: all of them. Nobody is debited, nobody paid;
    alice owes 1000, COMMUNITY owes GRID 600 and bob 390.
    """
    amounts = {A: -1000, GRID: 600, B: 390, COMMUNITY: 10}
    new, changes = carry_debts(amounts, {A: 0, COMMUNITY: 0}, {})
    assert new == {}
    assert changes == (change("GRID", 0, -600), change("alice", 0, 1000), change("bob", 0, -390))


def test_withheld_credits_are_shared_by_largest_remainder() -> None:
    """alice owes 100 and has 0; COMMUNITY pays 2 and has just those 2 available.

    COMMUNITY cannot front alice's 100 at all: it is withheld from the credits (GRID 70, bob
    31, carol 1; 102 in all). Quotas 100*70/102 = 68.63, 100*31/102 = 30.39, 100*1/102 = 0.98:
    floors 68 + 30 + 0 = 98, the two missing units go to carol (0.98) and GRID (0.63).
    """
    amounts = {A: -100, GRID: 70, B: 31, C: 1, COMMUNITY: -2}
    new, changes = carry_debts(amounts, {A: 0, COMMUNITY: 2}, {})
    assert new == {GRID: 1, B: 1, COMMUNITY: -2}
    assert changes == (
        change("GRID", 0, -69),
        change("alice", 0, 100),
        change("bob", 0, -30),
        change("carol", 0, -1),
    )
    assert sum(new.values()) == 0


def test_withheld_credits_are_paid_when_community_has_funds_again() -> None:
    new, changes = carry_debts({}, {COMMUNITY: 1000}, {GRID: -69, B: -30})
    assert new == {GRID: 69, B: 30, COMMUNITY: -99}
    assert changes == (change("GRID", -69, 0), change("bob", -30, 0))


def test_a_batch_nobody_is_short_in_is_left_as_it_is() -> None:
    plain = batch({A: -1000, GRID: 990, COMMUNITY: 10})
    assert apply_debts(plain, {A: 1000, GRID: 0, COMMUNITY: 0}, {}) is plain
    assert apply_debts(plain, {}, {}) is plain  # nothing known: nothing capped


def test_the_debts_are_part_of_the_batch_id_and_its_stored_form() -> None:
    plain = batch({A: -1000, GRID: 990, COMMUNITY: 10})
    capped = apply_debts(plain, {A: 300, COMMUNITY: 10_000}, {})
    assert capped.debts == (change("alice", 0, 700),)
    assert capped.batch_id != plain.batch_id
    data = json.loads(canonical_json(batch_to_dict(capped)))
    assert data["debts"] == [["alice", 0, 700]]
    assert batch_from_dict(data, INTERVAL) == capped
    data["debts"] = [["alice", 0, 699]]  # a tampered debt no longer matches the id
    with pytest.raises(BatchMismatch):
        batch_from_dict(data, INTERVAL)


def test_a_batch_without_debts_keeps_the_id_it_had_before_debts_existed() -> None:
    plain = batch({A: -1000, GRID: 990, COMMUNITY: 10})
    assert "debts" not in batch_to_dict(plain)
    old_id = batch_id_of(
        INTERVAL.interval_id,
        INTERVAL.length_s,
        [[p, a] for p, a in plain.amounts],
        ROOT.hex(),
        ROOT.hex(),
        [],
    )
    assert plain.batch_id == old_id


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(SettlementError, match="sum to 1"):
        carry_debts({A: 1}, {}, {})
    with pytest.raises(SettlementError, match=">= 0"):
        carry_debts({}, {A: -1}, {})
    with pytest.raises(SettlementError, match="COMMUNITY carries no debt"):
        carry_debts({}, {}, {COMMUNITY: 5})
    capped = apply_debts(batch({A: -10, COMMUNITY: 10}), {A: 0}, {})
    with pytest.raises(SettlementError, match="already carries debts"):
        apply_debts(capped, {}, {})


# -- properties -------------------------------------------------------------------------------

ACCOUNTS = [GRID, A, B, C, ParticipantId("dave")]


@st.composite
def zero_sum_amounts(draw: st.DrawFn) -> dict[ParticipantId, int]:
    """Random signed amounts over some accounts; COMMUNITY takes what makes them sum to 0."""
    chosen = draw(st.lists(st.sampled_from(ACCOUNTS), unique=True, max_size=len(ACCOUNTS)))
    amounts = {p: draw(st.integers(-(10**9), 10**9)) for p in chosen}
    amounts[COMMUNITY] = -sum(amounts.values())
    return amounts


@st.composite
def situations(
    draw: st.DrawFn,
) -> tuple[dict[ParticipantId, int], dict[ParticipantId, int], dict[ParticipantId, int]]:
    amounts = draw(zero_sum_amounts())
    everyone = [*ACCOUNTS, COMMUNITY]
    capped = draw(st.lists(st.sampled_from(everyone), unique=True))
    small = st.integers(0, 10**6)
    available = {p: draw(st.one_of(small, st.integers(0, 2 * 10**9))) for p in capped}
    owing = draw(st.lists(st.sampled_from(ACCOUNTS), unique=True))
    outstanding = {p: draw(st.integers(-(10**8), 10**8)) for p in owing}
    return amounts, available, outstanding


@settings(max_examples=1000, deadline=None)
@given(situations())
def test_carrying_debts_is_exact(
    case: tuple[dict[ParticipantId, int], dict[ParticipantId, int], dict[ParticipantId, int]],
) -> None:
    amounts, available, outstanding = case
    new, changes = carry_debts(amounts, available, outstanding)

    assert sum(new.values()) == 0  # zero-sum to the unit
    assert all(a != 0 for a in new.values())
    for p, cap in available.items():  # no debit exceeds what the account can pay
        assert new.get(p, 0) >= -cap
    by_account = {c.account: c for c in changes}
    assert COMMUNITY not in by_account
    for p in (set(amounts) | set(outstanding)) - {COMMUNITY}:
        before = outstanding.get(p, 0)
        c = by_account.get(p, change(p, before, 0))
        assert c.before == before
        # debt + paid == owed: what the account pays or gets moves exactly with its balance
        assert new.get(p, 0) - amounts.get(p, 0) == c.after - c.before
        if c.after > 0:  # a debt only where everything available was taken
            assert new.get(p, 0) == -available[p]
        if c.after < 0:  # a credit withheld only where COMMUNITY was capped, never a debit
            assert COMMUNITY in available
            assert new.get(COMMUNITY, 0) == -available[COMMUNITY]
            assert new.get(p, 0) >= 0
    community_change = new.get(COMMUNITY, 0) - amounts.get(COMMUNITY, 0)
    assert community_change == sum(c.before - c.after for c in changes)


@settings(max_examples=300, deadline=None)
@given(zero_sum_amounts(), st.lists(st.sampled_from(ACCOUNTS), unique=True))
def test_with_funds_everywhere_every_balance_is_settled_in_full(
    amounts: dict[ParticipantId, int], owing: list[ParticipantId]
) -> None:
    outstanding = {p: 1_000 + i for i, p in enumerate(owing)}
    rich = dict.fromkeys([*ACCOUNTS, COMMUNITY], 10**12)
    new, changes = carry_debts(amounts, rich, outstanding)
    assert all(c.after == 0 for c in changes)
    assert {c.account for c in changes} == set(owing)
    for p in ACCOUNTS:
        assert new.get(p, 0) == amounts.get(p, 0) - outstanding.get(p, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(zero_sum_amounts(), min_size=1, max_size=12),
    st.dictionaries(st.sampled_from([*ACCOUNTS, COMMUNITY]), st.integers(0, 2 * 10**9)),
)
def test_over_many_intervals_no_escrow_overdraws_and_everything_owed_is_accounted(
    batches: list[dict[ParticipantId, int]], initial: dict[ParticipantId, int]
) -> None:
    """An escrow ledger that refuses overdrafts (as the contract does) never refuses a batch.

    For every account, escrow change == sum of what it owed or earned + its balance now;
    once everyone has deposited enough, one empty batch clears every balance.
    """
    escrow = {p: initial.get(p, 0) for p in [*ACCOUNTS, COMMUNITY]}
    start = dict(escrow)
    outstanding: dict[ParticipantId, int] = {}
    owed: dict[ParticipantId, int] = dict.fromkeys(escrow, 0)
    for amounts in batches:
        new, changes = carry_debts(amounts, escrow, outstanding)
        for p, a in new.items():
            escrow[p] += a
            assert escrow[p] >= 0, f"{p} overdrawn"
        for p, a in amounts.items():
            owed[p] += a
        for c in changes:
            outstanding[c.account] = c.after
    for p in ACCOUNTS:
        # a debt (+) is what it did not pay yet; a withheld credit (-) what it did not get yet
        assert escrow[p] - start[p] == owed[p] + outstanding.get(p, 0)
    assert sum(escrow.values()) == sum(start.values())

    for p in escrow:  # everyone deposits enough: the next batch settles every balance
        escrow[p] += 10**12
    new, changes = carry_debts({}, escrow, outstanding)
    assert all(c.after == 0 for c in changes)
    for p, a in new.items():
        escrow[p] += a
        assert escrow[p] >= 0
    for p in ACCOUNTS:
        assert escrow[p] - start[p] - 10**12 == owed[p]

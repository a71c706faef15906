"""The packed settlement entry: literal vectors, round trips, ordering and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.chain.encoding import (
    MAX_INDEX,
    MAX_MAGNITUDE,
    MAX_WH,
    SIGN_BIT,
    Entry,
    build_entries,
    pack_entry,
    unpack_entry,
)
from adapters.chain.errors import InvalidSettlement


def test_literal_words() -> None:
    # index 1, credit 5: the index in bits 160.., the amount in the low bits
    assert pack_entry(Entry(index=1, amount=5)) == (1 << 160) | 5
    # index 2, debit 5: bit 79 set, magnitude unchanged (sign and magnitude, not 2's complement)
    assert pack_entry(Entry(index=2, amount=-5)) == (2 << 160) | (1 << 79) | 5
    # index 3, no money, 1500 Wh
    assert pack_entry(Entry(index=3, amount=0, reward_wh=1500)) == (3 << 160) | (1500 << 80)
    word = pack_entry(Entry(index=7, amount=-1, reward_wh=2))
    assert word.to_bytes(32, "big").hex() == (
        "0000000000000000000000070000000000000000000280000000000000000001"
    )


entries = st.builds(
    Entry,
    index=st.integers(1, MAX_INDEX),
    amount=st.integers(-MAX_MAGNITUDE, MAX_MAGNITUDE),
    reward_wh=st.integers(0, MAX_WH),
).filter(lambda e: e.amount != 0 or e.reward_wh != 0)


@given(entries)
def test_pack_then_unpack_is_identity(entry: Entry) -> None:
    word = pack_entry(entry)
    assert 0 <= word < 2**256
    assert unpack_entry(word) == entry
    assert bool(word & SIGN_BIT) == (entry.amount < 0)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (Entry(index=0, amount=1), "index"),
        (Entry(index=MAX_INDEX + 1, amount=1), "index"),
        (Entry(index=1, amount=MAX_MAGNITUDE + 1), "exceeds"),
        (Entry(index=1, amount=-(MAX_MAGNITUDE + 1)), "exceeds"),
        (Entry(index=1, amount=1, reward_wh=-1), "reward energy"),
        (Entry(index=1, amount=1, reward_wh=MAX_WH + 1), "reward energy"),
        (Entry(index=1, amount=0), "no amount and no energy"),
    ],
)
def test_out_of_range_fields_are_refused(entry: Entry, message: str) -> None:
    with pytest.raises(InvalidSettlement, match=message):
        pack_entry(entry)


def test_build_entries_sorts_by_index_and_merges_rewards() -> None:
    indices = {"a": 9, "b": 2, "c": 5}
    words = build_entries(indices, [("a", -3), ("b", 3)], [("c", 100), ("a", 7)])
    assert [unpack_entry(w) for w in words] == [
        Entry(index=2, amount=3),
        Entry(index=5, amount=0, reward_wh=100),
        Entry(index=9, amount=-3, reward_wh=7),
    ]
    assert build_entries(indices, [("a", 0)], [("b", 0)]) == []


def test_build_entries_refuses_duplicates_and_unknown_accounts() -> None:
    with pytest.raises(InvalidSettlement, match="more than one amount"):
        build_entries({"a": 1}, [("a", 1), ("a", -1)])
    with pytest.raises(InvalidSettlement, match="more than one reward"):
        build_entries({"a": 1}, [], [("a", 1), ("a", 2)])
    with pytest.raises(InvalidSettlement, match="not registered"):
        build_entries({"a": 1}, [("b", 1)])
    with pytest.raises(InvalidSettlement, match="share index"):
        build_entries({"a": 1, "b": 1}, [("a", 1), ("b", -1)])

"""On-chain Merkle proofs agree with the controller's trees (``market.merkle``).

The contract hashes the raw leaf bytes itself (sha256(0x00 || canonical JSON)), combines with
sha256(0x01 || min || max), and compares with the root recorded at settlement. The roots and
proofs here come from ``market.merkle``, the code the controller records roots with.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from chain_helpers import make_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.chain.errors import InvalidArgument
from market.domain import BusId, Interval, OrderId, ParticipantId, Trade, trade_to_dict
from market.merkle import EMPTY_ROOT, leaf_hash, merkle_proof, merkle_root
from market.units import PricePerKwh, TokenUnits, Wh


def leaf_bytes(item) -> bytes:
    """The canonical JSON ``market.merkle.leaf_hash`` hashes (after its 0x00 prefix)."""
    blob = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str).encode()
    assert hashlib.sha256(b"\x00" + blob).digest() == leaf_hash(item)
    return blob


def trade(i: int) -> dict:
    interval = Interval(datetime(2026, 6, 21, 9, tzinfo=UTC))
    return trade_to_dict(
        Trade(
            interval=interval,
            seller=ParticipantId(f"seller-{i % 3}"),
            buyer=ParticipantId(f"buyer-{i}"),
            seller_bus=BusId("bus-1"),
            buyer_bus=BusId(f"bus-{i % 4}"),
            seller_order=OrderId(f"o-s-{i}"),
            buyer_order=None,
            energy_wh=Wh(100 + i),
            seller_price=PricePerKwh(200_000),
            buyer_price=PricePerKwh(210_000),
            buyer_amount=TokenUnits((100 + i) * 210),
            seller_amount=TokenUnits((100 + i) * 200),
        )
    )


def settle_roots(deployed, trades_root: bytes, readings_root: bytes) -> int:
    interval = deployed.next_interval()
    batch = make_batch(interval, trades_root=trades_root, readings_root=readings_root)
    deployed.client.submit_settlement(*batch)
    return interval


items = st.lists(
    st.dictionaries(
        st.sampled_from(["a", "b", "energy_wh", "buyer", "id"]),
        st.integers(-(2**40), 2**40) | st.text(max_size=12) | st.none(),
        min_size=1,
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda d: json.dumps(d, sort_keys=True),
)


@settings(max_examples=40, deadline=None)
@given(tree=items, data=st.data())
def test_contract_recomputes_the_roots_of_market_merkle(deployed, tree, data) -> None:
    root = merkle_root(tree)
    item = data.draw(st.sampled_from(tree))
    proof = merkle_proof(tree, item)
    fn = deployed.client.settlement.functions.merkle_root_of(leaf_bytes(item), proof)
    assert bytes(fn.call()) == root


def test_every_trade_of_a_settled_interval_verifies(deployed) -> None:
    trades = [trade(i) for i in range(13)]  # odd count: a node is carried up unchanged
    readings = [{"device_id": f"m{i}", "import_wh_total": 1000 * i} for i in range(5)]
    interval = settle_roots(deployed, merkle_root(trades), merkle_root(readings))
    client = deployed.client
    for t in trades:
        assert client.verify_trade(interval, leaf_bytes(t), merkle_proof(trades, t))
        assert not client.verify_reading(interval, leaf_bytes(t), merkle_proof(trades, t))
    for r in readings:
        assert client.verify_reading(interval, leaf_bytes(r), merkle_proof(readings, r))


def test_tampered_leaves_and_proofs_fail(deployed) -> None:
    trades = [trade(i) for i in range(8)]
    interval = settle_roots(deployed, merkle_root(trades), EMPTY_ROOT)
    client = deployed.client
    good = trades[3]
    proof = merkle_proof(trades, good)
    assert client.verify_trade(interval, leaf_bytes(good), proof)

    forged = dict(good, energy_wh=good["energy_wh"] + 1)
    assert not client.verify_trade(interval, leaf_bytes(forged), proof)
    assert not client.verify_trade(interval, leaf_bytes(good), proof[:-1])
    assert not client.verify_trade(interval, leaf_bytes(good), [*proof, bytes(32)])
    flipped = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    assert not client.verify_trade(interval, leaf_bytes(good), [flipped, *proof[1:]])
    # not settled: nothing verifies
    assert not client.verify_trade(deployed.next_interval(), leaf_bytes(good), proof)


def test_an_inner_node_cannot_pass_as_a_leaf(deployed) -> None:
    """The 64-byte pitfall: the two children of a node, sent as a 'leaf', must not verify."""
    trades = [trade(i) for i in range(4)]
    interval = settle_roots(deployed, merkle_root(trades), EMPTY_ROOT)
    level = sorted(leaf_hash(t) for t in trades)
    lo, hi = level[0], level[1]
    inner_preimage = lo + hi  # 64 bytes: sha256(0x01 || lo || hi) is the inner node
    # The inner node's proof is its sibling, the other pair's node.
    other = hashlib.sha256(b"\x01" + min(level[2], level[3]) + max(level[2], level[3])).digest()
    assert not deployed.client.verify_trade(interval, inner_preimage, [other])
    # ...while the same structure with the node hashing does reach the root:
    inner = hashlib.sha256(b"\x01" + inner_preimage).digest()
    top = hashlib.sha256(b"\x01" + min(inner, other) + max(inner, other)).digest()
    assert top == merkle_root(trades)


def test_a_single_leaf_tree_has_an_empty_proof(deployed) -> None:
    only = trade(42)
    interval = settle_roots(deployed, merkle_root([only]), EMPTY_ROOT)
    assert merkle_proof([only], only) == []
    assert deployed.client.verify_trade(interval, leaf_bytes(only), [])


def test_proof_elements_must_be_32_bytes(deployed) -> None:
    with pytest.raises(InvalidArgument, match="32 bytes"):
        deployed.client.verify_trade(1, b"{}", [b"short"])

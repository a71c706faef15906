"""Merkle roots over trades and readings, against a reference built from the module docstring."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.errors import NotALeaf, NotCanonical
from market.merkle import EMPTY_ROOT, leaf_hash, merkle_proof, merkle_root, verify_proof


def reference_root(items: list[dict[str, Any]]) -> bytes:
    """The construction exactly as documented, written independently of the module.

    leaf = SHA-256(0x00 || sorted-key compact JSON); node = SHA-256(0x01 || min || max);
    leaves sorted; an odd last node is carried up; no leaves -> 32 zero bytes.
    """

    def sha(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    level = sorted(
        sha(b"\x00" + json.dumps(i, sort_keys=True, separators=(",", ":")).encode()) for i in items
    )
    if not level:
        return bytes(32)
    while len(level) > 1:
        pairs = [level[k : k + 2] for k in range(0, len(level), 2)]
        level = [sha(b"\x01" + min(p) + max(p)) if len(p) == 2 else p[0] for p in pairs]
    return level[0]


ITEMS = st.lists(
    st.fixed_dictionaries(
        {
            "trade": st.integers(0, 10**6),
            "buyer": st.sampled_from(["alice", "bob", "GRID"]),
            "energy_wh": st.integers(1, 5000),
        }
    ),
    min_size=1,
    max_size=20,
    unique_by=lambda d: (d["trade"], d["buyer"], d["energy_wh"]),
)


def test_empty_root_is_32_zero_bytes() -> None:
    assert merkle_root([]) == EMPTY_ROOT == bytes(32)


def test_single_leaf_is_its_own_root() -> None:
    item = {"b": 2, "a": 1}
    expected = hashlib.sha256(b'\x00{"a":1,"b":2}').digest()
    assert leaf_hash(item) == expected
    assert merkle_root([item]) == expected
    assert merkle_proof([item], item) == []
    assert verify_proof(expected, item, [])


def test_two_leaves_literal() -> None:
    a, b = {"n": 1}, {"n": 2}
    la = hashlib.sha256(b'\x00{"n":1}').digest()
    lb = hashlib.sha256(b'\x00{"n":2}').digest()
    expected = hashlib.sha256(b"\x01" + min(la, lb) + max(la, lb)).digest()
    assert merkle_root([a, b]) == merkle_root([b, a]) == expected


@given(ITEMS, st.randoms(use_true_random=False))
def test_root_matches_reference_and_ignores_order(
    items: list[dict[str, Any]], rnd: random.Random
) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    root = merkle_root(items)
    assert len(root) == 32
    assert root == reference_root(items)
    assert merkle_root(shuffled) == root
    assert merkle_root(iter(items)) == root  # any iterable, consumed once


@given(ITEMS)
def test_every_item_has_a_verifying_proof(items: list[dict[str, Any]]) -> None:
    root = merkle_root(items)
    for item in items:
        proof = merkle_proof(items, item)
        assert verify_proof(root, item, proof)
        assert len(proof) <= max(1, len(items) - 1).bit_length()


@given(ITEMS, st.data())
def test_tampering_fails_verification(items: list[dict[str, Any]], data: st.DataObject) -> None:
    root = merkle_root(items)
    item = data.draw(st.sampled_from(items))
    proof = merkle_proof(items, item)
    tampered = {**item, "energy_wh": item["energy_wh"] + 1}
    assert not verify_proof(root, tampered, proof)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        assert not verify_proof(root, item, bad)
    assert not verify_proof(bytes(32), item, proof)


def test_root_changes_with_any_item() -> None:
    items = [{"n": i} for i in range(5)]
    root = merkle_root(items)
    assert merkle_root([*items[:4], {"n": 99}]) != root
    assert merkle_root(items[:4]) != root
    assert merkle_root([*items, {"n": 5}]) != root


def test_proof_for_a_foreign_item_raises() -> None:
    with pytest.raises(NotALeaf, match="not a leaf"):
        merkle_proof([{"n": 1}, {"n": 2}], {"n": 3})
    with pytest.raises(KeyError):  # NotALeaf is a KeyError too
        merkle_proof([], {"n": 3})


def test_a_leaf_without_canonical_json_is_refused() -> None:
    with pytest.raises(NotCanonical, match="soc_percent"):
        leaf_hash({"device_id": "m1", "soc_percent": float("nan")})

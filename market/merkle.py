"""Merkle roots over trades and readings, recorded on-chain for auditors.

Construction (documented so a utility can recompute it with any SHA-256):

* leaf  = SHA-256(0x00 || canonical JSON of the item) (:mod:`market.canonical`). A trade's item
  is :func:`market.domain.trade_to_dict`, a device's readings item
  :func:`market.codec.reading_leaf`;
* node  = SHA-256(0x01 || min(left, right) || max(left, right)) (sorted pairs, so a proof needs
  no left/right flags);
* an odd node at the end of a level is carried up unchanged;
* leaves are sorted before building, so the root does not depend on input order;
* the root of no leaves is 32 zero bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from market.canonical import canonical_json
from market.errors import NotALeaf

EMPTY_ROOT = bytes(32)
"""The root of a tree without leaves."""


def leaf_hash(item: Mapping[str, Any]) -> bytes:
    """Hash of one item: SHA-256(0x00 || canonical JSON of ``item``).

    Parameters
    ----------
    item : mapping
        A trade or a device's readings as a JSON object.

    Returns
    -------
    bytes
        The 32-byte leaf hash.

    Raises
    ------
    NotCanonical
        If ``item`` has no canonical JSON (a NaN, say).
    """
    return hashlib.sha256(b"\x00" + canonical_json(item)).digest()


def _node(a: bytes, b: bytes) -> bytes:
    lo, hi = (a, b) if a <= b else (b, a)
    return hashlib.sha256(b"\x01" + lo + hi).digest()


def merkle_root(items: Iterable[Mapping[str, Any]]) -> bytes:
    """Root of the items' leaves, independent of their order.

    Parameters
    ----------
    items : iterable of mapping
        The tree's items (consumed once).

    Returns
    -------
    bytes
        The 32-byte root; :data:`EMPTY_ROOT` for no items.
    """
    level = sorted(leaf_hash(i) for i in items)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_proof(items: Iterable[Mapping[str, Any]], item: Mapping[str, Any]) -> list[bytes]:
    """Sibling hashes from ``item``'s leaf to the root.

    Parameters
    ----------
    items : iterable of mapping
        The tree's items.
    item : mapping
        The item to prove; one of ``items``.

    Returns
    -------
    list of bytes
        The 32-byte siblings, leaf level first (no left/right flags: pairs are sorted).

    Raises
    ------
    NotALeaf
        If ``item`` is not among ``items`` (a ``KeyError``).
    """
    level = sorted(leaf_hash(i) for i in items)
    target = leaf_hash(item)
    if target not in level:
        msg = "item is not a leaf of this tree"
        raise NotALeaf(msg)
    index = level.index(target)
    proof: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        index //= 2
    return proof


def verify_proof(root: bytes, item: Mapping[str, Any], proof: list[bytes]) -> bool:
    """Whether ``proof`` links ``item`` to ``root``.

    Parameters
    ----------
    root : bytes
        The 32-byte root (e.g. as recorded on-chain).
    item : mapping
        The item whose membership is checked.
    proof : list of bytes
        Its siblings, as :func:`merkle_proof` gives them.

    Returns
    -------
    bool
        True if hashing ``item`` up through ``proof`` gives ``root``.
    """
    node = leaf_hash(item)
    for sibling in proof:
        node = _node(node, sibling)
    return node == root

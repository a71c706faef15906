"""Canonical JSON: golden vectors (literal value -> literal bytes -> literal SHA-256).

The vectors pin the encoding specified in ``market.canonical``'s docstring, so an auditor's
implementation in another language can be tested against the same table. The recorded ids
(a batch id and a trade id of the demo) pin that the one definition kept today's hashes.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.canonical import canonical_json, content_hash
from market.domain import ParticipantId, batch_id_of
from market.errors import MarketError, NotCanonical

GOLDEN: list[tuple[object, bytes, str]] = [
    (
        {"b": 1, "a": [True, False, None]},
        b'{"a":[true,false,null],"b":1}',
        "087e44ed138472a81a4a0f8ae84e8f358d0d957d27f51123952aa88c007b1f9f",
    ),
    (  # keys by code point: "" < "B" < "a" < "b" < "é"; non-ASCII escaped
        {"b": 0, "B": 1, "a": 2, "\u00e9": 3, "": 4},
        b'{"":4,"B":1,"a":2,"b":0,"\\u00e9":3}',
        "e169fb4ce1eb926b4fb68735a77f38ab8a4cdbd74d9c8cfede11f0fc21d7ffcf",
    ),
    (  # integers of any size, never an exponent
        [0, -5, 10**30],
        b"[0,-5,1000000000000000000000000000000]",
        "417d91b8a49dd6def871e214134de2856153ae47924c591d5db10b53e73ec50e",
    ),
    (  # floats: shortest round-trip digits, Python's repr layout
        [0.1, 1.0, -0.0, 1e-05, 1e16, 0.9693370067670268, 5e-324, 123456789.125],
        b"[0.1,1.0,-0.0,1e-05,1e+16,0.9693370067670268,5e-324,123456789.125]",
        "ff473ad70bf68151de3d83d416e86b2113c3b6365ef6583e017bd0fb3774c2ab",
    ),
    (  # escapes: short forms, \u00XX for controls and DEL, surrogate pairs; "/" as is
        'Z\u00fcrich "q" \\ / \n\t\x00\x7f \u2028 \U0001f600',
        b'"Z\\u00fcrich \\"q\\" \\\\ / \\n\\t\\u0000\\u007f \\u2028 \\ud83d\\ude00"',
        "dfef8801c8130b478056f6ab69fe02b1bfe9f02f40b74147edc738fba80ddd2e",
    ),
    ({}, b"{}", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
    ([], b"[]", "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"),
]


@pytest.mark.parametrize(("value", "encoded", "digest"), GOLDEN)
def test_golden_vectors(value: object, encoded: bytes, digest: str) -> None:
    assert canonical_json(value) == encoded
    assert hashlib.sha256(encoded).hexdigest() == digest
    assert content_hash(value) == digest


def test_tuples_enums_and_newtypes_encode_as_their_plain_values() -> None:
    class Colour(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    value = {"who": ParticipantId("alice"), "pair": (Colour.RED, Level.HIGH)}
    assert canonical_json(value) == b'{"pair":["red",3],"who":"alice"}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_rejected(bad: float) -> None:
    with pytest.raises(NotCanonical, match="not a finite number"):
        canonical_json(bad)
    with pytest.raises(NotCanonical, match=r"\$\.check\.min_vm_pu"):
        canonical_json({"check": {"min_vm_pu": bad}})
    with pytest.raises(NotCanonical, match=r"\$\[1\]\[0\]"):
        content_hash([0.5, [bad]])


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        ({1: "a"}, "key 1 is not a string"),
        ({None: "a"}, "key None is not a string"),
        ({"x": {1, 2}}, "set has no JSON encoding"),
        ([b"\x00"], "bytes has no JSON encoding"),
        (datetime(2026, 1, 1, tzinfo=UTC), "datetime has no JSON encoding"),
        (Decimal("1.5"), "Decimal has no JSON encoding"),
    ],
)
def test_values_json_does_not_have_are_rejected(bad: object, what: str) -> None:
    with pytest.raises(NotCanonical, match=what):
        canonical_json(bad)


def test_rejection_is_a_market_error_and_a_value_error() -> None:
    with pytest.raises(MarketError):
        canonical_json(math.nan)
    with pytest.raises(ValueError, match="no canonical JSON"):
        canonical_json(math.nan)


def test_a_recorded_batch_id_recomputes() -> None:
    """The on-chain idempotency key of the demo's first interval (2026-06-21T07:30Z)."""
    amounts = [
        ["COMMUNITY", -137],
        ["GRID", 1567820],
        ["alice", -143041],
        ["bob", -302971],
        ["carol", -90486],
        ["dave", -336000],
        ["erin", 184132],
        ["frank", -894982],
        ["grace", -84900],
        ["heidi", 227737],
        ["ivan", -217800],
        ["judy", 90628],
    ]
    batch_id = batch_id_of(
        1782027000,
        900,
        amounts,
        "ddd90f8a58e921a9ae42576767d90ec29189e60bf6853a236d53d7f47ffcce27",
        "ff953314ca73ea446ab82d638e7fb76390c249d7283732082b2bd975a5678b4f",
        [["erin", 585], ["heidi", 1250], ["judy", 400]],
    )
    assert batch_id == "4d0780ab8390cc15332742ee4f6b4a45cd58626dc5e0550e608ee5192ae58d2d"


def test_a_recorded_trade_id_recomputes() -> None:
    trade = {
        "buyer": "heidi",
        "buyer_amount": 154670,
        "buyer_bus": "Bus C13",
        "buyer_order": "heidi:1782027000:buy_demand:1",
        "buyer_price": 311207,
        "energy_wh": 497,
        "interval": 1782027000,
        "seller": "heidi",
        "seller_amount": 154669,
        "seller_bus": "Bus C13",
        "seller_order": "heidi:1782027000:battery:0:heidi-battery:discharge",
        "seller_price": 311207,
    }
    assert content_hash(trade) == "1e23c0e5c1d24a9c2ef934e2259663b52f0785c172a2019de402b1302a5b5f7a"


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON)
def test_same_bytes_as_the_encoders_it_replaced(value: object) -> None:
    """Every hash recorded so far used ``json.dumps(sort_keys, separators, default=str)``."""
    before = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    assert canonical_json(value) == before
    assert json.loads(canonical_json(value)) == value

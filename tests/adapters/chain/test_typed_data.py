"""Signed orders (EIP-712, issue 12): adapters.chain.typed_data's types, signing and checks.

Properties (hypothesis): a valid signature always verifies, whatever JSON form its uints and
addresses take; tampering with any field of any kind, another domain (chain id, contract,
name, version), a signer who is not the participant and a malformed value are each refused
with their code, naming the field. One test injects a fault (a domain check that compares
nothing) and shows the domain property catches it. The known-answer tests against ethers
are in ``test_typed_data_ethers.py``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from adapters.chain import typed_data as td
from adapters.chain.typed_data import MessageKind, OrderSide, StandingKind
from adapters.errors import AdapterError, TypedDataRefused
from controller.config import OrderKind

# fixed, well-known development keys (anvil's and hardhat's first accounts): never hold value
KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
)
ACCOUNTS = tuple(Account.from_key(k) for k in KEYS)
CHAIN_ID = 31337
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_CONTRACT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
WHERE = {"chain_id": CHAIN_ID, "verifying_contract": CONTRACT}
N = td.SECP256K1_N

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def field_types(kind: MessageKind) -> dict[str, str]:
    return {f["name"]: f["type"] for f in td.TYPES[kind]}


def bits(type_: str) -> int:
    return int(type_.removeprefix("uint"))


def refusal(payload: Any, **where: Any) -> TypedDataRefused | None:
    """The refusal of ``payload`` (None if it verifies); anything else is a test failure."""
    try:
        td.verify(payload, **(where or WHERE))
    except TypedDataRefused as exc:
        return exc
    return None


# ---------------------------------------------------------------- strategies


def value_of(kind: MessageKind, name: str, type_: str, participant: str) -> st.SearchStrategy[Any]:
    if name == "participant":
        return st.just(participant)
    if (kind, name) in td.ENUMS:
        return st.sampled_from([int(c) for c in td.ENUMS[(kind, name)]])
    if type_ == "bytes32":
        return st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
    return st.integers(0, 2 ** bits(type_) - 1)


@st.composite
def messages(draw: st.DrawFn, kind: MessageKind | None = None) -> tuple[MessageKind, dict, int]:
    """``(kind, message, index of the signing key)``: a message its participant signs."""
    kind = kind or draw(st.sampled_from(list(MessageKind)))
    who = draw(st.integers(0, len(KEYS) - 1))
    participant = ACCOUNTS[who].address
    message = {
        name: draw(value_of(kind, name, type_, participant))
        for name, type_ in field_types(kind).items()
    }
    return kind, message, who


@st.composite
def json_forms(draw: st.DrawFn, kind: MessageKind, message: dict) -> dict:
    """The same message in another JSON form a client may send (same values, same digest)."""
    out: dict[str, Any] = {}
    for name, type_ in field_types(kind).items():
        value = message[name]
        if type_.startswith("uint"):
            forms = [str(value), hex(value)]
            if value <= td.JS_MAX_SAFE_INTEGER:
                forms.append(value)
            out[name] = draw(st.sampled_from(forms))
        elif type_ == "address":
            out[name] = draw(st.sampled_from([value, value.lower(), "0x" + value[2:].upper()]))
        elif type_ == "bytes32":
            out[name] = draw(st.sampled_from([value, "0x" + value[2:].upper()]))
        else:  # pragma: no cover - our types have no other
            out[name] = value
    return out


def signed(kind: MessageKind, message: dict, who: int, **where: Any) -> dict:
    return td.signed_payload(kind, message, KEYS[who], **(where or WHERE))


# ---------------------------------------------------------------- the types


def test_types_are_the_ones_the_issue_writes_out() -> None:
    assert td.type_string(MessageKind.ORDER) == (
        "Order(address participant,uint64 intervalStart,uint8 side,uint64 energyWh,"
        "uint64 limitPrice,uint256 nonce,uint64 deadline)"
    )
    assert td.type_string(MessageKind.STANDING_ORDER) == (
        "StandingOrder(address participant,uint8 kind,uint64 energyWh,uint64 price,"
        "uint64 dischargePrice,uint16 minSocPermille,uint16 maxSocPermille,uint64 validFrom,"
        "uint64 validUntil,uint256 nonce,uint64 deadline)"
    )
    assert td.type_string(MessageKind.CANCEL) == (
        "Cancel(address participant,bytes32 orderDigest,uint256 nonce,uint64 deadline)"
    )
    assert td.domain(CHAIN_ID, CONTRACT.lower()) == {
        "name": "PeerGrid",
        "version": "1",
        "chainId": CHAIN_ID,
        "verifyingContract": CONTRACT,
    }


def test_enum_codes_cover_every_standing_order_kind_and_side() -> None:
    assert [k.name.lower() for k in StandingKind] == [k.value for k in OrderKind]
    assert [int(k) for k in StandingKind] == list(range(len(OrderKind)))
    assert {s.name.lower(): int(s) for s in OrderSide} == {"buy": 0, "sell": 1}


def test_refusal_is_an_adapter_error_with_code_and_reason() -> None:
    err = TypedDataRefused("malformed", "message.side: unknown code 7")
    assert isinstance(err, AdapterError)
    assert (err.code, err.reason) == ("malformed", "message.side: unknown code 7")
    assert str(err) == "malformed: message.side: unknown code 7"


# ---------------------------------------------------------------- valid signatures


@SETTINGS
@given(data=st.data(), case=messages())
def test_a_valid_signature_always_verifies(data: st.DataObject, case: tuple) -> None:
    kind, message, who = case
    payload = signed(kind, message, who)
    payload["typedData"]["message"] = data.draw(json_forms(kind, message))
    if data.draw(st.booleans()):  # ethers sends chainId as a hex quantity
        payload["typedData"]["domain"]["chainId"] = hex(CHAIN_ID)
    if data.draw(st.booleans()):  # ethers and MetaMask lower-case the contract
        payload["typedData"]["domain"]["verifyingContract"] = CONTRACT.lower()
    ok = td.verify(payload, **WHERE)
    assert ok.kind is kind
    assert ok.signer == ACCOUNTS[who].address == ok.message["participant"]
    expected = {
        k: (v.lower() if isinstance(v, str) and k != "participant" else v)
        for k, v in message.items()
    }
    assert ok.message == expected
    assert ok.digest == td.digest(kind, message, **WHERE)
    # the cached-domain fast path hashes exactly what eth-account's full v4 encoding does
    full = td._signable_full(kind, ok.message, td.domain(CHAIN_ID, CONTRACT))
    assert ok.digest == "0x" + td._digest_of(full).hex()
    # what Verified keeps is canonical and verifies again with the same digest
    again = td.verify({"typedData": ok.typed_data, "signature": ok.signature}, **WHERE)
    assert again.digest == ok.digest


def test_v_as_0_or_1_is_accepted_and_kept_as_27_or_28() -> None:
    kind, message, who = MessageKind.CANCEL, cancel_message(), 0
    payload = signed(kind, message, who)
    sig = bytes.fromhex(payload["signature"][2:])
    payload["signature"] = "0x" + (sig[:64] + bytes([sig[64] - 27])).hex()
    ok = td.verify(payload, **WHERE)
    assert ok.signature == "0x" + sig.hex()


def test_sign_takes_a_local_account_or_a_raw_key() -> None:
    message = order_message()
    from_key = td.sign(MessageKind.ORDER, message, KEYS[0], **WHERE)
    assert td.sign(MessageKind.ORDER, message, ACCOUNTS[0], **WHERE) == from_key
    assert td.sign("Order", message, bytes.fromhex(KEYS[0][2:]), **WHERE) == from_key
    assert td.sign("Order", message, KEYS[0][2:] + "\n", **WHERE) == from_key
    with pytest.raises(TypedDataRefused) as info:
        td.sign("Order", message, "0x1234", **WHERE)
    assert info.value.code == "malformed"
    assert "1234" not in str(info.value)  # a key's text is never echoed


# ---------------------------------------------------------------- refusals (properties)


@SETTINGS
@given(data=st.data(), case=messages())
def test_tampering_with_any_field_is_refused(data: st.DataObject, case: tuple) -> None:
    kind, message, who = case
    payload = signed(kind, message, who)
    types = field_types(kind)
    name = data.draw(st.sampled_from(sorted(types)))
    new = data.draw(
        value_of(kind, name, types[name], ACCOUNTS[(who + 1) % len(KEYS)].address).filter(
            lambda v: v != message[name]
        )
    )
    tampered = dict(message, **{name: new})
    payload["typedData"]["message"] = td.typed_data(kind, tampered, **WHERE)["message"]
    err = refusal(payload)
    assert err is not None, f"tampered {name} verified"
    # ECDSA recovery turns any change into another signer (or, rarely, into no key at all)
    assert err.code in {"signer_not_participant", "bad_signature"}


DOMAIN_CHANGES = st.sampled_from(
    [
        ("chainId", CHAIN_ID + 1),
        ("chainId", 1),
        ("verifyingContract", OTHER_CONTRACT),
        ("name", "PeerGrid2"),
        ("name", "peergrid"),
        ("version", "2"),
    ]
)


def check_another_domain(case: tuple, change: tuple[str, Any], where_side: bool) -> None:
    """Honestly signed for another domain, or checked against another site: wrong_domain."""
    kind, message, who = case
    field, value = change
    if where_side and field in {"chainId", "verifyingContract"}:
        # signed for this site, verified by a site on another chain or contract
        payload = signed(kind, message, who)
        other = {"chainId": CHAIN_ID, "verifyingContract": CONTRACT, field: value}
        err = refusal(
            payload, chain_id=other["chainId"], verifying_contract=other["verifyingContract"]
        )
    else:
        payload = signed(kind, message, who)
        payload["typedData"]["domain"][field] = value
        # re-sign over the changed domain, as a wallet on another chain or app would
        dom = payload["typedData"]["domain"]
        if field in {"chainId", "verifyingContract"}:
            payload = signed(
                kind,
                message,
                who,
                chain_id=dom["chainId"],
                verifying_contract=dom["verifyingContract"],
            )
        else:
            signable = encode_typed_data(full_message=payload["typedData"])
            payload["signature"] = (
                "0x" + bytes(Account.sign_message(signable, KEYS[who]).signature).hex()
            )
        err = refusal(payload)
    assert err is not None, f"another {field} verified"
    assert err.code == "wrong_domain"
    assert f"domain.{field}" in err.reason


DOMAIN_CASES = {"case": messages(), "change": DOMAIN_CHANGES, "where_side": st.booleans()}
test_another_domain_is_refused_naming_the_field = SETTINGS(
    given(**DOMAIN_CASES)(check_another_domain)
)


@SETTINGS
@given(case=messages(), signer=st.integers(1, len(KEYS) - 1))
def test_a_signer_who_is_not_the_participant_is_refused(case: tuple, signer: int) -> None:
    kind, message, who = case
    other = (who + signer) % len(KEYS)
    err = refusal(signed(kind, message, other))
    assert err is not None
    assert err.code == "signer_not_participant"
    assert ACCOUNTS[other].address in err.reason
    assert message["participant"] in err.reason


def bad_values(kind: MessageKind, name: str, type_: str) -> list[Any]:
    if type_.startswith("uint"):
        n = bits(type_)
        out: list[Any] = [str(2**n), hex(2**n), -1, "-1", 1.5, "1.5", True, None, "", " 1", "0x"]
        out += ["1e3", "12a", [1], {"v": 1}, td.JS_MAX_SAFE_INTEGER + 1, "0X1"]
        if (kind, name) in td.ENUMS:
            out += [len(td.ENUMS[(kind, name)]), 255]
        return out
    if type_ == "address":
        checksummed = ACCOUNTS[0].address  # 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266
        at = next(i for i, c in enumerate(checksummed) if i > 1 and c.isalpha())
        bad_case = checksummed[:at] + checksummed[at].swapcase() + checksummed[at + 1 :]
        return [
            bad_case,
            checksummed[:-1],
            checksummed + "0",
            "f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            1,
            None,
            "0x" + "g" * 40,
        ]
    if type_ == "bytes32":
        return ["0x" + "00" * 31, "0x" + "00" * 33, "00" * 32, "0x" + "zz" * 32, 0, None]
    raise AssertionError(type_)  # pragma: no cover


def all_bad_fields() -> list[tuple[MessageKind, str, Any]]:
    return [
        (kind, name, bad)
        for kind in MessageKind
        for name, type_ in field_types(kind).items()
        for bad in bad_values(kind, name, type_)
    ]


@SETTINGS
@given(case=messages(), data=st.data())
def test_a_malformed_value_is_refused_naming_the_field(case: tuple, data: st.DataObject) -> None:
    kind, message, who = case
    payload = signed(kind, message, who)
    name = data.draw(st.sampled_from(sorted(field_types(kind))))
    bad = data.draw(st.sampled_from(bad_values(kind, name, field_types(kind)[name])))
    payload["typedData"]["message"][name] = bad
    err = refusal(payload)
    assert err is not None, f"{name}={bad!r} verified"
    assert err.code == "malformed"
    assert err.reason.startswith(f"message.{name}:")


@pytest.mark.parametrize(("kind", "name", "bad"), all_bad_fields())
def test_every_malformed_value_is_refused(kind: MessageKind, name: str, bad: Any) -> None:
    """The same, exhaustively over the list (the property samples it)."""
    payload = signed(kind, sample_message(kind), 0)
    payload["typedData"]["message"][name] = bad
    err = refusal(payload)
    assert err is not None
    assert (err.code, err.reason.split(":")[0]) == ("malformed", f"message.{name}")
    type_ = field_types(kind)[name]
    fits = type_.startswith("uint") and type(bad) is int and 0 <= bad < 2 ** bits(type_)
    if fits and (kind, name) not in td.ENUMS:
        return  # only JSON limits an int to 2**53 - 1: Python callers pass exact ints
    with pytest.raises(TypedDataRefused, match=f"message.{name}"):  # and sign refuses it too
        td.sign(kind, dict(sample_message(kind), **{name: bad}), KEYS[0], **WHERE)


# ---------------------------------------------------------------- structure, one by one


def order_message(**changes: Any) -> dict:
    return {
        "participant": ACCOUNTS[0].address,
        "intervalStart": 1_780_000_200,
        "side": int(OrderSide.SELL),
        "energyWh": 1_500,
        "limitPrice": 120_000,
        "nonce": 7,
        "deadline": 1_780_000_100,
    } | changes


def standing_message() -> dict:
    return {
        "participant": ACCOUNTS[0].address,
        "kind": int(StandingKind.BATTERY),
        "energyWh": 0,
        "price": 90_000,
        "dischargePrice": 150_000,
        "minSocPermille": 100,
        "maxSocPermille": 950,
        "validFrom": 1_780_000_000,
        "validUntil": 1_790_000_000,
        "nonce": 2**255 + 1,
        "deadline": 1_780_000_100,
    }


def cancel_message() -> dict:
    return {
        "participant": ACCOUNTS[0].address,
        "orderDigest": td.digest(MessageKind.ORDER, order_message(), **WHERE),
        "nonce": 8,
        "deadline": 1_780_000_100,
    }


def sample_message(kind: MessageKind) -> dict:
    return {
        MessageKind.ORDER: order_message,
        MessageKind.STANDING_ORDER: standing_message,
        MessageKind.CANCEL: cancel_message,
    }[kind]()


def mutate(
    payload: dict, path: tuple[str, ...], value: Any = None, *, delete: bool = False
) -> dict:
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


ORDER_PAYLOAD = td.signed_payload(MessageKind.ORDER, order_message(), KEYS[0], **WHERE)
DOMAIN_FIELDS = list(td.DOMAIN_TYPE)
ORDER_FIELDS = td.TYPES[MessageKind.ORDER]
STRUCTURE_CASES = {
    "payload not an object": ([], "payload"),
    "payload extra key": (dict(ORDER_PAYLOAD, extra=1), "payload: unexpected extra"),
    "payload no signature": (
        mutate(ORDER_PAYLOAD, ("signature",), delete=True),
        "payload: missing signature",
    ),
    "typedData not an object": (mutate(ORDER_PAYLOAD, ("typedData",), "x"), "typedData"),
    "typedData extra key": (
        mutate(ORDER_PAYLOAD, ("typedData", "extra"), 1),
        "typedData: unexpected",
    ),
    "no primaryType": (
        mutate(ORDER_PAYLOAD, ("typedData", "primaryType"), delete=True),
        "typedData: missing",
    ),
    "unknown primaryType": (
        mutate(ORDER_PAYLOAD, ("typedData", "primaryType"), "Mail"),
        "primaryType",
    ),
    "primaryType not a string": (
        mutate(ORDER_PAYLOAD, ("typedData", "primaryType"), 1),
        "primaryType",
    ),
    "another kind's primaryType": (
        mutate(ORDER_PAYLOAD, ("typedData", "primaryType"), "Cancel"),
        "types:",
    ),
    "no EIP712Domain": (
        mutate(ORDER_PAYLOAD, ("typedData", "types", "EIP712Domain"), delete=True),
        "types: missing EIP712Domain",
    ),
    "extra type": (
        mutate(ORDER_PAYLOAD, ("typedData", "types", "Cancel"), td.TYPES[MessageKind.CANCEL]),
        "types: unexpected Cancel",
    ),
    "EIP712Domain reordered": (
        mutate(ORDER_PAYLOAD, ("typedData", "types", "EIP712Domain"), DOMAIN_FIELDS[::-1]),
        "types.EIP712Domain",
    ),
    "EIP712Domain with salt": (
        mutate(
            ORDER_PAYLOAD,
            ("typedData", "types", "EIP712Domain"),
            [*DOMAIN_FIELDS, {"name": "salt", "type": "bytes32"}],
        ),
        "types.EIP712Domain",
    ),
    "Order fields reordered": (
        mutate(ORDER_PAYLOAD, ("typedData", "types", "Order"), ORDER_FIELDS[::-1]),
        "types.Order",
    ),
    "Order field retyped": (
        mutate(
            ORDER_PAYLOAD,
            ("typedData", "types", "Order"),
            [dict(f, type="uint256") if f["name"] == "energyWh" else f for f in ORDER_FIELDS],
        ),
        "types.Order",
    ),
    "Order field extra key": (
        mutate(
            ORDER_PAYLOAD,
            ("typedData", "types", "Order"),
            [dict(f, note="x") for f in ORDER_FIELDS],
        ),
        "types.Order",
    ),
    "Order field missing": (
        mutate(ORDER_PAYLOAD, ("typedData", "types", "Order"), ORDER_FIELDS[:-1]),
        "types.Order",
    ),
    "message field missing": (
        mutate(ORDER_PAYLOAD, ("typedData", "message", "deadline"), delete=True),
        "message: missing deadline",
    ),
    "message field extra": (
        mutate(ORDER_PAYLOAD, ("typedData", "message", "bus"), "b1"),
        "message: unexpected bus",
    ),
    "message not an object": (mutate(ORDER_PAYLOAD, ("typedData", "message"), [1]), "message"),
    "domain missing a field": (
        mutate(ORDER_PAYLOAD, ("typedData", "domain", "version"), delete=True),
        "domain: missing version",
    ),
    "domain with salt": (
        mutate(ORDER_PAYLOAD, ("typedData", "domain", "salt"), "0x" + "00" * 32),
        "domain: unexpected salt",
    ),
    "domain chainId a float": (
        mutate(ORDER_PAYLOAD, ("typedData", "domain", "chainId"), 31337.0),
        "domain.chainId",
    ),
    "domain contract bad checksum": (
        mutate(
            ORDER_PAYLOAD,
            ("typedData", "domain", "verifyingContract"),
            "0x5fbDB2315678afecb367f032d93F642f64180aa3",
        ),
        "domain.verifyingContract",
    ),
    "domain name not a string": (
        mutate(ORDER_PAYLOAD, ("typedData", "domain", "name"), 1),
        "domain.name",
    ),
}


@pytest.mark.parametrize("case", sorted(STRUCTURE_CASES))
def test_structure_that_is_not_ours_is_malformed(case: str) -> None:
    payload, where = STRUCTURE_CASES[case]
    err = refusal(payload)
    assert err is not None
    assert err.code == "malformed"
    assert err.reason.startswith(where), err.reason


# ---------------------------------------------------------------- signatures


def with_signature(sig: bytes | str) -> dict:
    text = sig if isinstance(sig, str) else "0x" + sig.hex()
    return dict(ORDER_PAYLOAD, signature=text)


def test_high_s_is_refused_although_eth_account_recovers_it() -> None:
    sig = bytes.fromhex(ORDER_PAYLOAD["signature"][2:])
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    assert s <= N // 2  # eth-account signs low-s
    high = r + (N - s).to_bytes(32, "big") + bytes([55 - v])  # the other valid signature
    signable = encode_typed_data(full_message=ORDER_PAYLOAD["typedData"])
    assert Account.recover_message(signable, signature=high) == ACCOUNTS[0].address
    err = refusal(with_signature(high))
    assert err is not None
    assert (err.code, err.reason) == (
        "bad_signature",
        "signature: s must be in the lower half (EIP-2)",
    )


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda s: s[:64], "65 bytes"),
        (lambda s: s + b"\x00", "65 bytes"),
        (lambda s: s[:64] + bytes([29]), "v must be"),
        (lambda s: s[:64] + bytes([2]), "v must be"),
        (lambda s: bytes(32) + s[32:], "r is out of range"),
        (lambda s: N.to_bytes(32, "big") + s[32:], "r is out of range"),
        (lambda s: s[:32] + bytes(32) + s[64:], "s must be"),
        (lambda s: (5).to_bytes(32, "big") + s[32:], "recovers no key"),  # x=5 is not on the curve
        (lambda s: "0X" + s.hex(), "65 bytes"),  # the prefix is 0x
        (lambda s: s.hex(), "65 bytes"),  # no 0x
        (lambda s: 12345, "65 bytes"),
    ],
)
def test_a_bad_signature_is_refused(mangle: Any, reason: str) -> None:
    sig = bytes.fromhex(ORDER_PAYLOAD["signature"][2:])
    mangled = mangle(sig)
    payload = dict(
        ORDER_PAYLOAD, signature=mangled if not isinstance(mangled, bytes) else "0x" + mangled.hex()
    )
    err = refusal(payload)
    assert err is not None
    assert err.code == "bad_signature"
    assert err.reason.startswith("signature:")
    assert reason in err.reason


def test_a_cancel_names_the_order_it_cancels_by_digest() -> None:
    order = td.verify(ORDER_PAYLOAD, **WHERE)
    cancel = td.verify(td.signed_payload("Cancel", cancel_message(), KEYS[0], **WHERE), **WHERE)
    assert cancel.message["orderDigest"] == order.digest
    assert len(bytes.fromhex(order.digest[2:])) == 32


def test_typed_data_emits_decimal_strings_and_checksummed_addresses() -> None:
    out = td.typed_data(
        "StandingOrder", dict(standing_message(), participant=ACCOUNTS[0].address.lower()), **WHERE
    )
    assert out["primaryType"] == "StandingOrder"
    assert out["message"]["participant"] == ACCOUNTS[0].address
    assert out["message"]["nonce"] == str(2**255 + 1)
    assert out["domain"]["chainId"] == CHAIN_ID
    assert set(out["types"]) == {"EIP712Domain", "StandingOrder"}


# ---------------------------------------------------------------- the harness can fail


def test_the_domain_property_catches_a_domain_check_that_compares_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Injected fault: accept any domain that parses. The property must then fail."""

    def lax(raw: Any, chain_id: int, verifying_contract: str) -> dict:
        return td.domain(int(str(raw["chainId"]), 0), raw["verifyingContract"])

    monkeypatch.setattr(td, "_check_domain", lax)
    # the same property, without shrinking and without saving the (expected) failure
    faulty = settings(
        max_examples=60,
        deadline=None,
        phases=[Phase.generate],
        database=None,
        report_multiple_bugs=False,
    )(given(**DOMAIN_CASES)(check_another_domain))
    with pytest.raises(AssertionError):
        faulty()

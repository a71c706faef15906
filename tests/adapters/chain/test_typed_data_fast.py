"""verify's direct EIP-712 encoder and eth-keys recovery against eth-account (issue 12).

:func:`adapters.chain.typed_data.verify` hashes our fixed, all-static types by hand (type hash
and one 32-byte word per field) and recovers with eth-keys, for speed (benchmarks/api.py).
eth-account stays the reference: hypothesis draws messages of every kind on random domains
and checks that the direct digest equals eth-account's ``encode_typed_data`` of the full
``eth_signTypedData_v4`` JSON, and that the recovered signer is the one eth-account recovers,
for signatures by random keys. One test injects a fault into the encoder (a uint256 cut to
64 bits) and shows the digest property catches it.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from adapters.chain import typed_data as td
from adapters.chain.typed_data import MessageKind

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

addresses = st.binary(min_size=20, max_size=20).map(lambda b: td._checksummed("0x" + b.hex()))
keys = st.integers(1, td.SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big"))


@st.composite
def messages(draw: st.DrawFn, participant: str | None = None) -> tuple[MessageKind, dict]:
    """A checked message of any kind, every value drawn over its whole type's range."""
    kind = draw(st.sampled_from(list(MessageKind)))
    message: dict[str, int | str] = {}
    for f in td.TYPES[kind]:
        name, type_ = f["name"], f["type"]
        if type_ == "address":
            message[name] = participant or draw(addresses)
        elif type_ == "bytes32":
            message[name] = "0x" + draw(st.binary(min_size=32, max_size=32)).hex()
        elif (kind, name) in td.ENUMS:
            message[name] = draw(st.sampled_from([int(c) for c in td.ENUMS[(kind, name)]]))
        else:
            top = 2 ** int(type_.removeprefix("uint")) - 1
            message[name] = draw(st.one_of(st.sampled_from([0, 1, top]), st.integers(0, top)))
    return kind, message


domains = st.builds(td.domain, st.one_of(st.just(31337), st.integers(0, 2**256 - 1)), addresses)
# what verify takes as JSON: typed_data() emits chainId as a number, and a JSON number above
# 2**53 - 1 is refused (a wallet would not read it exactly)
wallet_domains = st.builds(
    td.domain, st.one_of(st.just(31337), st.integers(0, td.JS_MAX_SAFE_INTEGER)), addresses
)


def reference_digest(kind: MessageKind, message: dict, dom: dict) -> bytes:
    """eth-account's digest of the full v4 JSON (domain hashed too, nothing cached)."""
    full = td._payload(kind, message, dom)
    return bytes(_hash_eip191_message(encode_typed_data(full_message=full)))


def check_digest(case: tuple[MessageKind, dict], dom: dict) -> None:
    kind, message = case
    assert td._fast_digest(kind, message, dom) == reference_digest(kind, message, dom)


@SETTINGS
@given(case=messages(), dom=domains)
def test_the_direct_digest_is_eth_accounts(case: tuple[MessageKind, dict], dom: dict) -> None:
    check_digest(case, dom)


@SETTINGS
@given(key=keys, case=st.data(), dom=wallet_domains)
def test_verify_recovers_the_signer_eth_account_recovers(
    key: bytes, case: st.DataObject, dom: dict
) -> None:
    account = Account.from_key(key)
    kind, message = case.draw(messages(participant=account.address))
    where = {"chain_id": dom["chainId"], "verifying_contract": dom["verifyingContract"]}
    payload = td.signed_payload(kind, message, account, **where)
    ok = td.verify(payload, **where)
    full = encode_typed_data(full_message=payload["typedData"])
    assert ok.signer == Account.recover_message(full, signature=payload["signature"])
    assert ok.signer == account.address
    assert ok.digest == "0x" + bytes(_hash_eip191_message(full)).hex()
    # a signature by another key recovers (eth-account agrees) someone else: refused
    other = Account.from_key(
        ((int.from_bytes(key, "big") + 1) % td.SECP256K1_N or 1).to_bytes(32, "big")
    )
    forged = dict(payload, signature=td.sign(kind, message, other, **where))
    with pytest.raises(td.TypedDataRefused) as info:
        td.verify(forged, **where)
    assert info.value.code == "signer_not_participant"
    assert Account.recover_message(full, signature=forged["signature"]) in info.value.reason


def test_recovery_agrees_with_eth_accounts_recover_hash_on_raw_digests() -> None:
    """``_recover`` and ``Account._recover_hash`` on the same digests and signatures."""
    for n in range(1, 40):
        account = Account.from_key(n.to_bytes(32, "big"))
        msg_hash = td._keccak256(n.to_bytes(8, "big"))
        signature = account.unsafe_sign_hash(msg_hash).signature
        if int.from_bytes(signature[32:64], "big") > td.SECP256K1_N // 2:
            continue  # pragma: no cover - eth-account signs low-s
        signer, normal = td._recover(msg_hash, "signature", "0x" + signature.hex())
        assert normal == "0x" + bytes(signature).hex()
        expected = Account._recover_hash(msg_hash, signature=signature)
        assert td._checksummed("0x" + signer.hex()) == expected == account.address


# ---------------------------------------------------------------- the harness can fail


def test_the_digest_property_catches_a_uint256_cut_to_64_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Injected fault: uint256 words keep only their low 64 bits. The property must fail."""

    def cut(value: int | str) -> bytes:
        return (int(value) & (2**64 - 1)).to_bytes(32, "big")

    broken = {
        kind: tuple(
            (f["name"], cut if f["type"] == "uint256" else td._WORD[f["type"]])
            for f in td.TYPES[kind]
        )
        for kind in MessageKind
    }
    monkeypatch.setattr(td, "_ENCODERS", broken)
    faulty = settings(
        max_examples=150,
        deadline=None,
        phases=[Phase.generate],
        database=None,
        report_multiple_bugs=False,
    )(given(case=messages(), dom=domains)(check_digest))
    with pytest.raises(AssertionError):
        faulty()


def test_a_fault_in_the_encoder_makes_verify_refuse_a_good_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sign-then-verify tests compare the encoders too: a wrong word order is refused."""
    key = (7).to_bytes(32, "big")
    account = Account.from_key(key)
    where: dict[str, Any] = {
        "chain_id": 31337,
        "verifying_contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    }
    message = {
        "participant": account.address,
        "intervalStart": 1_780_000_000,
        "side": 0,
        "energyWh": 1500,
        "limitPrice": 120_000,
        "nonce": 7,
        "deadline": 1_780_000_600,
    }
    payload = td.signed_payload(MessageKind.ORDER, message, account, **where)
    assert td.verify(payload, **where).signer == account.address
    swapped = dict(td._ENCODERS)
    swapped[MessageKind.ORDER] = tuple(reversed(td._ENCODERS[MessageKind.ORDER]))
    monkeypatch.setattr(td, "_ENCODERS", swapped)
    with pytest.raises(td.TypedDataRefused) as info:
        td.verify(payload, **where)
    assert info.value.code == "signer_not_participant"

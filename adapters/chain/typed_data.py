"""Signed orders: PeerGrid's EIP-712 typed data, signed by a wallet and verified here.

Prosumers place orders, standing orders and cancellations as EIP-712 typed data signed by
their registered address (MetaMask's ``eth_signTypedData_v4``, ethers' ``signTypedData``,
or :func:`sign` here). :func:`sign` and :func:`digest` hash with eth-account
(:func:`eth_account.messages.encode_typed_data`); :func:`verify` hashes our fixed, all-static
types with a direct encoder (type hash and one 32-byte word per field, tested equal to
eth-account's encoding) and recovers the signer with eth-keys (the secp256k1 recovery
eth-account uses), about 2.5x faster than eth-account's general path. This module adds the
strict validation in front of them, so that what is hashed is exactly what a wallet shows
and hashes.

Domain: ``EIP712Domain(string name, string version, uint256 chainId, address
verifyingContract)`` with name ``"PeerGrid"``, version ``"1"``, the site's chain id and
its Settlement contract. The three message types::

    Order(address participant, uint64 intervalStart, uint8 side, uint64 energyWh,
          uint64 limitPrice, uint256 nonce, uint64 deadline)
    StandingOrder(address participant, uint8 kind, uint64 energyWh, uint64 price,
                  uint64 dischargePrice, uint16 minSocPermille, uint16 maxSocPermille,
                  uint64 validFrom, uint64 validUntil, uint256 nonce, uint64 deadline)
    Cancel(address participant, bytes32 orderDigest, uint256 nonce, uint64 deadline)

Units and codes: ``intervalStart``, ``validFrom``, ``validUntil`` and ``deadline`` are unix
seconds (UTC); ``energyWh`` is in Wh; ``limitPrice``, ``price`` and ``dischargePrice`` in
token base units per kWh; ``minSocPermille``/``maxSocPermille`` in 1/1000 of the battery's
capacity. ``side`` is :class:`OrderSide` (0 buy, 1 sell); ``kind`` is
:class:`StandingKind` (0 sell_surplus, 1 buy_demand, 2 buy, 3 sell, 4 battery: the
standing-order kinds of the site file). ``orderDigest`` is the EIP-712 digest of the order
or standing order to cancel. ``nonce`` is any value the participant has not used (nonces
are unordered).

JSON form (the ``typedData`` a wallet signs): every ``uint`` (``chainId`` too) is accepted as
a JSON integer (at most 2**53 - 1, JavaScript's exact range), a decimal string or a ``0x``
hex string (ethers sends ``chainId`` so), as every wallet reads them; :func:`typed_data`
emits a message's uints as decimal strings (as ethers does) and ``chainId`` as an integer.
Addresses are accepted all lower case, all upper case or in EIP-55 form and emitted in
EIP-55 form; ``bytes32`` as ``0x`` and 64 hex digits, emitted lower case. ``types`` must
hold exactly ``EIP712Domain`` and the primary type, each with the fields above in that order
(a wallet hashes the domain in the order its type lists).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from Crypto.Hash import keccak as cryptodome_keccak
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_keys.main import KeyAPI
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from adapters.errors import RefusalCode, TypedDataRefused

DOMAIN_NAME: Final = "PeerGrid"
"""The EIP-712 domain's ``name``."""

DOMAIN_VERSION: Final = "1"
"""The EIP-712 domain's ``version``."""

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""Order of the secp256k1 group; a signature's ``s`` must be at most half of it (EIP-2)."""

JS_MAX_SAFE_INTEGER: Final = 2**53 - 1
"""Largest integer a JavaScript wallet reads exactly from a JSON number."""

MALFORMED: Final[RefusalCode] = "malformed"
WRONG_DOMAIN: Final[RefusalCode] = "wrong_domain"
BAD_SIGNATURE: Final[RefusalCode] = "bad_signature"
SIGNER_NOT_PARTICIPANT: Final[RefusalCode] = "signer_not_participant"


class MessageKind(enum.StrEnum):
    """The three signed messages: its value is the EIP-712 ``primaryType``."""

    ORDER = "Order"
    STANDING_ORDER = "StandingOrder"
    CANCEL = "Cancel"


class OrderSide(enum.IntEnum):
    """``Order.side``: 0 buy, 1 sell."""

    BUY = 0
    SELL = 1


class StandingKind(enum.IntEnum):
    """``StandingOrder.kind``: the standing-order kinds of the site file, by code.

    The lower-case name is the site file's ``kind`` (``controller.config.OrderKind``).
    """

    SELL_SURPLUS = 0
    BUY_DEMAND = 1
    BUY = 2
    SELL = 3
    BATTERY = 4


DOMAIN_TYPE: Final[tuple[dict[str, str], ...]] = (
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
)
"""``EIP712Domain``'s fields, in the order wallets hash them."""


def _fields(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "type": type_} for type_, name in pairs]


TYPES: Final[Mapping[MessageKind, list[dict[str, str]]]] = MappingProxyType(
    {
        MessageKind.ORDER: _fields(
            ("address", "participant"),
            ("uint64", "intervalStart"),
            ("uint8", "side"),
            ("uint64", "energyWh"),
            ("uint64", "limitPrice"),
            ("uint256", "nonce"),
            ("uint64", "deadline"),
        ),
        MessageKind.STANDING_ORDER: _fields(
            ("address", "participant"),
            ("uint8", "kind"),
            ("uint64", "energyWh"),
            ("uint64", "price"),
            ("uint64", "dischargePrice"),
            ("uint16", "minSocPermille"),
            ("uint16", "maxSocPermille"),
            ("uint64", "validFrom"),
            ("uint64", "validUntil"),
            ("uint256", "nonce"),
            ("uint64", "deadline"),
        ),
        MessageKind.CANCEL: _fields(
            ("address", "participant"),
            ("bytes32", "orderDigest"),
            ("uint256", "nonce"),
            ("uint64", "deadline"),
        ),
    }
)
"""Each message type's fields (``name``, ``type``), in EIP-712 order."""

ENUMS: Final[Mapping[tuple[MessageKind, str], type[enum.IntEnum]]] = MappingProxyType(
    {
        (MessageKind.ORDER, "side"): OrderSide,
        (MessageKind.STANDING_ORDER, "kind"): StandingKind,
    }
)
"""The ``uint8`` fields that hold an enum code, and the enum."""

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BYTES32 = re.compile(r"0x[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"[0-9]{1,78}")  # 2**256 has 78 digits
_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")  # ethers sends domain.chainId so
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
_UINT = re.compile(r"uint(8|16|64|256)")


def type_string(kind: MessageKind) -> str:
    """The EIP-712 type string of ``kind``, e.g. ``"Cancel(address participant,...)"``.

    Parameters
    ----------
    kind : MessageKind
        The message type.

    Returns
    -------
    str
        ``Name(type name,...)`` as hashed into the type hash.
    """
    inner = ",".join(f"{f['type']} {f['name']}" for f in TYPES[kind])
    return f"{kind.value}({inner})"


def _refuse_malformed(where: str, problem: str) -> TypedDataRefused:
    return TypedDataRefused(MALFORMED, f"{where}: {problem}")


def _uint(where: str, bits: int, value: object, *, from_json: bool = True) -> int:
    """A ``uint<bits>`` from a JSON integer, a decimal string or a ``0x`` hex string."""
    if isinstance(value, bool):
        raise _refuse_malformed(where, f"must be an unsigned integer, got {value!r}")
    if isinstance(value, int):
        if from_json and value > JS_MAX_SAFE_INTEGER:
            problem = (
                "a JSON number above 2**53 - 1 is not exact in a wallet; send a decimal string"
            )
            raise _refuse_malformed(where, problem)
        number = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = int(value)
    elif isinstance(value, str) and _QUANTITY.fullmatch(value):
        number = int(value, 16)
    else:
        shown = repr(value) if len(repr(value)) <= 80 else f"a {type(value).__name__}"
        problem = f"must be a uint{bits}: a JSON integer, a decimal or 0x hex string, not {shown}"
        raise _refuse_malformed(where, problem)
    if not 0 <= number < 2**bits:
        raise _refuse_malformed(where, f"{number} is out of the uint{bits} range [0, 2**{bits})")
    return number


@functools.lru_cache(maxsize=4096)
def _checksummed(address: str) -> str:
    """EIP-55 form of a well-formed hex address (cached: a site has few participants)."""
    return str(to_checksum_address(address))


def _address(where: str, value: object) -> str:
    """A 20-byte address in EIP-55 form; mixed case must be a valid EIP-55 checksum."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        shown = repr(value) if isinstance(value, str) and len(value) <= 42 else "another value"
        raise _refuse_malformed(where, f"must be an address (0x and 40 hex digits), got {shown}")
    checksummed = _checksummed(value)
    digits = value[2:]
    if digits not in {digits.lower(), digits.upper()} and value != checksummed:
        raise _refuse_malformed(where, f"bad EIP-55 checksum in {value}")
    return checksummed


def _bytes32(where: str, value: object) -> str:
    if not isinstance(value, str) or not _BYTES32.fullmatch(value):
        raise _refuse_malformed(where, "must be 32 bytes as 0x and 64 hex digits")
    return value.lower()


def _string(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise _refuse_malformed(where, f"must be a string, got {type(value).__name__}")
    return value


def _field_value(where: str, type_: str, value: object, *, from_json: bool) -> int | str:
    if type_ == "address":
        return _address(where, value)
    if type_ == "bytes32":
        return _bytes32(where, value)
    if type_ == "string":
        return _string(where, value)
    bits = _UINT.fullmatch(type_)
    if bits is None:  # pragma: no cover - TYPES holds only the types above
        raise _refuse_malformed(where, f"unsupported type {type_}")
    return _uint(where, int(bits.group(1)), value, from_json=from_json)


def _exact_keys(where: str, value: object, expected: list[str]) -> Mapping[str, Any]:
    """``value`` as a mapping with exactly the keys ``expected``."""
    if not isinstance(value, Mapping):
        raise _refuse_malformed(where, f"must be an object, got {type(value).__name__}")
    missing = [k for k in expected if k not in value]
    extra = sorted(str(k) for k in value if k not in expected)
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise _refuse_malformed(where, "; ".join(parts))
    return value


def _message(kind: MessageKind, message: object, *, from_json: bool) -> dict[str, int | str]:
    """The message's values checked against ``kind``'s type, in Python form.

    ``from_json``: a JSON number above 2**53 - 1 is refused (a wallet would not read it
    exactly); Python callers (``from_json=False``) pass any int.
    """
    fields = TYPES[kind]
    raw = _exact_keys("message", message, [f["name"] for f in fields])
    out: dict[str, int | str] = {}
    for field in fields:
        name = field["name"]
        value = _field_value(f"message.{name}", field["type"], raw[name], from_json=from_json)
        codes = ENUMS.get((kind, name))
        if codes is not None and value not in set(codes):
            known = ", ".join(f"{c.value} ({c.name.lower()})" for c in codes)
            where = f"message.{name}"
            raise _refuse_malformed(where, f"unknown code {value}; one of {known}")
        out[name] = value
    return out


def _json_message(kind: MessageKind, message: Mapping[str, int | str]) -> dict[str, int | str]:
    """A checked message in its emitted JSON form (uints as decimal strings)."""
    return {
        f["name"]: str(message[f["name"]]) if f["type"].startswith("uint") else message[f["name"]]
        for f in TYPES[kind]
    }


def _message_kind(value: object) -> MessageKind:
    for kind in MessageKind:
        if isinstance(value, str) and value == kind.value:
            return kind
    known = ", ".join(k.value for k in MessageKind)
    shown = repr(value) if len(repr(value)) <= 40 else "another value"
    where = "primaryType"
    raise _refuse_malformed(where, f"unknown {shown}; one of {known}")


def domain(chain_id: int, verifying_contract: str) -> dict[str, Any]:
    """PeerGrid's EIP-712 domain on a chain.

    Parameters
    ----------
    chain_id : int
        The chain's id (EIP-155).
    verifying_contract : str
        The site's Settlement contract address (any letter case).

    Returns
    -------
    dict
        ``{"name": "PeerGrid", "version": "1", "chainId": chain_id, "verifyingContract":
        <EIP-55 address>}``.

    Raises
    ------
    TypedDataRefused
        ``malformed`` if ``chain_id`` is not a uint256 or the address is not one.
    """
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or not 0 <= chain_id < 2**256:
        where = "domain.chainId"
        raise _refuse_malformed(where, f"must be a uint256, got {chain_id!r}")
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": _address("domain.verifyingContract", verifying_contract),
    }


def typed_data(
    kind: MessageKind | str,
    message: Mapping[str, Any],
    *,
    chain_id: int,
    verifying_contract: str,
) -> dict[str, Any]:
    """The full ``eth_signTypedData_v4`` JSON of a message, ready for a wallet.

    Parameters
    ----------
    kind : MessageKind or str
        The message type (``"Order"``, ``"StandingOrder"`` or ``"Cancel"``).
    message : Mapping
        The message's fields (see the module docstring for names and units); uints as
        Python ints or decimal strings.
    chain_id : int
        The chain's id.
    verifying_contract : str
        The site's Settlement contract address.

    Returns
    -------
    dict
        ``{"types": {"EIP712Domain": [...], kind: [...]}, "primaryType": kind, "domain":
        {...}, "message": {...}}`` with the message's uints as decimal strings and its
        addresses in EIP-55 form.

    Raises
    ------
    TypedDataRefused
        ``malformed``, naming the field, if ``message`` does not fit ``kind``'s type.
    """
    k = _message_kind(kind)
    checked = _message(k, message, from_json=False)
    return _payload(k, checked, domain(chain_id, verifying_contract))


def _payload(
    kind: MessageKind, message: Mapping[str, int | str], dom: dict[str, Any]
) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [dict(f) for f in DOMAIN_TYPE],
            kind.value: [dict(f) for f in TYPES[kind]],
        },
        "primaryType": kind.value,
        "domain": dict(dom),
        "message": _json_message(kind, message),
    }


def _signable_full(
    kind: MessageKind, message: Mapping[str, int | str], dom: dict[str, Any]
) -> SignableMessage:
    """eth-account's signable message of the full v4 JSON (domain hashed every time)."""
    return encode_typed_data(
        full_message={
            "types": {"EIP712Domain": list(DOMAIN_TYPE), kind.value: TYPES[kind]},
            "primaryType": kind.value,
            "domain": dom,
            "message": dict(message),
        }
    )


@functools.lru_cache(maxsize=64)
def _domain_separator(chain_id: int, verifying_contract: str) -> bytes:
    """``hashStruct(domain)`` by eth-account, once per chain and contract."""
    zero: dict[str, int | str] = {
        "participant": "0x" + "00" * 20,
        "orderDigest": "0x" + "00" * 32,
        "nonce": 0,
        "deadline": 0,
    }
    cancel = _signable_full(MessageKind.CANCEL, zero, domain(chain_id, verifying_contract))
    return bytes(cancel.header)


def _signable(
    kind: MessageKind, message: Mapping[str, int | str], dom: dict[str, Any]
) -> SignableMessage:
    """eth-account's signable message for a checked message (Python ints, no coercion).

    The same as :func:`_signable_full` (a test checks it), but the domain separator is
    hashed once per domain: eth-account hashes the message under an empty domain and the
    cached separator takes the empty domain's place.
    """
    body = encode_typed_data({}, {kind.value: TYPES[kind]}, dict(message)).body
    header = _domain_separator(dom["chainId"], dom["verifyingContract"])
    return SignableMessage(version=b"\x01", header=header, body=body)


def _digest_of(signable: SignableMessage) -> bytes:
    """The EIP-712 digest ``keccak256(0x19 0x01 || domainSeparator || hashStruct)``."""
    return bytes(keccak(b"\x19" + signable.version + signable.header + signable.body))


# ---------------------------------------------------------------- the direct encoder (verify)
# Every field of our three types is static (address, uintN, bytes32), so EIP-712's
# ``encodeData`` of a message is its type hash followed by one 32-byte word per field, in
# the type's order: an address left-padded with 12 zero bytes, a uint big-endian, a bytes32
# as is. :func:`verify` hashes so (about 2x faster than eth-account's general encoder,
# which parses the types on every call); tests/adapters/chain/test_typed_data_fast.py
# checks with hypothesis that it equals eth-account's ``encode_typed_data`` of the full v4
# JSON for random messages of every kind and random domains, and :func:`sign` and
# :func:`digest` keep eth-account's encoding, so every sign-then-verify test compares the two.


def _keccak256(data: bytes) -> bytes:
    """``keccak256`` by pycryptodome (eth-hash's backend here) without eth-hash's wrappers."""
    return cryptodome_keccak.new(digest_bits=256, data=data).digest()


def _address_word(value: int | str) -> bytes:
    return bytes(12) + bytes.fromhex(str(value)[2:])


def _bytes32_word(value: int | str) -> bytes:
    return bytes.fromhex(str(value)[2:])


def _uint_word(value: int | str) -> bytes:
    return int(value).to_bytes(32, "big")


_WORD: Final[Mapping[str, Callable[[int | str], bytes]]] = MappingProxyType(
    {
        "address": _address_word,
        "bytes32": _bytes32_word,
        "uint8": _uint_word,
        "uint16": _uint_word,
        "uint64": _uint_word,
        "uint256": _uint_word,
    }
)

_TYPE_HASH: Final[Mapping[MessageKind, bytes]] = MappingProxyType(
    {kind: bytes(keccak(text=type_string(kind))) for kind in MessageKind}
)
"""``keccak256`` of each type's string (EIP-712 ``typeHash``)."""

_ENCODERS: Final[Mapping[MessageKind, tuple[tuple[str, Callable[[int | str], bytes]], ...]]] = (
    MappingProxyType(
        {kind: tuple((f["name"], _WORD[f["type"]]) for f in TYPES[kind]) for kind in MessageKind}
    )
)


def _struct_hash(kind: MessageKind, message: Mapping[str, int | str]) -> bytes:
    """EIP-712 ``hashStruct`` of a checked message (Python ints, ``0x`` hex strings)."""
    words = [_TYPE_HASH[kind]]
    words.extend(word(message[name]) for name, word in _ENCODERS[kind])
    return _keccak256(b"".join(words))


def _fast_digest(kind: MessageKind, message: Mapping[str, int | str], dom: dict[str, Any]) -> bytes:
    """The EIP-712 digest of a checked message on a checked domain, by the direct encoder."""
    separator = _domain_separator(dom["chainId"], dom["verifyingContract"])
    return _keccak256(b"\x19\x01" + separator + _struct_hash(kind, message))


def digest(
    kind: MessageKind | str,
    message: Mapping[str, Any],
    *,
    chain_id: int,
    verifying_contract: str,
) -> str:
    """The EIP-712 digest a wallet signs for a message (what ``Cancel.orderDigest`` names).

    Parameters
    ----------
    kind, message, chain_id, verifying_contract
        As for :func:`typed_data`.

    Returns
    -------
    str
        ``0x`` and 64 hex digits.

    Raises
    ------
    TypedDataRefused
        ``malformed`` if ``message`` does not fit ``kind``'s type.
    """
    k = _message_kind(kind)
    signable = _signable(
        k, _message(k, message, from_json=False), domain(chain_id, verifying_contract)
    )
    return "0x" + _digest_of(signable).hex()


def _local_account(key: LocalAccount | str | bytes) -> LocalAccount:
    if isinstance(key, LocalAccount):
        return key
    try:
        account: LocalAccount = Account.from_key(key.strip() if isinstance(key, str) else key)
    except (ValueError, TypeError):
        # the key's text is never quoted nor chained into the traceback
        where = "key"
        raise _refuse_malformed(where, "not a private key (32 bytes, 64 hex digits)") from None
    return account


def sign(
    kind: MessageKind | str,
    message: Mapping[str, Any],
    key: LocalAccount | str | bytes,
    *,
    chain_id: int,
    verifying_contract: str,
) -> str:
    """Sign a message as a wallet's ``eth_signTypedData_v4`` would.

    Parameters
    ----------
    kind, message, chain_id, verifying_contract
        As for :func:`typed_data`.
    key : LocalAccount or str or bytes
        The signer: an eth-account local account (e.g. from a keystore) or a raw private
        key (hex, ``0x`` optional, or 32 bytes).

    Returns
    -------
    str
        The signature ``r || s || v`` (``v`` 27 or 28) as ``0x`` and 130 hex digits.

    Raises
    ------
    TypedDataRefused
        ``malformed`` if ``message`` does not fit ``kind``'s type or ``key`` is not a key.
    """
    k = _message_kind(kind)
    signable = _signable(
        k, _message(k, message, from_json=False), domain(chain_id, verifying_contract)
    )
    signed = _local_account(key).sign_message(signable)
    return "0x" + bytes(signed.signature).hex()


def signed_payload(
    kind: MessageKind | str,
    message: Mapping[str, Any],
    key: LocalAccount | str | bytes,
    *,
    chain_id: int,
    verifying_contract: str,
) -> dict[str, Any]:
    """The body a client posts: ``{"typedData": <v4 JSON>, "signature": "0x..."}``.

    Parameters
    ----------
    kind, message, key, chain_id, verifying_contract
        As for :func:`sign`.

    Returns
    -------
    dict
        The payload :func:`verify` takes.

    Raises
    ------
    TypedDataRefused
        As for :func:`sign`.
    """
    return {
        "typedData": typed_data(
            kind, message, chain_id=chain_id, verifying_contract=verifying_contract
        ),
        "signature": sign(
            kind, message, key, chain_id=chain_id, verifying_contract=verifying_contract
        ),
    }


@dataclass(frozen=True)
class Verified:
    """A signed message that :func:`verify` accepted.

    ``message`` holds Python ints, EIP-55 addresses and ``bytes32`` as lower-case ``0x``
    hex; ``signer`` is the recovered address (EIP-55), equal to ``message["participant"]``;
    ``digest`` the EIP-712 digest (``0x`` and 64 hex digits, the idempotency key);
    ``signature`` the signature with ``v`` 27 or 28; ``typed_data`` the payload in the form
    :func:`typed_data` emits (same digest as the one signed).
    """

    kind: MessageKind
    message: dict[str, Any]
    signer: str
    digest: str
    signature: str
    typed_data: dict[str, Any]


def _check_domain(raw: object, chain_id: int, verifying_contract: str) -> dict[str, Any]:
    """The payload's domain, which must be PeerGrid's on this chain and contract."""
    ours = domain(chain_id, verifying_contract)
    fields = [f["name"] for f in DOMAIN_TYPE]
    theirs = _exact_keys("domain", raw, fields)
    checked: dict[str, Any] = {
        "name": _string("domain.name", theirs["name"]),
        "version": _string("domain.version", theirs["version"]),
        "chainId": _uint("domain.chainId", 256, theirs["chainId"]),
        "verifyingContract": _address("domain.verifyingContract", theirs["verifyingContract"]),
    }
    for name in fields:
        if checked[name] != ours[name]:
            reason = f"domain.{name} is {checked[name]!r}, this site's is {ours[name]!r}"
            raise TypedDataRefused(WRONG_DOMAIN, reason)
    return ours


def _check_types(raw: object, kind: MessageKind) -> None:
    types = _exact_keys("types", raw, ["EIP712Domain", kind.value])
    expected: dict[str, list[dict[str, str]]] = {
        "EIP712Domain": list(DOMAIN_TYPE),
        kind.value: TYPES[kind],
    }
    for name, fields in expected.items():
        if types[name] != fields:
            inner = ",".join(f"{f['type']} {f['name']}" for f in fields)
            where = f"types.{name}"
            raise _refuse_malformed(where, f"must be exactly {name}({inner})")


_KEYS: Final = KeyAPI()  # eth-keys with its fastest installed backend (coincurve)


def _recover(msg_hash: bytes, where: str, value: object) -> tuple[bytes, str]:
    """The signer's 20-byte address and the signature with ``v`` in {27, 28}."""
    if not isinstance(value, str) or not _SIGNATURE.fullmatch(value):
        raise TypedDataRefused(BAD_SIGNATURE, f"{where}: must be 65 bytes (0x and 130 hex)")
    raw = bytes.fromhex(value[2:])
    r, s, v = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]
    if v in {0, 1}:
        v += 27
    if v not in {27, 28}:
        raise TypedDataRefused(BAD_SIGNATURE, f"{where}: v must be 27 or 28 (or 0 or 1)")
    if not 0 < r < SECP256K1_N:
        raise TypedDataRefused(BAD_SIGNATURE, f"{where}: r is out of range")
    if not 0 < s <= SECP256K1_N // 2:
        raise TypedDataRefused(BAD_SIGNATURE, f"{where}: s must be in the lower half (EIP-2)")
    normal = raw[:64] + bytes([v])
    try:
        # what eth-account's Account._recover_hash does, without its re-checks and checksum
        public = _KEYS.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(msg_hash)
    except BadSignature:
        raise TypedDataRefused(BAD_SIGNATURE, f"{where}: recovers no key") from None
    return _keccak256(public.to_bytes())[-20:], "0x" + normal.hex()


def verify(payload: Mapping[str, Any], *, chain_id: int, verifying_contract: str) -> Verified:
    """Check a signed message: its typed data, its domain and its signer.

    Parameters
    ----------
    payload : Mapping
        ``{"typedData": <the full eth_signTypedData_v4 JSON the wallet signed>,
        "signature": "0x..."}`` (parsed JSON).
    chain_id : int
        This site's chain id.
    verifying_contract : str
        This site's Settlement contract address.

    Returns
    -------
    Verified
        The message in Python form, its signer, digest and signature.

    Raises
    ------
    TypedDataRefused
        ``malformed`` (keys, types, primaryType, a value's format or range, an enum code),
        ``wrong_domain`` (name, version, chainId or verifyingContract other than this
        site's), ``bad_signature`` (length, ``v``, high ``s``, no key recovered) or
        ``signer_not_participant``; the reason names the field.
    """
    body = _exact_keys("payload", payload, ["typedData", "signature"])
    data = _exact_keys(
        "typedData", body["typedData"], ["types", "primaryType", "domain", "message"]
    )
    kind = _message_kind(data["primaryType"])
    _check_types(data["types"], kind)
    message = _message(kind, data["message"], from_json=True)
    dom = _check_domain(data["domain"], chain_id, verifying_contract)
    msg_hash = _fast_digest(kind, message, dom)
    signer, signature = _recover(msg_hash, "signature", body["signature"])
    participant = str(message["participant"])
    if signer != bytes.fromhex(participant[2:]):
        shown = _checksummed("0x" + signer.hex())
        reason = f"signed by {shown}, but message.participant is {participant}"
        raise TypedDataRefused(SIGNER_NOT_PARTICIPANT, reason)
    return Verified(
        kind=kind,
        message=dict(message),
        signer=participant,
        digest="0x" + msg_hash.hex(),
        signature=signature,
        typed_data=_payload(kind, message, dom),
    )


__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_TYPE",
    "DOMAIN_VERSION",
    "ENUMS",
    "TYPES",
    "MessageKind",
    "OrderSide",
    "StandingKind",
    "Verified",
    "digest",
    "domain",
    "sign",
    "signed_payload",
    "type_string",
    "typed_data",
    "verify",
]

"""Signed meter readings: the canonical encoding a meter signs, its signature, its checks (pure).

A meter, or the gateway in front of it, holds a secp256r1 (NIST P-256) key and signs each
reading of its energy counters, as OCMF does for charging stations. PeerGrid verifies the
signature off-chain (P-256 on-chain costs far too much gas), in the controller when it reads
and again in ``peergrid audit verify``; the chain only holds which public key each device
had at each block (``DeviceKeys.vy``).

**The signed message** is :data:`PAYLOAD_BYTES` (112) bytes, big-endian, fixed layout:

======  =====  ============================  =============================================
offset  bytes  field (OCMF name)             meaning
======  =====  ============================  =============================================
0       4      format (``FV``)               ``b"PGR1"``: PeerGrid reading, version 1
4       64     device id (``MS``)            the site file's device id, ASCII, NUL-padded
68      8      sequence (``PG`` ``"F<n>"``)  uint64, +1 at least per signed reading
76      8      measurement time (``TM``)     uint64, Unix time [ms] when the device latched
84      8      import counter (``RV``,       uint64 [Wh], energy taken from the microgrid
               OBIS ``1-0:1.8.0``)
92      8      export counter (``RV``,       uint64 [Wh], energy given to the microgrid
               OBIS ``1-0:2.8.0``)
100     4      active power (``RV``,         int32 [W], positive = import (consumption)
               OBIS ``1-0:16.7.0``)
104     8      reserved                      zero
======  =====  ============================  =============================================

**The signature** is ECDSA over P-256 with SHA-256 of the message (OCMF's
``ECDSA-secp256r1-SHA256``), 64 bytes ``r || s`` (big-endian, 32 bytes each) with ``s`` in
the lower half of the group order: of the two valid signatures of a message only the low one
is accepted, so a signature, and the Merkle leaf that holds it, is unique.

**A reading is verified** (:func:`check_reading`) when its signature is valid under the key the
registry held for the device at the block the interval names, its device id is the device's,
its sequence is greater than the last one accepted from that device, and its time lies within
``max_reading_age_s`` of the boundary it is read for. Anything else is ``UNVERIFIED``, with
the reason (:class:`Verdict`).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from market.errors import InvalidQuantity

FORMAT: Final = b"PGR1"
"""The format tag the message starts with (OCMF ``FV``: PeerGrid reading, version 1)."""
ALGORITHM: Final = "ECDSA-secp256r1-SHA256"
"""The signature algorithm, by OCMF's name (``SA``)."""
DEVICE_ID_BYTES: Final = 64
_LAYOUT: Final = struct.Struct(">4s64sQQQQi8s")
PAYLOAD_BYTES: Final = _LAYOUT.size
"""Length of the signed message [bytes] (112)."""
SIGNATURE_BYTES: Final = 64
"""Length of a signature, ``r || s`` [bytes]."""
PUBLIC_KEY_BYTES: Final = 64
"""Length of a public key, the uncompressed point ``X || Y`` without its ``0x04`` [bytes]."""

P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
"""The order ``n`` of P-256's group."""
_HALF_ORDER: Final = P256_ORDER // 2
_U64: Final = 2**64
MAX_TIME_MS: Final = 253_402_300_799_999
"""The latest measurement time a reading may state, 9999-12-31T23:59:59.999Z [Unix ms]."""
_I32: Final = 2**31

OBIS_IMPORT: Final = "1-0:1.8.0"
OBIS_EXPORT: Final = "1-0:2.8.0"
OBIS_POWER: Final = "1-0:16.7.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingPayload:
    """What a device signs (the module docstring's layout).

    Attributes
    ----------
    device_id : str
        The device's id in the site file (ASCII, at most 64 bytes).
    seq : int
        The device's sequence number (uint64).
    measured_at_ms : int
        When the device latched the values [Unix ms].
    import_wh_total, export_wh_total : int
        The cumulative counters [Wh] (uint64).
    p_w : int
        Active power [W], positive = import (int32).
    """

    device_id: str
    seq: int
    measured_at_ms: int
    import_wh_total: int
    export_wh_total: int
    p_w: int

    def __post_init__(self) -> None:
        try:
            raw = self.device_id.encode("ascii")
        except UnicodeEncodeError:
            msg = f"device id {self.device_id!r} is not ASCII"
            raise InvalidQuantity(msg) from None
        if not 0 < len(raw) <= DEVICE_ID_BYTES or b"\x00" in raw:
            msg = f"device id {self.device_id!r} must be 1-{DEVICE_ID_BYTES} bytes without NUL"
            raise InvalidQuantity(msg)
        for name in ("seq", "measured_at_ms", "import_wh_total", "export_wh_total"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U64:
                msg = f"{name} must be an integer in 0..2**64-1, got {value!r}"
                raise InvalidQuantity(msg)
        if self.measured_at_ms > MAX_TIME_MS:
            msg = f"measured_at_ms {self.measured_at_ms} is after the year 9999"
            raise InvalidQuantity(msg)
        if isinstance(self.p_w, bool) or not isinstance(self.p_w, int):
            msg = f"p_w must be an integer [W], got {self.p_w!r}"
            raise InvalidQuantity(msg)
        if not -_I32 <= self.p_w < _I32:
            msg = f"p_w must fit an int32 [W], got {self.p_w}"
            raise InvalidQuantity(msg)

    @property
    def measured_at(self) -> datetime:
        """The measurement time (UTC)."""
        return datetime.fromtimestamp(self.measured_at_ms / 1000, UTC)

    def encode(self) -> bytes:
        """The signed message, :data:`PAYLOAD_BYTES` bytes."""
        return _LAYOUT.pack(
            FORMAT,
            self.device_id.encode("ascii"),
            self.seq,
            self.measured_at_ms,
            self.import_wh_total,
            self.export_wh_total,
            self.p_w,
            bytes(8),
        )

    @classmethod
    def decode(cls, message: bytes) -> ReadingPayload:
        """The payload a message encodes.

        Raises
        ------
        InvalidQuantity
            Not :data:`PAYLOAD_BYTES` long, another format tag, a device id that is not
            NUL-padded ASCII, or reserved bytes that are not zero.
        """
        if len(message) != PAYLOAD_BYTES:
            msg = f"a reading is {PAYLOAD_BYTES} bytes, got {len(message)}"
            raise InvalidQuantity(msg)
        tag, device, seq, at_ms, imported, exported, p_w, reserved = _LAYOUT.unpack(message)
        if tag != FORMAT:
            msg = f"format {tag!r} is not {FORMAT!r}"
            raise InvalidQuantity(msg)
        if reserved != bytes(8):
            msg = "reserved bytes are not zero"
            raise InvalidQuantity(msg)
        name = device.rstrip(b"\x00")
        if b"\x00" in name:
            msg = "device id is not NUL-padded"
            raise InvalidQuantity(msg)
        try:
            device_id = name.decode("ascii")
        except UnicodeDecodeError:
            msg = "device id is not ASCII"
            raise InvalidQuantity(msg) from None
        return cls(
            device_id=device_id,
            seq=seq,
            measured_at_ms=at_ms,
            import_wh_total=imported,
            export_wh_total=exported,
            p_w=p_w,
        )


@dataclass(frozen=True, slots=True)
class SignedReading:
    """A reading as its device signed it: the message and the signature ``r || s``."""

    payload: ReadingPayload
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.signature) != SIGNATURE_BYTES:
            msg = f"a signature is {SIGNATURE_BYTES} bytes, got {len(self.signature)}"
            raise InvalidQuantity(msg)

    def to_ocmf(self) -> dict[str, Any]:
        """The reading by OCMF's field names (for records and reports; JSON-ready).

        ``MS`` the device, ``PG`` ``"F<seq>"``, ``RD`` its three values (``TM`` ISO 8601 in
        ms with OCMF's ``S`` for a synchronised clock, ``RV``, ``RI`` OBIS id, ``RU`` unit,
        ``ST`` ``"G"``), ``SA``/``SE``/``SD`` the signature (hex ``r || s``), and ``PL`` the
        signed message itself (hex), so anyone can re-verify it without this code.
        """
        p = self.payload
        tm = p.measured_at.strftime("%Y-%m-%dT%H:%M:%S,") + f"{p.measured_at_ms % 1000:03d}+0000 S"
        return {
            "FV": FORMAT.decode("ascii"),
            "MS": p.device_id,
            "PG": f"F{p.seq}",
            "RD": [
                {"TM": tm, "RV": p.import_wh_total, "RI": OBIS_IMPORT, "RU": "Wh", "ST": "G"},
                {"TM": tm, "RV": p.export_wh_total, "RI": OBIS_EXPORT, "RU": "Wh", "ST": "G"},
                {"TM": tm, "RV": p.p_w, "RI": OBIS_POWER, "RU": "W", "ST": "G"},
            ],
            "PL": p.encode().hex(),
            "SA": ALGORITHM,
            "SE": "hex",
            "SD": self.signature.hex(),
        }

    @classmethod
    def from_ocmf(cls, data: dict[str, Any]) -> SignedReading:
        """The reading :meth:`to_ocmf` wrote: the message ``PL`` and the signature ``SD``.

        The named fields are a view of ``PL``; they must agree with it.

        Raises
        ------
        InvalidQuantity
            Malformed, or a named field that differs from the signed message.
        """
        try:
            payload = ReadingPayload.decode(bytes.fromhex(str(data["PL"])))
            signature = bytes.fromhex(str(data["SD"]))
            algorithm = data.get("SA", ALGORITHM)
        except (KeyError, ValueError, TypeError) as exc:
            msg = f"not a signed reading: {type(exc).__name__}: {exc}"
            raise InvalidQuantity(msg) from None
        if algorithm != ALGORITHM:
            msg = f"signature algorithm {algorithm!r} is not {ALGORITHM}"
            raise InvalidQuantity(msg)
        signed = cls(payload, signature)
        if signed.to_ocmf() != {**data, "SA": ALGORITHM, "SE": "hex"}:
            msg = f"the named fields of {payload.device_id}'s reading differ from its message"
            raise InvalidQuantity(msg)
        return signed


# ----------------------------------------------------------------------------------- keys


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (the operating system's randomness)."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The public key as 64 bytes ``X || Y`` (the registry's form)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


@functools.lru_cache(maxsize=65_536)
def load_public_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of 64 bytes ``X || Y``.

    Cached: a site verifies the same keys each interval.

    Raises
    ------
    InvalidQuantity
        Not 64 bytes, or not a point of P-256.
    """
    if len(raw) != PUBLIC_KEY_BYTES:
        msg = f"a public key is {PUBLIC_KEY_BYTES} bytes, got {len(raw)}"
        raise InvalidQuantity(msg)
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError:
        msg = "the public key is not a point of P-256"
        raise InvalidQuantity(msg) from None


def sign(key: ec.EllipticCurvePrivateKey, payload: ReadingPayload) -> SignedReading:
    """``payload`` signed with ``key`` (low ``s``)."""
    der = key.sign(payload.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    if s > _HALF_ORDER:
        s = P256_ORDER - s
    return SignedReading(payload, r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def signature_valid(public_key: bytes, signed: SignedReading) -> bool:
    """Whether ``signed``'s signature is valid under ``public_key`` (64 bytes) with low ``s``.

    Raises
    ------
    InvalidQuantity
        ``public_key`` is not a P-256 public key.
    """
    key = load_public_key(public_key)
    r = int.from_bytes(signed.signature[:32], "big")
    s = int.from_bytes(signed.signature[32:], "big")
    if not (0 < r < P256_ORDER and 0 < s <= _HALF_ORDER):
        return False
    try:
        key.verify(encode_dss_signature(r, s), signed.payload.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# ------------------------------------------------------------------------------ checking


def _first_problem(
    signed: SignedReading, device_id: str, public_key: bytes | None, last_seq: int | None
) -> str:
    """Why ``signed`` is not ``device_id``'s next reading, by key and sequence; ``""``: it is."""
    p = signed.payload
    if public_key is None:
        return f"{device_id} has no registered key in force"
    try:
        valid = signature_valid(public_key, signed)
    except InvalidQuantity as exc:
        return f"{device_id}'s registered key is unusable: {exc}"
    if not valid:
        return f"signature not valid under {device_id}'s key"
    if p.device_id != device_id:
        return f"signed as device {p.device_id!r}, read from {device_id}"
    if last_seq is not None and p.seq <= last_seq:
        return f"sequence {p.seq} does not follow the last accepted {last_seq}"
    return ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of :func:`check_reading`: ``ok``, or the reason it is not."""

    ok: bool
    reason: str = ""


VERIFIED: Final = Verdict(ok=True)


def check_reading(
    signed: SignedReading,
    *,
    device_id: str,
    public_key: bytes | None,
    last_seq: int | None,
    boundary_ms: int,
    max_age_ms: int,
) -> Verdict:
    """Whether ``signed`` is a verified reading of ``device_id`` for the boundary.

    Parameters
    ----------
    signed : SignedReading
        The reading as read.
    device_id : str
        The device it was read from.
    public_key : bytes or None
        The device's key in force (64 bytes); ``None``: none registered, or revoked.
    last_seq : int or None
        The last sequence number accepted from the device (``None``: none yet).
    boundary_ms : int
        The boundary the reading is for [Unix ms].
    max_age_ms : int
        How far from the boundary its time may lie [ms].

    Returns
    -------
    Verdict
        :data:`VERIFIED`, or the first reason it is not: no key, a signature that is not
        valid under the key, another device's id, a sequence that repeats or goes back, a
        time too far from the boundary.
    """
    reason = _first_problem(signed, device_id, public_key, last_seq)
    if reason:
        return Verdict(ok=False, reason=reason)
    off_ms = signed.payload.measured_at_ms - boundary_ms
    if abs(off_ms) > max_age_ms:
        return Verdict(
            ok=False,
            reason=(
                f"measured {off_ms / 1000:+.3f} s from its boundary, more than "
                f"{max_age_ms / 1000:g} s"
            ),
        )
    return VERIFIED


__all__ = [
    "ALGORITHM",
    "FORMAT",
    "MAX_TIME_MS",
    "OBIS_EXPORT",
    "OBIS_IMPORT",
    "OBIS_POWER",
    "P256_ORDER",
    "PAYLOAD_BYTES",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "VERIFIED",
    "ReadingPayload",
    "SignedReading",
    "Verdict",
    "check_reading",
    "load_public_key",
    "new_private_key",
    "public_key_bytes",
    "sign",
    "signature_valid",
]

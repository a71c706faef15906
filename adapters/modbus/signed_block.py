"""The PeerGrid signed-reading block: a signed meter reading as Modbus input registers (pure).

A meter or meter gateway that signs its readings (:mod:`market.signed_readings`) serves the
latest one as one block of :data:`BLOCK_REGISTERS` (88) input registers (function 4) at a
base address its site file names (``signed_block``):

==========  =========  ==================================================================
registers   bytes      content
==========  =========  ==================================================================
0 - 55      112        the signed message (:data:`market.signed_readings.PAYLOAD_BYTES`):
                       format ``PGR1``, device id, sequence, time [ms], import and export
                       counters [Wh], power [W]
56 - 87     64         the signature ``r || s`` (ECDSA P-256, SHA-256, low ``s``)
==========  =========  ==================================================================

Each register holds two bytes, the first in its high byte (Modbus's big-endian words). The
device **latches** the block: it replaces all 88 registers at once when it takes a new
measurement, so the reader, which asks for the whole block in **one request** (at most 125
registers fit one), never gets counters, time, sequence and signature from different
moments. A device that has not measured yet serves zeros (no format tag: not a reading).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from adapters.modbus.client import RegisterClient
from adapters.modbus.errors import CodecError
from market.errors import InvalidQuantity
from market.signed_readings import PAYLOAD_BYTES, SIGNATURE_BYTES, ReadingPayload, SignedReading

MESSAGE_REGISTERS: Final = PAYLOAD_BYTES // 2
SIGNATURE_REGISTERS: Final = SIGNATURE_BYTES // 2
BLOCK_REGISTERS: Final = MESSAGE_REGISTERS + SIGNATURE_REGISTERS
"""Registers of the block (88: fits one read request of at most 125)."""
TABLE: Final = "input"
"""The block is served as input registers (function 4)."""


def to_registers(signed: SignedReading) -> list[int]:
    """The block's 88 registers for ``signed``."""
    raw = signed.payload.encode() + signed.signature
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def from_registers(registers: Sequence[int]) -> SignedReading:
    """The signed reading a block holds.

    Raises
    ------
    CodecError
        Not 88 registers of 16 bits, or not a signed reading (a device that has not
        measured yet, another format, a malformed device id), with the reason.
    """
    if len(registers) != BLOCK_REGISTERS:
        msg = f"a signed block is {BLOCK_REGISTERS} registers, got {len(registers)}"
        raise CodecError(msg)
    if any(not 0 <= r <= 0xFFFF for r in registers):
        msg = "a register of the signed block is not a 16-bit value"
        raise CodecError(msg)
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    try:
        payload = ReadingPayload.decode(raw[:PAYLOAD_BYTES])
        return SignedReading(payload, raw[PAYLOAD_BYTES:])
    except InvalidQuantity as exc:
        msg = f"not a signed reading: {exc}"
        raise CodecError(msg) from None


def read_block(client: RegisterClient, address: int) -> list[int]:
    """The block's registers, read in one request from input register ``address``.

    Raises
    ------
    DeviceUnavailable, DeviceError
        From the client.
    CodecError
        The device answered with another number of registers.
    """
    values = client.read_registers(TABLE, address, BLOCK_REGISTERS)
    if len(values) != BLOCK_REGISTERS:
        msg = f"asked for {BLOCK_REGISTERS} registers at {address}, got {len(values)}"
        raise CodecError(msg)
    return list(values)


__all__ = [
    "BLOCK_REGISTERS",
    "MESSAGE_REGISTERS",
    "SIGNATURE_REGISTERS",
    "TABLE",
    "from_registers",
    "read_block",
    "to_registers",
]

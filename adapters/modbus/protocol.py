"""Modbus protocol constants, defined once (Modbus Application Protocol v1.1b3).

Every other module of :mod:`adapters.modbus` takes its function codes, exception codes and
request limits from here; nothing else spells them as numbers.

==============================  =====  ===================================================
constant                        value  meaning
==============================  =====  ===================================================
:data:`MAX_READ_REGISTERS`      125    most registers one read (function 3 or 4) asks for
:data:`MAX_WRITE_REGISTERS`     123    most registers one write (function 16) carries
:data:`ADDRESS_SPACE`           65536  registers per table: addresses ``0 .. 65535``
:data:`MAX_TCP_LENGTH`          254    largest MBAP length field: unit id + a 253-byte PDU
==============================  =====  ===================================================

An exception answer is the request's function code with bit 7 set
(:data:`EXCEPTION_FLAG`), then one :class:`ExceptionCode`.
"""

from __future__ import annotations

import enum


class FunctionCode(enum.IntEnum):
    """Modbus function codes PeerGrid sends, answers or refuses (section 6)."""

    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4
    WRITE_SINGLE_COIL = 5
    WRITE_SINGLE_REGISTER = 6
    WRITE_MULTIPLE_COILS = 15
    WRITE_MULTIPLE_REGISTERS = 16
    MASK_WRITE_REGISTER = 22
    READ_WRITE_MULTIPLE_REGISTERS = 23


class ExceptionCode(enum.IntEnum):
    """Modbus exception codes (section 7)."""

    ILLEGAL_FUNCTION = 1
    ILLEGAL_DATA_ADDRESS = 2
    ILLEGAL_DATA_VALUE = 3
    SERVER_DEVICE_FAILURE = 4
    ACKNOWLEDGE = 5
    SERVER_DEVICE_BUSY = 6
    MEMORY_PARITY_ERROR = 8
    GATEWAY_PATH_UNAVAILABLE = 10
    GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND = 11


EXCEPTION_NAMES: dict[int, str] = {
    code: code.name.lower().replace("_", " ") for code in ExceptionCode
}
"""Exception code -> its name in the specification (``2`` -> ``"illegal data address"``)."""

READ_FUNCTIONS = frozenset({FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS})
"""The two register reads."""
EXCEPTION_FLAG = 0x80
"""Bit set in the function code of an exception answer."""

MAX_READ_REGISTERS = 125
"""Most registers one Modbus read request may ask for (function 3/4)."""
MAX_WRITE_REGISTERS = 123
"""Most registers one Modbus write request may carry (function 16)."""
ADDRESS_SPACE = 0x10000
"""Registers in one table: protocol addresses ``0 .. 65535``."""
MAX_TCP_LENGTH = 254
"""Largest MBAP length field: unit id + a 253-byte PDU."""

__all__ = [
    "ADDRESS_SPACE",
    "EXCEPTION_FLAG",
    "EXCEPTION_NAMES",
    "MAX_READ_REGISTERS",
    "MAX_TCP_LENGTH",
    "MAX_WRITE_REGISTERS",
    "READ_FUNCTIONS",
    "ExceptionCode",
    "FunctionCode",
]

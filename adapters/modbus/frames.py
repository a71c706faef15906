"""Modbus PDUs and frame lengths: building requests and checking answers (pure, no sockets).

The transport (:mod:`adapters.modbus.client`) moves bytes; ``modbus_tk`` adds and checks
the MAC layer (the TCP MBAP header: transaction, protocol and unit id, length; the RTU
address and CRC). This module does the rest, strictly, so that no value is ever taken from
a frame that is not a well-formed answer to the request that was sent:

=====================================  ==============================================
answer PDU                             outcome
=====================================  ==============================================
``fc, 2n, r1 .. rn`` to a read of n    the n registers
``fc | 0x80, code`` (2 bytes)          :class:`DeviceError` with ``code``
``16, address, n`` to a write of n     accepted
anything else: another function code,  :class:`InvalidFrame` (a garbled answer; the
a byte count other than 2n, a short    client retries and finally reports the device
or long PDU, a wrong write echo        :class:`~adapters.modbus.errors.DeviceUnavailable`)
=====================================  ==============================================

``modbus_tk`` itself accepts a response whose function code differs from the request's
and any ``0x81..0xFF`` byte as an exception; these checks close that gap.

Frame lengths, so a reader never waits for bytes that will not come:

* TCP: the MBAP length field counts the unit id and the PDU, ``2 .. 254`` bytes
  (:func:`tcp_length`).
* RTU: ``unit, fc`` then: ``code, crc`` for an exception (5 bytes in all); ``count, data,
  crc`` for a read (``5 + count``); ``address, quantity, crc`` for a write (8)
  (:func:`rtu_frame_length`).

Examples
--------
>>> read_request(3, 40000, 2).hex()
'039c400002'
>>> parse_read_response(bytes.fromhex("030453756e53"), 3, 2)
[21365, 28243]
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from adapters.modbus.errors import DeviceError, InvalidArgument, InvalidFrame, WriteRefused
from adapters.modbus.protocol import (
    ADDRESS_SPACE,
    EXCEPTION_FLAG,
    MAX_READ_REGISTERS,
    MAX_TCP_LENGTH,
    MAX_WRITE_REGISTERS,
    READ_FUNCTIONS,
    FunctionCode,
)


def read_request(function: int, address: int, count: int) -> bytes:
    """The PDU of a register read (function 3 or 4).

    Parameters
    ----------
    function : int
        3 (holding registers) or 4 (input registers).
    address : int
        First register, ``0 .. 65535``.
    count : int
        Registers to read, ``1 .. 125``.

    Returns
    -------
    bytes
        ``function, address, count`` (5 bytes).

    Raises
    ------
    InvalidArgument
        Not a read function, or an address range outside ``0 .. 65535`` / above 125.
    """
    if function not in READ_FUNCTIONS:
        msg = f"function {function} is not a register read (3 or 4)"
        raise InvalidArgument(msg)
    if not 1 <= count <= MAX_READ_REGISTERS or not 0 <= address <= ADDRESS_SPACE - count:
        msg = f"cannot read {count} registers at {address}"
        raise InvalidArgument(msg)
    return struct.pack(">BHH", function, address, count)


def write_request(address: int, values: Sequence[int]) -> bytes:
    """The PDU of a multiple-register write (function 16).

    Parameters
    ----------
    address : int
        First register, ``0 .. 65535``.
    values : sequence of int
        Raw registers, each ``0 .. 65535``, ``1 .. 123`` of them.

    Returns
    -------
    bytes
        ``16, address, count, byte count, data``.

    Raises
    ------
    WriteRefused
        An address range outside ``0 .. 65535``, 0 or more than 123 values, or a value that
        is not ``0 .. 65535``.
    """
    n = len(values)
    if not 1 <= n <= MAX_WRITE_REGISTERS or not 0 <= address <= ADDRESS_SPACE - n:
        msg = f"cannot write {n} registers at {address}"
        raise WriteRefused(msg)
    try:
        data = struct.pack(f">{n}H", *values)
    except struct.error as exc:
        msg = f"register values must be 0..65535: {list(values)}"
        raise WriteRefused(msg) from exc
    return struct.pack(">BHHB", FunctionCode.WRITE_MULTIPLE_REGISTERS, address, n, 2 * n) + data


def _check_exception(pdu: bytes, function: int, what: str) -> None:
    if not pdu:
        msg = f"{what}: empty answer"
        raise InvalidFrame(msg)
    if pdu[0] == function | EXCEPTION_FLAG:
        if len(pdu) != 2:
            msg = f"{what}: exception answer of {len(pdu)} bytes (expected 2)"
            raise InvalidFrame(msg)
        raise DeviceError(pdu[1], what)
    if pdu[0] != function:
        msg = f"{what}: answer has function code {pdu[0]} (expected {function})"
        raise InvalidFrame(msg)


def parse_read_response(pdu: bytes, function: int, count: int) -> list[int]:
    """The registers of a read answer, after checking it answers ``function`` for ``count``.

    Parameters
    ----------
    pdu : bytes
        The answer's PDU (after the MAC layer: no MBAP header, no address, no CRC).
    function : int
        The request's function code (3 or 4).
    count : int
        Registers asked for.

    Returns
    -------
    list of int
        ``count`` registers.

    Raises
    ------
    DeviceError
        A well-formed exception answer.
    InvalidFrame
        Anything else that is not exactly ``function, 2*count, data``.
    """
    what = f"read of {count} register(s) (function {function})"
    _check_exception(pdu, function, what)
    if len(pdu) < 2 or pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        got = pdu[1] if len(pdu) > 1 else None
        msg = f"{what}: byte count {got} and {len(pdu) - 2} data bytes (expected {2 * count})"
        raise InvalidFrame(msg)
    return list(struct.unpack(f">{count}H", pdu[2:]))


def parse_write_response(pdu: bytes, address: int, count: int) -> None:
    """Check a function-16 answer echoes ``address`` and ``count``.

    Parameters
    ----------
    pdu : bytes
        The answer's PDU (after the MAC layer).
    address : int
        First register written.
    count : int
        Registers written.

    Raises
    ------
    DeviceError
        A well-formed exception answer.
    InvalidFrame
        Anything else that is not exactly ``16, address, count``.
    """
    what = f"write of {count} register(s) at {address}"
    _check_exception(pdu, FunctionCode.WRITE_MULTIPLE_REGISTERS, what)
    if len(pdu) != 5 or struct.unpack(">HH", pdu[1:]) != (address, count):
        msg = f"{what}: device answered {pdu.hex()}"
        raise InvalidFrame(msg)


def tcp_length(header: bytes) -> int:
    """Bytes that follow the first 6 of a Modbus TCP frame (the MBAP length field).

    Parameters
    ----------
    header : bytes
        The first 6 bytes: transaction id, protocol id, length.

    Returns
    -------
    int
        The length field: unit id plus PDU [bytes], ``2 .. 254``.

    Raises
    ------
    InvalidFrame
        A protocol id other than 0, or a length outside ``2 .. 254``.
    """
    if len(header) != 6:
        msg = f"MBAP header needs 6 bytes, got {len(header)}"
        raise InvalidFrame(msg)
    _, protocol, length = struct.unpack(">HHH", header)
    if protocol != 0:
        msg = f"MBAP protocol id {protocol} (expected 0)"
        raise InvalidFrame(msg)
    if not 2 <= length <= MAX_TCP_LENGTH:
        msg = f"MBAP length {length} outside 2..{MAX_TCP_LENGTH}"
        raise InvalidFrame(msg)
    return int(length)


def rtu_frame_length(head: bytes) -> int:
    """Total length [bytes] of an RTU answer, from its first 3 bytes.

    Parameters
    ----------
    head : bytes
        At least the address, the function code and the next byte.

    Returns
    -------
    int
        5 for an exception answer, ``5 + byte count`` for a read, 8 for a write echo.

    Raises
    ------
    InvalidFrame
        A function code this client never asks for.
    """
    if len(head) < 3:
        msg = f"an RTU answer needs 3 bytes to know its length, got {len(head)}"
        raise InvalidFrame(msg)
    function = head[1]
    if function & EXCEPTION_FLAG:
        return 5
    if function in READ_FUNCTIONS:
        return 5 + head[2]
    if function in {FunctionCode.WRITE_SINGLE_REGISTER, FunctionCode.WRITE_MULTIPLE_REGISTERS}:
        return 8
    msg = f"RTU answer with function code {function}"
    raise InvalidFrame(msg)


__all__ = [
    "parse_read_response",
    "parse_write_response",
    "read_request",
    "rtu_frame_length",
    "tcp_length",
]

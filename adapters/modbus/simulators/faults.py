"""What a simulated device does with a request: injected faults and the write allow-list.

One :class:`Behaviour` per simulator, shared by its TCP and RTU servers
(:mod:`adapters.modbus.simulators.servers`):

* :class:`SimFault` ``"no_answer"`` swallows requests (the client times out), ``"slow"``
  answers ``delay_s`` late, ``"exception"`` answers every request with exception code 4
  (server device failure), ``"corrupt"`` garbles answers (TCP: byte count or write echo
  altered; RTU: a flipped bit, so a bad CRC);
* writes to registers outside the map's writable fields are answered with exception code 2
  (illegal data address), writes of coils and combined read/writes with code 1, as a real
  device does;
* the simulator's own hooks: :attr:`Behaviour.before` runs before every request is answered
  (the device's revert timers run out there), :attr:`Behaviour.on_write` after every
  accepted register write, with the addresses written (a write refreshes a revert timer).
"""

from __future__ import annotations

import enum
import struct
import time
from collections.abc import Callable
from typing import Any

from modbus_tk import modbus_rtu

from adapters.modbus.protocol import EXCEPTION_FLAG, ExceptionCode, FunctionCode


class SimFault(enum.StrEnum):
    """Failure a simulator shows on request."""

    NONE = "none"
    NO_ANSWER = "no_answer"  # requests are read and dropped: the client times out
    SLOW = "slow"  # every answer comes ``delay_s`` late
    EXCEPTION = "exception"  # every request gets exception code 4 (server device failure)
    CORRUPT = "corrupt"  # answers are garbled: TCP byte count / echo altered, RTU bad CRC


class Behaviour:
    """What a simulated device does with a request: faults and the write allow-list.

    Shared by the TCP and the RTU server of one simulator, called from their threads.

    Parameters
    ----------
    writable : frozenset of int
        Holding register addresses a client may write (the map's writable fields).
    """

    def __init__(self, writable: frozenset[int]) -> None:
        self.writable = writable
        self.fault = SimFault.NONE
        self.delay_s = 1.0
        self.before: Callable[[], object] | None = None
        """Called before a request is answered (not for dropped or malformed ones)."""
        self.on_write: Callable[[range], None] | None = None
        """Called after a register write was accepted, with the addresses written."""

    def handle(self, request: bytes, query: Any, library: Callable[[bytes], bytes]) -> bytes:  # noqa: ANN401
        """The answer to ``request`` (``b""`` for none).

        Parameters
        ----------
        request : bytes
            The request frame as received (MBAP header or RTU address and CRC included).
        query : modbus_tk Query
            The server's query object, which parses the request and builds the answer.
        library : callable
            ``modbus_tk``'s own handling of the request (reads and writes the databank).

        Returns
        -------
        bytes
            The answer frame, ``b""`` for none.
        """
        fault = self.fault
        if fault is SimFault.NO_ANSWER:
            return b""
        if fault is SimFault.SLOW:
            time.sleep(self.delay_s)
        try:
            _, pdu = query.parse_request(request)
            function = pdu[0]
        except Exception:  # malformed (bad CRC, short): let the library answer as it does
            return library(request)
        if fault is SimFault.EXCEPTION:
            return bytes(
                query.build_response(
                    bytes([function | EXCEPTION_FLAG, ExceptionCode.SERVER_DEVICE_FAILURE])
                )
            )
        if self.before is not None:
            self.before()
        refusal = self._refuse_write(function, pdu)
        if refusal:
            return bytes(query.build_response(bytes([function | EXCEPTION_FLAG, refusal])))
        response = library(request)
        written = _written(function, pdu)
        if written is not None and self.on_write is not None and _accepted(response, query):
            self.on_write(written)
        if fault is SimFault.CORRUPT and response:
            response = corrupt(response, rtu=isinstance(query, modbus_rtu.RtuQuery))
        return response

    def _refuse_write(self, function: int, pdu: bytes) -> int:
        if function in {
            FunctionCode.WRITE_SINGLE_COIL,
            FunctionCode.WRITE_MULTIPLE_COILS,
            FunctionCode.MASK_WRITE_REGISTER,
            FunctionCode.READ_WRITE_MULTIPLE_REGISTERS,
        }:
            return ExceptionCode.ILLEGAL_FUNCTION
        addresses = _written(function, pdu)
        if addresses is None:
            return 0
        return 0 if set(addresses) <= self.writable else ExceptionCode.ILLEGAL_DATA_ADDRESS


def _written(function: int, pdu: bytes) -> range | None:
    """The holding registers a write request addresses (``None`` for other requests)."""
    try:
        if function == FunctionCode.WRITE_SINGLE_REGISTER:
            (address,) = struct.unpack(">H", pdu[1:3])
            return range(address, address + 1)
        if function == FunctionCode.WRITE_MULTIPLE_REGISTERS:
            address, count = struct.unpack(">HH", pdu[1:5])
            return range(address, address + count)
    except struct.error:  # a short request: the library answers it with an exception
        return None
    return None


def _accepted(response: bytes, query: Any) -> bool:  # noqa: ANN401 - a modbus_tk Query
    """Whether ``response`` is a normal answer (not an exception response, not silence)."""
    at = 1 if isinstance(query, modbus_rtu.RtuQuery) else 7  # RTU: unit id; TCP: MBAP header
    return len(response) > at and not response[at] & EXCEPTION_FLAG


def corrupt(response: bytes, *, rtu: bool) -> bytes:
    """Garble an answer the way a noisy line or a broken gateway does.

    Parameters
    ----------
    response : bytes
        The answer frame.
    rtu : bool
        An RTU frame (flip a data bit: bad CRC) rather than TCP (alter the byte count or echo).

    Returns
    -------
    bytes
        The garbled frame.
    """
    frame = bytearray(response)
    if rtu:
        frame[-3] ^= 0x01  # a flipped data bit: the CRC no longer matches
    elif len(frame) > 8:
        frame[8] ^= 0x01  # byte count (read) or address echo (write) no longer fits
    return bytes(frame)


__all__ = ["Behaviour", "SimFault", "corrupt"]

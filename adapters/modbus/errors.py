"""Exceptions of the Modbus adapter.

Every failure of a device, a line or a setting that leaves :mod:`adapters.modbus` is an
:class:`AdapterError`. ``modbus_tk``, socket, serial and ``struct`` exceptions are mapped in
:mod:`adapters.modbus.client`, the one module that calls the library (``raise ... from
exc``), so callers never import ``modbus_tk`` to catch errors. Any other exception is a bug
and is not mapped (so that the fuzz tests see it); see the last paragraph for where it stops.

Tree::

    AdapterError
     ├── DeviceUnavailable (ConnectionError)   no usable answer after all retries: refused,
     │    │                                    timed out, reset, or a garbled frame
     │    ├── InvalidFrame                     the last answer was not a well-formed reply to
     │    │                                    the request (wrong function code, byte count,
     │    │                                    length, unit id or CRC): nothing was taken
     │    ├── AnswerTimeout (TimeoutError)     one attempt on a serial line got no answer in
     │    │                                    time (retried by the client)
     │    └── ConnectionClosed                 the device closed the TCP connection instead
     │         (ConnectionResetError)          of answering (retried by the client)
     ├── DeviceError                           the device answered with a Modbus exception
     │                                         response; ``code`` says which
     ├── WriteRefused (ValueError)             a write we will not send: not in the register
     │                                         map's allow-list, or out of range
     ├── RegisterMapError (ValueError)         a register map that cannot be used; the message
     │                                         names the map and the field
     ├── SunSpecError                          no SunSpec marker, a broken model chain, or a
     │                                         model that does not fit its definition
     ├── CodecError (ValueError)               registers that do not decode to the declared
     │                                         type, or a value that does not fit it
     ├── InvalidArgument (ValueError)          a setting or request this adapter cannot use:
     │                                         a read outside the protocol's limits, a
     │                                         timeout, unit id, backoff, worker count, or a
     │                                         simulator's rating, profile or clock
     └── SimulatorNotStarted (TimeoutError)    a simulator's server did not come up in time

:class:`~adapters.modbus.reading.DeviceReader` and
:class:`~adapters.modbus.writing.DeviceWriter` turn the device errors into values
(``quality=MISSING``, ``WriteResult(ok=False)``): a failed device never stops the cycle.
They, and :class:`~adapters.modbus.polling.Poller` for a reader that raises, are also the
boundary for bugs: an unexpected exception becomes a value whose reason names its type and
message (``"unexpected ZeroDivisionError: ..."``), logged at ERROR with its traceback.
"""

from __future__ import annotations

from adapters.errors import AdapterError
from adapters.modbus.protocol import EXCEPTION_NAMES


class DeviceUnavailable(AdapterError, ConnectionError):
    """The device gave no usable answer after all retries (refused, timeout, reset, garbage)."""


class InvalidFrame(DeviceUnavailable):
    """An answer that is not a well-formed reply to the request; no value was taken from it."""


class AnswerTimeout(DeviceUnavailable, TimeoutError):
    """One attempt got no answer within the timeout (the client retries, then reports)."""


class ConnectionClosed(DeviceUnavailable, ConnectionResetError):
    """The device closed the connection instead of answering (the client retries)."""


class DeviceError(AdapterError):
    """The device answered with a Modbus exception response.

    Parameters
    ----------
    code : int
        The Modbus exception code (2 = illegal data address, 4 = server device failure ...;
        :class:`~adapters.modbus.protocol.ExceptionCode`).
    message : str
        What was asked, for the log.
    """

    def __init__(self, code: int, message: str = "") -> None:
        self.code = int(code)
        name = EXCEPTION_NAMES.get(self.code, "unknown exception")
        prefix = f"{message}: " if message else ""
        super().__init__(f"{prefix}Modbus exception code {self.code} ({name})")


class WriteRefused(AdapterError, ValueError):
    """A write that is not sent: outside the allow-list of writable fields, or out of range."""


class RegisterMapError(AdapterError, ValueError):
    """A register map that cannot be used; the message names the map and the field."""


class SunSpecError(AdapterError):
    """No ``SunS`` marker, a model chain that makes no sense, or a model unlike its definition."""


class CodecError(AdapterError, ValueError):
    """Registers that do not decode to the declared type, or a value that does not fit it."""


class InvalidArgument(AdapterError, ValueError):
    """A setting or request this adapter cannot use; nothing was sent or started."""


class SimulatorNotStarted(AdapterError, TimeoutError):
    """A simulator's server did not start serving within its start timeout."""


__all__ = [
    "AdapterError",
    "AnswerTimeout",
    "CodecError",
    "ConnectionClosed",
    "DeviceError",
    "DeviceUnavailable",
    "InvalidArgument",
    "InvalidFrame",
    "RegisterMapError",
    "SimulatorNotStarted",
    "SunSpecError",
    "WriteRefused",
]

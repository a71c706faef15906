"""The register transport: the :class:`RegisterClient` Protocol and its Modbus TCP/RTU master.

Nothing here decodes values: a client moves raw 16-bit registers (the codec is
:mod:`adapters.modbus.codec`). :class:`ModbusTkClient` is the one place that drives a
``modbus_tk`` master (TCP, or RTU on a serial line through :class:`RtuLine`). It uses the
library for the connection and the MAC layer (MBAP header or address + CRC), frames every
answer by its declared length (:mod:`adapters.modbus.frames`), checks the PDU strictly, and
maps the errors of the wire and of the library into :mod:`adapters.modbus.errors`:

==========================================================  ================================
raised by modbus_tk / socket / serial / frames              raised here
==========================================================  ================================
exception answer (``fc | 0x80, code``), ``ModbusError``     :class:`DeviceError` (``code``)
wrong transaction/unit id, function code, byte count,       :class:`InvalidFrame` after
length or CRC; a cut answer (``InvalidFrame``,              ``retries`` more attempts
``ModbusInvalidResponseError``, ``ModbusInvalidMbapError``,
``struct.error``)
``OSError`` (refused, reset, timeout, ``SerialException``)  :class:`DeviceUnavailable` after
and the other ``modbus_tk.exceptions`` of a master          ``retries`` more attempts
anything else (``ZeroDivisionError``, ``KeyError`` ...)     escapes unchanged, after the
                                                            connection is dropped
==========================================================  ================================

Only the failures in the table are the device's or the line's: anything else is a bug (ours
or a library's) and is not disguised as a bad frame, so that the fuzz tests
(``tests/adapters/modbus/test_modbus_fuzz.py``) see it. The boundary that keeps the cycle
going is one level up: :class:`~adapters.modbus.reading.DeviceReader`,
:class:`~adapters.modbus.polling.Poller` and :class:`~adapters.modbus.writing.DeviceWriter`
record such a failure (``MISSING`` / ``ok=False``, the exception's type and message in the
reason) and log it at ERROR with its traceback.

The in-memory twin for tests is :class:`adapters.modbus.fake.FakeRegisterClient`.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import serial
from modbus_tk import exceptions as tk_errors
from modbus_tk import modbus_rtu, modbus_tcp

from adapters.modbus import frames
from adapters.modbus.codec import Table
from adapters.modbus.errors import (
    AnswerTimeout,
    ConnectionClosed,
    DeviceError,
    DeviceUnavailable,
    InvalidArgument,
    InvalidFrame,
    WriteRefused,
)
from adapters.modbus.protocol import (
    ADDRESS_SPACE,
    MAX_READ_REGISTERS,
    MAX_WRITE_REGISTERS,
    ExceptionCode,
    FunctionCode,
)

LOGGER = logging.getLogger(__name__)

_READ_FUNCTION = {
    Table.HOLDING: FunctionCode.READ_HOLDING_REGISTERS,
    Table.INPUT: FunctionCode.READ_INPUT_REGISTERS,
}
# The device asks to come back later: retried like a transport failure.
_RETRIED_CODES = frozenset({ExceptionCode.ACKNOWLEDGE, ExceptionCode.SERVER_DEVICE_BUSY})
_T = TypeVar("_T")

# The exceptions of modbus_tk's master path (the classes of ``modbus_tk.exceptions`` that are
# not about a server's data blocks, and the TCP header check), raised for what came off the
# wire or for a request the library will not build. ModbusError (an exception answer, which
# the library raises only from ``execute``, not used here) is mapped to DeviceError apart.
_LIBRARY_ERRORS: tuple[type[Exception], ...] = (
    tk_errors.ModbusFunctionNotSupportedError,
    tk_errors.InvalidArgumentError,
    tk_errors.ModbusInvalidResponseError,
    tk_errors.ModbusInvalidRequestError,
    modbus_tcp.ModbusInvalidMbapError,
)
# The failures of one exchange that are the device's or the line's: retried, then reported.
# DeviceUnavailable (InvalidFrame, AnswerTimeout, ConnectionClosed: raised by the framing
# below) is an OSError like the socket's; pyserial's SerialException is one too, named for
# clarity. struct.error: a frame too short for a field the library unpacks.
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    serial.SerialException,
    struct.error,
    *_LIBRARY_ERRORS,
)


@runtime_checkable
class RegisterClient(Protocol):
    """What a device reader or writer needs from a transport: raw 16-bit registers.

    Implementations: :class:`ModbusTkClient` (Modbus TCP or RTU) and
    :class:`~adapters.modbus.fake.FakeRegisterClient` (in memory). Device and line trouble
    is one of the :mod:`adapters.modbus.errors`; any other exception is a bug and escapes
    (the reader, writer and poller record it and go on).
    """

    def read_registers(self, table: str, address: int, count: int) -> list[int]:
        """Read ``count`` registers of ``table`` (``"holding"``/``"input"``) from ``address``.

        Parameters
        ----------
        table : str
            ``"holding"`` or ``"input"``.
        address : int
            First register, 0-based.
        count : int
            Number of registers, ``1 .. 125``.

        Returns
        -------
        list of int
            Raw registers, each ``0 .. 65535``.

        Raises
        ------
        DeviceUnavailable
            No usable answer.
        DeviceError
            The device answered with a Modbus exception.
        """
        ...

    def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers from ``address`` (Modbus function 16).

        Parameters
        ----------
        address : int
            First register, 0-based.
        values : sequence of int
            Raw registers, each ``0 .. 65535``, at most 123.

        Raises
        ------
        DeviceUnavailable
            No usable answer.
        DeviceError
            The device answered with a Modbus exception.
        WriteRefused
            Values that are not registers; nothing was sent.
        """
        ...

    def close(self) -> None:
        """Release the connection; the next request reconnects."""
        ...


def check_request(table: str, address: int, count: int) -> Table:
    """Validate a read request; return its table.

    Parameters
    ----------
    table : str
        ``"holding"`` or ``"input"``.
    address : int
        First register, 0-based.
    count : int
        Registers asked for.

    Returns
    -------
    Table
        The table.

    Raises
    ------
    ValueError
        An unknown table.
    InvalidArgument
        An address range outside ``0 .. 65535`` or above 125 registers.
    """
    tbl = Table(table)
    if not 1 <= count <= MAX_READ_REGISTERS:
        msg = f"a read asks for 1..{MAX_READ_REGISTERS} registers, got {count}"
        raise InvalidArgument(msg)
    if address < 0 or address + count > ADDRESS_SPACE:
        msg = f"registers {address}..{address + count - 1} are outside 0..65535"
        raise InvalidArgument(msg)
    return tbl


def check_write(address: int, values: Sequence[int]) -> list[int]:
    """Validate a write request; return the values as a list.

    Parameters
    ----------
    address : int
        First register, 0-based.
    values : sequence of int
        Raw registers.

    Returns
    -------
    list of int
        ``values``, checked.

    Raises
    ------
    WriteRefused
        No values, more than 123, values that are not ``0 .. 65535``, or an address range
        outside ``0 .. 65535``.
    """
    regs = list(values)
    if not 1 <= len(regs) <= MAX_WRITE_REGISTERS:
        msg = f"a write carries 1..{MAX_WRITE_REGISTERS} registers, got {len(regs)}"
        raise WriteRefused(msg)
    if address < 0 or address + len(regs) > ADDRESS_SPACE:
        msg = f"registers {address}..{address + len(regs) - 1} are outside 0..65535"
        raise WriteRefused(msg)
    for reg in regs:
        if isinstance(reg, bool) or not isinstance(reg, int) or not 0 <= reg <= 0xFFFF:
            msg = f"a register is an integer 0..65535, got {reg!r}"
            raise WriteRefused(msg)
    return regs


# ---------------------------------------------------------------------------- masters


class _TcpMaster(modbus_tcp.TcpMaster):  # type: ignore[misc] # modbus_tk has no types
    """modbus_tk's TCP master with a closed socket after a failed connect and framed reads.

    The library keeps the half-made socket of a failed ``connect`` (one leaked socket per
    attempt on a dead device), and reads answers one byte per ``recv`` call up to whatever
    length the answer claims. Here an answer is read as its 6-byte header, then exactly the
    length it declares (2..254 bytes, else :class:`InvalidFrame` at once).
    """

    _sock: Any

    def _do_open(self) -> None:
        try:
            super()._do_open()
        except BaseException:
            self._do_close()
            raise

    def _read_exact(self, n: int, got: bytes = b"") -> bytes:
        buf = got
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                if not buf:
                    msg = "the device closed the connection"
                    raise ConnectionClosed(msg)
                msg = f"answer cut after {len(buf)} bytes"
                raise InvalidFrame(msg)
            buf += chunk
        return buf

    def _recv(self, expected_length: int = -1) -> bytes:
        head = self._read_exact(6)
        length = frames.tcp_length(head)
        return head + self._read_exact(6 + length, head)[6:]


class _RtuMaster(modbus_rtu.RtuMaster):  # type: ignore[misc] # modbus_tk has no types
    """modbus_tk's RTU master reading an answer by its declared length.

    The library reads "expected length" bytes, which is the length of a *normal* answer: an
    exception answer (5 bytes) or a cut one then costs a whole timeout, and a pause between
    characters longer than 1.5 character times (common on virtual and USB serial ports) cuts
    a frame. Here the first 3 bytes tell the length (:func:`frames.rtu_frame_length`), and
    each read waits up to the timeout.
    """

    _serial: Any

    def __init__(self, line: serial.Serial) -> None:
        super().__init__(line)
        self._serial.inter_byte_timeout = None

    def _recv(self, expected_length: int = -1) -> bytes:
        head = bytes(self._serial.read(3))
        if not head:
            msg = "no answer"
            raise AnswerTimeout(msg)
        if len(head) < 3:
            msg = f"answer cut after {len(head)} bytes"
            raise InvalidFrame(msg)
        total = frames.rtu_frame_length(head)
        rest = bytes(self._serial.read(total - 3))
        if len(rest) < total - 3:
            msg = f"answer cut after {3 + len(rest)} of {total} bytes"
            raise InvalidFrame(msg)
        return head + rest

    def drain(self, limit_s: float) -> None:
        """Discard what still arrives until the line is quiet (at most ``limit_s`` [s]).

        RTU has no transaction ids: a late answer to a timed-out request, read as the answer
        to the next one, would pass every check if it asked the same question of other
        registers. After a failure the line is left to fall silent first.
        """
        port = self._serial
        if not port.is_open:
            return
        saved = port.timeout
        port.timeout = max(3.5 * self._t0, 0.005)  # 3.5 characters, at least 5 ms
        deadline = time.monotonic() + limit_s
        try:
            while time.monotonic() < deadline and port.read(256):
                pass
        finally:
            port.timeout = saved


class _Link:
    """One modbus_tk master with its lock: a TCP connection, or a serial line."""

    def __init__(self, master: Any, endpoint: str, *, reopen_on_error: bool) -> None:  # noqa: ANN401
        self.master = master
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.reopen_on_error = reopen_on_error

    def exchange(self, unit_id: int, pdu: bytes) -> bytes:
        """Send one request PDU and return the answer's PDU (MAC layer checked)."""
        master = self.master
        master.open()
        query = master._make_query()
        master._send(query.build_request(pdu, unit_id))
        return bytes(query.parse_response(master._recv()))

    def recover(self, exc: BaseException, limit_s: float) -> None:
        """Make the link usable after a failed exchange.

        TCP: reconnect (the stream may be out of step). RTU: reopen the port if it failed,
        else let the line fall silent (see :meth:`_RtuMaster.drain`).
        """
        broken_port = isinstance(exc, OSError | serial.SerialException) and not isinstance(
            exc, TimeoutError
        )
        if self.reopen_on_error or broken_port:
            self.drop()
        elif isinstance(self.master, _RtuMaster):
            try:
                self.master.drain(limit_s)
            except (OSError, serial.SerialException):
                self.drop()

    def drop(self) -> None:
        """Close the connection; the next exchange reopens it."""
        # Master.close() skips a socket whose connect failed (it is not "opened"): close both.
        self.master.close()
        self.master._do_close()


class RtuLine:
    """A serial line (RS-485 or a virtual pair) shared by the RTU devices on it.

    One request at a time goes over a line, so the clients made by :meth:`client` share one
    lock: a slow device on a line delays the others on that line, never the devices on other
    lines or on TCP.

    Parameters
    ----------
    device : str or serial.Serial
        Serial device (``/dev/ttyUSB0``, or a socat pty link), or a pyserial port configured
        by the caller (RS-485 mode, a ``serial_for_url`` port); its settings are kept.
    baudrate : int
        Bits per second.
    parity : str
        ``"N"``, ``"E"`` or ``"O"``.
    bytesize, stopbits : int
        Character format (8N1 by default).
    timeout_s : float
        Time [s] allowed for each answer.

    Raises
    ------
    InvalidArgument
        A timeout that is not > 0, or serial settings pyserial rejects.
    """

    def __init__(
        self,
        device: str | serial.Serial,
        baudrate: int = 19200,
        *,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        timeout_s: float = 0.5,
    ) -> None:
        if timeout_s <= 0:
            msg = f"timeout_s must be > 0, got {timeout_s}"
            raise InvalidArgument(msg)
        if isinstance(device, str):
            port = serial.Serial()  # not opened yet: the first request opens it
            port.port = device
            try:
                port.baudrate = baudrate
                port.parity = parity
                port.bytesize = bytesize
                port.stopbits = stopbits
            except ValueError as exc:
                msg = f"serial settings for {device}: {exc}"
                raise InvalidArgument(msg) from exc
        else:
            port = device
            baudrate = int(port.baudrate)
            device = str(port.name or port.port)
        self.device = device
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        master = _RtuMaster(port)
        master.set_timeout(timeout_s)
        self._link = _Link(master, f"rtu:{device}@{baudrate}", reopen_on_error=False)

    def __repr__(self) -> str:
        return f"RtuLine({self.device!r}, {self.baudrate})"

    def client(
        self, unit_id: int = 1, *, retries: int = 2, backoff_s: float = 0.05
    ) -> ModbusTkClient:
        """A client for the device ``unit_id`` on this line (closing it keeps the line open).

        Parameters
        ----------
        unit_id : int
            Modbus unit id of the device, ``0 .. 255``.
        retries : int
            Extra attempts after a failed one, ``>= 0``.
        backoff_s : float
            First pause [s] between attempts; doubles each time.

        Returns
        -------
        ModbusTkClient
            A client sharing this line's port and lock.
        """
        return ModbusTkClient._over(
            self._link, unit_id, timeout_s=self.timeout_s, retries=retries, backoff_s=backoff_s,
            owns_link=False, host=self.device, port=0,
        )  # fmt: skip

    def close(self) -> None:
        """Close the serial port (idempotent); the next request reopens it."""
        with self._link.lock:
            self._link.drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------- the client


class ModbusTkClient:
    """Modbus master over ``modbus_tk`` with timeouts, retries and reconnects (TCP or RTU).

    Each request is tried ``1 + retries`` times. A transport failure (refused, timeout,
    reset, garbled answer) drops a TCP connection (an RTU line stays open; its input is
    flushed before the next request), waits ``backoff_s * 2**attempt`` and tries again;
    after the last attempt it raises :class:`DeviceUnavailable` (:class:`InvalidFrame` if
    the last answer was garbled). An exception response raises :class:`DeviceError` at
    once, except "busy"/"acknowledge" (codes 5, 6), which are retried. Any other exception
    is a bug, not a device fault: the connection is dropped and the exception escapes
    unchanged (see the module docstring). The worst case for
    one dead device is about ``(1 + retries) * timeout_s + backoff_s * (2**retries - 1)``
    [s].

    Requests run under a per-connection lock (per line for RTU) and never under
    ``modbus_tk``'s process-wide lock, so a dead device never holds up requests to other
    devices made from other threads.

    Parameters
    ----------
    host : str
        Device address (IP or host name).
    port : int
        TCP port, 502 for most devices.
    unit_id : int
        Modbus unit id (slave address), ``0 .. 255``.
    timeout_s : float
        Time [s] allowed for connecting and for each answer.
    retries : int
        Extra attempts after a failed one, ``>= 0``.
    backoff_s : float
        First pause [s] between attempts; doubles each time.

    Raises
    ------
    InvalidArgument
        A unit id outside ``0 .. 255``, a timeout that is not > 0, or negative retries or
        backoff.

    See Also
    --------
    ModbusTkClient.rtu : the same over a serial line.
    """

    def __init__(
        self,
        host: str,
        port: int = 502,
        unit_id: int = 1,
        timeout_s: float = 0.5,
        retries: int = 2,
        *,
        backoff_s: float = 0.05,
    ) -> None:
        _check_settings(unit_id, timeout_s, retries, backoff_s)
        master = _TcpMaster(host=host, port=port, timeout_in_sec=timeout_s)
        link = _Link(master, f"{host}:{port}", reopen_on_error=True)
        self._setup(link, unit_id, timeout_s, retries, backoff_s, owns_link=True)
        self.host = host
        self.port = port

    @classmethod
    def rtu(
        cls,
        device: str,
        unit_id: int = 1,
        *,
        baudrate: int = 19200,
        parity: str = "N",
        timeout_s: float = 0.5,
        retries: int = 2,
        backoff_s: float = 0.05,
    ) -> ModbusTkClient:
        """A Modbus RTU client on its own serial line (closing the client closes the line).

        Several devices on one RS-485 line share an :class:`RtuLine`: use
        :meth:`RtuLine.client` instead.

        Parameters
        ----------
        device : str
            Serial device (``/dev/ttyUSB0``, or a socat pty link).
        unit_id : int
            Modbus unit id, ``1 .. 247`` on a serial line.
        baudrate : int
            Bits per second.
        parity : str
            ``"N"``, ``"E"`` or ``"O"``.
        timeout_s, retries, backoff_s
            As for TCP.

        Returns
        -------
        ModbusTkClient
            The client; the serial port opens on the first request.

        Raises
        ------
        InvalidArgument
            A unit id outside ``1 .. 247``, or settings as for TCP and :class:`RtuLine`.
        """
        if not 1 <= unit_id <= 247:
            msg = f"an RTU unit id is 1..247, got {unit_id}"
            raise InvalidArgument(msg)
        _check_settings(unit_id, timeout_s, retries, backoff_s)
        line = RtuLine(device, baudrate, parity=parity, timeout_s=timeout_s)
        return cls._over(
            line._link, unit_id, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
            owns_link=True, host=device, port=0,
        )  # fmt: skip

    @classmethod
    def _over(
        cls,
        link: _Link,
        unit_id: int,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        owns_link: bool,
        host: str,
        port: int,
    ) -> ModbusTkClient:
        _check_settings(unit_id, timeout_s, retries, backoff_s)
        client = cls.__new__(cls)
        client._setup(link, unit_id, timeout_s, retries, backoff_s, owns_link=owns_link)
        client.host = host
        client.port = port
        return client

    def _setup(
        self,
        link: _Link,
        unit_id: int,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        *,
        owns_link: bool,
    ) -> None:
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._link = link
        self._owns_link = owns_link

    def __repr__(self) -> str:
        return f"ModbusTkClient({self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        """``host:port/unit`` (or ``rtu:device@baud/unit``) for messages."""
        return f"{self._link.endpoint}/{self.unit_id}"

    def read_registers(self, table: str, address: int, count: int) -> list[int]:
        """Read ``count`` registers of ``table`` from ``address`` (function 3 or 4).

        Parameters
        ----------
        table : str
            ``"holding"`` or ``"input"``.
        address : int
            First register, 0-based.
        count : int
            Number of registers, ``1 .. 125``.

        Returns
        -------
        list of int
            Raw registers, each ``0 .. 65535``.

        Raises
        ------
        DeviceUnavailable
            No usable answer after all attempts (:class:`InvalidFrame` if garbled).
        DeviceError
            The device answered with a Modbus exception.
        ValueError
            A malformed request (unknown table; :class:`InvalidArgument`: too many
            registers); nothing was sent.
        """
        tbl = check_request(table, address, count)
        function = _READ_FUNCTION[tbl]
        what = f"read {tbl.value} {address}+{count} from {self.endpoint}"
        pdu = frames.read_request(function, address, count)
        return self._transact(
            what, pdu, lambda answer: frames.parse_read_response(answer, function, count)
        )

    def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers from ``address`` (function 16).

        Parameters
        ----------
        address : int
            First register, 0-based.
        values : sequence of int
            Raw registers, each ``0 .. 65535``, at most 123.

        Raises
        ------
        DeviceUnavailable
            No usable answer after all attempts.
        DeviceError
            The device answered with a Modbus exception (e.g. 2: not writable there).
        WriteRefused
            Malformed values; nothing was sent.
        """
        regs = check_write(address, values)
        what = f"write {len(regs)} register(s) at {address} to {self.endpoint}"
        pdu = frames.write_request(address, regs)
        self._transact(
            what, pdu, lambda answer: frames.parse_write_response(answer, address, len(regs))
        )

    def close(self) -> None:
        """Close the connection (idempotent); the next request reconnects.

        A client made by :meth:`RtuLine.client` leaves the shared line open.
        """
        if self._owns_link:
            with self._link.lock:
                self._link.drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _transact(self, what: str, pdu: bytes, parse: Callable[[bytes], _T]) -> _T:
        last: BaseException | None = None
        attempts = 1 + self.retries
        link = self._link
        for attempt in range(attempts):
            if attempt:  # outside the lock: a shared line serves others meanwhile
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            with link.lock:
                try:
                    return parse(link.exchange(self.unit_id, pdu))
                except DeviceError as exc:
                    last = DeviceError(exc.code, what)  # say which device and request
                    if exc.code not in _RETRIED_CODES:
                        raise last from None
                except tk_errors.ModbusError as exc:  # not raised on our path; mapped anyway
                    last = DeviceError(exc.get_exception_code(), what)
                    if last.code not in _RETRIED_CODES:
                        raise last from exc
                except _TRANSPORT_ERRORS as exc:  # socket, timeout, serial, garbled or cut frame
                    last = exc
                    LOGGER.debug("%s: attempt %d/%d failed: %r", what, attempt + 1, attempts, exc)
                    link.recover(exc, self.timeout_s)
                except BaseException:  # a bug (or an interrupt): not the device's fault
                    # It escapes as it is (the reader/writer/poller are the boundary); drop the
                    # connection first so a half-read answer is not taken for the next one's.
                    with contextlib.suppress(OSError):  # never in place of the bug
                        link.drop()
                    raise
        if isinstance(last, DeviceError):
            raise last
        msg = f"{what}: no answer after {attempts} attempt(s): {_describe(last)}"
        if isinstance(last, InvalidFrame) or _is_mac_error(last):
            raise InvalidFrame(msg) from last
        raise DeviceUnavailable(msg) from last


def _check_settings(unit_id: int, timeout_s: float, retries: int, backoff_s: float) -> None:
    if not 0 <= unit_id <= 255:
        msg = f"unit_id must be 0..255, got {unit_id}"
        raise InvalidArgument(msg)
    if timeout_s <= 0 or retries < 0 or backoff_s < 0:
        msg = (
            "need timeout_s > 0, retries >= 0, backoff_s >= 0; "
            f"got {timeout_s}, {retries}, {backoff_s}"
        )
        raise InvalidArgument(msg)


def _is_mac_error(exc: BaseException | None) -> bool:
    """A modbus_tk MBAP/CRC/address complaint or a short field: a garbled frame."""
    return isinstance(
        exc, modbus_tcp.ModbusInvalidMbapError | tk_errors.ModbusInvalidResponseError | struct.error
    )


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


__all__ = ["ModbusTkClient", "RegisterClient", "RtuLine", "check_request", "check_write"]

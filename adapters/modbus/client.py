"""The register transport: the :class:`RegisterClient` Protocol and its Modbus TCP master.

Nothing here decodes values: a client moves raw 16-bit registers (the codec is
:mod:`adapters.modbus.codec`). :class:`ModbusTkClient` is the one place that calls
``modbus_tk``'s master, and it wraps every library or socket exception into
:mod:`adapters.modbus.errors`:

===================================================  =====================================
raised by modbus_tk / socket                         raised here
===================================================  =====================================
``ModbusError`` (exception response)                 :class:`DeviceError` (with ``code``)
``OSError`` (refused, reset, timeout), short or      :class:`DeviceUnavailable`, after
garbled frames, mismatched transaction ids           ``retries`` more attempts
===================================================  =====================================

The in-memory twin for tests is :class:`adapters.modbus.fake.FakeRegisterClient`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from modbus_tk import defines as mb
from modbus_tk import modbus_tcp
from modbus_tk.exceptions import ModbusError

from adapters.modbus.codec import Table
from adapters.modbus.errors import DeviceError, DeviceUnavailable, WriteRefused
from adapters.modbus.registermaps import MAX_READ_REGISTERS, MAX_WRITE_REGISTERS

LOGGER = logging.getLogger(__name__)

_READ_FUNCTION = {Table.HOLDING: mb.READ_HOLDING_REGISTERS, Table.INPUT: mb.READ_INPUT_REGISTERS}
_RETRIED_CODES = frozenset({5, 6})  # acknowledge, server busy: the device asks to come back


@runtime_checkable
class RegisterClient(Protocol):
    """What a device reader or writer needs from a transport: raw 16-bit registers.

    Implementations: :class:`ModbusTkClient` (Modbus TCP) and
    :class:`~adapters.modbus.fake.FakeRegisterClient` (in memory).
    """

    def read_registers(self, table: str, address: int, count: int) -> list[int]:
        """Read ``count`` registers of ``table`` (``"holding"``/``"input"``) from ``address``.

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

    Raises
    ------
    ValueError
        An unknown table, or an address range outside ``0 .. 65535`` or above 125 registers.
    """
    tbl = Table(table)
    if not 1 <= count <= MAX_READ_REGISTERS:
        msg = f"a read asks for 1..{MAX_READ_REGISTERS} registers, got {count}"
        raise ValueError(msg)
    if address < 0 or address + count > 0x10000:
        msg = f"registers {address}..{address + count - 1} are outside 0..65535"
        raise ValueError(msg)
    return tbl


def check_write(address: int, values: Sequence[int]) -> list[int]:
    """Validate a write request; return the values as a list.

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
    if address < 0 or address + len(regs) > 0x10000:
        msg = f"registers {address}..{address + len(regs) - 1} are outside 0..65535"
        raise WriteRefused(msg)
    for reg in regs:
        if isinstance(reg, bool) or not isinstance(reg, int) or not 0 <= reg <= 0xFFFF:
            msg = f"a register is an integer 0..65535, got {reg!r}"
            raise WriteRefused(msg)
    return regs


class _TcpMaster(modbus_tcp.TcpMaster):  # type: ignore[misc] # modbus_tk has no types
    """modbus_tk's TCP master, closing its socket when a connect fails.

    The library keeps the half-made socket of a failed ``connect`` and only closes it on the
    next open; without this a dead device leaks one socket per failed attempt.
    """

    def _do_open(self) -> None:
        try:
            super()._do_open()
        except BaseException:
            self._do_close()
            raise


class ModbusTkClient:
    """Modbus TCP master over ``modbus_tk`` with timeouts, retries and reconnects.

    Each request is tried ``1 + retries`` times. A transport failure (refused, timeout,
    reset, garbled answer) drops the connection, waits ``backoff_s * 2**attempt`` and
    reconnects; after the last attempt it raises :class:`DeviceUnavailable`. An exception
    response raises :class:`DeviceError` at once, except "busy"/"acknowledge" (codes 5, 6),
    which are retried. The worst case for one dead device is therefore about
    ``(1 + retries) * timeout_s + backoff_s * (2**retries - 1)`` [s].

    Requests run under a per-client lock and bypass ``modbus_tk``'s process-wide lock, so a
    dead device never holds up requests to other devices made from other threads.

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
        if not 0 <= unit_id <= 255:
            msg = f"unit_id must be 0..255, got {unit_id}"
            raise ValueError(msg)
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            msg = f"need timeout_s > 0, retries >= 0, backoff_s >= 0; got {timeout_s}, {retries}"
            raise ValueError(msg)
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._lock = threading.Lock()
        self._master = _TcpMaster(host=host, port=port, timeout_in_sec=timeout_s)

    def __repr__(self) -> str:
        return f"ModbusTkClient({self.host!r}, {self.port}, unit_id={self.unit_id})"

    @property
    def endpoint(self) -> str:
        """``host:port/unit`` for messages."""
        return f"{self.host}:{self.port}/{self.unit_id}"

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
            No usable answer after all attempts.
        DeviceError
            The device answered with a Modbus exception.
        ValueError
            A malformed request (unknown table, too many registers); nothing was sent.
        """
        tbl = check_request(table, address, count)
        what = f"read {tbl.value} {address}+{count} from {self.endpoint}"
        result = self._execute(what, _READ_FUNCTION[tbl], address, quantity_of_x=count)
        if len(result) != count:
            msg = f"{what}: answer has {len(result)} registers"
            raise DeviceUnavailable(msg)
        return [int(v) for v in result]

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
        answer = self._execute(what, mb.WRITE_MULTIPLE_REGISTERS, address, output_value=regs)
        if tuple(answer) != (address, len(regs)):
            msg = f"{what}: device echoed {tuple(answer)}"
            raise DeviceUnavailable(msg)

    def close(self) -> None:
        """Close the connection (idempotent); the next request reconnects."""
        with self._lock:
            self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _drop(self) -> None:
        # Master.close() skips a socket whose connect failed (it is not "opened"): close both.
        self._master.close()
        self._master._do_close()  # the wrapped library's own cleanup

    def _execute(self, what: str, function: int, address: int, **kwargs: object) -> tuple[int, ...]:
        last: BaseException | None = None
        attempts = 1 + self.retries
        with self._lock:
            for attempt in range(attempts):
                if attempt:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                try:
                    # threadsafe=False: modbus_tk's own lock is one lock for every master in
                    # the process; ours is per client.
                    result = self._master.execute(
                        self.unit_id, function, address, threadsafe=False, **kwargs
                    )
                except ModbusError as exc:
                    code = int(exc.get_exception_code())
                    last = DeviceError(code, what)
                    if code not in _RETRIED_CODES:
                        raise last from exc
                except Exception as exc:  # socket, timeout, short or garbled frame
                    last = exc
                    LOGGER.debug("%s: attempt %d/%d failed: %r", what, attempt + 1, attempts, exc)
                    self._drop()
                else:
                    return tuple(result)
        if isinstance(last, DeviceError):
            raise last
        reason = _describe(last)
        msg = f"{what}: no answer after {attempts} attempt(s): {reason}"
        raise DeviceUnavailable(msg) from last


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


__all__ = ["ModbusTkClient", "RegisterClient", "check_request", "check_write"]

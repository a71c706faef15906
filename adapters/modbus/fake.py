"""An in-memory :class:`~adapters.modbus.client.RegisterClient` holding literal registers.

The twin of :class:`~adapters.modbus.client.ModbusTkClient` for unit tests (OpenEMS's
``DummyModbusBridge``, httpx's ``MockTransport``): drivers are tested against register
contents copied from a device manual or a dump, with no socket.

Examples
--------
>>> fake = FakeRegisterClient(holding={40084: 0x0BB8, 40085: 0xFFFF})
>>> fake.read_registers("holding", 40084, 2)
[3000, 65535]
>>> fake.set_fault("unavailable")
>>> fake.read_registers("holding", 40084, 2)
Traceback (most recent call last):
...
adapters.modbus.errors.DeviceUnavailable: fake device: unavailable (injected fault)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from adapters.modbus.client import check_request, check_write
from adapters.modbus.codec import Table
from adapters.modbus.errors import DeviceError, DeviceUnavailable, InvalidArgument
from adapters.modbus.protocol import ExceptionCode


class FakeFault(enum.StrEnum):
    """Failure a fake (or simulated) device can be told to show."""

    NONE = "none"
    UNAVAILABLE = "unavailable"  # every request raises DeviceUnavailable (like a timeout)
    EXCEPTION = "exception"  # every request raises DeviceError(4, server device failure)


@dataclass(frozen=True, slots=True)
class Request:
    """One request the fake received, for assertions."""

    op: str  # "read" or "write"
    table: Table
    address: int
    count: int
    values: tuple[int, ...] = ()


class FakeRegisterClient:
    """Registers in two dicts; reads and writes behave like a strict or lenient device.

    Parameters
    ----------
    holding, input : Mapping[int, int], optional
        Literal register contents by address, each ``0 .. 65535``.
    fill : int or None
        Value of registers not given; ``None`` makes reading them fail with exception code 2
        (illegal data address), as a strict device would.
    writable : iterable of int, optional
        Holding addresses that accept writes; ``None`` lets every holding address accept them.
        A write elsewhere fails with exception code 2.

    Raises
    ------
    InvalidArgument
        A register outside ``0 .. 65535``, or an address outside the table.
    """

    def __init__(
        self,
        holding: Mapping[int, int] | None = None,
        input: Mapping[int, int] | None = None,  # the Modbus table's name
        *,
        fill: int | None = 0,
        writable: Iterable[int] | None = None,
    ) -> None:
        self.registers: dict[Table, dict[int, int]] = {
            Table.HOLDING: dict(holding or {}),
            Table.INPUT: dict(input or {}),
        }
        for table, regs in self.registers.items():
            for address, value in regs.items():
                check_request(table, address, 1)
                if isinstance(value, bool) or not isinstance(value, int) or value >> 16:
                    msg = f"{table.value} {address}: a register is 0..65535, got {value!r}"
                    raise InvalidArgument(msg)
        self.fill = fill
        self.writable = None if writable is None else frozenset(writable)
        self.fault = FakeFault.NONE
        self.requests: list[Request] = []
        self.closed = 0

    def set_fault(self, fault: FakeFault | str) -> None:
        """Make every following request fail (``"unavailable"``, ``"exception"``) or not.

        Parameters
        ----------
        fault : FakeFault or str
            ``"none"``, ``"unavailable"`` or ``"exception"``.
        """
        self.fault = FakeFault(fault)

    def set_registers(self, table: Table | str, address: int, values: Sequence[int]) -> None:
        """Put literal registers at ``address`` (e.g. to change a measurement between reads).

        Parameters
        ----------
        table : Table or str
            ``"holding"`` or ``"input"``.
        address : int
            First register.
        values : sequence of int
            Raw registers, each ``0 .. 65535``.
        """
        regs = check_write(address, values)
        tbl = Table(table)
        for offset, value in enumerate(regs):
            self.registers[tbl][address + offset] = value

    def _check_fault(self) -> None:
        if self.fault is FakeFault.UNAVAILABLE:
            msg = "fake device: unavailable (injected fault)"
            raise DeviceUnavailable(msg)
        if self.fault is FakeFault.EXCEPTION:
            raise DeviceError(ExceptionCode.SERVER_DEVICE_FAILURE, "fake device")

    def read_registers(self, table: str, address: int, count: int) -> list[int]:
        """Return the literal registers (see :class:`~adapters.modbus.client.RegisterClient`).

        Parameters
        ----------
        table : str
            ``"holding"`` or ``"input"``.
        address : int
            First register.
        count : int
            Number of registers, ``1 .. 125``.

        Returns
        -------
        list of int
            The registers; ``fill`` where none was given.

        Raises
        ------
        DeviceUnavailable, DeviceError
            An injected fault, or (with ``fill=None``) a register that was not given.
        """
        tbl = check_request(table, address, count)
        self.requests.append(Request("read", tbl, address, count))
        self._check_fault()
        regs = self.registers[tbl]
        out = []
        for addr in range(address, address + count):
            value = regs.get(addr, self.fill)
            if value is None:
                msg = f"fake device: read {tbl.value} {addr}"
                raise DeviceError(ExceptionCode.ILLEGAL_DATA_ADDRESS, msg)
            out.append(value)
        return out

    def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Store holding registers (see :class:`~adapters.modbus.client.RegisterClient`).

        Parameters
        ----------
        address : int
            First register.
        values : sequence of int
            Raw registers, each ``0 .. 65535``, at most 123.

        Raises
        ------
        DeviceUnavailable, DeviceError
            An injected fault, or an address outside ``writable``.
        WriteRefused
            Values that are not registers.
        """
        regs = check_write(address, values)
        self.requests.append(Request("write", Table.HOLDING, address, len(regs), tuple(regs)))
        self._check_fault()
        addresses = range(address, address + len(regs))
        if self.writable is not None and not set(addresses) <= self.writable:
            msg = f"fake device: write at {address}"
            raise DeviceError(ExceptionCode.ILLEGAL_DATA_ADDRESS, msg)
        for addr, value in zip(addresses, regs, strict=True):
            self.registers[Table.HOLDING][addr] = value

    def close(self) -> None:
        """Count the close; the fake has nothing to release."""
        self.closed += 1

    @property
    def writes(self) -> list[Request]:
        """The write requests received, oldest first."""
        return [r for r in self.requests if r.op == "write"]


__all__ = ["FakeFault", "FakeRegisterClient", "Request"]

"""Several simulated devices on one serial line: an RS-485 bus, each device at its unit id.

:class:`RtuBus` serves one serial device (one end of a socat pty pair, or a real port) for
several :class:`~adapters.modbus.simulators.base.DeviceSimulator` s. A request goes to the
simulator whose unit id it names (:meth:`DeviceSimulator.answer_rtu`: its registers, faults
and write allow-list); a request for a unit nobody has, or a broadcast, gets no answer, as on
a real bus. The simulators need not be started themselves: the bus serves them (started,
they also serve TCP on their own port).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self

import serial
from modbus_tk.modbus import Databank

from adapters.modbus.errors import InvalidArgument, SimulatorNotStarted
from adapters.modbus.simulators.base import START_TIMEOUT_S, DeviceSimulator
from adapters.modbus.simulators.faults import Behaviour
from adapters.modbus.simulators.servers import SimRtuServer


class _BusServer(SimRtuServer):
    """An RTU server that hands each request to the simulator of its unit id."""

    def __init__(self, port: serial.Serial, units: dict[int, DeviceSimulator], name: str) -> None:
        super().__init__(port, Databank(), Behaviour(frozenset()), name)
        self.units = units

    def _handle(self, request: bytes) -> bytes:
        sim = self.units.get(request[0]) if request else None
        return b"" if sim is None else sim.answer_rtu(request)


class RtuBus:
    """Simulators sharing one serial line, each answering its own unit id.

    Parameters
    ----------
    device : str
        The serial device the bus serves (one end of a socat pty pair, or a real port).
    simulators : sequence of DeviceSimulator
        The devices on the line, each with its own unit id.
    baudrate : int
        Serial speed [bit/s].

    Raises
    ------
    InvalidArgument
        No simulators, or two with the same unit id.
    """

    def __init__(
        self, device: str, simulators: Sequence[DeviceSimulator], *, baudrate: int = 19200
    ) -> None:
        units: dict[int, DeviceSimulator] = {}
        for sim in simulators:
            if sim.unit_id in units:
                msg = f"two simulators at unit id {sim.unit_id} on {device}"
                raise InvalidArgument(msg)
            units[sim.unit_id] = sim
        if not units:
            msg = f"a bus on {device} needs at least one simulator"
            raise InvalidArgument(msg)
        self.device = device
        self.baudrate = baudrate
        self.simulators = tuple(simulators)
        self._units = units
        self._server: _BusServer | None = None

    def __repr__(self) -> str:
        units = ", ".join(str(u) for u in sorted(self._units))
        return f"RtuBus({self.device!r}, units {units})"

    @property
    def running(self) -> bool:
        """Whether the bus is serving."""
        return self._server is not None and self._server._thread.is_alive()

    def start(self) -> None:
        """Open the serial device and serve it; return once it is open.

        Raises
        ------
        OSError
            The serial device cannot be opened.
        SimulatorNotStarted
            The server did not come up within 5 s (a :class:`TimeoutError`).
        """
        if self.running:
            return
        line = serial.Serial()
        line.port = self.device
        line.baudrate = self.baudrate
        server = _BusServer(line, self._units, f"modbus-sim-bus-{self.device}")
        self._server = server
        server.start()
        if not server.ready.wait(START_TIMEOUT_S):
            self.stop()
            msg = f"RTU bus on {self.device} did not start"
            raise SimulatorNotStarted(msg)
        if server.init_error is not None:
            self.stop()
            raise server.init_error

    def stop(self) -> None:
        """Stop serving and close the serial device (idempotent)."""
        server = self._server
        if server is not None:
            server.stop_serving(START_TIMEOUT_S)
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["RtuBus"]

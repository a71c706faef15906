"""The Modbus servers of a simulator: ``modbus_tk``'s TCP and RTU servers, made dependable.

Both serve one :class:`~modbus_tk.modbus.Databank` and hand every request to the simulator's
:class:`~adapters.modbus.simulators.faults.Behaviour` first (faults, the write allow-list).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import serial
from modbus_tk import modbus_rtu, modbus_tcp
from modbus_tk.modbus import Databank

from adapters.modbus.errors import SimulatorNotStarted
from adapters.modbus.simulators.faults import Behaviour

LOGGER = logging.getLogger(__name__)


class SimTcpServer(modbus_tcp.TcpServer):  # type: ignore[misc] # modbus_tk has no types
    """modbus_tk's TCP server with a daemon thread, a ready signal, faults and write checks.

    The library's own server loop uses ``Event.isSet`` (a DeprecationWarning since Python
    3.10), skips its cleanup when the loop fails, and binds inside the thread without telling
    anyone when it listens. This loop fixes the three.
    """

    _sock: socket.socket | None
    _sockets: list[socket.socket]

    def __init__(
        self,
        host: str,
        port: int,
        databank: Databank,
        behaviour: Behaviour,
        name: str,
    ) -> None:
        self.behaviour = behaviour
        self.ready = threading.Event()
        self.init_error: BaseException | None = None
        self.bound_port = 0
        self._name = name
        super().__init__(port=port, address=host, timeout_in_sec=1, databank=databank)

    def _make_thread(self) -> None:
        name = getattr(self, "_name", "modbus-sim")
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._go = threading.Event()

    def _serve(self) -> None:
        try:
            self._do_init()
        except BaseException as exc:  # bind failed: report it to start()
            self.init_error = exc
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            self._sockets = []
            self.ready.set()
            return
        listener = self._sock
        assert listener is not None  # noqa: S101 - _do_init succeeded
        self.bound_port = int(listener.getsockname()[1])
        self.ready.set()
        try:
            while self._go.is_set():
                self._do_run()
        except Exception:
            LOGGER.exception("simulator %s: server loop failed", self._name)
        finally:
            self._do_exit()

    def _handle(self, request: bytes) -> bytes:
        return self.behaviour.handle(request, self._make_query(), self._library_handle)

    def _library_handle(self, request: bytes) -> bytes:
        response = super()._handle(request)
        return bytes(response) if response else b""  # the library answers "" for "no answer"


class SimRtuServer(modbus_rtu.RtuServer):  # type: ignore[misc] # modbus_tk has no types
    """modbus_tk's RTU server on a serial port, with a daemon thread, faults and write checks.

    The library's server waits for the first byte of a request without a timeout and
    stops by cancelling that read; here every wait is bounded (0.2 s) so the loop sees a
    stop request on its own, and the port is opened before :meth:`start` returns.
    """

    _serial: Any

    def __init__(
        self,
        port: serial.Serial,
        databank: Databank,
        behaviour: Behaviour,
        name: str,
    ) -> None:
        self.behaviour = behaviour
        self.ready = threading.Event()
        self.init_error: BaseException | None = None
        self._name = name
        super().__init__(port, databank=databank)
        self._serial.inter_byte_timeout = None

    def _make_thread(self) -> None:
        name = getattr(self, "_name", "modbus-sim-rtu")
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._go = threading.Event()

    def start(self) -> None:
        """Start the serving thread; it opens the port and sets :attr:`ready`."""
        self._block_on_first_byte = False
        self._go.set()
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._do_init()
        except BaseException as exc:  # the port cannot be opened: report it to start()
            self.init_error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            while self._go.is_set():
                self._serve_one()
        except Exception:
            LOGGER.exception("simulator %s: serial loop failed", self._name)
        finally:
            self.close()

    def _serve_one(self) -> None:
        port = self._serial
        port.timeout = 0.2
        request = bytes(port.read(1))
        if not request:
            return
        # The rest of the frame: read until the line is quiet for 3.5 characters (at least
        # 2 ms, as a pty forwards in bursts).
        port.timeout = max(self.get_timeout(), 0.002)
        while chunk := bytes(port.read(256)):
            request += chunk
        response = self._handle(request)
        if response and self._go.is_set():
            if port.in_waiting:  # the master gave up and asked again: answer that instead
                return
            port.write(response)
            port.flush()

    def stop_serving(self, timeout_s: float) -> None:
        """Stop the serving thread and wait up to ``timeout_s`` [s] for it to close the port.

        Parameters
        ----------
        timeout_s : float
            Longest wait [s].
        """
        self._go.clear()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _handle(self, request: bytes) -> bytes:
        return self.behaviour.handle(request, self._make_query(), self._library_handle)

    def _library_handle(self, request: bytes) -> bytes:
        response = super()._handle(request)
        return bytes(response) if response else b""

    def __del__(self) -> None:  # the library closes the port here; close() already did
        pass


def wait_until_accepting(host: str, port: int, deadline: float) -> None:
    """Poll-connect until the port accepts a connection.

    Parameters
    ----------
    host : str
        Address the server listens on.
    port : int
        Its TCP port.
    deadline : float
        Give up after this :func:`time.monotonic` time [s].

    Raises
    ------
    SimulatorNotStarted
        The port refused connections until ``deadline``.
    """
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.25):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                msg = f"simulator on {host}:{port} does not accept connections: {exc}"
                raise SimulatorNotStarted(msg) from exc
            time.sleep(0.005)


__all__ = ["SimRtuServer", "SimTcpServer", "wait_until_accepting"]

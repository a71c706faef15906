"""Device simulators: real Modbus servers (TCP on loopback, and RTU), driven by profiles.

Each simulator serves one unit whose registers follow a
:class:`~adapters.modbus.registermaps.RegisterMap`, the same map a
:class:`~adapters.modbus.devices.DeviceReader` uses, so no register number appears here. It
answers over Modbus TCP (a ``modbus_tk`` :class:`TcpServer`, one daemon thread) and/or Modbus
RTU on a serial device (a ``modbus_tk`` :class:`RtuServer`, e.g. on one end of a socat pty
pair), both on the same registers:

* :class:`PVInverterSim`: SunSpec inverter (``sunspec_inverter``: models 1, 103, 120, 123;
  ``sunspec_der_inverter``: 1, 701, 702, 704); produces ``min(profile(t), rating, limit)``
  where the limit is what a client wrote to WMaxLimPct and its enable.
* :class:`LoadMeterSim`: SDM630-style meter (``sdm630``) or SunSpec meter (``sunspec_meter``)
  of a load or a prosumer's net connection.
* :class:`BatterySim`: follows the written setpoint (vendor ``battery`` map, SunSpec 704 WSet,
  or SunSpec 124 rates) within its power and SoC limits; its state of charge moves.

Profiles are functions of time: :func:`constant_profile`, :func:`clear_sky_profile`, and
:func:`series_profile` for a time series (a SimBench PV or load profile scaled to watts).

Time is the caller's: :meth:`DeviceSimulator.advance` integrates the power in force from the
previous time to ``to`` into the energy counters (in steps of at most ``max_step_s``, with
the profile at each step's midpoint and the setpoints as written now), then publishes the
registers for ``to``. The demo runs it in accelerated time; tests jump by hours.

Faults (:meth:`DeviceSimulator.set_fault`), on both transports: ``"no_answer"`` swallows
requests (the client times out), ``"slow"`` answers ``delay_s`` late, ``"exception"`` answers
every request with exception code 4 (server device failure), ``"corrupt"`` garbles answers
(TCP: byte count or write echo altered; RTU: a flipped bit, so a bad CRC);
:meth:`~DeviceSimulator.stop` makes the TCP port refuse connections, and
:meth:`~DeviceSimulator.start` brings the device back on the same port. Writes to registers
outside the map's writable fields are answered with exception code 2, as a real device does.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
>>> with PVInverterSim(5000, constant_profile(4000), start_at=t0) as pv:
...     pv.advance(t0 + timedelta(hours=1))
...     round(pv.produced_wh)
4000
"""

from __future__ import annotations

import enum
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

import serial
from modbus_tk import defines as mb
from modbus_tk import modbus_rtu, modbus_tcp
from modbus_tk.modbus import Databank

from adapters.modbus import codec
from adapters.modbus.codec import Table, Value
from adapters.modbus.errors import RegisterMapError
from adapters.modbus.registermaps import (
    RegisterField,
    RegisterMap,
    Target,
    decode_field,
    encode_field,
    load_register_map,
)
from market.domain import require_utc

LOGGER = logging.getLogger(__name__)

Profile = Callable[[datetime], float]
"""Power [W] as a function of time: PV available power, or load consumption."""

_BLOCK_TYPE = {Table.HOLDING: mb.HOLDING_REGISTERS, Table.INPUT: mb.ANALOG_INPUTS}
_START_TIMEOUT_S = 5.0
_ILLEGAL_FUNCTION = 1
_ILLEGAL_DATA_ADDRESS = 2
_SERVER_DEVICE_FAILURE = 4


class SimOptions(TypedDict, total=False):
    """Keyword options every simulator takes (see :class:`DeviceSimulator`)."""

    unit_id: int | None
    host: str
    port: int | None
    rtu: str | None
    baudrate: int
    start_at: datetime | None
    max_step_s: float
    info: Mapping[str, Value] | None


class SimFault(enum.StrEnum):
    """Failure a simulator shows on request."""

    NONE = "none"
    NO_ANSWER = "no_answer"  # requests are read and dropped: the client times out
    SLOW = "slow"  # every answer comes ``delay_s`` late
    EXCEPTION = "exception"  # every request gets exception code 4 (server device failure)
    CORRUPT = "corrupt"  # answers are garbled: TCP byte count / echo altered, RTU bad CRC


# ---------------------------------------------------------------------------- profiles


def constant_profile(p_w: float) -> Profile:
    """A profile that is ``p_w`` [W] at all times."""
    return lambda _t: p_w


def clear_sky_profile(
    peak_w: float, *, sunrise_h: float = 6.0, sunset_h: float = 20.0, utc_offset_h: float = 0.0
) -> Profile:
    """A clear-sky PV profile: ``peak_w * sin(pi * (h - sunrise) / (sunset - sunrise))``.

    Parameters
    ----------
    peak_w : float
        Power at solar noon [W].
    sunrise_h, sunset_h : float
        Local clock hours [h] of sunrise and sunset.
    utc_offset_h : float
        Local time minus UTC [h].

    Returns
    -------
    Profile
        Available power [W], 0 at night.
    """
    if not sunrise_h < sunset_h:
        msg = f"need sunrise_h < sunset_h, got {sunrise_h}, {sunset_h}"
        raise ValueError(msg)

    def profile(t: datetime) -> float:
        t = require_utc(t)
        hour = (t.hour + t.minute / 60 + t.second / 3600 + utc_offset_h) % 24
        if not sunrise_h < hour < sunset_h:
            return 0.0
        return peak_w * math.sin(math.pi * (hour - sunrise_h) / (sunset_h - sunrise_h))

    return profile


def series_profile(start: datetime, step_s: float, values_w: Sequence[float]) -> Profile:
    """A profile from a time series (e.g. a SimBench PV or load profile, scaled to watts).

    The series is piecewise linear between samples ``start + i * step_s``, held constant
    before the first and after the last, and repeats every ``len(values_w) * step_s``
    seconds (a yearly profile serves any year).

    Parameters
    ----------
    start : datetime
        Time of the first sample (timezone-aware).
    step_s : float
        Spacing of the samples [s], > 0.
    values_w : sequence of float
        Power [W] at each sample.

    Returns
    -------
    Profile
        Power [W] over time.
    """
    start = require_utc(start, "start")
    values = [float(v) for v in values_w]
    if step_s <= 0 or not values:
        msg = f"need step_s > 0 and at least one value, got {step_s}, {len(values)} values"
        raise ValueError(msg)
    period = len(values) * step_s

    def profile(t: datetime) -> float:
        x = ((require_utc(t) - start).total_seconds() % period) / step_s
        i = int(x)
        nxt = values[(i + 1) % len(values)]
        return values[i] + (nxt - values[i]) * (x - i)

    return profile


# ---------------------------------------------------------------------------- servers


class _Behaviour:
    """What a simulated device does with a request: faults and the write allow-list.

    Shared by the TCP and the RTU server of one simulator, called from their threads.
    """

    def __init__(self, writable: frozenset[int]) -> None:
        self.writable = writable
        self.fault = SimFault.NONE
        self.delay_s = 1.0

    def handle(self, request: bytes, query: Any, library: Callable[[bytes], bytes]) -> bytes:  # noqa: ANN401
        """The answer to ``request`` (``b""`` for none)."""
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
            return bytes(query.build_response(bytes([function | 0x80, _SERVER_DEVICE_FAILURE])))
        refusal = self._refuse_write(function, pdu)
        if refusal:
            return bytes(query.build_response(bytes([function | 0x80, refusal])))
        response = library(request)
        if fault is SimFault.CORRUPT and response:
            response = _corrupt(response, rtu=isinstance(query, modbus_rtu.RtuQuery))
        return response

    def _refuse_write(self, function: int, pdu: bytes) -> int:
        if function == mb.WRITE_SINGLE_REGISTER:
            (address,) = struct.unpack(">H", pdu[1:3])
            addresses = range(address, address + 1)
        elif function == mb.WRITE_MULTIPLE_REGISTERS:
            address, count = struct.unpack(">HH", pdu[1:5])
            addresses = range(address, address + count)
        elif function in {
            mb.WRITE_SINGLE_COIL,
            mb.WRITE_MULTIPLE_COILS,
            mb.MASK_WRITE_REGISTER,
            mb.READ_WRITE_MULTIPLE_REGISTERS,
        }:
            return _ILLEGAL_FUNCTION
        else:
            return 0
        return 0 if set(addresses) <= self.writable else _ILLEGAL_DATA_ADDRESS


def _corrupt(response: bytes, *, rtu: bool) -> bytes:
    """Garble an answer the way a noisy line or a broken gateway does."""
    frame = bytearray(response)
    if rtu:
        frame[-3] ^= 0x01  # a flipped data bit: the CRC no longer matches
    elif len(frame) > 8:
        frame[8] ^= 0x01  # byte count (read) or address echo (write) no longer fits
    return bytes(frame)


class _SimTcpServer(modbus_tcp.TcpServer):  # type: ignore[misc] # modbus_tk has no types
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
        behaviour: _Behaviour,
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


class _SimRtuServer(modbus_rtu.RtuServer):  # type: ignore[misc] # modbus_tk has no types
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
        behaviour: _Behaviour,
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


def _wait_until_accepting(host: str, port: int, deadline: float) -> None:
    """Poll-connect until the port accepts a connection (or raise TimeoutError)."""
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.25):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                msg = f"simulator on {host}:{port} does not accept connections: {exc}"
                raise TimeoutError(msg) from exc
            time.sleep(0.005)


# ---------------------------------------------------------------------------- simulators


class DeviceSimulator:
    """A Modbus device whose registers follow ``register_map``: TCP on ``host``, and/or RTU.

    Subclasses model the physics in :meth:`_integrate` and :meth:`_publish`.

    Fields of maps that decode SunSpec "not implemented" values (every SunSpec map) start
    as "not implemented"; the simulator then publishes its targets, their scale factors and
    the common model (manufacturer ``PeerGrid``, model = the simulator's class, serial
    number, device address).

    Parameters
    ----------
    register_map : RegisterMap or str
        The map (or a built-in map's name, or a JSON file).
    unit_id : int, optional
        Unit id to serve, ``1 .. 247``; the map's default when not given.
    host : str
        Address to listen on (loopback by default).
    port : int or None
        TCP port; ``0`` picks a free one (see :attr:`port` after :meth:`start`); ``None``
        serves no TCP.
    rtu : str, optional
        Serial device to serve Modbus RTU on (one end of a socat pty pair, or a real port).
    baudrate : int
        Serial speed [bit/s] for ``rtu``.
    start_at : datetime, optional
        Simulated start time; without it the first :meth:`advance` sets the clock.
    max_step_s : float
        Longest integration step [s].
    info : Mapping[str, value], optional
        Extra fields to set, by field name, in the field's unit (``{"1.Mn": "ACME"}``).
    """

    def __init__(
        self,
        register_map: RegisterMap | str,
        *,
        unit_id: int | None = None,
        host: str = "127.0.0.1",
        port: int | None = 0,
        rtu: str | None = None,
        baudrate: int = 19200,
        start_at: datetime | None = None,
        max_step_s: float = 60.0,
        info: Mapping[str, Value] | None = None,
    ) -> None:
        self.register_map = (
            load_register_map(register_map) if isinstance(register_map, str) else register_map
        )
        self.unit_id = unit_id if unit_id is not None else (self.register_map.unit_id or 1)
        if not 1 <= self.unit_id <= 247:
            msg = f"a simulator serves unit ids 1..247, got {self.unit_id}"
            raise ValueError(msg)
        if max_step_s <= 0:
            msg = f"max_step_s must be > 0, got {max_step_s}"
            raise ValueError(msg)
        if port is None and rtu is None:
            msg = "a simulator needs a TCP port (0 = any free one) or an RTU serial device"
            raise ValueError(msg)
        self.host = host
        self._port = port
        self.rtu = rtu
        self.baudrate = baudrate
        self.max_step_s = max_step_s
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._rtu_server: _SimRtuServer | None = None
        writable = frozenset(
            a for f in self.register_map.writable_fields for a in range(f.address, f.end)
        )
        self._behaviour = _Behaviour(writable)
        self._name = f"modbus-sim-{type(self).__name__}"
        self._databank = Databank(error_on_missing_slave=True)
        self._server = _SimTcpServer(host, port or 0, self._databank, self._behaviour, self._name)
        self._slave = self._databank.add_slave(self.unit_id)
        self._blocks: dict[Table, str] = {}
        for table in Table:
            in_table = [f for f in self.register_map.fields if f.table is table]
            if not in_table:
                continue
            start = min(f.address for f in in_table)
            end = max(f.end for f in in_table)
            self._blocks[table] = table.value
            self._slave.add_block(table.value, _BLOCK_TYPE[table], start, end - start)
        self._init_sunspec_nulls()
        for fld in self.register_map.identity_fields:
            regs = fld.expected_registers()
            assert regs is not None  # noqa: S101 - identity fields have expect
            self._put(fld, regs)
        for name_, value in {**self._default_info(), **(info or {})}.items():
            self.set_field(name_, value)
        self._time = None if start_at is None else require_utc(start_at, "start_at")

    def _init_sunspec_nulls(self) -> None:
        """Start SunSpec-style fields as "not implemented", then scale factors of targets at 0."""
        for fld in self.register_map.fields:
            if fld.sunspec_nulls and fld.expect is None:
                self._put(fld, encode_field(fld, None))
        for fld in self.register_map.fields:
            sf = self.register_map.scale_factor_of(fld) if fld.target else None
            if sf is not None:
                self._put(sf, codec.encode(0, sf.kind))

    def _default_info(self) -> dict[str, Value]:
        names = {f.name for f in self.register_map.fields}
        defaults: dict[str, Value] = {
            "1.Mn": "PeerGrid",
            "1.Md": type(self).__name__,
            "1.Vr": "1.0",
            "1.SN": f"SIM-{self.unit_id:03d}",
            "1.DA": self.unit_id,
        }
        return {k: v for k, v in defaults.items() if k in names}

    def __repr__(self) -> str:
        where = []
        if self.running and self._port is not None:
            where.append(f"port {self.port}")
        if self.running and self.rtu is not None:
            where.append(f"rtu {self.rtu}")
        state = ", ".join(where) or "stopped"
        return f"{type(self).__name__}({self.register_map.name!r}, {state})"

    # -- lifecycle --------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (the chosen one once started with ``port=0``; 0 without TCP)."""
        return self._port or 0

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return self.host, self.port

    @property
    def running(self) -> bool:
        """Whether a server thread (TCP or RTU) is serving."""
        tcp = self._thread is not None and self._thread.is_alive()
        rtu = self._rtu_server is not None and self._rtu_server._thread.is_alive()
        return tcp or rtu

    def start(self) -> int:
        """Start serving; return when the TCP port accepts and the serial device is open.

        Returns
        -------
        int
            The TCP port (0 without TCP).

        Raises
        ------
        OSError
            The port cannot be bound (in use ...), or the serial device cannot be opened.
        TimeoutError
            The server did not come up within 5 s.
        """
        if self.running:
            return self.port
        try:
            if self._port is not None:
                self._start_tcp()
            if self.rtu is not None:
                self._start_rtu(self.rtu)
        except BaseException:
            self.stop()
            raise
        return self.port

    def _start_tcp(self) -> None:
        server = self._server
        server._sa = (self.host, self._port)  # same port on a restart
        server.ready.clear()
        server.init_error = None
        server._make_thread()
        self._thread = server._thread
        server.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        if not server.ready.wait(_START_TIMEOUT_S):
            msg = f"simulator on {self.host}:{self._port} did not start"
            raise TimeoutError(msg)
        if server.init_error is not None:
            self._thread.join(_START_TIMEOUT_S)
            self._thread = None
            raise server.init_error
        self._port = server.bound_port
        _wait_until_accepting(self.host, self._port, deadline)

    def _start_rtu(self, device: str) -> None:
        line = serial.Serial()
        line.port = device
        line.baudrate = self.baudrate
        server = _SimRtuServer(line, self._databank, self._behaviour, f"{self._name}-rtu")
        self._rtu_server = server
        server.start()
        if not server.ready.wait(_START_TIMEOUT_S):
            msg = f"RTU simulator on {device} did not start"
            raise TimeoutError(msg)
        if server.init_error is not None:
            server.stop_serving(_START_TIMEOUT_S)
            self._rtu_server = None
            raise server.init_error

    def stop(self) -> None:
        """Stop serving; close every socket and the serial port (idempotent).

        The TCP port then refuses connections; :meth:`start` serves it again.
        """
        rtu = self._rtu_server
        if rtu is not None:
            rtu.stop_serving(_START_TIMEOUT_S)
            self._rtu_server = None
        thread = self._thread
        if thread is None:
            return
        self._server._go.clear()
        if thread.is_alive():
            # The loop waits up to 1 s in select(); a connection wakes it at once.
            try:
                with socket.create_connection((self.host, self.port), timeout=0.25):
                    pass
            except OSError:
                pass
            thread.join(_START_TIMEOUT_S)
        self._thread = None

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

    def set_fault(self, fault: SimFault | str, *, delay_s: float = 1.0) -> None:
        """Show a fault from now on (see :class:`SimFault`).

        Parameters
        ----------
        fault : SimFault or str
            ``"none"``, ``"no_answer"``, ``"slow"``, ``"exception"`` or ``"corrupt"``.
        delay_s : float
            For ``"slow"``: how late [s] each answer comes.
        """
        if delay_s < 0:
            msg = f"delay_s must be >= 0, got {delay_s}"
            raise ValueError(msg)
        self._behaviour.delay_s = delay_s
        self._behaviour.fault = SimFault(fault)

    @property
    def fault(self) -> SimFault:
        """The fault shown now."""
        return self._behaviour.fault

    # -- registers ------------------------------------------------------------------------

    def _put(self, fld: RegisterField, regs: list[int]) -> None:
        self._slave.set_values(self._blocks[fld.table], fld.address, regs)

    def _registers(self, fld: RegisterField) -> list[int]:
        return list(self._slave.get_values(self._blocks[fld.table], fld.address, fld.count))

    def _scale_factor(self, fld: RegisterField) -> int | None:
        sf_field = self.register_map.scale_factor_of(fld)
        if sf_field is None:
            return None
        return codec.decode_scale_factor(self._registers(sf_field)[0])

    def set_field(self, name: str, value: Value | None) -> None:
        """Set a field by name, in the field's own unit and sign (scale factor applied).

        Raises
        ------
        RegisterMapError
            No such field.
        CodecError
            The value does not fit.
        """
        fld = self.register_map.field(name)
        self._put(fld, encode_field(fld, value, self._scale_factor(fld)))

    def get_field(self, name: str) -> Value | None:
        """A field's current value, in the field's own unit and sign."""
        fld = self.register_map.field(name)
        return decode_field(fld, self._registers(fld), self._scale_factor(fld))

    def _target(self, target: Target, *, required: bool = True) -> RegisterField | None:
        fld = self.register_map.for_target(target)
        if fld is None and required:
            msg = (
                f"{type(self).__name__} needs a {target.value} field; "
                f"register map {self.register_map.name!r} has none"
            )
            raise RegisterMapError(msg)
        return fld

    def _set_scale_factor(self, target: Target, largest: float) -> None:
        """Choose the scale factor of ``target``'s field so that ``largest`` fits."""
        fld = self._target(target, required=False)
        sf_field = None if fld is None else self.register_map.scale_factor_of(fld)
        if fld is None or sf_field is None:
            return
        limit = {1: 32767, 2: 2**31 - 1, 4: 2**63 - 1}[fld.count]
        sf = 0
        while abs(fld.from_canonical(largest)) / fld.scale / 10**sf > limit:
            sf += 1
        self._put(sf_field, codec.encode(sf, codec.RegisterKind.SUNSSF))

    def _set_target(self, target: Target, value: float | None) -> None:
        """Publish a canonical value (target unit and sign) into its field, if the map has one."""
        fld = self._target(target, required=False)
        if fld is None:
            return
        physical = None if value is None else fld.from_canonical(value)
        self._put(fld, encode_field(fld, physical, self._scale_factor(fld)))

    def _get_target(self, target: Target) -> float | None:
        """Read a canonical value (target unit and sign) back from its field."""
        fld = self._target(target, required=False)
        if fld is None:
            return None
        value = decode_field(fld, self._registers(fld), self._scale_factor(fld))
        return None if value is None or isinstance(value, str) else fld.to_canonical(value)

    # -- time -----------------------------------------------------------------------------

    @property
    def now(self) -> datetime | None:
        """Simulated time of the registers (``None`` before the first :meth:`advance`)."""
        return self._time

    def advance(self, to: datetime) -> None:
        """Integrate from the last time to ``to``, then publish the registers for ``to``.

        Parameters
        ----------
        to : datetime
            New simulated time (timezone-aware, not before the current one).

        Raises
        ------
        ValueError
            ``to`` is before the current simulated time (or naive).
        """
        to = require_utc(to, "to")
        # Holding the unit's data lock makes the update atomic for requests: a read never
        # sees the new power next to the old counter.
        with self._lock, self._slave._data_lock:
            if self._time is not None:
                if to < self._time:
                    msg = f"simulated time only moves forward: {to} < {self._time}"
                    raise ValueError(msg)
                self._integrate(self._time, to)
            self._time = to
            self._publish(to)

    def _steps(self, t0: datetime, t1: datetime) -> Iterator[tuple[datetime, float]]:
        """Midpoints and lengths [h] of the integration steps covering ``[t0, t1]``."""
        total_s = (t1 - t0).total_seconds()
        n = max(1, math.ceil(total_s / self.max_step_s))
        step_s = total_s / n
        for i in range(n):
            yield t0 + timedelta(seconds=(i + 0.5) * step_s), step_s / 3600

    def _integrate(self, t0: datetime, t1: datetime) -> None:  # pragma: no cover - abstract
        """Accumulate energy over ``[t0, t1]`` with the setpoints in force."""
        raise NotImplementedError

    def _publish(self, t: datetime | None) -> None:  # pragma: no cover - abstract
        """Write the registers for time ``t`` (``None``: before the clock is set)."""
        raise NotImplementedError


class PVInverterSim(DeviceSimulator):
    """A PV inverter that produces ``min(profile(t), rated_w, limit)``.

    The limit is ``w_max_lim_pct`` [%] of ``rated_w`` as written by a client, applied when
    ``w_max_lim_ena`` is 1 (or always, if the map has no enable field). Registers: power
    (``p_w``, GRID sign, so negative while producing), lifetime energy
    (``export_wh_total``), rating (``w_max``) and the control fields.

    Parameters
    ----------
    rated_w : float
        Rating [W], > 0.
    profile : Profile
        Available DC-side power [W] over time.
    energy0_wh : float
        Lifetime energy [Wh] at the start.
    register_map : RegisterMap or str
        A SunSpec-like map (default ``"sunspec_inverter"``).
    **kwargs
        Passed to :class:`DeviceSimulator` (``port``, ``start_at``, ``unit_id`` ...).
    """

    def __init__(
        self,
        rated_w: float,
        profile: Profile,
        *,
        energy0_wh: float = 0.0,
        register_map: RegisterMap | str = "sunspec_inverter",
        **kwargs: Unpack[SimOptions],
    ) -> None:
        if rated_w <= 0:
            msg = f"rated_w must be > 0 W, got {rated_w}"
            raise ValueError(msg)
        super().__init__(register_map, **kwargs)
        for target in (Target.P_W, Target.EXPORT_WH_TOTAL, Target.W_MAX_LIM_PCT):
            self._target(target)
        self.rated_w = float(rated_w)
        self.profile = profile
        self.produced_wh = float(energy0_wh)
        self.p_w = 0.0
        self._set_scale_factor(Target.P_W, self.rated_w)
        self._set_scale_factor(Target.W_MAX, self.rated_w)
        pct = self._target(Target.W_MAX_LIM_PCT)
        assert pct is not None  # noqa: S101 - checked above
        pct_sf = self.register_map.scale_factor_of(pct)
        if pct_sf is not None:  # 0.01 % resolution, as many inverters have
            self._put(pct_sf, codec.encode(-2, codec.RegisterKind.SUNSSF))
        self._set_target(Target.W_MAX, self.rated_w)
        self._set_target(Target.W_MAX_LIM_PCT, 100.0)
        self._set_target(Target.W_MAX_LIM_ENA, 0)
        self._publish(self._time)

    @property
    def limit_w(self) -> float:
        """The production limit [W] in force, from the control registers."""
        with self._lock:
            enabled = self._get_target(Target.W_MAX_LIM_ENA)
            has_enable = self.register_map.for_target(Target.W_MAX_LIM_ENA) is not None
            if has_enable and enabled != 1:
                return self.rated_w
            pct = self._get_target(Target.W_MAX_LIM_PCT)
            if pct is None:
                return self.rated_w
            return max(0.0, min(pct, 100.0)) / 100 * self.rated_w

    def _power(self, t: datetime, limit_w: float) -> float:
        return max(0.0, min(self.profile(t), self.rated_w, limit_w))

    def _integrate(self, t0: datetime, t1: datetime) -> None:
        limit = self.limit_w
        for mid, hours in self._steps(t0, t1):
            self.produced_wh += self._power(mid, limit) * hours

    def _publish(self, t: datetime | None) -> None:
        self.p_w = 0.0 if t is None else self._power(t, self.limit_w)
        self._set_target(Target.P_W, -self.p_w)  # producing = exporting
        self._set_target(Target.EXPORT_WH_TOTAL, self.produced_wh)


class LoadMeterSim(DeviceSimulator):
    """A meter of a load, or of a prosumer's net connection, in the GRID convention.

    ``profile(t)`` [W] is positive for consumption (import) and negative for export; the
    import and export counters integrate the two parts.

    Parameters
    ----------
    profile : Profile
        Net power [W] over time, positive = import.
    import0_wh, export0_wh : float
        Counters [Wh] at the start.
    peak_w : float, optional
        Largest absolute power [W] the profile reaches: picks the power scale factor of
        maps that have one (SunSpec meters); without it the scale factor is 0 (1 W steps,
        at most 32767 W in an int16).
    register_map : RegisterMap or str
        A meter map (default ``"sdm630"``; ``"sunspec_meter"``).
    **kwargs
        Passed to :class:`DeviceSimulator`.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        import0_wh: float = 0.0,
        export0_wh: float = 0.0,
        peak_w: float | None = None,
        register_map: RegisterMap | str = "sdm630",
        **kwargs: Unpack[SimOptions],
    ) -> None:
        super().__init__(register_map, **kwargs)
        self._target(Target.P_W)
        if peak_w is not None:
            self._set_scale_factor(Target.P_W, peak_w)
        self.profile = profile
        self.imported_wh = float(import0_wh)
        self.exported_wh = float(export0_wh)
        self.p_w = 0.0
        self._publish(self._time)

    def _integrate(self, t0: datetime, t1: datetime) -> None:
        for mid, hours in self._steps(t0, t1):
            p = self.profile(mid)
            self.imported_wh += max(p, 0.0) * hours
            self.exported_wh += max(-p, 0.0) * hours

    def _publish(self, t: datetime | None) -> None:
        self.p_w = 0.0 if t is None else float(self.profile(t))
        self._set_target(Target.P_W, self.p_w)
        self._set_target(Target.IMPORT_WH_TOTAL, self.imported_wh)
        self._set_target(Target.EXPORT_WH_TOTAL, self.exported_wh)


class BatterySim(DeviceSimulator):
    """A battery that follows the written setpoint within its power and SoC limits.

    The map decides how a client commands it (the same three ways
    :class:`~adapters.modbus.devices.DeviceWriter` writes):

    * ``battery_setpoint_w`` [W], positive = discharge (a vendor register, or SunSpec 704
      WSet); with ``battery_setpoint_ena`` in the map it only counts while that is 1, and with
      ``battery_setpoint_mode`` only while that is 1 (watts);
    * SunSpec 124: with ``storage_control_mode`` bit 0 set the charge power is at most
      ``storage_charge_pct`` % of ``storage_w_max`` (negative: a forced discharge), with bit 1
      the discharge power at most ``storage_discharge_pct`` % (negative: a forced charge); the
      battery then runs at the power of that window nearest to 0.

    The power is clipped to ``+-max_p_w``; discharging stops at ``min_soc_percent``,
    charging at ``max_soc_percent``. Losses are not modelled (round-trip efficiency 1).
    Registers: power (``p_w``, GRID sign: discharging is negative), SoC, charged energy
    (``import_wh_total``), discharged energy (``export_wh_total``), and the ratings
    (``storage_w_max``, ``w_charge_max``, ``w_discharge_max``, ``w_max``) where the map has them.

    Parameters
    ----------
    capacity_wh : float
        Usable capacity [Wh], > 0.
    max_p_w : float
        Largest charge or discharge power [W], > 0.
    soc0 : float
        State of charge at the start [%].
    min_soc_percent, max_soc_percent : float
        SoC window [%].
    register_map : RegisterMap or str
        A storage map (default ``"battery"``; ``"sunspec_storage"``,
        ``"sunspec_der_storage"``).
    **kwargs
        Passed to :class:`DeviceSimulator`.
    """

    def __init__(
        self,
        capacity_wh: float,
        max_p_w: float,
        soc0: float = 50.0,
        *,
        min_soc_percent: float = 0.0,
        max_soc_percent: float = 100.0,
        register_map: RegisterMap | str = "battery",
        **kwargs: Unpack[SimOptions],
    ) -> None:
        if capacity_wh <= 0 or max_p_w <= 0:
            msg = f"need capacity_wh > 0 and max_p_w > 0, got {capacity_wh}, {max_p_w}"
            raise ValueError(msg)
        if not 0 <= min_soc_percent <= soc0 <= max_soc_percent <= 100:
            msg = f"need 0 <= min_soc <= soc0 <= max_soc <= 100 [%], got {soc0}"
            raise ValueError(msg)
        super().__init__(register_map, **kwargs)
        self._target(Target.P_W)
        self._target(Target.SOC_PERCENT)
        self._rates = self.register_map.for_target(Target.STORAGE_CHARGE_PCT) is not None
        if self._rates:
            for target in (Target.STORAGE_DISCHARGE_PCT, Target.STORAGE_CONTROL_MODE,
                           Target.STORAGE_W_MAX):  # fmt: skip
                self._target(target)
        else:
            self._target(Target.BATTERY_SETPOINT_W)
        self.capacity_wh = float(capacity_wh)
        self.max_p_w = float(max_p_w)
        self.energy_wh = self.capacity_wh * soc0 / 100
        self._min_wh = self.capacity_wh * min_soc_percent / 100
        self._max_wh = self.capacity_wh * max_soc_percent / 100
        self.charged_wh = 0.0
        self.discharged_wh = 0.0
        self.p_w = 0.0
        for target in (Target.P_W, Target.BATTERY_SETPOINT_W, Target.STORAGE_W_MAX,
                       Target.W_CHARGE_MAX, Target.W_DISCHARGE_MAX, Target.W_MAX):  # fmt: skip
            self._set_scale_factor(target, self.max_p_w)
        for target in (Target.STORAGE_W_MAX, Target.W_CHARGE_MAX, Target.W_DISCHARGE_MAX,
                       Target.W_MAX):  # fmt: skip
            self._set_target(target, self.max_p_w)
        pct = self.register_map.for_target(Target.STORAGE_CHARGE_PCT)
        pct_sf = None if pct is None else self.register_map.scale_factor_of(pct)
        if pct_sf is not None:  # 0.01 % resolution
            self._put(pct_sf, codec.encode(-2, codec.RegisterKind.SUNSSF))
        self._set_target(Target.BATTERY_SETPOINT_W, 0)
        self._set_target(Target.BATTERY_SETPOINT_ENA, 0)
        self._set_target(Target.BATTERY_SETPOINT_MODE, 1)
        self._set_target(Target.STORAGE_CHARGE_PCT, 100)
        self._set_target(Target.STORAGE_DISCHARGE_PCT, 100)
        self._set_target(Target.STORAGE_CONTROL_MODE, 0)
        self._publish(self._time)

    @property
    def soc_percent(self) -> float:
        """State of charge [%]."""
        return 100 * self.energy_wh / self.capacity_wh

    @property
    def setpoint_w(self) -> float:
        """The power [W] a client asks for (positive = discharge), before SoC limits."""
        with self._lock:
            if self._rates:
                return self._rate_setpoint_w()
            for gate in (Target.BATTERY_SETPOINT_ENA, Target.BATTERY_SETPOINT_MODE):
                if self.register_map.for_target(gate) is not None and self._get_target(gate) != 1:
                    return 0.0
            return self._get_target(Target.BATTERY_SETPOINT_W) or 0.0

    def _rate_setpoint_w(self) -> float:
        w_max = self._get_target(Target.STORAGE_W_MAX) or 0.0
        mode = int(self._get_target(Target.STORAGE_CONTROL_MODE) or 0)
        low, high = -self.max_p_w, self.max_p_w  # charge is negative
        if mode & 1:
            low = -(self._get_target(Target.STORAGE_CHARGE_PCT) or 0.0) / 100 * w_max
        if mode & 2:
            high = (self._get_target(Target.STORAGE_DISCHARGE_PCT) or 0.0) / 100 * w_max
        if low > high:  # contradictory limits: a real unit holds
            return 0.0
        return min(max(0.0, low), high)

    def _power(self, setpoint_w: float) -> float:
        p = max(-self.max_p_w, min(setpoint_w, self.max_p_w))
        if (p > 0 and self.energy_wh <= self._min_wh) or (p < 0 and self.energy_wh >= self._max_wh):
            return 0.0
        return p

    def _integrate(self, t0: datetime, t1: datetime) -> None:
        setpoint = self.setpoint_w
        for _, hours in self._steps(t0, t1):
            p = self._power(setpoint)
            if p > 0:
                delivered = min(p * hours, self.energy_wh - self._min_wh)
                self.energy_wh -= delivered
                self.discharged_wh += delivered
            elif p < 0:
                absorbed = min(-p * hours, self._max_wh - self.energy_wh)
                self.energy_wh += absorbed
                self.charged_wh += absorbed

    def _publish(self, t: datetime | None) -> None:
        self.p_w = 0.0 if t is None else self._power(self.setpoint_w)
        self._set_target(Target.P_W, -self.p_w)  # discharging = exporting
        self._set_target(Target.SOC_PERCENT, self.soc_percent)
        self._set_target(Target.IMPORT_WH_TOTAL, self.charged_wh)
        self._set_target(Target.EXPORT_WH_TOTAL, self.discharged_wh)


class SimulatedSite:
    """Several simulators started, advanced and stopped together.

    Parameters
    ----------
    simulators : Mapping[str, DeviceSimulator]
        Simulators by device id.

    Examples
    --------
    >>> site = SimulatedSite({"pv1": PVInverterSim(5000, constant_profile(3000))})
    >>> with site:
    ...     sorted(site.ports)
    ['pv1']
    """

    def __init__(self, simulators: Mapping[str, DeviceSimulator]) -> None:
        self.simulators = dict(simulators)

    def __getitem__(self, device_id: str) -> DeviceSimulator:
        return self.simulators[device_id]

    @property
    def ports(self) -> dict[str, int]:
        """TCP port of each simulator."""
        return {name: sim.port for name, sim in self.simulators.items()}

    def start(self) -> dict[str, int]:
        """Start every simulator (all or none); return their ports."""
        try:
            for sim in self.simulators.values():
                sim.start()
        except BaseException:
            self.stop()
            raise
        return self.ports

    def stop(self) -> None:
        """Stop every simulator (idempotent)."""
        for sim in self.simulators.values():
            sim.stop()

    def advance(self, to: datetime) -> None:
        """Advance every simulator to ``to``."""
        for sim in self.simulators.values():
            sim.advance(to)

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


__all__ = [
    "BatterySim",
    "DeviceSimulator",
    "LoadMeterSim",
    "PVInverterSim",
    "Profile",
    "SimFault",
    "SimulatedSite",
    "clear_sky_profile",
    "constant_profile",
    "series_profile",
]

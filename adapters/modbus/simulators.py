"""Device simulators: real Modbus TCP servers on loopback, driven by profiles and setpoints.

Each simulator is a ``modbus_tk`` :class:`TcpServer` (one daemon thread) serving one unit
whose registers follow a :class:`~adapters.modbus.registermaps.RegisterMap`, the same map a
:class:`~adapters.modbus.devices.DeviceReader` uses, so no register number appears here:

* :class:`PVInverterSim`: SunSpec inverter; produces ``min(profile(t), rating, limit)`` where
  the limit is what a client wrote to WMaxLimPct/WMaxLim_Ena.
* :class:`LoadMeterSim`: SDM630-style meter of a load (or a prosumer's net connection).
* :class:`BatterySim`: follows the written power setpoint within its power and SoC limits.

Time is the caller's: :meth:`DeviceSimulator.advance` integrates the power in force from the
previous time to ``to`` into the energy counters (in steps of at most ``max_step_s``, with
the profile at each step's midpoint and the setpoints as written now), then publishes the
registers for ``to``. The demo runs it in accelerated time; tests jump by hours.

Faults (:meth:`DeviceSimulator.set_fault`): ``"no_answer"`` swallows requests (the client
times out), ``"exception"`` answers every request with exception code 4 (server device
failure); :meth:`~DeviceSimulator.stop` makes the port refuse connections, and
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
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self, TypedDict, Unpack

from modbus_tk import defines as mb
from modbus_tk import modbus_tcp

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
    port: int
    start_at: datetime | None
    max_step_s: float
    info: Mapping[str, Value] | None


class SimFault(enum.StrEnum):
    """Failure a simulator shows on request."""

    NONE = "none"
    NO_ANSWER = "no_answer"  # requests are read and dropped: the client times out
    EXCEPTION = "exception"  # every request gets exception code 4 (server device failure)


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


# ---------------------------------------------------------------------------- server


class _SimTcpServer(modbus_tcp.TcpServer):  # type: ignore[misc] # modbus_tk has no types
    """modbus_tk's TCP server with a daemon thread, a ready signal, faults and write checks.

    The library's own server loop uses ``Event.isSet`` (a DeprecationWarning since Python
    3.10), skips its cleanup when the loop fails, and binds inside the thread without telling
    anyone when it listens. This loop fixes the three.
    """

    _sock: socket.socket | None
    _sockets: list[socket.socket]

    def __init__(self, host: str, port: int, writable: frozenset[int], name: str) -> None:
        self.writable = writable
        self.fault = SimFault.NONE
        self.ready = threading.Event()
        self.init_error: BaseException | None = None
        self.bound_port = 0
        self._name = name
        super().__init__(port=port, address=host, timeout_in_sec=1)

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
        fault = self.fault
        if fault is SimFault.NO_ANSWER:
            return b""
        query = self._make_query()
        try:
            _, pdu = query.parse_request(request)
            function = pdu[0]
        except Exception:  # malformed: let the library answer as it does
            return self._library_handle(request)
        if fault is SimFault.EXCEPTION:
            return bytes(query.build_response(bytes([function | 0x80, _SERVER_DEVICE_FAILURE])))
        refusal = self._refuse_write(function, pdu)
        if refusal:
            return bytes(query.build_response(bytes([function | 0x80, refusal])))
        return self._library_handle(request)

    def _library_handle(self, request: bytes) -> bytes:
        response = super()._handle(request)
        return bytes(response) if response else b""  # the library answers "" for "no answer"

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
    """A Modbus TCP device on ``host`` whose registers follow ``register_map``.

    Subclasses model the physics in :meth:`_integrate` and :meth:`_publish`.

    Parameters
    ----------
    register_map : RegisterMap or str
        The map (or a built-in map's name).
    unit_id : int, optional
        Unit id to serve, ``1 .. 255``; the map's default when not given.
    host : str
        Address to listen on (loopback by default).
    port : int
        TCP port; ``0`` picks a free one (see :attr:`port` after :meth:`start`).
    start_at : datetime, optional
        Simulated start time; without it the first :meth:`advance` sets the clock.
    max_step_s : float
        Longest integration step [s].
    info : Mapping[str, value], optional
        Extra fields to set, by field name, in the field's unit (``{"Mn": "PeerGrid"}``).
    """

    def __init__(
        self,
        register_map: RegisterMap | str,
        *,
        unit_id: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_at: datetime | None = None,
        max_step_s: float = 60.0,
        info: Mapping[str, Value] | None = None,
    ) -> None:
        self.register_map = (
            load_register_map(register_map) if isinstance(register_map, str) else register_map
        )
        self.unit_id = unit_id if unit_id is not None else (self.register_map.unit_id or 1)
        if not 1 <= self.unit_id <= 255:
            msg = f"a simulator serves unit ids 1..255, got {self.unit_id}"
            raise ValueError(msg)
        if max_step_s <= 0:
            msg = f"max_step_s must be > 0, got {max_step_s}"
            raise ValueError(msg)
        self.host = host
        self._port = port
        self.max_step_s = max_step_s
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        writable = frozenset(
            a for f in self.register_map.writable_fields for a in range(f.address, f.end)
        )
        name = f"modbus-sim-{type(self).__name__}"
        self._server = _SimTcpServer(host, port, writable, name)
        self._slave = self._server.add_slave(self.unit_id)
        self._blocks: dict[Table, str] = {}
        for table in Table:
            in_table = [f for f in self.register_map.fields if f.table is table]
            if not in_table:
                continue
            start = min(f.address for f in in_table)
            end = max(f.end for f in in_table)
            self._blocks[table] = table.value
            self._slave.add_block(table.value, _BLOCK_TYPE[table], start, end - start)
        for fld in self.register_map.identity_fields:
            regs = fld.expected_registers()
            assert regs is not None  # noqa: S101 - identity fields have expect
            self._put(fld, regs)
        for name_, value in (info or {}).items():
            self.set_field(name_, value)
        self._time = None if start_at is None else require_utc(start_at, "start_at")

    def __repr__(self) -> str:
        state = f"port {self.port}" if self.running else "stopped"
        return f"{type(self).__name__}({self.register_map.name!r}, {state})"

    # -- lifecycle --------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (the chosen one once started with ``port=0``)."""
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return self.host, self._port

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> int:
        """Start serving; return only when the port accepts connections.

        Returns
        -------
        int
            The TCP port.

        Raises
        ------
        OSError
            The port cannot be bound (in use ...).
        TimeoutError
            The server did not come up within 5 s.
        """
        if self.running:
            return self._port
        server = self._server
        server._sa = (self.host, self._port)  # same port on a restart
        server.ready.clear()
        server.init_error = None
        server._make_thread()
        self._thread = server._thread
        server.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        if not server.ready.wait(_START_TIMEOUT_S):
            self.stop()
            msg = f"simulator on {self.host}:{self._port} did not start"
            raise TimeoutError(msg)
        if server.init_error is not None:
            self._thread.join(_START_TIMEOUT_S)
            self._thread = None
            raise server.init_error
        self._port = server.bound_port
        try:
            _wait_until_accepting(self.host, self._port, deadline)
        except TimeoutError:
            self.stop()
            raise
        return self._port

    def stop(self) -> None:
        """Stop serving and close every socket (idempotent); the port then refuses."""
        thread = self._thread
        if thread is None:
            return
        self._server._go.clear()
        if thread.is_alive():
            # The loop waits up to 1 s in select(); a connection wakes it at once.
            try:
                with socket.create_connection((self.host, self._port), timeout=0.25):
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

    def set_fault(self, fault: SimFault | str) -> None:
        """Show a fault from now on: ``"none"``, ``"no_answer"`` or ``"exception"``."""
        self._server.fault = SimFault(fault)

    @property
    def fault(self) -> SimFault:
        """The fault shown now."""
        return SimFault(self._server.fault)

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
    register_map : RegisterMap or str
        A meter map (default ``"sdm630"``).
    **kwargs
        Passed to :class:`DeviceSimulator`.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        import0_wh: float = 0.0,
        export0_wh: float = 0.0,
        register_map: RegisterMap | str = "sdm630",
        **kwargs: Unpack[SimOptions],
    ) -> None:
        super().__init__(register_map, **kwargs)
        self._target(Target.P_W)
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

    The setpoint [W] (``battery_setpoint_w``, positive = discharge) is clipped to
    ``+-max_p_w``; discharging stops at ``min_soc_percent``, charging at
    ``max_soc_percent``. Losses are not modelled (round-trip efficiency 1). Registers: power
    (``p_w``, GRID sign: discharging is negative), SoC, charged energy (``import_wh_total``),
    discharged energy (``export_wh_total``).

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
        A storage map (default ``"battery"``).
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
        for target in (Target.P_W, Target.SOC_PERCENT, Target.BATTERY_SETPOINT_W):
            self._target(target)
        self.capacity_wh = float(capacity_wh)
        self.max_p_w = float(max_p_w)
        self.energy_wh = self.capacity_wh * soc0 / 100
        self._min_wh = self.capacity_wh * min_soc_percent / 100
        self._max_wh = self.capacity_wh * max_soc_percent / 100
        self.charged_wh = 0.0
        self.discharged_wh = 0.0
        self.p_w = 0.0
        self._set_scale_factor(Target.P_W, self.max_p_w)
        self._set_target(Target.BATTERY_SETPOINT_W, 0)
        self._publish(self._time)

    @property
    def soc_percent(self) -> float:
        """State of charge [%]."""
        return 100 * self.energy_wh / self.capacity_wh

    @property
    def setpoint_w(self) -> float:
        """The setpoint [W] written by a client (positive = discharge)."""
        with self._lock:
            return self._get_target(Target.BATTERY_SETPOINT_W) or 0.0

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
]

"""The simulated device: registers that follow a register map, served over TCP and/or RTU.

:class:`DeviceSimulator` holds a unit's registers (laid out by its
:class:`~adapters.modbus.regmap.RegisterMap`, the same map a
:class:`~adapters.modbus.reading.DeviceReader` uses, so no register number appears here),
serves them with the servers of :mod:`adapters.modbus.simulators.servers`, and moves its
clock: :meth:`DeviceSimulator.advance` integrates the power in force from the previous time
to ``to`` into the energy counters (in steps of at most ``max_step_s``, with the profile at
each step's midpoint and the setpoints as written now), then publishes the registers for
``to``. The physics of each kind of device is in :mod:`adapters.modbus.simulators.devices`.

Revert timers. A real inverter or battery drops a setpoint by itself when nobody refreshes
it (SunSpec 123 ``WMaxLimPct_RvrtTms``, 704 ``WMaxLimPctRvrtTms`` and ``WSetRvrtTms``, 124
``InOutWRte_RvrtTms``, a vendor watchdog register): so does a simulator. A client's write
of a guarded control register (the setpoint, its enable or mode, or the timer itself) starts
the timer; once the timer's value [s] has passed on :attr:`DeviceSimulator.revert_clock`
without another such write, the device puts its defaults back (the subclass says which).
A timer of 0 (the start value) never runs out. These are seconds of the device's own clock
(``time.monotonic`` unless another is given, e.g. a fake for unit tests), not the simulated
time of :meth:`DeviceSimulator.advance`: the timers are checked before every request is
answered, at every :meth:`~DeviceSimulator.advance` and whenever the simulator's Python
properties look at a setpoint, so no client can see a setpoint that should have reverted.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self, TypedDict

import serial
from cryptography.hazmat.primitives.asymmetric import ec
from modbus_tk import defines as mb
from modbus_tk import modbus_rtu
from modbus_tk.exceptions import ModbusError, OverlapModbusBlockError
from modbus_tk.modbus import Databank

from adapters.modbus import codec
from adapters.modbus.codec import Table, Value
from adapters.modbus.errors import InvalidArgument, RegisterMapError, SimulatorNotStarted
from adapters.modbus.fields import decode_field, encode_field
from adapters.modbus.mapfiles import load_register_map
from adapters.modbus.regmap import RegisterField, RegisterMap, Target
from adapters.modbus.signed_block import BLOCK_REGISTERS, to_registers
from adapters.modbus.simulators.faults import Behaviour, SimFault
from adapters.modbus.simulators.servers import SimRtuServer, SimTcpServer, wait_until_accepting
from market.domain import require_utc
from market.signed_readings import (
    ReadingPayload,
    SignedReading,
    new_private_key,
    public_key_bytes,
    sign,
)
from market.units import round_half_even

_BLOCK_TYPE = {Table.HOLDING: mb.HOLDING_REGISTERS, Table.INPUT: mb.ANALOG_INPUTS}
SIGNED = "signed"
"""The databank block of the signed-reading block (:mod:`adapters.modbus.signed_block`)."""
START_TIMEOUT_S = 5.0
"""Longest wait [s] for a server to start or stop."""


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
    revert_clock: Callable[[], float] | None
    device_id: str | None
    signed_block: int | None
    signing_key: ec.EllipticCurvePrivateKey | None


@dataclass(eq=False, slots=True)
class RevertTimer:
    """One control function's revert timer (see the module docstring).

    Parameters
    ----------
    timer : RegisterField
        The field holding the revert time [s] (canonical unit of its target).
    guarded : frozenset of int
        Holding register addresses whose write (re)starts the timer.
    revert : callable
        Puts the function's defaults back into the registers.
    started_at : float or None
        :attr:`DeviceSimulator.revert_clock` reading [s] of the last guarded write;
        ``None`` when not running.
    reverts : int
        How often it ran out.
    """

    timer: RegisterField
    guarded: frozenset[int]
    revert: Callable[[], None]
    started_at: float | None = None
    reverts: int = 0


class SignedTamper(enum.StrEnum):
    """How a signing simulator misbehaves on request (tests, the demo's attacks)."""

    NONE = "none"
    FORGED = "forged"  # the counters change after signing: the signature no longer fits
    REPLAYED = "replayed"  # the block of an earlier measurement is served again
    FOREIGN_KEY = "foreign_key"  # signed with a key that is not the device's
    LATE = "late"  # the measurement time lags the simulated time by a quarter hour


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
    revert_clock : callable, optional
        The device's own clock for its revert timers, in seconds (``time.monotonic`` by
        default; a fake clock in unit tests).

    Raises
    ------
    InvalidArgument
        A unit id outside ``1 .. 247``, ``max_step_s <= 0``, or neither TCP nor RTU.
    RegisterMapError
        An unknown map, or an ``info`` field the map does not have.
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
        revert_clock: Callable[[], float] | None = None,
        device_id: str | None = None,
        signed_block: int | None = None,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        if (signed_block is None) != (signing_key is None):
            msg = "a signed block needs a signing key, and a signing key a signed block"
            raise InvalidArgument(msg)
        self.register_map = (
            load_register_map(register_map) if isinstance(register_map, str) else register_map
        )
        self.unit_id = unit_id if unit_id is not None else (self.register_map.unit_id or 1)
        if not 1 <= self.unit_id <= 247:
            msg = f"a simulator serves unit ids 1..247, got {self.unit_id}"
            raise InvalidArgument(msg)
        if max_step_s <= 0:
            msg = f"max_step_s must be > 0, got {max_step_s}"
            raise InvalidArgument(msg)
        if port is None and rtu is None:
            msg = "a simulator needs a TCP port (0 = any free one) or an RTU serial device"
            raise InvalidArgument(msg)
        self.host = host
        self._port = port
        self.rtu = rtu
        self.baudrate = baudrate
        self.max_step_s = max_step_s
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._rtu_server: SimRtuServer | None = None
        writable = frozenset(
            a for f in self.register_map.writable_fields for a in range(f.address, f.end)
        )
        self._behaviour = Behaviour(writable)
        self.revert_clock: Callable[[], float] = revert_clock or time.monotonic
        self.revert_timers: list[RevertTimer] = []
        self._behaviour.before = self.check_revert_timers
        self._behaviour.on_write = self._written
        self._name = f"modbus-sim-{type(self).__name__}"
        self._databank = Databank(error_on_missing_slave=True)
        self._server = SimTcpServer(host, port or 0, self._databank, self._behaviour, self._name)
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
        self.device_id = device_id or f"SIM-{self.unit_id:03d}"
        self.signed_block = signed_block
        self._signing_key = signing_key
        self._seq = 0
        self._published: list[int] | None = None  # the block served before the latest
        self.signed_tamper = SignedTamper.NONE
        if signed_block is not None:
            try:
                self._slave.add_block(SIGNED, mb.ANALOG_INPUTS, signed_block, BLOCK_REGISTERS)
            except (OverlapModbusBlockError, ModbusError) as exc:
                msg = f"signed block at {signed_block}: {type(exc).__name__}: {exc}"
                raise InvalidArgument(msg) from None
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
        SimulatorNotStarted
            The server did not come up within 5 s (a :class:`TimeoutError`).
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
        deadline = time.monotonic() + START_TIMEOUT_S
        if not server.ready.wait(START_TIMEOUT_S):
            msg = f"simulator on {self.host}:{self._port} did not start"
            raise SimulatorNotStarted(msg)
        if server.init_error is not None:
            self._thread.join(START_TIMEOUT_S)
            self._thread = None
            raise server.init_error
        self._port = server.bound_port
        wait_until_accepting(self.host, self._port, deadline)

    def _start_rtu(self, device: str) -> None:
        line = serial.Serial()
        line.port = device
        line.baudrate = self.baudrate
        server = SimRtuServer(line, self._databank, self._behaviour, f"{self._name}-rtu")
        self._rtu_server = server
        server.start()
        if not server.ready.wait(START_TIMEOUT_S):
            msg = f"RTU simulator on {device} did not start"
            raise SimulatorNotStarted(msg)
        if server.init_error is not None:
            server.stop_serving(START_TIMEOUT_S)
            self._rtu_server = None
            raise server.init_error

    def stop(self) -> None:
        """Stop serving; close every socket and the serial port (idempotent).

        The TCP port then refuses connections; :meth:`start` serves it again.
        """
        rtu = self._rtu_server
        if rtu is not None:
            rtu.stop_serving(START_TIMEOUT_S)
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
            thread.join(START_TIMEOUT_S)
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

    def answer_rtu(self, request: bytes) -> bytes:
        """Answer one Modbus RTU request frame as this device (``b""`` for no answer).

        For a line shared with other devices (:class:`~adapters.modbus.simulators.bus.RtuBus`):
        faults and the write allow-list apply as on the device's own servers.

        Parameters
        ----------
        request : bytes
            The request frame (unit id, PDU and CRC), addressed to this device's unit.

        Returns
        -------
        bytes
            The answer frame, ``b""`` for none.
        """

        def library(frame: bytes) -> bytes:
            response = self._databank.handle_request(modbus_rtu.RtuQuery(), frame)
            return bytes(response) if response else b""

        return self._behaviour.handle(request, modbus_rtu.RtuQuery(), library)

    def set_fault(self, fault: SimFault | str, *, delay_s: float = 1.0) -> None:
        """Show a fault from now on (see :class:`SimFault`).

        Parameters
        ----------
        fault : SimFault or str
            ``"none"``, ``"no_answer"``, ``"slow"``, ``"exception"`` or ``"corrupt"``.
        delay_s : float
            For ``"slow"``: how late [s] each answer comes.

        Raises
        ------
        InvalidArgument
            ``delay_s < 0``.
        """
        if delay_s < 0:
            msg = f"delay_s must be >= 0, got {delay_s}"
            raise InvalidArgument(msg)
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

        Parameters
        ----------
        name : str
            The field's name in the register map.
        value : int, float, str or None
            The value in the field's unit; ``None`` writes "not implemented".

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
        """A field's current value, in the field's own unit and sign.

        Parameters
        ----------
        name : str
            The field's name in the register map.

        Returns
        -------
        int, float, str or None
            The value; ``None`` for "not implemented".

        Raises
        ------
        RegisterMapError
            No such field.
        """
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

    # -- revert timers ----------------------------------------------------------------------

    def _add_revert_timer(
        self, timer: Target, guarded: Iterable[Target], revert: Callable[[], None]
    ) -> None:
        """Give the function of ``guarded`` its revert timer, if the map has ``timer``."""
        fld = self._target(timer, required=False)
        if fld is None:
            return
        flds = [fld, *(self._target(t, required=False) for t in guarded)]
        addresses = frozenset(a for f in flds if f is not None for a in range(f.address, f.end))
        self.revert_timers.append(RevertTimer(fld, addresses, revert))
        self._set_target(timer, 0)  # no reversion until a client sets a time

    def _written(self, addresses: range) -> None:
        """A client wrote ``addresses``: (re)start the timers that guard them."""
        with self._lock:
            now = self.revert_clock()
            for timer in self.revert_timers:
                if not timer.guarded.isdisjoint(addresses):
                    timer.started_at = now

    def check_revert_timers(self) -> tuple[str, ...]:
        """Revert every function whose timer has run out; run before anyone looks.

        Returns
        -------
        tuple of str
            Names of the timer fields that ran out now (usually none).
        """
        fired: list[str] = []
        with self._lock, self._slave._data_lock:
            now = self.revert_clock()
            for timer in self.revert_timers:
                if timer.started_at is None:
                    continue
                seconds = self._get_target(timer.timer.target) if timer.timer.target else None
                if seconds is None or seconds <= 0:
                    continue
                if now - timer.started_at >= seconds:
                    timer.revert()
                    timer.started_at = None
                    timer.reverts += 1
                    fired.append(timer.timer.name)
        return tuple(fired)

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
        InvalidArgument
            ``to`` is before the current simulated time.
        market.errors.InvalidInterval
            ``to`` is naive.
        """
        to = require_utc(to, "to")
        # Holding the unit's data lock makes the update atomic for requests: a read never
        # sees the new power next to the old counter.
        with self._lock, self._slave._data_lock:
            self.check_revert_timers()
            if self._time is not None:
                if to < self._time:
                    msg = f"simulated time only moves forward: {to} < {self._time}"
                    raise InvalidArgument(msg)
                self._integrate(self._time, to)
            self._time = to
            self._publish(to)
            self._publish_signed(to)

    @property
    def public_key(self) -> bytes | None:
        """The public key of the signing key (64 bytes ``X || Y``), ``None`` if unsigned."""
        return None if self._signing_key is None else public_key_bytes(self._signing_key)

    def _publish_signed(self, t: datetime) -> None:
        """Latch a signed reading of the counters and power just published, at ``t``."""
        if self._signing_key is None or self.signed_block is None:
            return
        at_ms = round(t.timestamp() * 1000)
        self._seq = max(self._seq + 1, at_ms)  # monotonic, and across a restart too
        tamper = self.signed_tamper
        payload = ReadingPayload(
            device_id=self.device_id,
            seq=self._seq,
            measured_at_ms=at_ms - (900_000 if tamper is SignedTamper.LATE else 0),
            import_wh_total=round_half_even(self._get_target(Target.IMPORT_WH_TOTAL) or 0.0),
            export_wh_total=round_half_even(self._get_target(Target.EXPORT_WH_TOTAL) or 0.0),
            p_w=round_half_even(self._get_target(Target.P_W) or 0.0),
        )
        key = new_private_key() if tamper is SignedTamper.FOREIGN_KEY else self._signing_key
        signed = sign(key, payload)
        if tamper is SignedTamper.FORGED:
            forged = dataclasses.replace(payload, export_wh_total=payload.export_wh_total + 1000)
            signed = SignedReading(forged, signed.signature)
        current = self._slave.get_values(SIGNED, self.signed_block, BLOCK_REGISTERS)
        registers = to_registers(signed)
        if tamper is SignedTamper.REPLAYED and self._published is not None:
            registers = self._published
        elif any(current):
            self._published = list(current)
        self._slave.set_values(SIGNED, self.signed_block, registers)

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


__all__ = [
    "SIGNED",
    "START_TIMEOUT_S",
    "DeviceSimulator",
    "RevertTimer",
    "SignedTamper",
    "SimOptions",
]

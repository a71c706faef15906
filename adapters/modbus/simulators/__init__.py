"""Device simulators: real Modbus servers (TCP on loopback, and RTU), driven by profiles.

Each simulator serves one unit whose registers follow a
:class:`~adapters.modbus.regmap.RegisterMap`, the same map a
:class:`~adapters.modbus.reading.DeviceReader` uses, so no register number appears here. It
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

Revert timers (fail safe): a setpoint written with its revert timer (SunSpec 123
``WMaxLimPct_RvrtTms``, 704 ``WMaxLimPctRvrtTms`` and ``WSetRvrtTms``, 124
``InOutWRte_RvrtTms``, the vendor battery's ``WatchdogTimeout``) holds only while a client
keeps rewriting it: the device's own clock (``revert_clock``, monotonic seconds by default,
injectable for tests) runs the timer out and the device returns to its default (no PV limit,
an idle battery); see :mod:`adapters.modbus.simulators.base`.

==================  =================================================================
module              holds
==================  =================================================================
``profiles.py``     power over time (pure)
``faults.py``       :class:`SimFault` and what a device does with a request
``servers.py``      the ``modbus_tk`` TCP and RTU servers, with a daemon thread each
``base.py``         :class:`DeviceSimulator`: registers, lifecycle, clock
``devices.py``      :class:`PVInverterSim`, :class:`LoadMeterSim`, :class:`BatterySim`
``site.py``         :class:`SimulatedSite`
``bus.py``          :class:`RtuBus`: several simulators on one serial line, by unit id
==================  =================================================================

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
>>> with PVInverterSim(5000, constant_profile(4000), start_at=t0) as pv:
...     pv.advance(t0 + timedelta(hours=1))
...     round(pv.produced_wh)
4000
"""

from adapters.modbus.simulators.base import DeviceSimulator, SimOptions
from adapters.modbus.simulators.bus import RtuBus
from adapters.modbus.simulators.devices import BatterySim, LoadMeterSim, PVInverterSim
from adapters.modbus.simulators.faults import SimFault
from adapters.modbus.simulators.profiles import (
    Profile,
    clear_sky_profile,
    constant_profile,
    series_profile,
)
from adapters.modbus.simulators.site import SimulatedSite

__all__ = [
    "BatterySim",
    "DeviceSimulator",
    "LoadMeterSim",
    "PVInverterSim",
    "Profile",
    "RtuBus",
    "SimFault",
    "SimOptions",
    "SimulatedSite",
    "clear_sky_profile",
    "constant_profile",
    "series_profile",
]

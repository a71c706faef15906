"""Devices simulated in-process, the same on every worker: for soak tests and fleet trials.

``peergrid worker --simulate-devices`` (a development flag) reads a site's devices from here
instead of over Modbus: hundreds of sites need no thousand Modbus servers, and a site that
moves from one worker to another reads the very same counters there. Every value is a pure
function of the time:

* a meter consumes :func:`~controller.profiles.load_forecast` of its ``profile_scale_w``;
* a PV inverter produces :func:`~controller.profiles.pv_forecast` of its ``rated_w`` (its
  curtailment setpoints are accepted and kept, but do not change what it produces);
* a battery is idle at ``soc0_percent``.

Counters [Wh] are the integral of the power from :data:`EPOCH` in one-minute steps: the
profiles repeat every day, so a counter is whole days' energy plus today's minutes so far
(one day's cumulative sums are computed once per device).

Not for real sites: ``peergrid run`` and ``serve`` always read real devices.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controller.config import DeviceConfig, DeviceKind, SiteConfig
from controller.profiles import Profile, load_forecast, pv_forecast
from controller.wiring import Devices
from market.domain import BusId, MeterReading, ReadingQuality, Setpoint
from market.units import W, Wh

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Where every simulated counter starts from 0 (UTC)."""

MINUTES_PER_DAY = 1440


@dataclass(frozen=True, slots=True)
class _Written:
    ok: bool = True
    reason: str = ""


@dataclass(slots=True)
class SimulatedDevice:
    """One device: reads are pure functions of the time (module docstring)."""

    device: DeviceConfig
    bus: BusId
    profile: Profile
    sign: int  # +1 consumes (import), -1 produces (export), 0 idle
    setpoints: list[Setpoint] = field(default_factory=list)
    _day: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _cumulative(self) -> list[float]:
        """Energy [Wh] of the day's first k minutes, k = 0 .. 1440 (computed once)."""
        with self._lock:
            if not self._day:
                total, sums = 0.0, [0.0]
                for minute in range(MINUTES_PER_DAY):
                    total += self.profile(EPOCH + timedelta(minutes=minute, seconds=30)) / 60
                    sums.append(total)
                self._day = sums
            return self._day

    def energy_wh(self, at: datetime) -> int:
        """The energy [Wh] the device moved from :data:`EPOCH` to ``at`` (whole minutes)."""
        minutes = max(int((at - EPOCH).total_seconds()) // 60, 0)
        days, minute = divmod(minutes, MINUTES_PER_DAY)
        day = self._cumulative()
        return round(days * day[-1] + day[minute])

    def read(self, now: datetime) -> MeterReading:
        """The reading at ``now``: power [W] and counters [Wh]."""
        energy = Wh(self.energy_wh(now)) if self.sign else Wh(0)
        return MeterReading(
            device_id=self.device.id,
            participant=self.device.participant,
            bus=self.bus,
            measured_at=now,
            p_w=W(round(self.sign * self.profile(now))),
            import_wh_total=energy if self.sign > 0 else Wh(0),
            export_wh_total=energy if self.sign < 0 else Wh(0),
            quality=ReadingQuality.OK,
            soc_percent=(
                self.device.soc0_percent if self.device.kind is DeviceKind.BATTERY else None
            ),
        )

    def write(self, setpoint: Setpoint) -> _Written:
        """Keep the setpoint (the simulation does not follow it)."""
        self.setpoints.append(setpoint)
        return _Written()


def simulated_devices(site: SiteConfig) -> Devices:
    """A reader for every device of ``site`` and a writer for its PV inverters and batteries."""
    out = Devices()
    for d in site.devices:
        participant = site.participant(d.participant)
        if d.kind is DeviceKind.PV:
            sim = SimulatedDevice(d, participant.bus, pv_forecast(d.rated_w), -1)
        elif d.kind is DeviceKind.METER:
            sim = SimulatedDevice(d, participant.bus, load_forecast(d.profile_scale_w), 1)
        else:
            sim = SimulatedDevice(d, participant.bus, lambda _t: 0.0, 0)
        out.readers[d.id] = sim
        if d.kind in {DeviceKind.PV, DeviceKind.BATTERY}:
            out.writers[d.id] = sim
    return out

"""The simulated kinds of device: PV inverter, meter, battery (their physics).

* :class:`PVInverterSim`: SunSpec inverter (``sunspec_inverter``: models 1, 103, 120, 123;
  ``sunspec_der_inverter``: 1, 701, 702, 704); produces ``min(profile(t), rating, limit)``
  where the limit is what a client wrote to WMaxLimPct and its enable; the limit reverts
  when its revert timer runs out.
* :class:`LoadMeterSim`: SDM630-style meter (``sdm630``) or SunSpec meter (``sunspec_meter``)
  of a load or a prosumer's net connection.
* :class:`BatterySim`: follows the written setpoint (vendor ``battery`` map, SunSpec 704 WSet,
  or SunSpec 124 rates) within its power and SoC limits; its state of charge moves; the
  setpoint reverts to idle when its watchdog (revert timer) runs out.

Revert timers are explained in :mod:`adapters.modbus.simulators.base`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Unpack

from adapters.modbus import codec
from adapters.modbus.errors import InvalidArgument
from adapters.modbus.regmap import RegisterMap, Target
from adapters.modbus.simulators.base import DeviceSimulator, SimOptions
from adapters.modbus.simulators.profiles import Profile


class PVInverterSim(DeviceSimulator):
    """A PV inverter that produces ``min(profile(t), rated_w, limit)``.

    The limit is ``w_max_lim_pct`` [%] of ``rated_w`` as written by a client, applied when
    ``w_max_lim_ena`` is 1 (or always, if the map has no enable field). Registers: power
    (``p_w``, GRID sign, so negative while producing), lifetime energy
    (``export_wh_total``), rating (``w_max``) and the control fields.

    Revert: when ``w_max_lim_rvrt_s`` (123 WMaxLimPct_RvrtTms, 704 WMaxLimPctRvrtTms) is
    above 0 and that many seconds pass without a write of the limit, its enable or the
    timer, the limit takes its reversion values: ``w_max_lim_pct`` becomes
    ``w_max_lim_rvrt_pct`` (704 WMaxLimPctRvrt; 100 % where the map has none) and
    ``w_max_lim_ena`` becomes ``w_max_lim_rvrt_ena`` (704 WMaxLimPctEnaRvrt; 0, no limit,
    where the map has none). Both start as 100 % and 0: the inverter runs free.

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

    Raises
    ------
    InvalidArgument
        ``rated_w <= 0``, or a bad option (see :class:`DeviceSimulator`).
    RegisterMapError
        A map without the power, energy or limit fields.
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
            raise InvalidArgument(msg)
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
        self._set_target(Target.W_MAX_LIM_RVRT_PCT, 100.0)
        self._set_target(Target.W_MAX_LIM_RVRT_ENA, 0)
        self._add_revert_timer(
            Target.W_MAX_LIM_RVRT_S,
            (Target.W_MAX_LIM_PCT, Target.W_MAX_LIM_ENA),
            self._revert_limit,
        )
        self._publish(self._time)

    def _revert_limit(self) -> None:
        pct = self._get_target(Target.W_MAX_LIM_RVRT_PCT)
        enable = self._get_target(Target.W_MAX_LIM_RVRT_ENA)
        self._set_target(Target.W_MAX_LIM_PCT, 100.0 if pct is None else pct)
        self._set_target(Target.W_MAX_LIM_ENA, 0 if enable is None else enable)

    @property
    def limit_w(self) -> float:
        """The production limit [W] in force, from the control registers."""
        with self._lock:
            self.check_revert_timers()
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
    :class:`~adapters.modbus.writing.DeviceWriter` writes):

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
    (``import_wh_total``), discharged energy (``export_wh_total``), the ratings
    (``storage_w_max``, ``w_charge_max``, ``w_discharge_max``, ``w_max``: ``max_p_w``) and the
    usable capacity (``capacity_wh``: ``capacity_wh``) where the map has them.

    Revert (watchdog): when ``battery_setpoint_rvrt_s`` (704 WSetRvrtTms, the vendor map's
    WatchdogTimeout) is above 0 and that many seconds pass without a write of the setpoint,
    its mode or enable, or the timer, ``battery_setpoint_w`` becomes
    ``battery_setpoint_rvrt_w`` (704 WSetRvrt; 0 W where the map has none) and
    ``battery_setpoint_ena`` becomes ``battery_setpoint_rvrt_ena`` (704 WSetEnaRvrt; 0). With
    the 124 rates, ``storage_rvrt_s`` (InOutWRte_RvrtTms) running out puts the rates back to
    100 % and ``storage_control_mode`` to 0. Either way the battery idles.

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

    Raises
    ------
    InvalidArgument
        A capacity or power that is not > 0, an SoC window that does not hold ``soc0``, or a
        bad option (see :class:`DeviceSimulator`).
    RegisterMapError
        A map without power, SoC or a way to command the battery.
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
            raise InvalidArgument(msg)
        if not 0 <= min_soc_percent <= soc0 <= max_soc_percent <= 100:
            msg = f"need 0 <= min_soc <= soc0 <= max_soc <= 100 [%], got {soc0}"
            raise InvalidArgument(msg)
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
        self._set_scale_factor(Target.CAPACITY_WH, self.capacity_wh)
        self._set_target(Target.CAPACITY_WH, self.capacity_wh)
        self._set_target(Target.BATTERY_SETPOINT_RVRT_W, 0)
        self._set_target(Target.BATTERY_SETPOINT_RVRT_ENA, 0)
        self._add_revert_timer(
            Target.BATTERY_SETPOINT_RVRT_S,
            (Target.BATTERY_SETPOINT_W, Target.BATTERY_SETPOINT_ENA, Target.BATTERY_SETPOINT_MODE),
            self._revert_setpoint,
        )
        self._add_revert_timer(
            Target.STORAGE_RVRT_S,
            (Target.STORAGE_CHARGE_PCT, Target.STORAGE_DISCHARGE_PCT, Target.STORAGE_CONTROL_MODE),
            self._revert_rates,
        )
        self._publish(self._time)

    def _revert_setpoint(self) -> None:
        p_w = self._get_target(Target.BATTERY_SETPOINT_RVRT_W)
        enable = self._get_target(Target.BATTERY_SETPOINT_RVRT_ENA)
        self._set_target(Target.BATTERY_SETPOINT_W, 0.0 if p_w is None else p_w)
        self._set_target(Target.BATTERY_SETPOINT_ENA, 0 if enable is None else enable)

    def _revert_rates(self) -> None:
        self._set_target(Target.STORAGE_CHARGE_PCT, 100)
        self._set_target(Target.STORAGE_DISCHARGE_PCT, 100)
        self._set_target(Target.STORAGE_CONTROL_MODE, 0)

    @property
    def soc_percent(self) -> float:
        """State of charge [%]."""
        return 100 * self.energy_wh / self.capacity_wh

    @property
    def setpoint_w(self) -> float:
        """The power [W] a client asks for (positive = discharge), before SoC limits."""
        with self._lock:
            self.check_revert_timers()
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


__all__ = ["BatterySim", "LoadMeterSim", "PVInverterSim"]

"""Simulator physics, without starting a server (registers are read in process)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.modbus.errors import RegisterMapError
from adapters.modbus.mapfiles import parse_register_map
from adapters.modbus.simulators import (
    BatterySim,
    LoadMeterSim,
    PVInverterSim,
    clear_sky_profile,
    constant_profile,
)

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def test_pv_produces_the_available_power_and_counts_energy():
    pv = PVInverterSim(5000, constant_profile(4000), start_at=T0, energy0_wh=1000)
    pv.advance(T0 + H)
    assert pv.produced_wh == pytest.approx(5000)
    assert pv.get_field("103.W") == 4000  # device sign: producing is positive
    assert pv.get_field("103.WH") == 5000
    assert pv.get_field("120.WRtg") == 5000
    assert pv.get_field("SunS") == "SunS"
    assert pv.limit_w == 5000


def test_pv_is_capped_by_its_rating_and_never_consumes():
    pv = PVInverterSim(3000, lambda t: 4000 if t.hour < 13 else -50, start_at=T0)
    pv.advance(T0 + H / 2)
    assert pv.p_w == 3000
    pv.advance(T0 + 2 * H)
    assert pv.p_w == 0
    assert pv.produced_wh == pytest.approx(3000 * 1.0)  # 12:00-13:00 at 3 kW, then nothing


def test_curtailment_written_to_the_registers_lowers_production():
    pv = PVInverterSim(5000, constant_profile(4000), start_at=T0)
    pv.advance(T0 + H)
    pv.set_field("123.WMaxLimPct", 50)  # what a client writes: 50 % of 5000 W
    assert pv.limit_w == 5000  # not enabled yet
    pv.set_field("123.WMaxLim_Ena", 1)
    assert pv.limit_w == 2500
    pv.advance(T0 + 2 * H)
    assert pv.produced_wh == pytest.approx(4000 + 2500)
    assert pv.p_w == 2500


def test_large_inverters_get_a_scale_factor():
    pv = PVInverterSim(100_000, constant_profile(80_000), start_at=T0)
    pv.advance(T0 + H)
    assert pv.get_field("103.W_SF") == 1
    assert pv.get_field("103.W") == 80_000


def test_load_meter_counts_import_and_export():
    load = LoadMeterSim(lambda t: 2000 if t < T0 + H else -1000, start_at=T0)
    load.advance(T0 + 2 * H)
    assert load.imported_wh == pytest.approx(2000)
    assert load.exported_wh == pytest.approx(1000)
    assert load.get_field("total_system_power") == -1000
    assert load.get_field("import_active_energy") == pytest.approx(2.0)
    assert load.get_field("export_active_energy") == pytest.approx(1.0)


def test_battery_follows_its_setpoint_within_power_and_soc_limits():
    bat = BatterySim(10_000, 5000, soc0=50, start_at=T0)
    assert bat.get_field("StateOfCharge") == pytest.approx(50.0)
    bat.set_field("PowerSetpoint", 4000)  # discharge
    bat.advance(T0 + H)
    assert bat.soc_percent == pytest.approx(10)
    assert bat.get_field("BatteryPower") == 4000
    bat.advance(T0 + 2 * H)  # runs empty after 15 minutes
    assert bat.soc_percent == pytest.approx(0)
    assert bat.discharged_wh == pytest.approx(5000)
    assert bat.get_field("BatteryPower") == 0
    bat.set_field("PowerSetpoint", -8000)  # charge, clipped to 5000 W
    bat.advance(T0 + 3 * H)
    assert bat.charged_wh == pytest.approx(5000)
    assert bat.soc_percent == pytest.approx(50)
    assert bat.get_field("BatteryPower") == -5000
    assert bat.get_field("ChargedEnergyTotal") == 5000


def test_battery_respects_a_soc_window():
    bat = BatterySim(10_000, 5000, soc0=50, min_soc_percent=20, max_soc_percent=90, start_at=T0)
    bat.set_field("PowerSetpoint", 5000)
    bat.advance(T0 + 2 * H)
    assert bat.soc_percent == pytest.approx(20)
    bat.set_field("PowerSetpoint", -5000)
    bat.advance(T0 + 4 * H)
    assert bat.soc_percent == pytest.approx(90)


def test_clear_sky_profile():
    p = clear_sky_profile(4000, sunrise_h=6, sunset_h=18)
    assert p(T0.replace(hour=12)) == pytest.approx(4000)
    assert p(T0.replace(hour=9)) == pytest.approx(4000 * 2**-0.5)
    assert p(T0.replace(hour=3)) == 0
    assert p(T0.replace(hour=20)) == 0
    shifted = clear_sky_profile(4000, sunrise_h=6, sunset_h=18, utc_offset_h=2)
    assert shifted(T0.replace(hour=10)) == pytest.approx(4000)
    with pytest.raises(ValueError, match="sunrise_h < sunset_h"):
        clear_sky_profile(1, sunrise_h=18, sunset_h=6)


def test_integration_uses_midpoints_of_short_steps():
    ramp = PVInverterSim(10_000, lambda t: (t - T0).total_seconds(), start_at=T0, max_step_s=60)
    ramp.advance(T0 + H)  # integral of t [W] over an hour = 3600 * 3600 / 2 W s
    assert ramp.produced_wh == pytest.approx(3600 / 2)


def test_time_only_moves_forward_and_the_first_advance_sets_the_clock():
    load = LoadMeterSim(constant_profile(1000))
    assert load.now is None
    load.advance(T0)
    assert load.imported_wh == 0
    assert load.get_field("total_system_power") == 1000
    with pytest.raises(ValueError, match="only moves forward"):
        load.advance(T0 - H)


def test_simulator_needs_the_targets_it_drives():
    meter_only = parse_register_map(
        {"name": "m", "fields": [{"name": "p", "address": 0, "kind": "int16", "unit": "W",
                                  "target": "p_w"}]}
    )  # fmt: skip
    with pytest.raises(RegisterMapError, match="PVInverterSim needs a export_wh_total field"):
        PVInverterSim(1000, constant_profile(0), register_map=meter_only)
    with pytest.raises(RegisterMapError, match="BatterySim needs a soc_percent field"):
        BatterySim(1000, 1000, register_map=meter_only)
    LoadMeterSim(constant_profile(0), register_map=meter_only)  # a meter needs only p_w


def test_bad_parameters():
    with pytest.raises(ValueError, match="rated_w"):
        PVInverterSim(0, constant_profile(0))
    with pytest.raises(ValueError, match="soc0"):
        BatterySim(1000, 1000, soc0=120)
    with pytest.raises(ValueError, match="unit ids"):
        LoadMeterSim(constant_profile(0), unit_id=0)


# ---------------------------------------------------------------------------- SunSpec simulators


def test_sunspec_simulators_start_not_implemented_and_fill_the_common_model():
    pv = PVInverterSim(5000, constant_profile(4000), start_at=T0, unit_id=7)
    assert pv.get_field("1.Mn") == "PeerGrid"
    assert pv.get_field("1.Md") == "PVInverterSim"
    assert pv.get_field("1.SN") == "SIM-007"
    assert pv.get_field("1.DA") == 7
    assert pv.get_field("103.A") is None  # the simulator does not model currents
    assert pv.get_field("103.PhVphA") is None
    assert pv.get_field("103.W") == 4000
    assert pv.get_field("103.WH_SF") == 0


def test_der_inverter_obeys_the_704_limit_only_when_enabled():
    pv = PVInverterSim(6000, constant_profile(5000), start_at=T0,
                       register_map="sunspec_der_inverter")  # fmt: skip
    pv.set_field("704.WMaxLimPct", 50)
    assert pv.limit_w == 6000
    pv.set_field("704.WMaxLimPctEna", 1)
    pv.advance(T0 + H)
    assert pv.p_w == 3000
    assert pv.get_field("701.W") == 3000  # DER sign: generation is positive
    assert pv.get_field("702.WMaxRtg") == 6000


def test_124_storage_follows_both_rates():
    bat = BatterySim(10_000, 5000, 50, start_at=T0, register_map="sunspec_storage")
    assert bat.get_field("124.WChaMax") == 5000
    assert bat.setpoint_w == 0  # no limit active: idle
    bat.set_field("124.OutWRte", 40)
    bat.set_field("124.InWRte", -40)
    assert bat.setpoint_w == 0  # not active yet
    bat.set_field("124.StorCtl_Mod", 3)
    assert bat.setpoint_w == 2000  # forced discharge at 40 % of 5000 W
    bat.set_field("124.OutWRte", -20)
    bat.set_field("124.InWRte", 20)
    assert bat.setpoint_w == -1000  # forced charge
    bat.set_field("124.StorCtl_Mod", 1)  # only the charge limit: 20 % charge at most
    assert bat.setpoint_w == 0
    bat.set_field("124.InWRte", -30)
    assert bat.setpoint_w == 1500  # a negative charge limit forces a discharge
    bat.advance(T0 + H)
    assert bat.soc_percent == pytest.approx(35.0)
    assert bat.get_field("124.ChaState") == pytest.approx(35.0)


def test_704_storage_needs_mode_and_enable():
    bat = BatterySim(10_000, 5000, 50, start_at=T0, register_map="sunspec_der_storage")
    bat.set_field("704.WSet", -2000)
    assert bat.setpoint_w == 0
    bat.set_field("704.WSetEna", 1)
    assert bat.setpoint_w == -2000
    bat.set_field("704.WSetMod", 0)  # percent mode: not modelled, so the battery holds
    assert bat.setpoint_w == 0
    assert bat.get_field("802.WChaRteMax") == 5000


def test_series_profile_interpolates_and_repeats():
    from adapters.modbus.simulators import series_profile

    profile = series_profile(T0, 900, [0, 1000, 3000])
    assert profile(T0) == 0
    assert profile(T0 + timedelta(seconds=450)) == pytest.approx(500)
    assert profile(T0 + timedelta(seconds=1800)) == 3000
    assert profile(T0 + timedelta(seconds=2250)) == pytest.approx(1500)  # back towards 0
    assert profile(T0 + timedelta(seconds=2700)) == 0  # next period
    with pytest.raises(ValueError, match="step_s"):
        series_profile(T0, 0, [1])


def test_simulator_needs_a_transport():
    with pytest.raises(ValueError, match=r"TCP port .* or an RTU serial device"):
        LoadMeterSim(constant_profile(1), port=None)
    with pytest.raises(ValueError, match="delay_s"):
        LoadMeterSim(constant_profile(1)).set_fault("slow", delay_s=-1)

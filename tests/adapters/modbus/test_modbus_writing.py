"""DeviceWriter against literal registers: allow-list, bounds, write order, read-back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from modbus_dumps import BATTERY, SDM630, SUNSPEC, BrokenClient

from adapters.modbus import sunspec
from adapters.modbus.fake import FakeRegisterClient
from adapters.modbus.mapfiles import load_register_map, parse_register_map
from adapters.modbus.writing import DeviceWriter
from market.domain import DeviceId, Interval, Setpoint, SetpointKind

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)


def _setpoint(device, kind, p_w):
    return Setpoint(device_id=DeviceId(device), interval=Interval(T0), kind=kind, p_w=p_w)


def pv_writer(fake, **kwargs):
    return DeviceWriter(DeviceId("pv"), fake, load_register_map("sunspec_inverter"), **kwargs)


def test_pv_limit_is_written_as_percent_then_enabled_and_confirmed():
    fake = FakeRegisterClient(holding=SUNSPEC)
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, 2000))
    assert result.ok, result.reason
    assert result.reason == ""
    assert result.readback_w == 2000
    # 2000 W of WRtg 5000 W = 40 %, with WMaxLimPct_SF = -2: 4000
    assert [(w.address, w.values) for w in fake.writes] == [(40155, (4000,)), (40159, (1,))]
    assert fake.registers["holding"][40155] == 4000
    assert dict(result.written) == {"123.WMaxLimPct": 40.0, "123.WMaxLim_Ena": 1.0}
    assert dict(result.readback) == {"123.WMaxLimPct": 40.0, "123.WMaxLim_Ena": 1}


def test_pv_limit_with_a_given_rating_and_rounding():
    fake = FakeRegisterClient(holding=SUNSPEC)
    result = pv_writer(fake, rated_w=3000).write(_setpoint("pv", SetpointKind.PV_LIMIT, 1000))
    assert result.ok
    assert fake.registers["holding"][40155] == 3333  # 33.333 % -> 33.33 %
    assert result.readback_w == 1000  # 33.33 % of 3000 W = 999.9 W


def test_pv_limit_above_the_rating_means_no_curtailment_and_says_so():
    fake = FakeRegisterClient(holding=SUNSPEC)
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, 8000))
    assert result.ok
    assert "8000 W is above WMax 5000 W: written as 100 %" in result.reason
    assert fake.registers["holding"][40155] == 10000


def test_negative_pv_limit_is_refused_and_nothing_is_written():
    fake = FakeRegisterClient(holding=SUNSPEC)
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, -5))
    assert not result.ok
    assert result.reason == "refused: a PV limit must be >= 0 W, got -5 W"
    assert fake.writes == []


def test_pv_limit_without_a_known_rating_is_refused():
    fake = FakeRegisterClient(holding={**SUNSPEC, 40125: 0xFFFF})  # WRtg not implemented
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, 1000))
    assert not result.ok
    assert "WMax unknown" in result.reason
    assert fake.writes == []


def battery_writer(fake):
    return DeviceWriter(DeviceId("bat"), fake, load_register_map("battery"))


@pytest.mark.parametrize(("p_w", "registers"), [(2000, (0, 2000)), (-5000, (0xFFFF, 0xEC78))])
def test_battery_setpoint_is_written_and_confirmed(p_w, registers):
    fake = FakeRegisterClient(holding=BATTERY)
    result = battery_writer(fake).write(_setpoint("bat", SetpointKind.BATTERY, p_w))
    assert result.ok, result.reason
    assert result.readback_w == p_w
    assert [(w.address, w.values) for w in fake.writes] == [(200, registers)]


@pytest.mark.parametrize("p_w", [5001, -9000])
def test_out_of_range_battery_setpoint_is_refused_and_reported(p_w):
    fake = FakeRegisterClient(holding=BATTERY)
    result = battery_writer(fake).write(_setpoint("bat", SetpointKind.BATTERY, p_w))
    assert not result.ok
    assert f"{p_w} W for 'PowerSetpoint' is outside the allowed -5000..5000 W" in result.reason
    assert fake.writes == []
    assert result.readback_w is None


def test_setpoints_need_a_writable_field():
    fake = FakeRegisterClient(input=SDM630)
    w = DeviceWriter(DeviceId("m"), fake, load_register_map("sdm630"))
    result = w.write(_setpoint("m", SetpointKind.PV_LIMIT, 100))
    assert not result.ok
    assert "has no field for w_max_lim_pct" in result.reason
    doc = {
        "name": "ro",
        "fields": [
            {"name": "p", "address": 0, "kind": "int16", "unit": "W", "target": "p_w"},
            {"name": "sp", "address": 1, "kind": "int16", "unit": "W",
             "target": "battery_setpoint_w"},
        ],
    }  # fmt: skip
    fake = FakeRegisterClient(holding={0: 0, 1: 0})
    w = DeviceWriter(DeviceId("b"), fake, parse_register_map(doc))
    result = w.write(_setpoint("b", SetpointKind.BATTERY, 100))
    assert not result.ok
    assert "'sp' (battery_setpoint_w) is not in the allow-list" in result.reason
    assert fake.writes == []


def test_setpoint_for_another_device_is_refused():
    result = battery_writer(FakeRegisterClient(holding=BATTERY)).write(
        _setpoint("other", SetpointKind.BATTERY, 100)
    )
    assert not result.ok
    assert "setpoint for 'other' sent to 'bat'" in result.reason


def test_device_rejecting_the_write_is_reported():
    fake = FakeRegisterClient(holding=BATTERY, writable=())
    result = battery_writer(fake).write(_setpoint("bat", SetpointKind.BATTERY, 100))
    assert not result.ok
    assert result.reason.startswith("device error: ")
    assert "code 2" in result.reason


class _SlowDevice(FakeRegisterClient):
    """A device that acknowledges writes but keeps its old value."""

    def write_registers(self, address, values):
        super().write_registers(address, [0] * len(values))  # keeps the old value


def test_read_back_mismatch_is_not_ok():
    fake = _SlowDevice(holding=BATTERY)
    result = battery_writer(fake).write(_setpoint("bat", SetpointKind.BATTERY, 1500))
    assert not result.ok
    assert "read back PowerSetpoint = 0" in result.reason
    assert "after writing registers [0, 1500]" in result.reason
    assert result.written == (("PowerSetpoint", 1500.0),)


def test_unavailable_device_write_is_not_ok():
    fake = FakeRegisterClient(holding=SUNSPEC)
    fake.set_fault("unavailable")
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, 1000))
    assert not result.ok
    assert result.reason == (
        "device error: fake device: unavailable (injected fault); writes paused for 1 s"
    )


# ---------------------------------------------------------------------------- SunSpec control

DER_STORAGE = [1, 701, 702, 704, 802]


def der_storage(make_sunspec_image, **values):
    regs = make_sunspec_image(DER_STORAGE, values={
        "704.WSet_SF": 0, "704.WMaxLimPct_SF": 0xFFFE, "704.WSet": [0, 0], "704.WSetEna": 0,
        "704.WSetMod": 0, "802.WChaDisChaMax_SF": 0, "802.WChaRteMax": 4000,
        "802.WDisChaRteMax": 3000, **values,
    })  # fmt: skip
    fake = FakeRegisterClient(holding=regs)
    rmap = sunspec.discover(fake).register_map("bat")
    fake.requests.clear()
    return fake, DeviceWriter(DeviceId("bat"), fake, rmap)


def test_704_watt_setpoint_writes_mode_then_value_then_enable(make_sunspec_image):
    fake, writer = der_storage(make_sunspec_image)
    result = writer.write(_setpoint("bat", SetpointKind.BATTERY, -2500))  # charge 2.5 kW
    assert result.ok, result.reason
    assert result.readback_w == -2500
    assert [name for name, _ in result.written] == ["704.WSetMod", "704.WSet", "704.WSetEna"]
    wset = writer.register_map.field("704.WSet").address
    holding = fake.registers["holding"]
    assert [holding[wset], holding[wset + 1]] == [0xFFFF, 0xF63C]  # int32 -2500


@pytest.mark.parametrize(
    ("p_w", "message"),
    [(3001, "3001 W discharge is beyond 802.WDisChaRteMax = 3000 W"),
     (-4001, "4001 W charge is beyond 802.WChaRteMax = 4000 W")],
)  # fmt: skip
def test_704_setpoint_beyond_the_battery_rating_never_reaches_the_wire(
    make_sunspec_image, p_w, message
):
    fake, writer = der_storage(make_sunspec_image)
    result = writer.write(_setpoint("bat", SetpointKind.BATTERY, p_w))
    assert not result.ok
    assert message in result.reason
    assert fake.writes == []


def test_an_unbounded_setpoint_is_refused(make_sunspec_image):
    fake, writer = der_storage(make_sunspec_image, **{"802.WDisChaRteMax": 0xFFFF})
    result = writer.write(_setpoint("bat", SetpointKind.BATTERY, 1000))
    assert not result.ok
    assert "no bounds" in result.reason
    assert "refusing an unbounded write" in result.reason
    assert fake.writes == []


def test_704_pv_limit_and_its_enable(make_sunspec_image):
    regs = make_sunspec_image([1, 701, 702, 704], values={
        "702.W_SF": 0, "702.WMaxRtg": 8000, "704.WMaxLimPct_SF": 0xFFFE,
        "704.WMaxLimPct": 10000, "704.WMaxLimPctEna": 0,
    })  # fmt: skip
    fake = FakeRegisterClient(holding=regs)
    rmap = sunspec.discover(fake).register_map("pv")
    result = DeviceWriter(DeviceId("pv"), fake, rmap).write(
        _setpoint("pv", SetpointKind.PV_LIMIT, 2000)
    )
    assert result.ok, result.reason
    assert dict(result.written) == {"704.WMaxLimPct": 25.0, "704.WMaxLimPctEna": 1.0}
    assert result.readback_w == 2000


def test_124_storage_rates_pin_the_power(make_sunspec_image):
    regs = make_sunspec_image([1, 103, 120, 124], values={
        "124.WChaMax": 5000, "124.WChaMax_SF": 0, "124.InOutWRte_SF": 0xFFFE,
        "124.InWRte": 10000, "124.OutWRte": 10000, "124.StorCtl_Mod": 0,
    })  # fmt: skip
    fake = FakeRegisterClient(holding=regs)
    rmap = sunspec.discover(fake).register_map("bat")
    writer = DeviceWriter(DeviceId("bat"), fake, rmap)
    result = writer.write(_setpoint("bat", SetpointKind.BATTERY, 1500))  # discharge 30 %
    assert result.ok, result.reason
    assert dict(result.written) == {"124.InWRte": -30.0, "124.OutWRte": 30.0,
                                    "124.StorCtl_Mod": 3.0}  # fmt: skip
    assert result.readback_w == 1500
    in_rte = rmap.field("124.InWRte").address
    assert fake.registers["holding"][in_rte] == (-3000) & 0xFFFF
    fake.requests.clear()
    refused = writer.write(_setpoint("bat", SetpointKind.BATTERY, -6000))
    assert not refused.ok
    assert "beyond 124.WChaMax = 5000 W" in refused.reason
    assert fake.writes == []


def test_no_unlisted_or_out_of_range_write_reaches_the_wire(make_sunspec_image):
    """Whatever is asked, the only addresses written are the allow-listed ones."""
    fake, writer = der_storage(make_sunspec_image)
    allowed = {a for f in writer.register_map.writable_fields for a in range(f.address, f.end)}
    for p_w in (-(10**9), -4001, -4000, -1, 0, 1, 2999, 3000, 3001, 10**9):
        writer.write(_setpoint("bat", SetpointKind.BATTERY, p_w))
        writer.write(_setpoint("bat", SetpointKind.PV_LIMIT, p_w))
    written = {a for w in fake.writes for a in range(w.address, w.address + w.count)}
    assert written <= allowed
    values = [
        w.values for w in fake.writes if w.address == writer.register_map.field("704.WSet").address
    ]
    setpoints = {(v[0] << 16 | v[1]) - (1 << 32 if v[0] >> 15 else 0) for v in values}
    assert setpoints <= set(range(-4000, 3001))


def test_unexpected_client_errors_never_escape():
    w = DeviceWriter(DeviceId("b"), BrokenClient(), load_register_map("battery"))
    result = w.write(_setpoint("b", SetpointKind.BATTERY, 100))
    assert not result.ok
    assert "unexpected RuntimeError" in result.reason

"""SunSpec: definitions from pysunspec2, layout cross-checked against pysunspec2's own decoder,
discovery at 40000/0/50000, not-implemented values, generated register maps."""

from __future__ import annotations

import json
import math
import random
import struct
from datetime import UTC, datetime

import pytest
import sunspec2.device

from adapters.modbus import sunspec
from adapters.modbus.codec import RegisterKind
from adapters.modbus.errors import DeviceError, DeviceUnavailable, RegisterMapError, SunSpecError
from adapters.modbus.fake import FakeRegisterClient
from adapters.modbus.mapfiles import load_register_map, parse_register_map
from adapters.modbus.reading import DeviceReader
from adapters.modbus.regmap import Target
from market.domain import BusId, DeviceId, ParticipantId, ReadingQuality

T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
NAN32 = [0x7FC0, 0x0000]


def reader(client, register_map):
    return DeviceReader(DeviceId("d"), ParticipantId("p"), BusId("b"), client, register_map)


# ---------------------------------------------------------------------------- definitions


def test_every_listed_model_comes_from_pysunspec2():
    shipped = sunspec.available_models()
    assert len(shipped) >= 100
    assert set(sunspec.MODELS) <= set(shipped)
    w = next(p for p in sunspec.model_definition(103).group.points if p.name == "W")
    assert (w.type, w.size, w.sf, w.units) == ("int16", 1, "W_SF", "W")
    st = next(p for p in sunspec.model_definition(103).group.points if p.name == "St")
    assert st.symbols[4] == "MPPT"


def test_every_shipped_model_lays_out_and_matches_its_declared_length():
    for model_id in sunspec.available_models():
        definition = sunspec.model_definition(model_id)
        layout = sunspec.layout_model(definition)
        fixed_l = definition.group.points[1]
        if fixed_l.value is not None and not definition.group.groups:
            assert layout.length == fixed_l.value, model_id
        offsets = [p.offset for p in layout.points]
        assert offsets == sorted(offsets)
        assert layout.points[0].path == "ID"


def test_unknown_model_and_bad_definitions_are_named():
    with pytest.raises(SunSpecError, match="model 65000 is not defined"):
        sunspec.model_definition(65000)
    with pytest.raises(SunSpecError, match="first points must be ID and L"):
        sunspec.parse_model_definition({"id": 9, "group": {"name": "x", "points": []}})
    bad_type = {"id": 9, "group": {"name": "x", "points": [
        {"name": "ID", "type": "uint16", "size": 1}, {"name": "L", "type": "uint16", "size": 1},
        {"name": "Q", "type": "int24", "size": 1}]}}  # fmt: skip
    with pytest.raises(SunSpecError, match="unknown type 'int24'"):
        sunspec.parse_model_definition(bad_type)


def test_layout_of_the_inverter_chain_matches_the_published_addresses():
    device = sunspec.declared_device([1, 103, 120, 123])
    rmap = device.register_map("inv")
    # Addresses from the SunSpec information model (0-based protocol addresses).
    assert rmap.field("103.W").address == 40084
    assert rmap.field("103.WH").address == 40094
    assert rmap.field("120.WRtg").address == 40125
    assert rmap.field("123.WMaxLimPct").address == 40155
    assert rmap.field("123.WMaxLimPct_SF").address == 40173
    assert device.end_address == 40176


# ---------------------------------------------------------------------------- cross-check


def _random_model(model_id, rng, repeats=None):
    """Registers of one model with random contents, decodable by both implementations."""
    device = sunspec.declared_device([(model_id, repeats or {})])
    m = device.models[0]
    regs = [0] * (m.length + 2)
    regs[0], regs[1] = model_id, m.length
    for p in m.layout.points:
        kind = p.point.type
        o, n = p.offset, p.point.size
        if p.path in {"ID", "L"} or kind == "pad":
            continue
        if p.path in m.layout.counts:
            regs[o] = m.layout.counts[p.path]
        elif kind == "sunssf":
            regs[o] = rng.choice([0x8000, *[s & 0xFFFF for s in range(-3, 4)]])
        elif kind == "string":
            text = "".join(rng.choice("ABCxyz09 ") for _ in range(rng.randrange(2 * n + 1)))
            blob = text.encode().ljust(2 * n, b"\0")
            regs[o : o + n] = struct.unpack(f">{n}H", blob)
        elif kind in {"float32", "float64"}:
            value = rng.choice([math.nan, 0.0, rng.uniform(-1e4, 1e4)])
            fmt = ">f" if kind == "float32" else ">d"
            regs[o : o + n] = struct.unpack(f">{n}H", struct.pack(fmt, value))
        elif kind in {"ipaddr", "ipv6addr", "eui48"}:
            regs[o : o + n] = [rng.randrange(0x10000) for _ in range(n)]
        elif rng.random() < 0.15:  # a "not implemented" value
            null = {"int16": 0x8000, "int32": 0x8000, "int64": 0x8000}.get(kind)
            regs[o : o + n] = [null] + [0] * (n - 1) if null else (
                [0] * n if kind.startswith("acc") else [0xFFFF] * n)  # fmt: skip
        else:
            regs[o : o + n] = [rng.randrange(0x10000) for _ in range(n)]
    return m, regs


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                out.update(_flatten(item, f"{prefix}{k}[{i}]."))
        else:
            out[prefix + k] = v
    return out


CROSS_CHECKED = [(m, None) for m in sunspec.MODELS] + [
    (160, {"module": 3}),
    (705, {"Crv": 2, "Pt": 4}),
    (711, {"Ctl": 2}),
    (804, {"lithium_ion_string_module": 2}),
]


@pytest.mark.parametrize(("model_id", "repeats"), CROSS_CHECKED, ids=str)
def test_decoding_agrees_with_pysunspec2(model_id, repeats):
    """pysunspec2's own decoder (sunspec2.device.Model) is the independent reference."""
    rng = random.Random(model_id)
    for _ in range(20):
        m, regs = _random_model(model_id, rng, repeats)
        ours = {p.path: p.value for p in sunspec.decode_model(m.layout, regs)}
        data = b"".join(r.to_bytes(2, "big") for r in regs)
        ref_model = sunspec2.device.Model(model_id=model_id, model_len=m.length, data=data)
        assert not ref_model.error_info
        ref = _flatten(ref_model.get_dict(computed=True))
        compared = 0
        for path, decoded in ours.items():
            expected = ref.get(path)
            value = decoded or None if isinstance(decoded, str) else decoded
            if isinstance(expected, bytes | bytearray):  # eui48 / ipv6 come back raw
                continue
            if isinstance(expected, float) and math.isnan(expected):
                expected = None
            if path.rsplit(".", 1)[-1] in {"ID", "L"} or m.layout.point(path).point.type in {
                "ipaddr", "ipv6addr", "eui48"}:  # fmt: skip
                continue
            sf = m.layout.point(path).sf
            if isinstance(sf, str) and regs[m.layout.point(sf).offset] == 0x8000:
                # pysunspec2 then returns the unscaled raw number; a value of unknown
                # magnitude is no value here.
                assert value is None, path
                compared += 1
                continue
            if isinstance(expected, str):  # blank and NUL-only strings: both "nothing"
                expected = expected.rstrip("\0").rstrip() or None
            if isinstance(value, float) and isinstance(expected, int | float):
                assert value == pytest.approx(expected, rel=1e-9, abs=1e-9), path
            else:
                assert value == expected, (path, regs)
            compared += 1
        assert compared >= len(ours) - 12


# ---------------------------------------------------------------------------- decoding


def test_not_implemented_values_decode_to_none_never_to_a_number(make_sunspec_image):
    regs = make_sunspec_image([1, 103, 111, 701], values={
        "103.W": 1234, "103.W_SF": 0x8000,              # value, but its scale factor is missing
        "103.A": 0xFFFF, "103.A_SF": 0,                 # uint16 not implemented
        "103.VA": 0x8000, "103.VA_SF": 0,               # int16 not implemented
        "103.WH": [0, 0], "103.WH_SF": 0,               # acc32 that never counted
        "103.St": 0xFFFF,                               # enum16
        "103.Evt1": [0xFFFF, 0xFFFF],                   # bitfield32
        "111.W": NAN32,                                 # float NaN
        "701.TotWhInj": [0xFFFF] * 4, "701.TotWh_SF": 0,  # uint64
        "701.Hz": [0xFFFF, 0xFFFF], "701.Hz_SF": 0,     # uint32
        "701.W": 0x8000, "701.W_SF": 0,
    })  # fmt: skip
    device = sunspec.discover(FakeRegisterClient(holding=regs))
    by_model = {m.model_id: {p.path: p.value for p in m.decode()} for m in device.models}
    assert by_model[1]["Mn"] is None  # an all-zero string
    inv = by_model[103]
    for path in ("W", "W_SF", "A", "VA", "WH", "St", "Evt1"):
        assert inv[path] is None, path
    assert by_model[111]["W"] is None
    assert by_model[701]["TotWhInj"] is None
    assert by_model[701]["Hz"] is None
    assert by_model[701]["W"] is None


def test_scale_factors_enums_and_bitfields(make_sunspec_image):
    regs = make_sunspec_image([1, 103], values={
        "1.Mn": list(struct.unpack(">16H", b"ACME Solar".ljust(32, b"\0"))),
        "103.W": 0x0BB8, "103.W_SF": 0xFFFF,            # 3000 * 10^-1 = 300.0 W
        "103.WH": [0x0001, 0xE240], "103.WH_SF": 1,     # 123456 * 10 = 1234560 Wh
        "103.St": 4,                                    # MPPT
        "103.Evt1": [0, 0b101],                         # bits 0 and 2
        "103.TmpCab": 0xFF9C, "103.Tmp_SF": 0,          # -100 C
    })  # fmt: skip
    (common, inv) = sunspec.discover(FakeRegisterClient(holding=regs)).models
    decoded = {p.path: p for p in inv.decode()}
    assert decoded["W"].value == pytest.approx(300.0)
    assert decoded["W"].units == "W"
    assert decoded["WH"].value == 1234560
    assert decoded["St"].symbol == "MPPT"
    assert decoded["Evt1"].flags == ("GROUND_FAULT", "AC_DISCONNECT")
    assert decoded["TmpCab"].value == -100
    assert {p.path: p.value for p in common.decode()}["Mn"] == "ACME Solar"


def test_repeating_groups_fill_the_model_length_and_follow_count_points(make_sunspec_image):
    regs = make_sunspec_image([1, (160, {"module": 2}), (705, {"Crv": 2, "Pt": 3})], values={
        "160.DCW_SF": 0, "160.module[1].DCW": 750,
        "705.V_SF": 0xFFFF, "705.Crv[1].Pt[2].V": 2300,
    })  # fmt: skip
    _, mppt, volt_var = sunspec.discover(FakeRegisterClient(holding=regs)).models
    assert mppt.length == 8 + 2 * 20
    points = {p.path: p.value for p in mppt.decode()}
    assert points["module[1].DCW"] == 750
    assert "module[2].DCW" not in points
    curves = {p.path: p.value for p in volt_var.decode()}
    assert curves["Crv[1].Pt[2].V"] == pytest.approx(230.0)
    assert "Crv[1].Pt[3].V" not in curves


def test_registers_that_do_not_fit_the_definition_are_refused():
    definition = sunspec.model_definition(705)
    short = [705, 4] + [0] * 4
    with pytest.raises(SunSpecError, match="too short"):
        sunspec.layout_model(definition, registers=short)
    layout = sunspec.layout_model(definition, repeats={"Crv": 1, "Pt": 1})
    regs = [705, layout.length] + [0] * layout.length
    regs[layout.point("NCrv").offset] = 500  # a count far beyond L
    with pytest.raises(SunSpecError, match="do not fit"):
        sunspec.layout_model(definition, registers=regs)
    with pytest.raises(SunSpecError, match="L = 10 but only 3 registers"):
        sunspec.layout_model(definition, registers=[705, 10, 0, 0, 0])


# ---------------------------------------------------------------------------- discovery


@pytest.mark.parametrize("base", [40000, 0, 50000])
def test_discovery_finds_the_marker_at_each_base_address(base, make_sunspec_image):
    fake = FakeRegisterClient(holding=make_sunspec_image([1, 203], base), fill=None)
    device = sunspec.discover(fake)
    assert device.base_address == base
    assert device.model_ids == (1, 203)
    assert [m.address for m in device.models] == [base + 2, base + 70]
    reads = [(r.address, r.count) for r in fake.requests]
    # Tried 40000, then 0, then 50000, stopping at the marker; then the chain, header by header.
    tried = [a for a, c in reads if c == 2 and a in sunspec.BASE_ADDRESSES]
    assert tried == list(sunspec.BASE_ADDRESSES[: sunspec.BASE_ADDRESSES.index(base) + 1])


def test_discovery_prefers_40000_and_skips_vendor_models(make_sunspec_image):
    regs = make_sunspec_image([1, 203], 40000)
    # A vendor model 65000 (not defined by SunSpec) between 1 and 203: skipped by its L.
    vendor = {40070: 65000, 40071: 3, 40072: 1, 40073: 2, 40074: 3}
    shifted = {(a + 5 if a >= 40070 else a): v for a, v in regs.items()}
    device = sunspec.discover(FakeRegisterClient(holding={**shifted, **vendor}))
    assert device.model_ids == (1, 65000, 203)
    assert device.models[1].layout is None
    assert device.models[1].decode() == ()
    rmap = device.register_map("v")
    assert rmap.field("65000.ID").expect == 65000
    assert rmap.for_target(Target.P_W).name == "203.W"


def test_no_marker_is_not_a_sunspec_device():
    sdm630_like = FakeRegisterClient(input={0: 0x4366}, fill=None)  # no holding registers
    with pytest.raises(SunSpecError, match="no SunSpec marker 'SunS' at 40000, 0, 50000"):
        sunspec.discover(sdm630_like)
    zeros = FakeRegisterClient()  # answers everything with 0
    with pytest.raises(SunSpecError, match="not a SunSpec device"):
        sunspec.discover(zeros)


def test_broken_chains_are_reported(make_sunspec_image):
    regs = make_sunspec_image([1, 203], end=False)
    device = sunspec.discover(FakeRegisterClient(holding=regs, fill=None))
    assert device.model_ids == (1, 203)  # chain ends where the registers end
    looping = {40000: 0x5375, 40001: 0x6E53}
    looping.update({40002 + 2 * i: 65100 + (i % 3) for i in range(200)})  # vendor models, L = 0
    with pytest.raises(SunSpecError, match="more than 64 models"):
        sunspec.discover(FakeRegisterClient(holding=looping))
    zero_id = {40000: 0x5375, 40001: 0x6E53, 40002: 0, 40003: 10}
    with pytest.raises(SunSpecError, match="model 0 with L = 10"):
        sunspec.discover(FakeRegisterClient(holding=zero_id))
    past_end = {40000: 0x5375, 40001: 0x6E53, 40002: 1, 40003: 30000}
    with pytest.raises(SunSpecError, match="L = 30000"):
        sunspec.discover(FakeRegisterClient(holding=past_end))


def test_a_dead_or_refusing_device_is_not_mistaken_for_a_missing_marker():
    dead = FakeRegisterClient()
    dead.set_fault("unavailable")
    with pytest.raises(DeviceUnavailable):
        sunspec.discover(dead)
    failing = FakeRegisterClient()
    failing.set_fault("exception")  # code 4, server device failure: not "nothing there"
    with pytest.raises(DeviceError) as info:
        sunspec.discover(failing)
    assert info.value.code == 4


# ---------------------------------------------------------------------------- register maps


def test_generated_maps_feed_the_canonical_targets_from_one_table():
    inv = sunspec.declared_device([1, 103, 120, 123]).register_map("inv")
    w = inv.for_target(Target.P_W)
    assert (w.name, w.kind, w.invert, w.unit, w.scale_factor_field) == (
        "103.W",
        RegisterKind.INT16,
        True,
        "W",
        "103.W_SF",
    )
    assert inv.for_target(Target.EXPORT_WH_TOTAL).name == "103.WH"
    assert inv.for_target(Target.W_MAX).name == "120.WRtg"
    assert {f.name for f in inv.writable_fields} == {
        "123.WMaxLimPct",
        "123.WMaxLim_Ena",
        "123.WMaxLimPct_RvrtTms",
    }
    der = sunspec.declared_device([1, 701, 702, 704, 802]).register_map("der")
    assert der.for_target(Target.P_W).name == "701.W"
    assert der.for_target(Target.IMPORT_WH_TOTAL).name == "701.TotWhAbs"
    assert der.for_target(Target.SOC_PERCENT).name == "802.SoC"
    assert der.for_target(Target.W_MAX_LIM_PCT).name == "704.WMaxLimPct"
    assert der.for_target(Target.W_MAX_LIM_ENA).name == "704.WMaxLimPctEna"
    assert der.for_target(Target.BATTERY_SETPOINT_W).name == "704.WSet"
    assert der.for_target(Target.W_DISCHARGE_MAX).name == "802.WDisChaRteMax"
    assert der.for_target(Target.CAPACITY_WH).name == "802.WHRtg"
    assert der.for_target(Target.W_MAX_LIM_RVRT_S).name == "704.WMaxLimPctRvrtTms"
    assert der.for_target(Target.W_MAX_LIM_RVRT_ENA).name == "704.WMaxLimPctEnaRvrt"
    assert der.for_target(Target.BATTERY_SETPOINT_RVRT_S).name == "704.WSetRvrtTms"
    both = sunspec.declared_device([1, 103, 123, 704]).register_map("both")
    # One feature, one model: limit and enable never come from different models.
    assert both.for_target(Target.W_MAX_LIM_PCT).name == "704.WMaxLimPct"
    assert both.for_target(Target.W_MAX_LIM_ENA).name == "704.WMaxLimPctEna"
    meter = sunspec.declared_device([1, 203]).register_map("m")
    assert not meter.for_target(Target.P_W).invert  # meters: + = import already


def test_only_targeted_control_points_are_writable():
    der = sunspec.declared_device([1, 701, 702, 704, 802, 124]).register_map("der")
    writable = {f.name for f in der.writable_fields}
    assert writable == {"704.WMaxLimPct", "704.WMaxLimPctEna", "704.WSet", "704.WSetEna",
                        "704.WSetMod", "704.WMaxLimPctRvrt", "704.WMaxLimPctEnaRvrt",
                        "704.WMaxLimPctRvrtTms", "704.WSetRvrt", "704.WSetEnaRvrt",
                        "704.WSetRvrtTms"}  # fmt: skip
    definition_rw = [p for p in sunspec.model_definition(704).group.points if p.writable]
    assert len(definition_rw) > len(writable)  # the definition allows far more


def test_repeated_models_get_numbered_names_and_identity_fields():
    rmap = sunspec.declared_device([1, 203, 203]).register_map("two meters")
    assert rmap.field("203#2.W").address == rmap.field("203.W").address + 107
    assert rmap.for_target(Target.P_W).name == "203.W"
    assert [f.expect for f in rmap.identity_fields if f.name.endswith(".ID")] == [
        1, 203, 203, 65535]  # fmt: skip


def test_builtin_sunspec_maps_are_declared_layouts():
    for name, ids in {
        "sunspec_inverter": (1, 103, 120, 123),
        "sunspec_der_inverter": (1, 701, 702, 704),
        "sunspec_storage": (1, 103, 120, 124),
        "sunspec_der_storage": (1, 701, 702, 704, 802),
        "sunspec_meter": (1, 203),
    }.items():
        rmap = load_register_map(name)
        found = [f.expect for f in rmap.identity_fields if f.name.endswith(".ID")][:-1]
        assert tuple(found) == ids, name


@pytest.mark.parametrize(
    ("sunspec_section", "message"),
    [
        ({"models": [1, 65000]}, "model 65000 is not defined"),
        ({"models": [1, "103"]}, "a SunSpec model is an id"),
        ({"base_address": 123, "models": [1]}, "base address is one of"),
        ({"modles": [1]}, "'sunspec' is"),
    ],
)
def test_bad_sunspec_sections_are_named(sunspec_section, message):
    with pytest.raises(RegisterMapError, match=message):
        parse_register_map({"name": "x", "sunspec": sunspec_section}, "x.json")
    with pytest.raises(RegisterMapError, match="next to 'sunspec'"):
        parse_register_map({"name": "x", "sunspec": {"models": [1]}, "fields": []}, "x.json")


def test_a_user_sunspec_map_file_loads(tmp_path):
    path = tmp_path / "meter.json"
    path.write_text(json.dumps({"name": "my meter", "unit_id": 3,
                                "sunspec": {"base_address": 0, "models": [1, 201]}}))  # fmt: skip
    rmap = load_register_map(path)
    assert rmap.unit_id == 3
    assert rmap.field("SunS").address == 0
    assert rmap.for_target(Target.P_W).name == "201.W"


def test_reader_reads_a_discovered_der_storage(make_sunspec_image):
    regs = make_sunspec_image([1, 701, 702, 704, 802], values={
        "701.W": 0xF830, "701.W_SF": 0,                      # -2000 W: absorbing (charging)
        "701.TotWhInj": [0, 0, 0, 5000], "701.TotWhAbs": [0, 0, 0, 7000], "701.TotWh_SF": 0,
        "802.SoC": 655, "802.SoC_SF": 0xFFFF,                # 65.5 %
    })  # fmt: skip
    fake = FakeRegisterClient(holding=regs)
    device = sunspec.discover(fake)
    r = reader(fake, device.register_map("bat")).read(T0)
    assert r.quality is ReadingQuality.OK
    assert (r.p_w, r.import_wh_total, r.export_wh_total) == (2000, 7000, 5000)
    assert r.soc_percent == pytest.approx(65.5)


def test_garbage_behind_the_marker_is_refused_or_decoded_never_a_crash(make_sunspec_image):
    rng = random.Random(7)
    good = make_sunspec_image([1, (160, {"module": 2}), 203, (705, {"Crv": 1, "Pt": 2})])
    outcomes = {"device": 0, "refused": 0}
    for _ in range(300):
        regs = dict(good)
        for _ in range(rng.randrange(1, 6)):  # corrupt headers, counts and values
            address = rng.choice(list(regs))
            regs[address] = rng.choice((0, 1, 2, 0xFFFF, 0x8000, rng.randrange(0x10000)))
        regs[40000], regs[40001] = 0x5375, 0x6E53
        try:
            device = sunspec.discover(FakeRegisterClient(holding=regs, fill=None))
        except (SunSpecError, DeviceError):
            outcomes["refused"] += 1
            continue
        for m in device.models:
            m.decode()
        device.register_map("fuzzed")
        outcomes["device"] += 1
    assert outcomes["device"]
    assert outcomes["refused"]

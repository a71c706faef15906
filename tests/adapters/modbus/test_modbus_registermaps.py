"""Register maps: the built-in JSON files, the format, and clear errors on bad maps."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from adapters.modbus.codec import RegisterKind, Table, WordOrder
from adapters.modbus.errors import AdapterError, RegisterMapError
from adapters.modbus.mapfiles import available_register_maps, load_register_map, parse_register_map
from adapters.modbus.regmap import RegisterField, Target

README = Path(__file__).parents[3] / "adapters" / "modbus" / "registermaps" / "README.md"


def test_builtin_maps_are_listed_and_load():
    assert set(available_register_maps()) >= {"sunspec_inverter", "sdm630", "battery"}
    for name in available_register_maps():
        assert load_register_map(name).name == name


def test_sunspec_inverter_map():
    m = load_register_map("sunspec_inverter")
    w = m.field("103.W")
    assert (w.address, w.kind, w.scale_factor_field, w.invert) == (
        40084,
        RegisterKind.INT16,
        "103.W_SF",
        True,
    )
    assert m.for_target(Target.P_W) is w
    assert m.for_target("export_wh_total").name == "103.WH"
    assert m.field("103.WH").kind is RegisterKind.ACC32
    assert m.for_target(Target.W_MAX).name == "120.WRtg"
    pct = m.for_target(Target.W_MAX_LIM_PCT)
    assert (pct.name, pct.address, pct.writable, pct.min, pct.max) == (
        "123.WMaxLimPct",
        40155,
        True,
        0,
        100,
    )
    assert m.scale_factor_of(pct).name == "123.WMaxLimPct_SF"
    assert m.for_target(Target.W_MAX_LIM_ENA).writable
    assert {f.name for f in m.writable_fields} == {
        "123.WMaxLimPct",
        "123.WMaxLim_Ena",
        "123.WMaxLimPct_RvrtTms",
    }
    timer = m.for_target(Target.W_MAX_LIM_RVRT_S)
    assert (timer.name, timer.unit, timer.max) == ("123.WMaxLimPct_RvrtTms", "s", 65534)
    assert m.field("SunS").expect == "SunS"
    assert m.field("SunS").expected_registers() == [0x5375, 0x6E53]
    assert [f.expect for f in m.identity_fields if f.name.endswith(".ID")] == [
        1,
        103,
        120,
        123,
        65535,
    ]


def test_sdm630_map():
    m = load_register_map("sdm630")
    p = m.for_target(Target.P_W)
    assert (p.address, p.table, p.kind, p.unit) == (0x34, Table.INPUT, RegisterKind.FLOAT32, "W")
    imp = m.for_target(Target.IMPORT_WH_TOTAL)
    exp = m.for_target(Target.EXPORT_WH_TOTAL)
    assert (imp.address, imp.unit, imp.unit_factor) == (0x48, "kWh", 1000)
    assert exp.address == 0x4A
    assert not m.writable_fields


def test_battery_map():
    m = load_register_map("battery")
    p = m.for_target(Target.P_W)
    assert p.invert
    assert m.for_target(Target.SOC_PERCENT).scale == 0.1
    assert m.for_target(Target.IMPORT_WH_TOTAL).word_order is WordOrder.CDAB
    sp = m.for_target(Target.BATTERY_SETPOINT_W)
    assert (sp.writable, sp.min, sp.max) == (True, -5000, 5000)


def test_fields_are_frozen_and_hashable():
    m = load_register_map("sdm630")
    with pytest.raises(AttributeError):
        m.fields[0].address = 1  # type: ignore[misc]
    assert len({m, load_register_map("sdm630")}) == 1


def test_load_by_path_and_hex_addresses(tmp_path):
    doc = {
        "name": "mine",
        "defaults": {"table": "input"},
        "fields": [
            {"name": "p", "address": "0x10", "kind": "int16", "unit": "kW", "target": "p_w"},
        ],
    }
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(doc))
    m = load_register_map(path)
    assert m.field("p").address == 16
    assert m.field("p").table is Table.INPUT
    assert load_register_map(str(path)) == m
    assert m.field("p").to_canonical(1.5) == 1500.0


def test_readme_example_is_a_valid_map():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```json\n(.*?)```", text, re.DOTALL)
    assert block is not None
    m = parse_register_map(json.loads(block.group(1)), "README")
    assert m.for_target(Target.IMPORT_WH_TOTAL).word_order is WordOrder.CDAB


BASE = {
    "name": "m",
    "fields": [
        {"name": "W", "address": 10, "kind": "int16", "scale_factor_field": "W_SF", "unit": "W",
         "target": "p_w"},
        {"name": "W_SF", "address": 11, "kind": "sunssf"},
        {"name": "E", "address": 12, "kind": "uint32", "unit": "kWh", "target": "import_wh_total"},
    ],
}  # fmt: skip


def _mutated(path, value):
    doc = copy.deepcopy(BASE)
    if path[0] == "field":
        doc["fields"][path[1]][path[2]] = value
    elif path[0] == "add":
        doc["fields"].append(value)
    elif path[0] == "del":
        del doc["fields"][path[1]][path[2]]
    else:
        doc[path[0]] = value
    return doc


BAD = [
    (("field", 0, "kind"), "int17", "field 'W': unknown kind 'int17'"),
    (("field", 0, "target"), "power", "field 'W': unknown target 'power'"),
    (("field", 2, "unit"), "W", "field 'E': unit 'W' cannot feed import_wh_total"),
    (("field", 2, "invert"), True, "field 'E': invert makes no sense for import_wh_total"),
    (("field", 2, "invert"), "yes", "field 'E': invert must be true or false"),
    (("field", 0, "word_order"), "BADC", "field 'W': unknown word_order 'BADC'"),
    (("field", 0, "table"), "coils", "field 'W': unknown table 'coils'"),
    (("field", 0, "address"), 70000, "field 'W': address 70000"),
    (("field", 0, "address"), "0xZZ", "field 'W': address '0xZZ'"),
    (("field", 0, "address"), 1.5, "field 'W': address must be an integer"),
    (("field", 0, "scale"), 0, "field 'W': scale must be finite and non-zero"),
    (("field", 0, "scale_factor_field"), "NOPE", "field 'W': scale factor field 'NOPE' does not"),
    (("field", 0, "scale_factor_field"), "E", "scale factor field 'E' must be sunssf or int16"),
    (("field", 0, "scalefactor"), "W_SF", "field 'W': unknown key(s) ['scalefactor']"),
    (("field", 1, "name"), "W", "field 'W' is defined twice"),
    (("field", 1, "address"), 10, "field 'W_SF' (holding 10) overlaps 'W'"),
    (("add",), {"name": "P2", "address": 20, "kind": "int16", "unit": "W", "target": "p_w"},
     "field 'P2': target p_w is already fed by 'W'"),
    (("field", 2, "writable"), True, None),  # a writable holding register is fine
    (("field", 2, "min"), 5, None),
    (("field", 0, "kind"), "string", "field 'W': a string needs 'length'"),
    (("field", 0, "expect"), "text", "field 'W': expect 'text'"),
    (("del", 0, "address"), None, "field 'W': missing 'address'"),
    (("add",), {"name": "X", "address": 20, "kind": "int16", "table": "input", "writable": True},
     "field 'X': only holding registers are writable"),
    (("add",), {"name": "X", "address": 20, "kind": "int16", "min": 5, "max": 1},
     "field 'X': min 5 > max 1"),
    (("add",), {"name": "X", "address": 20, "kind": "int16", "invert": True},
     "field 'X': invert needs a target"),
    (("add",), {"name": "X", "address": 20, "kind": "string", "length": 2, "target": "p_w",
                "unit": "W"}, "field 'X': a string field takes no scale"),
    (("add",), [1, 2], "field #3: must be a JSON object"),
    (("unit_id",), 300, "unit_id must be 0..255"),
    (("max_read_gap",), -1, "max_read_gap must be an integer >= 0"),
    (("fields",), [], "has no fields"),
    (("fields",), {}, "'fields' must be a list"),
    (("name",), "", "'name' must be a non-empty string"),
    (("colour",), "red", "unknown key(s) ['colour']"),
    (("defaults",), {"scale": 2}, "'defaults' may only set"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "message"), BAD)
def test_bad_maps_name_the_field(path, value, message):
    doc = _mutated(path, value)
    if message is None:
        parse_register_map(doc, "ok.json")
        return
    with pytest.raises(RegisterMapError) as info:
        parse_register_map(doc, "bad.json")
    assert str(info.value).startswith("bad.json: ")
    assert message in str(info.value)
    assert isinstance(info.value, AdapterError)
    assert isinstance(info.value, ValueError)


def test_unknown_builtin_name_lists_the_known_ones():
    with pytest.raises(RegisterMapError, match=r"no built-in register map 'sdm999'.*sdm630"):
        load_register_map("sdm999")


def test_missing_file_and_invalid_json(tmp_path):
    with pytest.raises(RegisterMapError, match="cannot read register map"):
        load_register_map(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "fields": [,]}')
    with pytest.raises(RegisterMapError, match=r"bad.json: invalid JSON at line 2"):
        load_register_map(bad)
    with pytest.raises(RegisterMapError, match="is a JSON object"):
        parse_register_map([1], "list.json")


def test_field_lookup_errors():
    m = load_register_map("sdm630")
    with pytest.raises(RegisterMapError, match="register map 'sdm630': no field 'W'"):
        m.field("W")
    assert m.for_target(Target.SOC_PERCENT) is None


def test_field_constructor_validates_too():
    with pytest.raises(RegisterMapError, match="field 'x': unit 'kWh' cannot feed p_w"):
        RegisterField(name="x", address=0, kind=RegisterKind.INT16, unit="kWh", target=Target.P_W)

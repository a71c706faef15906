"""The field codec: registers <-> a field's value, with scale, scale factor and unit."""

from __future__ import annotations

import pytest

from adapters.modbus.fields import decode_field, encode_field
from adapters.modbus.mapfiles import load_register_map
from adapters.modbus.regmap import Target


def test_decode_and_encode_field_with_scale_and_unit():
    m = load_register_map("sunspec_inverter")
    w = m.field("103.W")
    assert decode_field(w, [0x0BB8], scale_factor=-1) == 300.0
    assert w.to_canonical(300.0) == -300.0  # production is export
    assert decode_field(w, [0x0BB8], scale_factor=None) is None
    assert encode_field(w, 300.0, scale_factor=-1) == [0x0BB8]
    soc = load_register_map("battery").for_target(Target.SOC_PERCENT)
    assert decode_field(soc, [505]) == pytest.approx(50.5)
    assert encode_field(soc, 50.5) == [505]
    imp = load_register_map("sdm630").for_target(Target.IMPORT_WH_TOTAL)
    assert imp.to_canonical(12.5) == 12500.0
    assert imp.from_canonical(12500.0) == 12.5

"""Read planning: fields grouped into as few requests as the protocol allows."""

from __future__ import annotations

from adapters.modbus.codec import Table
from adapters.modbus.image import ReadBlock, plan_reads
from adapters.modbus.mapfiles import load_register_map


def test_plan_reads_merges_neighbours_within_the_gap():
    m = load_register_map("sunspec_inverter")
    flds = m.with_scale_factors([m.field("103.W"), m.field("103.WH")])
    assert plan_reads(flds, max_gap=32) == (ReadBlock(Table.HOLDING, 40084, 13),)
    assert plan_reads(flds, max_gap=0) == (
        ReadBlock(Table.HOLDING, 40084, 2),
        ReadBlock(Table.HOLDING, 40094, 3),
    )
    # the 125-register limit splits even contiguous fields
    assert len(plan_reads(m.fields, max_gap=1000)) == 2
    sdm = load_register_map("sdm630")
    assert plan_reads(sdm.fields, max_gap=32) == (
        ReadBlock(Table.INPUT, 0, 6),
        ReadBlock(Table.INPUT, 0x34, 24),
    )
    assert plan_reads(sdm.fields, max_gap=46) == (ReadBlock(Table.INPUT, 0, 76),)

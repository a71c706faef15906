"""JSON forms of the kernel's types (``market.codec``): literal forms and round trips."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from market_factories import INTERVAL, bid, meter_reading, offer, radial_network, snapshots

from market.canonical import canonical_json
from market.clearing import ClearingOptions, clear
from market.codec import (
    batch_from_dict,
    batch_to_dict,
    check_to_dict,
    reading_leaf,
    reading_leaves,
    reading_to_dict,
    result_from_dict,
    result_to_dict,
    setpoint_to_dict,
    timings_of,
)
from market.domain import (
    ClearingResult,
    DeviceId,
    GridCheck,
    ParticipantId,
    Setpoint,
    SetpointKind,
    Tariffs,
    Violation,
    ViolationKind,
)
from market.errors import BatchMismatch, SettlementError
from market.orderbook import build_order_book
from market.settlement import settle
from market.units import PricePerKwh, W

TARIFFS = Tariffs(import_price=PricePerKwh(300_000), export_price=PricePerKwh(80_000))


@pytest.fixture(scope="module")
def result() -> ClearingResult:
    book = build_order_book(
        INTERVAL,
        [bid("b-alice", "S", 1000, 200_001, "alice"), offer("s-bob", "S", 333, 150_000, "bob")],
    )
    return clear(book, radial_network(["S"]), ClearingOptions())


def test_a_result_comes_back_from_its_json_form(result: ClearingResult) -> None:
    """Everything settlement and audit need survives; the solver report stays behind."""
    data = json.loads(canonical_json(result_to_dict(result)))
    again = result_from_dict(data, INTERVAL)
    assert again == dataclasses.replace(result, solver=None)
    assert set(timings_of(result)) == {"build_s", "solve_s", "extract_s"}
    assert timings_of(again) == {}


def test_a_check_that_did_not_converge_is_written_with_nulls() -> None:
    nan = math.nan
    check = GridCheck(
        converged=False,
        min_vm_pu=nan,
        max_vm_pu=nan,
        max_line_loading_percent=nan,
        max_trafo_loading_percent=nan,
        slack_p_w=0,
        violations=(
            Violation(kind=ViolationKind.NOT_CONVERGED, element="grid", value=nan, limit=nan),
        ),
    )
    assert canonical_json(check_to_dict(check)) == (
        b'{"converged":false,"max_line_loading_percent":null,"max_trafo_loading_percent":null,'
        b'"max_vm_pu":null,"min_vm_pu":null,"slack_p_w":0,"violations":[{"element":"grid",'
        b'"kind":"not_converged","limit":null,"value":null}]}'
    )
    assert check_to_dict(None) is None


def test_a_reading_has_a_literal_form() -> None:
    reading = meter_reading("m-1", "alice", INTERVAL.start, 1234, 56)
    assert reading_to_dict(reading) == {
        "device_id": "m-1",
        "participant": "alice",
        "bus": "S",
        "measured_at": "2026-06-21T12:00:00+00:00",
        "p_w": 0,
        "import_wh_total": 1234,
        "export_wh_total": 56,
        "quality": "ok",
        "reason": "",
        "soc_percent": None,
    }
    battery = dataclasses.replace(reading, soc_percent=55.5)
    assert reading_to_dict(battery)["soc_percent"] == 55.5
    no_number = dataclasses.replace(reading, soc_percent=math.nan)
    assert reading_to_dict(no_number)["soc_percent"] is None


def test_reading_leaves_pair_devices_read_at_both_ends() -> None:
    start, end = snapshots(("alice", 1, 0, True), ("bob", 0, 1, False), ("carol", 2, 2, True))
    del end[DeviceId("carol-meter")]
    leaves = reading_leaves(
        [reading_to_dict(r) for r in reversed(start.values())],
        [reading_to_dict(r) for r in end.values()],
    )
    assert [(leaf["device_id"], leaf["participant"]) for leaf in leaves] == [
        ("alice-meter", "alice"),
        ("bob-meter", "bob"),  # MISSING at the end, still committed to
    ]
    assert leaves[1]["end"]["quality"] == "missing"
    with pytest.raises(SettlementError, match="two devices"):
        reading_leaf(leaves[0]["start"], leaves[1]["end"])


def test_a_setpoint_has_a_literal_form() -> None:
    setpoint = Setpoint(
        device_id=DeviceId("pv-1"), interval=INTERVAL, kind=SetpointKind.PV_LIMIT, p_w=W(2500)
    )
    assert setpoint_to_dict(setpoint) == {"device_id": "pv-1", "kind": "pv_limit", "p_w": 2500}


def test_a_batch_comes_back_and_must_match_its_id(result: ClearingResult) -> None:
    batch = settle(result, *snapshots(("alice", 400, 0, True), ("bob", 0, 333, True)), TARIFFS)
    data = json.loads(canonical_json(batch_to_dict(batch)))
    assert batch_from_dict(data, INTERVAL) == batch
    data["amounts"][0][1] -= 1
    data["amounts"][1][1] += 1
    with pytest.raises(BatchMismatch, match="does not match its content"):
        batch_from_dict(data, INTERVAL)
    assert issubclass(BatchMismatch, SettlementError)
    assert issubclass(BatchMismatch, ValueError)
    assert dict(batch.amounts)[ParticipantId("alice")] < 0

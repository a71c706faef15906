"""``peergrid clear``: JSON document, exit codes, and bad input named by row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.clearing_job import clear_orders_file
from controller.cli import main

HEADER = "order_id,participant,bus,side,energy_wh,limit_price\n"
GOOD = HEADER + (
    "s1,alice,Bus R18,sell,4000,90000\n"
    "s2,bob,Bus C17,sell,3000,100000\n"
    "b1,carol,Bus R15,buy,3000,320000\n"
    "b2,dave,Bus I2,buy,2500,310000\n"
)


def write(tmp_path: Path, text: str, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_json_document_has_every_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    assert main(["clear", "--grid", "cigre-lv", "--orders", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in (
        "status",
        "reason",
        "orders",
        "prices",
        "grid",
        "trades",
        "welfare",
        "ac_check",
        "iterations",
        "timings",
    ):
        assert key in doc
    assert {"order_id", "accepted_wh", "price", "amount"} <= set(doc["orders"][0])
    assert {"import_wh", "export_wh"} == set(doc["grid"])
    assert {
        "min_vm_pu",
        "max_vm_pu",
        "max_line_loading_percent",
        "max_trafo_loading_percent",
        "violations",
    } <= set(doc["ac_check"])
    assert set(doc["prices"]) >= {"Bus R18", "Bus 0"}


def test_json_and_csv_orders_and_any_row_order_give_the_same_result(tmp_path: Path) -> None:
    lines = GOOD.splitlines()
    shuffled = write(tmp_path, "\n".join([lines[0], *reversed(lines[1:])]) + "\n", "b.csv")
    rows = [dict(zip(lines[0].split(","), ln.split(","), strict=True)) for ln in lines[1:]]
    as_json = write(tmp_path, json.dumps({"orders": rows}), "o.json")
    docs = [clear_orders_file("cigre-lv", p) for p in (write(tmp_path, GOOD), shuffled, as_json)]
    for d in docs:
        d.pop("timings")
    blobs = {json.dumps(d, sort_keys=True) for d in docs}
    assert len(blobs) == 1


@pytest.mark.parametrize("mechanism", ["nodal", "uniform", "pay-as-bid"])
def test_mechanisms(tmp_path: Path, mechanism: str) -> None:
    doc = clear_orders_file("cigre-lv", write(tmp_path, GOOD), mechanism=mechanism)
    assert doc["status"] == "cleared"
    assert doc["mechanism"] == mechanism


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("s1,alice,Bus Z1,sell,100,1\n", r"row 1 \(order s1\): unknown bus 'Bus Z1' \(closest"),
        ("s1,a,Bus R18,sell,100,1\ns1,b,Bus R18,sell,100,1\n", r"row 2 \(order s1\): duplicate"),
        ("s1,alice,Bus R18,sell,0,1\n", r"row 1 \(order s1\): energy_wh must be a whole"),
        ("s1,alice,Bus R18,sell,-5,1\n", r"row 1 \(order s1\): energy_wh must be a whole"),
        ("s1,alice,Bus R18,sell,100,nan\n", r"row 1 \(order s1\): limit_price must be a whole"),
        ("s1,alice,Bus R18,sell,100,-1\n", r"row 1 \(order s1\): limit_price must be a whole"),
        ("s1,alice,Bus R18,hold,100,1\n", r"row 1 \(order s1\): side must be"),
    ],
)
def test_bad_rows_exit_2_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    import re

    path = write(tmp_path, HEADER + body)
    assert main(["clear", "--grid", "cigre-lv", "--orders", str(path)]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_missing_column_and_unknown_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "order_id,participant,bus,side,energy_wh\ns1,a,Bus R18,sell,100\n")
    assert main(["clear", "--grid", "cigre-lv", "--orders", str(path)]) == 2
    assert "missing column(s) limit_price" in capsys.readouterr().err
    good = write(tmp_path, GOOD)
    assert main(["clear", "--grid", "ieee-9000", "--orders", str(good)]) == 2
    assert "unknown grid" in capsys.readouterr().err

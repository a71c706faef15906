"""``peergrid grid buses``: a grid's buses, as text and as JSON."""

from __future__ import annotations

import json

import pytest

from controller.cli import main


def test_buses_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grid", "buses", "--grid", "cigre-lv", "--json"]) == 0
    buses = json.loads(capsys.readouterr().out)
    assert len(buses) == 44
    slack = [b for b in buses if b["slack"]]
    assert slack == [
        {"name": "Bus 0", "index": 0, "vn_kv": 20.0, "slack": True, "in_service": True}
    ]
    assert {
        "name": "Bus R18",
        "index": 19,
        "vn_kv": 0.4,
        "slack": False,
        "in_service": True,
    } in buses


def test_buses_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grid", "buses", "--grid", "cigre-lv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["index", "name", "vn_kv", "notes"]
    assert lines[1].split() == ["0", "Bus", "0", "20", "slack"]
    assert lines[-1] == "44 buses in cigre-lv"


def test_an_unknown_grid_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grid", "buses", "--grid", "cigre_lv"]) == 2
    assert "did you mean 'cigre-lv'" in capsys.readouterr().err

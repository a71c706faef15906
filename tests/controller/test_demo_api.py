"""``peergrid demo`` places bob's bids through the HTTP API as signed EIP-712 orders.

Real everything: the demo's simulators, embedded chain and SQLite store, the API on uvicorn
on 127.0.0.1, the client posting over HTTP. The demo's clock is its own (simulated), never
the wall clock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller import demo
from controller.demo import FRONT_DOOR_PARTICIPANT, format_table, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def front_door_problems(report: dict[str, Any], intervals: int) -> list[str]:
    """What is wrong with the report's front door (empty: every interval's order came in)."""
    door = report.get("front_door")
    if not door:
        return ["no front door in the report"]
    problems = []
    if door["refused"]:
        problems.append(f"refused: {door['refused']}")
    for key in ("placed", "in_books", "traded"):
        if door[key] != intervals:
            problems.append(f"{key} = {door[key]}, not {intervals}")
    for row in report["intervals"]:
        if (row["api_orders"], row["api_traded"]) != (1, 1):
            problems.append(f"{row['interval']}: {row['api_traded']}/{row['api_orders']} traded")
    return problems


def test_the_demo_places_orders_through_the_api_and_they_trade(tmp_path: Path) -> None:
    intervals = 2
    report = run_demo(intervals=intervals, out_dir=tmp_path / "api")
    assert front_door_problems(report, intervals) == []
    door = report["front_door"]
    assert door["participant"] == FRONT_DOOR_PARTICIPANT
    assert door["url"].startswith("http://127.0.0.1:")
    assert door["traded_wh"] > 0
    assert report["all_settled"]
    assert report["conservation"]["holds"]
    # the audit records carry each signed order, and they verify (signatures re-checked)
    assert report["audit"]["verified"] == report["audit"]["records"] == intervals
    assert not report["audit"]["problems"]
    lines = (tmp_path / "api" / "audit.jsonl").read_text("utf-8").splitlines()
    evidence = [json.loads(line)["signed_orders"] for line in lines]
    assert [e["digest"] for rec in evidence for e in rec] == door["digests"]
    table = format_table(report)
    assert f"front door: {intervals} orders of {FRONT_DOOR_PARTICIPANT} signed (EIP-712)" in table
    assert " 1/1 " in table

    # bob's signed orders bid what his standing order bid: the money comes out the same
    plain = run_demo(intervals=intervals, out_dir=tmp_path / "plain", front_door=False)
    assert plain["front_door"] is None
    assert all(r["api_orders"] == 0 for r in plain["intervals"])
    assert report["balances"] == plain["balances"]
    assert [r["bought_wh"] for r in report["intervals"]] == [
        r["bought_wh"] for r in plain["intervals"]
    ]


def test_the_check_catches_a_front_door_that_posts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness can fail: a demo whose wallet never posts is caught by the same check."""
    monkeypatch.setattr(demo.FrontDoor, "place", lambda self, interval: None)
    report = run_demo(intervals=1, out_dir=tmp_path)
    problems = front_door_problems(report, 1)
    assert "placed = 0, not 1" in problems
    assert any("0/0 traded" in p for p in problems)

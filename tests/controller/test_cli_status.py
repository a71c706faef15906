"""``peergrid status``, ``peergrid history``, the run's tick line and the demo's streamed rows.

One real demo run (simulators, embedded chain, SQLite) makes the database the commands read;
"now" is injected (never the wall clock). The demo's rows are checked to come out as the
intervals settle, in-process (by the order of the callbacks) and through ``peergrid demo``
on a pipe (a row is read before the report, written at the end, exists).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from controller import cli_status
from controller.cli import main
from controller.demo import DEMO_START, run_demo
from controller.history import HISTORY_COLUMNS, history_rows, participant_history, to_csv
from controller.runner import result_summary
from controller.store import Store
from market.codec import result_from_dict
from market.domain import GridCheck, Interval

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

INTERVALS = 3
L = 900


@dataclasses.dataclass
class Demo:
    report: dict[str, Any]
    events: list[tuple[str, Any]]
    site: Path
    db: str


def site_file(folder: Path, database: str) -> Path:
    """The demo's site file with ``database`` as its database URL."""
    text = resources.files("controller").joinpath("sites/demo.toml").read_text("utf-8")
    old = 'database = "sqlite:///peergrid-demo.sqlite"'
    assert old in text
    path = folder / "site.toml"
    path.write_text(text.replace(old, f'database = "{database}"'), "utf-8")
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    out = tmp_path_factory.mktemp("demo")
    events: list[tuple[str, Any]] = []
    report = run_demo(
        intervals=INTERVALS,
        out_dir=out,
        front_door=False,
        progress=lambda done, _total, _label: events.append(("tick", done)),
        on_row=lambda row: events.append(("row", row["interval"])),
    )
    assert report["all_settled"]
    db = f"sqlite:///{(out / 'peergrid-demo.sqlite').as_posix()}"
    return Demo(report=report, events=events, site=site_file(out, db), db=db)


def at(offset_s: int) -> datetime:
    return DEMO_START + timedelta(seconds=offset_s)


def run_cli(argv: Sequence[str], now: datetime) -> int:
    """``peergrid status`` / ``history`` through their own parser, with ``now`` injected."""
    parser = argparse.ArgumentParser()
    cli_status.register(parser.add_subparsers(required=True), clock=lambda: now)
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


# ------------------------------------------------------------------------------ streaming


def streaming_problems(events: Sequence[tuple[str, Any]], intervals: int) -> list[str]:
    """What is wrong with when the rows came (empty: each as its interval settled).

    The row of interval ``j`` settles at boundary ``j + 1`` (the ``j + 2``-th): it must
    come during that boundary, after the ``j + 1`` boundaries before it were reported and
    before that one's report.
    """
    problems = []
    ticks = 0
    rows = 0
    for kind, _ in events:
        if kind == "tick":
            ticks += 1
        else:
            if ticks != rows + 1:
                problems.append(f"row {rows} came after {ticks} boundaries, not {rows + 1}")
            rows += 1
    if rows != intervals:
        problems.append(f"{rows} rows, not {intervals}")
    return problems


def test_rows_come_out_as_the_intervals_settle(demo: Demo) -> None:
    assert streaming_problems(demo.events, INTERVALS) == []
    assert [e[1] for e in demo.events if e[0] == "row"] == [
        r["interval"] for r in demo.report["intervals"]
    ]


def test_the_streaming_check_catches_rows_held_to_the_end() -> None:
    held = [("tick", k) for k in range(1, INTERVALS + 2)] + [("row", k) for k in range(INTERVALS)]
    assert streaming_problems(held, INTERVALS)
    assert streaming_problems(held[:2], INTERVALS)


def piped(argv: Sequence[str], out: Path) -> tuple[int, list[tuple[str, bool]]]:
    """Run ``argv`` with stdout on a pipe; each line read, and whether the report existed.

    ``report.json`` is written once every interval has run: a row read before it exists
    was printed (and flushed) as its interval settled.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # block-buffered
    proc = subprocess.Popen(  # noqa: S603 - our own CLI, or the test's own script
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    seen: list[tuple[str, bool]] = []
    try:
        for line in proc.stdout:
            seen.append((line.rstrip("\n"), (out / "report.json").exists()))
    finally:
        code = proc.wait(timeout=600)
    return code, seen


def first_row_streamed(seen: Sequence[tuple[str, bool]]) -> bool:
    """Whether the first table row was read before the report existed."""
    rows = [done for text, done in seen if text.startswith("2026-06-21T")]
    return bool(rows) and not rows[0]


def test_peergrid_demo_on_a_pipe_prints_a_row_before_the_run_ends(tmp_path: Path) -> None:
    out = tmp_path / "piped"
    argv = [sys.executable, "-m", "controller", "demo", "--intervals", "2", "--out", str(out)]
    code, seen = piped(argv, out)
    assert code == 0, seen
    lines = [text for text, _ in seen]
    assert lines[0].startswith("interval ")
    assert "bought" in lines[0]
    assert "sold" in lines[0]
    assert "cleared" not in lines[0]
    assert len([t for t in lines if t.startswith("2026-06-21T")]) == 2
    assert first_row_streamed(seen), "the first row came only after the run had ended"
    assert any(text.startswith("minted ") for text in lines)


def test_the_pipe_check_catches_rows_printed_at_the_end(tmp_path: Path) -> None:
    """A command that writes its report, then prints its rows, fails the same check."""
    out = tmp_path / "late"
    out.mkdir()
    script = (
        "import pathlib, sys; "
        f"pathlib.Path({str(out / 'report.json')!r}).write_text('{{}}'); "
        "print('interval status'); print('2026-06-21T07:30Z cleared')"
    )
    code, seen = piped([sys.executable, "-c", script], out)
    assert code == 0
    assert len(seen) == 2
    assert not first_row_streamed(seen)


# ------------------------------------------------------------------------------ history


def test_history_table_and_csv(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    start, end = DEMO_START.isoformat(), at(INTERVALS * L).isoformat()
    argv = ["history", "--site", str(demo.site), "--from", start, "--to", end]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert "bought [Wh]" in table[0]
    assert "price min [units/kWh]" in table[0]
    assert "vm min [p.u.]" in table[0]
    assert len(table) == 2 + INTERVALS
    assert all(" settled " in row for row in table[2:])
    assert main([*argv, "--csv"]) == 0
    text = capsys.readouterr().out
    store = Store(demo.db, create=False)
    try:
        rows = history_rows(
            store, int(DEMO_START.timestamp()), int(DEMO_START.timestamp()) + INTERVALS * L
        )
    finally:
        store.close()
    assert text == to_csv(rows)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == [h for _, h in HISTORY_COLUMNS]
    assert len(parsed) == 1 + INTERVALS
    # the demo's rows are the stored rows
    for row, shown in zip(rows, demo.report["intervals"], strict=True):
        assert {k: shown[k] for k, _ in HISTORY_COLUMNS} == {k: row[k] for k, _ in HISTORY_COLUMNS}


def test_participant_history_agrees_with_the_settlement_lines(demo: Demo) -> None:
    """What the earnings read (the batch lines) and what the history says, per participant."""
    store = Store(demo.db, create=False)
    lo = int(DEMO_START.timestamp())
    try:
        rows = history_rows(store, lo, lo + INTERVALS * L)
        lines = {
            (int(s["interval_id"]), str(ln["participant"])): ln
            for s in store.settlement_rows()
            for ln in s["batch"]["lines"]
        }
        checked = 0
        for p in ("alice", "bob", "erin", "heidi"):
            for r in participant_history(store, p, lo, lo + INTERVALS * L):
                ln = lines[(r["interval_start_s"], p)]
                assert r["received_units"] - r["paid_units"] == int(ln["trade_amount"])
                assert (r["bought_wh"], r["sold_wh"]) == (
                    int(ln["cleared_buy_wh"]),
                    int(ln["cleared_sell_wh"]),
                )
                assert r["net_units"] == int(ln["net_amount"])
                checked += 1
    finally:
        store.close()
    assert checked >= INTERVALS
    assert sum(r["bought_wh"] for r in rows) > 0


def test_history_refuses_a_bad_period(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["history", "--site", str(demo.site), "--from", at(L).isoformat()]
    assert main([*argv, "--to", DEMO_START.isoformat()]) == 2
    assert "--to" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--to", "tomorrow"])
    assert exc.value.code == 2


def test_commands_refuse_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = site_file(tmp_path, f"sqlite:///{(tmp_path / 'none.sqlite').as_posix()}")
    assert main(["status", "--site", str(site)]) == 2
    assert "no database" in capsys.readouterr().err
    argv = [
        "history",
        "--site",
        str(site),
        "--from",
        "2026-06-21T00:00Z",
        "--to",
        "2026-06-22T00:00Z",
    ]
    assert main(argv) == 2
    assert not (tmp_path / "none.sqlite").exists()  # only read: nothing was created


# ------------------------------------------------------------------------------ status


def status(
    demo: Demo, now: datetime, capsys: pytest.CaptureFixture[str]
) -> tuple[str, dict[str, Any]]:
    assert run_cli(["status", "--site", str(demo.site)], now) == 0
    text = capsys.readouterr().out
    assert run_cli(["status", "--site", str(demo.site), "--json"], now) == 0
    return text, json.loads(capsys.readouterr().out)


def test_status_just_after_the_run(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    now = at(INTERVALS * L + 60)  # a minute into the interval after the last one
    text, doc = status(demo, now, capsys)
    assert doc["now"]["phase"] == "collecting orders"
    assert doc["now"]["interval_start_s"] == int(at(INTERVALS * L).timestamp())
    assert doc["now"]["seconds_to_gate_closure"] == L - 60
    last = doc["last_results"]
    assert [r["interval_start"] for r in last] == [
        r["interval"] for r in reversed(demo.report["intervals"])
    ]
    assert all(r["settlement_state"] == "settled" for r in last)
    assert {d["quality"] for d in doc["devices"]} == {"OK"}
    assert len(doc["devices"]) == 15
    assert doc["pending_settlements"] == []
    assert "collecting orders" in text
    assert "in 14m00s" in text
    assert "last results:" in text
    assert "bought " in text
    assert "grid in " in text
    assert "vm 0.9" in text
    assert "pending settlements:\n  none" in text
    assert "alerts:" in text


def test_status_of_a_settled_interval(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = status(demo, at((INTERVALS - 1) * L + 60), capsys)
    assert doc["now"]["phase"] == "settled"
    _, doc = status(demo, at(60), capsys)  # only the first interval has a row so far
    assert [r["interval_start_s"] for r in doc["last_results"]] == [int(DEMO_START.timestamp())]


def test_status_a_day_later(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing ran for a day: devices are STALE and the missed intervals are an alert."""
    text, doc = status(demo, at(86_400), capsys)
    assert {d["quality"] for d in doc["devices"]} == {"STALE"}
    assert len(doc["last_results"]) == INTERVALS  # the last results, however old
    kinds = {a["kind"] for a in doc["alerts"]}
    assert "interval_missed" in kinds
    assert "interval_missed" in text
    assert "STALE" in text


# ------------------------------------------------------------------------------ tick line


def test_the_tick_line_shows_prices_energy_and_voltages(demo: Demo) -> None:
    store = Store(demo.db, create=False)
    try:
        t = int(DEMO_START.timestamp())
        doc = store.result(t)
    finally:
        store.close()
    assert doc is not None
    result = result_from_dict(doc, Interval(start=DEMO_START, length_s=L))
    check = GridCheck(
        converged=True,
        min_vm_pu=0.9693,
        max_vm_pu=1.0,
        max_line_loading_percent=10.0,
        max_trafo_loading_percent=31.0,
        slack_p_w=0,
    )
    line = result_summary(dataclasses.replace(result, check=check))
    row = demo.report["intervals"][0]
    assert line.startswith("cleared: price 0.300-")
    assert f"bought {row['bought_wh'] / 1000:.2f} sold {row['sold_wh'] / 1000:.2f} kWh" in line
    assert f"grid in {row['grid_import_wh'] / 1000:.2f}" in line
    assert "vm 0.969-1.000 p.u." in line
    assert line.endswith(f"({result.reason})")
    assert "\n" not in line
    assert "vm " not in result_summary(result)  # no AC check: no voltages


def test_now_is_injected_not_read(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    """Two clocks, two answers: the command uses the clock it is given."""
    _, early = status(demo, at(60), capsys)
    _, late = status(demo, at(86_400), capsys)
    assert early["now"]["now_s"] == int(at(60).timestamp())
    assert late["now"]["now_s"] == int(at(86_400).timestamp())
    assert cli_status.system_clock().tzinfo is UTC

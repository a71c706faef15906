"""``peergrid audit report``: its figures equal the exports, its findings are verify's.

A demo runs 4 intervals on the embedded chain (module fixture); the report is rendered with
the chain alive (reconciliation consulted) and again through the CLI from the database alone.
Every series in ``report_data.json`` is recomputed here from ``export_tables`` with plain
pandas, independently of :mod:`controller.audit_report`; one test perturbs an export table
to show that this comparison fails when a figure does not match the exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import update

from controller.audit import chain_settlements, reclear_recorded
from controller.audit_export import curtailed_wh, export_tables, forecast_in_reason
from controller.audit_report import (
    FIGURES,
    ReportFiles,
    collect,
    pdf_page_count,
    write_report,
)
from controller.cli import main
from controller.demo import DEMO_START, demo_runtime
from controller.store import Store, audit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

INTERVALS = 4
START = DEMO_START
END = DEMO_START + timedelta(minutes=15 * INTERVALS)
RANGE = ["--from", START.isoformat(), "--to", END.isoformat()]


@dataclass
class Demo:
    out: Path
    db: str
    files: ReportFiles


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    out = tmp_path_factory.mktemp("demo")
    with demo_runtime(out) as rt:
        for k in range(INTERVALS + 1):
            rt.tick(k, clear_next=k < INTERVALS)
        settled = chain_settlements(rt.client.settled_events())
        store = rt.store
        tables, findings = collect(
            store,
            START,
            END,
            chain=rt.client,
            settled=settled,
            reclear=rt.cycle.reclear,
            reclear_anchored=lambda record: reclear_recorded(record, store.grid_json),
        )
        files = write_report(
            tables, out / "report", start=START, end=END, chain=settled, findings=findings
        )
    return Demo(out=out, db=f"sqlite:///{(out / 'peergrid-demo.sqlite').as_posix()}", files=files)


def _exports(db: str) -> dict[str, pd.DataFrame]:
    store = Store(db, create=False)
    try:
        return export_tables(store, START, END)
    finally:
        store.close()


def _per(frame: pd.DataFrame, ids: list[int], column: str, how: str = "sum") -> list[Any]:
    grouped = frame.groupby("interval_id")[column].agg(how)
    return [grouped.get(i, 0) for i in ids]


def mismatches(data: dict[str, Any], tables: dict[str, pd.DataFrame]) -> list[str]:
    """Every series of ``report_data.json`` that differs from the exports (empty = equal)."""
    found: list[str] = []

    def check(figure: str, series: str, expected: list[Any]) -> None:
        got = data["figures"][figure]["series"][series]
        if [None if pd.isna(v) else v for v in expected] != got:
            found.append(f"{figure}.{series}: {got} != exports {expected}")

    ids = [int(i) for i in tables["intervals"]["interval_id"]]
    if data["intervals"] != ids:
        found.append(f"intervals {data['intervals']} != {ids}")
    trades = tables["trades"]
    peer = trades[(trades["buyer"] != "GRID") & (trades["seller"] != "GRID")]
    check("energy", "local_wh", [int(v) for v in _per(peer, ids, "energy_wh")])
    exchange = tables["grid_exchange"]
    check("energy", "grid_import_wh", [int(v) for v in _per(exchange, ids, "import_wh")])
    check("energy", "grid_export_wh", [int(v) for v in _per(exchange, ids, "export_wh")])
    for row in tables["prices"].itertuples(index=False):
        got = data["figures"]["prices"]["series"][row.bus][ids.index(int(row.interval_id))]
        if got != int(row.price_per_kwh):
            found.append(f"prices.{row.bus}@{row.interval_id}: {got} != {row.price_per_kwh}")
    plotted = sum(v is not None for s in data["figures"]["prices"]["series"].values() for v in s)
    if plotted != len(tables["prices"]):
        found.append(f"prices: {plotted} points plotted, {len(tables['prices'])} exported")
    summary = tables["intervals"].set_index("interval_id")
    buses, branches = tables["ac_buses"], tables["ac_branches"]
    if buses.empty:  # records without per-bus values: the recorded summary
        check("voltage", "min_vm_pu", [float(v) for v in summary["min_vm_pu"]])
        check("voltage", "max_vm_pu", [float(v) for v in summary["max_vm_pu"]])
    else:
        check("voltage", "min_vm_pu", [float(v) for v in _per(buses, ids, "vm_pu", "min")])
        check("voltage", "max_vm_pu", [float(v) for v in _per(buses, ids, "vm_pu", "max")])
    for kind in ("line", "trafo"):
        rows = branches[branches["kind"] == kind]
        expected = (
            summary[f"max_{kind}_loading_pct"].tolist()
            if rows.empty
            else _per(rows, ids, "loading_pct", "max")
        )
        check("loading", f"max_{kind}_loading_pct", [float(v) for v in expected])
    settlements = tables["settlements"]
    check(
        "imbalance",
        "abs_imbalance_wh",
        [int(v) for v in _per(settlements.assign(a=settlements["imbalance_wh"].abs()), ids, "a")],
    )
    unmetered = settlements[settlements["metered"].eq(other=False).fillna(value=False)]
    check(
        "imbalance",
        "unmetered_participants",
        [int(v) for v in _per(unmetered, ids, "account", "nunique")],
    )
    curtailment = tables["curtailment"]
    length = summary["length_s"]
    total = [0] * len(ids)
    for row in curtailment.itertuples(index=False):
        # the stored forecast is the one the reason's text names (an independent path)
        assert row.forecast_w == forecast_in_reason(row.reason)
        wh = curtailed_wh(int(row.forecast_w), int(row.limit_w), int(length[row.interval_id]))
        assert wh == row.curtailed_wh
        total[ids.index(int(row.interval_id))] += wh
    stacked = data["figures"]["curtailment"]["series"].values()
    if [sum(col) for col in zip(*stacked, strict=True)] != total and (stacked or any(total)):
        found.append(f"curtailment: {list(stacked)} != {total}")
    credits = settlements.assign(c=settlements["amount_units"].clip(lower=0))
    check("reconciliation", "db_gross_amount_units", [int(v) for v in _per(credits, ids, "c")])
    return found


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", path.read_bytes()))


def test_figures_equal_the_exports(demo: Demo) -> None:
    data = json.loads(demo.files.data.read_text("utf-8"))
    tables = _exports(demo.db)
    assert len(tables["intervals"]) == INTERVALS
    assert mismatches(data, tables) == []
    energy = data["figures"]["energy"]["series"]
    assert sum(energy["local_wh"]) > 0  # the demo trades locally: the check is not vacuous
    assert len(data["figures"]["prices"]["series"]) > 1


def test_a_figure_that_differs_from_the_exports_is_caught(demo: Demo, tmp_path: Path) -> None:
    tables = _exports(demo.db)
    tables["trades"].loc[0, "energy_wh"] += 1  # a figure drawn from other numbers
    tables["prices"].loc[0, "price_per_kwh"] += 1
    files = write_report(tables, tmp_path, start=START, end=END)
    found = mismatches(json.loads(files.data.read_text("utf-8")), _exports(demo.db))
    assert any(f.startswith("energy.local_wh") for f in found), found
    assert any(f.startswith("prices.") for f in found), found


def test_html_is_self_contained_with_one_svg_per_figure(demo: Demo) -> None:
    html = demo.files.html.read_text("utf-8")
    assert html.count("<svg") == len(FIGURES) == 7
    for name, title in FIGURES:
        assert f'<section id="{name}">' in html
        assert title.replace(":", "") in html.replace(":", "")
    assert '<section id="findings">' in html
    assert "interval records verified" in html
    assert not re.search(r"""(src|href)=["']?(https?:|//|[\w./-]+\.(js|css|png|svg))""", html)
    assert "<script" not in html
    assert "<link" not in html


def test_pdf_has_a_page_per_figure_and_the_findings(demo: Demo) -> None:
    data = json.loads(demo.files.data.read_text("utf-8"))
    expected = pdf_page_count(len(data["findings"]["problems"]))
    assert demo.files.pdf_pages == expected == 1 + len(FIGURES) + 1
    assert _pdf_pages(demo.files.pdf) == expected


def test_reconciliation_and_findings_with_the_chain(demo: Demo) -> None:
    data = json.loads(demo.files.data.read_text("utf-8"))
    assert data["chain_consulted"] is True
    reconciliation = data["figures"]["reconciliation"]["series"]
    assert reconciliation["status"] == ["match"] * INTERVALS
    assert reconciliation["chain_confirmed_amount_units"] == reconciliation["db_gross_amount_units"]
    assert data["findings"]["problems"] == []
    assert data["findings"]["records"] == data["findings"]["verified"] == INTERVALS
    assert "compared with the chain" in data["findings"]["checked"]


def test_cli_from_the_database_alone_lists_every_finding(demo: Demo, tmp_path: Path) -> None:
    shutil.copy(demo.out / "peergrid-demo.sqlite", tmp_path / "copy.sqlite")
    db = f"sqlite:///{(tmp_path / 'copy.sqlite').as_posix()}"
    store = Store(db, create=False)
    rows = store.audit_records()
    for row in rows[:2]:  # two intervals whose batch no longer matches its content
        record = row["record"]
        record["settlement"]["amounts"][0][1] += 1
        with store.engine.begin() as conn:
            conn.execute(
                update(audit).where(audit.c.interval_id == row["interval_id"]).values(record=record)
            )
    store.close()
    out = tmp_path / "report"
    assert main(["audit", "report", "--db", db, *RANGE, "--out", str(out), "--no-reclear"]) == 0
    data = json.loads((out / "report_data.json").read_text("utf-8"))
    problems = data["findings"]["problems"]
    assert data["chain_consulted"] is False
    assert data["figures"]["reconciliation"]["series"]["status"] == ["chain not consulted"] * 4
    for row in rows[:2]:
        assert any(f"(id {row['interval_id']})" in p and "batch id" in p for p in problems)
    html = (out / "report.html").read_text("utf-8")
    for problem in problems:  # every finding in the HTML, escaped
        assert problem.replace("'", "&#39;").replace('"', "&#34;") in html
    assert _pdf_pages(out / "report.pdf") == pdf_page_count(len(problems))
    assert mismatches(data, _exports(db)) == []


def test_report_command_keeps_matplotlib_out_of_start_up() -> None:
    code = (
        "import sys, controller.cli, controller.audit_report; "
        "print(sorted(m for m in ('matplotlib', 'jinja2', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "matplotlib" not in done.stdout
    assert "jinja2" not in done.stdout

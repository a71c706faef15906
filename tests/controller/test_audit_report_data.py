"""The report's series from synthetic export tables (no demo, no chain): fast properties."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.audit_export import COLUMNS, TABLES, curtailed_wh, forecast_in_reason
from controller.audit_report import (
    FIGURES,
    Findings,
    curtailment_reason,
    pdf_page_count,
    report_data,
    write_report,
)

START = datetime(2026, 6, 21, 7, 30, tzinfo=UTC)
DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean", "str": "string"}


def frame(name: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """An export table with exactly its documented columns and types."""
    columns: dict[str, Any] = {}
    for column, kind in COLUMNS[name]:
        values = [row.get(column) for row in rows]
        if kind == "time":
            columns[column] = pd.to_datetime(values, utc=True)
        elif kind == "str":
            columns[column] = pd.array(["" if v is None else v for v in values], dtype="string")
        else:
            columns[column] = pd.array(values, dtype=DTYPES[kind])
    return pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))


def tables(
    n: int, trades: list[tuple[int, str, str, int]], curtailed: list[tuple[int, int, int, bool]]
) -> dict[str, pd.DataFrame]:
    ids = [int((START + timedelta(minutes=15 * k)).timestamp()) for k in range(n)]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for k, i in enumerate(ids):
        rows["intervals"].append(
            {
                "interval_id": i,
                "length_s": 900,
                "min_vm_pu": 0.97,
                "max_vm_pu": 1.0,
                "max_line_loading_pct": 10.0 + k,
                "max_trafo_loading_pct": 30.0 - k,
                "params_json": json.dumps({"vm_min_pu": 0.9, "vm_max_pu": 1.1}) if k else "",
            }
        )
        rows["grid_exchange"].append({"interval_id": i, "import_wh": 100 * k, "export_wh": k})
        for bus, price in (("Bus 1", 300_000 + k), ("Bus 2", 310_000 - k)):
            rows["prices"].append({"interval_id": i, "bus": bus, "price_per_kwh": price})
        rows["settlements"] += [
            {
                "interval_id": i,
                "account": "alice",
                "amount_units": 5 + k,
                "metered": k % 2 == 0,
                "imbalance_wh": -3 * k,
                "state": "settled",
                "batch_id": f"b{i}",
            },
            {
                "interval_id": i,
                "account": "GRID",
                "amount_units": -5 - k,
                "state": "settled",
                "batch_id": f"b{i}",
            },
        ]
    for k, buyer, seller, wh in trades:
        rows["trades"].append(
            {
                "interval_id": ids[k % n],
                "trade_id": f"t{len(rows['trades'])}",
                "buyer": buyer,
                "seller": seller,
                "energy_wh": wh,
            }
        )
    for k, limit, forecast, network in curtailed:
        reason = f"curtailed to {limit} W of {forecast} W forecast: o at b: 1 of 2 Wh unsold"
        rows["curtailment"].append(
            {
                "interval_id": ids[k % n],
                "device_id": f"pv{len(rows['curtailment'])}",
                "limit_w": limit,
                "forecast_w": forecast,
                "curtailed_wh": curtailed_wh(forecast, limit, 900),
                "reason": reason + ("; network: line 3 full" if network else ""),
            }
        )
    return {name: frame(name, r) for name, r in rows.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 5),
    trades=st.lists(
        st.tuples(
            st.integers(0, 9),
            st.sampled_from(["a", "b", "GRID"]),
            st.sampled_from(["a", "c", "GRID"]),
            st.integers(1, 10_000),
        ),
        max_size=20,
    ),
    curtailed=st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 5000), st.integers(0, 9000), st.booleans()),
        max_size=8,
    ),
)
def test_series_equal_the_tables(
    n: int, trades: list[tuple[int, str, str, int]], curtailed: list[tuple[int, int, int, bool]]
) -> None:
    data = report_data(tables(n, trades, curtailed), start=START, end=START + timedelta(hours=2))
    ids = data["intervals"]
    energy = data["figures"]["energy"]["series"]
    local = [0] * n
    for k, buyer, seller, wh in trades:
        if "GRID" not in {buyer, seller}:
            local[k % n] += wh
    assert energy["local_wh"] == local
    assert energy["grid_import_wh"] == [100 * k for k in range(n)]
    assert energy["local_share"] == [
        None if lo + 100 * k == 0 else lo / (lo + 100 * k) for k, lo in enumerate(local)
    ]
    assert data["figures"]["prices"]["series"] == {
        "Bus 1": [300_000 + k for k in range(n)],
        "Bus 2": [310_000 - k for k in range(n)],
    }
    voltage = data["figures"]["voltage"]["series"]
    assert voltage["vm_min_limit_pu"] == [0.95] + [0.9] * (n - 1)  # band recorded from k=1
    assert data["figures"]["loading"]["series"]["max_trafo_loading_pct"] == [
        30.0 - k for k in range(n)
    ]
    imbalance = data["figures"]["imbalance"]["series"]
    assert imbalance["abs_imbalance_wh"] == [3 * k for k in range(n)]
    assert imbalance["unmetered_participants"] == [k % 2 for k in range(n)]
    by_reason: dict[str, list[int]] = {}
    for k, limit, forecast, network in curtailed:
        reason = "network limit" if network else "unsold"
        by_reason.setdefault(reason, [0] * n)[k % n] += round(max(forecast - limit, 0) * 900 / 3600)
    assert data["figures"]["curtailment"]["series"] == dict(sorted(by_reason.items()))
    reconciliation = data["figures"]["reconciliation"]["series"]
    assert reconciliation["db_gross_amount_units"] == [5 + k for k in range(n)]
    assert reconciliation["status"] == ["chain not consulted"] * n
    assert len(ids) == n


def test_curtailment_reasons() -> None:
    assert (
        curtailment_reason(
            "curtailed to 0 W of 900 W forecast: x: 5 of 9 Wh unsold at 1 per kWh (no nodal price)"
        )
        == "unsold"
    )
    assert (
        curtailment_reason("... its floor is above the export tariff 80000 and was not met")
        == "floor above the export tariff"
    )
    assert curtailment_reason("...; network: line 3") == "network limit"
    assert curtailed_wh(3000, 1000, 900) == 500
    assert curtailed_wh(1000, 3000, 900) == 0
    assert forecast_in_reason("curtailed to 1000 W of 3000 W forecast: ...") == 3000
    assert forecast_in_reason("no powers named") == 0


def test_empty_range_still_gives_every_figure(tmp_path: Path) -> None:
    empty = {name: frame(name, []) for name in TABLES}
    files = write_report(empty, tmp_path, start=START, end=START + timedelta(hours=1))
    html = files.html.read_text("utf-8")
    assert html.count("<svg") == len(FIGURES)
    assert "No findings" in html
    assert files.pdf_pages == pdf_page_count(0) == 9


def test_output_is_reproducible_and_paged(tmp_path: Path) -> None:
    n_findings = 41
    found = Findings(problems=tuple(f"interval x (id {i}): field" for i in range(n_findings)))
    given_tables = tables(3, [(0, "a", "c", 10)], [(1, 0, 400, False)])
    first = write_report(
        given_tables, tmp_path / "a", start=START, end=START + timedelta(hours=1), findings=found
    )
    second = write_report(
        given_tables, tmp_path / "b", start=START, end=START + timedelta(hours=1), findings=found
    )
    for one, two in ((first.html, second.html), (first.pdf, second.pdf), (first.data, second.data)):
        assert one.read_bytes() == two.read_bytes(), one.name
    assert first.pdf_pages == pdf_page_count(n_findings) == 8 + (2 if n_findings > 40 else 1)
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", first.pdf.read_bytes())) == first.pdf_pages

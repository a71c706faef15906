"""Audit exports and monthly statements: checked against independent sums and the chain.

Three demo intervals (07:30-08:15 UTC, 21 June 2026) run on the embedded chain, frank left
with 0.001 token of escrow so that his debits are capped and carried as a debt. The exported
tables are compared with sums taken straight from the store and the chain, written and read
back as CSV and Parquet, and their columns are pinned here (a change of a column is a change
of the documented contract and must change this list too).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal
from sqlalchemy import update

from adapters.chain import derive_account
from controller.audit_export import (
    COLUMNS,
    STATEMENT_COLUMNS,
    TABLES,
    ExportError,
    export_tables,
    monthly_statements,
    read_table,
    statement_differences,
    write_tables,
)
from controller.cli import main
from controller.demo import DemoRuntime, demo_runtime
from controller.store import Store, settlements
from market.domain import ParticipantId

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FRANK = ParticipantId("frank")
LEFT = 1_000  # frank's escrow after his withdrawal [token units]
TICKS = 4  # three intervals cleared and settled, the fourth boundary only settles
MONTH = "2026-06"
JUNE = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))

PINNED: dict[str, list[str]] = {
    "intervals": [
        "interval_start", "interval_id", "length_s", "status", "reason", "mechanism",
        "n_orders", "iterations", "welfare_units", "community_rent_units", "cleared_buy_wh",
        "cleared_sell_wh", "grid_import_wh", "grid_export_wh", "ac_converged", "min_vm_pu",
        "max_vm_pu", "max_line_loading_pct", "max_trafo_loading_pct", "ac_violations",
        "import_price_per_kwh", "export_price_per_kwh", "book_hash", "result_hash",
        "record_hash", "grid_hash", "params_json", "versions_json", "settlement_state",
        "batch_id", "tx_hash", "block_number",
    ],
    "orders": [
        "interval_start", "interval_id", "order_id", "participant", "bus", "side", "energy_wh",
        "limit_price_per_kwh", "accepted_wh", "price_per_kwh", "amount_units", "signature",
    ],
    "trades": [
        "interval_start", "interval_id", "trade_id", "buyer", "seller", "buyer_order",
        "seller_order", "buyer_bus", "seller_bus", "energy_wh", "buyer_price_per_kwh",
        "seller_price_per_kwh", "buyer_amount_units", "seller_amount_units",
    ],
    "prices": ["interval_start", "interval_id", "bus", "price_per_kwh"],
    "grid_exchange": [
        "interval_start", "interval_id", "import_wh", "export_wh", "net_import_wh",
        "imbalance_import_wh", "imbalance_export_wh", "import_price_per_kwh",
        "export_price_per_kwh", "grid_amount_units", "slack_p_w",
    ],
    "readings": [
        "boundary", "boundary_id", "device_id", "participant", "bus", "measured_at", "p_w",
        "import_wh_total", "export_wh_total", "quality", "reason", "soc_pct",
    ],
    "settlements": [
        "interval_start", "interval_id", "account", "amount_units", "metered",
        "cleared_buy_wh", "cleared_sell_wh", "metered_import_wh", "metered_export_wh",
        "imbalance_wh", "trade_amount_units", "imbalance_amount_units", "net_amount_units",
        "reason", "reward_wh", "debt_before_units", "debt_after_units", "state", "batch_id",
        "tx_hash", "block_number",
    ],
    "ac_buses": ["interval_start", "interval_id", "bus", "name", "vm_pu"],
    "ac_branches": ["interval_start", "interval_id", "branch", "kind", "name", "loading_pct"],
    "curtailment": [
        "interval_start", "interval_id", "device_id", "participant", "kind", "limit_w",
        "forecast_w", "curtailed_wh", "reason",
    ],
}  # fmt: skip

PINNED_STATEMENT = [
    "month", "participant", "intervals", "bought_local_wh", "sold_local_wh", "bought_grid_wh",
    "sold_grid_wh", "paid_local_units", "received_local_units", "paid_grid_units",
    "received_grid_units", "net_amount_units", "settled_amount_units", "reward_wh",
    "debt_start_units", "debt_end_units", "unmetered_intervals", "unsettled_intervals",
    "chain_checked", "chain_address", "chain_amount_units", "chain_reward_wh",
    "chain_difference_units", "chain_difference_wh",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoRuntime, Path]]:
    out = tmp_path_factory.mktemp("export")
    with demo_runtime(out) as rt:
        frank = derive_account(FRANK)
        escrow = int(rt.client.escrow_balance(frank.address))
        rt.client.request_withdrawal(frank, escrow - LEFT)
        rt.client.withdraw(frank)
        for k in range(TICKS - 1):
            rt.tick(k)
        rt.tick(TICKS - 1, clear_next=False)
        yield rt, out / "peergrid-demo.sqlite"


@pytest.fixture(scope="module")
def tables(demo: tuple[DemoRuntime, Path]) -> dict[str, pd.DataFrame]:
    return export_tables(demo[0].store, *JUNE)


def url(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


def copy_db(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / "copy.sqlite"
    shutil.copyfile(src, dst)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{src}{suffix}")
        if side.exists():
            shutil.copyfile(side, Path(f"{dst}{suffix}"))
    return dst


# -- columns -----------------------------------------------------------------------------------
def test_columns_are_pinned(tables: dict[str, pd.DataFrame]) -> None:
    assert list(TABLES) == list(PINNED)
    assert {name: list(frame.columns) for name, frame in tables.items()} == PINNED
    assert [c for c, _ in STATEMENT_COLUMNS] == PINNED_STATEMENT
    for name, frame in tables.items():  # every unit-carrying name is a number column
        kinds = dict(COLUMNS[name])
        for column in frame.columns:
            if column.endswith(("_wh", "_units", "_per_kwh", "_w")):
                assert kinds[column] == "int", (name, column)
            if column.endswith(("_pu", "_pct")):
                assert kinds[column] == "float", (name, column)


def test_empty_window_keeps_columns(demo: tuple[DemoRuntime, Path]) -> None:
    empty = export_tables(
        demo[0].store, datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 2, 1, tzinfo=UTC)
    )
    assert {n: list(f.columns) for n, f in empty.items()} == PINNED
    assert all(len(f) == 0 for f in empty.values())
    with pytest.raises(ExportError, match="not after"):
        export_tables(demo[0].store, JUNE[1], JUNE[0])
    with pytest.raises(ExportError, match="time zone"):
        export_tables(demo[0].store, datetime(2026, 6, 1), JUNE[1])  # noqa: DTZ001


# -- against independent sums ------------------------------------------------------------------
def test_tables_agree_with_the_store_and_the_chain(
    demo: tuple[DemoRuntime, Path], tables: dict[str, pd.DataFrame]
) -> None:
    rt, _ = demo
    store = rt.store
    stored = {int(r["interval_id"]): r for r in store.settlement_rows()}
    ids = sorted(stored)
    assert len(ids) == TICKS - 1
    assert list(tables["intervals"]["interval_id"]) == ids
    assert set(tables["intervals"]["settlement_state"]) == {"settled"}

    # trades sum to each order's accepted energy (both sides), orders to the interval's totals
    trades, orders = tables["trades"], tables["orders"]
    by_buy = trades.groupby(["interval_id", "buyer_order"])["energy_wh"].sum()
    by_sell = trades.groupby(["interval_id", "seller_order"])["energy_wh"].sum()
    for o in orders.to_dict("records"):
        traded = (by_buy if o["side"] == "buy" else by_sell).get((o["interval_id"], o["order_id"]))
        assert int(traded or 0) == o["accepted_wh"], o["order_id"]
    accepted = orders.groupby(["interval_id", "side"])["accepted_wh"].sum()
    for i in tables["intervals"].to_dict("records"):
        assert accepted.get((i["interval_id"], "buy"), 0) == i["cleared_buy_wh"]
        assert accepted.get((i["interval_id"], "sell"), 0) == i["cleared_sell_wh"]

    # the grid's cleared import is the energy GRID sells in the trades
    from_grid = trades[trades["seller"] == "GRID"].groupby("interval_id")["energy_wh"].sum()
    exchange = tables["grid_exchange"].set_index("interval_id")
    assert (exchange["import_wh"] == from_grid.reindex(exchange.index, fill_value=0)).all()

    # every bus has a price in every interval
    n_buses = tables["prices"].groupby("interval_id")["bus"].nunique()
    assert (n_buses == len(store.result(ids[0])["prices"])).all()  # type: ignore[index]

    # settlements sum to zero per interval, and each account's amount is the chain's entry
    money = tables["settlements"]
    assert (money.groupby("interval_id")["amount_units"].sum() == 0).all()
    names = {address.lower(): account for account, address in rt.accounts.items()}
    for interval_id in ids:
        chain = {
            names[str(a).lower()]: (amount, wh)
            for a, amount, wh in rt.client.settled_entries(interval_id)
        }
        mine = money[money["interval_id"] == interval_id]
        exported = {
            r["account"]: (r["amount_units"], r["reward_wh"])
            for r in mine.to_dict("records")
            if r["amount_units"] or r["reward_wh"]
        }
        assert exported == {k: v for k, v in chain.items() if v != (0, 0)}
        assert set(mine["tx_hash"]) == {stored[interval_id]["tx_hash"]}

    # frank's debt shows in his settlement rows
    franks = money[money["account"] == FRANK]
    assert franks["debt_after_units"].max() > 0

    # the readings are the raw table's snapshots at the intervals' boundaries
    boundaries = [*ids, ids[-1] + 900]
    raw = sum(len(store.readings_at(b)) for b in boundaries)
    assert len(tables["readings"]) == raw
    assert sorted(set(tables["readings"]["boundary_id"])) == boundaries


# -- files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_round_trip_identically(
    tables: dict[str, pd.DataFrame], tmp_path: Path, fmt: str
) -> None:
    written = write_tables(tables, tmp_path, fmt)
    assert [p.name for p in written] == [f"{name}.{fmt}" for name in TABLES]
    for name, frame in tables.items():
        assert_frame_equal(read_table(tmp_path / f"{name}.{fmt}"), frame)


def test_csv_and_parquet_read_back_equal(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    write_tables(tables, tmp_path / "c", "csv")
    write_tables(tables, tmp_path / "p", "parquet")
    for name in TABLES:
        assert_frame_equal(
            read_table(tmp_path / "c" / f"{name}.csv"),
            read_table(tmp_path / "p" / f"{name}.parquet"),
        )
    csv = (tmp_path / "c" / "intervals.csv").read_text("utf-8").splitlines()
    assert csv[0].split(",")[:2] == ["interval_start", "interval_id"]
    assert csv[1].startswith("2026-06-21T07:30:00Z,1782027000,")


def test_a_file_with_other_columns_is_refused(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    write_tables({"prices": tables["prices"].drop(columns=["bus"])}, tmp_path, "csv")
    with pytest.raises(ExportError, match="columns"):
        read_table(tmp_path / "prices.csv")


# any text but NUL (pandas' CSV reader ends a field there; no PeerGrid name or reason has one)
_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(-(2**62), 2**62) | st.none(),
            st.floats(allow_nan=False, allow_infinity=False) | st.none(),
            _text,
            st.booleans() | st.none(),
            st.datetimes(
                min_value=datetime(1970, 1, 2),  # noqa: DTZ001
                max_value=datetime(2200, 1, 1),  # noqa: DTZ001
                timezones=st.just(UTC),
            ),
        ),
        max_size=6,
    )
)
def test_any_values_round_trip_through_csv_and_parquet(
    rows: list[tuple[Any, ...]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    schema = (("t", "time"), ("n", "int"), ("x", "float"), ("s", "str"), ("b", "bool"))
    frame = pd.DataFrame(
        {
            "t": pd.Series([r[4] for r in rows], dtype="datetime64[ns, UTC]"),
            "n": pd.array([r[0] for r in rows], dtype="Int64"),
            "x": pd.array([math.nan if r[1] is None else r[1] for r in rows], dtype="float64"),
            "s": pd.array([r[2] for r in rows], dtype="string"),
            "b": pd.array([r[3] for r in rows], dtype="boolean"),
        }
    )
    out = tmp_path_factory.mktemp("prop")
    for fmt in ("csv", "parquet"):
        write_tables({"t": frame}, out, fmt)
        assert_frame_equal(read_table(out / f"t.{fmt}", schema), frame)


# -- monthly statements --------------------------------------------------------------------------
def test_statement_sums_and_reconciles_with_the_chain(demo: tuple[DemoRuntime, Path]) -> None:
    rt, _ = demo
    statement = monthly_statements(rt.store, MONTH, chain=rt.client)
    assert list(statement.columns) == PINNED_STATEMENT
    participants = [p.id for p in rt.site.participants]
    assert list(statement["participant"]) == sorted(participants)

    # independent sums, straight from the stored batches
    settled: dict[str, int] = defaultdict(int)
    rewarded: dict[str, int] = defaultdict(int)
    metered: dict[str, int] = defaultdict(int)
    for row in rt.store.settlement_rows():
        batch = row["batch"]
        for account, amount in batch["amounts"]:
            settled[account] += amount
        for account, wh in batch["rewards"]:
            rewarded[account] += wh
        for line in batch["lines"]:
            metered[line["participant"]] += line["metered_import_wh"] - line["metered_export_wh"]
    debts = rt.store.outstanding_debts()
    for r in statement.to_dict("records"):
        p = r["participant"]
        assert r["settled_amount_units"] == settled[p], p
        assert r["reward_wh"] == rewarded[p], p
        assert r["debt_start_units"] == 0
        assert r["debt_end_units"] == debts.get(p, 0), p
        assert r["settled_amount_units"] == (
            r["net_amount_units"] + r["debt_end_units"] - r["debt_start_units"]
        ), p
        assert r["net_amount_units"] == (
            r["received_local_units"]
            + r["received_grid_units"]
            - r["paid_local_units"]
            - r["paid_grid_units"]
        ), p
        bought = r["bought_local_wh"] + r["bought_grid_wh"]
        assert bought - r["sold_local_wh"] - r["sold_grid_wh"] == metered[p], p
        assert r["intervals"] == TICKS - 1
        assert r["chain_checked"]
        assert r["chain_address"].lower() == rt.accounts[p].lower()
        assert (r["chain_difference_units"], r["chain_difference_wh"]) == (0, 0), p
        assert r["chain_amount_units"] == settled[p]
    assert statement_differences(statement) == []
    frank = statement.set_index("participant").loc[FRANK]
    assert frank["debt_end_units"] > 0  # the capped debit is carried, and reconciled
    # another month: no rows; a bad month: refused
    assert len(monthly_statements(rt.store, "2026-07", chain=rt.client)) == 0
    with pytest.raises(ExportError, match="YYYY-MM"):
        monthly_statements(rt.store, "June")


def test_statement_reports_a_database_that_disagrees_with_the_chain(
    demo: tuple[DemoRuntime, Path], tmp_path: Path
) -> None:
    """The fault the reconciliation exists for: a stored batch changed after settling."""
    rt, db = demo
    store = Store(url(copy_db(db, tmp_path)), create=False)
    try:
        row = store.settlement_rows()[0]
        batch = dict(row["batch"])
        batch["amounts"] = [
            [a, v + (1 if a == "alice" else -1 if a == "COMMUNITY" else 0)]
            for a, v in batch["amounts"]
        ]
        with store.engine.begin() as conn:
            conn.execute(
                update(settlements)
                .where(settlements.c.interval_id == row["interval_id"])
                .values(batch=batch)
            )
        statement = monthly_statements(store, MONTH, chain=rt.client, accounts=rt.accounts)
    finally:
        store.close()
    alice = statement.set_index("participant").loc["alice"]
    assert alice["chain_difference_units"] == -1
    (problem,) = statement_differences(statement)
    assert problem.startswith("2026-06 alice: settled")
    # and the zero-sum check of the export still holds (the change kept the batch balanced)
    assert statement["chain_difference_wh"].eq(0).all()


def test_statement_without_a_chain_says_so(demo: tuple[DemoRuntime, Path]) -> None:
    statement = monthly_statements(demo[0].store, MONTH)
    assert not statement["chain_checked"].any()
    assert statement["chain_amount_units"].isna().all()
    assert statement_differences(statement) == []


# -- the command line ----------------------------------------------------------------------------
def test_cli_export_and_statement(
    demo: tuple[DemoRuntime, Path],
    tables: dict[str, pd.DataFrame],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = url(demo[1])
    span = ["--from", "2026-06-01T00:00Z", "--to", "2026-07-01T00:00Z"]
    out = tmp_path / "pq"
    code = main(["audit", "export", "--db", db, *span, "--format", "parquet", "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.parquet" for n in TABLES)
    assert f"settlements.parquet: {len(tables['settlements'])} rows" in capsys.readouterr().out
    for name in TABLES:
        assert_frame_equal(read_table(out / f"{name}.parquet"), tables[name])

    assert main(["audit", "statement", "--db", db, "--month", MONTH, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["chain_checked"] is False  # an embedded chain ends with its controller
    assert len(doc["statements"]) == 10
    assert doc["differences"] == []

    csv = tmp_path / "alice.csv"
    args = ["audit", "statement", "--db", db, "--month", MONTH, "--participant", "alice"]
    assert main([*args, "--format", "csv", "--out", str(csv)]) == 0
    back = read_table(csv, STATEMENT_COLUMNS)
    assert list(back["participant"]) == ["alice"]

    assert main([*args, "--format", "table"]) == 0
    assert "chain: not reconciled" in capsys.readouterr().out

    assert main(["audit", "statement", "--db", db, "--month", "2026-13"]) == 2
    assert "YYYY-MM" in capsys.readouterr().err
    assert main(["audit", "statement", "--db", db, "--month", MONTH, "--participant", "x"]) == 2
    missing = url(tmp_path / "none.sqlite")
    assert main(["audit", "export", "--db", missing, *span, "--out", str(tmp_path / "n")]) == 2
    assert not (tmp_path / "none.sqlite").exists()


def test_pandas_stays_out_of_the_cli_start_up() -> None:
    code = (
        "import sys, controller.cli as c\n"
        "c.build_parser().parse_args(['audit', 'export', '--db', 'x', '--from', "
        "'2026-06-01T00:00Z', '--to', '2026-07-01T00:00Z', '--out', 'o'])\n"
        "import controller.cli_audit\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"

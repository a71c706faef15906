"""The history read model (controller/history.py) on a real SQLite store.

Results are written through the store's own methods (claim, save, intent, settle, ticks);
the figures are checked against a plain recomputation from the same documents, on both the
SQLite path (one ``json_extract`` per row) and the portable one (one JSON index per part),
with and without the process cache.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import history
from controller.history import (
    HISTORY_COLUMNS,
    PARTICIPANT_COLUMNS,
    history_rows,
    interval_phase,
    participant_history,
    result_figures,
    to_csv,
)
from controller.store import Store
from market.domain import GRID
from market.units import round_half_even

T0 = 1_782_027_000  # 2026-06-21T07:30Z
L = 900


def result_doc(
    orders: list[dict[str, Any]],
    trades: list[dict[str, Any]],
    prices: dict[str, int],
    grid: tuple[int, int],
    book: list[dict[str, Any]],
    *,
    vm: tuple[float, float] = (0.97, 1.0),
    violations: int = 0,
) -> dict[str, Any]:
    """A stored result document as the cycle writes it (the parts history reads)."""
    return {
        "status": "cleared",
        "orders": orders,
        "trades": trades,
        "prices": prices,
        "grid": {"import_wh": grid[0], "export_wh": grid[1]},
        "book": {"orders": book},
        "welfare": 1234,
        "ac_check": {
            "converged": True,
            "min_vm_pu": vm[0],
            "max_vm_pu": vm[1],
            "max_line_loading_percent": 12.34,
            "max_trafo_loading_percent": 56.78,
            "violations": [f"v{i}" for i in range(violations)],
        },
        "inputs": {"params": {"import_price": 300_000, "export_price": 80_000}},
    }


def order(pid: str, side: str, wh: int, amount: int, kind: str = "buy_demand") -> dict[str, Any]:
    return {
        "order_id": f"{pid}:{T0}:{kind}:0",
        "participant": pid,
        "bus": "b1",
        "side": side,
        "accepted_wh": wh,
        "price": 300_000,
        "amount": amount,
    }


def trade(seller: str, buyer: str, wh: int) -> dict[str, Any]:
    return {"seller": seller, "buyer": buyer, "energy_wh": wh}


def save(store: Store, interval_id: int, doc: dict[str, Any], *, book_hash: str = "h") -> None:
    assert store.claim_interval(interval_id, L)
    store.save_result(
        interval_id,
        status=str(doc.get("status", "cleared")),
        reason="a reason",
        book_hash=book_hash,
        n_orders=len(doc["book"]["orders"]),
        result=doc,
        setpoints=[],
    )


def settle(store: Store, interval_id: int, lines: list[dict[str, Any]], *, sent: bool) -> None:
    batch = {
        "interval": interval_id,
        "import_price": 310_000,
        "export_price": 70_000,
        "lines": lines,
        "rewards": [["alice", 500]],
        "amounts": [],
    }
    assert store.record_intent(interval_id, f"batch{interval_id}", batch)
    if sent:
        store.mark_settled(interval_id, tx_hash="0x" + "ab" * 32, block_number=7, gas_used=1)


def line(pid: str, trade_amount: int, imbalance: int) -> dict[str, Any]:
    return {
        "participant": pid,
        "cleared_buy_wh": 0,
        "cleared_sell_wh": 0,
        "trade_amount": trade_amount,
        "imbalance_amount": imbalance,
        "net_amount": trade_amount + imbalance,
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    history.clear_cache()
    yield s
    s.close()


def sample(store: Store) -> None:
    """Three intervals: settled, intent only, claimed (a crash); then two missed ticks."""
    doc = result_doc(
        orders=[
            order("alice", "buy", 1000, 300_000),
            order("bob", "sell", 600, 180_000, kind="sell_surplus"),
            order("bob", "buy", 50, 15_000, kind="battery"),
        ],
        trades=[trade("bob", "alice", 600), trade(GRID, "alice", 400), trade(GRID, "bob", 50)],
        prices={"b1": 300_000, "b2": 310_001, "b3": 305_000},
        grid=(450, 0),
        book=[
            {"order_id": f"bob:{T0}:sell_surplus:0", "side": "sell", "energy_wh": 900},
            {"order_id": f"alice:{T0}:buy_demand:0", "side": "buy", "energy_wh": 1200},
        ],
        violations=2,
    )
    save(store, T0, doc)
    settle(store, T0, [line("alice", -300_000, -10), line("bob", 165_000, 5)], sent=True)
    save(store, T0 + L, result_doc([], [], {}, (0, 0), []))
    settle(store, T0 + L, [], sent=False)
    assert store.claim_interval(T0 + 2 * L, L)
    store.record_ticks(range(T0 + 3 * L, T0 + 5 * L, L), "missed")


def test_rows_hold_the_figures_of_the_stored_results(store: Store) -> None:
    sample(store)
    rows = history_rows(store, T0, T0 + 10 * L)
    assert [r["interval_start_s"] for r in rows] == [T0 + k * L for k in range(5)]
    assert [r["status"] for r in rows] == ["cleared", "cleared", "claimed", "missed", "missed"]
    first = rows[0]
    assert first["interval_start"] == "2026-06-21T07:30Z"
    assert (first["bought_wh"], first["sold_wh"], first["traded_wh"]) == (1050, 600, 600)
    assert (first["grid_import_wh"], first["grid_export_wh"]) == (450, 0)
    assert first["losses_wh"] == 600 + 450 - 1050 - 0 == 0
    assert (first["price_min_per_kwh"], first["price_max_per_kwh"]) == (300_000, 310_001)
    assert first["price_mean_per_kwh"] == round_half_even((300_000 + 310_001 + 305_000) / 3)
    # the settlement's tariffs win over the clearing's parameters
    assert (first["import_tariff_per_kwh"], first["export_tariff_per_kwh"]) == (310_000, 70_000)
    assert (first["vm_min_pu"], first["vm_max_pu"], first["max_loading_pct"]) == (0.97, 1.0, 56.8)
    assert (first["ac_violations"], first["ac_converged"]) == (2, True)
    assert first["curtailed_wh"] == 300  # 900 offered, 600 accepted
    assert first["welfare_units"] == 1234
    assert (first["settlement_state"], first["tx_hash"]) == ("settled", "0x" + "ab" * 32)
    assert first["n_orders"] == 2
    second = rows[1]
    assert second["settlement_state"] == "intent"
    assert second["tx_hash"] is None
    assert second["price_min_per_kwh"] is None  # no prices: no range
    assert second["import_tariff_per_kwh"] == 310_000  # the intent's batch
    for unrun in rows[2:]:
        assert unrun["bought_wh"] is None
        assert unrun["vm_min_pu"] is None
        assert unrun["settlement_state"] is None
    assert set(first) >= {key for key, _ in HISTORY_COLUMNS}


def test_the_period_is_half_open_and_an_empty_one_has_no_rows(store: Store) -> None:
    sample(store)
    assert [r["interval_start_s"] for r in history_rows(store, T0 + L, T0 + 2 * L)] == [T0 + L]
    assert history_rows(store, T0 + L, T0 + L) == []
    assert history_rows(store, T0 + 2 * L, T0) == []


def test_portable_sql_and_cache_give_the_same_rows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample(store)
    fast = history_rows(store, T0, T0 + 10 * L)
    cached = history_rows(store, T0, T0 + 10 * L)
    history.clear_cache()
    monkeypatch.setattr(history, "_sqlite", lambda _store: False)  # one JSON index per part
    portable = history_rows(store, T0, T0 + 10 * L)
    assert fast == cached == portable
    assert participant_history(store, "bob", T0, T0 + 10 * L) == participant_history(
        store, "bob", T0, T0 + 10 * L
    )


def test_the_cache_is_keyed_by_the_stored_interval(store: Store, tmp_path: Path) -> None:
    """Another database, or the same interval with another book, is never served stale."""
    sample(store)
    before = history_rows(store, T0, T0 + L)[0]
    other = Store(f"sqlite:///{tmp_path / 'other.sqlite'}")
    try:
        doc = result_doc([order("carol", "buy", 7, 2100)], [], {"b": 1}, (7, 0), [])
        save(other, T0, doc, book_hash="another")
        again = history_rows(other, T0, T0 + L)[0]
    finally:
        other.close()
    assert again["bought_wh"] == 7 != before["bought_wh"]


def test_a_database_made_again_at_the_same_path_is_read_again(tmp_path: Path) -> None:
    """Same URL, interval and book hash (a demo started afresh): the new result is shown."""
    url = f"sqlite:///{tmp_path / 'again.sqlite'}"
    history.clear_cache()
    for wh in (11, 22):
        s = Store(url)
        try:
            save(s, T0, result_doc([order("dave", "buy", wh, 1)], [], {}, (wh, 0), []))
            (row,) = history_rows(s, T0, T0 + L)
        finally:
            s.close()
        assert row["bought_wh"] == wh
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp_path / 'again.sqlite'}{suffix}").unlink(missing_ok=True)


def test_a_participants_history_and_its_savings(store: Store) -> None:
    sample(store)
    bob = participant_history(store, "bob", T0, T0 + 10 * L)
    assert [r["interval_start_s"] for r in bob] == [T0]
    (r,) = bob
    assert (r["bought_wh"], r["sold_wh"]) == (50, 600)
    assert (r["paid_units"], r["received_units"]) == (15_000, 180_000)
    # at the settlement's tariffs: 50 Wh bought at 0.31, 600 Wh sold at 0.07 per kWh
    assert r["grid_cost_units"] == round_half_even((50 * 310_000 - 600 * 70_000) / 1000)
    assert r["savings_units"] == r["grid_cost_units"] - (15_000 - 180_000)
    assert (r["imbalance_units"], r["net_units"]) == (5, 165_005)
    assert r["reward_wh"] == 0
    alice = participant_history(store, "alice", T0, T0 + 10 * L)[0]
    assert alice["reward_wh"] == 500
    assert participant_history(store, "nobody", T0, T0 + 10 * L) == []


def test_csv_has_the_headers_with_units_and_every_row(store: Store) -> None:
    sample(store)
    rows = history_rows(store, T0, T0 + 10 * L)
    parsed = list(csv.reader(io.StringIO(to_csv(rows))))
    assert parsed[0] == [header for _, header in HISTORY_COLUMNS]
    assert "bought [Wh]" in parsed[0]
    assert "price min [units/kWh]" in parsed[0]
    assert len(parsed) == 1 + len(rows)
    col = {header: i for i, (_, header) in enumerate(HISTORY_COLUMNS)}
    assert parsed[1][col["bought [Wh]"]] == "1050"
    assert parsed[1][col["vm min [p.u.]"]] == "0.97"
    assert parsed[3][col["bought [Wh]"]] == ""  # no figure: an empty cell
    people = to_csv(participant_history(store, "bob", T0, T0 + L), PARTICIPANT_COLUMNS)
    assert people.splitlines()[0].startswith("interval start (UTC),")


def test_result_figures_match_the_stored_rows(store: Store) -> None:
    sample(store)
    stored = history_rows(store, T0, T0 + L)[0]
    doc = store.result(T0)
    assert doc is not None
    figures = result_figures(doc)
    assert all(stored[k] == v for k, v in figures.items() if k != "n_orders"), figures


@pytest.mark.parametrize(
    ("offset_s", "gate_s", "phase"),
    [
        (60, 0, "settled"),  # T0 has a result and is settled
        (L + 60, 0, "cleared"),  # T0+L has a result, an intent only
        (2 * L + 60, 0, "gate closed"),  # claimed: being cleared
        (5 * L + 60, 0, "collecting orders"),
        (5 * L + 60, 300, "gate closed"),  # its gate closed 300 s before it began
    ],
)
def test_the_phase_of_the_interval_now(
    store: Store, offset_s: int, gate_s: int, phase: str
) -> None:
    from datetime import UTC, datetime

    sample(store)
    now = datetime.fromtimestamp(T0 + offset_s, UTC)
    got = interval_phase(store, interval_s=L, gate_closure_s=gate_s, now=now)
    assert got["phase"] == phase
    assert got["interval_start_s"] == T0 + offset_s // L * L
    assert got["gate_closure_s"] > got["now_s"]
    assert got["seconds_to_gate_closure"] == got["gate_closure_s"] - got["now_s"]
    assert got["gate_closure_s"] == got["next_interval_start_s"] - gate_s


# ------------------------------------------------------------------------------ properties

PIDS = ["alice", "bob", "carol"]
_NEXT = itertools.count(100)
orders_st = st.lists(
    st.tuples(
        st.sampled_from(PIDS),
        st.sampled_from(["buy", "sell"]),
        st.integers(0, 5000),
        st.integers(0, 2_000_000),
        st.sampled_from(["buy_demand", "sell_surplus", "battery"]),
    ),
    max_size=8,
)
trades_st = st.lists(
    st.tuples(st.sampled_from([*PIDS, GRID]), st.sampled_from([*PIDS, GRID]), st.integers(0, 900)),
    max_size=8,
)
prices_st = st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(0, 10**6))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    orders=orders_st,
    trades=trades_st,
    prices=prices_st,
    grid=st.tuples(st.integers(0, 10**4), st.integers(0, 10**4)),
)
def test_figures_are_the_plain_sums(
    store: Store,
    orders: list[tuple[str, str, int, int, str]],
    trades: list[tuple[str, str, int]],
    prices: dict[str, int],
    grid: tuple[int, int],
) -> None:
    """Whatever the result, the row is its plain recomputation (and the CSV carries it)."""
    t = T0 + next(_NEXT) * L  # one store for every example: a new interval each
    docs = [
        {**order(p, side, wh, amount, kind), "order_id": f"{p}:{t}:{kind}:{i}"}
        for i, (p, side, wh, amount, kind) in enumerate(orders)
    ]
    book = [
        {"order_id": d["order_id"], "side": d["side"], "energy_wh": d["accepted_wh"] + 10}
        for d in docs
    ]
    doc = result_doc(docs, [trade(s, b, wh) for s, b, wh in trades], prices, grid, book)
    save(store, t, doc)
    (row,) = history_rows(store, t, t + L)
    per = {p: participant_history(store, p, t, t + L) for p in PIDS}
    bought = sum(d["accepted_wh"] for d in docs if d["side"] == "buy")
    sold = sum(d["accepted_wh"] for d in docs if d["side"] == "sell")
    assert (row["bought_wh"], row["sold_wh"]) == (bought, sold)
    assert row["traded_wh"] == sum(wh for s_, b, wh in trades if GRID not in {s_, b})
    assert row["losses_wh"] == sold + grid[0] - bought - grid[1]
    assert row["price_min_per_kwh"] == (min(prices.values()) if prices else None)
    assert row["price_max_per_kwh"] == (max(prices.values()) if prices else None)
    surplus = [d for d in docs if d["side"] == "sell" and ":sell_surplus:" in d["order_id"]]
    assert row["curtailed_wh"] == 10 * len(surplus)
    for p in PIDS:
        mine = [d for d in docs if d["participant"] == p]
        if not mine:
            assert per[p] == []
            continue
        (r,) = per[p]
        assert r["bought_wh"] == sum(d["accepted_wh"] for d in mine if d["side"] == "buy")
        assert r["paid_units"] == sum(d["amount"] for d in mine if d["side"] == "buy")
        assert r["received_units"] == sum(d["amount"] for d in mine if d["side"] == "sell")
        assert r["savings_units"] == r["grid_cost_units"] - r["paid_units"] + r["received_units"]
    parsed = list(csv.reader(io.StringIO(to_csv([row]))))
    assert parsed[1][[k for k, _ in HISTORY_COLUMNS].index("sold_wh")] == str(sold)


def test_the_property_check_can_fail(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A history that forgot the sell side would be caught: sold is checked, not assumed."""
    sample(store)
    real = history._compute

    def forgetful(parts: dict[str, Any]) -> history._Figures:
        figures = real(parts)
        return history._Figures(
            row={**figures.row, "sold_wh": 0},
            tariffs=figures.tariffs,
            participants=figures.participants,
        )

    history.clear_cache()
    monkeypatch.setattr(history, "_compute", forgetful)
    with pytest.raises(AssertionError):
        test_figures_are_the_plain_sums.hypothesis.inner_test(  # type: ignore[attr-defined]
            store, [("bob", "sell", 600, 1, "sell_surplus")], [], {}, (0, 0)
        )

"""Tamper tests of ``peergrid audit verify`` on self-contained, anchored records (issue 11).

The demo runs a few intervals on its real Modbus simulators, SQLite and the embedded chain
(one anvil case at the end). Each test copies the database, changes one thing in the copy
(a reading in the record or in the readings table, a price, a tariff, an order, the batch's
amounts) and checks that verification, from the copy and read access to the chain alone,
names the interval and the field.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from controller.audit import (
    RECORD_FORMAT,
    ChainSnapshot,
    Reclearer,
    anchor_hash,
    compare_with_chain,
    diff_paths,
    record_core,
    verify_records,
)
from controller.cli import main
from controller.demo import DemoRuntime, demo_runtime
from controller.store import Store, audit, readings, settlements
from market.canonical import content_hash
from market.domain import batch_id_of, utc_label

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TICKS = 4
"""Boundaries ticked: three intervals cleared and settled (07:30-08:15 UTC, 21 June)."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoRuntime, Path]]:
    out = tmp_path_factory.mktemp("tamper")
    with demo_runtime(out) as rt:
        for k in range(TICKS - 1):
            rt.tick(k)
        rt.tick(TICKS - 1, clear_next=False)
        yield rt, out / "peergrid-demo.sqlite"


def copy_db(src: Path, dst_dir: Path) -> Store:
    dst = dst_dir / "copy.sqlite"
    shutil.copyfile(src, dst)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{src}{suffix}")
        if side.exists():
            shutil.copyfile(side, Path(f"{dst}{suffix}"))
    return Store(f"sqlite:///{dst.as_posix()}", create=False)


def verify(rt: DemoRuntime, store: Store) -> list[str]:
    """Verify as ``peergrid audit verify`` does: the chain read once, one shared re-clearer."""
    rows = store.audit_records()
    chain = ChainSnapshot(rt.client)
    summary = verify_records(
        rows, chain=chain, tables=store, reclear_anchored=Reclearer(store.grid_json)
    )
    return [*summary["problems"], *compare_with_chain(rows, chain.events, store.settlement_rows())]


def traded_interval(store: Store) -> dict[str, Any]:
    """The first record with trades (its interval is the one tampered with)."""
    for row in store.audit_records():
        if row["record"]["result"].get("trades"):
            return row
    pytest.fail("the demo traded nothing in its first intervals")


def edit_record(store: Store, interval_id: int, change: Callable[[dict[str, Any]], None]) -> None:
    with store.engine.begin() as conn:
        record = conn.execute(select(audit.c.record).where(audit.c.interval_id == interval_id))
        value = json.loads(json.dumps(record.scalar_one()))
        change(value)
        conn.execute(update(audit).where(audit.c.interval_id == interval_id).values(record=value))


def where(interval_id: int) -> str:
    return f"interval {utc_label(interval_id)} (id {interval_id})"


def named(problems: list[str], interval_id: int, field: str) -> list[str]:
    return [p for p in problems if p.startswith(where(interval_id)) and f": {field}" in p]


# ------------------------------------------------------------------------------- the record
def test_records_are_self_contained_and_anchored(demo: tuple[DemoRuntime, Path]) -> None:
    rt, _ = demo
    rows = rt.store.audit_records()
    assert len(rows) == TICKS - 1
    for row in rows:
        record = row["record"]
        assert record["format"] == RECORD_FORMAT
        assert {"params", "versions", "grid_hash", "base_case", "accounts", "ac_check"} <= set(
            record
        )
        assert record["params"]["import_price"] == rt.site.import_price
        assert record["params"]["vm_min_pu"] == rt.site.vm_min_pu
        assert {"peergrid", "pandapower", "highspy", "pyomo", "python"} <= set(record["versions"])
        assert rt.store.grid_json(record["grid_hash"]) is not None
        # the record's hash is the batch's record_hash, the batch id commits to it ...
        batch = record["settlement"]
        assert row["record_hash"] == anchor_hash(record) == batch["record_hash"]
        assert "batch_id" not in record_core(record)["settlement"]
        assert batch["batch_id"] == batch_id_of(
            record["interval"],
            record["length_s"],
            batch["amounts"],
            batch["trades_root"],
            batch["readings_root"],
            batch["rewards"],
            batch.get("debts", []),
            batch["record_hash"],
        )
        # ... and the chain holds that batch id
        assert rt.client.settled_batch(record["interval"]).batch_id.hex() == batch["batch_id"]
    # one grid stored once for every interval (the base case is in each record)
    assert len({r["record"]["grid_hash"] for r in rows}) == 1


def test_the_ac_check_keeps_every_bus_and_branch(demo: tuple[DemoRuntime, Path]) -> None:
    rt, _ = demo
    row = traded_interval(rt.store)
    check = row["record"]["ac_check"]
    assert check["buses"]
    assert check["branches"]
    assert {b["kind"] for b in check["branches"]} == {"line", "trafo"}
    assert min(b["vm_pu"] for b in check["buses"]) == pytest.approx(check["min_vm_pu"])
    assert "buses" not in row["record"]["result"]["ac_check"]  # kept once, at the top


def test_an_untouched_copy_verifies_with_no_difference(
    demo: tuple[DemoRuntime, Path], tmp_path: Path
) -> None:
    rt, db = demo
    store = copy_db(db, tmp_path)
    try:
        assert verify(rt, store) == []
    finally:
        store.close()


# ------------------------------------------------------------------------------- tampering
def test_a_reading_changed_in_the_record(demo: tuple[DemoRuntime, Path], tmp_path: Path) -> None:
    rt, db = demo
    store = copy_db(db, tmp_path)
    try:
        row = traded_interval(store)
        interval = int(row["interval_id"])
        device = row["record"]["readings_end"][0]["device_id"]

        def change(record: dict[str, Any]) -> None:
            record["readings_end"][0]["import_wh_total"] += 7

        edit_record(store, interval, change)
        problems = verify(rt, store)
        assert named(problems, interval, f"readings_end[{device}].import_wh_total"), problems
        assert named(problems, interval, "record_hash"), problems
    finally:
        store.close()


def test_a_reading_changed_in_the_readings_table(
    demo: tuple[DemoRuntime, Path], tmp_path: Path
) -> None:
    rt, db = demo
    store = copy_db(db, tmp_path)
    try:
        row = traded_interval(store)
        interval = int(row["interval_id"])
        device = row["record"]["readings_start"][0]["device_id"]
        with store.engine.begin() as conn:
            conn.execute(
                update(readings)
                .where(readings.c.boundary == interval, readings.c.device_id == device)
                .values(export_wh_total=readings.c.export_wh_total + 5)
            )
        problems = verify(rt, store)
        found = named(problems, interval, f"readings_start[{device}].export_wh_total")
        assert found, problems
        assert "the readings table" in found[0]
        assert len(problems) == 1, problems  # the record itself is intact
    finally:
        store.close()


def test_a_price_changed(demo: tuple[DemoRuntime, Path], tmp_path: Path) -> None:
    rt, db = demo
    store = copy_db(db, tmp_path)
    try:
        row = traded_interval(store)
        interval = int(row["interval_id"])
        bus = sorted(row["record"]["result"]["prices"])[0]

        def change(record: dict[str, Any]) -> None:
            record["result"]["prices"][bus] += 1

        edit_record(store, interval, change)
        problems = verify(rt, store)
        assert named(problems, interval, f"result.prices.{bus}"), problems
        assert named(problems, interval, "record_hash"), problems
    finally:
        store.close()


def test_a_tariff_changed(demo: tuple[DemoRuntime, Path], tmp_path: Path) -> None:
    rt, db = demo
    store = copy_db(db, tmp_path)
    try:
        row = traded_interval(store)
        interval = int(row["interval_id"])

        def change(record: dict[str, Any]) -> None:
            record["params"]["import_price"] += 10_000

        edit_record(store, interval, change)
        problems = verify(rt, store)
        assert named(problems, interval, "params.import_price"), problems
        assert named(problems, interval, "record_hash"), problems
    finally:
        store.close()


def test_an_order_changed(demo: tuple[DemoRuntime, Path], tmp_path: Path) -> None:
    rt, db = demo
    store = copy_db(db, tmp_path)
    try:
        row = traded_interval(store)
        interval = int(row["interval_id"])
        order = row["record"]["book"]["orders"][0]

        def change(record: dict[str, Any]) -> None:
            record["book"]["orders"][0]["energy_wh"] += 100

        edit_record(store, interval, change)
        problems = verify(rt, store)
        assert named(problems, interval, f"book.orders[{order['order_id']}].energy_wh"), problems
        assert named(problems, interval, "record_hash"), problems
    finally:
        store.close()


def test_batch_amounts_that_no_longer_match_the_chain(
    demo: tuple[DemoRuntime, Path], tmp_path: Path
) -> None:
    """Amounts changed consistently in the record and the settlements table: the chain tells."""
    rt, db = demo
    store = copy_db(db, tmp_path)
    try:
        row = traded_interval(store)
        interval = int(row["interval_id"])
        amounts = row["record"]["settlement"]["amounts"]
        payer = next(a for a, v in amounts if v < 0)
        payee = next(a for a, v in amounts if v > 0)

        def shift(batch: dict[str, Any]) -> None:
            for pair in batch["amounts"]:
                pair[1] += -3 if pair[0] == payer else 3 if pair[0] == payee else 0

        edit_record(store, interval, lambda record: shift(record["settlement"]))
        with store.engine.begin() as conn:
            batch = json.loads(
                json.dumps(
                    conn.execute(
                        select(settlements.c.batch).where(settlements.c.interval_id == interval)
                    ).scalar_one()
                )
            )
            shift(batch)
            conn.execute(
                update(settlements).where(settlements.c.interval_id == interval).values(batch=batch)
            )
        problems = verify(rt, store)
        assert named(problems, interval, f"settlement.amounts[{payer}]"), problems
        assert named(problems, interval, f"settlement.amounts[{payee}]"), problems
        assert any("batch id" in p for p in named(problems, interval, "")), problems
    finally:
        store.close()


def test_a_reclear_on_another_grid_is_caught(
    demo: tuple[DemoRuntime, Path], tmp_path: Path
) -> None:
    """The re-clear uses the recorded grid: a changed base case changes the AC check."""
    rt, db = demo
    store = copy_db(db, tmp_path)
    try:
        row = traded_interval(store)
        interval = int(row["interval_id"])

        def change(record: dict[str, Any]) -> None:
            loads = record["base_case"]["load.p_mw"]
            loads[0][1] *= 3.0

        edit_record(store, interval, change)
        problems = verify(rt, store)
        assert named(problems, interval, "result.ac_check"), problems
    finally:
        store.close()


def test_diff_paths_names_keyed_items() -> None:
    ours = {"orders": [{"order_id": "a", "p": 1}, {"order_id": "b", "p": 2}], "x": 1.0}
    theirs = {"orders": [{"order_id": "a", "p": 1}, {"order_id": "b", "p": 3}], "x": 1.0}
    assert diff_paths(ours, theirs, "book") == [("book.orders[b].p", 2, 3)]
    assert diff_paths(ours, ours, "book") == []


def test_the_harness_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle that folds a wrong record hash into its batch ids fails verification."""
    monkeypatch.setattr("controller.cycle.anchor_hash", lambda record: "0" * 64)
    with demo_runtime(tmp_path / "run") as rt:
        rt.tick(0)
        rt.tick(1, clear_next=False)
        interval = int(rt.boundary(0).timestamp())
        problems = verify(rt, rt.store)
    assert named(problems, interval, "record_hash"), problems


# ------------------------------------------------------------------------------- old rules
def test_old_records_still_verify_under_their_rule(tmp_path: Path) -> None:
    """The 0.1.0 fixture's records (no format, no anchor) verify as before."""
    src = Path(__file__).parents[1] / "data" / "store_v0_1_0.sqlite"
    dst = tmp_path / "old.sqlite"
    shutil.copyfile(src, dst)
    store = Store(f"sqlite:///{dst.as_posix()}")  # upgrades to 0004
    try:
        rows = store.audit_records()
        assert rows
        assert all("format" not in r["record"] for r in rows)
        assert verify_records(rows, tables=store)["problems"] == []
    finally:
        store.close()


# ------------------------------------------------------------------------------- anvil + CLI
@pytest.mark.skipif(not os.environ.get("PEERGRID_ANVIL"), reason="PEERGRID_ANVIL not set")
def test_cli_verify_on_anvil_names_a_changed_tariff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with demo_runtime(tmp_path / "run", chain="anvil") as rt:
        for k in range(3):
            rt.tick(k)
        rt.tick(3, clear_next=False)
        rpc_url = str(rt.client.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
        settlement = str(rt.client.contracts.settlement.address)
        db = tmp_path / "run" / "peergrid-demo.sqlite"
        store = copy_db(db, tmp_path)
        url = str(store.engine.url)
        args = ["audit", "verify", "--db", url, "--rpc", rpc_url, "--settlement", settlement]
        try:
            assert main([*args, "--json"]) == 0, capsys.readouterr().out
            clean = json.loads(capsys.readouterr().out)
            assert clean["chain_checked"]
            assert clean["problems"] == []
            row = traded_interval(store)
            interval = int(row["interval_id"])
            edit_record(store, interval, lambda r: r["params"].__setitem__("export_price", 1))
        finally:
            store.close()
        assert main(args) == 1
        out = capsys.readouterr().out
        assert f"{where(interval)}: params.export_price" in out
        assert f"{where(interval)}: record_hash" in out


def test_content_hash_of_the_fixture_batch_is_unchanged() -> None:
    """Batches without a record hash keep the ids they had (old rule)."""
    batch = {"interval": 0, "length_s": 900, "amounts": [], "trades_root": "", "readings_root": ""}
    assert batch_id_of(0, 900, [], "", "", []) == content_hash(batch)
    assert batch_id_of(0, 900, [], "", "", [], [], "ab") != content_hash(batch)

"""Audit records re-check: roots, batch ids, zero sums and re-clearing; tampering is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update

from controller.audit import verify_record
from controller.cli import main
from controller.demo import run_demo
from controller.store import Store, audit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    report = run_demo(intervals=2, out_dir=out)
    assert report["all_settled"]
    site = (Path(__file__).parents[2] / "controller/sites/demo.toml").read_text("utf-8")
    db = f"sqlite:///{(out / 'peergrid-demo.sqlite').as_posix()}"
    (out / "site.toml").write_text(site.replace("sqlite:///peergrid-demo.sqlite", db), "utf-8")
    return out


def test_cli_verifies_a_clean_record_set(
    demo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--site", str(demo_dir / "site.toml"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == summary["verified"] == 2
    assert summary["problems"] == []


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("result", "trades", 0, "energy_wh"), 1, "trades root"),
        (("readings_end", 0, "export_wh_total"), 10**9, "readings root"),
        (("settlement", "amounts", 0, 1), -1, "batch id"),
        (("book", "orders", 0, "limit_price"), 1, "re-clearing"),
    ],
)
def test_tampering_is_caught(
    demo_dir: Path, path: tuple[object, ...], value: int, problem: str
) -> None:
    from controller.config import read_site
    from controller.wiring import build_runtime

    site = read_site(demo_dir / "site.toml")
    with build_runtime(site, devices=False, chain=False) as runtime:
        row = runtime.store.audit_records()[0]
        record = json.loads(json.dumps(row["record"]))
        target = record
        for key in path[:-1]:
            target = target[key]  # type: ignore[index]
        target[path[-1]] = value  # type: ignore[index]
        problems = verify_record(record, reclear=runtime.cycle.reclear)
    assert any(problem in p for p in problems), problems


def test_cli_exit_1_on_a_tampered_database(tmp_path: Path, demo_dir: Path) -> None:
    import shutil

    shutil.copytree(demo_dir, tmp_path / "copy")
    db = f"sqlite:///{(tmp_path / 'copy' / 'peergrid-demo.sqlite').as_posix()}"
    store = Store(db)
    row = store.audit_records()[0]
    record = row["record"]
    record["settlement"]["amounts"][0][1] += 1
    with store.engine.begin() as conn:
        conn.execute(
            update(audit).where(audit.c.interval_id == row["interval_id"]).values(record=record)
        )
    store.close()
    site = tmp_path / "site.toml"
    site.write_text(
        (demo_dir / "site.toml")
        .read_text("utf-8")
        .replace(str(demo_dir.as_posix()), str((tmp_path / "copy").as_posix())),
        "utf-8",
    )
    assert main(["audit", "verify", "--site", str(site), "--no-reclear"]) == 1

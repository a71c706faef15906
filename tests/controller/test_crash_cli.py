"""``run --dev-interval-s`` closes stale ticks; ``audit verify`` checks the chain both ways.

``run`` is started as a real process on a site without devices (embedded chain).
``audit verify`` reads a real anvil chain (the demo's, restarted from its state file) and a
database the demo wrote, then the same database with a record deleted and one altered.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.chain import derive_account
from controller import crash
from controller.cli import main
from controller.demo import run_demo
from controller.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

DEMO_SITE = Path(__file__).parents[2] / "controller" / "sites" / "demo.toml"

SITE = """
[site]
name = "dev interval"
grid = "cigre-lv"
interval_s = 900
gate_closure_s = 600
database = "sqlite:///dev.sqlite"

[chain]
backend = "embedded"

[[participants]]
id = "alice"
bus = "Bus R11"
account = "derive"
deposit = 100_000_000
  [[participants.orders]]
  kind = "sell"
  energy_wh = 1000
  price = 100_000

[[participants]]
id = "bob"
bus = "Bus R15"
account = "derive"
deposit = 100_000_000
  [[participants.orders]]
  kind = "buy"
  energy_wh = 1500
  price = 320_000
"""


def peergrid(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != crash.ENV}
    return subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "controller", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_run_with_a_dev_interval_closes_stale_ticks_and_ticks_on_its_boundaries(
    tmp_path: Path,
) -> None:
    (tmp_path / "site.toml").write_text(SITE, "utf-8")
    url = f"sqlite:///{(tmp_path / 'dev.sqlite').as_posix()}"
    store = Store(url)
    stale = int(time.time()) // 4 * 4 - 4 * 10_000  # a controller died in this tick
    store.record_tick(stale, "running")
    store.close()

    done = peergrid(
        "-v", "run", "--site", "site.toml", "--once", "--dev-interval-s", "4", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DEVELOPMENT SETTING" in done.stderr
    assert "4 s intervals (its file says 900 s; gate closure 3 s)" in done.stderr
    store = Store(url, create=False)
    try:
        ticks = {int(t["boundary"]): t for t in store.tick_rows()}
        assert ticks[stale]["outcome"] == "crashed"
        assert "crashed" in ticks[stale]["detail"]
        [ran] = [b for b, t in ticks.items() if t["outcome"] == "ran"]
        assert ran % 4 == 0
        # every boundary between is recorded as missed (10,000 of them, in one transaction)
        assert sorted(ticks) == list(range(stale, ran + 1, 4))
        assert {t["outcome"] for b, t in ticks.items() if stale < b < ran} == {"missed"}
        [interval] = store.interval_rows()
        assert interval["length_s"] == 4
    finally:
        store.close()

    refused = peergrid(
        "run", "--site", "site.toml", "--once", "--dev-interval-s", "7", cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "--dev-interval-s must be >= 2 and divide 86400" in refused.stderr


@pytest.fixture(scope="module")
def anvil_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo run on anvil, and a site file naming its chain, contracts and addresses."""
    out = tmp_path_factory.mktemp("anvil-demo")
    report = run_demo(intervals=2, out_dir=out, chain="anvil")
    assert report["all_settled"]
    text = DEMO_SITE.read_text("utf-8").replace(
        "sqlite:///peergrid-demo.sqlite", f"sqlite:///{(out / 'peergrid-demo.sqlite').as_posix()}"
    )
    chain = (
        '[chain]\nbackend = "anvil"\n'
        f'state_path = "{(out / "anvil-state.json").as_posix()}"\n'
        f'token_address = "{report["contracts"]["token"]}"\n'
        f'settlement_address = "{report["contracts"]["settlement"]}"\n'
        f'grid_account = "{derive_account("GRID").address}"\n'
        f'community_account = "{derive_account("COMMUNITY").address}"\n'
    )
    text = text.replace('[chain]\nbackend = "embedded"\n', chain)
    text = re.sub(
        r'(id = "(\w+)"\n(?:.*\n)*?)account = "derive"',
        lambda m: f'{m.group(1)}account = "{derive_account(m.group(2)).address}"',
        text,
    )
    # the demo's operator and auditor keys too: a persistent chain takes addresses only
    text = re.sub(r'"derive:([\w-]+)"', lambda m: f'"{derive_account(m.group(1)).address}"', text)
    assert '= "derive' not in text
    assert '["derive' not in text
    (out / "site.toml").write_text(text, "utf-8")
    # The demo bound its database to its trial chain; the auditor's site names the same
    # contracts as a persistent chain: unbind it, as a copy for auditors would be.
    with sqlite3.connect(out / "peergrid-demo.sqlite") as db:
        db.execute("DELETE FROM site_identity")
    return out


def verify(site: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["audit", "verify", "--site", str(site), "--no-reclear", "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_verify_compares_the_chain_and_the_records_both_ways(
    anvil_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = verify(anvil_demo / "site.toml", capsys)
    assert code == 0, summary
    assert summary["chain_checked"] is True
    searched = (summary["chain"].pop("from_block"), summary["chain"].pop("to_block"))
    assert 0 <= searched[0] < searched[1]  # the blocks read: deployment (0 if unknown) to head
    assert summary["chain"] == {
        "settled_on_chain": 2,
        "recorded_and_settled": 2,
        "pending": [],
        "mismatches": [],
    }

    # a copy whose first record is gone and whose second names another batch
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes((anvil_demo / "peergrid-demo.sqlite").read_bytes())
    site = tmp_path / "site.toml"
    site.write_text(
        (anvil_demo / "site.toml")
        .read_text("utf-8")
        .replace((anvil_demo / "peergrid-demo.sqlite").as_posix(), copy.as_posix()),
        "utf-8",
    )
    with sqlite3.connect(copy) as db:
        first, second = (r[0] for r in db.execute("SELECT interval_id FROM audit ORDER BY 1"))
        db.execute("DELETE FROM audit WHERE interval_id = ?", (first,))
        db.execute(
            "UPDATE audit SET record = json_set(record, '$.settlement.batch_id', ?) "
            "WHERE interval_id = ?",
            ("ab" * 32, second),
        )
    code, summary = verify(site, capsys)
    assert code == 1
    problems = summary["problems"]
    assert any(f"(id {first}): settled on-chain" in p and "no audit record" in p for p in problems)
    assert any(f"(id {second}): the record's batch id {'ab' * 32}" in p for p in problems)
    assert main(["audit", "verify", "--site", str(site), "--no-reclear"]) == 1
    text = capsys.readouterr().out
    assert "2 intervals settled on-chain, 1 of them with a record" in text

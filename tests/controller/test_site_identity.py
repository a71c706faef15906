"""One site, one database, one controller.

* The database records the site it belongs to (name, chain, Settlement address, grid topology;
  not its participants) and refuses another site, leaving itself unchanged: the scenario of
  issue 9, a CIGRE site pointed at a SimBench site's database, is refused by ``run``,
  ``audit verify`` and ``db upgrade`` with exit 2 and one message naming both sites.
* Commands that only read never create a database.
* The single-instance lock lives beside the database: a second ``peergrid run`` started from
  another folder (a real second process) is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandapower as pp
import pytest

from controller.cli import main
from controller.config import SiteConfig, read_site
from controller.errors import MissingDatabase, SiteMismatch
from controller.runner import lock_path
from controller.site_identity import TRIAL_CHAIN, grid_digest, site_identity
from controller.store import Store, head_revision
from controller.wiring import build_runtime
from grid_models.grids import Grid, load_grid
from market.domain import Interval

REPO = Path(__file__).parents[2]
FIXTURE = REPO / "tests" / "data" / "store_v0_1_0.sqlite"
SIMBENCH = "simbench:1-LV-rural1--0-sw"
SETTLEMENT = "0x" + "5e" * 20

CIGRE_SITE = """
[site]
name = "Riverside (CIGRE LV)"
grid = "{grid}"
interval_s = 900
database = "{database}"

[chain]
backend = "embedded"

[[participants]]
id = "alice"
bus = "Bus R11"
  [[participants.orders]]
  kind = "sell"
  price = 50_000
  energy_wh = 2000

[[participants]]
id = "bob"
bus = "Bus R15"
deposit = 10_000_000
  [[participants.orders]]
  kind = "buy"
  price = 400_000
  energy_wh = 2000
"""

SIMBENCH_SITE = """
[site]
name = "Rural feeder (SimBench)"
grid = "simbench:1-LV-rural1--0-sw"
interval_s = 900
database = "{database}"

[chain]
backend = "embedded"

[[participants]]
id = "p1"
bus = "LV1.101 Bus 1"
  [[participants.orders]]
  kind = "sell"
  price = 50_000
  energy_wh = 2000

[[participants]]
id = "p2"
bus = "LV1.101 Bus 4"
deposit = 10_000_000
  [[participants.orders]]
  kind = "buy"
  price = 400_000
  energy_wh = 2000
"""


def url(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def cigre_site(path: Path, database: str, grid: str = "cigre-lv") -> SiteConfig:
    return read_site(write(path, CIGRE_SITE.format(database=database, grid=grid)))


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(sql).fetchall()


def snapshot(path: Path) -> tuple[str, dict[str, list[tuple[object, ...]]]]:
    """The file's SHA-256 and every row of every table."""
    tables = [str(t) for (t,) in query(path, "SELECT name FROM sqlite_master WHERE type='table'")]
    rows = {t: query(path, f'SELECT * FROM "{t}" ORDER BY 1') for t in tables}  # noqa: S608
    return hashlib.sha256(path.read_bytes()).hexdigest(), rows


@pytest.fixture(scope="module")
def cigre() -> Grid:
    return load_grid("cigre-lv")


# -- the identity ----------------------------------------------------------------------------


def test_the_identity_is_name_chain_settlement_and_grid_not_participants(
    tmp_path: Path, cigre: Grid
) -> None:
    site = cigre_site(tmp_path / "site.toml", url(tmp_path / "db.sqlite"))
    base = site_identity(site, cigre, trial=False, chain_id=31337, settlement=SETTLEMENT)
    assert base.complete
    assert base.chain == "eip155:31337"
    assert base.settlement == SETTLEMENT
    assert base.fingerprint is not None
    assert len(base.fingerprint) == 64

    fewer = replace(site, participants=site.participants[:1])
    same = site_identity(fewer, cigre, trial=False, chain_id=31337, settlement=SETTLEMENT.upper())
    assert same.fingerprint == base.fingerprint  # participants come and go; case is no identity

    others = {
        "name": site_identity(
            replace(site, name="Elsewhere"),
            cigre,
            trial=False,
            chain_id=31337,
            settlement=SETTLEMENT,
        ),
        "chain": site_identity(site, cigre, trial=False, chain_id=1, settlement=SETTLEMENT),
        "settlement": site_identity(
            site, cigre, trial=False, chain_id=31337, settlement="0x" + "11" * 20
        ),
        "grid": replace(base, grid_digest="0" * 64),
    }
    for field, other in others.items():
        assert other.fingerprint != base.fingerprint, field
        assert base.differences(other) == [field]

    trial = site_identity(site, cigre)  # the embedded backend: a trial chain, no address
    assert (trial.chain, trial.settlement) == (TRIAL_CHAIN, "")
    assert trial.complete
    assert trial.on_chain(31337) == trial
    unknown = site_identity(site, cigre, trial=False, settlement=SETTLEMENT)
    assert not unknown.complete
    assert unknown.fingerprint is None
    assert unknown.differences(base) == []  # the chain is not compared when not known
    assert unknown.on_chain(31337).fingerprint == base.fingerprint


def test_the_grid_digest_is_the_topology_wherever_the_file_lives(
    tmp_path: Path, cigre: Grid
) -> None:
    digest = grid_digest(cigre)
    assert grid_digest(load_grid("cigre-lv")) == digest

    pp.to_json(cigre.copy().net, str(tmp_path / "feeder.json"))
    moved = tmp_path / "elsewhere" / "copy.json"
    moved.parent.mkdir()
    shutil.copyfile(tmp_path / "feeder.json", moved)
    assert grid_digest(load_grid(str(moved))) == digest  # another spec, the same grid

    longer = cigre.copy().net
    longer.line.loc[longer.line.index[0], "length_km"] *= 2  # a corrected parameter
    longer.line.loc[longer.line.index[1], "in_service"] = False  # switching
    assert grid_digest(Grid("x.json", longer)) == digest

    renamed = cigre.copy().net
    renamed.bus.loc[renamed.bus.index[3], "name"] = "Bus renamed"
    assert grid_digest(Grid("x.json", renamed)) != digest
    fewer = cigre.copy().net
    fewer.line = fewer.line.drop(index=fewer.line.index[-1])
    assert grid_digest(Grid("x.json", fewer)) != digest


# -- the store ---------------------------------------------------------------------------------


def test_a_store_is_bound_once_and_refuses_another_site(tmp_path: Path, cigre: Grid) -> None:
    db = tmp_path / "db.sqlite"
    site = cigre_site(tmp_path / "site.toml", url(db))
    mine = site_identity(site, cigre, trial=False, chain_id=31337, settlement=SETTLEMENT)
    theirs = replace(mine, name="Hillside", settlement="0x" + "22" * 20)

    store = Store(url(db))
    assert store.site() is None
    assert store.check_site(replace(mine, chain=None), bind=True) is None  # incomplete: unbound
    assert store.check_site(mine) is None  # bind=False: compared with nothing, not bound
    assert store.check_site(mine, bind=True) == mine
    assert store.site() == mine
    assert store.check_site(replace(mine, chain=None)) == mine  # what is known matches
    assert store.claim_interval(1_782_032_400, 900)
    with pytest.raises(SiteMismatch) as info:
        store.check_site(theirs, bind=True)
    store.close()
    message = str(info.value)
    assert "'Riverside (CIGRE LV)'" in message
    assert "'Hillside'" in message
    assert "they differ in name, settlement" in message
    assert "left unchanged" in message
    before = snapshot(db)

    with pytest.raises(SiteMismatch, match="'Hillside'"):
        Store(url(db), site=theirs)
    with pytest.raises(SiteMismatch, match="'Hillside'"):
        Store(url(db), create=False, site=replace(theirs, chain=None))
    assert snapshot(db) == before
    assert query(db, "SELECT name, chain, settlement FROM site_identity") == [
        ("Riverside (CIGRE LV)", "eip155:31337", SETTLEMENT)
    ]
    again = Store(url(db), site=mine)
    assert again.check_site(mine, bind=True) == mine
    again.close()


def test_db_current_names_the_bound_site(
    tmp_path: Path, cigre: Grid, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "db.sqlite"
    site = cigre_site(tmp_path / "site.toml", url(db))
    mine = site_identity(site, cigre, trial=False, chain_id=31337, settlement=SETTLEMENT)
    store = Store(url(db))
    store.check_site(mine, bind=True)
    store.close()
    before = snapshot(db)
    assert main(["db", "current", "--db", url(db)]) == 0
    head, bound = capsys.readouterr().out.splitlines()
    assert head == f"{head_revision()} (head)"
    assert bound == (
        f"site: 'Riverside (CIGRE LV)' (chain eip155:31337, Settlement {SETTLEMENT}, grid "
        f"cigre-lv [topology {mine.grid_digest[:12]}]), fingerprint {mine.fingerprint}"
    )
    assert snapshot(db) == before


def test_a_database_of_0_1_0_is_bound_by_its_first_run(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    shutil.copyfile(FIXTURE, db)
    site = cigre_site(tmp_path / "site.toml", url(db))
    before = snapshot(db)[1]
    with build_runtime(site, devices=False) as runtime:  # the embedded chain: a trial chain
        bound = runtime.store.site()
    assert bound is not None
    assert (bound.name, bound.chain, bound.settlement) == (site.name, TRIAL_CHAIN, "")
    after = snapshot(db)[1]
    (row,) = after.pop("site_identity")
    assert row[:7] == (
        1,
        bound.fingerprint,
        site.name,
        TRIAL_CHAIN,
        "",
        bound.grid_digest,
        "cigre-lv",
    )
    assert after.pop("debts") == []  # migration 0003's table, empty: nothing owed in 0.1.0
    assert after.pop("grids") == []  # migration 0004's table, empty: no record references one
    assert after.pop("signed_orders") == []  # 0005: no order was signed in 0.1.0
    assert after.pop("auth_nonces") == []  # 0006: nobody signed in
    assert after.pop("sessions") == []
    assert after.pop("site_actions") == []  # 0007: no operator paused or curtailed
    assert after.pop("device_seqs") == []  # 0008: no reading was signed in 0.1.0
    width = len(before["readings"][0])  # 0008's three columns of readings: last, NULL
    assert all(all(v is None for v in r[width:]) for r in after["readings"])
    after["readings"] = [r[:width] for r in after["readings"]]
    for table in ("alembic_version", "chain_nonces"):  # the revision; the trial chain's nonces
        before.pop(table, None)
        after.pop(table, None)
    assert after == before  # every row of 0.1.0 as it was

    other = cigre_site(tmp_path / "other.toml", url(db))
    with pytest.raises(SiteMismatch, match="they differ in name"):
        build_runtime(replace(other, name="Hillside"), devices=False)


# -- two sites, one database: the scenario of issue 9 --------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_cigre_site_pointed_at_a_simbench_sites_database_is_refused_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "shared.sqlite"
    simbench = write(tmp_path / "rural" / "site.toml", SIMBENCH_SITE.format(database=url(db)))
    cigre = write(
        tmp_path / "riverside" / "site.toml", CIGRE_SITE.format(database=url(db), grid="cigre-lv")
    )

    # The SimBench site ran: one interval settled, the last one cleared and ended, unsettled.
    now = Interval.containing(datetime.now(UTC), 900).start
    with build_runtime(read_site(simbench), devices=False) as runtime:
        for k in (-2, -1):
            runtime.cycle.tick(now + timedelta(seconds=900 * k))
        assert runtime.store.unsettled_results(int(now.timestamp()) + 900)
    before = snapshot(db)
    assert before[1]["site_identity"][0][2] == "Rural feeder (SimBench)"
    assert before[1]["settlements"]

    for argv in (
        ["run", "--once", "--site", str(cigre)],
        ["audit", "verify", "--site", str(cigre)],
        ["audit", "verify", "--site", str(cigre), "--no-reclear"],
        ["db", "upgrade", "--site", str(cigre)],
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "", argv
        assert "Traceback" not in captured.err
        (line,) = captured.err.splitlines()  # one line
        assert "belongs to site 'Rural feeder (SimBench)'" in line, argv
        assert f"grid {SIMBENCH}" in line
        assert "not to site 'Riverside (CIGRE LV)'" in line
        assert "grid cigre-lv" in line
        assert "they differ in name, grid" in line
        assert "left unchanged" in line
        assert snapshot(db) == before, argv

    # The site it belongs to is accepted (the check can pass), and its interval still waits
    # for its own controller to settle it.
    assert main(["audit", "verify", "--site", str(simbench), "--no-reclear"]) == 0
    capsys.readouterr()
    assert snapshot(db)[1] == before[1]


# -- read-only commands do not create a database ---------------------------------------------


def test_commands_that_read_do_not_create_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.sqlite"
    site = write(tmp_path / "site.toml", CIGRE_SITE.format(database=url(missing), grid="cigre-lv"))
    for argv in (
        ["audit", "verify", "--site", str(site)],
        ["audit", "verify", "--site", str(site), "--no-reclear"],
        ["audit", "verify", "--site", str(site), "--db", url(tmp_path / "other.sqlite")],
        ["db", "current", "--site", str(site)],
        ["db", "current", "--db", url(missing)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "no database at" in err, argv
        assert "nothing was created" in err
        assert "Traceback" not in err
    assert not missing.exists()
    assert not (tmp_path / "other.sqlite").exists()

    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(MissingDatabase, match="holds no PeerGrid tables"):
        Store(url(empty), create=False)
    assert empty.read_bytes() == b""
    with pytest.raises(MissingDatabase, match="no database at"):
        Store(url(missing), create=False)
    assert not missing.exists()

    assert main(["db", "upgrade", "--site", str(site)]) == 0  # upgrade creates one
    assert capsys.readouterr().out == f"{head_revision()} (head; upgraded from no database)\n"
    assert missing.exists()
    assert main(["db", "current", "--site", str(site)]) == 0
    assert capsys.readouterr().out == f"{head_revision()} (head)\n"  # bound to no site yet


# -- one controller per site, wherever it is started from -------------------------------------


def test_the_lock_lives_beside_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert lock_path("sqlite:///site.sqlite") == tmp_path / "site.sqlite.lock"
    assert lock_path(url(tmp_path / "a" / "b.sqlite")) == tmp_path / "a" / "b.sqlite.lock"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert lock_path(url(tmp_path / "a" / "b.sqlite")) == tmp_path / "a" / "b.sqlite.lock"
    pg = lock_path("postgresql://peergrid@db.example/site")  # until the scale issue's locks
    assert pg.parent == Path(tempfile.gettempdir())
    assert pg.name.startswith("peergrid-")


def _wait_for_lock(lock: Path, pid: int, proc: subprocess.Popen[str], timeout_s: float) -> None:
    """Until ``lock`` holds ``pid`` (single_instance writes it once it holds the lock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the first controller exited with {proc.returncode}: {out}\n{err}")
        if lock.exists() and lock.read_text().strip() == str(pid):
            return
        time.sleep(0.2)
    pytest.fail(f"the first controller did not take {lock} within {timeout_s} s")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_second_controller_started_from_another_folder_is_refused(tmp_path: Path) -> None:
    """Two real processes: ``run`` from the parent folder, ``run --once`` from a sibling."""
    write(
        tmp_path / "s1" / "site.toml",
        CIGRE_SITE.format(database="sqlite:///site.sqlite", grid="cigre-lv"),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "controller"]
    first = subprocess.Popen(  # noqa: S603
        [*command, "run", "--site", "s1/site.toml"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / "s1" / "site.sqlite.lock"  # relative to the site file, not to any cwd
    try:
        _wait_for_lock(lock, first.pid, first, timeout_s=180)
        second = subprocess.run(  # noqa: S603
            [*command, "run", "--once", "--site", "../s1/site.toml"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert second.returncode == 1, second.stderr
        assert "another PeerGrid controller is running for this site" in second.stderr
        assert str(lock) in second.stderr
        assert "Traceback" not in second.stderr
        assert list(elsewhere.iterdir()) == []  # no second database, no second lock
    finally:
        first.terminate()
        first.communicate(timeout=60)

    # The lock dies with its holder: the same command now runs, on the site's one database.
    with lock.open() as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free
        fcntl.flock(fh, fcntl.LOCK_UN)
    third = subprocess.run(  # noqa: S603
        [*command, "run", "--once", "--site", "../s1/site.toml"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert third.returncode == 0, third.stderr
    assert list(elsewhere.iterdir()) == []
    assert query(tmp_path / "s1" / "site.sqlite", "SELECT COUNT(*) FROM intervals") == [(1,)]


# -- chain commands compare too -----------------------------------------------------------------

ANVIL_SITE = """
[site]
name = "Riverside (CIGRE LV)"
grid = "cigre-lv"
interval_s = 900
database = "{database}"

[chain]
backend = "anvil"
state_path = "{state}"
token_address = "{token}"
settlement_address = "{settlement}"
grid_account = "{grid}"
community_account = "{community}"

[[participants]]
id = "alice"
bus = "Bus R11"
account = "{alice}"
"""


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_chain_commands_refuse_another_sites_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.chain import ChainClient, new_account
    from adapters.chain.backends import AnvilNode, rpc_web3

    operator = new_account()
    state = tmp_path / "anvil.json"
    with AnvilNode(state_path=state) as node:
        client = ChainClient(rpc_web3(node.url), operator)
        client.fund_eth(operator.address, 10**18)
        deployed = client.deploy_all(reward_name=None)
        chain_id = client.chain_id()
    monkeypatch.setenv("PEERGRID_OPERATOR_KEY", operator.key.hex())
    ours, theirs = tmp_path / "ours.sqlite", tmp_path / "theirs.sqlite"
    text = ANVIL_SITE.format(
        database=url(ours),
        state=state.as_posix(),
        token=deployed.token,
        settlement=deployed.settlement,
        grid=new_account().address,
        community=new_account().address,
        alice=new_account().address,
    )
    site_file = write(tmp_path / "site.toml", text)
    site = read_site(site_file)
    mine = site_identity(site, trial=False, chain_id=chain_id, settlement=deployed.settlement)
    assert mine.complete
    for path, identity in ((ours, mine), (theirs, replace(mine, name="Hillside"))):
        store = Store(url(path))
        store.check_site(identity, bind=True)
        store.close()
    before = snapshot(theirs)

    common = ["--site", str(site_file), "--state", str(state)]
    trade = ["--interval", "1782032400", "--trade", "0"]
    for argv in (
        ["chain", "status", *common, "--db", url(theirs)],
        ["chain", "settle-pending", *common, "--db", url(theirs)],
        ["chain", "verify-trade", *common, "--db", url(theirs), *trade],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "belongs to site 'Hillside'" in err, argv
        assert "not to site 'Riverside (CIGRE LV)'" in err
        assert "Traceback" not in err
    assert snapshot(theirs) == before

    assert main(["chain", "status", *common, "--json"]) == 0  # its own database
    assert json.loads(capsys.readouterr().out)["store"]["pending"] == []
    missing = tmp_path / "missing.sqlite"
    assert main(["chain", "status", *common, "--db", url(missing)]) == 2
    assert "no database at" in capsys.readouterr().err
    assert not missing.exists()

"""A fleet on real parts: PostgreSQL, three ``peergrid worker`` processes, anvil; kill -9 one.

The sites' steps run in real worker processes (procrastinate on a throwaway PostgreSQL
cluster), with the real clearing and settlement on an anvil node, readings simulated
in-process (``--simulate-devices``) and 20-second development intervals. The verdict is read
from the database's unique constraints and from each site's own Settlement contract
(:func:`fleetkit.fleet_verdict`); it is shown to catch a lost tick, a settlement left
unsent and a second transaction of an operator to its contract.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from eth_account import Account
from fleetkit import (
    Fleet,
    WorkerProcess,
    add_sites,
    fleet_verdict,
    make_sites,
    peergrid_cmd,
    wait_for,
)
from killharness import clean_env

from adapters.chain.backends import AnvilNode, rpc_web3
from controller import fleet as fleet_module
from controller.cli import main
from controller.errors import AlreadyRunning, ConfigError, LostSite
from controller.pgcluster import Cluster
from controller.store import site_lock

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

INTERVAL_S = 20  # a step's window is a third of it: 6.7 s, room for a loaded CI machine
STALL_S = 6.0


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilNode]:
    with AnvilNode() as node:
        yield node


def ticks_ran(conninfo: str, site_id: str, since: int) -> int:
    with psycopg.connect(conninfo) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"site_{site_id}.ticks",)).fetchone()
        if exists is None or exists[0] is None:
            return 0  # the site's first step has not made its store yet
        found = conn.execute(
            f"SELECT count(*) FROM site_{site_id}.ticks WHERE outcome = 'ran' AND boundary >= %s",  # noqa: S608
            (since,),
        ).fetchone()
    return int(found[0]) if found else 0


def boundary_after(t: float, step: int = INTERVAL_S) -> int:
    return int(t) - int(t) % step + step


def test_three_workers_run_every_site_exactly_once_and_survive_a_kill(
    pg_cluster: Cluster, anvil: AnvilNode, tmp_path: Path
) -> None:
    database = pg_cluster.create_database()
    url = pg_cluster.url(database)
    conninfo = pg_cluster.conninfo(database)
    fleet = make_sites(tmp_path, anvil.url, 6)
    add_sites(url, fleet, fleet.sites[:1])  # as an operator does: peergrid site add
    fleet_module.Fleet(url).add_site(fleet.sites[1].site_id, fleet.sites[1].site)
    for site in fleet.sites[2:]:
        fleet_module.Fleet(url).add_site(site.site_id, site.site)
    workers = [
        WorkerProcess(
            f"w{i}", url, tmp_path / f"w{i}.log", fleet.env, INTERVAL_S, STALL_S, concurrency=2
        ).start()
        for i in range(3)
    ]
    try:
        started = time.time()
        wait_for(
            lambda: all(ticks_ran(conninfo, s.site_id, 0) >= 1 for s in fleet.sites),
            90,
            "every site's first step",
        )
        first = boundary_after(time.time())
        time.sleep(first + 4 * INTERVAL_S - time.time())  # four boundaries with all alive
        live = range(first, first + 4 * INTERVAL_S, INTERVAL_S)

        # kill -9 the worker that is running a step (the log's last started job), mid-step
        victim = _busy_worker(workers)
        victim.kill()
        killed_at = time.time()
        time.sleep(STALL_S + 5 + 4 * INTERVAL_S)  # the stall time, a recovery, four more
        end = boundary_after(time.time()) - INTERVAL_S
        for w in workers:
            if w is not victim:
                assert w.stop() == 0
    finally:
        for w in workers:
            if w.process is not None and w.process.poll() is None:
                w.process.kill()
            if w.process is not None:
                w.process.wait(timeout=30)

    verdict = fleet_verdict(conninfo, fleet, live, allow_missed=False)
    assert verdict.problems == [], verdict.problems
    assert verdict.counts["tick ran"] == 4 * len(fleet.sites)

    whole = range(first, end, INTERVAL_S)
    verdict = fleet_verdict(conninfo, fleet, whole, allow_missed=True)
    assert verdict.problems == [], verdict.problems  # 0 double settlements, nothing lost
    assert verdict.counts["settled on chain"] >= verdict.counts["tick ran"] - len(fleet.sites)
    for site_id, boundary, why in verdict.missed:  # only in the gap after the kill
        assert killed_at - INTERVAL_S <= boundary <= killed_at + STALL_S + 5 + INTERVAL_S, (
            site_id,
            boundary,
            why,
        )
    resumed_from = boundary_after(killed_at + STALL_S + 5 + INTERVAL_S)
    for site in fleet.sites:  # every site went on, the victim's too
        assert ticks_ran(conninfo, site.site_id, resumed_from) >= 1, site.site_id
    print(
        f"\n{len(fleet.sites)} sites, {len(whole)} boundaries, started in "
        f"{first - started:.0f} s; missed after the kill: {len(verdict.missed)}; "
        f"{dict(verdict.counts)}"
    )

    # the victim's in-flight job was recovered by a live worker
    survivors = "".join(w.log.read_text(errors="replace") for w in workers if w is not victim)
    assert "of a stalled worker" in survivors

    # the verdict catches faults: a lost tick, a re-opened settlement, a second send
    site = fleet.sites[0]
    operator = Account.from_key(fleet.env[site.key_env])
    w3 = rpc_web3(anvil.url)
    resend = w3.eth.send_raw_transaction(
        operator.sign_transaction(
            {
                "to": site.settlement,
                "data": "0x12345678",  # no such function: reverts, as a second settle does
                "gas": 100_000,
                "gasPrice": w3.eth.gas_price,
                "nonce": w3.eth.get_transaction_count(operator.address),
                "chainId": w3.eth.chain_id,
            }
        ).raw_transaction
    )
    assert w3.eth.wait_for_transaction_receipt(resend)["status"] == 0
    with psycopg.connect(conninfo) as conn:
        conn.execute(f"DELETE FROM site_{site.site_id}.ticks WHERE boundary = %s", (first,))  # noqa: S608
        conn.execute(
            f"UPDATE site_{site.site_id}.settlements SET state = 'intent' "  # noqa: S608
            "WHERE interval_id = (SELECT max(interval_id) FROM "
            f"site_{site.site_id}.settlements)"
        )
    broken = fleet_verdict(conninfo, fleet, whole, allow_missed=True)
    assert any(f"boundary {first} has no tick" in p for p in broken.problems)
    assert any(p.endswith(" intent") for p in broken.problems)
    assert any("(1 reverted)" in p for p in broken.problems)


def _busy_worker(workers: list[WorkerProcess]) -> WorkerProcess:
    """The worker whose log started a site step most recently (wait for one to be mid-step)."""
    started = re.compile(r"Starting job peergrid:peergrid\.site_step")
    ended = re.compile(r"Job peergrid:peergrid\.site_step.*ended")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for w in workers:
            text = w.log.read_text(errors="replace")
            if len(started.findall(text)) > len(ended.findall(text)):
                return w
        time.sleep(0.005)
    pytest.fail("no worker was in the middle of a step within 60 s")


# -- the hold and the database's site lock ------------------------------------------------


def test_a_hold_is_lost_when_another_job_takes_the_site(pg_cluster: Cluster) -> None:
    database = pg_cluster.create_database()
    fleet = fleet_module.Fleet(pg_cluster.url(database))
    first = fleet.take_hold("s1", job_id=101)
    with pytest.raises(LostSite, match="the job is no longer running"):
        fleet.check_hold("s1", first, STALL_S)  # job 101 is not a running procrastinate job
    second = fleet.take_hold("s1", job_id=102)
    assert second == first + 1
    with pytest.raises(LostSite, match="another job took the site"):
        fleet.check_hold("s1", first, STALL_S)
    with pytest.raises(LostSite, match="has no holder"):
        fleet.check_hold("s2", 1, STALL_S)


def test_a_hold_is_live_only_while_its_job_runs_and_its_worker_beats(pg_cluster: Cluster) -> None:
    database = pg_cluster.create_database()
    fleet = fleet_module.Fleet(pg_cluster.url(database))
    with psycopg.connect(pg_cluster.conninfo(database), autocommit=True) as conn:
        worker = conn.execute("SELECT procrastinate_register_worker_v1()").fetchone()
        assert worker is not None
        job = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status, "
            "worker_id) VALUES ('default', 'peergrid.site_step', 'site:s1', '{}', 'doing', %s) "
            "RETURNING id",
            (worker[0],),
        ).fetchone()
        assert job is not None
        epoch = fleet.take_hold("s1", job_id=job[0])
        fleet.check_hold("s1", epoch, STALL_S)  # live: nothing raised
        conn.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 minute'"
        )
        with pytest.raises(LostSite, match="heartbeat is stale"):
            fleet.check_hold("s1", epoch, STALL_S)


def test_run_and_workers_share_the_databases_site_lock(pg_cluster: Cluster) -> None:
    database = pg_cluster.create_database()
    url = pg_cluster.url(database, schema="site_s1")
    with site_lock(url), pytest.raises(AlreadyRunning, match="site_s1"):  # noqa: SIM117
        with site_lock(url):
            pass
    with site_lock(url):  # released at the end of the block
        pass


# -- the command line ---------------------------------------------------------------------


def test_site_add_list_remove(
    pg_cluster: Cluster, anvil: AnvilNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = pg_cluster.create_database()
    url = pg_cluster.url(database)
    fleet: Fleet = make_sites(tmp_path, anvil.url, 1)
    site = fleet.sites[0]
    assert main(["site", "add", "--db", url, "--id", "riverside", "--site", str(site.site)]) == 0
    assert "schema site_riverside" in capsys.readouterr().out
    assert main(["site", "add", "--db", url, "--id", "riverside", "--site", str(site.site)]) == 2
    assert "is taken" in capsys.readouterr().err
    assert main(["site", "list", "--db", url]) == 0
    assert capsys.readouterr().out.startswith("riverside")
    assert main(["site", "remove", "--db", url, "--id", "riverside"]) == 0
    capsys.readouterr()
    assert main(["site", "list", "--db", url]) == 0
    assert capsys.readouterr().out == ""
    assert main(["site", "list", "--db", url, "--all", "--json"]) == 0
    assert '"removed_at": "' in capsys.readouterr().out
    assert main(["site", "remove", "--db", url, "--id", "riverside"]) == 2


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["site", "list", "--db", "sqlite:///x.sqlite"], "need a PostgreSQL database"),
        (["site", "add", "--db", "postgresql+psycopg://u@h/db", "--id", "Bad", "--site", "x"],
         "no site file"),
        (["worker", "--db", "postgresql+psycopg://u@h/db?schema=a"], "without schema="),
    ],
)  # fmt: skip
def test_fleet_commands_refuse_bad_input(
    args: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert why in capsys.readouterr().err


def test_a_bad_site_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="lower-case letter"):
        fleet_module.check_site_id("Bad-Id")


def test_worker_command_line_names_its_development_flags() -> None:
    import subprocess

    done = subprocess.run(  # noqa: S603 - our own command
        peergrid_cmd("worker", "--help"),
        capture_output=True,
        text=True,
        env=clean_env(),
        check=True,
    )
    assert "DEVELOPMENT ONLY" in done.stdout
    assert "--simulate-devices" in done.stdout


def test_serve_front_serves_a_fleet_site_without_taking_it(
    pg_cluster: Cluster, anvil: AnvilNode, tmp_path: Path
) -> None:
    import signal
    import subprocess

    import httpx

    database = pg_cluster.create_database()
    url = pg_cluster.url(database)
    fleet = make_sites(tmp_path, anvil.url, 1)
    site = fleet.sites[0]
    registry = fleet_module.Fleet(url)
    registry.add_site(site.site_id, site.site)
    log = tmp_path / "front.log"
    command = peergrid_cmd(
        "-v", "serve", "--front", "--db", url, "--id", site.site_id, "--port", "0"
    )
    with log.open("wb") as out:
        front = subprocess.Popen(  # noqa: S603 - our own command
            command, stdout=out, stderr=subprocess.STDOUT, env=clean_env(**fleet.env)
        )
    try:
        wait_for(lambda: "serving http://" in log.read_text(), 90, "serve --front to listen")
        found = re.search(r"serving http://127\.0\.0\.1:(\d+)", log.read_text())
        assert found is not None
        health = httpx.get(f"http://127.0.0.1:{found.group(1)}/health", timeout=10)
        assert health.status_code == 200
        with site_lock(registry.store_url(site.site_id)):  # the front does not hold the site
            pass
    finally:
        front.send_signal(signal.SIGTERM)
        code = front.wait(timeout=60)
    assert code == 0, log.read_text()[-2000:]
    assert "in front: the cycle runs in the workers" in log.read_text()


def test_front_refuses_a_database_without_a_fleet(pg_cluster: Cluster) -> None:
    from controller.errors import MissingDatabase

    url = pg_cluster.url(pg_cluster.create_database())
    with pytest.raises(MissingDatabase, match="holds no fleet"):
        fleet_module.Fleet(url, create=False)
    assert main(["serve", "--front", "--db", url, "--id", "s1"]) == 2


def test_two_sites_cannot_share_an_operator_key(
    pg_cluster: Cluster, anvil: AnvilNode, tmp_path: Path
) -> None:
    url = pg_cluster.url(pg_cluster.create_database())
    fleet = make_sites(tmp_path, anvil.url, 2)
    first, second = fleet.sites
    text = second.site.read_text().replace(second.key_env, first.key_env)
    second.site.write_text(text)
    registry = fleet_module.Fleet(url)
    registry.add_site(first.site_id, first.site)
    with pytest.raises(ConfigError, match="needs its own operator account"):
        registry.add_site(second.site_id, second.site)
    assert registry.remove_site(first.site_id)
    registry.add_site(second.site_id, second.site)  # the key is free again


def test_warm_up_logs_a_site_it_cannot_build_and_goes_on(
    pg_cluster: Cluster,
    anvil: AnvilNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warm-up's catch-all: a broken site is logged with its traceback, the rest built."""
    from controller.worker import FleetWorker, WorkerOptions

    url = pg_cluster.url(pg_cluster.create_database())
    fleet = make_sites(tmp_path, anvil.url, 2)
    registry = fleet_module.Fleet(url)
    for site in fleet.sites:
        registry.add_site(site.site_id, site.site)
    good, broken = fleet.sites
    monkeypatch.setenv(good.key_env, fleet.env[good.key_env])
    monkeypatch.delenv(broken.key_env, raising=False)  # its operator key is missing
    worker = FleetWorker(WorkerOptions(db_url=url, simulate_devices=True), app=None)  # type: ignore[arg-type]
    try:
        with caplog.at_level("ERROR", logger="peergrid.worker"):
            assert worker.warm() == 1
    finally:
        worker.close()
    failed = [r for r in caplog.records if "warming site" in r.getMessage()]
    assert [broken.site_id in r.getMessage() for r in failed] == [True]
    assert failed[0].exc_info is not None  # with its traceback


def test_a_step_is_deferred_shortly_before_its_event_not_at_once(
    pg_cluster: Cluster, anvil: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dispatch defers a site's next step once its event is DISPATCH_AHEAD_S away: not in the
    burst of steps just after a boundary; an event that came undispatched goes at once."""
    from controller.worker import FleetWorker, WorkerOptions, make_app

    url = pg_cluster.url(pg_cluster.create_database())
    fleet = make_sites(tmp_path, anvil.url, 1, interval_s=60, gate_closure_s=20)
    registry = fleet_module.Fleet(url)
    registry.add_site(fleet.sites[0].site_id, fleet.sites[0].site)
    boundary = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)  # events at :00 and at :40 (gate)
    conninfo = fleet_module.conninfo_of(url)

    def jobs() -> list[tuple[int, datetime | None]]:
        with psycopg.connect(conninfo) as conn:
            rows = conn.execute(
                "SELECT (args->>'at')::bigint, scheduled_at FROM procrastinate_jobs "
                "WHERE task_name LIKE '%site_step' ORDER BY id"
            ).fetchall()
            conn.execute("UPDATE procrastinate_jobs SET status = 'succeeded'")  # as if run
        return [(int(at), when) for at, when in rows]

    steps: list[tuple[int, datetime | None]] = []

    app = make_app(url)
    worker = FleetWorker(WorkerOptions(db_url=url, simulate_devices=True), app=app)
    try:
        with app.open():
            for offset_s, deferred in ((10, 1), (10, 0), (24, 0), (26, 1), (30, 0)):
                now = boundary + timedelta(seconds=offset_s)
                monkeypatch.setattr(worker.fleet, "db_now", lambda now=now: now)
                assert worker.dispatch() == deferred, offset_s
                steps += jobs()[len(steps) :]
            gate = boundary + timedelta(seconds=40)
            assert steps == [(int(boundary.timestamp()), None), (int(gate.timestamp()), gate)]
    finally:
        worker.close()

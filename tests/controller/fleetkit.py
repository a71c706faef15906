"""Fleet harness: many small sites on anvil, real ``peergrid worker`` processes, a verdict.

Used by ``tests/controller/test_fleet_workers.py`` (a few sites, kill -9 of a worker) and by
``benchmarks/fleet_soak.py`` (3 workers x 300 sites). The pieces:

* :func:`make_sites`: per site an operator key, contracts deployed in this process (token,
  reward token, Settlement: each site its own), escrow funded by each owner, and a site file
  (``rpc`` backend on the anvil node, operator key in the environment variable
  ``PEERGRID_FLEET_KEY_<n>``); ``peergrid site add`` puts it in the fleet's database;
* :class:`WorkerProcess`: one ``python -m controller -v worker --db URL --simulate-devices
  --dev-interval-s N`` process with its log file, killed with SIGKILL or stopped with
  SIGTERM by the test;
* :func:`fleet_verdict`: what the database's unique constraints and the chain say, read
  independently: per site, every tick's outcome, every cleared interval, each settlement
  against the contract's ``Settled`` events (one per interval, the same batch id), and the
  operator's transactions to its contract counted from the blocks (one per settlement).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from killharness import DEPOSIT, REPO, clean_env

from adapters.chain import ChainClient, Signer, new_account
from adapters.chain.backends import rpc_web3

OWNERS = ("alice", "bob", "grid", "community")

SITE = """\
[site]
name = "{name}"
grid = "cigre-lv"
interval_s = {interval_s}
gate_closure_s = {gate_closure_s}
max_reading_age_s = 60

[chain]
backend = "rpc"
rpc_url = "{url}"
confirmations = 0
token_address = "{token}"
settlement_address = "{settlement}"
operator_key_env = "{key_env}"
grid_account = "{grid}"
community_account = "{community}"

[[participants]]
id = "alice"
bus = "Bus R11"
account = "{alice}"
  [[participants.orders]]
  kind = "sell_surplus"
  price = 100_000

[[participants]]
id = "bob"
bus = "Bus R15"
account = "{bob}"
  [[participants.orders]]
  kind = "buy_demand"
  price = 320_000

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = 0
rated_w = {pv_w}

[[devices]]
id = "bob-meter"
participant = "bob"
kind = "meter"
port = 0
profile_scale_w = {load_w}
"""


@dataclass(frozen=True, slots=True)
class FleetSite:
    """One site of the fleet: its id, file and contracts."""

    site_id: str
    site: Path
    token: str
    settlement: str
    operator: str
    key_env: str


@dataclass
class Fleet:
    """The sites made on one anvil node, and the environment the workers need."""

    url: str
    sites: list[FleetSite] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def client(self, site: FleetSite) -> ChainClient:
        """A client that only reads ``site``'s contracts."""
        client = ChainClient(rpc_web3(self.url), new_account())
        client.attach(site.token, site.settlement)
        return client


def make_sites(
    folder: Path,
    url: str,
    count: int,
    *,
    start: int = 0,
    interval_s: int = 900,
    gate_closure_s: int = 0,
) -> Fleet:
    """``count`` sites on the anvil node at ``url`` (module docstring), files in ``folder``."""
    w3 = rpc_web3(url)
    bank_key = new_account()
    fleet = Fleet(url=url)
    admin: Signer = bank_key
    # anvil's first prefunded account pays the gas money of every key made here
    funder = ChainClient(w3, admin)
    funder.fund_eth(admin.address, 10**20)
    for n in range(start, start + count):
        operator = new_account()
        owners = {who: new_account() for who in OWNERS}
        for account in (operator, *owners.values()):
            funder.fund_eth(account.address, 10**18)
        deployer = ChainClient(w3, operator, admin=admin)
        deployment = deployer.deploy_all(reward_rate=1_000_000, reward_cap=100_000_000)
        for account in owners.values():  # each owner funds its own escrow
            deployer.mint(account.address, 2 * DEPOSIT)
            deployer.deposit(account, DEPOSIT)
        key_env = f"PEERGRID_FLEET_KEY_{n}"
        fleet.env[key_env] = operator.key.hex()
        site_file = folder / f"site{n}.toml"
        site_file.write_text(
            SITE.format(
                name=f"fleet site {n}",
                interval_s=interval_s,
                gate_closure_s=gate_closure_s,
                url=url,
                token=deployment.token,
                settlement=deployment.settlement,
                key_env=key_env,
                pv_w=3000 + 100 * (n % 20),
                load_w=2500 + 50 * (n % 30),
                **{who: account.address for who, account in owners.items()},
            ),
            encoding="utf-8",
        )
        fleet.sites.append(
            FleetSite(
                site_id=f"s{n:04d}",
                site=site_file,
                token=deployment.token,
                settlement=deployment.settlement,
                operator=operator.address,
                key_env=key_env,
            )
        )
    return fleet


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU time [s] of process ``pid`` so far (``/proc``); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peergrid_cmd(*args: str) -> list[str]:
    """``python -m controller ARGS`` with this interpreter."""
    return [sys.executable, "-m", "controller", *args]


def add_sites(db_url: str, fleet: Fleet, sites: Iterable[FleetSite]) -> None:
    """``peergrid site add`` every site (one process per site, as an operator would)."""
    for site in sites:
        done = subprocess.run(  # noqa: S603 - our own command
            peergrid_cmd(
                "site", "add", "--db", db_url, "--id", site.site_id, "--site", str(site.site)
            ),
            capture_output=True,
            text=True,
            env=clean_env(**fleet.env),
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr


@dataclass
class WorkerProcess:
    """One ``peergrid worker`` process (module docstring)."""

    name: str
    db_url: str
    log: Path
    env: dict[str, str]
    dev_interval_s: int | None
    stall_s: float
    concurrency: int = 1
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the worker; returns self."""
        args = peergrid_cmd(
            "-v", "worker", "--db", self.db_url, "--name", self.name, "--simulate-devices",
            "--stall-s", str(self.stall_s), "--concurrency", str(self.concurrency),
        )  # fmt: skip
        if self.dev_interval_s is not None:
            args += ["--dev-interval-s", str(self.dev_interval_s)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own command
                args, stdout=out, stderr=subprocess.STDOUT, env=clean_env(**self.env), cwd=REPO
            )
        return self

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM, then wait: running steps finish; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=30)

    def cpu_s(self) -> float:
        """User + system CPU time [s] so far (``/proc``), 0 when the process is gone."""
        return process_cpu_s(self.pid)

    def rss_mb(self) -> float:
        """Resident memory [MB] (``/proc``), 0 when the process is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


@dataclass
class Verdict:
    """What :func:`fleet_verdict` found: problems (one line each) and counts."""

    problems: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    missed: list[tuple[str, int, str]] = field(default_factory=list)


def operator_sends(fleet: Fleet) -> dict[str, Counter[str]]:
    """Per site, its operator's transactions to its Settlement contract, from every block.

    ``{"sent": n, "reverted": m}`` per site id.
    """
    w3 = rpc_web3(fleet.url)
    by_pair = {(s.operator.lower(), s.settlement.lower()): s.site_id for s in fleet.sites}
    out: dict[str, Counter[str]] = {s.site_id: Counter() for s in fleet.sites}
    for number in range(w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            site_id = by_pair.get((str(tx["from"]).lower(), str(tx["to"] or "").lower()))
            if site_id is None:
                continue
            out[site_id]["sent"] += 1
            if w3.eth.get_transaction_receipt(tx["hash"])["status"] != 1:
                out[site_id]["reverted"] += 1
    return out


def fleet_verdict(
    conninfo: str,
    fleet: Fleet,
    boundaries: range,
    *,
    allow_missed: bool,
    count_sends: bool = True,
) -> Verdict:
    """Check every site over ``boundaries`` [Unix s] from the database and the chain.

    Per site and boundary: exactly one tick (primary key), ``ran`` (or, with
    ``allow_missed``, ``missed``/``crashed`` with a reason); every interval cleared once
    (primary key) and settled: its settlement ``settled`` in the store and exactly one
    ``Settled`` event of that interval on the site's own contract, with the stored batch id.
    With ``count_sends``, the operator's transactions to the contract are counted from the
    blocks: one per settled interval, none reverted (a second send of an interval, which
    the contract refuses, shows here).
    """
    verdict = Verdict()
    sends = operator_sends(fleet) if count_sends else {}
    with psycopg.connect(conninfo) as conn:
        for site in fleet.sites:
            schema = f"site_{site.site_id}"
            ticks = dict(
                conn.execute(
                    f"SELECT boundary, outcome || '|' || detail FROM \"{schema}\".ticks "  # noqa: S608
                    "WHERE boundary BETWEEN %s AND %s",
                    (boundaries.start, boundaries.stop),
                ).fetchall()
            )
            settled = dict(
                conn.execute(
                    f"SELECT interval_id, state || '|' || batch_id FROM \"{schema}\".settlements"  # noqa: S608
                ).fetchall()
            )
            cleared = {
                int(r[0])
                for r in conn.execute(f'SELECT interval_id FROM "{schema}".intervals')  # noqa: S608
            }
            events = fleet.client(site).settled_events(0)
            per_interval = Counter(e.interval_id for e in events)
            batch_on_chain = {e.interval_id: e.batch_id for e in events}
            for interval_id, n in per_interval.items():
                if n != 1:
                    verdict.problems.append(f"{site.site_id}: interval {interval_id} settled {n}x")
            for boundary in boundaries:
                tick = ticks.get(boundary)
                verdict.counts["boundaries"] += 1
                if tick is None:
                    verdict.problems.append(f"{site.site_id}: boundary {boundary} has no tick")
                    continue
                outcome, _, detail = tick.partition("|")
                verdict.counts[f"tick {outcome}"] += 1
                if outcome != "ran":
                    if allow_missed and outcome in {"missed", "crashed"} and detail:
                        verdict.missed.append((site.site_id, boundary, f"{outcome}: {detail}"))
                    else:
                        why = detail or "no reason"
                        verdict.problems.append(f"{site.site_id}: {boundary} {outcome} ({why})")
                    continue
                if boundary in cleared:
                    verdict.counts["cleared"] += 1
                else:
                    verdict.problems.append(f"{site.site_id}: {boundary} ran, not cleared")
            for interval_id, state_batch in settled.items():
                state, _, batch_id = state_batch.partition("|")
                verdict.counts[f"settlement {state}"] += 1
                if state != "settled":
                    verdict.problems.append(f"{site.site_id}: interval {interval_id} {state}")
                    continue
                chain_batch = batch_on_chain.get(interval_id)
                if chain_batch is None:
                    verdict.problems.append(f"{site.site_id}: {interval_id} not on chain")
                elif chain_batch.lower().removeprefix("0x") != batch_id.lower().removeprefix("0x"):
                    verdict.problems.append(f"{site.site_id}: {interval_id} other batch on chain")
                else:
                    verdict.counts["settled on chain"] += 1
            for interval_id in per_interval.keys() - settled.keys():
                verdict.problems.append(f"{site.site_id}: {interval_id} on chain, not in store")
            if count_sends:
                sent = sends[site.site_id]
                verdict.counts["operator sends"] += sent["sent"]
                if sent["sent"] != len(events) or sent["reverted"]:
                    verdict.problems.append(
                        f"{site.site_id}: {sent['sent']} sends ({sent['reverted']} reverted) "
                        f"for {len(events)} settlements"
                    )
    return verdict


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.5) -> None:
    """Poll until ``predicate()`` holds, else fail with ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout:.0f} s waiting for {what}"
            raise AssertionError(msg)
        time.sleep(poll)

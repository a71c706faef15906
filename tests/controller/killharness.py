"""Kill harness: run the real ``peergrid run`` against anvil, SIGKILL it, check exactly-once.

The pieces, each usable alone:

* :class:`Simulators`: the site's Modbus devices, real TCP simulators on 127.0.0.1 in this
  (the test's) process, their clocks following the wall clock (a thread advances them every
  0.1 s), so they keep integrating energy while the controller is dead;
* :func:`make_site`: keys, gas money, contracts (``peergrid chain deploy`` as a user runs it,
  or in-process), escrow funded by each owner, and a site TOML (``rpc`` backend on an anvil
  node the test started, SQLite, the simulators' ports);
* :class:`ControllerProcess`: one ``python -m controller -v run --site ... --dev-interval-s N``
  process (the ``peergrid`` console script's ``main``), its output in a log file; armed with
  ``PEERGRID_CRASH_AT`` or killed by the test with ``SIGKILL``;
* :func:`snapshot`: what the database holds, read with ``sqlite3`` (read-only), not through
  the controller's store;
* :func:`check_exactly_once`: the verdict, from the chain (``Settled`` events, the operator's
  transactions read from the blocks, receipts, the node's nonces) and the database (ticks,
  intervals, settlements, audit records, the persisted nonce) independently. A function of
  a database file and a chain, so it can be run on a damaged copy
  (``test_kill_run.py::test_the_checker_reports_a_damaged_database``);
* :func:`audit_verify`: ``peergrid audit verify --json`` as a subprocess.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.chain import ChainClient, Signer, new_account
from adapters.chain.backends import rpc_web3
from adapters.modbus.simulators import (
    BatterySim,
    DeviceSimulator,
    LoadMeterSim,
    PVInverterSim,
    constant_profile,
)

REPO = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------- processes


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``PEERGRID_*`` (but anvil's path), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_")}
    if "PEERGRID_ANVIL" in os.environ:
        env["PEERGRID_ANVIL"] = os.environ["PEERGRID_ANVIL"]
    return env | extra


def peergrid(
    *argv: str, env: Mapping[str, str], cwd: Path, stdin: str = "", timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m controller ARGV`` to its end."""
    return subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "controller", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` [s]."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout:.0f} s waiting for {what}"
            raise AssertionError(msg)
        time.sleep(poll)


# ----------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated device of the kill site."""

    id: str
    participant: str
    kind: str  # pv | meter | battery
    power_w: int  # pv: available power; meter: load; battery: rated power


DEVICES = (
    DeviceSpec("alice-pv", "alice", "pv", 4_000),
    DeviceSpec("bob-meter", "bob", "meter", 3_000),
    DeviceSpec("carol-battery", "carol", "battery", 2_000),
)
BATTERY_WH = 10_000


class Simulators:
    """The kill site's devices on 127.0.0.1, their clocks following the wall clock.

    A thread advances every simulator to ``datetime.now(UTC)`` every 0.1 s, so the energy
    counters move in real time whether or not a controller is reading them. With
    ``start_at`` the clocks start there and move only by :meth:`advance` (simulated time,
    as the demo runs).
    """

    def __init__(
        self, specs: tuple[DeviceSpec, ...] = DEVICES, *, start_at: datetime | None = None
    ) -> None:
        self.realtime = start_at is None
        now = datetime.now(UTC) if start_at is None else start_at
        self.specs = specs
        self.sims: dict[str, DeviceSimulator] = {}
        for spec in specs:
            sim: DeviceSimulator
            if spec.kind == "pv":
                sim = PVInverterSim(5_000, constant_profile(spec.power_w), start_at=now)
            elif spec.kind == "meter":
                sim = LoadMeterSim(constant_profile(spec.power_w), start_at=now)
            else:
                sim = BatterySim(BATTERY_WH, spec.power_w, 50.0, start_at=now)
            self.sims[spec.id] = sim
        self._stop = threading.Event()
        self._clock = threading.Thread(target=self._tick, name="sim-clock", daemon=True)

    def _tick(self) -> None:
        while not self._stop.wait(0.1):
            now = datetime.now(UTC)
            for sim in self.sims.values():
                sim.advance(now)

    def advance(self, to: datetime) -> None:
        """Move every simulator's clock to ``to`` (simulated time only)."""
        assert not self.realtime
        for sim in self.sims.values():
            sim.advance(to)

    def ports(self) -> dict[str, int]:
        """The TCP port of every device."""
        return {device: sim.port for device, sim in self.sims.items()}

    def __enter__(self) -> Simulators:
        for sim in self.sims.values():
            sim.start()
        if self.realtime:
            self._clock.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._clock.is_alive():
            self._clock.join(5)
        for sim in self.sims.values():
            sim.stop()


# ----------------------------------------------------------------------------- the site

SITE = """\
[site]
name = "{name}"
grid = "cigre-lv"
interval_s = 900
database = "sqlite:///store.sqlite"
max_reading_age_s = 60

[chain]
backend = "rpc"
rpc_url = "{url}"
confirmations = {confirmations}
token_address = "{token}"
settlement_address = "{settlement}"
operator_key_env = "PEERGRID_OPERATOR_KEY"
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

[[participants]]
id = "carol"
bus = "Bus R17"
account = "{carol}"
  [[participants.orders]]
  kind = "battery"
  price = 150_000
  discharge_price = 250_000

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = {port_alice_pv}
rated_w = 5000

[[devices]]
id = "bob-meter"
participant = "bob"
kind = "meter"
port = {port_bob_meter}

[[devices]]
id = "carol-battery"
participant = "carol"
kind = "battery"
port = {port_carol_battery}
rated_w = 2000
capacity_wh = {battery_wh}
"""

OWNERS = ("alice", "bob", "carol", "grid", "community")
DEPOSIT = 20_000_000  # each owner's escrow [token base units]: 20 tokens


@dataclass
class KillSite:
    """A site on an anvil node, ready for ``peergrid run``."""

    folder: Path
    site: Path
    db: Path
    url: str
    token: str
    settlement: str
    operator: Signer
    admin: Signer
    owners: dict[str, Signer]
    env: dict[str, str]

    def client(self) -> ChainClient:
        """A client that only reads the site's contracts."""
        client = ChainClient(rpc_web3(self.url), new_account())
        client.attach(self.token, self.settlement)
        return client


def make_site(
    folder: Path,
    url: str,
    sims: Simulators,
    *,
    name: str = "kill test",
    confirmations: int = 0,
    deploy_with_cli: bool = True,
) -> KillSite:
    """Keys, gas, contracts, escrow and the site file of a kill-test site on ``url``.

    Parameters
    ----------
    folder : Path
        Where the site file (and its database, relative to it) go.
    url : str
        The anvil node's URL (the site's ``rpc`` backend).
    sims : Simulators
        The running simulators (their ports go into the site file).
    name : str
        The site's name.
    confirmations : int
        The site's finality depth [blocks].
    deploy_with_cli : bool
        Deploy with ``peergrid chain deploy`` (as a user does); else in this process.
    """
    operator, admin = new_account(), new_account()
    owners = {who: new_account() for who in OWNERS}
    env = clean_env(PEERGRID_OPERATOR_KEY=operator.key.hex(), PEERGRID_ADMIN_KEY=admin.key.hex())
    w3 = rpc_web3(url)
    bank = ChainClient(w3, admin)
    for account in (operator, admin, *owners.values()):
        bank.fund_eth(account.address, 10**19)
    if deploy_with_cli:
        deployed = peergrid(
            "chain", "deploy", "--backend", "rpc", "--rpc-url", url,
            "--admin-key-env", "PEERGRID_ADMIN_KEY", "--operator-key-env",
            "PEERGRID_OPERATOR_KEY", "--json",
            env=env, cwd=folder,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr
        doc = json.loads(deployed.stdout)
        token, settlement = doc["token"], doc["settlement"]
        assert (doc["operator"], doc["admin"]) == (operator.address, admin.address)
    else:
        deployer = ChainClient(w3, operator, admin=admin)
        deployment = deployer.deploy_all(reward_rate=1_000_000, reward_cap=100_000_000)
        token, settlement = deployment.token, deployment.settlement
    client = ChainClient(w3, operator, admin=admin)
    client.attach(token, settlement)
    for account in owners.values():  # each owner funds its own escrow
        client.mint(account.address, 2 * DEPOSIT)
        client.deposit(account, DEPOSIT)
    ports = {f"port_{d.replace('-', '_')}": p for d, p in sims.ports().items()}
    site = folder / "site.toml"
    site.write_text(
        SITE.format(
            name=name,
            url=url,
            confirmations=confirmations,
            token=token,
            settlement=settlement,
            battery_wh=BATTERY_WH,
            **ports,
            **{who: account.address for who, account in owners.items()},
        ),
        encoding="utf-8",
    )
    return KillSite(
        folder=folder,
        site=site,
        db=folder / "store.sqlite",
        url=url,
        token=token,
        settlement=settlement,
        operator=operator,
        admin=admin,
        owners=owners,
        env=env,
    )


# ----------------------------------------------------------------------------- a controller

ZYGOTE_IMPORTS = (
    "controller.cli",
    "controller.runner",
    "controller.wiring",
    "controller.cycle",
    "controller.scheduler",
    "controller.store",
    "controller.audit",
    "grid_models.grids",
    "grid_models.dispatch",
    "adapters.chain",
)
"""What the zygote imports once before it forks (the ~10 s a fresh Python spends here)."""


def zygote_main() -> None:
    """``python killharness.py --zygote``: fork one ``peergrid`` process per request.

    Each stdin line is a JSON request ``{"argv": [...], "env": {...}, "cwd": ..., "log":
    ...}``. The zygote forks; the child takes ``env`` as its whole environment, ``cwd`` as
    its folder, the log file as its stdout and stderr, and runs
    ``controller.cli.main(argv)`` (what the ``peergrid`` console script runs), then exits
    with its code. The zygote prints ``pid N``, waits for the child, and prints ``exit RC``
    (``-9`` for ``SIGKILL``). Nothing but imports happens before a fork: no thread, no
    connection, no logging configuration.
    """
    import importlib

    for name in ZYGOTE_IMPORTS:
        importlib.import_module(name)
    print("zygote", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: become a peergrid process
            code = 70
            try:
                os.environ.clear()
                os.environ.update(request["env"])
                os.chdir(request["cwd"])
                fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                from controller.cli import main

                code = main(request["argv"])
            except BaseException:  # the child must never return into the zygote's loop
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


class Zygote:
    """A running zygote (:func:`zygote_main`): starts ``peergrid`` processes in ~0.01 s."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, str(Path(__file__).resolve()), "--zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=clean_env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        first = self.lines.get(timeout=180)
        assert first == "zygote", first

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("eof")

    def fork(self, argv: list[str], env: Mapping[str, str], cwd: Path, log: Path) -> int:
        """Fork a ``peergrid ARGV`` process; its pid."""
        assert self.proc.stdin is not None
        request = {"argv": argv, "env": dict(env), "cwd": str(cwd), "log": str(log)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.lines.get(timeout=60)
        assert line.startswith("pid "), line
        return int(line.split()[1])

    def wait_exit(self, timeout: float) -> int | None:
        """The return code of the forked process, or ``None`` if it runs after ``timeout``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        assert line.startswith("exit "), line
        return int(line.split()[1])

    def close(self) -> None:
        """End the zygote (its stdin closes) and its output pipe."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class ControllerProcess:
    """One ``peergrid -v run --dev-interval-s N`` process of ``site``; its output in ``log``.

    A fresh ``python -m controller`` process, or (with ``zygote``) a fork of a zygote that
    imported the controller once and then runs the same ``controller.cli.main``.
    """

    site: KillSite
    interval_s: int
    log: Path
    crash_at: str | None = None
    zygote: Zygote | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    pid: int = field(default=0, init=False)
    returncode: int | None = field(default=None, init=False)
    started: float = field(default=0.0, init=False)
    ended: float | None = field(default=None, init=False)
    killed_by_test: bool = field(default=False, init=False)

    def argv(self) -> list[str]:
        return [
            "-v", "run", "--site", str(self.site.site), "--dev-interval-s", str(self.interval_s)
        ]  # fmt: skip

    def start(self) -> ControllerProcess:
        """Start the process (``PEERGRID_CRASH_AT`` set to :attr:`crash_at` if given)."""
        env = dict(self.site.env)
        if self.crash_at:
            env["PEERGRID_CRASH_AT"] = self.crash_at
        self.started = time.monotonic()
        if self.zygote is not None:
            self.pid = self.zygote.fork(self.argv(), env, self.site.folder, self.log)
            self.started = time.monotonic()  # the child runs from here
            return self
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own command line
                [sys.executable, "-m", "controller", *self.argv()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.site.folder,
            )
        self.pid = self.proc.pid
        return self

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` [s] for the process to end; its return code or ``None``."""
        if self.returncode is not None:
            return self.returncode
        if self.zygote is not None:
            code = self.zygote.wait_exit(timeout)
        else:
            assert self.proc is not None
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        if code is not None:
            self.returncode = code
            self.ended = time.monotonic()
        return code

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process unless it has ended."""
        if self.returncode is None and self.wait(0) is None:
            os.kill(self.pid, sig)

    def kill(self) -> int:
        """``kill -9`` the process (if it still runs) and reap it; its return code."""
        if self.returncode is None and self.wait(0) is None:
            os.kill(self.pid, signal.SIGKILL)
            self.killed_by_test = True
        code = self.wait(60)
        assert code is not None, f"process {self.pid} did not die"
        return code

    def interrupt(self, timeout: float = 60) -> int:
        """Stop the process as Ctrl-C does; ``kill -9`` it if it does not end in time."""
        self.signal(signal.SIGINT)
        code = self.wait(timeout)
        return self.kill() if code is None else code

    @property
    def alive_s(self) -> float:
        """How long the process lived [s]."""
        end = self.ended if self.ended is not None else time.monotonic()
        return end - self.started

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


@dataclass
class ServeProcess(ControllerProcess):
    """One ``peergrid -v serve --site ... --port 0 --dev-interval-s N`` process.

    The HTTP API listens on a free port of 127.0.0.1 (:meth:`url`, read from the log).
    """

    def argv(self) -> list[str]:
        return [
            "-v", "serve", "--site", str(self.site.site), "--port", "0",
            "--dev-interval-s", str(self.interval_s),
        ]  # fmt: skip

    def url(self) -> str | None:
        """``http://127.0.0.1:PORT`` once the process logged it is serving, else ``None``."""
        for line in self.output().splitlines():
            if "serving http://" in line:
                return line.split("serving ", 1)[1].split()[0]
        return None


def set_gate_closure(site: KillSite, gate_closure_s: int) -> None:
    """Give the kill site's file a gate closure [s] (clipped below ``--dev-interval-s``)."""
    text = site.site.read_text(encoding="utf-8")
    gate = f"interval_s = 900\ngate_closure_s = {gate_closure_s}\n"
    text = text.replace("interval_s = 900\n", gate)
    site.site.write_text(text, encoding="utf-8")


# ----------------------------------------------------------------------------- the database


@contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only ``sqlite3`` connection to ``db`` (never the controller's store code)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def snapshot(db: Path) -> dict[str, Any]:
    """Counts of what ``db`` holds: ticks by outcome, intervals, settlements, audit records.

    An absent database is all zeros.
    """
    if not db.exists():
        return {"ticks": {}, "intervals": 0, "settled": 0, "pending": 0, "audit": 0}
    with read_only(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master")}
        if "ticks" not in tables:
            return {"ticks": {}, "intervals": 0, "settled": 0, "pending": 0, "audit": 0}
        ticks = Counter(r[0] for r in conn.execute("select outcome from ticks"))
        states = Counter(r[0] for r in conn.execute("select state from settlements"))
        return {
            "ticks": dict(ticks),
            "intervals": conn.execute("select count(*) from intervals").fetchone()[0],
            "settled": states.get("settled", 0),
            "pending": sum(n for s, n in states.items() if s != "settled"),
            "audit": conn.execute("select count(*) from audit").fetchone()[0],
        }


# ----------------------------------------------------------------------------- the verdict

SETTLED_TOPIC_NAME = "Settled"


@dataclass
class Verdict:
    """What :func:`check_exactly_once` found: problems (empty: all holds) and counts."""

    problems: list[str]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.problems


def _chain_view(client: ChainClient, operator: str) -> dict[str, Any]:
    """Settled events and the operator's transactions, read from the blocks."""
    w3 = client.w3
    head = w3.eth.block_number
    events = client.settled_events(0, to_block=head)
    txs: list[dict[str, Any]] = []
    for number in range(head + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if str(tx["from"]).lower() != operator.lower():
                continue
            receipt = w3.eth.get_transaction_receipt(tx["hash"])
            txs.append(
                {
                    "nonce": int(tx["nonce"]),
                    "hash": "0x" + bytes(tx["hash"]).hex(),
                    "to": str(tx["to"] or ""),
                    "block": number,
                    "status": int(receipt["status"]),
                    "logs": len(receipt["logs"]),
                }
            )
    return {
        "head": head,
        "events": events,
        "txs": txs,
        "latest_nonce": w3.eth.get_transaction_count(operator, "latest"),
        "pending_nonce": w3.eth.get_transaction_count(operator, "pending"),
    }


def _norm(tx_hash: str | None) -> str:
    return (tx_hash or "").lower().removeprefix("0x")


def check_exactly_once(db: Path, client: ChainClient, operator: str, interval_s: int) -> Verdict:
    """Check a site's database and chain against each other: exactly once, nothing lost.

    The database is read with ``sqlite3`` (read-only), the chain through its ``Settled``
    events, its blocks and receipts, and the node's nonces.

    Parameters
    ----------
    db : Path
        The site's SQLite file.
    client : ChainClient
        A client attached to the site's contracts (it only reads).
    operator : str
        The operator's address.
    interval_s : int
        The interval the controller ran with [s].

    Returns
    -------
    Verdict
        Every problem found, one line each, and counts of what was checked.

    Notes
    -----
    What must hold:

    * ticks: every boundary from the first to the last recorded tick has a row; none is
      still ``running``; every outcome other than ``ran`` carries a reason; a boundary whose
      tick ran has a recorded outcome for the interval starting there;
    * intervals: none still ``claimed`` before the last tick; every non-cleared outcome
      carries a reason; every interval that ended by the last tick that ran is settled;
    * each interval is settled on-chain at most once (one ``Settled`` event), and the
      database agrees with every event (state ``settled``, same transaction, block and batch
      id), in both directions;
    * every settled interval has its audit record, naming the same batch and transaction;
    * the operator's transactions (read from the blocks) have nonces ``0 .. n-1``, none
      reverted, nothing is waiting at the node, every transaction to the settlement contract
      settled an interval (none was sent twice), and the persisted next nonce is the chain's.
    """
    problems: list[str] = []
    with read_only(db) as conn:
        ticks = [dict(r) for r in conn.execute("select * from ticks order by boundary")]
        intervals = {
            int(r["interval_id"]): dict(r)
            for r in conn.execute(
                "select interval_id, length_s, status, reason from intervals order by interval_id"
            )
        }
        settlements = {
            int(r["interval_id"]): dict(r) for r in conn.execute("select * from settlements")
        }
        audit = {
            int(r["interval_id"]): json.loads(r["record"])
            if isinstance(r["record"], str)
            else r["record"]
            for r in conn.execute("select interval_id, record from audit")
        }
        nonce_row = conn.execute(
            "select next from chain_nonces where lower(address) = lower(?)", (operator,)
        ).fetchone()
    chain = _chain_view(client, operator)

    # ---- ticks
    by_boundary = {int(t["boundary"]): t for t in ticks}
    if ticks:
        first, last = min(by_boundary), max(by_boundary)
        for b in range(first, last + 1, interval_s):
            if b not in by_boundary:
                problems.append(f"boundary {b}: no tick recorded (lost)")
    for b, t in sorted(by_boundary.items()):
        if t["outcome"] == "running":
            problems.append(f"boundary {b}: tick still 'running' (never closed)")
        elif t["outcome"] != "ran" and not (t["detail"] or "").strip():
            problems.append(f"boundary {b}: tick '{t['outcome']}' without a reason")
        if t["outcome"] == "ran" and b not in intervals:
            problems.append(f"boundary {b}: tick ran but interval {b} has no recorded outcome")
    ran = [b for b, t in by_boundary.items() if t["outcome"] == "ran"]
    last_ran = max(ran) if ran else None
    last_tick = max(by_boundary) if by_boundary else None

    # ---- intervals
    for i, row in intervals.items():
        if row["status"] == "claimed":
            if last_tick is not None and i < last_tick:
                problems.append(f"interval {i}: still 'claimed' (never closed)")
            continue
        if row["status"] not in {"cleared", "no_crossing"} and not (row["reason"] or "").strip():
            problems.append(f"interval {i}: outcome '{row['status']}' without a reason")
        ended = i + int(row["length_s"])
        if last_ran is not None and ended <= last_ran:
            s = settlements.get(i)
            if s is None:
                problems.append(f"interval {i} ({row['status']}): ended but never settled")
            elif s["state"] != "settled":
                problems.append(f"interval {i}: settlement still '{s['state']}' ({s['error']})")

    # ---- chain <-> database
    per_interval = Counter(e.interval_id for e in chain["events"])
    for i, n in sorted(per_interval.items()):
        if n > 1:
            problems.append(f"interval {i}: settled {n} times on-chain")
    events = {e.interval_id: e for e in chain["events"]}
    for i, e in sorted(events.items()):
        s = settlements.get(i)
        if s is None:
            problems.append(f"interval {i}: settled on-chain, unknown to the database")
            continue
        if s["state"] != "settled":
            problems.append(f"interval {i}: settled on-chain, database says '{s['state']}'")
        if _norm(s["tx_hash"]) != _norm(e.tx_hash) or s["block_number"] != e.block_number:
            problems.append(
                f"interval {i}: database has tx {s['tx_hash']} in block {s['block_number']}, "
                f"chain {e.tx_hash} in block {e.block_number}"
            )
        if _norm(s["batch_id"]) != _norm(e.batch_id):
            problems.append(f"interval {i}: batch id differs (database vs chain)")
    for i, s in sorted(settlements.items()):
        if s["state"] == "settled" and i not in events:
            problems.append(f"interval {i}: database says settled, no Settled event on-chain")

    # ---- audit records
    for i in sorted(set(events) | {i for i, s in settlements.items() if s["state"] == "settled"}):
        record = audit.get(i)
        if record is None:
            problems.append(f"interval {i}: settled without an audit record")
            continue
        batch = record.get("settlement") or {}
        onchain = record.get("chain") or {}
        e = events.get(i)
        if e is not None and _norm(batch.get("batch_id")) != _norm(e.batch_id):
            problems.append(f"interval {i}: audit record names another batch")
        if e is not None and _norm(onchain.get("tx_hash")) != _norm(e.tx_hash):
            problems.append(
                f"interval {i}: audit record's transaction {onchain.get('tx_hash')} is not "
                f"the chain's {e.tx_hash}"
            )

    # ---- the operator's nonces and transactions
    nonces = sorted(t["nonce"] for t in chain["txs"])
    if nonces != list(range(len(nonces))):
        dupes = sorted(n for n, c in Counter(nonces).items() if c > 1)
        gaps = sorted(set(range(max(nonces, default=-1) + 1)) - set(nonces))
        problems.append(f"operator nonces not consecutive: duplicates {dupes}, gaps {gaps}")
    for t in chain["txs"]:
        if t["status"] != 1:
            problems.append(f"operator transaction nonce {t['nonce']} ({t['hash']}) reverted")
        elif t["to"].lower() == client.settlement.address.lower() and t["logs"] == 0:
            problems.append(f"operator transaction nonce {t['nonce']} settled nothing")
    settle_txs = {
        _norm(t["hash"])
        for t in chain["txs"]
        if t["to"].lower() == client.settlement.address.lower() and t["status"] == 1
    }
    event_txs = {_norm(e.tx_hash) for e in chain["events"]}
    for extra in sorted(settle_txs - event_txs):
        problems.append(f"operator transaction 0x{extra} to the settlement contract: no Settled")
    if chain["pending_nonce"] != chain["latest_nonce"]:
        problems.append(
            f"{chain['pending_nonce'] - chain['latest_nonce']} operator transaction(s) waiting "
            "at the node"
        )
    if chain["latest_nonce"] != len(nonces):
        problems.append(
            f"the node's nonce {chain['latest_nonce']} is not the count of transactions "
            f"{len(nonces)}"
        )
    if nonce_row is not None and int(nonce_row[0]) != chain["latest_nonce"]:
        problems.append(
            f"persisted next nonce {nonce_row[0]} differs from the chain's {chain['latest_nonce']}"
        )

    counts = {
        "ticks": len(ticks),
        "ticks_ran": len(ran),
        "ticks_missed": sum(1 for t in ticks if t["outcome"] == "missed"),
        "ticks_other": sum(1 for t in ticks if t["outcome"] not in {"ran", "missed"}),
        "intervals": len(intervals),
        "abandoned": sum(1 for r in intervals.values() if r["status"] == "abandoned"),
        "settled_db": sum(1 for s in settlements.values() if s["state"] == "settled"),
        "settled_chain": len(events),
        "audit_records": len(audit),
        "operator_txs": len(nonces),
        "open_intervals": sum(
            1 for i, r in intervals.items() if last_ran is None or i + int(r["length_s"]) > last_ran
        ),
    }
    return Verdict(problems=problems, counts=counts)


def audit_verify(
    site: KillSite, db: Path | None = None, *, reclear: bool = True
) -> tuple[int, dict[str, Any], str]:
    """``peergrid audit verify --json`` on the site (or on another copy ``db``).

    ``reclear=False`` passes ``--no-reclear`` (the records and the chain only).

    Returns
    -------
    tuple
        The exit code, the JSON summary (``{}`` if none was printed) and stderr.
    """
    argv = ["audit", "verify", "--site", str(site.site), "--json"]
    if db is not None:
        argv += ["--db", f"sqlite:///{db}"]
    if not reclear:
        argv.append("--no-reclear")
    done = peergrid(*argv, env=site.env, cwd=site.folder, timeout=300)
    try:
        doc = json.loads(done.stdout)
    except json.JSONDecodeError:
        doc = {}
    return done.returncode, doc, done.stderr + done.stdout[-2000:]


# ----------------------------------------------------------------------------- the table


@dataclass
class RunRow:
    """One run of the controller: what armed or killed it, and what it left."""

    kind: str  # "point" | "random" | "final"
    what: str  # the point's name, or the kill's delay
    returncode: int | None
    alive_s: float
    outcome: str


def format_table(rows: list[RunRow]) -> str:
    """The runs as a plain-text table (point or moment, kills, outcome)."""
    head = (
        f"{'run':>3}  {'kind':<6} {'point / moment':<24} {'kills':>5} {'rc':>4} {'alive':>6}  "
        "outcome"
    )
    lines = [head, "-" * len(head)]
    for n, r in enumerate(rows, 1):
        kills = 1 if r.returncode == -signal.SIGKILL else 0
        rc = "-" if r.returncode is None else str(r.returncode)
        lines.append(
            f"{n:>3}  {r.kind:<6} {r.what:<24} {kills:>5} {rc:>4} {r.alive_s:>5.1f}s  {r.outcome}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--zygote"]:
        zygote_main()

"""``peergrid demo``: the whole loop on embedded defaults, with no set-up.

1. Starts a Modbus TCP simulator on 127.0.0.1 for every device of the demo site
   (``controller/sites/demo.toml``: ten prosumers on CIGRE LV, PV, loads, a battery).
2. Starts the embedded EVM chain (py-evm), deploys the payment token and the settlement
   contract, mints tokens and has every participant (and the upstream GRID account) deposit
   escrow.
3. Runs the real interval cycle (the one ``peergrid run`` schedules) in accelerated time: the
   simulators' clock jumps from boundary to boundary, integrating their energy counters with
   the setpoints in force; every interval is read, cleared, AC-checked, written, metered,
   settled on-chain and audited.
4. Verifies every audit record against the chain and re-clears every interval from its stored
   order book (same bytes), prints the per-interval table and the final token balances, checks
   that balances plus escrow equal the minted supply to the unit, and writes a report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from adapters.chain import ChainClient
from adapters.modbus.simulators import BatterySim, LoadMeterSim, PVInverterSim
from controller.audit import verify_records
from controller.config import (
    ChainBackend,
    ChainConfig,
    DeviceConfig,
    DeviceKind,
    OrderKind,
    SiteConfig,
    parse_site,
)
from controller.cycle import Cycle, IntervalReport, TickReport
from controller.errors import ConfigError
from controller.profiles import Profile, load_actual, load_forecast, pv_actual, pv_forecast
from controller.store import Store
from controller.userfiles import output_folder
from controller.wiring import TrialFunding, build_runtime
from market.domain import COMMUNITY, GRID, Interval, utc_label
from market.units import format_tokens

DEMO_START = datetime(2026, 6, 21, 7, 30, tzinfo=UTC)
DEMO_INTERVALS = 16
GRID_DEPOSIT = 1_000_000_000  # the upstream supplier's escrow: 1,000 tokens
COMMUNITY_DEPOSIT = 100_000_000  # the community's reserve: it buys the market's losses
REWARD_RATE = 1_000_000  # reward base units per verified local kWh
REWARD_CAP = 50_000_000  # at most this many reward units per interval
WALLET_EXTRA = 20_000_000  # tokens each participant keeps outside escrow
DEMO_TRIAL = TrialFunding(
    grid_reserve=GRID_DEPOSIT,
    community_reserve=COMMUNITY_DEPOSIT,
    wallet_extra=WALLET_EXTRA,
    token=("PeerGrid Demo Dollar", "PGD"),
    reward=(REWARD_RATE, REWARD_CAP),
)
"""The demo chain's funding: the reward token pays producers ``REWARD_RATE`` reward units per
verified local kWh (at most ``REWARD_CAP`` per interval), minted in each settlement."""
Sim = PVInverterSim | LoadMeterSim | BatterySim


def demo_site() -> SiteConfig:
    """The demo site shipped with PeerGrid (``controller/sites/demo.toml``, parsed)."""
    import tomllib  # noqa: PLC0415

    text = resources.files("controller").joinpath("sites/demo.toml").read_text("utf-8")
    return parse_site(tomllib.loads(text), "controller/sites/demo.toml")


@dataclasses.dataclass(eq=False)
class ProfileForecaster:
    """Forecast = the device profile's smooth forecast, averaged over the interval."""

    forecasts: dict[str, Profile]

    def forecast_w(self, device: DeviceConfig, interval: Interval) -> float | None:
        """Average forecast power over ``interval`` [W, + = consumption].

        The mean of the profile at the midpoints of six equal parts of the interval, negated
        for PV (production).

        Parameters
        ----------
        device : DeviceConfig
            The device; ``None`` is returned for a device without a forecast profile.
        interval : Interval
            The interval averaged over.
        """
        profile = self.forecasts.get(device.id)
        if profile is None:
            return None
        samples = [
            interval.start + timedelta(seconds=interval.length_s * (k + 0.5) / 6) for k in range(6)
        ]
        mean = sum(profile(t) for t in samples) / len(samples)
        return -mean if device.kind is DeviceKind.PV else mean


def start_simulators(
    site: SiteConfig, t0: datetime
) -> tuple[dict[str, Sim], dict[str, Profile], SiteConfig]:
    """Start one simulator per device on 127.0.0.1 (a free port each).

    PV inverters follow :func:`~controller.profiles.pv_actual` of their ``rated_w`` [W],
    meters :func:`~controller.profiles.load_actual` of their ``profile_scale_w`` [W], and
    batteries start at ``soc0_percent`` [%] of ``capacity_wh`` [Wh].

    Parameters
    ----------
    site : SiteConfig
        The site whose devices are simulated.
    t0 : datetime
        The simulators' start time (UTC).

    Returns
    -------
    tuple
        The running simulators and the forecast profiles (PV and meters) by device id, and
        the site with each device's host and port set to its simulator's.
    """
    sims: dict[str, Sim] = {}
    forecasts: dict[str, Profile] = {}
    devices = []
    for d in site.devices:
        sim: Sim
        if d.kind is DeviceKind.PV:
            sim = PVInverterSim(d.rated_w, pv_actual(d.rated_w, d.id), start_at=t0)
            forecasts[d.id] = pv_forecast(d.rated_w)
        elif d.kind is DeviceKind.METER:
            sim = LoadMeterSim(load_actual(d.profile_scale_w, d.id), start_at=t0)
            forecasts[d.id] = load_forecast(d.profile_scale_w)
        else:
            sim = BatterySim(d.capacity_wh, d.rated_w, d.soc0_percent, start_at=t0)
        sim.start()
        sims[d.id] = sim
        devices.append(dataclasses.replace(d, host="127.0.0.1", port=sim.port))
    return sims, forecasts, dataclasses.replace(site, devices=tuple(devices))


def _curtailed_wh(cleared: IntervalReport | None) -> int:
    """PV surplus offered but not accepted [Wh] (the setpoints curtail it)."""
    if cleared is None:
        return 0
    accepted = cleared.result.accepted_wh
    return sum(
        o.energy_wh - accepted.get(o.order_id, 0)
        for o in cleared.book.offers
        if f":{OrderKind.SELL_SURPLUS}:" in o.order_id
    )


def row_of(report: TickReport, cleared: dict[int, IntervalReport]) -> dict[str, Any] | None:
    """The table row of the interval settled at this tick (None if none was settled).

    Parameters
    ----------
    report : TickReport
        The tick's report.
    cleared : dict of int to IntervalReport
        The clearing reports so far by interval id [Unix s].

    Returns
    -------
    dict or None
        Status, order count, cleared, local (peer-to-peer), grid import/export and
        curtailed energy [Wh], min/max nodal price [token units/kWh], voltage range [p.u.],
        max loading [%], AC iterations, settlement transaction, gas, batch id, imbalance
        [Wh] and reason.
    """
    s = report.settled
    if s is None:
        return None
    c = cleared.get(s.interval.interval_id)
    result = c.result if c is not None else None
    prices = sorted({p for _, p in result.prices}) if result is not None and result.prices else []
    check = result.check if result is not None else None
    return {
        "interval": s.interval.label(),
        "status": result.status.value if result is not None else "unknown",
        "orders": len(c.book) if c is not None else 0,
        "cleared_wh": result.cleared_wh if result is not None else 0,
        "local_wh": sum(t.energy_wh for t in result.trades if GRID not in {t.buyer, t.seller})
        if result is not None
        else 0,
        "price_min": prices[0] if prices else None,
        "price_max": prices[-1] if prices else None,
        "grid_import_wh": result.grid_import_wh if result is not None else 0,
        "grid_export_wh": result.grid_export_wh if result is not None else 0,
        "min_vm_pu": None if check is None else round(check.min_vm_pu, 4),
        "max_vm_pu": None if check is None else round(check.max_vm_pu, 4),
        "max_loading_percent": None
        if check is None
        else round(max(check.max_line_loading_percent, check.max_trafo_loading_percent), 2),
        "ac_iterations": result.iterations if result is not None else 0,
        "curtailed_wh": _curtailed_wh(c),
        "settlement_tx": s.outcome.tx_hash if s.outcome else None,
        "gas_used": s.outcome.gas_used if s.outcome else None,
        "settled": s.outcome is not None,
        "settlement_error": s.error,
        "batch_id": s.batch.batch_id if s.batch else None,
        "imbalance_wh": sum(abs(ln.imbalance_wh) for ln in s.batch.lines) if s.batch else 0,
        "debts": [[d.account, d.before, d.after] for d in s.batch.debts] if s.batch else [],
        "reason": result.reason if result is not None else "",
    }


@dataclasses.dataclass(eq=False)
class DemoRuntime:
    """Everything the demo runs on: simulators, chain, database and the cycle."""

    site: SiteConfig
    sims: dict[str, Sim]
    cycle: Cycle
    client: ChainClient
    store: Store
    accounts: dict[str, str]
    minted: int
    start: datetime

    def boundary(self, k: int) -> datetime:
        """The ``k``-th boundary from the start (``start + k * interval_s``).

        Parameters
        ----------
        k : int
            Boundary number (0 = ``start``).
        """
        return self.start + timedelta(seconds=self.site.interval_s * k)

    def tick(self, k: int, *, clear_next: bool = True) -> TickReport:
        """Advance the running simulators to boundary ``k`` and run the cycle there.

        Parameters
        ----------
        k : int
            Boundary number (0 = ``start``).
        clear_next : bool
            Also clear the interval that starts there (``False`` only settles).

        Returns
        -------
        TickReport
            The tick's report.
        """
        boundary = self.boundary(k)
        for sim in self.sims.values():
            if sim.running:
                sim.advance(boundary)
        return self.cycle.tick(boundary, clear_next=clear_next)

    def balances(self) -> list[dict[str, Any]]:
        """Wallet and escrow of every participant, GRID and COMMUNITY [token units]."""
        out: list[dict[str, Any]] = []
        for label in [p.id for p in self.site.participants] + [GRID, COMMUNITY]:
            address = self.accounts[label]
            out.append(
                {
                    "account": label,
                    "address": address,
                    "wallet": self.client.token_balance(address),
                    "escrow": self.client.escrow_balance(address),
                }
            )
        return out

    def conservation(self) -> dict[str, Any]:
        """Wallets (incl. the operator's) + escrow vs. the minted supply, to the unit."""
        wallets = sum(b["wallet"] for b in self.balances())
        wallets += self.client.token_balance(self.client.operator.address)
        escrow = self.client.total_escrow()
        supply = self.client.total_supply()
        return {
            "minted": self.minted,
            "total_supply": supply,
            "wallets": wallets,
            "escrow": escrow,
            "holds": wallets + escrow == self.minted == supply,
        }

    def rewards(self) -> dict[str, int]:
        """Reward tokens earned (unclaimed, held by the settlement contract) per producer."""
        states = self.client.account_states([self.accounts[p.id] for p in self.site.participants])
        by_address = {str(address).lower(): state for address, state in states.items()}
        out: dict[str, int] = {}
        for p in self.site.participants:
            state = by_address.get(self.accounts[p.id].lower())
            if state is not None and state.unclaimed_rewards:
                out[p.id] = int(state.unclaimed_rewards)
        return out

    def verify(self) -> dict[str, Any]:
        """Every audit record against the chain, and re-cleared from its stored book."""
        return verify_records(
            self.store.audit_records(),
            settled_batch=self.client.settled_batch,
            reclear=self.cycle.reclear,
        )


@contextmanager
def demo_runtime(
    out_dir: Path, start: datetime = DEMO_START, chain: str = ChainBackend.EMBEDDED
) -> Iterator[DemoRuntime]:
    """Start the demo's simulators, chain and database; stop them on exit.

    The database (``peergrid-demo.sqlite``) and an anvil state file left in ``out_dir`` by
    an earlier run are deleted first. The runtime comes from
    :func:`controller.wiring.build_runtime` on a trial chain funded with
    :data:`DEMO_TRIAL`, with the simulators' profiles as the forecast.

    Parameters
    ----------
    out_dir : Path
        Folder of the database (and of anvil's state file); created if missing.
    start : datetime
        The first boundary (UTC); the simulators' clocks start there.
    chain : {"embedded", "anvil"}
        ``embedded`` (py-evm in this process) or ``anvil`` (a local node from npm
        ``@foundry-rs/anvil``, started on a free loopback port with its state file in
        ``out_dir``, stopped at the end).

    Yields
    ------
    DemoRuntime
        The running demo.

    Raises
    ------
    ConfigError
        ``start`` is not on an interval boundary, or ``out_dir`` cannot be made or written
        to; before anything is started.
    """
    backend = ChainBackend(chain)
    site = demo_site()
    if int(start.timestamp()) % site.interval_s or start.microsecond:
        msg = (
            f"start {utc_label(start)} is not on a boundary of the demo's "
            f"{site.interval_s // 60}-minute intervals (e.g. {utc_label(DEMO_START)})"
        )
        raise ConfigError(msg)
    output_folder(out_dir, "demo's output folder")
    for name in (
        "peergrid-demo.sqlite",
        "peergrid-demo.sqlite-wal",
        "peergrid-demo.sqlite-shm",
        "anvil-state.json",
    ):
        (out_dir / name).unlink(missing_ok=True)
    site = dataclasses.replace(
        site,
        database=f"sqlite:///{(out_dir / 'peergrid-demo.sqlite').as_posix()}",
        chain=ChainConfig(
            backend=backend,
            state_path=(out_dir / "anvil-state.json").as_posix()
            if backend is ChainBackend.ANVIL
            else "",
        ),
    )
    sims, forecasts, site = start_simulators(site, start)
    try:
        with build_runtime(
            site, trial=DEMO_TRIAL, forecaster=ProfileForecaster(forecasts)
        ) as runtime:
            yield DemoRuntime(
                site=site,
                sims=sims,
                cycle=runtime.cycle,
                client=runtime.client,
                store=runtime.store,
                accounts={str(k): v for k, v in runtime.accounts.items()},
                minted=runtime.minted,
                start=start,
            )
    finally:
        for sim in sims.values():
            sim.stop()


def run_demo(
    *,
    intervals: int = DEMO_INTERVALS,
    start: datetime = DEMO_START,
    out_dir: Path = Path("peergrid-demo"),
    progress: Callable[[int, int, str], None] | None = None,
    chain: str = ChainBackend.EMBEDDED,
) -> dict[str, Any]:
    """Run the demo and return its report (see the module docstring).

    Ticks ``intervals + 1`` boundaries (the last one settles without clearing), then writes
    ``report.json`` and ``audit.jsonl`` to ``out_dir`` next to the database.

    Parameters
    ----------
    intervals : int
        Intervals to clear and settle.
    start : datetime
        The first boundary (UTC).
    out_dir : Path
        Folder for the report, the audit log and the database.
    progress : Callable or None
        Called after each boundary with (boundaries done, boundaries in all, ``HH:MM``).
    chain : {"embedded", "anvil"}
        The chain backend (see :func:`demo_runtime`).

    Returns
    -------
    dict
        The report: per-interval rows (see :func:`row_of`), ticks, balances and conservation
        [token units], contract addresses, the audit summary, rewards [reward units],
        ``all_settled``, ``wall_s`` [s] and ``out_dir``.
    """
    started = time.perf_counter()
    with demo_runtime(out_dir, start, chain) as rt:
        rows: list[dict[str, Any]] = []
        cleared: dict[int, IntervalReport] = {}
        ticks: list[dict[str, Any]] = []
        total = intervals + 1
        for k in range(total):
            report = rt.tick(k, clear_next=k < intervals)
            if report.cleared is not None:
                cleared[report.cleared.interval.interval_id] = report.cleared
            row = row_of(report, cleared)
            if row is not None:
                rows.append(row)
            ticks.append(
                {
                    "boundary": report.boundary.isoformat(),
                    "readings_ok": report.readings_ok,
                    "readings_missing": list(report.readings_missing),
                }
            )
            if progress is not None:
                progress(k + 1, total, report.boundary.strftime("%H:%M"))
        report_doc = {
            "site": rt.site.name,
            "grid": rt.site.grid,
            "interval_s": rt.site.interval_s,
            "start": start.isoformat(),
            "intervals": rows,
            "ticks": ticks,
            "balances": rt.balances(),
            "conservation": rt.conservation(),
            "contracts": {
                "token": rt.client.token.address,
                "settlement": rt.client.settlement.address,
            },
            "audit": rt.verify(),
            "all_settled": len(rows) == intervals and all(r["settled"] for r in rows),
            "chain": ChainBackend(chain).value,
            "rewards": rt.rewards(),
            "debts": rt.store.outstanding_debts(),
            "wall_s": round(time.perf_counter() - started, 2),
            "out_dir": str(out_dir),
        }
        (out_dir / "report.json").write_text(json.dumps(report_doc, indent=2) + "\n", "utf-8")
        with (out_dir / "audit.jsonl").open("w", encoding="utf-8") as fh:
            for rec in rt.store.audit_records():
                fh.write(json.dumps(rec["record"], sort_keys=True) + "\n")
        return report_doc


def format_table(report: dict[str, Any]) -> str:
    """The per-interval table, the balances, conservation and the audit as plain text.

    Parameters
    ----------
    report : dict
        A report of :func:`run_demo`.
    """
    lines = []
    head = (
        f"{'interval':<17} {'status':<11} {'ord':>3} {'cleared':>8} {'local':>7} "
        f"{'price min-max /kWh':>19} {'import':>7} {'export':>7} {'vm min':>6} {'vm max':>6} "
        f"{'load%':>6} {'AC':>2} {'curtail':>7} {'settlement tx':<14} {'gas':>7}"
    )
    lines.append(head)
    lines.append("-" * len(head))
    for r in report["intervals"]:
        pmin = "-" if r["price_min"] is None else format_tokens(r["price_min"])[:5]
        pmax = "-" if r["price_max"] is None else format_tokens(r["price_max"])[:5]
        tx = (r["settlement_tx"] or r["settlement_error"] or "-")[:12]
        lines.append(
            f"{r['interval']:<17} {r['status']:<11} {r['orders']:>3} "
            f"{r['cleared_wh'] / 1000:>5.1f}kWh {r['local_wh'] / 1000:>4.1f}kWh "
            f"{pmin + ' - ' + pmax:>19} {r['grid_import_wh'] / 1000:>4.1f}kWh "
            f"{r['grid_export_wh'] / 1000:>4.1f}kWh {_f(r['min_vm_pu'])} {_f(r['max_vm_pu'])} "
            f"{_f(r['max_loading_percent'], 1)} {r['ac_iterations']:>2} "
            f"{r['curtailed_wh'] / 1000:>4.1f}kWh {tx + '..':<14} "
            f"{r['gas_used'] or 0:>7}"
        )
    carried = [(r["interval"], r["debts"]) for r in report["intervals"] if r.get("debts")]
    if carried:
        lines.append("")
        lines.append("carried balances [tokens] (+ = owes COMMUNITY, which fronted it):")
        for label, changes in carried:
            moved = ", ".join(
                f"{a} {format_tokens(b)} -> {format_tokens(c)}" for a, b, c in changes
            )
            lines.append(f"  {label}: {moved}")
        owing = report.get("debts") or {}
        lines.append(
            "  outstanding: "
            + (", ".join(f"{a} {format_tokens(b)}" for a, b in owing.items()) or "none")
        )
    lines.append("")
    lines.append(f"{'account':<10} {'wallet':>14} {'escrow':>14}")
    for b in report["balances"]:
        lines.append(
            f"{b['account']:<10} {format_tokens(b['wallet']):>14} {format_tokens(b['escrow']):>14}"
        )
    c = report["conservation"]
    lines.append("")
    lines.append(
        f"minted {format_tokens(c['minted'])} = wallets {format_tokens(c['wallets'])} + escrow "
        f"{format_tokens(c['escrow'])}: {'OK, to the unit' if c['holds'] else 'MISMATCH'}"
    )
    a = report["audit"]
    lines.append(
        f"audit: {a['verified']}/{a['records']} interval records match the chain and "
        "re-clear to identical results"
        + ("" if not a["problems"] else f"; problems: {a['problems']}")
    )
    lines.append(
        f"wall time {report['wall_s']} s; report, audit log and database in {report['out_dir']}/"
    )
    return "\n".join(lines)


def _f(value: float | None, digits: int = 3) -> str:
    return "  -   " if value is None else f"{value:>6.{digits}f}"

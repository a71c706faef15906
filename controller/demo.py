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
   order book (same bytes), prints the final token balances, checks that balances plus escrow
   equal the minted supply to the unit, and writes a report. The per-interval table's rows
   (:func:`row_of`: the interval's stored figures, :func:`controller.history.history_rows`,
   the same as ``peergrid history``) come out as each interval settles (``on_row``).

**The front door.** One prosumer (:data:`FRONT_DOOR_PARTICIPANT`, bob) places his bids through
the HTTP API instead of the site file: the demo starts the API (:func:`controller.api.
create_app` on :func:`controller.service.build_service` of the demo's runtime, uvicorn on
127.0.0.1 on a free port, in a thread) with a clock it sets itself, and before each
interval's gate closure bob's wallet (his derived trial key) signs, as EIP-712 typed data, the
bid his ``buy_demand`` standing order would have made (his forecast demand, at his price
floored by the import tariff) and posts it with :class:`controller.client.PeerGridClient`;
his ``buy_demand`` line is taken out of the demo's site so the energy is bid once. The
cycle clears those orders with the others (order ids ``bob:<T>:signed:<digest>``), the audit
record carries each signed order and its signature, and the table's ``api`` column counts,
per interval, the signed orders in the book and those that traded.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from adapters.chain import ChainClient, derive_account
from adapters.chain.device_keys import DeviceKeys, KeyAction
from adapters.chain.governance import registry_reader
from adapters.modbus.simulators import BatterySim, LoadMeterSim, PVInverterSim
from adapters.modbus.simulators.base import SignedTamper, SimOptions
from controller.audit import verify_records
from controller.bidding import plan_orders
from controller.client import Acknowledgement, ApiRefused, PeerGridClient
from controller.config import (
    ChainBackend,
    ChainConfig,
    DeviceConfig,
    DeviceKind,
    OrderKind,
    ParticipantConfig,
    SiteConfig,
    parse_site,
)
from controller.cycle import Cycle, IntervalReport, TickReport
from controller.demo_vote import hold_vote, set_up_community
from controller.errors import ConfigError, ControllerError
from controller.history import history_rows
from controller.profiles import Profile, load_actual, load_forecast, pv_actual, pv_forecast
from controller.store import Store
from controller.userfiles import output_folder
from controller.wiring import (
    RegistryKeys,
    Runtime,
    TrialFunding,
    build_runtime,
    device_key_source,
    registry_key_reader,
)
from market.domain import COMMUNITY, GRID, Interval, ParticipantId, ReadingQuality, utc_label
from market.signed_readings import new_private_key
from market.units import format_tokens

if TYPE_CHECKING:
    import uvicorn

    from controller.service import Service

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

FRONT_DOOR_PARTICIPANT: Final = "bob"
"""The prosumer whose bids the demo places through the HTTP API as signed typed data."""

FRONT_DOOR_KINDS: Final = frozenset({OrderKind.BUY_DEMAND})
"""The standing orders of :data:`FRONT_DOOR_PARTICIPANT` that become signed orders."""

GATE_MARGIN_S: Final = 60
"""How long before an interval's gate closure the demo posts its signed orders [s]."""

SERVER_START_TIMEOUT_S: Final = 60.0
"""How long the demo waits for its API server to listen [s] (generous: a busy machine)."""


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
        # a device with a signed block signs with a key of its own, made here and never
        # written anywhere: only its public key leaves the simulator (enroll_device_keys)
        signing: SimOptions = {"start_at": t0, "device_id": d.id}
        if d.signed_block is not None:
            signing |= {"signed_block": d.signed_block, "signing_key": new_private_key()}
        if d.kind is DeviceKind.PV:
            sim = PVInverterSim(d.rated_w, pv_actual(d.rated_w, d.id), **signing)
            forecasts[d.id] = pv_forecast(d.rated_w)
        elif d.kind is DeviceKind.METER:
            sim = LoadMeterSim(load_actual(d.profile_scale_w, d.id), **signing)
            forecasts[d.id] = load_forecast(d.profile_scale_w)
        else:
            sim = BatterySim(d.capacity_wh, d.rated_w, d.soc0_percent, **signing)
        sim.start()
        sims[d.id] = sim
        devices.append(dataclasses.replace(d, host="127.0.0.1", port=sim.port))
    return sims, forecasts, dataclasses.replace(site, devices=tuple(devices))


KEY_DEADLINE: Final = 2**40
"""The deadline of the demo's signed key registrations [Unix s]: far ahead of any chain."""


def enroll_device_keys(
    client: ChainClient,
    site: SiteConfig,
    accounts: Mapping[ParticipantId, str],
    sims: Mapping[str, Sim],
) -> RegistryKeys:
    """Deploy the trial chain's ``DeviceKeys`` registry and register every simulator's key.

    Each participant signs the registration of its devices' public keys (an EIP-712
    ``KeyChange`` with its own key: the demo's derived one) and the operator relays it,
    paying the gas: the operator cannot register a key without the participant's
    signature. The registry has no governor (the demo's community is set up later).

    Returns
    -------
    RegistryKeys
        The key source for the cycle (:attr:`controller.cycle.Cycle.device_keys`).
    """
    keys = DeviceKeys(client.contracts)
    keys.deploy(governor=None)
    for d in site.devices:
        public = sims[d.id].public_key
        if d.signed_block is None or public is None:
            continue
        owner = derive_account(d.participant)
        if owner.address.lower() != accounts[d.participant].lower():
            msg = f"{d.participant}'s account is not its demo key: cannot sign its registration"
            raise ConfigError(msg)
        keys.relay_for(
            client.operator,
            owner,
            device_id=d.id,
            key=public,
            action=KeyAction.REGISTER,
            deadline=KEY_DEADLINE,
        )
    return device_key_source(client, site, accounts, keys.address)


def row_of(
    report: TickReport, cleared: dict[int, IntervalReport], *, store: Store
) -> dict[str, Any] | None:
    """The table row of the interval settled at this tick (None if none was settled).

    The interval's figures are its stored row (:func:`controller.history.history_rows`:
    the same definitions as ``peergrid history``); the tick adds what only it knows.

    Parameters
    ----------
    report : TickReport
        The tick's report.
    cleared : dict of int to IntervalReport
        The clearing reports so far by interval id [Unix s].
    store : Store
        The demo's store (the interval's stored row).

    Returns
    -------
    dict or None
        The keys of :data:`controller.history.HISTORY_COLUMNS` (status, orders, bought,
        sold, traded locally, grid import/export, losses and curtailed energy [Wh], nodal
        price range [token units/kWh], voltage range [p.u.], max loading [%], welfare,
        settlement state and transaction, reason), and ``interval`` (its label), AC
        iterations, ``settlement_tx``, gas, ``settled``, ``settlement_error``, batch id,
        imbalance [Wh], carried balances, and the signed orders from the API in the book,
        those that traded and their energy [Wh] (:func:`signed_in_book`).
    """
    s = report.settled
    if s is None:
        return None
    interval_id = s.interval.interval_id
    stored = history_rows(store, interval_id, interval_id + 1)
    c = cleared.get(interval_id)
    row = stored[0] if stored else {"status": "unknown", "reason": ""}
    return {
        **row,
        "interval": s.interval.label(),
        "ac_iterations": c.result.iterations if c is not None else 0,
        "settlement_tx": s.outcome.tx_hash if s.outcome else None,
        "gas_used": s.outcome.gas_used if s.outcome else None,
        "settled": s.outcome is not None,
        "settlement_error": s.error,
        "batch_id": s.batch.batch_id if s.batch else None,
        "imbalance_wh": sum(abs(ln.imbalance_wh) for ln in s.batch.lines) if s.batch else 0,
        "debts": [[d.account, d.before, d.after] for d in s.batch.debts] if s.batch else [],
        "reward_wh": sum(wh for _, wh in s.batch.rewards_wh) if s.batch else 0,
        "community_fee_bps": s.batch.community_fee_bps if s.batch else 0,
        "community_fee_units": sum(ln.fee_amount for ln in s.batch.lines) if s.batch else 0,
        "rewards_minted": s.outcome.rewards_minted if s.outcome else 0,
        **dict(zip(("api_orders", "api_traded", "api_traded_wh"), signed_in_book(c), strict=True)),
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
    runtime: Runtime
    front_door: ParticipantConfig | None = None
    """The participant whose bids go through the API, with the standing orders it signs
    (taken out of ``site``), or ``None``."""
    governed_at: Callable[[str, int], Mapping[str, int]] | None = None
    """The community's registry at a block (``audit verify``'s governance check)."""

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
        """Every audit record against the chain, re-cleared, and against the registry.

        The governed terms of a record are checked against the community's registry at the
        block it names (:func:`controller.audit.verify_governance`).
        """
        return verify_records(
            self.store.audit_records(),
            settled_batch=self.client.settled_batch,
            reclear=self.cycle.reclear,
            governed_at=self.governed_at,
            device_key_at=registry_key_reader(self.client),
        )


def _without_front_door_orders(
    site: SiteConfig, participant: str
) -> tuple[SiteConfig, ParticipantConfig]:
    """``site`` without ``participant``'s :data:`FRONT_DOOR_KINDS` standing orders.

    Returns
    -------
    tuple
        The site, and the participant with only those orders (what its wallet signs).

    Raises
    ------
    ConfigError
        No such participant, or it has none of those orders.
    """
    found = next((p for p in site.participants if p.id == participant), None)
    moved = () if found is None else tuple(o for o in found.orders if o.kind in FRONT_DOOR_KINDS)
    if found is None or not moved:
        kinds = ", ".join(sorted(FRONT_DOOR_KINDS))
        msg = f"the demo site has no participant {participant!r} with a {kinds} standing order"
        raise ConfigError(msg)
    kept = tuple(o for o in found.orders if o.kind not in FRONT_DOOR_KINDS)
    participants = tuple(
        dataclasses.replace(p, orders=kept) if p.id == participant else p for p in site.participants
    )
    return dataclasses.replace(site, participants=participants), dataclasses.replace(
        found, orders=moved
    )


@contextmanager
def demo_runtime(
    out_dir: Path,
    start: datetime = DEMO_START,
    chain: str = ChainBackend.EMBEDDED,
    *,
    front_door: str | None = None,
    database: str | None = None,
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
    front_door : str or None
        A participant whose :data:`FRONT_DOOR_KINDS` standing orders are taken out of the
        site, to be placed as signed orders through the API (:func:`front_door_api`).
    database : str or None
        The database URL (a new, empty database: e.g. a PostgreSQL schema); ``None``:
        ``peergrid-demo.sqlite`` in ``out_dir``.

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
        database=database or f"sqlite:///{(out_dir / 'peergrid-demo.sqlite').as_posix()}",
        chain=ChainConfig(
            backend=backend,
            state_path=(out_dir / "anvil-state.json").as_posix()
            if backend is ChainBackend.ANVIL
            else "",
        ),
    )
    moved: ParticipantConfig | None = None
    if front_door is not None:
        site, moved = _without_front_door_orders(site, front_door)
    sims, forecasts, site = start_simulators(site, start)
    try:
        with build_runtime(
            site, trial=DEMO_TRIAL, forecaster=ProfileForecaster(forecasts)
        ) as runtime:
            runtime.cycle.device_keys = enroll_device_keys(
                runtime.client, site, runtime.accounts, sims
            )
            yield DemoRuntime(
                site=site,
                sims=sims,
                cycle=runtime.cycle,
                client=runtime.client,
                store=runtime.store,
                accounts={str(k): v for k, v in runtime.accounts.items()},
                minted=runtime.minted,
                start=start,
                runtime=runtime,
                front_door=moved,
            )
    finally:
        for sim in sims.values():
            sim.stop()


class DemoClock:
    """The API's clock in the demo: set by the demo, never the wall clock."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        """The time the demo set (UTC)."""
        return self.at


@dataclasses.dataclass(eq=False)
class FrontDoor:
    """The demo's HTTP API and one prosumer's wallet using it (see the module docstring)."""

    rt: DemoRuntime
    service: Service
    clock: DemoClock
    client: PeerGridClient
    url: str
    participant: ParticipantConfig
    acks: list[Acknowledgement] = dataclasses.field(default_factory=list)
    refusals: list[str] = dataclasses.field(default_factory=list)

    def bids_for(self, interval: Interval) -> list[tuple[int, int]]:
        """What the participant's moved standing orders bid for ``interval``.

        Returns
        -------
        list of tuple
            ``(energy [Wh], limit price [token units/kWh])`` per bid, planned as the cycle
            plans standing orders (the demo's forecast; ``buy_demand`` floored by the import
            tariff).
        """
        plan = plan_orders(
            interval,
            (self.participant,),
            self.rt.site.devices,
            {},
            self.rt.cycle.forecaster,
            import_price=self.rt.site.import_price,
        )
        return [(int(o.order.energy_wh), int(o.order.limit_price)) for o in plan.orders]

    def place(self, interval: Interval) -> None:
        """Sign and post the participant's bids for ``interval`` before its gate closure.

        The API's clock is set :data:`GATE_MARGIN_S` before the gate closure first. A
        refusal is recorded in :attr:`refusals` (the report shows it), not raised.
        """
        gate = self.rt.cycle.gate_closure(interval)  # the site's, or the governed one
        self.clock.at = gate - timedelta(seconds=GATE_MARGIN_S)
        key = derive_account(self.participant.id)  # the trial chain's derived key
        for energy, price in self.bids_for(interval):
            try:
                ack = self.client.place_order(
                    key,
                    interval_start=interval.start,
                    side="buy",
                    energy_wh=energy,
                    limit_price=price,
                    deadline=gate,  # void once the book is frozen
                )
            except ApiRefused as exc:
                self.refusals.append(f"{interval.label()}: {exc}")
            else:
                self.acks.append(ack)


def _serve_in_thread(
    app: Any,  # noqa: ANN401 - a FastAPI application
    sock: socket.socket,
) -> tuple[uvicorn.Server, threading.Thread]:
    """Serve ``app`` with uvicorn on ``sock`` (bound to 127.0.0.1) in a thread, once it listens.

    Raises
    ------
    ControllerError
        The server did not start within :data:`SERVER_START_TIMEOUT_S`.
    """
    import uvicorn  # noqa: PLC0415 - only the demo's API needs it

    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="demo-api", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            msg = f"the demo's API did not start on 127.0.0.1:{port}"
            raise ControllerError(msg)
        time.sleep(0.01)
    return server, thread


@contextmanager
def front_door_api(rt: DemoRuntime) -> Iterator[FrontDoor]:
    """Start the API on the demo's runtime and a client for :attr:`DemoRuntime.front_door`.

    Parameters
    ----------
    rt : DemoRuntime
        A runtime started with ``front_door`` set.

    Yields
    ------
    FrontDoor
        The API (its URL and clock) and the participant's client; stopped on exit.

    Raises
    ------
    ControllerError
        ``rt`` has no front-door participant, or the server did not start.
    """
    from controller.api import create_app  # noqa: PLC0415 - FastAPI only when the API runs
    from controller.service import build_service  # noqa: PLC0415

    if rt.front_door is None:
        msg = "the demo runtime was started without a front-door participant"
        raise ControllerError(msg)
    clock = DemoClock(rt.start)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # a free port, held from here on: no race for it
        host = f"127.0.0.1:{int(sock.getsockname()[1])}"
        url = f"http://{host}"
        service = build_service(rt.site, runtime=rt.runtime, now=clock, domain=host, uri=url)
        try:
            server, thread = _serve_in_thread(create_app(service), sock)
            with PeerGridClient(url, service.site_id) as client:
                yield FrontDoor(
                    rt=rt,
                    service=service,
                    clock=clock,
                    client=client,
                    url=url,
                    participant=rt.front_door,
                )
        finally:
            if server is not None:
                server.should_exit = True
            if thread is not None:
                thread.join(timeout=SERVER_START_TIMEOUT_S)


def signed_in_book(cleared: IntervalReport | None) -> tuple[int, int, int]:
    """The signed orders (from the API) in an interval's book.

    Returns
    -------
    tuple of int
        Signed orders in the book, those accepted in part or whole, and the energy
        accepted of them [Wh].
    """
    if cleared is None:
        return 0, 0, 0
    accepted = cleared.result.accepted_wh
    ids = [o.order_id for o in cleared.book.bids] + [o.order_id for o in cleared.book.offers]
    signed = [oid for oid in ids if ":signed:" in oid]
    traded = [accepted.get(oid, 0) for oid in signed]
    return len(signed), sum(1 for wh in traded if wh > 0), sum(traded)


def front_door_summary(door: FrontDoor, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's ``front_door`` entry (see :func:`run_demo`)."""
    return {
        "url": door.url,
        "site_id": door.service.site_id,
        "participant": door.participant.id,
        "placed": len(door.acks),
        "refused": list(door.refusals),
        "in_books": sum(int(r["api_orders"]) for r in rows),
        "traded": sum(int(r["api_traded"]) for r in rows),
        "traded_wh": sum(int(r["api_traded_wh"]) for r in rows),
        "digests": [a.digest for a in door.acks],
    }


def run_demo(
    *,
    intervals: int = DEMO_INTERVALS,
    start: datetime = DEMO_START,
    out_dir: Path = Path("peergrid-demo"),
    progress: Callable[[int, int, str], None] | None = None,
    chain: str = ChainBackend.EMBEDDED,
    front_door: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
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
    front_door : bool
        Place :data:`FRONT_DOOR_PARTICIPANT`'s bids through the HTTP API as signed orders
        (module docstring); ``False``: every bid from the site file.
    on_row : Callable or None
        Called with each interval's row (:func:`row_of`) as soon as it is settled, before
        the next boundary runs (``peergrid demo`` prints it then: :func:`format_row`).

    Returns
    -------
    dict
        The report: per-interval rows (see :func:`row_of`), ticks, balances and conservation
        [token units], contract addresses, the audit summary, rewards [reward units],
        ``front_door`` (the API's URL, the participant, signed orders placed, refused, in
        the books and traded, energy traded [Wh]; ``None`` without), ``all_settled``,
        ``wall_s`` [s] and ``out_dir``.
    """
    started = time.perf_counter()
    with ExitStack() as stack:
        rt = stack.enter_context(
            demo_runtime(
                out_dir, start, chain, front_door=FRONT_DOOR_PARTICIPANT if front_door else None
            )
        )
        community = set_up_community(rt.client, rt.site, rt.accounts)
        rt.cycle.governed = community.gov.governed_values  # read at each clearing
        rt.cycle.lift_expired_pause = partial(community.gov.lift_if_expired, rt.client.operator)
        rt.governed_at = registry_reader(rt.client.contracts)
        vote_at = max(intervals // 2, 1)
        vote: dict[str, Any] | None = None
        door = stack.enter_context(front_door_api(rt)) if front_door else None
        if door is not None:  # members may vote through the API too (/governance)
            door.service.governance = community.gov
        rows: list[dict[str, Any]] = []
        cleared: dict[int, IntervalReport] = {}
        ticks: list[dict[str, Any]] = []
        total = intervals + 1
        forge_at = intervals - 1 if intervals >= 2 else None
        for k in range(total):
            forger = rt.sims.get(FORGER) if k == forge_at else None
            if forger is not None:  # one reading forged: its counters changed after signing
                forger.signed_tamper = SignedTamper.FORGED
            if k == vote_at:
                with door.service.chain_lock if door is not None else nullcontext():
                    vote = hold_vote(community)
            if door is not None and k < intervals:
                door.place(Interval(start=rt.boundary(k), length_s=rt.site.interval_s))
            if door is None:
                report = rt.tick(k, clear_next=k < intervals)
            else:
                with door.service.chain_lock:  # py-evm: one thread at a time
                    report = rt.tick(k, clear_next=k < intervals)
            if forger is not None:
                forger.signed_tamper = SignedTamper.NONE
            if report.cleared is not None:
                cleared[report.cleared.interval.interval_id] = report.cleared
            row = row_of(report, cleared, store=rt.store)
            if row is not None:
                row["after_vote"] = vote is not None
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            ticks.append(
                {
                    "boundary": report.boundary.isoformat(),
                    "readings_ok": report.readings_ok,
                    "readings_missing": list(report.readings_missing),
                }
            )
            if progress is not None:
                progress(k + 1, total, report.boundary.strftime("%H:%M"))
        audit = rt.verify()
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
            "audit": audit,
            "all_settled": len(rows) == intervals and all(r["settled"] for r in rows),
            "chain": ChainBackend(chain).value,
            "rewards": rt.rewards(),
            "debts": rt.store.outstanding_debts(),
            "front_door": None if door is None else front_door_summary(door, rows),
            "community_vote": None if vote is None else vote_summary(vote, rows),
            "signed_readings": signed_summary(rt, total, audit, forge_at),
            "wall_s": round(time.perf_counter() - started, 2),
            "out_dir": str(out_dir),
        }
        (out_dir / "report.json").write_text(json.dumps(report_doc, indent=2) + "\n", "utf-8")
        with (out_dir / "audit.jsonl").open("w", encoding="utf-8") as fh:
            for rec in rt.store.audit_records():
                fh.write(json.dumps(rec["record"], sort_keys=True) + "\n")
        return report_doc


TABLE_HEAD: Final = (
    f"{'interval':<17} {'status':<11} {'ord':>3} {'bought':>6} {'sold':>6} {'traded':>6} "
    f"{'price min - max':>15} {'grid in':>7} {'grid out':>8} {'vm min':>6} {'vm max':>6} "
    f"{'load':>5} {'AC':>2} {'curtail':>7} {'api':>3} {'settlement tx':<14} {'gas':>7}",
    f"{'(UTC)':<17} {'':<11} {'':>3} {'[kWh]':>6} {'[kWh]':>6} {'[kWh]':>6} "
    f"{'[tokens/kWh]':>15} {'[kWh]':>7} {'[kWh]':>8} {'[p.u.]':>6} {'[p.u.]':>6} "
    f"{'[%]':>5} {'it':>2} {'[kWh]':>7} {'':>3} {'':<14} {'':>7}",
)
"""The two header lines of the demo's per-interval table (names, then units)."""


def table_header() -> list[str]:
    """The per-interval table's header: names, units and a rule (``peergrid demo``)."""
    return [*TABLE_HEAD, "-" * len(TABLE_HEAD[0])]


def _kwh(wh: int | None, width: int) -> str:
    return f"{'-':>{width}}" if wh is None else f"{wh / 1000:>{width}.2f}"


def _price(units: int | None) -> str:
    return "-" if units is None else format_tokens(units)[:5]


def format_row(r: dict[str, Any]) -> str:
    """One interval's line of the demo's table (:data:`TABLE_HEAD`).

    Parameters
    ----------
    r : dict
        A row of :func:`row_of`.

    Returns
    -------
    str
        Energy in kWh (bought and sold in the local market, traded between participants,
        grid import and export, curtailed), the nodal price range in tokens per kWh, the
        voltage range, max loading, AC iterations, the API's signed orders (traded/in
        book), the settlement transaction and its gas.
    """
    tx = (r["settlement_tx"] or r["settlement_error"] or "-")[:12]
    prices = f"{_price(r['price_min_per_kwh'])} - {_price(r['price_max_per_kwh'])}"
    return (
        f"{r['interval']:<17} {r['status']:<11} {r['n_orders'] or 0:>3} "
        f"{_kwh(r['bought_wh'], 6)} {_kwh(r['sold_wh'], 6)} {_kwh(r['traded_wh'], 6)} "
        f"{prices:>15} {_kwh(r['grid_import_wh'], 7)} {_kwh(r['grid_export_wh'], 8)} "
        f"{_f(r['vm_min_pu'])} {_f(r['vm_max_pu'])} {_f(r['max_loading_pct'], 1, 5)} "
        f"{r['ac_iterations']:>2} {_kwh(r['curtailed_wh'], 7)} {_api(r):>3} {tx + '..':<14} "
        f"{r['gas_used'] or 0:>7}"
    )


def format_table(report: dict[str, Any]) -> str:
    """The per-interval table, the balances, conservation and the audit as plain text.

    Parameters
    ----------
    report : dict
        A report of :func:`run_demo`.
    """
    lines = table_header() + [format_row(r) for r in report["intervals"]]
    return "\n".join([*lines, format_summary(report)])


def format_summary(report: dict[str, Any]) -> str:
    """What follows the per-interval table, as plain text.

    Carried balances, the front door, balances, conservation and the audit.

    Parameters
    ----------
    report : dict
        A report of :func:`run_demo`.
    """
    lines = []
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
    door = report.get("front_door")
    if door:
        lines.append("")
        lines.append(
            f"front door: {door['placed']} orders of {door['participant']} signed (EIP-712) and "
            f"placed through the HTTP API ({door['url']}), {door['in_books']} in the books, "
            f"{door['traded']} traded ({door['traded_wh'] / 1000:.1f} kWh)"
            + (f"; refused: {'; '.join(door['refused'])}" if door["refused"] else "")
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
    v = report.get("community_vote")
    if v:
        lines.append("")
        lines.append(
            f'community vote #{v["proposal"]}: "{v["description"]}": {v["for"]} for, '
            f"{v['against']} against, {v['abstain']} abstain of {v['members']} members "
            f"(quorum {v['quorum']}; {v['relayed']} votes by signed ballot, relayed); "
            f"queued, executed after the delay in block {v['executed_block']}"
        )
        lines.append(
            "  reward minted per verified kWh: "
            f"{_reward(v['reward_per_kwh_before'])} before, "
            f"{_reward(v['reward_per_kwh_after'])} after; the operator's own change is "
            f"refused ({v['admin_refused'] or 'NOT refused'})"
        )
        if v.get("fee_from"):
            lines.append(
                f"  community fee {v['fee_bps'] / 100:g} % of local sales from "
                f"{v['fee_from']} (the next interval cleared): "
                f"{format_tokens(v['fee_units'])} tokens to COMMUNITY over "
                f"{v['fee_intervals']} intervals; each record names the registry block and "
                f"proposal #{v['proposal']}"
            )
    sr = report.get("signed_readings")
    if sr:
        lines.append("")
        lines.append(
            f"signed readings: {sr['devices']} devices sign every reading (P-256; their keys "
            f"registered in DeviceKeys {sr['registry']} by their participants' signatures); "
            f"{sr['verified']}/{sr['readings']} boundary readings verified, "
            f"{sr['unverified']} unverified; "
            f"{sr['verified_local_wh'] / 1000:.2f} kWh of verified local energy rewarded"
        )
        if sr["forged"]:
            f = sr["forged"]
            lines.append(
                f"  attack: {f['device']} served a forged reading at {f['boundary']} (counters "
                f"changed after signing): UNVERIFIED ({f['reason']})"
            )
            for ln in sr["unverified_lines"]:
                lines.append(
                    f"  {ln['interval']}: {ln['participant']}'s export counted as not "
                    f"delivered ({ln['metered_export_wh'] / 1000:.2f} kWh counted), imbalance "
                    f"{format_tokens(ln['imbalance_amount'])} tokens, penalty "
                    f"{format_tokens(ln['penalty_amount'])}, reward {ln['rewarded_wh']} Wh"
                )
            lines.append(f"  audit verify names it in {len(sr['audit_named'])} records")
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


FORGER: Final = "judy-pv"
"""The device whose reading the demo forges once (its counters changed after signing)."""


def signed_summary(
    rt: DemoRuntime, boundaries: int, audit: Mapping[str, Any], forged_at: int | None
) -> dict[str, Any]:
    """What the demo's signed readings proved (issue 17), for its report.

    Returns
    -------
    dict
        ``devices`` signing, the ``registry``, boundary ``readings`` in all, ``verified``
        and ``unverified``; ``verified_local_wh`` (the reward basis [Wh]) and
        ``rewards_minted`` [reward units]; the forged reading (``forged``: device,
        boundary, reason) and what it cost its participant (``unverified_lines``: per
        interval the line's reason, imbalance and penalty [token units], and its reward
        [Wh], 0); ``audit_named`` (``audit verify``'s lines on it).
    """
    counts = {"ok": 0, "unverified": 0, "other": 0}
    forged: dict[str, Any] | None = None
    for k in range(boundaries):
        at = rt.boundary(k)
        for device, r in rt.store.readings_at(int(at.timestamp())).items():
            if r.quality is ReadingQuality.OK and r.signed is not None:
                counts["ok"] += 1
            elif r.quality is ReadingQuality.UNVERIFIED:
                counts["unverified"] += 1
                if k == forged_at and device == FORGER:
                    forged = {"device": device, "boundary": utc_label(at), "reason": r.reason}
            else:
                counts["other"] += 1
    lines: list[dict[str, Any]] = []
    verified_wh = 0
    for row in rt.store.audit_records():
        record = row["record"]
        batch = record.get("settlement") or {}
        verified_wh += sum(int(wh) for _, wh in batch.get("rewards", []))
        for ln in batch.get("lines", []):
            if ln.get("unverified") and not ln["unverified"].endswith("(signing optional)"):
                lines.append(
                    {
                        "interval": utc_label(int(record["interval"])),
                        "participant": ln["participant"],
                        "reason": ln["unverified"],
                        "metered_export_wh": ln["metered_export_wh"],
                        "imbalance_amount": ln["imbalance_amount"],
                        "penalty_amount": ln.get("penalty_amount", 0),
                        "rewarded_wh": dict(batch.get("rewards", [])).get(ln["participant"], 0),
                    }
                )
    keys = rt.cycle.device_keys
    return {
        "devices": sum(1 for d in rt.site.devices if d.signed_block is not None),
        "registry": None if keys is None else keys.registry,
        "readings": sum(counts.values()),
        "verified": counts["ok"],
        "unverified": counts["unverified"],
        "verified_local_wh": verified_wh,
        "forged": forged,
        "unverified_lines": lines,
        "audit_named": list(audit.get("unverified", [])),
    }


def vote_summary(vote: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The community vote (:func:`controller.demo_vote.hold_vote`) and the reward it changed.

    Reward units minted per verified kWh over the intervals settled before the vote and
    over those settled after it (``None`` where no verified energy was rewarded).
    """

    def per_kwh(after: bool) -> float | None:
        picked = [r for r in rows if r.get("after_vote") is after and r.get("settled")]
        wh = sum(r["reward_wh"] for r in picked)
        return None if wh == 0 else sum(r["rewards_minted"] for r in picked) * 1000 / wh

    charged = [r for r in rows if r.get("community_fee_bps")]
    return {
        **vote,
        "reward_per_kwh_before": per_kwh(False),
        "reward_per_kwh_after": per_kwh(True),
        "fee_from": charged[0]["interval"] if charged else None,
        "fee_intervals": len(charged),
        "fee_units": sum(r["community_fee_units"] for r in charged),
    }


def _reward(units_per_kwh: float | None) -> str:
    return "-" if units_per_kwh is None else f"{units_per_kwh / 1e6:.3f} reward tokens"


def _api(row: dict[str, Any]) -> str:
    """``traded/in book`` of the signed orders from the API (``-``: none)."""
    n = int(row.get("api_orders", 0))
    return "-" if not n else f"{int(row.get('api_traded', 0))}/{n}"


def _f(value: float | None, digits: int = 3, width: int = 6) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

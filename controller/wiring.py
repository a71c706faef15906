"""The composition root: builds the runtime of a site from its :class:`SiteConfig`.

:func:`build_runtime` is the one place that assembles grid, devices, chain, store and cycle
into a :class:`Runtime`; ``peergrid run`` (:mod:`controller.runner`), ``peergrid demo``
(:mod:`controller.demo`) and ``peergrid audit verify`` (:mod:`controller.cli`) use it, each
leaving out what it does not need. The parts:

* grid: :func:`grid_models.grids.load_grid` of ``site.grid``; every participant's bus is
  checked against it (unknown bus -> :class:`~controller.errors.ConfigError`);
* base case per interval: SimBench grids use their own profiles at the interval's time step
  (15-min steps from 1 January); other grids scale their loads by ``base_load_scale`` and
  the daily load shape of :mod:`controller.profiles`. The cycle linearises each interval's
  base case itself (the linear grid depends on the interval's operating point);
* devices: one :class:`~adapters.modbus.client.ModbusTkClient` per device with a
  :class:`~adapters.modbus.reading.DeviceReader` and, for PV and batteries, a
  :class:`~adapters.modbus.writing.DeviceWriter`;
* chain: a :class:`ChainSettler` on :class:`~adapters.chain.client.ChainClient`. A *trial*
  chain (always the ``embedded`` backend; the demo's fresh anvil too) gets fresh contracts
  and funded escrows at start (:func:`fund_trial_chain`) and signs with demo keys; a
  persistent chain (``anvil``, ``rpc``) is attached at the site file's addresses and signs
  with the operator key from the environment;
* store: :class:`~controller.store.Store` at ``site.database`` (or another URL).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from adapters.chain import ChainClient, Signer, account_from_key, connect, derive_account
from adapters.modbus.client import ModbusTkClient
from adapters.modbus.mapfiles import load_register_map
from adapters.modbus.reading import DeviceReader
from adapters.modbus.writing import DeviceWriter
from controller.bidding import Forecaster
from controller.config import ChainBackend, DeviceKind, SiteConfig
from controller.cycle import ChainOutcome, Cycle, Reader, Writer
from controller.errors import ConfigError, NotWired
from controller.profiles import load_shape
from controller.store import Store
from grid_models.errors import GridModelError
from grid_models.grids import Grid, load_grid
from market.domain import COMMUNITY, GRID, DeviceId, Interval, ParticipantId, SettlementBatch


def load_site_grid(site: SiteConfig) -> Grid:
    """Load the site's grid and check every participant's bus.

    Parameters
    ----------
    site : SiteConfig
        The site; ``site.grid`` names the grid (``cigre-lv``, ``simbench:<code>`` or a
        pandapower JSON file).

    Raises
    ------
    ConfigError
        Unknown grid or unknown bus, naming the participant.
    """
    try:
        grid = load_grid(site.grid)
    except GridModelError as exc:
        msg = f"site.grid: {exc}"
        raise ConfigError(msg) from None
    names = set(grid.bus_names)
    for i, p in enumerate(site.participants):
        if p.bus not in names:
            msg = f"participants[{i}] ({p.id}): unknown bus {p.bus!r} in grid {site.grid}"
            raise ConfigError(msg)
    return grid


def base_grid_factory(site: SiteConfig, grid: Grid) -> Callable[[Interval], Grid]:
    """The feeder's inflexible base case for each interval (see the module docstring).

    Parameters
    ----------
    site : SiteConfig
        ``base_load_scale`` and ``base_sgen_scale`` scale a grid without profiles.
    grid : Grid
        The site's grid, as :func:`load_site_grid` returns it.

    Returns
    -------
    Callable
        ``interval -> Grid``. A grid with profiles gives its time step ``(seconds since 1
        January of the interval's year) // 900`` (modulo the profile's length); another
        grid has its loads scaled by ``base_load_scale * load_shape(mid-interval)`` and its
        static generators by ``base_sgen_scale``. The last four base cases are cached.
    """
    cache: dict[int, Grid] = {}

    def base_for(interval: Interval) -> Grid:
        key = interval.interval_id
        if key not in cache:
            if grid.profiles:
                year_start = datetime(interval.start.year, 1, 1, tzinfo=UTC)
                step = int((interval.start - year_start).total_seconds()) // 900
                n_steps = len(grid.profiles[("load", "p_mw")])
                cache[key] = grid.at_time_step(step % n_steps)
            else:
                mid = interval.start + (interval.end - interval.start) / 2
                cache[key] = grid.scaled(
                    load_scale=site.base_load_scale * load_shape(mid),
                    sgen_scale=site.base_sgen_scale,
                )
            while len(cache) > 4:
                cache.pop(next(iter(cache)))
        return cache[key]

    return base_for


@dataclass(eq=False)
class Devices:
    """The site's device adapters; close them with :meth:`close`."""

    readers: dict[DeviceId, Reader] = field(default_factory=dict)
    writers: dict[DeviceId, Writer] = field(default_factory=dict)
    clients: list[ModbusTkClient] = field(default_factory=list)

    def close(self) -> None:
        """Close every Modbus connection."""
        for c in self.clients:
            c.close()


def build_devices(site: SiteConfig, *, timeout_s: float = 0.5, retries: int = 1) -> Devices:
    """Modbus readers and writers for every device of ``site``.

    Parameters
    ----------
    site : SiteConfig
        The devices (host, port, unit, register map) and ``max_reading_age_s`` [s].
    timeout_s : float
        Modbus answer timeout per request [s].
    retries : int
        Extra attempts per request.

    Returns
    -------
    Devices
        A reader for every device, a writer for every PV inverter and battery.

    Raises
    ------
    ConfigError
        A device with an unknown register map or without a port.
    """
    out = Devices()
    for i, d in enumerate(site.devices):
        where = f"devices[{i}] ({d.id})"
        if not d.port:
            msg = f"{where}: no port (0 is only for simulated devices of the demo)"
            raise ConfigError(msg)
        try:
            register_map = load_register_map(d.map)
        except (ValueError, OSError) as exc:
            msg = f"{where}: register map {d.map!r}: {exc}"
            raise ConfigError(msg) from None
        participant = site.participant(d.participant)
        client = ModbusTkClient(d.host, d.port, d.unit, timeout_s=timeout_s, retries=retries)
        out.clients.append(client)
        out.readers[d.id] = DeviceReader(
            d.id,
            participant.id,
            participant.bus,
            client,
            register_map,
            max_age_s=site.max_reading_age_s,
        )
        if d.kind in {DeviceKind.PV, DeviceKind.BATTERY}:
            out.writers[d.id] = DeviceWriter(d.id, client, register_map, rated_w=d.rated_w or None)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialFunding:
    """How a trial chain is funded at start (see :func:`fund_trial_chain`).

    ``grid_reserve`` and ``community_reserve`` are the escrow of GRID (the upstream
    supplier: it pays for exports) and of COMMUNITY (it pays the market's losses), and
    ``wallet_extra`` what every account keeps outside escrow, all [token units]. ``token``
    is the payment token's (name, symbol); ``reward`` the reward token's (rate [reward units
    per kWh], cap [reward units per interval]), or ``None`` for no reward token.
    """

    grid_reserve: int
    community_reserve: int
    wallet_extra: int = 0
    token: tuple[str, str] = ("PeerGrid Token", "PGT")
    reward: tuple[int, int] | None = None


EMBEDDED_TRIAL = TrialFunding(grid_reserve=1_000_000_000, community_reserve=100_000_000)
"""The funding of ``peergrid run`` on the embedded chain: 1,000 tokens of GRID escrow and a
100-token community reserve."""


def fund_trial_chain(site: SiteConfig, client: ChainClient, funding: TrialFunding) -> int:
    """Deploy the contracts on a trial chain (embedded or a fresh anvil) and fund every escrow.

    The operator gets 100 ether and every account (``derive`` demo keys) 1 ether of gas
    money; participants deposit their site-file ``deposit``, GRID and COMMUNITY their
    reserves, and each also keeps ``funding.wallet_extra`` in its wallet. On a real site
    participants fund their own escrow.

    Parameters
    ----------
    site : SiteConfig
        The participants and their ``deposit`` [token units].
    client : ChainClient
        A client on the trial chain, signing as the operator (it deploys and mints).
    funding : TrialFunding
        Reserves, wallet extra [token units], token names and reward policy.

    Returns
    -------
    int
        The minted supply [token units].
    """
    client.fund_eth(client.operator.address, 100 * 10**18)
    rate, cap = funding.reward or (0, 0)
    client.deploy_all(
        token_name=funding.token[0],
        token_symbol=funding.token[1],
        reward_name=None if funding.reward is None else "PeerGrid Energy Reward",
        reward_rate=rate,
        reward_cap=cap,
    )
    minted = 0
    extra = funding.wallet_extra
    accounts = [(p.id, p.deposit) for p in site.participants]
    accounts += [(GRID, funding.grid_reserve), (COMMUNITY, funding.community_reserve)]
    for label, deposit in accounts:
        account = derive_account(label)
        client.fund_eth(account.address, 10**18)
        if deposit + extra:
            client.mint(account.address, deposit + extra)
            minted += deposit + extra
        if deposit:
            client.deposit(account, deposit)
    return minted


def account_of(site: SiteConfig, participant: str) -> str:
    """The chain address of a participant (or of GRID / COMMUNITY).

    GRID, COMMUNITY and participants with ``account = "derive"`` get the address of
    :func:`adapters.chain.accounts.derive_account` (demo and test keys: anyone who knows the
    name knows the key); other participants the address of their site file.

    Parameters
    ----------
    site : SiteConfig
        The participants and their ``account``.
    participant : str
        A participant id, ``GRID`` or ``COMMUNITY``.

    Raises
    ------
    ConfigError
        An unknown participant.
    """
    if participant in {GRID, COMMUNITY}:
        return str(derive_account(participant).address)
    account = site.participant(participant).account
    if account == "derive":
        return str(derive_account(participant).address)
    return account


@dataclass(eq=False)
class ChainSettler:
    """Sends :class:`SettlementBatch` es through a :class:`ChainClient` (exactly once).

    ``accounts`` maps every participant, GRID and COMMUNITY to its chain address.
    """

    client: ChainClient
    accounts: Mapping[ParticipantId, str]

    def escrow(self, participant: str) -> int | None:
        """Escrow a participant can still be charged [token units] (the credit check).

        The contract's ``available``: escrow less any withdrawal it has asked for.

        Parameters
        ----------
        participant : str
            The participant's id.

        Returns
        -------
        int or None
            The available escrow [token units]; ``None`` for an id without an account.
        """
        address = self.accounts.get(ParticipantId(participant))
        return None if address is None else int(self.client.available_credit(address))

    def submit(self, batch: SettlementBatch) -> ChainOutcome:
        """Settle ``batch`` on-chain; an interval already settled is reported, not resent.

        The chain adapter (:meth:`ChainClient.submit_settlement`) asks the chain first and
        maps every account of the batch to its address in ``accounts``.

        Parameters
        ----------
        batch : SettlementBatch
            The interval's batch: amounts [token units] per account, rewards [Wh], roots.

        Returns
        -------
        ChainOutcome
            Transaction hash, block, gas used and status.
        """
        receipt = self.client.submit_settlement(batch, self.accounts)
        return ChainOutcome(
            tx_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            gas_used=receipt.gas_used,
            status=str(receipt.status),
        )


def participant_accounts(site: SiteConfig) -> dict[ParticipantId, str]:
    """Addresses of every participant plus GRID and COMMUNITY (see :func:`account_of`).

    Parameters
    ----------
    site : SiteConfig
        The participants and their ``account``.
    """
    accounts = {p.id: account_of(site, p.id) for p in site.participants}
    accounts[GRID] = account_of(site, GRID)
    accounts[COMMUNITY] = account_of(site, COMMUNITY)
    return accounts


def describe(site: SiteConfig) -> dict[str, Any]:
    """A short JSON summary of a site (for ``peergrid site check``).

    Parameters
    ----------
    site : SiteConfig
        The site.

    Returns
    -------
    dict
        Name, grid, interval length [s], participants (id, bus, number of standing orders),
        devices (id, kind, register map) and chain backend.
    """
    return {
        "name": site.name,
        "grid": site.grid,
        "interval_s": site.interval_s,
        "participants": [
            {"id": p.id, "bus": p.bus, "orders": len(p.orders)} for p in site.participants
        ],
        "devices": [{"id": d.id, "kind": d.kind, "map": d.map} for d in site.devices],
        "chain": site.chain.backend,
    }


def operator_account(site: SiteConfig, *, trial: bool) -> Signer:
    """The operator's signing account.

    Parameters
    ----------
    site : SiteConfig
        ``site.chain.operator_key_env`` names the environment variable holding the key.
    trial : bool
        A trial chain signs with the ``operator`` demo key; any other chain with the key
        from the environment.

    Raises
    ------
    ConfigError
        The environment variable is unset or empty.
    """
    if trial:
        return derive_account("operator")
    key = os.environ.get(site.chain.operator_key_env, "")
    if not key:
        msg = (
            f"chain: set {site.chain.operator_key_env} to the operator's private key "
            f"for backend '{site.chain.backend}'"
        )
        raise ConfigError(msg)
    return account_from_key(key)


def _no_grid(interval: Interval) -> Grid:
    msg = f"no grid for {interval.label()}: the runtime was built with grid=False"
    raise NotWired(msg)


@dataclass(eq=False)
class Runtime:
    """What a site runs on, built by :func:`build_runtime`; :meth:`close` releases it.

    Use it as a context manager, or call :meth:`close` (closing twice is harmless).
    ``grid`` is ``None`` and ``cycle.base_grid_for`` raises :class:`NotWired` when built
    without the grid; ``settler`` is ``None`` and :attr:`client` and :attr:`accounts` raise
    :class:`NotWired` when built without the chain; ``devices`` is empty when built without devices.
    ``minted`` is the supply a trial chain was funded with [token units] (0 otherwise).
    """

    site: SiteConfig
    store: Store
    grid: Grid | None
    base_grid_for: Callable[[Interval], Grid]
    devices: Devices
    settler: ChainSettler | None
    cycle: Cycle
    minted: int
    _resources: ExitStack = field(repr=False)

    def _chain(self) -> ChainSettler:
        if self.settler is None:
            msg = "no chain: the runtime was built with chain=False"
            raise NotWired(msg)
        return self.settler

    @property
    def client(self) -> ChainClient:
        """The chain client (the settler's).

        Raises
        ------
        NotWired
            The runtime was built without the chain.
        """
        return self._chain().client

    @property
    def accounts(self) -> Mapping[ParticipantId, str]:
        """The chain address of every participant, GRID and COMMUNITY (the settler's).

        Raises
        ------
        NotWired
            The runtime was built without the chain.
        """
        return self._chain().accounts

    def close(self) -> None:
        """Close the chain connection, the Modbus connections and the store; release the guard."""
        self._resources.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def build_runtime(
    site: SiteConfig,
    *,
    store_url: str | None = None,
    grid: bool = True,
    devices: bool = True,
    chain: bool = True,
    trial: TrialFunding | None = None,
    forecaster: Forecaster | None = None,
    guard: AbstractContextManager[object] | None = None,
) -> Runtime:
    """Build the runtime of ``site``: grid, devices, chain, store and cycle (module docstring).

    The order is fixed: the chain's site-file settings are checked, the grid is loaded and
    its buses checked, the operator key is read, then ``guard`` is entered and the store,
    the devices and the chain connection are opened; the chain is funded (trial) or attached
    (persistent; the operator's nonce is reconciled with the store's). If any step fails,
    everything opened so far is closed again.

    Parameters
    ----------
    site : SiteConfig
        The site.
    store_url : str or None
        Database URL; ``None`` uses ``site.database``.
    grid : bool
        Load the grid (``False``: the cycle cannot clear; ``peergrid audit verify
        --no-reclear``).
    devices : bool
        Connect a reader (and writer) to every device of the site.
    chain : bool
        Connect to the chain of ``site.chain`` and settle through it (``False``: the cycle
        has no settler).
    trial : TrialFunding or None
        Treat the chain as a trial chain funded so; ``None`` does so for the ``embedded``
        backend only, with :data:`EMBEDDED_TRIAL`.
    forecaster : Forecaster or None
        The cycle's device forecasts [W]; ``None`` bids on the latest readings.
    guard : context manager or None
        Entered before anything is opened and left after everything is closed (``peergrid
        run``: the site's single-instance lock).

    Returns
    -------
    Runtime
        The runtime; close it when done.

    Raises
    ------
    ConfigError
        A persistent chain without contract addresses or operator key, an unknown grid or
        bus, a device without a port or with an unknown register map.
    """
    is_trial = chain and (trial is not None or site.chain.backend is ChainBackend.EMBEDDED)
    if chain and not is_trial and not (site.chain.token_address and site.chain.settlement_address):
        msg = (
            f"chain: backend '{site.chain.backend}' needs token_address and "
            "settlement_address (deploy them with 'peergrid chain deploy')"
        )
        raise ConfigError(msg)
    loaded = load_site_grid(site) if grid else None
    operator = operator_account(site, trial=is_trial) if chain else None
    resources = ExitStack()
    try:
        if guard is not None:
            resources.enter_context(guard)
        store = Store(store_url or site.database)
        resources.callback(store.close)
        devs = build_devices(site) if devices else Devices()
        resources.callback(devs.close)
        settler = None
        minted = 0
        if operator is not None:
            connection = connect(
                site.chain.backend,
                rpc_url=site.chain.rpc_url or None,
                state_path=site.chain.state_path or None,
            )
            resources.callback(connection.close)
            client = ChainClient(
                connection.w3,
                operator,
                confirmations=site.chain.confirmations,
                on_nonce=store.save_next_nonce,
            )
            if is_trial:
                minted = fund_trial_chain(site, client, trial or EMBEDDED_TRIAL)
            else:
                client.attach(site.chain.token_address, site.chain.settlement_address)
                client.reconcile_nonce(store.load_next_nonce(str(operator.address)))
            settler = ChainSettler(client, participant_accounts(site))
        base_grid_for = base_grid_factory(site, loaded) if loaded is not None else _no_grid
        cycle = Cycle(
            site=site,
            store=store,
            base_grid_for=base_grid_for,
            readers=devs.readers,
            writers=devs.writers,
            settler=settler,
            forecaster=forecaster,
        )
    except BaseException:
        resources.close()
        raise
    return Runtime(
        site=site,
        store=store,
        grid=loaded,
        base_grid_for=base_grid_for,
        devices=devs,
        settler=settler,
        cycle=cycle,
        minted=minted,
        _resources=resources,
    )

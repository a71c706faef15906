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
* devices (:func:`build_devices`): one :class:`~adapters.modbus.client.ModbusTkClient` per
  device (Modbus TCP, or RTU on the serial line it shares with the other devices of its
  ``serial_port``) with a :class:`~adapters.modbus.reading.DeviceReader` and, for PV and
  batteries, a :class:`~adapters.modbus.writing.DeviceWriter` that writes each setpoint with
  the device's own revert timer (two intervals: :data:`REVERT_INTERVALS`) and pauses a dead
  device like its reader; ``map = "sunspec"`` devices discover their models on first contact
  (:mod:`adapters.modbus.discovered`);
* chain: a :class:`ChainSettler` on :class:`~adapters.chain.client.ChainClient`. A *trial*
  chain (always the ``embedded`` backend; the demo's fresh anvil too) gets fresh contracts
  and funded escrows at start (:func:`fund_trial_chain`) and signs with demo keys; a
  persistent chain (``anvil``, ``rpc``) is attached at the site file's addresses and signs
  only as the operator, with the key of the site's keystore or environment variable
  (:mod:`controller.keys`); GRID, COMMUNITY and participants are the site file's addresses
  there (:func:`account_of`: derived demo accounts only on a trial chain);
* store: :class:`~controller.store.Store` at ``site.database`` (or another URL), for this
  site only: another site's database is refused (:mod:`controller.site_identity`).
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from adapters.chain import (
    ChainClient,
    InvalidAccount,
    Signer,
    checksum_address,
    connect,
    derive_account,
)
from adapters.chain.device_keys import DeviceKeys
from adapters.chain.errors import InvalidArgument
from adapters.chain.governance import Governance, GovernanceDeployment
from adapters.errors import AdapterError
from adapters.modbus.client import ModbusTkClient, RtuLine
from adapters.modbus.discovered import (
    SUNSPEC_DISCOVERY,
    DiscoveredMap,
    DiscoveringReader,
    DiscoveringWriter,
)
from adapters.modbus.mapfiles import load_register_map
from adapters.modbus.reading import DeviceReader
from adapters.modbus.writing import DeviceWriter
from controller.bidding import Forecaster
from controller.config import (
    ChainBackend,
    DeviceConfig,
    DeviceKind,
    InvalidSite,
    SiteConfig,
    Transport,
)
from controller.controls import MarketControls
from controller.crash import crash_point
from controller.cycle import ChainOutcome, Cycle, DeviceKeysAt, Reader, Writer
from controller.errors import ConfigError, NotWired
from controller.keys import site_operator_key
from controller.profiles import load_shape
from controller.site_identity import site_identity
from controller.store import Store
from controller.userfiles import read_text
from grid_models.errors import GridModelError
from grid_models.grids import Grid, load_grid, split_base_case, unknown_bus_message
from grid_models.linear import LinearGrid, build_linear_grid
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
        An unknown grid; :class:`~controller.config.InvalidSite` naming every participant
        whose bus the grid does not have, with the closest bus names.
    """
    try:
        grid = _loaded_grid(site.grid)
    except GridModelError as exc:
        msg = f"site.grid: {exc}"
        raise ConfigError(msg) from None
    names = set(grid.bus_names)
    problems = [
        f"participants[{i}] ({p.id}).bus: {unknown_bus_message(p.bus, names, site.grid)}"
        for i, p in enumerate(site.participants)
        if p.bus not in names
    ]
    if problems:
        raise InvalidSite(site.source or "<memory>", problems)
    return grid


_GRIDS: dict[tuple[str, float, int], Grid] = {}
_GRIDS_LOCK = threading.Lock()


def _loaded_grid(spec: str) -> Grid:
    """``load_grid(spec)``, loaded once per process while its file is unchanged.

    A worker runs hundreds of sites, many on one feeder model: they share the loaded grid,
    which is only ever read (every base case, power flow and model works on a copy).
    """
    path = Path(spec)
    try:
        stat = path.stat() if path.suffix == ".json" else None
    except OSError:
        stat = None
    key = (spec, stat.st_mtime if stat else 0.0, stat.st_size if stat else 0)
    with _GRIDS_LOCK:
        kept = _GRIDS.get(key)
    if kept is not None:
        return kept
    grid = load_grid(spec)
    with _GRIDS_LOCK:
        return _GRIDS.setdefault(key, grid)


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
        static generators by ``base_sgen_scale``. The last three base cases are cached
        (the interval settled, the one cleared, and one cleared ahead at a gate closure).
    """
    cache = _base_cache(grid, site.base_load_scale, site.base_sgen_scale)

    def base_for(interval: Interval) -> Grid:
        key = (interval.interval_id, interval.length_s)
        with _GRIDS_LOCK:
            kept = cache.get(key)
        if kept is not None:
            return kept
        with _GRIDS_LOCK:
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
            while len(cache) > 3:
                cache.pop(next(iter(cache)))
            return cache[key]

    return base_for


_BASES: OrderedDict[tuple[int, float, float], tuple[Grid, dict[tuple[int, int], Grid]]] = (
    OrderedDict()
)


def _base_cache(grid: Grid, load_scale: float, sgen_scale: float) -> dict[tuple[int, int], Grid]:
    """The base cases of one grid at one scaling, shared by the sites that have both.

    A worker's sites on one feeder model (:func:`_loaded_grid`) share their base cases
    instead of holding three copies each. The entry keeps ``grid`` alive, so its ``id``
    cannot be reused while the entry exists; the 64 latest entries are kept.
    """
    key = (id(grid), load_scale, sgen_scale)
    with _GRIDS_LOCK:
        entry = _BASES.get(key)
        if entry is None or entry[0] is not grid:
            entry = (grid, {})
            _BASES[key] = entry
        _BASES.move_to_end(key)
        while len(_BASES) > 64:
            _BASES.popitem(last=False)
        return entry[1]


_LINEAR_PER_THREAD: Final = 4
"""Network models each thread keeps (:func:`shared_linear_grid`)."""

_LINEAR = threading.local()


def shared_linear_grid(grid: Grid, vm_min_pu: float, vm_max_pu: float) -> LinearGrid:
    """:func:`~grid_models.linear.build_linear_grid` of a base case, kept per thread.

    Sites on one feeder share their base cases (:func:`_base_cache`), and so the network
    model of each: building it (the base case's AC power flow, the sensitivities) costs more
    than the clearing of a small site. A model holds its AC checker, a pandapower net that
    each check writes to, so a thread never shares its models with another; a check starts
    from the base case's solution whatever ran before (:class:`~grid_models.powerflow.
    AcChecker`), so a kept model clears as a new one does. Each thread keeps its
    :data:`_LINEAR_PER_THREAD` latest; an entry holds its grid, so the grid's ``id`` is
    not reused while it is kept.
    """
    kept: OrderedDict[tuple[int, float, float], tuple[Grid, LinearGrid]] | None
    kept = getattr(_LINEAR, "kept", None)
    if kept is None:
        kept = _LINEAR.kept = OrderedDict()
    key = (id(grid), vm_min_pu, vm_max_pu)
    entry = kept.get(key)
    if entry is None or entry[0] is not grid:
        entry = (grid, build_linear_grid(grid, vm_min_pu=vm_min_pu, vm_max_pu=vm_max_pu))
        kept[key] = entry
        while len(kept) > _LINEAR_PER_THREAD:
            kept.popitem(last=False)
    kept.move_to_end(key)
    return entry[1]


_SPLITS: OrderedDict[int, tuple[Grid, str, dict[str, list[list[Any]]]]] = OrderedDict()


def shared_split(grid: Grid) -> tuple[str, dict[str, list[list[Any]]]]:
    """:func:`~grid_models.grids.split_base_case` of a base case, kept for the sites sharing it.

    The text is immutable; the base case comes as a new dict of new lists each time, so a
    caller's changes never reach the kept one. The 8 latest are kept.
    """
    with _GRIDS_LOCK:
        entry = _SPLITS.get(id(grid))
    if entry is None or entry[0] is not grid:
        text, injections = split_base_case(grid)
        entry = (grid, text, injections)
        with _GRIDS_LOCK:
            _SPLITS[id(grid)] = entry
            while len(_SPLITS) > 8:
                _SPLITS.popitem(last=False)
    return entry[1], {k: [list(row) for row in rows] for k, rows in entry[2].items()}


@dataclass(eq=False)
class Devices:
    """The site's device adapters; close them with :meth:`close`.

    ``clients`` are the Modbus TCP connections and the clients of RTU devices, ``lines`` the
    serial lines those share (one per ``serial_port``).
    """

    readers: dict[DeviceId, Reader] = field(default_factory=dict)
    writers: dict[DeviceId, Writer] = field(default_factory=dict)
    clients: list[ModbusTkClient] = field(default_factory=list)
    lines: list[RtuLine] = field(default_factory=list)

    def close(self) -> None:
        """Close every Modbus connection and serial line."""
        for c in self.clients:
            c.close()
        for line in self.lines:
            line.close()


def _serial_settings(d: DeviceConfig) -> tuple[int, str, int, int]:
    return (d.baudrate, str(d.parity), d.bytesize, d.stopbits)


def _rtu_client(
    d: DeviceConfig,
    where: str,
    lines: dict[str, tuple[RtuLine, DeviceConfig]],
    units: dict[tuple[str, int], DeviceId],
    out: Devices,
    *,
    timeout_s: float,
    retries: int,
) -> ModbusTkClient:
    """A client for an RTU device on the line of its ``serial_port`` (made on first use)."""
    if not d.serial_port:
        msg = f"{where}: transport 'rtu' needs serial_port"
        raise ConfigError(msg)
    if (d.serial_port, d.unit) in units:
        msg = (
            f"{where}: unit {d.unit} on {d.serial_port} is already device "
            f"{units[d.serial_port, d.unit]!r} (devices on one line need different unit ids)"
        )
        raise ConfigError(msg)
    units[d.serial_port, d.unit] = d.id
    if d.serial_port in lines:
        line, first = lines[d.serial_port]
        if _serial_settings(d) != _serial_settings(first):
            msg = (
                f"{where}: {d.serial_port} is set up as baudrate/parity/bytesize/stopbits "
                f"{'/'.join(map(str, _serial_settings(first)))} by device {first.id!r}, not "
                f"{'/'.join(map(str, _serial_settings(d)))}"
            )
            raise ConfigError(msg)
    else:
        try:
            line = RtuLine(
                d.serial_port,
                d.baudrate,
                parity=str(d.parity),
                bytesize=d.bytesize,
                stopbits=d.stopbits,
                timeout_s=timeout_s,
            )
        except AdapterError as exc:
            msg = f"{where}: serial line {d.serial_port}: {exc}"
            raise ConfigError(msg) from None
        lines[d.serial_port] = (line, d)
        out.lines.append(line)
    return line.client(d.unit, retries=retries)


REVERT_INTERVALS = 2
"""A setpoint's revert time, in market intervals: a device whose controller stopped writing
returns to its default (no PV limit, an idle battery) this many intervals after the last
write; one missed tick is tolerated."""


def build_devices(
    site: SiteConfig,
    *,
    timeout_s: float = 0.5,
    retries: int = 1,
    revert_s: float | None = None,
) -> Devices:
    """Modbus readers and writers for every device of ``site``.

    A TCP device gets its own connection to ``host:port``. RTU devices get a client on the
    :class:`~adapters.modbus.client.RtuLine` of their ``serial_port``: the devices on one
    port share one line (one request at a time, told apart by their unit ids), with the
    line's ``baudrate`` [bit/s], ``parity``, ``bytesize`` and ``stopbits``. Nothing is
    opened here: each connection or port opens on its first request.

    A device with ``map = "sunspec"`` gets a :class:`~adapters.modbus.discovered.
    DiscoveringReader` (and writer) sharing one :class:`~adapters.modbus.discovered.
    DiscoveredMap`: its SunSpec models are discovered on first contact and the map is kept;
    a failed discovery is a MISSING reading with its reason, tried again at the next read.
    Other devices read and write through their named register map.

    Parameters
    ----------
    site : SiteConfig
        The devices (transport, host/port or serial line, unit, register map, rating) and
        ``max_reading_age_s`` [s].
    timeout_s : float
        Modbus answer timeout per request [s].
    retries : int
        Extra attempts per request.
    revert_s : float, optional
        The devices' revert time [s], written with every setpoint (see
        :mod:`adapters.modbus.writing`); ``REVERT_INTERVALS * site.interval_s`` by default.

    Returns
    -------
    Devices
        A reader for every device, a writer for every PV inverter and battery.

    Raises
    ------
    ConfigError
        A TCP device without a port, an RTU device without a serial port, two RTU devices
        with one unit id on one line or with different settings for one line, or an
        unknown register map.
    """
    out = Devices()
    if revert_s is None:
        revert_s = float(REVERT_INTERVALS * site.interval_s)
    lines: dict[str, tuple[RtuLine, DeviceConfig]] = {}
    units: dict[tuple[str, int], DeviceId] = {}
    for i, d in enumerate(site.devices):
        where = f"devices[{i}] ({d.id})"
        discovering = d.map == SUNSPEC_DISCOVERY
        register_map = None
        if not discovering:
            try:
                register_map = load_register_map(d.map)
            except (ValueError, OSError) as exc:
                msg = f"{where}: register map {d.map!r}: {exc}"
                raise ConfigError(msg) from None
        if d.transport is Transport.RTU:
            client = _rtu_client(d, where, lines, units, out, timeout_s=timeout_s, retries=retries)
        else:
            if not d.port:
                msg = f"{where}: no port (0 is only for simulated devices of the demo)"
                raise ConfigError(msg)
            client = ModbusTkClient(d.host, d.port, d.unit, timeout_s=timeout_s, retries=retries)
        out.clients.append(client)
        participant = site.participant(d.participant)
        writes = d.kind in {DeviceKind.PV, DeviceKind.BATTERY}
        if register_map is None:
            if d.signed_block is not None:
                msg = (
                    f"{where}: a signing device needs its register map named "
                    "(SunSpec discovery does not read a signed block)"
                )
                raise ConfigError(msg)
            found = DiscoveredMap(client, f"sunspec:{d.id}")
            out.readers[d.id] = DiscoveringReader(
                d.id, participant.id, participant.bus, found, site.max_reading_age_s
            )
            if writes:
                out.writers[d.id] = DiscoveringWriter(
                    d.id, found, rated_w=d.rated_w or None, revert_s=revert_s
                )
            continue
        out.readers[d.id] = DeviceReader(
            d.id,
            participant.id,
            participant.bus,
            client,
            register_map,
            max_age_s=site.max_reading_age_s,
            signed_block=d.signed_block,
        )
        if writes:
            out.writers[d.id] = DeviceWriter(
                d.id, client, register_map, rated_w=d.rated_w or None, revert_s=revert_s
            )
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

    The operator gets 100 ether and every demo-key account (``derive``, GRID and COMMUNITY
    without an address) 1 ether of gas money; participants deposit their site-file
    ``deposit``, GRID and COMMUNITY their reserves, and each also keeps
    ``funding.wallet_extra`` in its wallet. An account the site names by address (its key is
    its owner's) gets its escrow through the operator's ``deposit_for``. On a persistent
    chain nothing is funded: owners fund their own escrow.

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
        address = account_of(site, label, trial=True)
        demo = derive_account(label)
        if address != demo.address:  # an owner's address: the operator deposits for it
            if extra:
                client.mint(address, extra)
            if deposit:
                client.mint(client.operator.address, deposit)
                client.deposit_for(client.operator, [(address, deposit)])
            minted += deposit + extra
            continue
        client.fund_eth(demo.address, 10**18)
        if deposit + extra:
            client.mint(demo.address, deposit + extra)
            minted += deposit + extra
        if deposit:
            client.deposit(demo, deposit)
    return minted


def account_of(site: SiteConfig, participant: str, *, trial: bool) -> str:
    """The chain address of a participant (or of GRID / COMMUNITY).

    A participant's is its site-file ``account``; GRID's and COMMUNITY's are
    ``[chain] grid_account`` and ``community_account``. On a trial chain only, a participant
    with ``account = "derive"`` and GRID or COMMUNITY without an address get the address of
    :func:`adapters.chain.accounts.derive_account` of their name (a demo key: anyone who
    knows the name knows the key); on a persistent chain they are refused.

    Parameters
    ----------
    site : SiteConfig
        The participants and their ``account``; ``site.chain``'s GRID and COMMUNITY addresses.
    participant : str
        A participant id, ``GRID`` or ``COMMUNITY``.
    trial : bool
        Whether the chain is a trial chain (embedded, or the demo's own anvil).

    Returns
    -------
    str
        The address (checksummed).

    Raises
    ------
    ConfigError
        An unknown participant; a derived account on a persistent chain; an address that is
        not one.
    """
    if participant == GRID:
        where, account = "chain.grid_account", site.chain.grid_account or "derive"
    elif participant == COMMUNITY:
        where, account = "chain.community_account", site.chain.community_account or "derive"
    else:
        config = site.participant(participant)
        account = config.account
        where = f"participants[{site.participants.index(config)}] ({participant}).account"
    if account == "derive":
        if not trial:
            msg = (
                f"{where}: a derived (demo) key is refused on backend "
                f"'{site.chain.backend}'; anyone who knows the name knows its key. "
                "Give the owner's 0x address"
            )
            raise ConfigError(msg)
        return str(derive_account(participant).address)
    try:
        return str(checksum_address(account))
    except InvalidAccount:
        msg = f"{where}: not a 0x address: {account!r}"
        raise ConfigError(msg) from None


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

    def escrows(self, participants: Iterable[str]) -> dict[str, int]:
        """:meth:`escrow` of many participants in one call (ids without an account left out).

        Parameters
        ----------
        participants : iterable of str
            The participants' ids.

        Returns
        -------
        dict of str to int
            The available escrow [token units] per participant that has an account.
        """
        address_of = {
            p: a for p in participants if (a := self.accounts.get(ParticipantId(p))) is not None
        }
        states = self.client.account_states(address_of.values())
        return {p: int(states[checksum_address(a)].available) for p, a in address_of.items()}

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
            rewards_minted=receipt.rewards_minted,
        )


def participant_accounts(site: SiteConfig, *, trial: bool) -> dict[ParticipantId, str]:
    """Addresses of every participant plus GRID and COMMUNITY (see :func:`account_of`).

    Parameters
    ----------
    site : SiteConfig
        The participants and their ``account``; ``site.chain``'s GRID and COMMUNITY addresses.
    trial : bool
        Whether the chain is a trial chain (derived demo accounts allowed).

    Returns
    -------
    dict
        Participant id (and ``GRID``, ``COMMUNITY``) -> checksummed address.

    Raises
    ------
    ConfigError
        As :func:`account_of`.
    """
    accounts = {p.id: account_of(site, p.id, trial=trial) for p in site.participants}
    accounts[GRID] = account_of(site, GRID, trial=trial)
    accounts[COMMUNITY] = account_of(site, COMMUNITY, trial=trial)
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
        ``site.chain.operator_keystore`` (opened with the password in the environment
        variable ``keystore_password_env``, or typed on a terminal) or else the environment
        variable ``site.chain.operator_key_env`` (:func:`controller.keys.site_operator_key`).
    trial : bool
        A trial chain signs with the ``operator`` demo key; any other chain with the site's
        key.

    Returns
    -------
    Signer
        The operator's account.

    Raises
    ------
    KeyUnavailable
        No key, no password, a keystore that does not open, a variable without a key (a
        :class:`~controller.errors.ConfigError`; the message never holds key material).
    """
    if trial:
        return derive_account("operator")
    return site_operator_key(site.chain).signer()


def _after_send(tx_hash: str) -> None:
    """The ``after_send`` crash point (:mod:`controller.crash`): a settlement is broadcast."""
    del tx_hash
    crash_point("after_send")


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
    ``minted`` is the supply a trial chain was funded with [token units] (0 otherwise);
    ``trial`` says the chain is a trial chain (embedded, or the demo's own anvil), where demo
    keys (``derive:<label>``) resolve.
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
    trial: bool = False
    governance: Governance | None = None
    """The community's governance contracts, attached (``[chain] governance_file``)."""

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


GOVERNANCE_ENV: Final = "PEERGRID_GOVERNANCE"
"""The environment variable naming a governance file (``peergrid gov deploy --out``), for a
site file without ``[chain] governance_file``."""


@dataclass(frozen=True, slots=True)
class RegistryKeys:
    """The device keys of a site's signing devices, read from its ``DeviceKeys`` registry.

    Each device's key is its participant's slot (the participant's account, the device id),
    read at the registry's latest block (:class:`controller.cycle.DeviceKeySource`).
    """

    keys: DeviceKeys
    owners: Mapping[DeviceId, str]
    """Each signing device's owner: its participant's chain account."""
    latest_block: Callable[[], int]
    """The chain's latest block number."""

    @property
    def registry(self) -> str:
        """The registry's address."""
        return self.keys.address

    def __call__(self) -> DeviceKeysAt:
        """The keys in force at the latest block (``None`` for none in force).

        Raises
        ------
        ChainError
            The registry cannot be read.
        """
        block = self.latest_block()
        found: dict[DeviceId, bytes | None] = {}
        for device, owner in self.owners.items():
            change = self.keys.key_of(owner, device, block=block)
            found[device] = change.key if change is not None and change.active else None
        return DeviceKeysAt(registry=self.keys.address, block=block, keys=found)


def device_key_source(
    client: ChainClient, site: SiteConfig, accounts: Mapping[ParticipantId, str], address: str
) -> RegistryKeys:
    """The registry at ``address`` (checked to hold ``DeviceKeys``), for ``site``'s devices.

    Raises
    ------
    ChainError
        The address does not hold PeerGrid's ``DeviceKeys``.
    """
    keys = DeviceKeys(client.contracts)
    keys.attach(address)
    owners = {d.id: accounts[d.participant] for d in site.devices if d.signed_block is not None}
    return RegistryKeys(keys, owners, client.block_number)


def registry_key_reader(client: ChainClient) -> Callable[[str, str, str, int], bytes | None]:
    """``key_at(registry, owner, device_id, block)`` for ``audit verify`` (issue 17).

    The key in force at the end of ``block`` in the ``DeviceKeys`` registry at ``registry``
    (its code checked once), read from the registry's own history (a node without old
    states answers too); ``None`` for none, or a revoked one
    (:data:`controller.audit.KeyAt`).
    """
    attached: dict[str, DeviceKeys] = {}

    def key_at(registry: str, owner: str, device_id: str, block: int) -> bytes | None:
        keys = attached.get(registry.lower())
        if keys is None:
            keys = DeviceKeys(client.contracts)
            keys.attach(registry)
            attached[registry.lower()] = keys
        found = keys.key_at(owner, device_id, block)
        return found.key if found is not None and found.active else None

    return key_at


def attach_governance(client: ChainClient, path: str) -> Governance:
    """The community's governance at the addresses of the JSON file ``path``, attached.

    Raises
    ------
    ConfigError
        If the file cannot be read or is not a governance file.
    ChainError
        If the addresses do not hold PeerGrid's governance contracts.
    """
    text = read_text(path, "governance file")
    try:
        deployment = GovernanceDeployment.from_json(text)
    except InvalidArgument as exc:
        msg = f"{path}: {exc}"
        raise ConfigError(msg) from None
    gov = Governance(client.contracts)
    gov.attach(deployment)
    return gov


def build_runtime(
    site: SiteConfig,
    *,
    store_url: str | None = None,
    create_store: bool = True,
    grid: bool = True,
    devices: bool = True,
    chain: bool = True,
    trial: TrialFunding | None = None,
    forecaster: Forecaster | None = None,
    guard: AbstractContextManager[object] | None = None,
    device_factory: Callable[[SiteConfig], Devices] | None = None,
    shared_store: bool = False,
    reconcile_nonce: bool = True,
) -> Runtime:
    """Build the runtime of ``site``: grid, devices, chain, store and cycle (module docstring).

    The order is fixed: the chain's site-file settings are checked, the grid is loaded and
    its buses checked, the operator key is read, then ``guard`` is entered and the store,
    the devices and the chain connection are opened; the chain is funded (trial) or attached
    (persistent; the operator's nonce is reconciled with the store's). If any step fails,
    everything opened so far is closed again.

    The store is opened only for this site (:mod:`controller.site_identity`): the site it is
    bound to is compared when it is opened (name, Settlement address, grid) and, with the
    chain, again once the node's chain id is known, before anything is sent or written; a
    store bound to no site is then bound to this one. Without the chain it is compared, not
    bound.

    Parameters
    ----------
    site : SiteConfig
        The site.
    store_url : str or None
        Database URL; ``None`` uses ``site.database``.
    create_store : bool
        Create the database if there is none (``False`` for ``peergrid audit verify``, which
        only reads: a missing database is an error).
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
    device_factory : Callable or None
        Makes the devices instead of :func:`build_devices` (``peergrid worker
        --simulate-devices``: :func:`controller.simdevices.simulated_devices`).
    shared_store : bool
        Open the store on this process's shared engine (:class:`~controller.store.Store`
        ``shared``: many sites' schemas in one PostgreSQL database).
    reconcile_nonce : bool
        Reconcile the operator's nonce with the node and store it (persistent chains);
        ``False`` for a process that does not hold the site (a fleet's worker building
        ahead, ``serve --front``): whoever sends reconciles first.

    Returns
    -------
    Runtime
        The runtime; close it when done.

    Raises
    ------
    ConfigError
        A persistent chain without contract addresses or operator key (or with a derived
        demo account), an unknown grid or bus, a device :func:`build_devices` refuses (no
        port or serial port, an unknown register map, a serial line set up two ways).
    SiteMismatch
        The database belongs to another site (it is left unchanged).
    MissingDatabase
        ``create_store`` is ``False`` and there is no database.
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
    accounts = participant_accounts(site, trial=is_trial) if chain else {}
    resources = ExitStack()
    try:
        if guard is not None:
            resources.enter_context(guard)
        identity = site_identity(
            site, loaded, trial=trial is not None or site.chain.backend is ChainBackend.EMBEDDED
        )
        store = Store(
            store_url or site.database, create=create_store, site=identity, shared=shared_store
        )
        resources.callback(store.close)
        make_devices = device_factory or build_devices
        devs = make_devices(site) if devices else Devices()
        resources.callback(devs.close)
        settler = None
        governance: Governance | None = None
        key_source: RegistryKeys | None = None
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
            store.check_site(identity.on_chain(client.chain_id()), bind=True)
            # web3 asks for the chain id before every call and transaction: once is enough
            # (the site's identity above binds the store to this chain id)
            client.cache_chain_id()
            if is_trial:
                minted = fund_trial_chain(site, client, trial or EMBEDDED_TRIAL)
            else:
                client.attach(site.chain.token_address, site.chain.settlement_address)
                if reconcile_nonce:
                    client.reconcile_nonce(store.load_next_nonce(str(operator.address)))
            client.settler.on_broadcast = _after_send
            settler = ChainSettler(client, accounts)
            governance_file = site.chain.governance_file or os.environ.get(GOVERNANCE_ENV, "")
            if governance_file and not is_trial:  # a trial chain is new: nothing deployed
                governance = attach_governance(client, governance_file)
            if site.chain.device_keys_address and not is_trial:
                key_source = device_key_source(
                    client, site, accounts, site.chain.device_keys_address
                )
        base_grid_for = base_grid_factory(site, loaded) if loaded is not None else _no_grid
        cycle = Cycle(
            site=site,
            store=store,
            base_grid_for=base_grid_for,
            readers=devs.readers,
            writers=devs.writers,
            settler=settler,
            forecaster=forecaster,
            linear_grid=shared_linear_grid,
            split_grid=shared_split,
            # the operator's pause and exclusions, replayed from the store: honoured by
            # `run` and `serve` alike (`serve` takes new ones through the API)
            controls=MarketControls(
                participants=frozenset(p.id for p in site.participants),
                devices=frozenset(d.id for d in site.devices),
                buses=frozenset(loaded.bus_names if loaded is not None else ())
                | frozenset(p.bus for p in site.participants),
                log=store,
            ),
            governed=None if governance is None else governance.governed_values,
            lift_expired_pause=None
            if governance is None or operator is None
            else functools.partial(governance.lift_if_expired, operator),
            device_keys=key_source,
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
        trial=bool(is_trial),
        governance=governance,
    )

"""Build the adapters, the grid and the cycle from a :class:`SiteConfig` (the only place that does).

* grid: :func:`grid_models.grids.load_grid` of ``site.grid``; every participant's bus is
  checked against it (unknown bus -> :class:`~controller.config.ConfigError`);
* base case per interval: SimBench grids use their own profiles at the interval's time step
  (15-min steps from 1 January); other grids scale their loads by ``base_load_scale`` and
  the daily load shape of :mod:`controller.profiles`;
* devices: one :class:`~adapters.modbus.client.ModbusTkClient` per device with a
  :class:`~adapters.modbus.devices.DeviceReader` and, for PV and batteries, a
  :class:`~adapters.modbus.devices.DeviceWriter`;
* chain: a :class:`ChainSettler` on :class:`~adapters.chain.client.ChainClient`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters.chain.client import ChainClient, SettlementReceipt, derive_account
from adapters.modbus.client import ModbusTkClient
from adapters.modbus.devices import DeviceReader, DeviceWriter
from adapters.modbus.registermaps import load_register_map
from controller.config import ConfigError, SiteConfig
from controller.cycle import ChainOutcome, Reader, Writer
from controller.profiles import load_shape
from grid_models.errors import GridModelError
from grid_models.grids import Grid, load_grid
from market.domain import COMMUNITY, GRID, DeviceId, Interval, ParticipantId, SettlementBatch


def load_site_grid(site: SiteConfig) -> Grid:
    """Load the site's grid and check every participant's bus.

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
    """The feeder's inflexible base case for each interval (see the module docstring)."""
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
        if d.kind in {"pv", "battery"}:
            out.writers[d.id] = DeviceWriter(d.id, client, register_map, rated_w=d.rated_w or None)
    return out


def fund_trial_chain(
    site: SiteConfig,
    client: ChainClient,
    *,
    grid_reserve: int,
    community_reserve: int,
    wallet_extra: int = 0,
    token: tuple[str, str] = ("PeerGrid Token", "PGT"),
    reward: tuple[int, int] | None = None,
) -> int:
    """Deploy the contracts on a trial chain (embedded or a fresh anvil) and fund every escrow.

    Every account (``derive`` demo keys) gets gas money; participants deposit their site-file
    ``deposit``, GRID and COMMUNITY their reserves, and each also keeps ``wallet_extra`` in its
    wallet. ``reward`` is (rate, cap) of the reward token, or ``None`` for none. On a real
    site participants fund their own escrow. Returns the minted supply [token units].
    """
    client.fund_eth(client.operator.address, 100 * 10**18)
    rate, cap = reward or (0, 0)
    client.deploy_all(
        token_name=token[0],
        token_symbol=token[1],
        reward_name=None if reward is None else "PeerGrid Energy Reward",
        reward_rate=rate,
        reward_cap=cap,
    )
    minted = 0
    accounts = [(p.id, p.deposit) for p in site.participants]
    accounts += [(GRID, grid_reserve), (COMMUNITY, community_reserve)]
    for label, deposit in accounts:
        account = derive_account(label)
        client.fund_eth(account.address, 10**18)
        if deposit + wallet_extra:
            client.mint(account.address, deposit + wallet_extra)
            minted += deposit + wallet_extra
        if deposit:
            client.deposit(account, deposit)
    return minted


def account_of(site: SiteConfig, participant: str) -> str:
    """The chain address of a participant (or of GRID / COMMUNITY).

    ``account = "derive"`` uses :func:`adapters.chain.client.derive_account` (demo and test
    keys: anyone who knows the name knows the key).
    """
    if participant in {GRID, COMMUNITY}:
        return str(derive_account(participant).address)
    account = site.participant(participant).account
    if account == "derive":
        return str(derive_account(participant).address)
    return account


@dataclass(eq=False)
class ChainSettler:
    """Sends :class:`SettlementBatch` es through a :class:`ChainClient` (exactly once)."""

    client: ChainClient
    accounts: Mapping[ParticipantId, str]
    receipts: list[SettlementReceipt] = field(default_factory=list)

    def escrow(self, participant: str) -> int | None:
        """Escrow a participant can still be charged [token base units] (the credit check).

        The contract's ``available``: escrow less any withdrawal it has asked for.
        """
        address = self.accounts.get(ParticipantId(participant))
        return None if address is None else int(self.client.available_credit(address))

    def submit(self, batch: SettlementBatch) -> ChainOutcome:
        """Settle ``batch`` on-chain; an interval already settled is reported, not resent."""
        transfers = [(self.accounts[p], int(a)) for p, a in batch.amounts]
        rewards = (
            [(self.accounts[p], int(wh)) for p, wh in batch.rewards_wh]
            if self.client.reward_token is not None
            else []
        )
        receipt = self.client.submit_settlement(
            batch.interval.interval_id,
            bytes.fromhex(batch.batch_id),
            transfers,
            batch.trades_root,
            batch.readings_root,
            rewards=rewards,
        )
        self.receipts.append(receipt)
        return ChainOutcome(
            tx_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            gas_used=receipt.gas_used,
            status=str(receipt.status),
        )


def participant_accounts(site: SiteConfig) -> dict[ParticipantId, str]:
    """Addresses of every participant plus GRID and COMMUNITY."""
    accounts = {p.id: account_of(site, p.id) for p in site.participants}
    accounts[GRID] = account_of(site, GRID)
    accounts[COMMUNITY] = account_of(site, COMMUNITY)
    return accounts


def describe(site: SiteConfig) -> dict[str, Any]:
    """A short JSON summary of a site (for ``peergrid site check``)."""
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

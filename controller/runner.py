"""``peergrid run --site FILE``: the real-time controller of one site.

Wires the site (grid, Modbus devices, chain, database), resolves settlement intents left by a
previous run (asking the chain first), then ticks at every interval boundary through
:mod:`controller.scheduler` until interrupted. One instance per site: a lock file next to the
database refuses a second one.

Chain backends: ``embedded`` deploys fresh contracts on an in-process chain at start and funds
every escrow from the site file (its state is lost at exit, and GRID, COMMUNITY and ``derive``
accounts use demo keys: for trials only). ``anvil`` and ``rpc`` are the on-chain settlement issue's
connect to a persistent chain: ``anvil`` (started by PeerGrid with ``state_path``) or any
``rpc`` URL; the contracts are attached from the site file (deploy them with ``peergrid chain
deploy``), the operator key comes from the environment, and the operator's nonce is kept in
the database so a restart neither reuses nor skips one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from adapters.chain.backends import connect
from adapters.chain.client import ChainClient, Signer, account_from_key, derive_account
from controller.config import ConfigError, SiteConfig
from controller.cycle import Cycle, TickReport
from controller.scheduler import AlreadyRunning, run_forever, run_tick, single_instance
from controller.store import Store
from controller.wiring import (
    ChainSettler,
    base_grid_factory,
    build_devices,
    fund_trial_chain,
    load_site_grid,
    participant_accounts,
)
from market.domain import Interval

log = logging.getLogger("peergrid.run")


def _lock_path(site: SiteConfig) -> Path:
    """One lock per database: next to a SQLite file, else in the user's runtime folder."""
    if site.database.startswith("sqlite:///"):
        return Path(site.database.removeprefix("sqlite:///") + ".lock").resolve()
    digest = hashlib.sha256(site.database.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"peergrid-{digest}.lock"


def _summary(report: TickReport) -> str:
    parts = [f"{report.boundary:%Y-%m-%dT%H:%MZ}: {report.readings_ok} readings ok"]
    if report.readings_missing:
        parts.append(f"missing {len(report.readings_missing)}")
    if report.cleared is not None:
        r = report.cleared.result
        parts.append(f"cleared {r.interval.label()} {r.status.value} ({r.reason})")
    for s in report.settlements:
        parts.append(
            f"settled {s.interval.label()} tx {s.outcome.tx_hash}"
            if s.outcome
            else f"settlement of {s.interval.label()} pending: {s.error}"
        )
    return "; ".join(parts)


COMMUNITY_RESERVE = 100_000_000
"""Escrow the operator deposits for the community account (it pays the market's losses)."""
GRID_RESERVE = 1_000_000_000
"""Escrow of the upstream supplier's account on the embedded chain (it pays for exports)."""


def fund_embedded(site: SiteConfig, client: ChainClient) -> int:
    """Deploy on the embedded chain and fund every account's escrow (trial mode).

    The embedded chain lives in this process only: a real site runs on a persistent chain
    (anvil or RPC) where participants fund their own escrow. Returns the minted supply.
    """
    return fund_trial_chain(
        site, client, grid_reserve=GRID_RESERVE, community_reserve=COMMUNITY_RESERVE
    )


def _operator(site: SiteConfig) -> Signer:
    """The operator's signing account: a demo key on the embedded chain, else from the env."""
    if site.chain.backend == "embedded":
        return derive_account("operator")
    key = os.environ.get(site.chain.operator_key_env, "")
    if not key:
        msg = (
            f"chain: set {site.chain.operator_key_env} to the operator's private key "
            f"for backend {site.chain.backend!r}"
        )
        raise ConfigError(msg)
    return account_from_key(key)


def run_site(site: SiteConfig, *, once: bool = False) -> int:
    """Run ``site`` in real time (or one boundary with ``once``); returns an exit code."""
    if site.chain.backend != "embedded" and not (
        site.chain.token_address and site.chain.settlement_address
    ):
        msg = (
            f"chain: backend {site.chain.backend!r} needs token_address and "
            "settlement_address (deploy them with 'peergrid chain deploy')"
        )
        raise ConfigError(msg)
    grid = load_site_grid(site)
    operator = _operator(site)
    try:
        with single_instance(_lock_path(site)):
            store = Store(site.database)
            devices = build_devices(site)
            connection = connect(
                site.chain.backend,
                rpc_url=site.chain.rpc_url or None,
                state_path=site.chain.state_path or None,
            )
            try:
                client = ChainClient(
                    connection.w3,
                    operator,
                    confirmations=site.chain.confirmations,
                    on_nonce=store.save_next_nonce,
                )
                if site.chain.backend == "embedded":
                    fund_embedded(site, client)
                else:
                    client.attach(site.chain.token_address, site.chain.settlement_address)
                    client.reconcile_nonce(store.load_next_nonce(str(operator.address)))
                cycle = Cycle(
                    site=site,
                    store=store,
                    base_grid_for=base_grid_factory(site, grid),
                    readers=devices.readers,
                    writers=devices.writers,
                    settler=ChainSettler(client, participant_accounts(site)),
                )
                if once:
                    boundary = Interval.containing(datetime.now(UTC), site.interval_s).start
                    report = run_tick(cycle, boundary)
                    print(_summary(report) if report else "this boundary already ran")  # noqa: T201
                    return 0
                run_forever(cycle, lambda r: print(_summary(r), flush=True))  # noqa: T201
                return 0
            finally:
                devices.close()
                connection.close()
                store.close()
    except AlreadyRunning as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message is the whole story
        return 1

"""Helpers shared by the chain adapter's tests (``conftest.py`` holds the fixtures).

``deploy_stack`` deploys the payment token, the reward token and the settlement contract on any
chain and funds a few participants with escrow. ``make_batch`` builds the kernel's
``SettlementBatch`` that ``ChainClient.submit_settlement`` takes, with the addresses themselves
as participant ids.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3

from adapters.chain import ChainClient, derive_account
from market.domain import Interval, ParticipantId, SettlementBatch
from market.units import TokenUnits, Wh

TOKEN = 10**6
"""One token in base units (6 decimals)."""

MINTED_PER_PARTICIPANT = 1_000 * TOKEN
DEPOSITED_PER_PARTICIPANT = 400 * TOKEN
PARTICIPANTS = ("alice", "bob", "carol", "dave", "erin", "frank")
REWARD_RATE = 1_000_000  # reward base units per kWh: 1 PGR per kWh
REWARD_CAP = 50 * 1_000_000  # 50 PGR per interval


@dataclass
class Deployed:
    """A chain with PaymentToken, RewardToken and Settlement deployed by ``operator``."""

    w3: Web3
    client: ChainClient
    operator: LocalAccount
    participants: dict[str, LocalAccount]
    token_address: str
    reward_address: str
    settlement_address: str
    minted: int
    intervals: Iterator[int]

    def next_interval(self) -> int:
        """A fresh interval id (Unix seconds, 15-minute aligned) for this module's chain."""
        return next(self.intervals)

    def addresses(self) -> list[str]:
        return [p.address for p in self.participants.values()]


def deploy_stack(
    w3: Web3,
    *,
    client: ChainClient | None = None,
    participants: tuple[str, ...] = PARTICIPANTS,
    withdrawal_delay_s: int = 0,
    eth_per_account: int = 10**19,
) -> Deployed:
    """Deploy the three contracts, fund and deposit for ``participants``."""
    operator = derive_account("operator")
    client = client or ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**21)
    deployment = client.deploy_all(
        token_name="PeerGrid Test Token",
        token_symbol="PGT",
        reward_name="PeerGrid Test Reward",
        reward_symbol="PGTR",
        withdrawal_delay_s=withdrawal_delay_s,
        reward_rate=REWARD_RATE,
        reward_cap=REWARD_CAP,
    )
    accounts = {name: derive_account(name) for name in participants}
    for account in accounts.values():
        client.fund_eth(account.address, eth_per_account)
        client.mint(account.address, MINTED_PER_PARTICIPANT)
        client.deposit(account, DEPOSITED_PER_PARTICIPANT)
    return Deployed(
        w3=w3,
        client=client,
        operator=operator,
        participants=accounts,
        token_address=deployment.token,
        reward_address=deployment.reward_token,
        settlement_address=deployment.settlement,
        minted=MINTED_PER_PARTICIPANT * len(accounts),
        intervals=itertools.count(1_782_000_000, 900),
    )


def digest(label: str) -> bytes:
    """A 32-byte hash of ``label`` (for roots and ids)."""
    return hashlib.sha256(label.encode()).digest()


def make_batch(
    interval_id: int,
    transfers: Sequence[tuple[str, int]] = (),
    *,
    rewards: Sequence[tuple[str, int]] = (),
    trades_root: bytes | None = None,
    readings_root: bytes | None = None,
    label: str = "batch",
) -> tuple[SettlementBatch, dict[ParticipantId, str]]:
    """A settlement batch and its participant -> address mapping, for ``submit_settlement``.

    Each address is its own participant (so ``a`` and ``a.lower()`` are two participants that
    share one account). The interval is one second long, so any ``interval_id`` is aligned.
    The roots default to hashes of ``label``: batches that differ only in ``label`` have
    different batch ids.
    """
    accounts = {ParticipantId(a): a for a, _ in [*transfers, *rewards]}
    batch = SettlementBatch(
        interval=Interval.from_id(interval_id, 1),
        lines=(),
        amounts=tuple((ParticipantId(a), TokenUnits(v)) for a, v in transfers),
        trades_root=digest(f"{label}:trades") if trades_root is None else trades_root,
        readings_root=digest(f"{label}:readings") if readings_root is None else readings_root,
        import_price=0,
        export_price=0,
        rewards_wh=tuple((ParticipantId(a), Wh(v)) for a, v in rewards),
    )
    return batch, accounts

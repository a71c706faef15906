"""Helpers shared by the chain adapter's tests (``conftest.py`` holds the fixtures).

``deploy_stack`` deploys the payment token, the reward token and the settlement contract on any
chain and funds a few participants with escrow.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3

from adapters.chain.client import ChainClient, derive_account

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

"""Fixtures for the chain adapter: one embedded chain with deployed contracts per test module.

Deploying is cheap (~0.1 s) but funding many participants is not, so the chain is module
scoped. Tests on it must not depend on each other: they use fresh interval ids
(``next_interval``) and compare balances before and after, never absolute values left by
another test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from adapters.chain.client import ChainClient, derive_account, embedded_web3

TOKEN = 10**6
"""One token in base units (6 decimals)."""

MINTED_PER_PARTICIPANT = 1_000 * TOKEN
DEPOSITED_PER_PARTICIPANT = 400 * TOKEN
PARTICIPANTS = ("alice", "bob", "carol", "dave", "erin", "frank")


@dataclass
class Deployed:
    """An embedded chain with PaymentToken and Settlement deployed by ``operator``."""

    w3: Web3
    client: ChainClient
    operator: LocalAccount
    participants: dict[str, LocalAccount]
    token_address: str
    settlement_address: str
    minted: int
    intervals: Iterator[int]

    def next_interval(self) -> int:
        """A fresh interval id (Unix seconds, 15-minute aligned) for this module's chain."""
        return next(self.intervals)

    def tracked_accounts(self) -> list[str]:
        return [self.operator.address, *(p.address for p in self.participants.values())]


@pytest.fixture(scope="module")
def deployed() -> Deployed:
    w3 = embedded_web3()
    operator = derive_account("operator")
    client = ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**21)
    token = client.deploy_token("PeerGrid Test Token", "PGT")
    settlement = client.deploy_settlement(token)
    participants = {name: derive_account(name) for name in PARTICIPANTS}
    for account in participants.values():
        client.fund_eth(account.address, 10**19)
        client.mint(account.address, MINTED_PER_PARTICIPANT)
        client.deposit(account, DEPOSITED_PER_PARTICIPANT)
    return Deployed(
        w3=w3,
        client=client,
        operator=operator,
        participants=participants,
        token_address=token,
        settlement_address=settlement,
        minted=MINTED_PER_PARTICIPANT * len(participants),
        intervals=itertools.count(1_782_000_000, 900),
    )

"""PeerGrid's chain client: one object for deploying, funding, settling and reading.

:class:`ChainClient` takes a :class:`~web3.Web3` from any backend
(:func:`~adapters.chain.backends.connect`: the embedded py-evm chain, an anvil node PeerGrid
starts, or any JSON-RPC URL) and the signing accounts, and composes the parts that do the
work; each of its methods is one line to one of them:

=====================  ==================================  ====================================
attribute              part                                does
=====================  ==================================  ====================================
:attr:`sender`         :class:`~.sender.TxSender`          signs locally, gap-free nonces, fee
                                                           bumps, finality and reorganisations
:attr:`contracts`      :class:`~.deployment.Contracts`     deploys or attaches the contracts
:attr:`reader`         :class:`~.queries.ChainReader`      balances, roles, settled intervals
:attr:`funds`          :class:`~.funds.Funds`              gas money, mint, register, deposit,
                                                           withdraw, claim
:attr:`administration` :class:`~.admin.Administration`     roles, pause, reward and withdrawal
                                                           policy
:attr:`settler`        :class:`~.settlement.Settler`       settles a ``SettlementBatch``
                                                           exactly once
=====================  ==================================  ====================================

Gas limits are explicit (:mod:`adapters.chain.gas`); a reverted transaction raises
:class:`~adapters.chain.errors.TransactionReverted` with the contract's reason. Money is an
``int`` in token base units everywhere (6 decimals, :mod:`market.units`); energy is an
``int`` in Wh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.types import RPCEndpoint

from adapters.chain.admin import Administration
from adapters.chain.deployment import Contracts, Deployment
from adapters.chain.funds import Funds
from adapters.chain.gas import DEFAULT_PRIORITY_FEE_WEI
from adapters.chain.queries import (
    AccountState,
    ChainReader,
    RewardPolicy,
    SettledBatch,
    SettledEvent,
    SettlementLog,
)
from adapters.chain.sender import TxResult, TxSender
from adapters.chain.settlement import SettlementReceipt, Settler
from market.domain import ParticipantId, SettlementBatch
from market.units import TokenUnits


class ChainClient:
    """Deploys, funds and settles PeerGrid's contracts, signing locally.

    Parameters
    ----------
    w3 : Web3
        Connection to the chain (any provider; see :func:`~adapters.chain.backends.connect`).
    operator : LocalAccount
        Signs settlements (needs ``OPERATOR_ROLE``) and registrations.
    admin : LocalAccount or None
        Signs deployments, mints of the payment token it deploys, role changes, pauses and
        policy changes; default ``operator`` (one key for demos and dev chains).
    confirmations : int
        Finality depth [blocks]: blocks on top of a transaction's block before it counts;
        0 returns at the receipt. On the embedded chain blocks are only mined by
        transactions, so keep 0 there.
    timeout_s : float
        Longest wait for one transaction to become final [s].
    poll_s : float
        Interval between polls of the node while waiting [s].
    priority_fee_wei : int
        Tip per gas [wei]; the fee cap is twice the latest base fee plus the tip.
    stuck_after_s : float or None
        Replace a transaction with a fee bump (same nonce) when it has no receipt this long
        after its last broadcast [s]; ``None`` never replaces.
    fee_bump_percent : int
        Fee raise per replacement [%], >= 10.
    max_replacements : int
        Most replacements per transaction.
    on_nonce : callable or None
        ``on_nonce(address, next_nonce)`` after every broadcast or nonce reset, for the
        controller to persist (see :meth:`next_nonce`, :meth:`reconcile_nonce`).

    Notes
    -----
    Each method is one line to the part named in the module docstring; the part documents
    its parameters, units and errors in full.
    """

    def __init__(
        self,
        w3: Web3,
        operator: LocalAccount,
        *,
        admin: LocalAccount | None = None,
        confirmations: int = 0,
        timeout_s: float = 120.0,
        poll_s: float = 0.1,
        priority_fee_wei: int = DEFAULT_PRIORITY_FEE_WEI,
        stuck_after_s: float | None = 60.0,
        fee_bump_percent: int = 25,
        max_replacements: int = 5,
        on_nonce: Callable[[str, int], None] | None = None,
    ) -> None:
        self.w3 = w3
        self.operator = operator
        self.admin = admin if admin is not None else operator
        self.sender = TxSender(
            w3,
            confirmations=confirmations,
            timeout_s=timeout_s,
            poll_s=poll_s,
            priority_fee_wei=priority_fee_wei,
            stuck_after_s=stuck_after_s,
            fee_bump_percent=fee_bump_percent,
            max_replacements=max_replacements,
            on_nonce=on_nonce,
        )
        self.contracts = Contracts(w3, self.sender, operator=operator, admin=self.admin)
        self.reader = ChainReader(self.contracts)
        self.funds = Funds(self.contracts, self.reader)
        self.administration = Administration(self.contracts)
        self.settler = Settler(self.contracts, self.reader, self.funds)

    @property
    def confirmations(self) -> int:
        """The finality depth [blocks]."""
        return self.sender.confirmations

    @property
    def timeout_s(self) -> float:
        """Longest wait for one transaction [s]."""
        return self.sender.timeout_s

    # ------------------------------------------------------------------ settlement

    def submit_settlement(
        self, batch: SettlementBatch, accounts: Mapping[ParticipantId, str]
    ) -> SettlementReceipt:
        """Settle ``batch`` on-chain, exactly once (see :meth:`.settlement.Settler.submit`).

        Parameters
        ----------
        batch : SettlementBatch
            The interval's settlement.
        accounts : mapping of ParticipantId to str
            Chain address of every participant the batch names.

        Returns
        -------
        SettlementReceipt
            Where the interval was settled, by this call or before it.
        """
        return self.settler.submit(batch, accounts)

    # ------------------------------------------------------------------ contracts

    @property
    def token(self) -> Contract:
        """The attached payment token contract."""
        return self.contracts.token

    @property
    def settlement(self) -> Contract:
        """The attached settlement contract."""
        return self.contracts.settlement

    @property
    def reward_token(self) -> Contract | None:
        """The attached reward token contract, or ``None`` if the deployment has none."""
        return self.contracts.reward_token

    def deployment(self) -> Deployment:
        """Addresses of the attached contracts (:meth:`.deployment.Contracts.deployment`)."""
        return self.contracts.deployment()

    def deploy_token(self, name: str, symbol: str) -> ChecksumAddress:
        """Deploy and attach a payment token (:meth:`.deployment.Contracts.deploy_token`)."""
        return self.contracts.deploy_token(name, symbol)

    def deploy_reward_token(self, name: str, symbol: str) -> ChecksumAddress:
        """Deploy a reward token (:meth:`.deployment.Contracts.deploy_reward_token`)."""
        return self.contracts.deploy_reward_token(name, symbol)

    def deploy_settlement(
        self,
        token: str,
        *,
        reward_token: str | None = None,
        withdrawal_delay_s: int = 0,
        reward_rate: int = 0,
        reward_cap: int = 0,
    ) -> ChecksumAddress:
        """Deploy and attach ``Settlement`` (:meth:`.deployment.Contracts.deploy_settlement`)."""
        return self.contracts.deploy_settlement(
            token,
            reward_token=reward_token,
            withdrawal_delay_s=withdrawal_delay_s,
            reward_rate=reward_rate,
            reward_cap=reward_cap,
        )

    def deploy_all(
        self,
        *,
        token_name: str = "PeerGrid Dollar",  # noqa: S107 - a token's name, not a secret
        token_symbol: str = "PGD",  # noqa: S107
        token: str | None = None,
        reward_name: str | None = "PeerGrid Energy Reward",
        reward_symbol: str = "PGR",
        withdrawal_delay_s: int = 0,
        reward_rate: int = 0,
        reward_cap: int = 0,
    ) -> Deployment:
        """Deploy and attach what a site needs (:meth:`.deployment.Contracts.deploy_all`)."""
        return self.contracts.deploy_all(
            token_name=token_name,
            token_symbol=token_symbol,
            token=token,
            reward_name=reward_name,
            reward_symbol=reward_symbol,
            withdrawal_delay_s=withdrawal_delay_s,
            reward_rate=reward_rate,
            reward_cap=reward_cap,
        )

    def attach(self, token_address: str, settlement_address: str) -> None:
        """Use contracts deployed before (:meth:`.deployment.Contracts.attach`)."""
        self.contracts.attach(token_address, settlement_address)

    # ------------------------------------------------------------------ admin

    def grant_operator(self, address: str) -> TxResult:
        """Give ``address`` the operator role (:class:`.admin.Administration`)."""
        return self.administration.grant_operator(address)

    def revoke_operator(self, address: str) -> TxResult:
        """Take the operator role from ``address`` (:class:`.admin.Administration`)."""
        return self.administration.revoke_operator(address)

    def grant_admin(self, address: str) -> TxResult:
        """Give ``address`` the admin role (:class:`.admin.Administration`)."""
        return self.administration.grant_admin(address)

    def revoke_admin(self, address: str) -> TxResult:
        """Take the admin role from ``address`` (:class:`.admin.Administration`)."""
        return self.administration.revoke_admin(address)

    def pause(self) -> TxResult:
        """Stop settlements and deposits (:class:`.admin.Administration`)."""
        return self.administration.pause()

    def unpause(self) -> TxResult:
        """Lift the pause (:class:`.admin.Administration`)."""
        return self.administration.unpause()

    def set_reward_policy(self, rate: int, cap: int) -> TxResult:
        """Set the reward rate [units/kWh] and per-interval cap (:class:`.admin.Administration`)."""
        return self.administration.set_reward_policy(rate, cap)

    def set_withdrawal_delay(self, delay_s: int) -> TxResult:
        """Set the notice a withdrawal takes [s] (:class:`.admin.Administration`)."""
        return self.administration.set_withdrawal_delay(delay_s)

    # ------------------------------------------------------------------ money

    def fund_eth(self, to: str, wei: int) -> TxResult:
        """Send ether [wei] from a dev node's own account (:meth:`.funds.Funds.fund_eth`)."""
        return self.funds.fund_eth(to, wei)

    def mint(self, to: str, amount: int) -> TxResult:
        """Mint payment tokens [token base units] to ``to`` (:meth:`.funds.Funds.mint`)."""
        return self.funds.mint(to, amount)

    def register(self, addresses: Iterable[str]) -> dict[ChecksumAddress, int]:
        """Registry index of every address, registering new ones (:meth:`.funds.Funds.register`)."""
        return self.funds.register(addresses)

    def deposit(self, account: LocalAccount, amount: int) -> TxResult:
        """Move tokens [token base units] into escrow (:meth:`.funds.Funds.deposit`)."""
        return self.funds.deposit(account, amount)

    def deposit_with_permit(
        self, account: LocalAccount, amount: int, *, deadline: int | None = None
    ) -> TxResult:
        """Deposit with an EIP-2612 permit (:meth:`.funds.Funds.deposit_with_permit`)."""
        return self.funds.deposit_with_permit(account, amount, deadline=deadline)

    def deposit_for(self, payer: LocalAccount, amounts: Sequence[tuple[str, int]]) -> TxResult:
        """Fund several escrows from ``payer``'s tokens (:meth:`.funds.Funds.deposit_for`)."""
        return self.funds.deposit_for(payer, amounts)

    def request_withdrawal(self, account: LocalAccount, amount: int) -> TxResult:
        """Ask to withdraw escrow [token base units] (:meth:`.funds.Funds.request_withdrawal`)."""
        return self.funds.request_withdrawal(account, amount)

    def withdraw(self, account: LocalAccount) -> TxResult:
        """Pay a matured withdrawal request to the wallet (:meth:`.funds.Funds.withdraw`)."""
        return self.funds.withdraw(account)

    def claim_rewards(self, account: LocalAccount) -> TxResult:
        """Pay unclaimed rewards to the wallet (:meth:`.funds.Funds.claim_rewards`)."""
        return self.funds.claim_rewards(account)

    # ------------------------------------------------------------------ reads

    def chain_id(self) -> int:
        """The chain id of the node."""
        return self.reader.chain_id()

    def block_number(self) -> int:
        """The node's latest block number."""
        return self.reader.block_number()

    def token_balance(self, address: str) -> TokenUnits:
        """Payment-token wallet balance of ``address`` [token base units]."""
        return self.reader.token_balance(address)

    def total_supply(self) -> TokenUnits:
        """Payment tokens in existence [token base units]."""
        return self.reader.total_supply()

    def escrow_balance(self, address: str) -> TokenUnits:
        """Escrow balance of ``address`` [token base units]."""
        return self.reader.escrow_balance(address)

    def available_credit(self, address: str) -> TokenUnits:
        """Escrow minus pending withdrawal of ``address`` [token base units]."""
        return self.reader.available_credit(address)

    def account_states(
        self, addresses: Iterable[str], *, final: bool = False
    ) -> dict[ChecksumAddress, AccountState]:
        """Registry state of many accounts (:meth:`.queries.ChainReader.account_states`)."""
        return self.reader.account_states(addresses, final=final)

    def total_escrow(self) -> TokenUnits:
        """Sum of all escrow balances [token base units]."""
        return self.reader.total_escrow()

    def unclaimed_rewards(self, address: str) -> int:
        """Rewards held for ``address`` [reward base units]."""
        return self.reader.unclaimed_rewards(address)

    def total_rewards(self) -> int:
        """Sum of all unclaimed rewards [reward base units]."""
        return self.reader.total_rewards()

    def reward_balance(self, address: str) -> int:
        """Reward-token wallet balance of ``address`` [reward base units] (0 without rewards)."""
        return self.reader.reward_balance(address)

    def reward_supply(self) -> int:
        """Reward tokens in existence [reward base units] (0 without rewards)."""
        return self.reader.reward_supply()

    def reward_policy(self) -> RewardPolicy:
        """The reward rate and cap in force."""
        return self.reader.reward_policy()

    def is_operator(self, address: str) -> bool:
        """Whether ``address`` holds the operator role."""
        return self.reader.is_operator(address)

    def is_admin(self, address: str) -> bool:
        """Whether ``address`` holds the admin role."""
        return self.reader.is_admin(address)

    def is_paused(self) -> bool:
        """Whether the settlement contract is paused."""
        return self.reader.is_paused()

    def withdrawal_delay(self) -> int:
        """The notice a withdrawal takes [s]."""
        return self.reader.withdrawal_delay()

    def is_settled(self, interval_id: int) -> bool:
        """Whether the chain (latest block) has settled ``interval_id`` (Unix seconds [s])."""
        return self.reader.is_settled(interval_id)

    def settled_block(self, interval_id: int) -> int:
        """The block that settled ``interval_id`` (0 if unsettled)."""
        return self.reader.settled_block(interval_id)

    def settled_on_chain(self, interval_id: int) -> tuple[int, str]:
        """Where the chain (latest block) has ``interval_id`` settled, to re-check a record.

        Parameters
        ----------
        interval_id : int
            The interval: its start in Unix seconds [s].

        Returns
        -------
        (int, str)
            The settling block and the batch id (64 hex digits, no ``0x``); ``(0, "")`` if
            the interval is not settled (e.g. a reorganisation dropped its settlement).
        """
        block = self.reader.settled_block(interval_id)
        if block == 0:
            return 0, ""
        return block, self.reader.settled_batch(interval_id).batch_id.hex()

    def settled_on_chain_many(self, interval_ids: Iterable[int]) -> dict[int, tuple[int, str]]:
        """:meth:`settled_on_chain` of many intervals in JSON-RPC batches (one request, often).

        Parameters
        ----------
        interval_ids : iterable of int
            The intervals: their starts in Unix seconds [s].

        Returns
        -------
        dict of int to (int, str)
            Per interval, as :meth:`settled_on_chain` answers.
        """
        states = self.reader.settled_states(interval_ids)
        return {i: (b, batch.hex()) if b else (0, "") for i, (b, batch) in states.items()}

    def settled_batch(self, interval_id: int) -> SettledBatch:
        """The batch id and Merkle roots recorded for ``interval_id`` (zeros if unsettled)."""
        return self.reader.settled_batch(interval_id)

    def settled_batches(self, interval_ids: Iterable[int]) -> dict[int, SettledBatch]:
        """Many intervals' batches at once (:meth:`.queries.ChainReader.settled_batches`)."""
        return self.reader.settled_batches(interval_ids)

    def settled_events(
        self,
        from_block: int = 0,
        *,
        to_block: int | None = None,
        interval_id: int | None = None,
    ) -> list[SettledEvent]:
        """Decoded ``Settled`` events (:meth:`.queries.ChainReader.settled_events`)."""
        return self.reader.settled_events(from_block, to_block=to_block, interval_id=interval_id)

    def settled_entries(self, interval_id: int) -> tuple[tuple[ChecksumAddress, int, int], ...]:
        """What was settled per account (:meth:`.queries.ChainReader.settled_entries`)."""
        return self.reader.settled_entries(interval_id)

    def cache_chain_id(self) -> None:
        """Answer web3's chain-id requests from a cache on this connection (for readers).

        web3 asks the node for its chain id before every ``eth_call``; a verify's thousands
        of reads then cost twice the requests. An auditor's connection reads only, and a
        node's chain id does not change under it.
        """
        provider = self.w3.provider
        provider.cache_allowed_requests = True
        provider.cacheable_requests = {RPCEndpoint("eth_chainId")}

    def deployment_block(self) -> int:
        """The settlement contract's first block (:meth:`.queries.ChainReader.deployment_block`)."""
        return self.reader.deployment_block()

    def settlement_log(self, from_block: int = 0, to_block: int | None = None) -> SettlementLog:
        """Every settlement logged in a range (:meth:`.queries.ChainReader.settlement_log`)."""
        return self.reader.settlement_log(from_block, to_block)

    def settled_transfers(self, interval_id: int) -> tuple[tuple[ChecksumAddress, int], ...]:
        """The signed amounts [token base units] settled for ``interval_id``."""
        return self.reader.settled_transfers(interval_id)

    def settled_rewards(self, interval_id: int) -> tuple[tuple[ChecksumAddress, int], ...]:
        """The verified local energy [Wh] rewarded per producer for ``interval_id``."""
        return self.reader.settled_rewards(interval_id)

    def verify_trade(self, interval_id: int, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """Check a trade's Merkle proof on-chain (:meth:`.queries.ChainReader.verify_trade`)."""
        return self.reader.verify_trade(interval_id, leaf, proof)

    def verify_reading(self, interval_id: int, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """Check a reading's Merkle proof on-chain (:meth:`.queries.ChainReader.verify_reading`)."""
        return self.reader.verify_reading(interval_id, leaf, proof)

    # ------------------------------------------------------------------ nonces

    def next_nonce(self, sender: str | None = None) -> int:
        """The nonce the next transaction of ``sender`` (default: the operator) will use."""
        return self.sender.next_nonce(sender or self.operator.address)

    def set_next_nonce(self, nonce: int, sender: str | None = None) -> int:
        """Use ``nonce`` next for ``sender`` (default: the operator).

        See :meth:`.sender.TxSender.set_next_nonce` for the range allowed.
        """
        return self.sender.set_next_nonce(sender or self.operator.address, nonce)

    def reconcile_nonce(self, persisted: int | None, sender: str | None = None) -> int:
        """After a restart: continue at the node's next nonce; returns the nonce in use.

        ``sender`` defaults to the operator; a ``persisted`` nonce that differs is logged
        (:meth:`.sender.TxSender.reconcile_nonce`).
        """
        return self.sender.reconcile_nonce(sender or self.operator.address, persisted)


__all__ = ["ChainClient"]

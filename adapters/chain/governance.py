"""Community governance on-chain: deploy it, hand the contracts over, propose, vote, execute.

A site's governance is five contracts (``adapters/chain/contracts``, new and unaudited):

* ``Membership`` -- one member, one vote, checkpointed by block;
* ``Governor`` -- members propose calls, vote for/against/abstain on them, and anyone queues
  a passed proposal in the timelock and executes it after the delay;
* ``Timelock`` -- snekmate's ``timelock_controller``; after :meth:`Governance.hand_over` it is
  the settlement contract's admin and the owner of the reward token, the membership and the
  registry, and its only proposer and executor is the governor;
* ``Parameters`` -- the registry of governed values the settlement contract does not hold
  (:data:`market.governance.REGISTRY`), checkpointed by block;
* ``Guardian`` -- also an admin of the settlement contract, whose code only pauses it (the
  pauser, i.e. the operator) for ``pause_hours`` at most and lets anyone lift an expired
  pause.

A change is an :class:`Action` (a call the timelock makes); the builders on
:class:`Governance` (:meth:`~Governance.set_parameter`, :meth:`~Governance.reward_policy`,
:meth:`~Governance.admit`, ...) check their arguments here, before any gas is spent. A member
votes with their own transaction (:meth:`~Governance.vote`) or signs an EIP-712 ``Ballot``
(:func:`sign_ballot`) that anyone relays (:meth:`~Governance.vote_by_sig`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_typing import HexStr
from eth_utils.exceptions import ValidationError
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractEvent
from web3.logs import DISCARD
from web3.types import EventData, TxReceipt

from adapters.chain.accounts import checksum_address
from adapters.chain.artifact import Artifact, load_artifact
from adapters.chain.deployment import DEFAULT_ADMIN_ROLE, OPERATOR_ROLE, Contracts
from adapters.chain.errors import ChainError, InvalidArgument
from adapters.chain.gas import (
    GAS_ADMIN,
    GAS_DEPLOY_GOVERNOR,
    GAS_DEPLOY_GUARDIAN,
    GAS_DEPLOY_MEMBERSHIP_BASE,
    GAS_DEPLOY_MEMBERSHIP_PER_MEMBER,
    GAS_DEPLOY_PARAMETERS,
    GAS_DEPLOY_TIMELOCK,
    GAS_GOV_EXECUTE_BASE,
    GAS_GOV_EXECUTE_PER_ACTION,
    GAS_GOV_PROPOSE_BASE,
    GAS_GOV_PROPOSE_PER_ACTION,
    GAS_GOV_QUEUE_BASE,
    GAS_GOV_QUEUE_PER_ACTION,
    GAS_GOV_VOTE,
    GAS_GOV_VOTE_BY_SIG,
)
from adapters.chain.node import call, hex0x, rpc
from adapters.chain.sender import TxResult
from market.errors import InvalidQuantity
from market.governance import REGISTRY, GovernedValues, check_tariff_bounds, check_value

PROPOSER_ROLE: Final = Web3.keccak(text="PROPOSER_ROLE")
EXECUTOR_ROLE: Final = Web3.keccak(text="EXECUTOR_ROLE")
CANCELLER_ROLE: Final = Web3.keccak(text="CANCELLER_ROLE")

MAX_ACTIONS: Final = 8
"""Most calls in one proposal (``Governor.vy``)."""

MAX_DESCRIPTION: Final = 2048
"""Longest proposal description [bytes of UTF-8]."""

MAX_INITIAL_MEMBERS: Final = 1024
"""Most members a ``Membership`` can start with."""

LOG_REORG_DEPTH: Final = 64
"""The governance logs of the newest blocks are read again at each read (a reorganisation
may replace them); older blocks' logs are read once and kept [blocks]."""

BALLOT_TYPES: Final = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Ballot": [
        {"name": "proposalId", "type": "uint256"},
        {"name": "support", "type": "uint8"},
        {"name": "voter", "type": "address"},
    ],
}
"""EIP-712 types of a relayed vote (the governor's domain: ``"PeerGrid Governor"``, ``"1"``)."""


class Support(enum.IntEnum):
    """A vote's choice (OpenZeppelin's numbering)."""

    AGAINST = 0
    FOR = 1
    ABSTAIN = 2


class ProposalState(enum.IntEnum):
    """A proposal's state, as ``Governor.state`` answers it."""

    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    QUEUED = 5
    EXECUTED = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class GovernanceDeployment:
    """Addresses of a site's governance contracts (checksummed)."""

    membership: str
    timelock: str
    governor: str
    parameters: str
    guardian: str

    @classmethod
    def from_json(cls, text: str) -> GovernanceDeployment:
        """The addresses in a JSON object (what ``peergrid gov deploy --out`` writes).

        Raises
        ------
        InvalidArgument
            If ``text`` is not such an object or an address is malformed.
        """
        try:
            data = json.loads(text)
            return cls(**{f.name: checksum_address(data[f.name]) for f in fields(cls)})
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"not a governance file ({type(exc).__name__}: {exc})"
            raise InvalidArgument(msg) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One call the timelock makes when a proposal executes.

    Attributes
    ----------
    target : str
        The contract called.
    payload : bytes
        The ABI-encoded call.
    summary : str
        What it does, in words (for the proposal's description and ``gov status``).
    """

    target: str
    payload: bytes
    summary: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """A proposal as the governor holds it.

    Attributes
    ----------
    proposal_id : int
        Sequential id, from 1.
    proposer : str
        The member who proposed it.
    state : ProposalState
        Now.
    snapshot : int
        Block whose members vote on it.
    vote_end : int
        Unix time [s] the vote closes (votes are taken before it).
    quorum : int
        Votes (for + against + abstain) it needs.
    votes_for, votes_against, votes_abstain : int
        Votes cast.
    eta : int
        Unix time [s] from which it can execute once queued; 0 before.
    targets : tuple[str, ...]
        The contracts it calls.
    payloads : tuple[bytes, ...]
        Its calls, one per target.
    """

    proposal_id: int
    proposer: str
    state: ProposalState
    snapshot: int
    vote_end: int
    quorum: int
    votes_for: int
    votes_against: int
    votes_abstain: int
    eta: int
    targets: tuple[str, ...]
    payloads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParameterValue:
    """A registry value in force at a block.

    Attributes
    ----------
    name : str
        The parameter (:data:`market.governance.REGISTRY`).
    value : int
        Its value, in the parameter's unit.
    since_block : int
        The block that set it.
    """

    name: str
    value: int
    since_block: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CastVote:
    """One member's vote, as the governor logged it (``VoteCast``).

    Attributes
    ----------
    proposal_id : int
        The proposal voted on.
    voter : str
        The member (checksummed), however the vote arrived (own transaction or relayed).
    support : Support
        The choice.
    block_number : int
        The block that recorded it.
    tx_hash : str
        The transaction that recorded it (0x hex).
    """

    proposal_id: int
    voter: str
    support: Support
    block_number: int
    tx_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ParameterChange:
    """One change of a registry value, as the registry logged it (``ParameterChanged``).

    Attributes
    ----------
    name : str
        The parameter (:data:`market.governance.REGISTRY`).
    block_number : int
        The block of the change.
    timestamp_s : int
        That block's time [Unix s].
    old_value : int or None
        The value before, in the parameter's unit; ``None``: it was not set before.
    new_value : int
        The value after, in the parameter's unit.
    proposal_id : int or None
        The executed proposal that made the change (its ``ProposalExecuted`` is in the same
        transaction); ``None``: not a vote (the deployment, or the deployer before the
        hand-over).
    tx_hash : str
        The transaction (0x hex).
    """

    name: str
    block_number: int
    timestamp_s: int
    old_value: int | None
    new_value: int
    proposal_id: int | None
    tx_hash: str


SIGNATURE_BYTES: Final = 65
"""An EIP-712 signature: r, s (32 bytes each) and v."""


def sign_typed(account: LocalAccount, data: Mapping[str, Any]) -> bytes:
    """``account``'s 65-byte signature (r, s, v) of the EIP-712 typed data ``data``."""
    signed = Account.sign_message(encode_typed_data(full_message=dict(data)), account.key)
    return bytes(signed.signature)


def typed_signer(data: Mapping[str, Any], signature: bytes) -> str:
    """Who signed the EIP-712 typed data ``data``: the address recovered (checksummed).

    Raises
    ------
    InvalidArgument
        If ``signature`` is not a 65-byte secp256k1 signature at all (its length, ``v``,
        ``r`` or ``s``, or no key recovers).
    """
    if len(signature) != SIGNATURE_BYTES:
        msg = f"not a valid signature: {len(signature)} bytes, not {SIGNATURE_BYTES}"
        raise InvalidArgument(msg)
    try:
        signer = Account.recover_message(
            encode_typed_data(full_message=dict(data)), signature=signature
        )
    except (ValueError, TypeError, BadSignature, ValidationError) as exc:  # length, v, r, s
        msg = f"not a valid signature: {exc}"
        raise InvalidArgument(msg) from None
    return checksum_address(signer)


def parameter_key(name: str) -> bytes:
    """The registry key of parameter ``name``: ``keccak256`` of the name."""
    return bytes(Web3.keccak(text=name))


def ballot_domain(chain_id: int, governor: str) -> dict[str, Any]:
    """The EIP-712 domain of a ballot: the governor's (``"PeerGrid Governor"``, ``"1"``)."""
    return {
        "name": "PeerGrid Governor",
        "version": "1",
        "chainId": chain_id,
        "verifyingContract": checksum_address(governor),
    }


def ballot_typed_data(
    chain_id: int, governor: str, proposal_id: int, support: Support, voter: str
) -> dict[str, Any]:
    """The EIP-712 ``Ballot`` a member signs to have a vote relayed (wallet JSON form)."""
    return {
        "types": BALLOT_TYPES,
        "primaryType": "Ballot",
        "domain": ballot_domain(chain_id, governor),
        "message": {
            "proposalId": proposal_id,
            "support": int(support),
            "voter": checksum_address(voter),
        },
    }


def sign_ballot(
    account: LocalAccount, chain_id: int, governor: str, proposal_id: int, support: Support
) -> bytes:
    """``account``'s 65-byte ballot signature (r, s, v) for :meth:`Governance.vote_by_sig`."""
    return sign_typed(
        account, ballot_typed_data(chain_id, governor, proposal_id, support, account.address)
    )


def ballot_signer(
    chain_id: int, governor: str, proposal_id: int, support: Support, voter: str, signature: bytes
) -> str:
    """Who signed a ballot: the address recovered from ``signature`` (checksummed).

    It is the voter's vote only if this equals ``voter`` (the governor checks the same).

    Raises
    ------
    InvalidArgument
        If ``signature`` is not a 65-byte secp256k1 signature at all.
    """
    return typed_signer(
        ballot_typed_data(chain_id, governor, proposal_id, support, voter), signature
    )


def registry_reader(contracts: Contracts) -> Callable[[str, int], dict[str, int]]:
    """``(registry, block) -> values by name``: any ``Parameters`` registry, read at a block.

    For an auditor who holds only the records: each record names its registry and block;
    the registry's code is checked against the committed artifact (once per address) and
    its history (``value_at``) answers, so a node without old states does too.

    Raises
    ------
    ChainError
        (when called) If the address does not hold the committed ``Parameters`` code.
    """
    artifact = load_artifact("Parameters")
    checked: dict[str, Contract] = {}

    def values_at(registry: str, block: int) -> dict[str, int]:
        address = checksum_address(registry)
        if address not in checked:
            contract = contracts.w3.eth.contract(address=address, abi=artifact.abi)
            contracts.check_code(contract, artifact)
            checked[address] = contract
        return {n: v.value for n, v in _history_at(checked[address], block, REGISTRY).items()}

    return values_at


def _history_at(registry: Contract, block: int, names: Iterable[str]) -> dict[str, ParameterValue]:
    """The ``names`` set in ``registry`` by the end of ``block``, from its history."""
    values = {}
    for name in names:
        was_set, value, since = call(registry.functions.value_at(parameter_key(name), block))
        if was_set:
            values[name] = ParameterValue(name=name, value=int(value), since_block=int(since))
    return values


class Governance:
    """A site's governance contracts, on the chain of a :class:`Contracts`.

    Parameters
    ----------
    contracts : Contracts
        The site's deployment (its settlement contract attached); its admin signs the
        deployment and the hand-over.
    """

    def __init__(self, contracts: Contracts) -> None:
        self.contracts = contracts
        self.w3 = contracts.w3
        self._artifacts = {
            name: load_artifact(name)
            for name in ("Membership", "Timelock", "Governor", "Parameters", "Guardian")
        }
        self._handles: dict[str, Contract] = {}
        self._setters: dict[tuple[str, int], int | None] = {}
        # logs read once, by (contract, event): the last block read and the logs up to it
        self._logs_read: dict[tuple[str, str], tuple[int, list[EventData]]] = {}
        self._block_times: dict[bytes, int] = {}
        self._executed: dict[str, int | None] = {}

    # -- contracts ---------------------------------------------------------------------------

    def _handle(self, name: str) -> Contract:
        try:
            return self._handles[name]
        except KeyError:
            msg = "no governance contracts: call deploy() or attach() first"
            raise ChainError(msg) from None

    @property
    def membership(self) -> Contract:
        """The ``Membership`` contract."""
        return self._handle("Membership")

    @property
    def timelock(self) -> Contract:
        """The ``Timelock`` contract."""
        return self._handle("Timelock")

    @property
    def governor(self) -> Contract:
        """The ``Governor`` contract."""
        return self._handle("Governor")

    @property
    def parameters(self) -> Contract:
        """The ``Parameters`` registry."""
        return self._handle("Parameters")

    @property
    def guardian(self) -> Contract:
        """The ``Guardian`` contract."""
        return self._handle("Guardian")

    def deployment(self) -> GovernanceDeployment:
        """The governance contracts' addresses."""
        return GovernanceDeployment(
            membership=self.membership.address,
            timelock=self.timelock.address,
            governor=self.governor.address,
            parameters=self.parameters.address,
            guardian=self.guardian.address,
        )

    def deploy(
        self,
        *,
        members: Sequence[str],
        parameters: Mapping[str, int],
        delay_s: int,
        voting_period_s: int,
        quorum_bps: int,
        pause_hours: int,
        pauser: str | None = None,
    ) -> GovernanceDeployment:
        """Deploy the five contracts, owned by the admin until :meth:`hand_over`.

        Parameters
        ----------
        members : Sequence[str]
            The initial members (the site's participants' addresses), no duplicates.
        parameters : Mapping[str, int]
            The registry's first values (the site file's), by name.
        delay_s : int
            The timelock's delay between a vote passing and its execution [s].
        voting_period_s : int
            How long a vote stays open [s] (60 s to 60 days).
        quorum_bps : int
            Quorum in basis points of the members at a proposal's snapshot (1-10,000).
        pause_hours : int
            Longest emergency pause [h] (1-336).
        pauser : str or None
            Who may pause; the operator by default.

        Returns
        -------
        GovernanceDeployment
            The addresses.

        Raises
        ------
        InvalidArgument
            If a value is out of range (checked before anything is sent).
        """
        member_addresses = [checksum_address(m) for m in members]
        if len(set(member_addresses)) != len(member_addresses):
            msg = "the initial members hold a duplicate address"
            raise InvalidArgument(msg)
        if not 0 < len(member_addresses) <= MAX_INITIAL_MEMBERS:
            msg = f"a community starts with 1 to {MAX_INITIAL_MEMBERS} members"
            raise InvalidArgument(msg)
        values = _checked_parameters(parameters)
        _check_range("voting period [s]", voting_period_s, 60, 60 * 86_400)
        _check_range("quorum [bps]", quorum_bps, 1, 10_000)
        _check_range("pause [h]", pause_hours, 1, 336)
        _check_range("delay [s]", delay_s, 0, 2**64)
        admin = self.contracts.admin.address
        settlement = self.contracts.settlement.address
        membership = self._deploy(
            "Membership",
            ["address[]"],
            [member_addresses],
            GAS_DEPLOY_MEMBERSHIP_BASE + GAS_DEPLOY_MEMBERSHIP_PER_MEMBER * len(member_addresses),
        )
        timelock = self._deploy(
            "Timelock",
            ["uint256", "address[]", "address[]", "address"],
            [delay_s, [], [], admin],
            GAS_DEPLOY_TIMELOCK,
        )
        self._deploy(
            "Governor",
            ["address", "address", "uint256", "uint256"],
            [membership.address, timelock.address, voting_period_s, quorum_bps],
            GAS_DEPLOY_GOVERNOR,
        )
        self._deploy(
            "Parameters",
            ["bytes32[]", "uint256[]"],
            [[parameter_key(n) for n in values], list(values.values())],
            GAS_DEPLOY_PARAMETERS,
        )
        self._deploy(
            "Guardian",
            ["address", "address", "address", "uint256"],
            [
                settlement,
                timelock.address,
                checksum_address(pauser or self.contracts.operator.address),
                pause_hours,
            ],
            GAS_DEPLOY_GUARDIAN,
        )
        return self.deployment()

    def attach(self, deployment: GovernanceDeployment) -> None:
        """Use governance contracts deployed before, after checking their code is ours.

        Raises
        ------
        ChainError
            If an address holds other code, the governor names another membership or
            timelock than ``deployment``, or the contracts govern another settlement.
        """
        addresses = {
            "Membership": deployment.membership,
            "Timelock": deployment.timelock,
            "Governor": deployment.governor,
            "Parameters": deployment.parameters,
            "Guardian": deployment.guardian,
        }
        handles = {}
        for name, address in addresses.items():
            contract = self.w3.eth.contract(
                address=checksum_address(address), abi=self._artifacts[name].abi
            )
            self.contracts.check_code(contract, self._artifacts[name])
            handles[name] = contract
        governor = handles["Governor"].functions
        if (call(governor.membership()), call(governor.timelock())) != (
            handles["Membership"].address,
            handles["Timelock"].address,
        ):
            msg = f"governor {deployment.governor} belongs to another membership or timelock"
            raise ChainError(msg)
        guarded = call(handles["Guardian"].functions.settlement())
        if guarded != self.contracts.settlement.address:
            msg = (
                f"these governance contracts govern settlement {guarded}, "
                f"not this site's {self.contracts.settlement.address}"
            )
            raise ChainError(msg)
        self._handles = handles

    def hand_over(self) -> list[TxResult]:
        """Give the community the keys: after this only an executed vote changes the rules.

        In order, signed by the admin:

        1. the timelock makes the governor its proposer, canceller and executor;
        2. the settlement contract makes the timelock and the guardian admins;
        3. the reward token, the membership and the registry pass to the timelock;
        4. the admin renounces its admin roles on the settlement contract and the timelock.

        The operator keeps its operator role (it settles) and, through the guardian, the
        expiring pause. Each step is one transaction; a failure stops the sequence where it
        is and raises, and calling ``hand_over`` again goes on from there (steps already
        done are skipped).

        Returns
        -------
        list[TxResult]
            The transactions sent.
        """
        admin = self.contracts.admin.address
        timelock = self.timelock.address
        governor = self.governor.address
        settlement = self.contracts.settlement
        results: list[TxResult] = []

        def grant(contract: Contract, role: bytes, to: str) -> None:
            if not call(contract.functions.hasRole(role, to)):
                results.append(self._admin_send(contract, "grantRole", [role, to]))

        def transfer(contract: Contract) -> None:
            owner = call(contract.functions.owner())
            if owner == admin:
                results.append(self._admin_send(contract, "transfer_ownership", [timelock]))
            elif owner != timelock:
                msg = f"{contract.address} is owned by {owner}, neither the admin nor the timelock"
                raise ChainError(msg)

        for role in (PROPOSER_ROLE, CANCELLER_ROLE, EXECUTOR_ROLE):
            grant(self.timelock, role, governor)
        grant(settlement, DEFAULT_ADMIN_ROLE, timelock)
        grant(settlement, DEFAULT_ADMIN_ROLE, self.guardian.address)
        reward = self.contracts.reward_token
        if reward is not None:
            transfer(reward)
        transfer(self.membership)
        transfer(self.parameters)
        for contract in (settlement, self.timelock):
            if call(contract.functions.hasRole(DEFAULT_ADMIN_ROLE, admin)):
                results.append(
                    self._admin_send(contract, "renounceRole", [DEFAULT_ADMIN_ROLE, admin])
                )
        return results

    def handed_over(self) -> bool:
        """Whether :meth:`hand_over` is complete (read from the contracts)."""
        admin = self.contracts.admin.address
        timelock = self.timelock.address
        settlement = self.contracts.settlement
        owned = [self.membership, self.parameters]
        if self.contracts.reward_token is not None:
            owned.append(self.contracts.reward_token)
        return (
            all(call(c.functions.owner()) == timelock for c in owned)
            and call(settlement.functions.hasRole(DEFAULT_ADMIN_ROLE, timelock))
            and not call(settlement.functions.hasRole(DEFAULT_ADMIN_ROLE, admin))
            and not call(self.timelock.functions.hasRole(DEFAULT_ADMIN_ROLE, admin))
            and call(self.timelock.functions.hasRole(EXECUTOR_ROLE, self.governor.address))
        )

    # -- actions -----------------------------------------------------------------------------

    def set_parameter(self, name: str, value: int) -> Action:
        """Set registry parameter ``name`` (:data:`market.governance.REGISTRY`) to ``value``."""
        try:
            check_value(name, value)
        except InvalidQuantity as exc:
            raise InvalidArgument(str(exc)) from exc
        unit = REGISTRY[name].unit
        return self._action(
            self.parameters, "set_value", [parameter_key(name), value], f"{name} = {value} {unit}"
        )

    def reward_policy(self, rate: int, cap: int) -> Action:
        """Set the reward rate [reward base units per kWh] and cap [per interval]."""
        _check_range("reward rate", rate, 0, 2**128)
        _check_range("reward cap", cap, 0, 2**64)
        return self._action(
            self.contracts.settlement,
            "set_reward_policy",
            [rate, cap],
            f"reward rate = {rate} per kWh, cap = {cap} per interval",
        )

    def withdrawal_delay(self, delay_s: int) -> Action:
        """Set the notice a withdrawal takes [s]."""
        _check_range("withdrawal delay [s]", delay_s, 0, 2**64)
        return self._action(
            self.contracts.settlement,
            "set_withdrawal_delay",
            [delay_s],
            f"withdrawal delay = {delay_s} s",
        )

    def admit(self, member: str) -> Action:
        """Admit ``member`` to the community."""
        address = checksum_address(member)
        return self._action(self.membership, "admit", [address], f"admit {address}")

    def remove(self, member: str) -> Action:
        """Remove ``member`` from the community."""
        address = checksum_address(member)
        return self._action(self.membership, "remove", [address], f"remove {address}")

    def voting_period(self, seconds: int) -> Action:
        """Set how long a vote stays open [s] (60 s to 60 days)."""
        _check_range("voting period [s]", seconds, 60, 60 * 86_400)
        return self._action(
            self.governor, "set_voting_period", [seconds], f"voting period = {seconds} s"
        )

    def quorum(self, bps: int) -> Action:
        """Set the quorum [basis points of the members at a snapshot] (1-10,000)."""
        _check_range("quorum [bps]", bps, 1, 10_000)
        return self._action(self.governor, "set_quorum_bps", [bps], f"quorum = {bps} bps")

    def delay(self, seconds: int) -> Action:
        """Set the timelock's delay between a passed vote and its execution [s]."""
        _check_range("delay [s]", seconds, 0, 2**64)
        return self._action(self.timelock, "update_delay", [seconds], f"delay = {seconds} s")

    def pause_hours(self, hours: int) -> Action:
        """Set the longest emergency pause [h] (1-336)."""
        _check_range("pause [h]", hours, 1, 336)
        return self._action(self.guardian, "set_pause_hours", [hours], f"longest pause = {hours} h")

    def pauser(self, address: str) -> Action:
        """Appoint who may pause the settlement contract."""
        who = checksum_address(address)
        return self._action(self.guardian, "set_pauser", [who], f"pauser = {who}")

    def operator(self, address: str, *, grant: bool) -> Action:
        """Grant or revoke the settlement contract's operator role."""
        who = checksum_address(address)
        fn = "grantRole" if grant else "revokeRole"
        verb = "grant" if grant else "revoke"
        return self._action(
            self.contracts.settlement, fn, [OPERATOR_ROLE, who], f"{verb} operator role: {who}"
        )

    # -- transactions ------------------------------------------------------------------------

    def propose(
        self, member: LocalAccount, actions: Sequence[Action], description: str
    ) -> tuple[int, TxResult]:
        """Propose ``actions`` (1 to :data:`MAX_ACTIONS`); ``member`` must be a member now.

        Returns
        -------
        tuple[int, TxResult]
            The new proposal's id and the transaction.

        Raises
        ------
        InvalidArgument
            If there are no actions or too many, or the description is too long.
        TransactionReverted
            If the chain refuses (``governor: not a member``).
        """
        if not 0 < len(actions) <= MAX_ACTIONS:
            msg = f"a proposal makes 1 to {MAX_ACTIONS} calls, not {len(actions)}"
            raise InvalidArgument(msg)
        if len(description.encode()) > MAX_DESCRIPTION:
            msg = f"the description is longer than {MAX_DESCRIPTION} bytes"
            raise InvalidArgument(msg)
        _check_tariffs_in(actions, self.parameters)
        payload_bytes = sum(len(a.payload) for a in actions)
        data = self.governor.encode_abi(
            "propose",
            args=[[a.target for a in actions], [a.payload for a in actions], description],
        )
        gas = (
            GAS_GOV_PROPOSE_BASE
            + GAS_GOV_PROPOSE_PER_ACTION * len(actions)
            + 700 * (payload_bytes + len(description.encode())) // 32
        )
        receipt, result = self._send(member, self.governor, data, gas)
        events = self.governor.events.ProposalCreated().process_receipt(receipt)
        if len(events) != 1:
            msg = f"proposal transaction {result.tx_hash} logged {len(events)} proposals"
            raise ChainError(msg)
        return int(events[0]["args"]["proposal_id"]), result

    def vote(self, member: LocalAccount, proposal_id: int, support: Support) -> TxResult:
        """Cast ``member``'s vote (a member at the proposal's snapshot, once)."""
        data = self.governor.encode_abi("cast_vote", args=[proposal_id, int(support)])
        return self._send(member, self.governor, data, GAS_GOV_VOTE)[1]

    def vote_by_sig(
        self,
        relayer: LocalAccount,
        proposal_id: int,
        support: Support,
        voter: str,
        signature: bytes,
    ) -> TxResult:
        """Relay ``voter``'s signed ballot (:func:`sign_ballot`); ``relayer`` pays the gas."""
        if len(signature) != 65:
            msg = f"a ballot signature has 65 bytes, not {len(signature)}"
            raise InvalidArgument(msg)
        data = self.governor.encode_abi(
            "cast_vote_by_sig",
            args=[proposal_id, int(support), checksum_address(voter), signature],
        )
        return self._send(relayer, self.governor, data, GAS_GOV_VOTE_BY_SIG)[1]

    def queue(self, account: LocalAccount, proposal_id: int) -> TxResult:
        """Queue a passed proposal in the timelock (anyone may)."""
        n = self._action_count(proposal_id)
        data = self.governor.encode_abi("queue", args=[proposal_id])
        gas = GAS_GOV_QUEUE_BASE + GAS_GOV_QUEUE_PER_ACTION * n
        return self._send(account, self.governor, data, gas)[1]

    def execute(self, account: LocalAccount, proposal_id: int) -> TxResult:
        """Execute a queued proposal whose delay has run out (anyone may)."""
        n = self._action_count(proposal_id)
        data = self.governor.encode_abi("execute", args=[proposal_id])
        gas = GAS_GOV_EXECUTE_BASE + GAS_GOV_EXECUTE_PER_ACTION * n
        return self._send(account, self.governor, data, gas)[1]

    def cancel(self, member: LocalAccount, proposal_id: int) -> TxResult:
        """Withdraw ``member``'s own proposal while its vote is open."""
        data = self.governor.encode_abi("cancel", args=[proposal_id])
        return self._send(member, self.governor, data, GAS_ADMIN)[1]

    def pause(self, pauser: LocalAccount) -> TxResult:
        """Pause settlements and deposits for the governed number of hours (pauser only)."""
        data = self.guardian.encode_abi("pause", args=[])
        return self._send(pauser, self.guardian, data, GAS_ADMIN)[1]

    def lift_if_expired(self, account: LocalAccount) -> bool:
        """Lift the guardian's pause if it has expired (one read when it has not).

        Returns
        -------
        bool
            Whether a pause was lifted.
        """
        if not call(self.guardian.functions.expired()):
            return False
        self.lift_pause(account)
        return True

    def lift_pause(self, account: LocalAccount) -> TxResult:
        """Lift the guardian's pause once it has expired (anyone may)."""
        data = self.guardian.encode_abi("lift", args=[])
        return self._send(account, self.guardian, data, GAS_ADMIN)[1]

    # -- reads -------------------------------------------------------------------------------

    def proposal_count(self) -> int:
        """How many proposals were made."""
        return int(call(self.governor.functions.proposal_count()))

    def proposal(self, proposal_id: int) -> Proposal:
        """Proposal ``proposal_id`` now.

        Raises
        ------
        TransactionReverted
            If there is no such proposal (``governor: unknown proposal``).
        """
        fns = self.governor.functions
        state = ProposalState(call(fns.state(proposal_id)))
        p = call(fns.proposals(proposal_id))
        targets, payloads = call(fns.actions(proposal_id))
        return Proposal(
            proposal_id=proposal_id,
            proposer=p[0],
            state=state,
            snapshot=p[1],
            vote_end=p[2],
            quorum=p[3],
            votes_against=p[4],
            votes_for=p[5],
            votes_abstain=p[6],
            eta=p[7],
            targets=tuple(targets),
            payloads=tuple(bytes(x) for x in payloads),
        )

    def ballot(self, proposal_id: int, voter: str) -> Support | None:
        """How ``voter`` voted on the proposal; ``None`` if they have not."""
        code = int(call(self.governor.functions.ballot(proposal_id, checksum_address(voter))))
        return None if code == 0 else Support(code - 1)

    def is_member(self, address: str) -> bool:
        """Whether ``address`` is a member now."""
        return bool(call(self.membership.functions.is_member(checksum_address(address))))

    def member_count(self) -> int:
        """How many members the community has now."""
        return int(call(self.membership.functions.member_count()))

    def parameter(self, name: str) -> int | None:
        """Registry parameter ``name`` now; ``None`` if it was never set."""
        fns = self.parameters.functions
        key = parameter_key(name)
        if not call(fns.is_set(key)):
            return None
        return int(call(fns.get(key)))

    def parameters_at(
        self, block: int, names: Iterable[str] = tuple(REGISTRY)
    ) -> dict[str, ParameterValue]:
        """The registry values in force at the end of ``block`` (a mined block), by name.

        Read from the registry's own history (``value_at``), so a node that keeps no old
        state answers too. Parameters never set by then are left out.
        """
        return _history_at(self.parameters, block, names)

    def descriptions(self) -> dict[int, str]:
        """Every proposal's description by id, from the governor's ``ProposalCreated`` logs."""
        logs = self._event_logs(self.governor.events.ProposalCreated())
        return {int(log["args"]["proposal_id"]): str(log["args"]["description"]) for log in logs}

    def cast_votes(self, proposal_id: int | None = None) -> tuple[CastVote, ...]:
        """The votes cast, oldest first, from the governor's ``VoteCast`` logs.

        Parameters
        ----------
        proposal_id : int or None
            Only the votes on this proposal; ``None``: on every proposal.
        """
        logs = self._event_logs(self.governor.events.VoteCast())
        return tuple(
            CastVote(
                proposal_id=int(log["args"]["proposal_id"]),
                voter=checksum_address(log["args"]["voter"]),
                support=Support(int(log["args"]["support"])),
                block_number=int(log["blockNumber"]),
                tx_hash=hex0x(log["transactionHash"]),
            )
            for log in logs
            if proposal_id is None or int(log["args"]["proposal_id"]) == proposal_id
        )

    def parameter_history(
        self, names: Iterable[str] = tuple(REGISTRY)
    ) -> tuple[ParameterChange, ...]:
        """Every change of the registry's ``names``, oldest first, with the proposal of each.

        Read from the registry's ``ParameterChanged`` logs (the deployment's first values
        included); each change's proposal is the governor's ``ProposalExecuted`` in the same
        transaction, its time the block's.

        Parameters
        ----------
        names : Iterable[str]
            The parameters (:data:`market.governance.REGISTRY`); keys of other names are
            left out.
        """
        keys = {parameter_key(n): n for n in names}
        changes = []
        for log in self._event_logs(self.parameters.events.ParameterChanged()):
            name = keys.get(bytes(log["args"]["key"]))
            if name is None:
                continue
            tx_hash = hex0x(log["transactionHash"])
            changes.append(
                ParameterChange(
                    name=name,
                    block_number=int(log["blockNumber"]),
                    timestamp_s=self._block_time(bytes(log["blockHash"])),
                    old_value=int(log["args"]["old_value"]) if log["args"]["was_set"] else None,
                    new_value=int(log["args"]["new_value"]),
                    proposal_id=self._executed_in(tx_hash),
                    tx_hash=tx_hash,
                )
            )
        return tuple(changes)

    def summarize(self, target: str, payload: bytes) -> str:
        """A proposal's call in the words its builder gives it, with units.

        ``community_fee_bps = 100 bps of the buyer amount``, ``reward rate = 1500000 per
        kWh, cap = 50000000 per interval``, ``admit 0x...``: the call is decoded and the
        builder that makes such a call (:meth:`set_parameter`, :meth:`reward_policy`, ...)
        words it. A call no builder makes, or with arguments a builder refuses, is worded
        by :meth:`describe`.
        """
        names = {parameter_key(n): n for n in REGISTRY}
        builders: dict[tuple[str, str], Callable[..., Action]] = {
            (self.parameters.address, "set_value"): lambda key, value: self.set_parameter(
                names[bytes(key)], value
            ),
            (self.contracts.settlement.address, "set_reward_policy"): self.reward_policy,
            (self.contracts.settlement.address, "set_withdrawal_delay"): self.withdrawal_delay,
            (self.membership.address, "admit"): self.admit,
            (self.membership.address, "remove"): self.remove,
            (self.governor.address, "set_voting_period"): self.voting_period,
            (self.governor.address, "set_quorum_bps"): self.quorum,
            (self.timelock.address, "update_delay"): self.delay,
            (self.guardian.address, "set_pause_hours"): self.pause_hours,
            (self.guardian.address, "set_pauser"): self.pauser,
        }
        address = checksum_address(target)
        contract = next((c for c in self._handles.values() if c.address == address), None)
        if address == self.contracts.settlement.address:
            contract = self.contracts.settlement
        if contract is not None:
            try:
                fn, args = contract.decode_function_input(hex0x(payload))
                builder = builders.get((address, fn.fn_name))
                if builder is not None:
                    return builder(*args.values()).summary
            except (ValueError, KeyError, InvalidArgument):
                pass  # not a call a builder makes: in describe()'s words
        return self.describe(target, payload)

    def describe(self, target: str, payload: bytes) -> str:
        """A proposal's call in words (``community_fee_bps = 150``, ``admit 0x...``).

        Calls to a contract of the site's or the community's are decoded with its ABI and
        registry keys are named; anything else is shown as target and selector.
        """
        contracts = [self.contracts.settlement, *self._handles.values()]
        if self.contracts.reward_token is not None:
            contracts.append(self.contracts.reward_token)
        names = {parameter_key(n): n for n in REGISTRY}
        for contract in contracts:
            if contract.address != checksum_address(target):
                continue
            try:
                fn, args = contract.decode_function_input(hex0x(payload))
            except ValueError:
                break
            values = {k: names.get(bytes(v), v) if k == "key" else v for k, v in args.items()}
            if fn.fn_name == "set_value":
                return f"{values['key']} = {values['new_value']}"
            shown = ", ".join(
                f"0x{v.hex()}" if isinstance(v, bytes) else str(v) for v in values.values()
            )
            return f"{fn.fn_name}({shown}) on {contract.address}"
        return f"call 0x{payload[:4].hex()} on {target}"

    def governed_values(self, block: int | None = None) -> GovernedValues:
        """The registry's values at ``block`` with the block and proposal that set each.

        ``None`` reads the latest block's state (``current``, as of that block; an auditor
        later reads the same block from the registry's history, ``value_at``). A past
        ``block`` is read from the history, so a node without old states answers too. A
        value's proposal is found from the
        transaction that set it: the governor's ``ProposalExecuted`` in the same
        transaction; ``None`` for a value set at deployment.
        """
        if block is None:  # the latest block's state, read as of that block
            block = int(rpc(lambda: self.w3.eth.block_number))
            found = {}
            fns = self.parameters.functions
            for name in REGISTRY:
                is_set, value, since = call(
                    fns.current(parameter_key(name)), block_identifier=block
                )
                if is_set:
                    found[name] = ParameterValue(
                        name=name, value=int(value), since_block=int(since)
                    )
        else:
            found = self.parameters_at(block)
        proposals = {
            name: self._proposal_that_set(name, v.since_block) for name, v in found.items()
        }
        return GovernedValues(
            registry=self.parameters.address,
            block=block,
            values={name: v.value for name, v in found.items()},
            since_block={name: v.since_block for name, v in found.items()},
            proposals=proposals,
        )

    def _proposal_that_set(self, name: str, block: int) -> int | None:
        cache = self._setters
        if (name, block) in cache:
            return cache[(name, block)]
        changed = self.parameters.events.ParameterChanged()
        logs = rpc(
            lambda: changed.get_logs(
                from_block=block,
                to_block=block,
                argument_filters={"key": parameter_key(name)},
            )
        )
        proposal = None
        if logs:  # the last change in the block is the value in force
            tx_hash = logs[-1]["transactionHash"]
            receipt = rpc(lambda: self.w3.eth.get_transaction_receipt(tx_hash))
            executed = self.governor.events.ProposalExecuted().process_receipt(
                receipt, errors=DISCARD
            )
            if executed:
                proposal = int(executed[0]["args"]["proposal_id"])
        cache[(name, block)] = proposal
        return proposal

    # -- internals ---------------------------------------------------------------------------

    def _event_logs(self, event: ContractEvent) -> list[EventData]:
        """All of ``event``'s logs, oldest first.

        A node answers a log query in time proportional to the blocks searched (the embedded
        chain: about 5 ms per block), so the logs of blocks more than
        :data:`LOG_REORG_DEPTH` old are read once and kept; newer ones at every call.
        """
        head = int(rpc(lambda: self.w3.eth.block_number))
        key = (event.address, event.event_name)
        done, kept = self._logs_read.get(key, (-1, []))
        stable = head - LOG_REORG_DEPTH
        if stable > done:
            kept = kept + self._get_logs(event, done + 1, stable)
            done = stable
            self._logs_read[key] = (done, kept)
        return kept + self._get_logs(event, done + 1, head) if head > done else kept

    def _get_logs(self, event: ContractEvent, first: int, last: int) -> list[EventData]:
        return rpc(lambda: list(event.get_logs(from_block=first, to_block=last)))

    def _block_time(self, block_hash: bytes) -> int:
        """The time of the block ``block_hash`` [Unix s]."""
        if block_hash not in self._block_times:
            block = rpc(lambda: self.w3.eth.get_block(HexStr(hex0x(block_hash))))
            self._block_times[block_hash] = int(block["timestamp"])
        return self._block_times[block_hash]

    def _executed_in(self, tx_hash: str) -> int | None:
        """The proposal the governor executed in transaction ``tx_hash``; ``None``: none."""
        if tx_hash not in self._executed:
            receipt = rpc(lambda: self.w3.eth.get_transaction_receipt(HexStr(tx_hash)))
            executed = self.governor.events.ProposalExecuted().process_receipt(
                receipt, errors=DISCARD
            )
            self._executed[tx_hash] = int(executed[0]["args"]["proposal_id"]) if executed else None
        return self._executed[tx_hash]

    def _action_count(self, proposal_id: int) -> int:
        call(self.governor.functions.state(proposal_id))  # an unknown id reverts here, gas-free
        targets, _ = call(self.governor.functions.actions(proposal_id))
        return len(targets)

    def _action(self, contract: Contract, fn: str, args: list[Any], summary: str) -> Action:
        data = contract.encode_abi(fn, args=args)
        return Action(target=contract.address, payload=bytes.fromhex(data[2:]), summary=summary)

    def _deploy(self, name: str, types: list[str], args: list[Any], gas: int) -> Contract:
        artifact: Artifact = self._artifacts[name]
        data = HexStr(artifact.bytecode + abi_encode(types, args).hex())
        address = self.contracts.deploy_code(data, gas)
        contract = self.w3.eth.contract(address=address, abi=artifact.abi)
        self._handles[name] = contract
        return contract

    def _admin_send(self, contract: Contract, fn: str, args: list[Any]) -> TxResult:
        data = contract.encode_abi(fn, args=args)
        return self._send(self.contracts.admin, contract, data, GAS_ADMIN)[1]

    def _send(
        self, account: LocalAccount, contract: Contract, data: HexStr, gas: int
    ) -> tuple[TxReceipt, TxResult]:
        return self.contracts.sender.transact(account, contract.address, data, gas)


def _check_range(what: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        msg = f"{what} must be an integer from {low} to {high}, got {value!r}"
        raise InvalidArgument(msg)


def _checked_parameters(parameters: Mapping[str, int]) -> dict[str, int]:
    try:
        values = {name: check_value(name, value) for name, value in parameters.items()}
        check_tariff_bounds(values)
    except InvalidQuantity as exc:
        raise InvalidArgument(str(exc)) from exc
    return values


def _check_tariffs_in(actions: Sequence[Action], registry: Contract) -> None:
    """Refuse a proposal whose tariff bounds would cross, given the registry's values now."""
    decoded: dict[str, int] = {}
    keys = {parameter_key(n): n for n in REGISTRY if "tariff" in n}
    for action in actions:
        if action.target != registry.address:
            continue
        _, args = registry.decode_function_input(hex0x(action.payload))
        name = keys.get(bytes(args["key"]))
        if name is not None:
            decoded[name] = int(args["new_value"])
    if not decoded:
        return
    current = {}
    for name in keys.values():
        key = parameter_key(name)
        if call(registry.functions.is_set(key)):
            current[name] = int(call(registry.functions.get(key)))
    try:
        check_tariff_bounds({**current, **decoded})
    except InvalidQuantity as exc:
        raise InvalidArgument(str(exc)) from exc


__all__ = [
    "BALLOT_TYPES",
    "CANCELLER_ROLE",
    "EXECUTOR_ROLE",
    "MAX_ACTIONS",
    "MAX_DESCRIPTION",
    "PROPOSER_ROLE",
    "Action",
    "CastVote",
    "Governance",
    "GovernanceDeployment",
    "ParameterChange",
    "ParameterValue",
    "Proposal",
    "ProposalState",
    "Support",
    "ballot_domain",
    "ballot_signer",
    "ballot_typed_data",
    "parameter_key",
    "registry_reader",
    "sign_ballot",
]

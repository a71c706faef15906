"""PeerGrid's contracts on one chain: deploy them or attach to them, and hold their handles.

:class:`Contracts` is what every other part of the client works on: the connection, the
:class:`~adapters.chain.sender.TxSender`, the admin and operator accounts, and the payment
token, reward token and settlement contract once deployed (:meth:`Contracts.deploy_all`) or
attached (:meth:`Contracts.attach`, which checks that the code at the addresses is the
committed artifacts').

The constants below are the contracts' own (``Settlement.vy``); the client checks them before
sending so that a batch is refused locally, not reverted on-chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract

from adapters.chain.accounts import ZERO_ADDRESS, checksum_address
from adapters.chain.artifact import Artifact, load_artifact
from adapters.chain.errors import ChainError
from adapters.chain.gas import (
    GAS_ADMIN,
    GAS_DEPLOY_REWARD_TOKEN,
    GAS_DEPLOY_SETTLEMENT,
    GAS_DEPLOY_TOKEN,
)
from adapters.chain.node import call, rpc
from adapters.chain.sender import TxSender

MAX_SETTLEMENT_ACCOUNTS: Final = 1024
"""Most accounts in one settlement (``MAX_ENTRIES`` in ``Settlement.vy``)."""

MAX_BATCH: Final = 256
"""Most accounts per ``register_many`` / ``deposit_for`` call (``MAX_BATCH``)."""

OPERATOR_ROLE: Final = Web3.keccak(text="OPERATOR_ROLE")
"""The role that may settle and register (``Settlement.vy``)."""

DEFAULT_ADMIN_ROLE: Final = bytes(32)
"""The role that grants roles, pauses and sets policy (snekmate's ``access_control``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """Addresses of a PeerGrid deployment (checksummed).

    Attributes
    ----------
    token : str
        The payment token (6 decimals).
    settlement : str
        The settlement contract.
    reward_token : str
        The reward token; ``""`` for a deployment without rewards.
    """

    token: str
    settlement: str
    reward_token: str = ""


class Contracts:
    """The contracts a client works with, and who signs for them.

    Parameters
    ----------
    w3 : Web3
        Connection to the chain.
    sender : TxSender
        Sends every transaction.
    operator : LocalAccount
        Becomes the settlement contract's first operator at deployment.
    admin : LocalAccount
        Signs deployments, mints, role changes, pauses and policy changes.
    """

    def __init__(
        self, w3: Web3, sender: TxSender, *, operator: LocalAccount, admin: LocalAccount
    ) -> None:
        self.w3 = w3
        self.sender = sender
        self.operator = operator
        self.admin = admin
        self._token_artifact = load_artifact("PaymentToken")
        self._reward_artifact = load_artifact("RewardToken")
        self._settlement_artifact = load_artifact("Settlement")
        self._token: Contract | None = None
        self._reward_token: Contract | None = None
        self._settlement: Contract | None = None

    @property
    def token(self) -> Contract:
        """The attached payment token contract.

        Raises
        ------
        ChainError
            If none is deployed or attached yet.
        """
        if self._token is None:
            msg = "no token contract: call deploy_token() or attach() first"
            raise ChainError(msg)
        return self._token

    @property
    def settlement(self) -> Contract:
        """The attached settlement contract.

        Raises
        ------
        ChainError
            If none is deployed or attached yet.
        """
        if self._settlement is None:
            msg = "no settlement contract: call deploy_settlement() or attach() first"
            raise ChainError(msg)
        return self._settlement

    @property
    def reward_token(self) -> Contract | None:
        """The attached reward token contract, or ``None`` if the deployment has none."""
        return self._reward_token

    def deployment(self) -> Deployment:
        """Addresses of the attached contracts.

        Returns
        -------
        Deployment
            Token, settlement and (if any) reward token addresses.
        """
        reward = self._reward_token.address if self._reward_token is not None else ""
        return Deployment(
            token=self.token.address, settlement=self.settlement.address, reward_token=reward
        )

    def deploy_token(self, name: str, symbol: str) -> ChecksumAddress:
        """Deploy ``PaymentToken`` (6 decimals, EIP-2612) owned by the admin and attach it.

        Parameters
        ----------
        name : str
            Token name, at most 25 characters.
        symbol : str
            Token symbol, at most 5 characters.

        Returns
        -------
        ChecksumAddress
            Address of the new token.
        """
        data = _constructor_data(self._token_artifact, ["string", "string"], [name, symbol])
        address = self.deploy_code(data, GAS_DEPLOY_TOKEN)
        self._token = self._contract(address, self._token_artifact)
        return address

    def deploy_reward_token(self, name: str, symbol: str) -> ChecksumAddress:
        """Deploy ``RewardToken`` (6 decimals) owned by the admin, which is not a minter.

        :meth:`deploy_settlement` with ``reward_token=`` makes the settlement contract its
        minter.

        Parameters
        ----------
        name : str
            Token name, at most 25 characters.
        symbol : str
            Token symbol, at most 5 characters.

        Returns
        -------
        ChecksumAddress
            Address of the new reward token.
        """
        data = _constructor_data(self._reward_artifact, ["string", "string"], [name, symbol])
        address = self.deploy_code(data, GAS_DEPLOY_REWARD_TOKEN)
        self._reward_token = self._contract(address, self._reward_artifact)
        return address

    def deploy_settlement(
        self,
        token: str,
        *,
        reward_token: str | None = None,
        withdrawal_delay_s: int = 0,
        reward_rate: int = 0,
        reward_cap: int = 0,
    ) -> ChecksumAddress:
        """Deploy ``Settlement`` for ``token`` and attach it (and the tokens).

        The admin becomes the contract's admin, the operator its first operator. With a
        ``reward_token`` owned by the admin, the settlement contract is made its minter.

        Parameters
        ----------
        token : str
            Address of the payment token (6 decimals).
        reward_token : str or None
            Address of the reward token; ``None`` for a deployment without rewards.
        withdrawal_delay_s : int
            Notice a withdrawal takes [s].
        reward_rate : int
            Reward base units per kWh of verified local energy.
        reward_cap : int
            Most reward base units minted per interval.

        Returns
        -------
        ChecksumAddress
            Address of the new settlement contract.
        """
        token_address = checksum_address(token)
        reward_address = checksum_address(reward_token) if reward_token else ZERO_ADDRESS
        data = _constructor_data(
            self._settlement_artifact,
            ["address", "address", "address", "uint256", "uint256", "uint256"],
            [
                token_address,
                reward_address,
                self.operator.address,
                withdrawal_delay_s,
                reward_rate,
                reward_cap,
            ],
        )
        address = self.deploy_code(data, GAS_DEPLOY_SETTLEMENT)
        self._token = self._contract(token_address, self._token_artifact)
        self._settlement = self._contract(address, self._settlement_artifact)
        self._reward_token = None
        if reward_token:
            reward = self._contract(reward_address, self._reward_artifact)
            self._reward_token = reward
            if call(reward.functions.owner()) == self.admin.address:
                data = reward.encode_abi("set_minter", args=[address, True])
                self.sender.transact(self.admin, reward.address, data, GAS_ADMIN)
        return address

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
        """Deploy what a site needs and attach it.

        The payment token (unless ``token`` names an existing one, e.g. a stablecoin), the
        reward token (unless ``reward_name`` is ``None``) and the settlement contract.

        Parameters
        ----------
        token_name, token_symbol : str
            Name and symbol of a new payment token.
        token : str or None
            Address of an existing payment token (6 decimals) to use instead.
        reward_name : str or None
            Name of the reward token; ``None`` deploys without rewards.
        reward_symbol : str
            Symbol of the reward token.
        withdrawal_delay_s : int
            Notice a withdrawal takes [s].
        reward_rate : int
            Reward base units per kWh of verified local energy.
        reward_cap : int
            Most reward base units minted per interval.

        Returns
        -------
        Deployment
            The addresses.
        """
        token_address = token or self.deploy_token(token_name, token_symbol)
        reward = self.deploy_reward_token(reward_name, reward_symbol) if reward_name else None
        self.deploy_settlement(
            token_address,
            reward_token=reward,
            withdrawal_delay_s=withdrawal_delay_s,
            reward_rate=reward_rate,
            reward_cap=reward_cap,
        )
        return self.deployment()

    def attach(self, token_address: str, settlement_address: str) -> None:
        """Use contracts deployed before, after checking that their code is ours.

        The reward token is the one the settlement contract names (if any). The payment
        token may be any 6-decimal ERC-20 (a production stablecoin); only the settlement
        contract's and the reward token's code are checked.

        Parameters
        ----------
        token_address : str
            The payment token.
        settlement_address : str
            The settlement contract; it must name ``token_address`` as its token.

        Raises
        ------
        ChainError
            If an address holds no code, or code that is not the committed artifact's, or
            the settlement contract holds another token.
        """
        settlement = self._contract(checksum_address(settlement_address), self._settlement_artifact)
        self.check_code(settlement, self._settlement_artifact)
        token = self._contract(checksum_address(token_address), self._token_artifact)
        recorded = call(settlement.functions.token())
        if recorded != token.address:
            msg = f"settlement {settlement.address} holds token {recorded}, not {token.address}"
            raise ChainError(msg)
        reward_address = call(settlement.functions.reward_token())
        reward = None
        if reward_address != ZERO_ADDRESS:
            reward = self._contract(reward_address, self._reward_artifact)
            self.check_code(reward, self._reward_artifact)
        self._token = token
        self._settlement = settlement
        self._reward_token = reward

    def check_code(self, contract: Contract, artifact: Artifact) -> None:
        """Refuse ``contract`` unless its code is ``artifact``'s deployed bytecode.

        Raises
        ------
        ChainError
            If the address holds no code or other code.
        """
        code = bytes(rpc(lambda: self.w3.eth.get_code(contract.address)))
        # Vyper appends immutables (the token address, name, ...) after the runtime code.
        if not code.startswith(HexBytes(artifact.bytecode_runtime)):
            msg = f"{contract.address} does not hold the committed {artifact.name} bytecode"
            raise ChainError(msg)

    def _contract(self, address: ChecksumAddress, artifact: Artifact) -> Contract:
        return self.w3.eth.contract(address=address, abi=artifact.abi)

    def deploy_code(self, data: HexStr, gas: int) -> ChecksumAddress:
        """Deploy creation code ``data`` (bytecode and encoded constructor arguments) as the admin.

        Returns
        -------
        ChecksumAddress
            The new contract's address.
        """
        receipt, tx = self.sender.transact(self.admin, None, data, gas)
        address = receipt["contractAddress"]
        if address is None:
            msg = f"deployment {tx.tx_hash} created no contract"
            raise ChainError(msg)
        return Web3.to_checksum_address(address)


def _constructor_data(artifact: Artifact, types: list[str], args: list[Any]) -> HexStr:
    return HexStr(artifact.bytecode + abi_encode(types, args).hex())


__all__ = [
    "DEFAULT_ADMIN_ROLE",
    "MAX_BATCH",
    "MAX_SETTLEMENT_ACCOUNTS",
    "OPERATOR_ROLE",
    "Contracts",
    "Deployment",
]

"""Device keys on-chain: the P-256 keys that sign meter readings (issue 17).

A meter (or its gateway) holds a NIST P-256 (secp256r1) key and signs each reading; the
controller and ``peergrid audit verify`` check the signatures against the key that the
``DeviceKeys`` registry (``adapters/chain/contracts/DeviceKeys.vy``, new and unaudited) held
at the block an interval's record names.

A key lives in a slot (owner, device): the owner is the participant's chain account, the
device :func:`device_key_id` of its device id, so nobody can take another participant's
slot. A public key is 64 bytes, the uncompressed point X || Y without the ``0x04`` prefix
(``cryptography``'s ``X962``/``UncompressedPoint`` encoding minus its first byte); one that
is not a point on P-256 is refused here (:func:`check_public_key`) before any gas is spent,
and by the contract.

Who changes a slot:

* its owner, with their own transaction (:meth:`DeviceKeys.register`,
  :meth:`~DeviceKeys.rotate`, :meth:`~DeviceKeys.revoke`);
* anyone relaying the owner's EIP-712 ``KeyChange`` signature (:func:`sign_key_change`,
  :meth:`DeviceKeys.relay`): the owner needs no ether, the relayer (say the operator) pays
  the gas but cannot change what was signed;
* the community's governor, by an executed vote (:meth:`DeviceKeys.govern` builds the
  proposal's :class:`~adapters.chain.governance.Action`).

The deployer and the operator hold no power over keys. The registry keeps every change with
its block (:meth:`DeviceKeys.history`); :meth:`DeviceKeys.key_at` answers for any mined
block from that history. Rules of a slot (the contract's): ``register`` needs no key in
force, ``rotate`` and ``revoke`` need one; a key once registered in a slot never returns to
it; at most :data:`MAX_CHANGES` changes, with a place always left to revoke the key in force.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3 import Web3
from web3.contract import Contract

from adapters.chain.accounts import ZERO_ADDRESS, checksum_address
from adapters.chain.artifact import load_artifact
from adapters.chain.deployment import Contracts
from adapters.chain.errors import ChainError, InvalidArgument
from adapters.chain.gas import (
    GAS_DEPLOY_DEVICE_KEYS,
    GAS_KEY_CHANGE_BY_SIG,
    GAS_KEY_REGISTER,
    GAS_KEY_REVOKE,
)
from adapters.chain.governance import SIGNATURE_BYTES, Action, sign_typed, typed_signer
from adapters.chain.node import call, rpc
from adapters.chain.sender import TxResult

KEY_BYTES: Final = 64
"""Length of a public key: X || Y, 32 bytes each, big-endian [bytes]."""

MAX_CHANGES: Final = 1024
"""Most changes one slot keeps (``DeviceKeys.vy``); a key is put in force only while two
places are free, so the key in force can always be revoked."""

P256_P: Final = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
"""The prime of P-256's field (SEC 2, secp256r1)."""

P256_B: Final = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
"""P-256's ``b``: the curve is y^2 = x^3 - 3 x + b (mod p)."""

KEY_CHANGE_TYPES: Final = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "KeyChange": [
        {"name": "owner", "type": "address"},
        {"name": "device", "type": "bytes32"},
        {"name": "key", "type": "bytes"},
        {"name": "action", "type": "uint8"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ],
}
"""EIP-712 types of a relayed key change (the registry's domain: ``"PeerGrid DeviceKeys"``,
``"1"``)."""


class KeyAction(enum.IntEnum):
    """What a change does to a slot (the contract's numbering)."""

    REGISTER = 1
    ROTATE = 2
    REVOKE = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceKey:
    """A slot's key at a block.

    Attributes
    ----------
    key : bytes
        The public key, X || Y (64 bytes); after a revocation the key revoked.
    active : bool
        Whether it was in force (readings signed with it verify).
    """

    key: bytes
    active: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyChange:
    """One change of a slot, as the registry keeps it.

    Attributes
    ----------
    block_number : int
        The block of the change.
    key : bytes
        The key it put in force (register, rotate) or revoked (64 bytes, X || Y).
    action : KeyAction
        What it did.
    """

    block_number: int
    key: bytes
    action: KeyAction

    @property
    def active(self) -> bool:
        """Whether a key was in force after the change."""
        return self.action is not KeyAction.REVOKE


def device_key_id(device_id: str) -> bytes:
    """The registry's 32-byte id of device ``device_id``: ``keccak256`` of its UTF-8.

    Raises
    ------
    InvalidArgument
        If ``device_id`` is not a non-empty string.
    """
    if not isinstance(device_id, str) or not device_id:
        msg = f"a device id is a non-empty string, not {device_id!r}"
        raise InvalidArgument(msg)
    return bytes(Web3.keccak(text=device_id))


def is_p256_public_key(key: bytes) -> bool:
    """Whether ``key`` is a key the registry takes: 64 bytes X || Y, a point on P-256.

    The contract's test, written out: ``x < p``, ``y < p`` and
    ``y^2 = x^3 - 3 x + b (mod p)``.
    """
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        return False
    x, y = int.from_bytes(key[:32], "big"), int.from_bytes(key[32:], "big")
    if x >= P256_P or y >= P256_P:
        return False
    return (y * y - (x * x * x - 3 * x + P256_B)) % P256_P == 0


def check_public_key(key: bytes) -> bytes:
    """``key`` if it is a P-256 public key in the registry's form (:func:`is_p256_public_key`).

    Raises
    ------
    InvalidArgument
        If it is not.
    """
    if not is_p256_public_key(key):
        shown = f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__
        msg = f"not a P-256 public key as 64 bytes X || Y on the curve ({shown})"
        raise InvalidArgument(msg)
    return key


def key_change_domain(chain_id: int, registry: str) -> dict[str, Any]:
    """The EIP-712 domain of a key change: the registry's (``"PeerGrid DeviceKeys"``, ``"1"``)."""
    return {
        "name": "PeerGrid DeviceKeys",
        "version": "1",
        "chainId": chain_id,
        "verifyingContract": checksum_address(registry),
    }


def key_change_typed_data(
    chain_id: int,
    registry: str,
    *,
    owner: str,
    device_id: str,
    key: bytes,
    action: KeyAction,
    nonce: int,
    deadline: int,
) -> dict[str, Any]:
    """The EIP-712 ``KeyChange`` an owner signs to have a change relayed (wallet JSON form).

    Parameters
    ----------
    chain_id : int
        The chain's id.
    registry : str
        The ``DeviceKeys`` contract.
    owner : str
        The slot's owner (who signs).
    device_id : str
        The device; the message holds :func:`device_key_id` of it.
    key : bytes
        The new key (register, rotate; 64 bytes); ``b""`` for a revocation.
    action : KeyAction
        What the change does.
    nonce : int
        The owner's next nonce (:meth:`DeviceKeys.nonce`).
    deadline : int
        Unix time [s] after which the registry refuses the signature.
    """
    return {
        "types": KEY_CHANGE_TYPES,
        "primaryType": "KeyChange",
        "domain": key_change_domain(chain_id, registry),
        "message": {
            "owner": checksum_address(owner),
            "device": "0x" + device_key_id(device_id).hex(),
            "key": "0x" + bytes(key).hex(),
            "action": int(action),
            "nonce": nonce,
            "deadline": deadline,
        },
    }


def sign_key_change(
    account: LocalAccount,
    chain_id: int,
    registry: str,
    *,
    device_id: str,
    key: bytes,
    action: KeyAction,
    nonce: int,
    deadline: int,
) -> bytes:
    """``account``'s 65-byte signature (r, s, v) of a change of its own slot.

    For :meth:`DeviceKeys.relay`; the arguments are :func:`key_change_typed_data`'s, with
    ``account`` as the owner.
    """
    _check_change(key, action)
    data = key_change_typed_data(
        chain_id,
        registry,
        owner=account.address,
        device_id=device_id,
        key=key,
        action=action,
        nonce=nonce,
        deadline=deadline,
    )
    return sign_typed(account, data)


def key_change_signer(
    chain_id: int,
    registry: str,
    *,
    owner: str,
    device_id: str,
    key: bytes,
    action: KeyAction,
    nonce: int,
    deadline: int,
    signature: bytes,
) -> str:
    """Who signed a key change: the address recovered from ``signature`` (checksummed).

    It is the owner's change only if this equals ``owner`` (the registry checks the same).

    Raises
    ------
    InvalidArgument
        If ``signature`` is not a 65-byte secp256k1 signature at all.
    """
    data = key_change_typed_data(
        chain_id,
        registry,
        owner=owner,
        device_id=device_id,
        key=key,
        action=action,
        nonce=nonce,
        deadline=deadline,
    )
    return typed_signer(data, signature)


class DeviceKeys:
    """The ``DeviceKeys`` registry on the chain of a :class:`Contracts`.

    Parameters
    ----------
    contracts : Contracts
        The site's connection and sender; its admin signs the deployment (and holds no
        power over keys after it).
    """

    def __init__(self, contracts: Contracts) -> None:
        self.contracts = contracts
        self.w3 = contracts.w3
        self._artifact = load_artifact("DeviceKeys")
        self._contract: Contract | None = None

    @property
    def contract(self) -> Contract:
        """The ``DeviceKeys`` contract.

        Raises
        ------
        ChainError
            If none is deployed or attached yet.
        """
        if self._contract is None:
            msg = "no device key registry: call deploy() or attach() first"
            raise ChainError(msg)
        return self._contract

    @property
    def address(self) -> str:
        """The registry's address (checksummed)."""
        return str(self.contract.address)

    def deploy(self, governor: str | None) -> str:
        """Deploy a registry and attach it.

        Parameters
        ----------
        governor : str or None
            The community's timelock, which alone may :meth:`govern`; ``None`` for a site
            without governance (then nobody can).

        Returns
        -------
        str
            The registry's address.
        """
        governor_address = checksum_address(governor) if governor else ZERO_ADDRESS
        data = HexStr(self._artifact.bytecode + abi_encode(["address"], [governor_address]).hex())
        address = self.contracts.deploy_code(data, GAS_DEPLOY_DEVICE_KEYS)
        self._contract = self.w3.eth.contract(address=address, abi=self._artifact.abi)
        return str(address)

    def attach(self, address: str, *, governor: str | None = None) -> None:
        """Use a registry deployed before, after checking its code is ours.

        Parameters
        ----------
        address : str
            The registry.
        governor : str or None
            If given, the governor the registry must name (the community's timelock).

        Raises
        ------
        ChainError
            If the address holds other code, or the registry names another governor.
        """
        contract = self.w3.eth.contract(address=checksum_address(address), abi=self._artifact.abi)
        self.contracts.check_code(contract, self._artifact)
        if governor is not None:
            named = call(contract.functions.governor())
            if named != checksum_address(governor):
                msg = f"registry {contract.address} is governed by {named}, not by {governor}"
                raise ChainError(msg)
        self._contract = contract

    def governor(self) -> str | None:
        """The registry's governor; ``None`` if it has none."""
        named = str(call(self.contract.functions.governor()))
        return None if named == ZERO_ADDRESS else named

    def chain_id(self) -> int:
        """The chain's id (for :func:`sign_key_change`)."""
        return int(rpc(lambda: self.w3.eth.chain_id))

    def latest_timestamp(self) -> int:
        """The latest block's time [Unix s] (a relayed change's deadline counts from it)."""
        return int(rpc(lambda: self.w3.eth.get_block("latest"))["timestamp"])

    # -- the owner's own transactions -------------------------------------------------------

    def register(self, owner: LocalAccount, device_id: str, key: bytes) -> TxResult:
        """Register ``owner``'s key for ``device_id`` (none may be in force).

        Raises
        ------
        InvalidArgument
            If ``key`` is not a P-256 public key (checked before sending).
        TransactionReverted
            If the registry refuses (``a key is in force``, ``key used before``, ...).
        """
        args = [device_key_id(device_id), check_public_key(key)]
        return self._send(owner, "register", args, GAS_KEY_REGISTER)

    def rotate(self, owner: LocalAccount, device_id: str, key: bytes) -> TxResult:
        """Replace ``owner``'s key in force for ``device_id`` by ``key``, new to the slot."""
        args = [device_key_id(device_id), check_public_key(key)]
        return self._send(owner, "rotate", args, GAS_KEY_REGISTER)

    def revoke(self, owner: LocalAccount, device_id: str) -> TxResult:
        """Revoke ``owner``'s key in force for ``device_id``, from this transaction's block on."""
        return self._send(owner, "revoke", [device_key_id(device_id)], GAS_KEY_REVOKE)

    # -- relayed and governed changes -------------------------------------------------------

    def relay(
        self,
        relayer: LocalAccount,
        *,
        owner: str,
        device_id: str,
        key: bytes,
        action: KeyAction,
        deadline: int,
        signature: bytes,
    ) -> TxResult:
        """Relay ``owner``'s signed change (:func:`sign_key_change`); ``relayer`` pays the gas.

        The registry checks the signature against the owner's next nonce and refuses it after
        ``deadline``, a second time, or signed by anyone but ``owner``.

        Raises
        ------
        InvalidArgument
            If the key does not fit the action, or the signature is not 65 bytes.
        TransactionReverted
            If the registry refuses (``invalid signature``, ``signature expired``, ...).
        """
        _check_change(key, action)
        if len(signature) != SIGNATURE_BYTES:
            msg = f"a key change signature has {SIGNATURE_BYTES} bytes, not {len(signature)}"
            raise InvalidArgument(msg)
        _check_uint256("deadline", deadline)
        args = [
            checksum_address(owner),
            device_key_id(device_id),
            key,
            int(action),
            deadline,
            signature,
        ]
        return self._send(relayer, "change_by_sig", args, GAS_KEY_CHANGE_BY_SIG)

    def govern(self, owner: str, device_id: str, key: bytes, action: KeyAction) -> Action:
        """A proposal's call: the governor changes ``owner``'s slot (say, revokes a stolen key).

        Parameters
        ----------
        owner : str
            The slot's owner.
        device_id : str
            The device.
        key : bytes
            The new key (register, rotate; 64 bytes); ``b""`` for a revocation.
        action : KeyAction
            What the change does.

        Returns
        -------
        Action
            For :meth:`~adapters.chain.governance.Governance.propose`; the registry must be
            governed by the community's timelock.
        """
        _check_change(key, action)
        who = checksum_address(owner)
        data = self.contract.encode_abi(
            "govern", args=[who, device_key_id(device_id), key, int(action)]
        )
        what = {
            KeyAction.REGISTER: f"register key 0x{key[:8].hex()}... for",
            KeyAction.ROTATE: f"rotate to key 0x{key[:8].hex()}... the key of",
            KeyAction.REVOKE: "revoke the key of",
        }[action]
        return Action(
            target=self.contract.address,
            payload=bytes.fromhex(data[2:]),
            summary=f"{what} device {device_id!r} of {who}",
        )

    # -- reads ------------------------------------------------------------------------------

    def relay_for(
        self,
        relayer: LocalAccount,
        owner: LocalAccount,
        *,
        device_id: str,
        key: bytes,
        action: KeyAction,
        deadline: int,
    ) -> TxResult:
        """Sign ``owner``'s change with its next nonce and relay it; ``relayer`` pays the gas.

        For a process that holds both keys (``peergrid devices keys ... --relay``, the demo):
        :func:`sign_key_change` then :meth:`relay`.
        """
        signature = sign_key_change(
            owner,
            self.chain_id(),
            self.address,
            device_id=device_id,
            key=key,
            action=action,
            nonce=self.nonce(owner.address),
            deadline=deadline,
        )
        return self.relay(
            relayer,
            owner=owner.address,
            device_id=device_id,
            key=key,
            action=action,
            deadline=deadline,
            signature=signature,
        )

    def nonce(self, owner: str) -> int:
        """``owner``'s next nonce for a signed change."""
        return int(call(self.contract.functions.nonces(checksum_address(owner))))

    def key_of(self, owner: str, device_id: str, *, block: int | None = None) -> KeyChange | None:
        """The slot's latest change (its key now); ``None`` if it never had a key.

        Parameters
        ----------
        owner : str
            The slot's owner.
        device_id : str
            The device.
        block : int or None
            Read the state as of this block (the latest, say, which :meth:`key_at` refuses;
            an older one needs a node that keeps old states); ``None``: the latest block.
            Both reads are made at that one block, so they agree.
        """
        fns = self.contract.functions
        who, device = checksum_address(owner), device_key_id(device_id)
        if block is None:
            block = int(rpc(lambda: self.w3.eth.block_number))
        _check_uint256("block", block)
        n = int(call(fns.change_count(who, device), block_identifier=block))
        if n == 0:
            return None
        return _change(call(fns.change_at(who, device, n - 1), block_identifier=block))

    def key_at(self, owner: str, device_id: str, block: int) -> DeviceKey | None:
        """The slot's key at the end of ``block``; ``None``: none was registered by then.

        Read from the registry's own history, so a node that keeps no old state answers too.
        As ``Parameters.value_at``, the registry answers only for a block before the one a
        call executes in, which on a node is the latest: read the latest block with
        :meth:`key_of` (``block=``).

        Raises
        ------
        TransactionReverted
            If ``block`` is the latest block or later (``block not yet mined``).
        """
        _check_uint256("block", block)
        fns = self.contract.functions
        key, active = call(fns.key_at(checksum_address(owner), device_key_id(device_id), block))
        if not key:
            return None
        return DeviceKey(key=bytes(key), active=bool(active))

    def history(self, owner: str, device_id: str) -> tuple[KeyChange, ...]:
        """Every change of the slot, oldest first, read at one block."""
        fns = self.contract.functions
        who, device = checksum_address(owner), device_key_id(device_id)
        block = int(rpc(lambda: self.w3.eth.block_number))
        n = int(call(fns.change_count(who, device), block_identifier=block))
        return tuple(
            _change(call(fns.change_at(who, device, i), block_identifier=block)) for i in range(n)
        )

    # -- internals --------------------------------------------------------------------------

    def _send(self, account: LocalAccount, fn: str, args: list[Any], gas: int) -> TxResult:
        data = self.contract.encode_abi(fn, args=args)
        return self.contracts.sender.transact(account, self.contract.address, data, gas)[1]


def _change(answer: tuple[int, bytes, bool, int]) -> KeyChange:
    block, key, _, action = answer
    return KeyChange(block_number=int(block), key=bytes(key), action=KeyAction(int(action)))


def _check_change(key: bytes, action: KeyAction) -> None:
    """Refuse a key that does not fit ``action``: a new key's form, none for a revocation."""
    if not isinstance(action, KeyAction):
        msg = f"a key change is a KeyAction, not {action!r}"
        raise InvalidArgument(msg)
    if action is KeyAction.REVOKE:
        if key:
            msg = "a revocation names no key (pass b'')"
            raise InvalidArgument(msg)
    else:
        check_public_key(key)


def _check_uint256(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
        msg = f"{what} must be an unsigned 256-bit integer, got {value!r}"
        raise InvalidArgument(msg)


__all__ = [
    "KEY_BYTES",
    "KEY_CHANGE_TYPES",
    "MAX_CHANGES",
    "P256_B",
    "P256_P",
    "DeviceKey",
    "DeviceKeys",
    "KeyAction",
    "KeyChange",
    "check_public_key",
    "device_key_id",
    "is_p256_public_key",
    "key_change_domain",
    "key_change_signer",
    "key_change_typed_data",
    "sign_key_change",
]

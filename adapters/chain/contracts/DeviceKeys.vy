# pragma version ~=0.4.3
"""
@title PeerGrid device key registry: the P-256 keys that sign meter readings
@custom:contract-name DeviceKeys
@license Apache-2.0
@notice Meters (or their gateways) hold a NIST P-256 (secp256r1) key and
        sign each reading; the controller and `peergrid audit verify`
        check the signatures off-chain against the key this registry held
        at the block an interval's record names (issue 17).
        A key belongs to a slot (owner, device): the owner is the
        participant's chain account and the device `keccak256` of the
        UTF-8 device id, so nobody can take another participant's slot.
        A public key is 64 bytes, the uncompressed point X || Y (no 0x04
        prefix); a key that is not a point on P-256 is refused.
        A key is registered, rotated or revoked only by
          - its owner's own transaction (`register`, `rotate`, `revoke`),
          - its owner's EIP-712 signature, relayed by anyone who pays the
            gas (`change_by_sig`; a per-owner nonce and a deadline), or
          - the community's governor, i.e. an executed members' vote
            (`govern`: say, revoking a stolen meter's key).
        The deployer and the operator hold no power over any key: there is
        no owner or admin role. A site without governance deploys with
        `governor = empty(address)`, and then nobody can `govern`.
        Rules of a slot, whoever acts:
          - `register` needs no key in force (a first key, or one after a
            revocation), `rotate` and `revoke` need a key in force;
          - a key once registered in a slot never returns to it (so a
            rotation changes the key, and a revoked key stays revoked);
          - a slot keeps at most `MAX_CHANGES` changes, and a change that
            puts a key in force needs two free places, so the key in force
            can always be revoked.
        Every change is kept with its block: `key_at` answers for any past
        block, so an auditor checks a reading against the key in force at
        the record's block on any node, including one without old states.
@dev New, unaudited code. Lookups are binary searches, at most 11 steps.
     Several changes of one slot in one block are all kept; `key_at`
     answers with the last of them (the state at the end of the block).
"""


from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator

exports: eip712_domain_separator.eip712Domain


# Actions, as `change_by_sig`, `govern`, `change_at` and `KeyChanged` name them.
REGISTER: constant(uint8) = 1
ROTATE: constant(uint8) = 2
REVOKE: constant(uint8) = 3

# Changes of one slot over the contract's life.
MAX_CHANGES: constant(uint256) = 1024
# Binary-search steps: 2**11 > MAX_CHANGES + 1 candidate positions.
SEARCH_STEPS: constant(uint256) = 11

# P-256 (secp256r1, SEC 2 / FIPS 186-4): y^2 = x^3 + A x + B over the field
# of _P, with A = -3 (mod _P). The same values as snekmate's `p256` module.
_P: constant(uint256) = (
    115_792_089_210_356_248_762_697_446_949_407_573_530_086_143_415_290_314_195_533_631_308_867_097_853_951
)
_A: constant(uint256) = (
    115_792_089_210_356_248_762_697_446_949_407_573_530_086_143_415_290_314_195_533_631_308_867_097_853_948
)
_B: constant(uint256) = (
    41_058_363_725_152_142_129_326_129_780_047_268_409_114_441_015_993_725_554_835_256_314_039_467_401_291
)

_KEY_CHANGE_TYPEHASH: constant(bytes32) = keccak256(
    "KeyChange(address owner,bytes32 device,bytes key,uint8 action,uint256 nonce,uint256 deadline)"
)
_EIP712_NAME: constant(String[50]) = "PeerGrid DeviceKeys"
_EIP712_VERSION: constant(String[20]) = "1"


struct Change:
    block: uint256
    action: uint8
    # the key put in force, or the key revoked
    x: bytes32
    y: bytes32


# The community's timelock (executes members' votes); empty: no governance.
governor: public(immutable(address))

# The next nonce of each owner's signed changes.
nonces: public(HashMap[address, uint256])

_history: HashMap[address, HashMap[bytes32, DynArray[Change, MAX_CHANGES]]]
# keccak256 of every key ever registered in a slot
_used: HashMap[address, HashMap[bytes32, HashMap[bytes32, bool]]]


event KeyChanged:
    owner: indexed(address)
    device: indexed(bytes32)
    key: Bytes[64]
    action: uint8
    by: address


@deploy
@payable
def __init__(governor_: address):
    """
    @param governor_ The community's timelock, whose calls are executed
           votes; `empty(address)` for a site without governance.
    """
    eip712_domain_separator.__init__(_EIP712_NAME, _EIP712_VERSION)
    governor = governor_


@external
def register(device: bytes32, key: Bytes[64]):
    """
    @dev Register the caller's first key for `device`, or a new one after
         a revocation.
    @param device `keccak256` of the UTF-8 device id.
    @param key The public key: X || Y, 64 bytes, a point on P-256.
    """
    self._change(msg.sender, device, key, REGISTER)


@external
def rotate(device: bytes32, key: Bytes[64]):
    """
    @dev Replace the caller's key in force for `device` with `key`, a key
         never registered in the slot before.
    """
    self._change(msg.sender, device, key, ROTATE)


@external
def revoke(device: bytes32):
    """
    @dev Revoke the caller's key in force for `device`: from this block on
         no key is in force until a new one is registered.
    """
    self._change(msg.sender, device, b"", REVOKE)


@external
def change_by_sig(
    owner: address, device: bytes32, key: Bytes[64], action: uint8, deadline: uint256, signature: Bytes[65]
):
    """
    @dev Relay `owner`'s change, signed as the EIP-712 `KeyChange(address
         owner,bytes32 device,bytes key,uint8 action,uint256 nonce,uint256
         deadline)` of this contract's domain with the owner's next nonce.
         Anyone may relay; the change is the owner's.
    @param key The new key (register, rotate); empty for a revocation.
    @param action 1 register, 2 rotate, 3 revoke.
    @param deadline Unix time [s] after which the signature is refused.
    @param signature The 65-byte signature (r, s, v).
    """
    assert block.timestamp <= deadline, "device keys: signature expired"
    nonce: uint256 = self.nonces[owner]
    struct_hash: bytes32 = keccak256(
        abi_encode(_KEY_CHANGE_TYPEHASH, owner, device, keccak256(key), action, nonce, deadline)
    )
    digest: bytes32 = eip712_domain_separator._hash_typed_data_v4(struct_hash)
    signer: address = ecdsa._recover_sig(digest, signature)
    assert signer == owner and owner != empty(address), "device keys: invalid signature"
    self.nonces[owner] = nonce + 1
    self._change(owner, device, key, action)


@external
def govern(owner: address, device: bytes32, key: Bytes[64], action: uint8):
    """
    @dev Change a slot by an executed members' vote (the governor only).
    @param key The new key (register, rotate); empty for a revocation.
    @param action 1 register, 2 rotate, 3 revoke.
    """
    assert msg.sender == governor, "device keys: caller is not the governor"
    self._change(owner, device, key, action)


@external
@view
def key_of(owner: address, device: bytes32) -> (Bytes[64], bool, uint256):
    """
    @dev The slot's key now (in a call at a block: at that block).
    @return The key (the revoked one after a revocation; empty if none was
            ever registered), whether it is in force, and the block of the
            change that made it so (0: never registered).
    """
    n: uint256 = len(self._history[owner][device])
    if n == 0:
        return (b"", False, 0)
    last: Change = self._history[owner][device][n - 1]
    return (concat(last.x, last.y), last.action != REVOKE, last.block)


@external
@view
def key_at(owner: address, device: bytes32, block_number: uint256) -> (Bytes[64], bool):
    """
    @dev The slot's key at the end of block `block_number`.
    @param block_number A past block (the current one can still change).
    @return The key (the revoked one after a revocation; empty if none was
            registered by then), and whether it was in force.
    """
    assert block_number < block.number, "device keys: block not yet mined"
    low: uint256 = 0
    high: uint256 = len(self._history[owner][device])
    for _: uint256 in range(SEARCH_STEPS):
        if low >= high:
            break
        mid: uint256 = (low + high) // 2
        if self._history[owner][device][mid].block > block_number:
            high = mid
        else:
            low = mid + 1
    if low == 0:
        return (b"", False)
    found: Change = self._history[owner][device][low - 1]
    return (concat(found.x, found.y), found.action != REVOKE)


@external
@view
def change_count(owner: address, device: bytes32) -> uint256:
    """
    @dev How many changes the slot has had (its history's length).
    """
    return len(self._history[owner][device])


@external
@view
def change_at(owner: address, device: bytes32, index: uint256) -> (uint256, Bytes[64], bool, uint8):
    """
    @dev The slot's change number `index` (from 0, oldest first).
    @return Its block, the key it put in force or revoked, whether a key
            was in force after it, and its action (1 register, 2 rotate,
            3 revoke).
    """
    assert index < len(self._history[owner][device]), "device keys: no such change"
    c: Change = self._history[owner][device][index]
    return (c.block, concat(c.x, c.y), c.action != REVOKE, c.action)


@external
@pure
def on_curve(key: Bytes[64]) -> bool:
    """
    @dev Whether `key` is a public key this registry takes: 64 bytes X || Y
         with X, Y < p and Y^2 = X^3 - 3 X + b (mod p).
    """
    return self._on_curve(key)


@internal
def _change(owner: address, device: bytes32, key: Bytes[64], action: uint8):
    n: uint256 = len(self._history[owner][device])
    active: bool = n > 0 and self._history[owner][device][n - 1].action != REVOKE
    x: bytes32 = empty(bytes32)
    y: bytes32 = empty(bytes32)
    if action == REVOKE:
        assert len(key) == 0, "device keys: a revocation names no key"
        assert active, "device keys: no key in force"
        x = self._history[owner][device][n - 1].x
        y = self._history[owner][device][n - 1].y
    else:
        assert action == REGISTER or action == ROTATE, "device keys: unknown action"
        if action == REGISTER:
            assert not active, "device keys: a key is in force (rotate it)"
        else:
            assert active, "device keys: no key in force"
        # keep a place for the revocation of the key put in force now
        assert n + 2 <= MAX_CHANGES, "device keys: history full"
        assert self._on_curve(key), "device keys: not a P-256 public key"
        key_hash: bytes32 = keccak256(key)
        assert not self._used[owner][device][key_hash], "device keys: key used before in this slot"
        self._used[owner][device][key_hash] = True
        x = extract32(key, 0)
        y = extract32(key, 32)
    self._history[owner][device].append(Change(block=block.number, action=action, x=x, y=y))
    log KeyChanged(owner=owner, device=device, key=concat(x, y), action=action, by=msg.sender)


@internal
@pure
def _on_curve(key: Bytes[64]) -> bool:
    if len(key) != 64:
        return False
    x: uint256 = extract32(key, 0, output_type=uint256)
    y: uint256 = extract32(key, 32, output_type=uint256)
    if x >= _P or y >= _P:
        return False
    rhs: uint256 = uint256_addmod(
        uint256_mulmod(uint256_mulmod(x, x, _P), x, _P), uint256_addmod(uint256_mulmod(_A, x, _P), _B, _P), _P
    )
    return uint256_mulmod(y, y, _P) == rhs

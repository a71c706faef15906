"""Gas of the device key registry: register, rotate, revoke, relayed and governed changes.

Runs on the embedded chain (py-evm, cancun rules: the same gas as anvil or a mainnet node for
the same state). Each figure is printed beside a reference measured in the same run, a
payment-token ``transfer`` between two funded accounts, and as a ratio to it.

    python benchmarks/device_keys_gas.py

Every change appends a checkpoint (block, action, X, Y: four fresh storage slots) to its slot's
history; a registration or rotation also marks the key used in the slot (one more slot). The
governed change is measured twice: the registry's own call made by a plain governor account,
and a whole executed community vote (``Governor.execute`` through the timelock) carrying it.
"""

from __future__ import annotations

import argparse

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_typing import HexStr
from web3 import Web3

from adapters.chain import ChainClient, derive_account
from adapters.chain.device_keys import DeviceKeys, KeyAction, sign_key_change
from adapters.chain.embedded import embedded_web3
from adapters.chain.governance import Governance, Support
from adapters.chain.node import hex0x


def p256_key(seed: int) -> bytes:
    private = ec.derive_private_key(seed, ec.SECP256R1())
    return private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    w3 = embedded_web3()
    operator = derive_account("operator")
    client = ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**21)
    client.deploy_all()
    members = [derive_account(f"member-{i}") for i in range(3)]
    governor = derive_account("governor")
    for account in [*members, governor]:
        client.fund_eth(account.address, 10**19)
    alice = members[0]
    client.mint(alice.address, 10**9)
    token = client.contracts.token
    data = token.encode_abi("transfer", args=[members[1].address, 10**6])
    ref = client.contracts.sender.transact(alice, token.address, data, 100_000)[1].gas_used

    rows: list[tuple[str, int]] = []
    keys = DeviceKeys(client.contracts)
    keys.deploy(governor.address)
    deployed = w3.eth.get_block(w3.eth.block_number)["transactions"][0]
    rows.append(("deploy the registry", w3.eth.get_transaction_receipt(deployed)["gasUsed"]))
    seeds = iter(range(1, 100))
    rows.append(
        (
            "register (a slot's first key)",
            keys.register(alice, "m1", p256_key(next(seeds))).gas_used,
        )
    )
    rows.append(("rotate", keys.rotate(alice, "m1", p256_key(next(seeds))).gas_used))
    rows.append(("rotate (tenth change of the slot)", 0))
    for _ in range(8):
        last = keys.rotate(alice, "m1", p256_key(next(seeds)))
    rows[-1] = (rows[-1][0], last.gas_used)
    rows.append(("revoke", keys.revoke(alice, "m1").gas_used))
    rows.append(
        ("register after a revocation", keys.register(alice, "m1", p256_key(next(seeds))).gas_used)
    )

    chain_id = keys.chain_id()
    for action, label in ((KeyAction.REGISTER, "register"), (KeyAction.REVOKE, "revoke")):
        key = p256_key(next(seeds)) if action is KeyAction.REGISTER else b""
        signature = sign_key_change(
            members[1],
            chain_id,
            keys.address,
            device_id="m2",
            key=key,
            action=action,
            nonce=keys.nonce(members[1].address),
            deadline=2**40,
        )
        relayed = keys.relay(
            operator,
            owner=members[1].address,
            device_id="m2",
            key=key,
            action=action,
            deadline=2**40,
            signature=signature,
        )
        rows.append((f"relayed EIP-712 change: {label}", relayed.gas_used))

    def governed(action: KeyAction, key: bytes) -> int:
        call = keys.govern(members[2].address, "m3", key, action)
        target = Web3.to_checksum_address(call.target)
        sender = client.contracts.sender
        return sender.transact(governor, target, HexStr(hex0x(call.payload)), 400_000)[1].gas_used

    rows.append(
        (
            "govern: register (the governor's call)",
            governed(KeyAction.REGISTER, p256_key(next(seeds))),
        )
    )
    rows.append(("govern: revoke (the governor's call)", governed(KeyAction.REVOKE, b"")))

    # the same revocation carried by a whole community vote, executed through the timelock
    gov = Governance(client.contracts)
    gov.deploy(
        members=[m.address for m in members],
        parameters={"community_fee_bps": 0},
        delay_s=60,
        voting_period_s=60,
        quorum_bps=5_000,
        pause_hours=1,
    )
    gov.hand_over()
    voted = DeviceKeys(client.contracts)
    voted.deploy(gov.timelock.address)
    voted.register(alice, "m4", p256_key(next(seeds)))
    pid, _ = gov.propose(
        members[1], [voted.govern(alice.address, "m4", b"", KeyAction.REVOKE)], "x" * 40
    )
    for m in members:
        gov.vote(m, pid, Support.FOR)
    for step in (gov.queue, gov.execute):
        now = w3.eth.get_block("latest")["timestamp"]
        w3.provider.make_request("testing_timeTravel", [now + 61])  # type: ignore[arg-type]
        result = step(operator, pid)
    rows.append(("execute a vote that revokes one key", result.gas_used))

    print(f"reference: payment-token transfer = {ref:,} gas")
    print(f"{'operation':48} {'gas':>12} {'x transfer':>11}")
    for label, gas in rows:
        print(f"{label:48} {gas:>12,} {gas / ref:>11.1f}")


if __name__ == "__main__":
    main()

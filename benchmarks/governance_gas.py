"""Gas of community governance: deploy, hand-over, propose, vote, queue, execute (issue 16).

Runs on the embedded chain (py-evm, cancun rules: the same gas as anvil or a mainnet node for
the same state). Each figure is printed beside a reference measured in the same run, a
payment-token ``transfer`` between two funded accounts, and as a ratio to it.

    python benchmarks/governance_gas.py

Proposals set registry parameters (``community_fee_bps``, ``gate_closure_s``, ...), one
68-byte call each, with a 40-byte description.
"""

from __future__ import annotations

import argparse

from adapters.chain import ChainClient, derive_account
from adapters.chain.embedded import embedded_web3
from adapters.chain.governance import Governance, Support, sign_ballot
from market.governance import REGISTRY

MEMBERS = 20


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    w3 = embedded_web3()
    operator = derive_account("operator")
    client = ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**21)
    client.deploy_all(reward_rate=1_000_000, reward_cap=50_000_000)
    members = [derive_account(f"member-{i}") for i in range(MEMBERS)]
    for m in members:
        client.fund_eth(m.address, 10**19)
    client.mint(members[0].address, 10**9)
    token = client.contracts.token
    data = token.encode_abi("transfer", args=[members[1].address, 10**6])
    reference = client.contracts.sender.transact(members[0], token.address, data, 100_000)[1]
    ref = reference.gas_used

    rows: list[tuple[str, int]] = []
    gov = Governance(client.contracts)
    before = w3.eth.block_number
    gov.deploy(
        members=[m.address for m in members],
        parameters={name: 0 for name in REGISTRY},
        delay_s=3_600,
        voting_period_s=86_400,
        quorum_bps=5_000,
        pause_hours=24,
    )
    deploy_gas = sum(
        w3.eth.get_transaction_receipt(tx)["gasUsed"]
        for n in range(before + 1, w3.eth.block_number + 1)
        for tx in w3.eth.get_block(n)["transactions"]
    )
    rows.append((f"deploy the five contracts ({MEMBERS} members)", deploy_gas))
    rows.append(("hand-over (all its transactions)", sum(r.gas_used for r in gov.hand_over())))

    names = sorted(REGISTRY)
    chain_id = w3.eth.chain_id
    for n_actions in (1, 4, 8):
        picked = [names[i % len(names)] for i in range(n_actions)]
        actions = [
            gov.set_parameter(n, 1 if n.endswith("_min") else 100 + i) for i, n in enumerate(picked)
        ]
        pid, tx = gov.propose(members[0], actions, "x" * 40)
        rows.append((f"propose, {n_actions} action(s)", tx.gas_used))
        first = gov.vote(members[0], pid, Support.FOR)
        second = gov.vote(members[1], pid, Support.FOR)
        signature = sign_ballot(members[2], chain_id, gov.governor.address, pid, Support.AGAINST)
        relayed = gov.vote_by_sig(members[3], pid, Support.AGAINST, members[2].address, signature)
        for m in members[4:11]:
            gov.vote(m, pid, Support.FOR)
        if n_actions == 1:
            rows.append(("vote (first on a proposal)", first.gas_used))
            rows.append(("vote (later)", second.gas_used))
            rows.append(("vote by relayed EIP-712 signature", relayed.gas_used))
        now = w3.eth.get_block("latest")["timestamp"]
        w3.provider.make_request("testing_timeTravel", [now + 86_401])  # type: ignore[arg-type]
        queued = gov.queue(members[5], pid)
        now = w3.eth.get_block("latest")["timestamp"]
        w3.provider.make_request("testing_timeTravel", [now + 3_601])  # type: ignore[arg-type]
        executed = gov.execute(members[5], pid)
        rows.append((f"queue, {n_actions} action(s)", queued.gas_used))
        rows.append((f"execute, {n_actions} action(s)", executed.gas_used))

    pause = gov.pause(operator)
    now = w3.eth.get_block("latest")["timestamp"]
    w3.provider.make_request("testing_timeTravel", [now + 24 * 3_600])  # type: ignore[arg-type]
    lift = gov.lift_pause(members[7])
    rows.append(("guardian pause", pause.gas_used))
    rows.append(("lift an expired pause", lift.gas_used))

    print(f"reference: payment-token transfer = {ref:,} gas")
    print(f"{'operation':48} {'gas':>12} {'x transfer':>11}")
    for label, gas in rows:
        print(f"{label:48} {gas:>12,} {gas / ref:>11.1f}")


if __name__ == "__main__":
    main()

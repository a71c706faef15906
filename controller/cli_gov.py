"""``peergrid gov ...``: a community's votes on its market's rules, on an anvil or RPC chain.

Subcommands (each takes ``--json``; the chain flags are ``peergrid chain``'s):

=============  ================================================================================
``deploy``     the membership (``--member ADDRESS`` repeated, or the ``--site``'s participants),
               timelock, governor, parameters registry and pause guardian, signed by the
               admin; ``--hand-over`` hands the site's contracts to the community at once;
               ``--out FILE`` writes the addresses as JSON (what ``--governance`` reads)
``hand-over``  the timelock becomes the settlement contract's admin and the owner of the reward
               token, the membership and the registry; the admin renounces its roles (again
               safe: steps already done are skipped)
``propose``    a member proposes changes (``--set NAME=VALUE``, ``--reward-policy RATE CAP``,
               ``--withdrawal-delay S``, ``--admit``/``--remove ADDRESS``, ``--voting-period S``,
               ``--quorum-bps N``, ``--delay S``, ``--pause-hours H``, ``--pauser ADDRESS``,
               ``--grant-operator``/``--revoke-operator ADDRESS``) with ``--description``
``vote``       a member votes ``for``, ``against`` or ``abstain`` on a proposal
``queue``      anyone queues a passed proposal in the timelock
``execute``    anyone executes a queued proposal once its delay has run out
``pause``      the pauser (the operator: its key by default) stops settlements and deposits
               for the governed number of hours; withdrawals and claims stay open
``lift``       anyone lifts the pause once it has expired
``status``     members, the registry's values, the hand-over, and every proposal (or one) with
               its state, votes, quorum, times and calls in words
=============  ================================================================================

The governance contracts' addresses come from ``--governance FILE`` (``gov deploy --out``) or
``$PEERGRID_GOVERNANCE``. A member signs with ``--keystore FILE`` or ``--key-env NAME`` (the
name of an environment variable holding the key), never a key on the command line; without
one, ``queue`` and ``execute`` are signed by the operator's key. On anvil (a dev chain) the
signer is paid gas money from anvil's prefunded accounts.

Every change is checked before gas is spent: a parameter that is not governed, a value
outside its limits, tariff bounds that would cross. What the chain refuses (not a member,
already voted, not ready) exits 1 with the contract's reason. Exit codes as ``peergrid``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli_chain import (
    DEV_ETHER_WEI,
    EXIT_FAILED,
    EXIT_OK,
    _common,
    _print,
    _run,
    _site,
    open_client,
    resolve,
)
from controller.config import ChainBackend
from controller.errors import ConfigError
from controller.keys import DEFAULT_PASSWORD_ENV, KeyRole, KeySource

if TYPE_CHECKING:
    from adapters.chain import ChainClient
    from adapters.chain.governance import Action, Governance

GOVERNANCE_ENV = "PEERGRID_GOVERNANCE"

DEFAULT_DELAY_S = 2 * 86_400
DEFAULT_VOTING_PERIOD_S = 3 * 86_400
DEFAULT_QUORUM_BPS = 3_000
DEFAULT_PAUSE_HOURS = 48


def register(sub: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add ``peergrid gov ...`` to the subparsers ``sub`` of ``peergrid``'s parser."""
    gov = sub.add_parser("gov", help="the community's votes on its market's rules")
    gov_sub = gov.add_subparsers(dest="gov_command", required=True)

    deploy = gov_sub.add_parser("deploy", help="deploy membership, governor, timelock, registry")
    _common(deploy)
    deploy.add_argument("--member", action="append", default=[], help="a first member's address")
    deploy.add_argument("--delay", type=int, default=DEFAULT_DELAY_S, help="timelock delay [s]")
    deploy.add_argument("--voting-period", type=int, default=DEFAULT_VOTING_PERIOD_S, help="[s]")
    deploy.add_argument("--quorum-bps", type=int, default=DEFAULT_QUORUM_BPS, help="[bps]")
    deploy.add_argument("--pause-hours", type=int, default=DEFAULT_PAUSE_HOURS, help="[h]")
    deploy.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a registry value"
    )
    deploy.add_argument("--hand-over", action="store_true", help="hand over at once")
    deploy.add_argument("--out", default=None, help="write the addresses to this JSON file")
    deploy.set_defaults(func=cmd_deploy)

    hand_over = gov_sub.add_parser("hand-over", help="give the community the keys")
    _governed(hand_over)
    hand_over.set_defaults(func=cmd_hand_over)

    propose = gov_sub.add_parser("propose", help="propose changes (a member)")
    _governed(propose, signer=True)
    propose.add_argument("--description", required=True, help="what and why, for the members")
    propose.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    propose.add_argument("--reward-policy", nargs=2, type=int, metavar=("RATE", "CAP"))
    propose.add_argument("--withdrawal-delay", type=int, metavar="S")
    propose.add_argument("--admit", action="append", default=[], metavar="ADDRESS")
    propose.add_argument("--remove", action="append", default=[], metavar="ADDRESS")
    propose.add_argument("--voting-period", type=int, metavar="S")
    propose.add_argument("--quorum-bps", type=int, metavar="BPS")
    propose.add_argument("--delay", type=int, metavar="S")
    propose.add_argument("--pause-hours", type=int, metavar="H")
    propose.add_argument("--pauser", metavar="ADDRESS")
    propose.add_argument("--grant-operator", action="append", default=[], metavar="ADDRESS")
    propose.add_argument("--revoke-operator", action="append", default=[], metavar="ADDRESS")
    propose.set_defaults(func=cmd_propose)

    vote = gov_sub.add_parser("vote", help="vote on a proposal (a member)")
    _governed(vote, signer=True)
    vote.add_argument("proposal", type=int)
    vote.add_argument("choice", choices=("for", "against", "abstain"))
    vote.set_defaults(func=cmd_vote)

    for name, func, text in (
        ("queue", cmd_queue, "queue a passed proposal (anyone)"),
        ("execute", cmd_execute, "execute a queued proposal after its delay (anyone)"),
    ):
        parser = gov_sub.add_parser(name, help=text)
        _governed(parser, signer=True)
        parser.add_argument("proposal", type=int)
        parser.set_defaults(func=func)

    pause = gov_sub.add_parser("pause", help="emergency pause for the governed hours (pauser)")
    _governed(pause, signer=True)
    pause.set_defaults(func=cmd_pause)
    lift = gov_sub.add_parser("lift", help="lift an expired emergency pause (anyone)")
    _governed(lift, signer=True)
    lift.set_defaults(func=cmd_lift)

    status = gov_sub.add_parser("status", help="members, parameters, proposals")
    _governed(status)
    status.add_argument("proposal", type=int, nargs="?", default=None)
    status.set_defaults(func=cmd_status)


def _governed(parser: argparse.ArgumentParser, *, signer: bool = False) -> None:
    _common(parser)
    parser.add_argument("--governance", default=None, help="JSON from 'gov deploy --out'")
    if signer:
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--keystore", default=None, help="the signer's keystore file")
        who.add_argument("--key-env", default=None, help="environment variable with its key")


# ----------------------------------------------------------------------------- helpers


def _signer_source(args: argparse.Namespace) -> KeySource | None:
    if getattr(args, "keystore", None) or getattr(args, "key_env", None):
        return KeySource(
            role=KeyRole.MEMBER,
            keystore=args.keystore or "",
            key_env=args.key_env or "",
            password_env=args.password_env or DEFAULT_PASSWORD_ENV,
        )
    return None


def _attached(client: ChainClient, args: argparse.Namespace) -> Governance:
    from controller.wiring import attach_governance  # noqa: PLC0415 - web3 on demand

    path = args.governance or os.environ.get(GOVERNANCE_ENV, "")
    if not path:
        msg = (
            "which governance? give --governance FILE (from 'gov deploy --out') "
            f"or ${GOVERNANCE_ENV}"
        )
        raise ConfigError(msg)
    return attach_governance(client, path)


def _parse_set(values: list[str]) -> dict[str, int]:
    out = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep:
            msg = f"--set {item!r}: write NAME=VALUE"
            raise ConfigError(msg)
        try:
            out[name.strip()] = int(raw.strip().replace("_", ""))
        except ValueError:
            msg = f"--set {item!r}: the value must be an integer"
            raise ConfigError(msg) from None
    return out


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


# ----------------------------------------------------------------------------- commands


def cmd_deploy(args: argparse.Namespace) -> int:
    """``peergrid gov deploy`` (module docstring)."""

    def body() -> int:
        site = _site(args)
        resolved = resolve(args, site)
        members = list(args.member)
        if not members and site is not None:
            members = [p.account for p in site.participants]
            if "derive" in members:
                msg = "the site's participants have derived demo accounts: give --member ADDRESS"
                raise ConfigError(msg)
        if not members:
            msg = "who are the first members? give --member ADDRESS or a --site with accounts"
            raise ConfigError(msg)
        with open_client(resolved, operator=True, admin=True) as client:
            from adapters.chain.governance import Governance  # noqa: PLC0415

            if resolved.backend is ChainBackend.ANVIL:
                client.fund_eth(client.admin.address, DEV_ETHER_WEI)
            gov = Governance(client.contracts)
            deployment = gov.deploy(
                members=members,
                parameters=_parse_set(args.set),
                delay_s=args.delay,
                voting_period_s=args.voting_period,
                quorum_bps=args.quorum_bps,
                pause_hours=args.pause_hours,
            )
            if args.hand_over:
                gov.hand_over()
            data = {
                **asdict(deployment),
                "settlement": client.contracts.settlement.address,
                "members": gov.member_count(),
                "handed_over": gov.handed_over(),
            }
        if args.out:
            Path(args.out).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        _print(args, data, "\n".join(f"{k:>12}: {v}" for k, v in data.items()))
        return EXIT_OK

    return _run(args, body)


def cmd_hand_over(args: argparse.Namespace) -> int:
    """``peergrid gov hand-over`` (module docstring)."""

    def body() -> int:
        resolved = resolve(args, _site(args))
        with open_client(resolved, operator=False, admin=True) as client:
            gov = _attached(client, args)
            sent = gov.hand_over()
            data = {"transactions": [r.tx_hash for r in sent], "handed_over": gov.handed_over()}
        _print(args, data, f"{len(sent)} transactions; handed over: {data['handed_over']}")
        return EXIT_OK if data["handed_over"] else EXIT_FAILED

    return _run(args, body)


def _actions(gov: Governance, args: argparse.Namespace) -> list[Action]:
    actions = [gov.set_parameter(n, v) for n, v in _parse_set(args.set).items()]
    if args.reward_policy:
        actions.append(gov.reward_policy(*args.reward_policy))
    if args.withdrawal_delay is not None:
        actions.append(gov.withdrawal_delay(args.withdrawal_delay))
    actions += [gov.admit(a) for a in args.admit]
    actions += [gov.remove(a) for a in args.remove]
    if args.voting_period is not None:
        actions.append(gov.voting_period(args.voting_period))
    if args.quorum_bps is not None:
        actions.append(gov.quorum(args.quorum_bps))
    if args.delay is not None:
        actions.append(gov.delay(args.delay))
    if args.pause_hours is not None:
        actions.append(gov.pause_hours(args.pause_hours))
    if args.pauser:
        actions.append(gov.pauser(args.pauser))
    actions += [gov.operator(a, grant=True) for a in args.grant_operator]
    actions += [gov.operator(a, grant=False) for a in args.revoke_operator]
    return actions


def _signed(args: argparse.Namespace, body: Any) -> int:  # noqa: ANN401 - the command's body
    """Run ``body(client, gov, signer)`` with the member's (or else the operator's) key."""

    def run() -> int:
        resolved = resolve(args, _site(args))
        source = _signer_source(args)
        signer = source.signer() if source is not None else None
        with open_client(resolved, operator=signer is None) as client:
            account = signer or client.operator
            if resolved.backend is ChainBackend.ANVIL:
                client.fund_eth(account.address, DEV_ETHER_WEI)
            code: int = body(client, _attached(client, args), account)
            return code

    return _run(args, run)


def cmd_propose(args: argparse.Namespace) -> int:
    """``peergrid gov propose`` (module docstring)."""

    def body(client: ChainClient, gov: Governance, account: Any) -> int:  # noqa: ANN401
        actions = _actions(gov, args)
        if not actions:
            msg = "propose what? give at least one change (--set, --admit, --reward-policy, ...)"
            raise ConfigError(msg)
        pid, tx = gov.propose(account, actions, args.description)
        proposal = gov.proposal(pid)
        changes = [a.summary for a in actions]
        data = {
            "proposal": pid,
            "tx": tx.tx_hash,
            "snapshot_block": proposal.snapshot,
            "vote_end": _utc(proposal.vote_end),
            "quorum": proposal.quorum,
            "changes": changes,
        }
        text = f"proposal {pid}: {'; '.join(changes)}; vote until {data['vote_end']}"
        _print(args, data, text)
        return EXIT_OK

    return _signed(args, body)


def cmd_vote(args: argparse.Namespace) -> int:
    """``peergrid gov vote`` (module docstring)."""

    def body(client: ChainClient, gov: Governance, account: Any) -> int:  # noqa: ANN401
        from adapters.chain.governance import Support  # noqa: PLC0415

        support = Support[args.choice.upper()]
        tx = gov.vote(account, args.proposal, support)
        p = gov.proposal(args.proposal)
        data = {
            "proposal": args.proposal,
            "voter": account.address,
            "choice": args.choice,
            "tx": tx.tx_hash,
            "for": p.votes_for,
            "against": p.votes_against,
            "abstain": p.votes_abstain,
            "quorum": p.quorum,
        }
        text = (
            f"{account.address} voted {args.choice} on proposal {args.proposal}: "
            f"{p.votes_for} for, {p.votes_against} against, {p.votes_abstain} abstain "
            f"(quorum {p.quorum})"
        )
        _print(args, data, text)
        return EXIT_OK

    return _signed(args, body)


def cmd_queue(args: argparse.Namespace) -> int:
    """``peergrid gov queue`` (module docstring)."""

    def body(client: ChainClient, gov: Governance, account: Any) -> int:  # noqa: ANN401
        tx = gov.queue(account, args.proposal)
        eta = gov.proposal(args.proposal).eta
        data = {"proposal": args.proposal, "tx": tx.tx_hash, "executable_from": _utc(eta)}
        _print(args, data, f"proposal {args.proposal} queued; executable from {_utc(eta)}")
        return EXIT_OK

    return _signed(args, body)


def cmd_execute(args: argparse.Namespace) -> int:
    """``peergrid gov execute`` (module docstring)."""

    def body(client: ChainClient, gov: Governance, account: Any) -> int:  # noqa: ANN401
        tx = gov.execute(account, args.proposal)
        data = {"proposal": args.proposal, "tx": tx.tx_hash, "block": tx.block_number}
        _print(args, data, f"proposal {args.proposal} executed in block {tx.block_number}")
        return EXIT_OK

    return _signed(args, body)


def cmd_pause(args: argparse.Namespace) -> int:
    """``peergrid gov pause`` (module docstring)."""

    def body(client: ChainClient, gov: Governance, account: Any) -> int:  # noqa: ANN401
        tx = gov.pause(account)
        until = int(gov.guardian.functions.paused_until().call())
        data = {"tx": tx.tx_hash, "paused_until": _utc(until)}
        _print(args, data, f"settlements and deposits paused until {_utc(until)}")
        return EXIT_OK

    return _signed(args, body)


def cmd_lift(args: argparse.Namespace) -> int:
    """``peergrid gov lift`` (module docstring)."""

    def body(client: ChainClient, gov: Governance, account: Any) -> int:  # noqa: ANN401
        tx = gov.lift_pause(account)
        data = {"tx": tx.tx_hash, "paused": client.is_paused()}
        _print(args, data, "the expired pause is lifted")
        return EXIT_OK

    return _signed(args, body)


def cmd_status(args: argparse.Namespace) -> int:
    """``peergrid gov status`` (module docstring)."""

    def body() -> int:
        from market.governance import REGISTRY  # noqa: PLC0415

        resolved = resolve(args, _site(args))
        with open_client(resolved) as client:
            gov = _attached(client, args)
            count = gov.proposal_count()
            ids = [args.proposal] if args.proposal is not None else range(1, count + 1)
            proposals: list[dict[str, Any]] = []
            for pid in ids:
                p = gov.proposal(pid)
                proposals.append(
                    {
                        "proposal": pid,
                        "state": p.state.name.lower(),
                        "proposer": p.proposer,
                        "snapshot_block": p.snapshot,
                        "vote_end": _utc(p.vote_end),
                        "for": p.votes_for,
                        "against": p.votes_against,
                        "abstain": p.votes_abstain,
                        "quorum": p.quorum,
                        "executable_from": _utc(p.eta),
                        "changes": [
                            gov.describe(t, d) for t, d in zip(p.targets, p.payloads, strict=True)
                        ],
                    }
                )
            parameters = {n: gov.parameter(n) for n in REGISTRY}
            data = {
                "governor": gov.governor.address,
                "members": gov.member_count(),
                "handed_over": gov.handed_over(),
                "parameters": parameters,
                "proposals": proposals,
            }
        lines = [
            f"governor {data['governor']}: {data['members']} members, "
            f"handed over: {data['handed_over']}",
            "parameters: "
            + ", ".join(f"{n} = {'unset' if v is None else v}" for n, v in parameters.items()),
        ]
        for row in proposals:
            lines.append(
                f"#{row['proposal']} {row['state']}: {row['for']} for, {row['against']} against, "
                f"{row['abstain']} abstain (quorum {row['quorum']}), vote until "
                f"{row['vote_end']}, executable from {row['executable_from']}: "
                + "; ".join(row["changes"])
            )
        _print(args, data, "\n".join(lines))
        return EXIT_OK

    return _run(args, body)


__all__ = ["register"]

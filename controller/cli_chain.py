"""``peergrid chain ...``: deploy, inspect and settle on an anvil or RPC chain.

Subcommands (each takes ``--json``):

==================  =========================================================================
``deploy``          payment token (unless ``--token`` names one, e.g. a stablecoin), reward
                    token (unless ``--no-reward``) and settlement contract; prints the
                    addresses (``--out FILE`` also writes them as JSON)
``status``          chain, contracts, roles, pause, totals, reward policy, settled intervals;
                    with ``--db``, the store's settlements compared with the chain
``balances``        wallet, escrow, available credit, pending withdrawal and unclaimed rewards
                    of ``--account`` addresses or of a ``--site``'s participants
``settle-pending``  sends the settlement intents the store holds without a receipt (the chain
                    is asked first, so nothing is paid twice)
``verify-trade``    checks one trade against the trades root recorded on-chain: from the store
                    (``--db``, ``--interval``, ``--trade``) or from a leaf and proof given
==================  =========================================================================

Where the chain is: ``--backend anvil`` starts anvil on a free port with ``--state FILE``
(default ``peergrid-anvil.json``; the chain lives in that file between commands) and stops it
at the end; ``--backend rpc --rpc-url URL`` talks to any node. Without flags, the site file's
``[chain]`` table (``--site``), then the environment, then ``anvil`` is used.

Flags, environment variables and site keys, first found wins:

==========================  ==========================  =====================================
flag                        environment                 site ``[chain]`` / note
==========================  ==========================  =====================================
``--backend``               ``PEERGRID_CHAIN_BACKEND``  ``backend``; a site's ``embedded`` is
                                                        skipped (it would not outlive the
                                                        command); default ``anvil``
``--rpc-url``               ``PEERGRID_RPC_URL``        ``rpc_url``
``--state``                 ``PEERGRID_ANVIL_STATE``    anvil's state file
``--confirmations``         ``PEERGRID_CONFIRMATIONS``  ``confirmations``
``--token``                 ``PEERGRID_TOKEN``          ``token_address``
``--settlement``            ``PEERGRID_SETTLEMENT``     ``settlement_address``
``--deployment FILE``                                   ``deploy --out FILE``: addresses, and
                                                        backend, URL, state file if not given
``--operator-key``          ``PEERGRID_OPERATOR_KEY``   hex private key, or ``derive:LABEL``
``--admin-key``             ``PEERGRID_ADMIN_KEY``      default: the operator's key
==========================  ==========================  =====================================

Keys: a ``0x`` hex private key, or ``derive:LABEL`` for the demo keys of
:func:`adapters.chain.accounts.derive_account` (anyone who knows the label knows the key: dev
chains only). On anvil without a key, ``derive:operator`` is used, and the operator and admin
are paid ether from anvil's prefunded accounts.

Exit codes as ``peergrid``: 0 ok; 1 the job ran and something failed (an interval not
settled, a trade that does not verify, the chain unreachable); 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.config import ChainBackend, SiteConfig, read_site
from controller.errors import ConfigError

if TYPE_CHECKING:
    from adapters.chain import AccountState, ChainClient

# adapters.chain (web3, ~1 s to import) is imported by the commands, not here: registering
# the subcommands must not slow down every other ``peergrid`` command.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

DEFAULT_STATE = "peergrid-anvil.json"
DEV_ETHER_WEI = 100 * 10**18


@dataclass(frozen=True, slots=True)
class ChainArgs:
    """Where the chain is and who signs, resolved from flags, environment and site."""

    backend: ChainBackend
    rpc_url: str
    state: str
    confirmations: int
    token: str
    settlement: str
    operator_key: str
    admin_key: str


def register(sub: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add ``peergrid chain ...`` to the subparsers ``sub`` of ``peergrid``'s parser.

    Parameters
    ----------
    sub : argparse subparsers action
        What ``ArgumentParser.add_subparsers`` returned for ``peergrid``.
    """
    chain = sub.add_parser("chain", help="deploy, inspect and settle on an anvil or RPC chain")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True)

    deploy = chain_sub.add_parser("deploy", help="deploy the token, reward and settlement")
    _common(deploy, addresses=False)
    deploy.add_argument("--token", default=None, help="use this payment token (6 decimals)")
    deploy.add_argument("--token-name", default="PeerGrid Dollar")
    deploy.add_argument("--token-symbol", default="PGD")
    deploy.add_argument("--no-reward", action="store_true", help="deploy without reward token")
    deploy.add_argument(
        "--reward-rate", type=int, default=1_000_000, help="reward units per kWh (1e6 = 1 PGR)"
    )
    deploy.add_argument(
        "--reward-cap", type=int, default=100_000_000, help="most reward units per interval"
    )
    deploy.add_argument("--withdrawal-delay", type=int, default=0, help="notice [s]")
    deploy.add_argument("--out", default=None, help="also write the addresses to this file")
    deploy.set_defaults(func=cmd_deploy)

    status = chain_sub.add_parser("status", help="chain, contracts, roles, totals")
    _common(status)
    status.add_argument("--db", default=None, help="compare with this store (database URL)")
    status.set_defaults(func=cmd_status)

    balances = chain_sub.add_parser("balances", help="wallets, escrow, credit, rewards")
    _common(balances)
    balances.add_argument("--account", action="append", default=[], help="an address (repeat)")
    balances.set_defaults(func=cmd_balances)

    pending = chain_sub.add_parser("settle-pending", help="send the store's pending intents")
    _common(pending)
    pending.add_argument("--db", default=None, help="database URL (default: the site's)")
    pending.set_defaults(func=cmd_settle_pending)

    verify = chain_sub.add_parser("verify-trade", help="check a trade against the chain")
    _common(verify)
    verify.add_argument("--interval", type=int, required=True, help="interval id (Unix s)")
    verify.add_argument("--db", default=None, help="database URL (default: the site's)")
    verify.add_argument("--trade", default=None, help="index or trade_id of the stored trade")
    verify.add_argument("--leaf", default=None, help="JSON file of the trade (instead of --db)")
    verify.add_argument("--proof", default=None, help="comma-separated hex siblings (--leaf)")
    verify.set_defaults(func=cmd_verify_trade)


def _common(parser: argparse.ArgumentParser, *, addresses: bool = True) -> None:
    parser.add_argument("--site", default=None, help="site TOML file ([chain] table)")
    parser.add_argument("--backend", choices=("anvil", "rpc"), default=None)
    parser.add_argument("--rpc-url", default=None)
    parser.add_argument("--state", default=None, help=f"anvil state file ({DEFAULT_STATE})")
    parser.add_argument("--confirmations", type=int, default=None, help="finality depth")
    parser.add_argument("--operator-key", default=None, help="hex key or derive:LABEL")
    parser.add_argument("--admin-key", default=None, help="hex key or derive:LABEL")
    if addresses:
        parser.add_argument("--token", default=None, help="payment token address")
        parser.add_argument("--settlement", default=None, help="settlement contract address")
        parser.add_argument("--deployment", default=None, help="JSON from deploy --out")
    parser.add_argument("--json", action="store_true", help="print JSON")


# ----------------------------------------------------------------------------- resolution


def _site(args: argparse.Namespace) -> SiteConfig | None:
    return read_site(args.site) if getattr(args, "site", None) else None


def resolve(args: argparse.Namespace, site: SiteConfig | None) -> ChainArgs:
    """Flags, then environment, then the site's ``[chain]`` table (module docstring).

    Parameters
    ----------
    args : argparse.Namespace
        The command's parsed flags.
    site : SiteConfig or None
        The ``--site`` file, if given.

    Returns
    -------
    ChainArgs
        Backend (``anvil`` or ``rpc``), URL, anvil state file, confirmations [blocks],
        contract addresses and keys.

    Raises
    ------
    ConfigError
        An unreadable ``--deployment`` file, an ``embedded`` or unknown backend, or ``rpc``
        without URL or operator key.
    """
    env = os.environ
    chain = site.chain if site is not None else None
    deployment: dict[str, Any] = {}
    if getattr(args, "deployment", None):
        try:
            deployment = json.loads(Path(args.deployment).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            msg = f"--deployment {args.deployment}: {exc}"
            raise ConfigError(msg) from None
    site_backend = (
        chain.backend if chain is not None and chain.backend is not ChainBackend.EMBEDDED else ""
    )
    named = (
        args.backend
        or env.get("PEERGRID_CHAIN_BACKEND")
        or deployment.get("backend")
        or site_backend
        or ChainBackend.ANVIL
    )
    if named not in {ChainBackend.ANVIL, ChainBackend.RPC}:
        msg = f"chain backend must be anvil or rpc for 'peergrid chain', got {named!r}"
        raise ConfigError(msg)
    backend = ChainBackend(named)
    rpc_url = (
        args.rpc_url
        or env.get("PEERGRID_RPC_URL")
        or (chain.rpc_url if chain is not None else "")
        or (deployment.get("rpc_url", "") if backend is ChainBackend.RPC else "")
    )
    if backend is ChainBackend.RPC and not rpc_url:
        msg = "the rpc backend needs --rpc-url (or PEERGRID_RPC_URL, or the site's rpc_url)"
        raise ConfigError(msg)
    confirmations = args.confirmations
    if confirmations is None:
        raw = env.get("PEERGRID_CONFIRMATIONS")
        confirmations = int(raw) if raw else (chain.confirmations if chain is not None else 0)
    operator_key = args.operator_key or env.get("PEERGRID_OPERATOR_KEY", "")
    if not operator_key:
        if backend is ChainBackend.RPC:
            msg = "the rpc backend needs --operator-key (or PEERGRID_OPERATOR_KEY)"
            raise ConfigError(msg)
        operator_key = "derive:operator"
    return ChainArgs(
        backend=backend,
        rpc_url=rpc_url,
        state=args.state
        or env.get("PEERGRID_ANVIL_STATE")
        or deployment.get("state")
        or DEFAULT_STATE,
        confirmations=confirmations,
        token=getattr(args, "token", None)
        or env.get("PEERGRID_TOKEN", "")
        or deployment.get("token", "")
        or (chain.token_address if chain is not None else ""),
        settlement=getattr(args, "settlement", None)
        or env.get("PEERGRID_SETTLEMENT", "")
        or deployment.get("settlement", "")
        or (chain.settlement_address if chain is not None else ""),
        operator_key=operator_key,
        admin_key=args.admin_key or env.get("PEERGRID_ADMIN_KEY", "") or operator_key,
    )


def _account(key: str, what: str) -> Any:  # noqa: ANN401 - an eth-account LocalAccount
    from adapters.chain import account_from_key, derive_account  # noqa: PLC0415

    if key.startswith("derive:"):
        return derive_account(key.removeprefix("derive:"))
    try:
        return account_from_key(key)
    except ValueError:
        msg = f"{what}: not a private key (0x + 64 hex digits) nor derive:LABEL"
        raise ConfigError(msg) from None


@contextmanager
def open_client(resolved: ChainArgs, *, attach: bool = True) -> Iterator[ChainClient]:
    """Connect, build the client (attached to the contracts), close at the end.

    Parameters
    ----------
    resolved : ChainArgs
        Where the chain is and who signs.
    attach : bool
        Attach to the token and settlement contracts (``False`` for ``deploy``).

    Yields
    ------
    ChainClient
        The client, signing as the operator (and the admin).

    Raises
    ------
    ConfigError
        A key that is neither hex nor ``derive:LABEL``, or ``attach`` without addresses.
    """
    from adapters.chain import ChainClient, connect  # noqa: PLC0415

    conn = connect(
        resolved.backend,
        rpc_url=resolved.rpc_url or None,
        state_path=resolved.state if resolved.backend is ChainBackend.ANVIL else None,
    )
    try:
        client = ChainClient(
            conn.w3,
            _account(resolved.operator_key, "--operator-key"),
            admin=_account(resolved.admin_key, "--admin-key"),
            confirmations=resolved.confirmations,
        )
        if attach:
            if not (resolved.token and resolved.settlement):
                msg = "which contracts? give --token and --settlement, or --deployment FILE"
                raise ConfigError(msg)
            client.attach(resolved.token, resolved.settlement)
        yield client
    finally:
        conn.close()


def _print(args: argparse.Namespace, data: Any, text: str) -> None:  # noqa: ANN401
    out = json.dumps(data, indent=2, default=str) if args.json else text
    sys.stdout.write(out + "\n")


def _run(args: argparse.Namespace, body: Any) -> int:  # noqa: ANN401 - the command's body
    """Run ``body()``; chain failures exit 1 with the message, bad input exits 2."""
    from adapters.chain import ChainError  # noqa: PLC0415

    try:
        code: int = body()
    except ValueError as exc:  # ConfigError, and the chain's InvalidArgument family
        sys.stderr.write(f"peergrid chain: error: {exc}\n")
        return EXIT_BAD_INPUT
    except ChainError as exc:
        sys.stderr.write(f"peergrid chain: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED
    return code


# ----------------------------------------------------------------------------- commands


def cmd_deploy(args: argparse.Namespace) -> int:
    """``peergrid chain deploy``: deploy the contracts (module docstring).

    Parameters
    ----------
    args : argparse.Namespace
        The command's parsed flags.

    Returns
    -------
    int
        The exit code (module docstring).
    """

    def body() -> int:
        resolved = resolve(args, _site(args))
        with open_client(resolved, attach=False) as client:
            # a dev chain: pay gas from anvil's own accounts
            if resolved.backend is ChainBackend.ANVIL:
                for who in {client.operator.address, client.admin.address}:
                    client.fund_eth(who, DEV_ETHER_WEI)
            deployment = client.deploy_all(
                token_name=args.token_name,
                token_symbol=args.token_symbol,
                token=args.token,
                reward_name=None if args.no_reward else "PeerGrid Energy Reward",
                withdrawal_delay_s=args.withdrawal_delay,
                reward_rate=0 if args.no_reward else args.reward_rate,
                reward_cap=0 if args.no_reward else args.reward_cap,
            )
            data = {
                "backend": resolved.backend,
                "rpc_url": resolved.rpc_url,
                "state": resolved.state if resolved.backend is ChainBackend.ANVIL else "",
                "chain_id": client.chain_id(),
                "block": client.block_number(),
                **asdict(deployment),
                "admin": client.admin.address,
                "operator": client.operator.address,
            }
        if args.out:
            Path(args.out).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        text = "\n".join(f"{k:>12}: {v}" for k, v in data.items())
        _print(args, data, text)
        return EXIT_OK

    return _run(args, body)


def cmd_status(args: argparse.Namespace) -> int:
    """``peergrid chain status``: the chain's state, compared with a store.

    Parameters
    ----------
    args : argparse.Namespace
        The command's parsed flags.

    Returns
    -------
    int
        The exit code (module docstring).
    """

    def body() -> int:
        site = _site(args)
        resolved = resolve(args, site)
        with open_client(resolved) as client:
            events = client.settled_events()
            policy = client.reward_policy()
            operator = client.operator.address
            data: dict[str, Any] = {
                "backend": resolved.backend,
                "chain_id": client.chain_id(),
                "block": client.block_number(),
                **asdict(client.deployment()),
                "operator": {
                    "address": operator,
                    "is_operator": client.is_operator(operator),
                    "is_admin": client.is_admin(client.admin.address),
                    "next_nonce": client.next_nonce(),
                },
                "paused": client.is_paused(),
                "token_supply": client.total_supply(),
                "total_escrow": client.total_escrow(),
                "reward_supply": client.reward_supply(),
                "unclaimed_rewards": client.total_rewards(),
                "reward_policy": {"rate_per_kwh": policy.rate, "cap_per_interval": policy.cap},
                "withdrawal_delay_s": client.withdrawal_delay(),
                "settled_intervals": len(events),
                "last_settled": asdict(events[-1]) if events else None,
            }
            problems: list[str] = []
            url = args.db or (site.database if site is not None else None)
            if url:
                data["store"] = _compare_store(client, url, problems)
        text = "\n".join(f"{k:>18}: {v}" for k, v in data.items())
        _print(args, data, text)
        return EXIT_OK if not problems else EXIT_FAILED

    return _run(args, body)


def _compare_store(client: ChainClient, url: str, problems: list[str]) -> dict[str, Any]:
    from controller.store import Store  # noqa: PLC0415 - SQLAlchemy only when asked

    store = Store(url)
    try:
        pending = store.pending_settlements()
        settled = 0
        for row in store.interval_rows():
            record = store.settlement(int(row["interval_id"]))
            if record is None or record["state"] != "settled":
                continue
            settled += 1
            on_chain = client.settled_batch(int(record["interval_id"])).batch_id.hex()
            if on_chain != record["batch_id"]:
                problems.append(
                    f"interval {record['interval_id']}: store has batch {record['batch_id']}, "
                    f"chain has {on_chain or 'nothing'}"
                )
        return {
            "settled": settled,
            "pending": [p.interval_id for p in pending],
            "problems": problems,
        }
    finally:
        store.close()


def cmd_balances(args: argparse.Namespace) -> int:
    """``peergrid chain balances``: balances of addresses or a site's participants.

    Parameters
    ----------
    args : argparse.Namespace
        The command's parsed flags.

    Returns
    -------
    int
        The exit code (module docstring).
    """

    def body() -> int:
        from adapters.chain import checksum_address  # noqa: PLC0415

        site = _site(args)
        resolved = resolve(args, site)
        labels: dict[str, str] = {checksum_address(a): a for a in args.account}
        if site is not None:
            from controller.wiring import participant_accounts  # noqa: PLC0415

            labels |= {
                checksum_address(address): str(p)
                for p, address in participant_accounts(site).items()
            }
        if not labels:
            msg = "whose balances? give --account ADDRESS (repeat) or --site FILE"
            raise ConfigError(msg)
        with open_client(resolved) as client:
            states = client.account_states(labels)
            rows = [
                {
                    "account": label,
                    "address": address,
                    "wallet": client.token_balance(address),
                    **_state(state),
                    "reward_wallet": client.reward_balance(address),
                }
                for (address, label), state in zip(labels.items(), states.values(), strict=True)
            ]
        header = (
            f"{'account':<20} {'wallet':>14} {'escrow':>14} {'available':>14} "
            f"{'pending':>12} {'rewards':>12}"
        )
        text = "\n".join(
            [header]
            + [
                f"{r['account'][:20]:<20} {r['wallet']:>14} {r['escrow']:>14} "
                f"{r['available']:>14} {r['pending_withdrawal']:>12} {r['unclaimed_rewards']:>12}"
                for r in rows
            ]
        )
        _print(args, rows, text)
        return EXIT_OK

    return _run(args, body)


def _state(state: AccountState) -> dict[str, Any]:
    return {
        "index": state.index,
        "escrow": state.escrow,
        "available": state.available,
        "pending_withdrawal": state.pending_withdrawal,
        "unclaimed_rewards": state.unclaimed_rewards,
    }


def cmd_settle_pending(args: argparse.Namespace) -> int:
    """``peergrid chain settle-pending``: the store is only read.

    The controller records each receipt and its audit record on its next start: its own
    resolution of pending intents asks the chain, finds the batch there, and sends nothing.

    Parameters
    ----------
    args : argparse.Namespace
        The command's parsed flags (``--site`` is required).

    Returns
    -------
    int
        0 if every pending intent was settled (or already was), else 1 (2 for bad input).
    """

    def body() -> int:
        from adapters.chain import ChainError  # noqa: PLC0415
        from controller.store import Store  # noqa: PLC0415
        from controller.wiring import participant_accounts  # noqa: PLC0415
        from market.codec import batch_from_dict  # noqa: PLC0415
        from market.domain import Interval  # noqa: PLC0415

        site = _site(args)
        if site is None:
            msg = "settle-pending needs --site (interval length and participants' accounts)"
            raise ConfigError(msg)
        resolved = resolve(args, site)
        accounts = participant_accounts(site)
        store = Store(args.db or site.database)
        try:
            pending = store.pending_settlements()
        finally:
            store.close()
        results: list[dict[str, Any]] = []
        with open_client(resolved) as client:
            for item in pending:
                interval = Interval.from_id(item.interval_id, site.interval_s)
                entry: dict[str, Any] = {"interval_id": item.interval_id, "batch_id": item.batch_id}
                try:
                    batch = batch_from_dict(item.batch, interval)
                    receipt = client.submit_settlement(batch, accounts)
                    entry |= {
                        "status": str(receipt.status),
                        "tx_hash": receipt.tx_hash,
                        "block_number": receipt.block_number,
                        "gas_used": receipt.gas_used,
                    }
                except (ChainError, ValueError, KeyError) as exc:
                    entry |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                results.append(entry)
        lines = [f"{len(results)} pending settlement(s)"] + [
            f"  {r['interval_id']}: {r['status']} {r.get('tx_hash') or r.get('error', '')}"
            for r in results
        ]
        _print(args, results, "\n".join(lines))
        return EXIT_OK if all(r["status"] != "failed" for r in results) else EXIT_FAILED

    return _run(args, body)


def cmd_verify_trade(args: argparse.Namespace) -> int:
    """``peergrid chain verify-trade``: one trade against the trades root on-chain.

    Parameters
    ----------
    args : argparse.Namespace
        The command's parsed flags.

    Returns
    -------
    int
        0 if the contract verifies the trade's proof, else 1 (2 for bad input).
    """

    def body() -> int:
        from market.canonical import canonical_json  # noqa: PLC0415
        from market.merkle import leaf_hash, verify_proof  # noqa: PLC0415

        site = _site(args)
        resolved = resolve(args, site)
        leaf, proof = _leaf_from_files(args) if args.leaf else _leaf_from_store(args, site)
        blob = canonical_json(leaf)
        with open_client(resolved) as client:
            root = client.settled_batch(args.interval).trades_root
            on_chain = client.verify_trade(args.interval, blob, proof)
        data = {
            "interval_id": args.interval,
            "trade_id": leaf.get("trade_id"),
            "leaf_hash": leaf_hash(leaf).hex(),
            "proof": [p.hex() for p in proof],
            "trades_root_on_chain": root.hex(),
            "verified_on_chain": on_chain,
            "verified_locally": verify_proof(root, leaf, proof),
        }
        verdict = "VERIFIED" if on_chain else "NOT VERIFIED"
        _print(args, data, f"trade {data['trade_id']} of interval {args.interval}: {verdict}")
        return EXIT_OK if on_chain else EXIT_FAILED

    return _run(args, body)


def _leaf_from_files(args: argparse.Namespace) -> tuple[dict[str, Any], list[bytes]]:
    try:
        leaf = json.loads(Path(args.leaf).read_text(encoding="utf-8"))
        proof = [bytes.fromhex(h.removeprefix("0x")) for h in (args.proof or "").split(",") if h]
    except (OSError, ValueError) as exc:
        msg = f"--leaf/--proof: {exc}"
        raise ConfigError(msg) from None
    if not isinstance(leaf, dict):
        msg = "--leaf must hold one JSON object (the trade)"
        raise ConfigError(msg)
    return leaf, proof


def _leaf_from_store(
    args: argparse.Namespace, site: SiteConfig | None
) -> tuple[dict[str, Any], list[bytes]]:
    from controller.store import Store  # noqa: PLC0415
    from market.codec import result_from_dict  # noqa: PLC0415
    from market.domain import Interval, trade_to_dict  # noqa: PLC0415
    from market.merkle import merkle_proof  # noqa: PLC0415

    url = args.db or (site.database if site is not None else None)
    if not url or args.trade is None:
        msg = "give --db (or --site) and --trade, or --leaf FILE and --proof"
        raise ConfigError(msg)
    store = Store(url)
    try:
        stored = store.result(args.interval)
    finally:
        store.close()
    if stored is None:
        msg = f"interval {args.interval}: no stored result"
        raise ConfigError(msg)
    length = site.interval_s if site is not None else 900
    result = result_from_dict(stored, Interval.from_id(args.interval, length))
    leaves = [trade_to_dict(t) for t in result.trades]
    chosen = next((t for t in leaves if t["trade_id"] == args.trade), None)
    if chosen is None and args.trade.isdigit() and int(args.trade) < len(leaves):
        chosen = leaves[int(args.trade)]
    if chosen is None:
        msg = f"interval {args.interval}: no trade {args.trade!r} among {len(leaves)}"
        raise ConfigError(msg)
    return chosen, merkle_proof(leaves, chosen)


__all__ = ["ChainArgs", "register", "resolve"]

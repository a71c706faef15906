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
``rotate-operator`` gives ``--new-operator ADDRESS`` the operator role and takes it from the
                    old operator (``--old-operator``, default: the configured operator key's
                    address); signed by the admin
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
``--state``                 ``PEERGRID_ANVIL_STATE``    ``state_path`` (anvil's state file)
``--confirmations``         ``PEERGRID_CONFIRMATIONS``  ``confirmations``
``--token``                 ``PEERGRID_TOKEN``          ``token_address``
``--settlement``            ``PEERGRID_SETTLEMENT``     ``settlement_address``
``--deployment FILE``                                   ``deploy --out FILE``: addresses, and
                                                        backend, URL, state file if not given
``--operator-keystore``     ``PEERGRID_OPERATOR_        ``operator_keystore``
                            KEYSTORE``
``--operator-key-env NAME``                             ``operator_key_env``; without a site
                                                        ``PEERGRID_OPERATOR_KEY``
``--admin-keystore``        ``PEERGRID_ADMIN_KEYSTORE`` ``admin_keystore``
``--admin-key-env NAME``                                ``admin_key_env``; else
                                                        ``PEERGRID_ADMIN_KEY`` if set; else
                                                        the operator's key
``--password-env NAME``                                 ``keystore_password_env``; default
                                                        ``PEERGRID_KEYSTORE_PASSWORD``
==========================  ==========================  =====================================

Keys (:mod:`controller.keys`): a keystore file (Web3 Secret Storage JSON, written by
``peergrid keys new|import``; its password from the ``--password-env`` variable or typed on a
terminal) or the name of an environment variable holding the hex key. A key is never given on
the command line (every user sees the process list), and derived demo keys are not accepted:
``peergrid chain`` works on persistent chains. Only the commands that sign open a key:
``settle-pending`` the operator's; ``deploy`` the admin's (it signs) and the operator's (its
address becomes the first operator); ``rotate-operator`` the admin's. ``status``, ``balances``
and ``verify-trade`` only read (``status`` shows the operator's roles when a key is
configured, reading a keystore's address without its password). On ``anvil`` (a dev chain)
``deploy`` and ``rotate-operator`` pay the accounts that will sign gas money from anvil's
prefunded accounts; on ``rpc`` they bring their own.

The store (``status``, ``settle-pending``, ``verify-trade`` from ``--db`` or the site's
``database``) is only read: one that does not exist is an error, and with ``--site`` one bound
to another site (:mod:`controller.site_identity`: name, chain id, Settlement address, grid;
``verify-trade`` reads it before connecting, so not the chain id) is refused before anything
is sent.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.config import ChainBackend, ChainConfig, SiteConfig, read_site
from controller.errors import ConfigError
from controller.keys import (
    DEFAULT_ADMIN_KEY_ENV,
    DEFAULT_OPERATOR_KEY_ENV,
    DEFAULT_PASSWORD_ENV,
    KeyRole,
    KeySource,
    site_admin_key,
    site_operator_key,
)
from controller.userfiles import read_text
from market.domain import utc_label

if TYPE_CHECKING:
    from adapters.chain import AccountState, ChainClient
    from controller.site_identity import SiteIdentity

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
    operator: KeySource
    admin: KeySource


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

    rotate = chain_sub.add_parser(
        "rotate-operator", help="move the operator role to a new key (signed by the admin)"
    )
    _common(rotate)
    rotate.add_argument("--new-operator", required=True, help="address of the new operator key")
    rotate.add_argument(
        "--old-operator", default=None, help="address losing the role (default: the configured)"
    )
    rotate.set_defaults(func=cmd_rotate_operator)


def _common(parser: argparse.ArgumentParser, *, addresses: bool = True) -> None:
    parser.add_argument("--site", default=None, help="site TOML file ([chain] table)")
    parser.add_argument("--backend", choices=("anvil", "rpc"), default=None)
    parser.add_argument("--rpc-url", default=None)
    parser.add_argument("--state", default=None, help=f"anvil state file ({DEFAULT_STATE})")
    parser.add_argument("--confirmations", type=int, default=None, help="finality depth")
    keys = parser.add_argument_group("keys (never a key itself: see 'peergrid keys')")
    operator = keys.add_mutually_exclusive_group()
    operator.add_argument("--operator-keystore", default=None, help="operator's keystore file")
    operator.add_argument(
        "--operator-key-env", default=None, help="environment variable with the operator's key"
    )
    admin = keys.add_mutually_exclusive_group()
    admin.add_argument("--admin-keystore", default=None, help="admin's keystore file")
    admin.add_argument(
        "--admin-key-env", default=None, help="environment variable with the admin's key"
    )
    keys.add_argument(
        "--password-env",
        default=None,
        help=f"environment variable with the keystores' password ({DEFAULT_PASSWORD_ENV})",
    )
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
        without URL. Keys are only located here, not read (:func:`open_client` reads them).
    """
    env = os.environ
    chain = site.chain if site is not None else None
    deployment: dict[str, Any] = {}
    if getattr(args, "deployment", None):
        text = read_text(args.deployment, "--deployment file")  # ConfigError naming it
        try:
            deployment = json.loads(text)
        except ValueError as exc:
            msg = f"--deployment {args.deployment}: not valid JSON: {exc}"
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
    operator, admin = _key_sources(args, chain)
    return ChainArgs(
        backend=backend,
        rpc_url=rpc_url,
        state=args.state
        or env.get("PEERGRID_ANVIL_STATE")
        or deployment.get("state")
        or (chain.state_path if chain is not None else "")
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
        operator=operator,
        admin=admin,
    )


def _key_sources(
    args: argparse.Namespace, chain: ChainConfig | None
) -> tuple[KeySource, KeySource]:
    """The operator's and the admin's key sources (module docstring's table, first wins)."""
    env = os.environ
    password_env = (
        getattr(args, "password_env", None)
        or (chain.keystore_password_env if chain is not None else "")
        or DEFAULT_PASSWORD_ENV
    )

    def source(role: KeyRole, keystore: str | None, key_env: str | None) -> KeySource:
        return KeySource(
            role=role, keystore=keystore or "", key_env=key_env or "", password_env=password_env
        )

    if args.operator_keystore or args.operator_key_env:
        operator = source(KeyRole.OPERATOR, args.operator_keystore, args.operator_key_env)
    elif env.get("PEERGRID_OPERATOR_KEYSTORE"):
        operator = source(KeyRole.OPERATOR, env["PEERGRID_OPERATOR_KEYSTORE"], None)
    elif chain is not None:
        operator = replace(site_operator_key(chain), password_env=password_env)
    else:
        operator = source(KeyRole.OPERATOR, None, DEFAULT_OPERATOR_KEY_ENV)

    site_admin = site_admin_key(chain) if chain is not None else None
    if args.admin_keystore or args.admin_key_env:
        admin = source(KeyRole.ADMIN, args.admin_keystore, args.admin_key_env)
    elif env.get("PEERGRID_ADMIN_KEYSTORE"):
        admin = source(KeyRole.ADMIN, env["PEERGRID_ADMIN_KEYSTORE"], None)
    elif site_admin is not None:
        admin = replace(site_admin, password_env=password_env)
    elif env.get(DEFAULT_ADMIN_KEY_ENV):
        admin = source(KeyRole.ADMIN, None, DEFAULT_ADMIN_KEY_ENV)
    else:  # one key for both roles
        admin = replace(operator, role=KeyRole.ADMIN)
    return operator, admin


def _same_key(a: KeySource, b: KeySource) -> bool:
    return (a.keystore, a.key_env, a.password_env) == (b.keystore, b.key_env, b.password_env)


@contextmanager
def open_client(
    resolved: ChainArgs, *, attach: bool = True, operator: bool = False, admin: bool = False
) -> Iterator[ChainClient]:
    """Open the keys asked for, connect, build the client (attached), close at the end.

    Keys are opened before anything is started, so a wrong password or a missing key
    leaves the chain untouched.

    Parameters
    ----------
    resolved : ChainArgs
        Where the chain is and where the keys come from.
    attach : bool
        Attach to the token and settlement contracts (``False`` for ``deploy``).
    operator : bool
        Sign as the operator (its key is opened). ``False``: a random throwaway account,
        never funded, stands in (the command only reads).
    admin : bool
        Sign as the admin (its key is opened; the operator's when they are one key).
        ``False``: the operator's account stands in.

    Yields
    ------
    ChainClient
        The client.

    Raises
    ------
    KeyUnavailable
        A key asked for that cannot be had (:meth:`KeySource.signer`).
    ConfigError
        ``attach`` without contract addresses.
    """
    from adapters.chain import ChainClient, connect, new_account  # noqa: PLC0415

    operator_signer = resolved.operator.signer() if operator else new_account()
    admin_signer = None
    if admin:
        shared = operator and _same_key(resolved.operator, resolved.admin)
        admin_signer = operator_signer if shared else resolved.admin.signer()
    conn = connect(
        resolved.backend,
        rpc_url=resolved.rpc_url or None,
        state_path=resolved.state if resolved.backend is ChainBackend.ANVIL else None,
    )
    try:
        client = ChainClient(
            conn.w3,
            operator_signer,
            admin=admin_signer,
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
        with open_client(resolved, attach=False, operator=True, admin=True) as client:
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
            try:
                Path(args.out).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            except OSError as exc:
                # deployed: say where, so the addresses are not lost with the file
                sys.stdout.write(json.dumps(data, indent=2) + "\n")
                msg = f"--out {args.out}: cannot write it ({exc.strerror or exc}); printed above"
                raise ConfigError(msg) from None
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
        operator = resolved.operator.address() if resolved.operator.configured() else None
        admin = resolved.admin.address() if resolved.admin.configured() else None
        with open_client(resolved) as client:
            events = client.settled_events()
            policy = client.reward_policy()
            data: dict[str, Any] = {
                "backend": resolved.backend,
                "chain_id": client.chain_id(),
                "block": client.block_number(),
                **asdict(client.deployment()),
                "operator": None
                if operator is None
                else {
                    "address": operator,
                    "is_operator": client.is_operator(operator),
                    "next_nonce": client.next_nonce(operator),
                },
                "admin": None
                if admin is None
                else {"address": admin, "is_admin": client.is_admin(admin)},
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
                data["store"] = _compare_store(client, url, problems, site)
        text = "\n".join(f"{k:>18}: {v}" for k, v in data.items())
        _print(args, data, text)
        return EXIT_OK if not problems else EXIT_FAILED

    return _run(args, body)


def _compare_store(
    client: ChainClient, url: str, problems: list[str], site: SiteConfig | None
) -> dict[str, Any]:
    from controller.store import Store  # noqa: PLC0415 - SQLAlchemy only when asked

    store = Store(url, create=False, site=_chain_identity(site, client))
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
                    f"interval {utc_label(int(record['interval_id']))} "
                    f"(id {record['interval_id']}): store has batch {record['batch_id']}, "
                    f"chain has {on_chain or 'nothing'}"
                )
        return {
            "settled": settled,
            "pending": [p.interval_id for p in pending],
            "problems": problems,
        }
    finally:
        store.close()


def _chain_identity(site: SiteConfig | None, client: ChainClient) -> SiteIdentity | None:
    """The identity of ``site`` on the chain ``client`` is attached to (``None``: no site)."""
    from controller.site_identity import site_identity  # noqa: PLC0415 - loads the grid

    if site is None:
        return None
    return site_identity(
        site, trial=False, chain_id=client.chain_id(), settlement=client.settlement.address
    )


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
                for p, address in participant_accounts(site, trial=False).items()
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
        accounts = participant_accounts(site, trial=False)
        results: list[dict[str, Any]] = []
        with open_client(resolved, operator=True) as client:
            identity = _chain_identity(site, client)
            store = Store(args.db or site.database, create=False, site=identity)
            try:
                pending = store.pending_settlements()
            finally:
                store.close()
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
            f"  {utc_label(r['interval_id'])} (id {r['interval_id']}): {r['status']} "
            f"{r.get('tx_hash') or r.get('error', '')}"
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
    from controller.site_identity import site_identity  # noqa: PLC0415

    # read before connecting: the chain id is not compared, the Settlement address (the site
    # file's), name and grid are
    identity = None if site is None else site_identity(site, trial=False)
    store = Store(url, create=False, site=identity)
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


def cmd_rotate_operator(args: argparse.Namespace) -> int:
    """``peergrid chain rotate-operator``: move the operator role to a new key.

    Signed by the admin: grants the role to ``--new-operator`` (unless it holds it), then
    revokes it from the old operator (``--old-operator``, else the configured operator key's
    address, read without its password), which can no longer settle. Refused when the
    admin key is the old operator's (it would keep the admin role and could grant itself
    the operator role again). On ``anvil`` the new operator gets gas money.

    Parameters
    ----------
    args : argparse.Namespace
        The command's parsed flags.

    Returns
    -------
    int
        0 when the new operator holds the role and the old one does not (2 for bad input,
        1 when the chain fails, e.g. the key given as admin holds no admin role).
    """

    def body() -> int:
        from adapters.chain import checksum_address  # noqa: PLC0415

        resolved = resolve(args, _site(args))
        new = str(checksum_address(args.new_operator))
        old = str(
            checksum_address(args.old_operator)
            if args.old_operator
            else resolved.operator.address()
        )
        if new == old:
            msg = f"--new-operator {new} is the operator already"
            raise ConfigError(msg)
        if resolved.admin.configured() and resolved.admin.address() == old:
            msg = (
                f"the admin key ({resolved.admin.describe()}) is the old operator's: it would "
                "keep the admin role; sign with a separate admin key (--admin-keystore)"
            )
            raise ConfigError(msg)
        with open_client(resolved, admin=True) as client:
            if client.admin.address == old:
                msg = "the admin key is the old operator's; sign with a separate admin key"
                raise ConfigError(msg)
            if resolved.backend is ChainBackend.ANVIL:
                client.fund_eth(new, DEV_ETHER_WEI)
            granted = None if client.is_operator(new) else client.grant_operator(new).tx_hash
            revoked = client.revoke_operator(old).tx_hash if client.is_operator(old) else None
            data = {
                "old_operator": old,
                "new_operator": new,
                "admin": client.admin.address,
                "grant_tx": granted,
                "revoke_tx": revoked,
                "old_is_operator": client.is_operator(old),
                "new_is_operator": client.is_operator(new),
            }
        text = (
            f"operator role: {old} -> {new} (grant {granted or 'already held'}, "
            f"revoke {revoked or 'not held'}); now point the site's operator_keystore at the "
            "new key"
        )
        _print(args, data, text)
        ok = data["new_is_operator"] and not data["old_is_operator"]
        return EXIT_OK if ok else EXIT_FAILED

    return _run(args, body)


__all__ = ["ChainArgs", "open_client", "register", "resolve"]

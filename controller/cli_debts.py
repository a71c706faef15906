"""``peergrid debts``: balances carried between intervals, for the operator and a participant.

No settlement debits an account more than it can pay (:mod:`market.settlement`, rules 6-9):
the shortfall is carried as a *debt* (the account owes COMMUNITY, which fronted it) and later
batches collect it first; a credit COMMUNITY could not pay is carried the other way (COMMUNITY
owes the account). Balances are signed token units: positive = owes COMMUNITY, negative =
COMMUNITY owes it.

``peergrid debts --site SITE`` prints every account's outstanding balance (the operator's
view); ``--participant P`` prints that account's balance and every interval that changed it
(the participant's view); ``--json`` prints the same as JSON. ``--db URL`` reads another
database than the site's. The command only reads (a database that does not exist is an
error, exit 2). Balances include intents recorded but not yet on-chain (they are sent in
interval order).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from typing import Any

from controller.config import read_site
from controller.errors import ConfigError
from market.domain import COMMUNITY, GRID, DebtChange, utc_label
from market.units import format_tokens

EXIT_OK = 0


def register(sub: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add ``peergrid debts`` to ``peergrid``'s subparsers.

    Parameters
    ----------
    sub
        The subparsers of ``peergrid``'s parser.
    """
    debts = sub.add_parser(
        "debts", help="balances carried between intervals (unpaid debits, withheld credits)"
    )
    debts.add_argument("--site", required=True, help="site TOML file (its database)")
    debts.add_argument("--db", default=None, help="database URL (default: the site's)")
    debts.add_argument(
        "--participant", default=None, help="one account (a participant, GRID): its history"
    )
    debts.add_argument("--json", action="store_true", help="print JSON")
    debts.set_defaults(func=cmd_debts)


def describe_balance(balance: int) -> str:
    """What a carried balance means, in words (``balance`` [token units]).

    Parameters
    ----------
    balance : int
        Signed balance [token units]: + = owes COMMUNITY.

    Returns
    -------
    str
        ``"owes COMMUNITY 1.500000"``, ``"is owed 0.250000 by COMMUNITY"`` or ``"settled"``.
    """
    if balance > 0:
        return f"owes COMMUNITY {format_tokens(balance)}"
    if balance < 0:
        return f"is owed {format_tokens(-balance)} by COMMUNITY"
    return "settled"


def format_changes(changes: Iterable[DebtChange]) -> str:
    """One batch's debt changes on one line, e.g. ``alice 0.000000 -> 7.000000``.

    Parameters
    ----------
    changes : iterable of DebtChange
        A batch's ``debts`` (balances [token units], + = owes COMMUNITY).

    Returns
    -------
    str
        ``account before -> after`` in tokens, comma-separated (``""`` for none).
    """
    return ", ".join(
        f"{d.account} {format_tokens(d.before)} -> {format_tokens(d.after)}" for d in changes
    )


def debts_doc(
    outstanding: Mapping[str, int],
    rows: list[dict[str, Any]],
    participant: str | None,
) -> dict[str, Any]:
    """The JSON form of ``peergrid debts`` (pure).

    Parameters
    ----------
    outstanding : mapping of str to int
        Every account's non-zero balance [token units].
    rows : list of dict
        The ``debts`` rows of ``participant`` (ignored without one).
    participant : str or None
        The account asked about, or ``None`` for all.

    Returns
    -------
    dict
        ``balances`` (``account``, ``balance`` [token units], ``meaning``), ``total_owed``
        and ``total_withheld`` [token units]; with a participant, its ``history``
        (``interval`` [Unix s], ``interval_start``, ``before``, ``after`` [token units]).
    """
    shown = (
        {participant: outstanding.get(participant, 0)}
        if participant is not None
        else dict(sorted(outstanding.items()))
    )
    doc: dict[str, Any] = {
        "unit": "token base units; + = owes COMMUNITY, - = COMMUNITY owes it",
        "balances": [
            {"account": a, "balance": b, "meaning": describe_balance(b)} for a, b in shown.items()
        ],
        "total_owed": sum(b for b in outstanding.values() if b > 0),
        "total_withheld": -sum(b for b in outstanding.values() if b < 0),
    }
    if participant is not None:
        doc["history"] = [
            {
                "interval": int(r["interval_id"]),
                "interval_start": utc_label(int(r["interval_id"])),
                "before": int(r["balance_before"]),
                "after": int(r["balance_after"]),
            }
            for r in rows
        ]
    return doc


def format_doc(doc: Mapping[str, Any]) -> str:
    """The plain-text form of :func:`debts_doc`'s document.

    Parameters
    ----------
    doc : mapping
        The document.

    Returns
    -------
    str
        One line per balance, then the history (if any) and the totals.
    """
    lines: list[str] = []
    balances = doc["balances"]
    if not balances:
        lines.append("no carried balances: every account was settled in full")
    for b in balances:
        lines.append(f"{b['account']:<12} {format_tokens(b['balance']):>16}  {b['meaning']}")
    history = doc.get("history")
    if history is not None:
        lines.append("")
        if not history:
            lines.append("no interval changed this account's balance")
        for h in history:
            lines.append(
                f"interval {h['interval_start']} (id {h['interval']}): "
                f"{format_tokens(h['before'])} -> {format_tokens(h['after'])}"
            )
    lines.append("")
    lines.append(
        f"owed to COMMUNITY {format_tokens(doc['total_owed'])}; "
        f"owed by COMMUNITY {format_tokens(doc['total_withheld'])} (token units)"
    )
    return "\n".join(lines)


def cmd_debts(args: argparse.Namespace) -> int:
    """``peergrid debts``: print carried balances (all, or one account with its history).

    Parameters
    ----------
    args
        The parsed arguments (``--site``, ``--db``, ``--participant``, ``--json``).

    Returns
    -------
    int
        0; bad input (an unknown participant, no database) raises for ``peergrid``'s
        exit code 2.

    Raises
    ------
    ConfigError
        ``--participant`` names no participant of the site (nor GRID).
    MissingDatabase
        The database does not exist or holds no PeerGrid tables.
    """
    from controller.store import Store  # noqa: PLC0415 - SQLAlchemy only when asked

    site = read_site(args.site)
    participant = args.participant
    known = {p.id for p in site.participants} | {GRID}
    if participant is not None and participant not in known:
        msg = (
            f"--participant {participant!r} is not a participant of site {site.name!r} "
            f"(nor {GRID}; {COMMUNITY} carries no balance)"
        )
        raise ConfigError(msg)
    store = Store(args.db or site.database, create=False)
    try:
        outstanding = store.outstanding_debts()
        rows = store.debt_rows(participant) if participant is not None else []
    finally:
        store.close()
    doc = debts_doc(outstanding, rows, participant)
    print(json.dumps(doc, indent=2) if args.json else format_doc(doc))  # noqa: T201
    return EXIT_OK


__all__ = [
    "cmd_debts",
    "debts_doc",
    "describe_balance",
    "format_changes",
    "format_doc",
    "register",
]

"""The settlement contract's packed entry format (pure; no web3).

``Settlement.settle`` takes one ``uint256`` word per account instead of an address and an
``int256`` per account: half the calldata, and with accounts in strictly increasing index
order two neighbours share one storage slot read and write (``Settlement.vy``, "Gas layout").

==========  ==================================================================
bits        field
==========  ==================================================================
160..255    account index (1-based, from the contract's registry)
80..159     verified local energy the account delivered [Wh] (reward basis)
79          sign of the amount: 1 = debit, 0 = credit
0..78       amount magnitude [token base units]
==========  ==================================================================

Sign and magnitude rather than two's complement keep a debit's calldata as cheap as a credit's
(zero bytes cost 4 gas, others 16).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from adapters.chain.errors import InvalidSettlement

A = TypeVar("A", bound=str)

INDEX_SHIFT: Final = 160
WH_SHIFT: Final = 80
SIGN_BIT: Final = 1 << 79
MAX_MAGNITUDE: Final = (1 << 79) - 1
"""Largest amount in one entry [token base units]."""
MAX_WH: Final = (1 << 80) - 1
"""Largest energy in one entry [Wh]."""
MAX_INDEX: Final = (1 << 96) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One account's line in a settlement.

    Attributes
    ----------
    index : int
        The account's registry index (1-based).
    amount : int
        Signed amount [token base units]: > 0 credit, < 0 debit.
    reward_wh : int
        Verified local energy the account delivered [Wh], >= 0.
    """

    index: int
    amount: int
    reward_wh: int = 0


def pack_entry(entry: Entry) -> int:
    """The ``uint256`` word of ``entry``.

    Parameters
    ----------
    entry : Entry
        One account's line.

    Returns
    -------
    int
        The packed word (see the module docstring for the layout).

    Raises
    ------
    InvalidSettlement
        If a field is out of range, or the entry carries neither money nor energy (a
        :class:`ValueError`).
    """
    if not 1 <= entry.index <= MAX_INDEX:
        msg = f"account index must be in 1..{MAX_INDEX}, got {entry.index}"
        raise InvalidSettlement(msg)
    if abs(entry.amount) > MAX_MAGNITUDE:
        msg = f"amount {entry.amount} exceeds {MAX_MAGNITUDE} token base units"
        raise InvalidSettlement(msg)
    if not 0 <= entry.reward_wh <= MAX_WH:
        msg = f"reward energy must be in 0..{MAX_WH} Wh, got {entry.reward_wh}"
        raise InvalidSettlement(msg)
    if entry.amount == 0 and entry.reward_wh == 0:
        msg = f"entry of account {entry.index} carries no amount and no energy"
        raise InvalidSettlement(msg)
    sign = SIGN_BIT if entry.amount < 0 else 0
    return (entry.index << INDEX_SHIFT) | (entry.reward_wh << WH_SHIFT) | sign | abs(entry.amount)


def unpack_entry(word: int) -> Entry:
    """The :class:`Entry` of a packed ``uint256`` word (inverse of :func:`pack_entry`).

    Parameters
    ----------
    word : int
        A packed entry, as the ``SettlementEntries`` event carries it.

    Returns
    -------
    Entry
        Its index, signed amount and energy.
    """
    magnitude = word & MAX_MAGNITUDE
    return Entry(
        index=word >> INDEX_SHIFT,
        amount=-magnitude if word & SIGN_BIT else magnitude,
        reward_wh=(word >> WH_SHIFT) & MAX_WH,
    )


def build_entries(
    indices: Mapping[A, int],
    amounts: Iterable[tuple[A, int]],
    rewards: Iterable[tuple[A, int]] = (),
) -> list[int]:
    """Packed entries for one settlement, in strictly increasing index order.

    Parameters
    ----------
    indices : mapping of address to int
        Registry index of every account named below.
    amounts : iterable of (address, amount)
        Net signed amounts [token base units], at most one per account.
    rewards : iterable of (address, Wh)
        Verified local energy [Wh], at most one per account.

    Returns
    -------
    list of int
        One packed word per account with a non-zero amount or energy, by index.

    Raises
    ------
    InvalidSettlement
        If an account appears twice in ``amounts`` or in ``rewards``, has no index, or two
        accounts share an index (a :class:`ValueError`).
    """
    lines: dict[A, list[int]] = {}
    for position, pairs in enumerate((amounts, rewards)):
        for address, value in pairs:
            line = lines.setdefault(address, [0, 0])
            if line[position]:
                what = "amount" if position == 0 else "reward"
                msg = f"{address} has more than one {what}; net them first"
                raise InvalidSettlement(msg)
            line[position] = value
    by_index: dict[int, Entry] = {}
    for address, (amount, wh) in lines.items():
        if amount == 0 and wh == 0:
            continue
        index = indices.get(address, 0)
        if index <= 0:
            msg = f"{address} is not registered with the settlement contract"
            raise InvalidSettlement(msg)
        if index in by_index:
            msg = f"two accounts share index {index}"
            raise InvalidSettlement(msg)
        by_index[index] = Entry(index=index, amount=amount, reward_wh=wh)
    return [pack_entry(by_index[i]) for i in sorted(by_index)]


__all__ = [
    "INDEX_SHIFT",
    "MAX_INDEX",
    "MAX_MAGNITUDE",
    "MAX_WH",
    "SIGN_BIT",
    "WH_SHIFT",
    "Entry",
    "build_entries",
    "pack_entry",
    "unpack_entry",
]

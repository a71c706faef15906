"""Gas limits and fees (pure): what each transaction may use, and what it offers to pay.

**Limits.** Every transaction carries an explicit gas limit from the table below, measured on
the committed bytecode (py-evm, cancun rules) and rounded up with a margin; gas not used is
not paid. ``eth_estimateGas`` would cost a round trip per transaction and takes seconds per
large batch on py-evm.

**Fees.** On an EIP-1559 chain a transaction offers a tip (``maxPriorityFeePerGas``) and a cap
of twice the latest base fee plus the tip (``maxFeePerGas``), so it stays includable while the
base fee doubles; on an older chain it offers the node's ``gasPrice``. A stuck transaction is
replaced at the same nonce with both fee fields raised (:func:`bumped_fees`): nodes require
a raise of at least 10 % before they accept a replacement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from web3.types import Wei

MAX_TX_GAS: Final = 16_777_216
"""Most gas one transaction may use since Osaka (EIP-7825, 2**24) [gas]."""

DEFAULT_PRIORITY_FEE_WEI: Final = Wei(1_000_000_000)
"""Default tip per gas [wei] (1 gwei)."""

GAS_DEPLOY_TOKEN: Final = 1_600_000  # measured 1_179_603
GAS_DEPLOY_REWARD_TOKEN: Final = 1_700_000  # measured 1_267_460
GAS_DEPLOY_SETTLEMENT: Final = 3_500_000  # measured 2_661_414
GAS_MINT: Final = 100_000  # measured 70_287 (first mint to an address), 36_087 after
GAS_APPROVE: Final = 70_000  # measured 45_949
GAS_DEPOSIT: Final = 220_000  # measured 173_428 (first deposit, registers), 56_300 after
GAS_DEPOSIT_WITH_PERMIT: Final = GAS_DEPOSIT + 60_000  # the permit's signature check
GAS_DEPOSIT_FOR_BASE: Final = 100_000
GAS_DEPOSIT_FOR_PER_ACCOUNT: Final = 100_000  # measured 66_867 per fresh account
GAS_REGISTER_BASE: Final = 60_000
GAS_REGISTER_PER_ACCOUNT: Final = 75_000  # measured 46_966 per fresh account
GAS_REQUEST_WITHDRAWAL: Final = 100_000  # measured 73_994 (first request), 56_894 after
GAS_WITHDRAW: Final = 100_000  # measured 53_315
GAS_CLAIM: Final = 120_000  # measured 58_253 (first claim to a wallet)
GAS_ADMIN: Final = 100_000  # role grants, pause, policy: measured 24_773-50_920
GAS_SETTLE_BASE: Final = 320_000  # measured 133_037 empty, +~85_000 for a first reward mint
GAS_SETTLE_PER_ENTRY: Final = 9_000  # measured 3_919 per entry at 100-500, ~7_200 unpaired
GAS_SETTLE_PER_FRESH_ENTRY: Final = 27_000  # measured 12_504 per fresh pair member, ~24_000 alone
GAS_ETH_TRANSFER: Final = 21_000
# governance (issue 16): deploying all five contracts with 20 members measured 7_527_496
GAS_DEPLOY_MEMBERSHIP_BASE: Final = 1_500_000
GAS_DEPLOY_MEMBERSHIP_PER_MEMBER: Final = 120_000
GAS_DEPLOY_TIMELOCK: Final = 3_000_000
GAS_DEPLOY_GOVERNOR: Final = 3_000_000
GAS_DEPLOY_PARAMETERS: Final = 1_500_000
GAS_DEPLOY_GUARDIAN: Final = 1_000_000
GAS_GOV_PROPOSE_BASE: Final = 400_000  # measured 356_109 for one action, 1_141_171 for eight
GAS_GOV_PROPOSE_PER_ACTION: Final = 150_000
GAS_GOV_VOTE: Final = 150_000  # measured 104_944 (first on a proposal), 87_844 after
GAS_GOV_VOTE_BY_SIG: Final = 180_000  # measured 111_249
GAS_GOV_QUEUE_BASE: Final = 200_000  # measured 145_567 for one action, 434_289 for eight
GAS_GOV_QUEUE_PER_ACTION: Final = 60_000
GAS_GOV_EXECUTE_BASE: Final = 200_000  # measured 167_510 for one action, 620_079 for eight
GAS_GOV_EXECUTE_PER_ACTION: Final = 150_000
# device keys (issue 17): each change appends a checkpoint of four fresh storage slots
GAS_DEPLOY_DEVICE_KEYS: Final = 2_200_000  # measured 1_590_783
GAS_KEY_REGISTER: Final = 230_000  # register or rotate: measured 160_983 (first), 146_343 after
GAS_KEY_REVOKE: Final = 180_000  # measured 126_497
GAS_KEY_CHANGE_BY_SIG: Final = 270_000  # measured 190_129 (a relayed first registration)


def settle_gas_limit(n_entries: int, n_fresh: int = 0) -> int:
    """Gas limit [gas] for a settlement of ``n_entries`` accounts, ``n_fresh`` of them new.

    An account whose escrow and rewards are both zero may sit in a never-written storage
    slot, which costs ~20,000 gas more to write. Capped at :data:`MAX_TX_GAS`.

    Parameters
    ----------
    n_entries : int
        Packed entries in the settlement (one per account).
    n_fresh : int
        How many of them have neither escrow nor rewards yet (at most ``n_entries``).

    Returns
    -------
    int
        The gas limit [gas].
    """
    n_fresh = min(n_fresh, n_entries)
    gas = (
        GAS_SETTLE_BASE
        + GAS_SETTLE_PER_ENTRY * (n_entries - n_fresh)
        + GAS_SETTLE_PER_FRESH_ENTRY * n_fresh
    )
    return min(gas, MAX_TX_GAS)


def register_gas_limit(n_accounts: int) -> int:
    """Gas limit [gas] for ``register_many`` of ``n_accounts`` new accounts.

    Parameters
    ----------
    n_accounts : int
        Accounts registered in the call.
    """
    return GAS_REGISTER_BASE + GAS_REGISTER_PER_ACCOUNT * n_accounts


def deposit_for_gas_limit(n_accounts: int) -> int:
    """Gas limit [gas] for ``deposit_for`` into ``n_accounts`` escrows.

    Parameters
    ----------
    n_accounts : int
        Escrows funded in the call.
    """
    return GAS_DEPOSIT_FOR_BASE + GAS_DEPOSIT_FOR_PER_ACCOUNT * n_accounts


def eip1559_fees(base_fee_wei: int, priority_fee_wei: int) -> dict[str, int]:
    """The fee fields of a new EIP-1559 transaction.

    Parameters
    ----------
    base_fee_wei : int
        The latest block's base fee per gas [wei].
    priority_fee_wei : int
        The tip per gas [wei].

    Returns
    -------
    dict
        ``maxFeePerGas`` (twice the base fee plus the tip) and ``maxPriorityFeePerGas`` [wei].
    """
    return {
        "maxFeePerGas": 2 * base_fee_wei + priority_fee_wei,
        "maxPriorityFeePerGas": priority_fee_wei,
    }


def bumped_fees(
    previous: Mapping[str, int], current: Mapping[str, int], bump_percent: int
) -> dict[str, int]:
    """The fee fields of a replacement: each raised by ``bump_percent``, and never below now.

    Parameters
    ----------
    previous : mapping
        The fee fields of the version being replaced (``gasPrice``, or ``maxFeePerGas`` and
        ``maxPriorityFeePerGas``) [wei].
    current : mapping
        The fee fields a new transaction would get now (same keys) [wei].
    bump_percent : int
        Raise of each field [%]; nodes want at least 10.

    Returns
    -------
    dict
        The replacement's fee fields [wei]. A legacy price becomes the larger of the raised
        price and today's; an EIP-1559 cap the larger of the raised cap and today's base
        part plus the raised tip.
    """
    percent = 100 + bump_percent
    if "gasPrice" in previous:
        price = max(ceil_percent(previous["gasPrice"], percent), current.get("gasPrice", 0))
        return {"gasPrice": price}
    tip = ceil_percent(previous["maxPriorityFeePerGas"], percent)
    cap = max(
        ceil_percent(previous["maxFeePerGas"], percent),
        current.get("maxFeePerGas", 0) - current.get("maxPriorityFeePerGas", 0) + tip,
    )
    return {"maxFeePerGas": cap, "maxPriorityFeePerGas": tip}


def ceil_percent(value: int, percent: int) -> int:
    """``value * percent / 100`` rounded up, and at least ``value + 1``.

    Parameters
    ----------
    value : int
        A fee [wei].
    percent : int
        The new fee as a percentage of ``value`` [%], e.g. 125 for a 25 % raise.

    Returns
    -------
    int
        The raised fee [wei].
    """
    return max(value + 1, -(-value * percent // 100))


__all__ = [
    "DEFAULT_PRIORITY_FEE_WEI",
    "GAS_ADMIN",
    "GAS_APPROVE",
    "GAS_CLAIM",
    "GAS_DEPLOY_REWARD_TOKEN",
    "GAS_DEPLOY_SETTLEMENT",
    "GAS_DEPLOY_TOKEN",
    "GAS_DEPOSIT",
    "GAS_DEPOSIT_FOR_BASE",
    "GAS_DEPOSIT_FOR_PER_ACCOUNT",
    "GAS_DEPOSIT_WITH_PERMIT",
    "GAS_ETH_TRANSFER",
    "GAS_MINT",
    "GAS_REGISTER_BASE",
    "GAS_REGISTER_PER_ACCOUNT",
    "GAS_REQUEST_WITHDRAWAL",
    "GAS_SETTLE_BASE",
    "GAS_SETTLE_PER_ENTRY",
    "GAS_SETTLE_PER_FRESH_ENTRY",
    "GAS_WITHDRAW",
    "MAX_TX_GAS",
    "bumped_fees",
    "ceil_percent",
    "deposit_for_gas_limit",
    "eip1559_fees",
    "register_gas_limit",
    "settle_gas_limit",
]

"""The admin's transactions: roles, the emergency pause, the reward and withdrawal policy.

Every transaction here is signed by the admin account (:attr:`Contracts.admin
<adapters.chain.deployment.Contracts.admin>`), which must hold the settlement contract's
admin role; the contract reverts otherwise (:class:`~adapters.chain.errors.TransactionReverted`
with ``missing role``). The matching reads are on :class:`~adapters.chain.queries.ChainReader`.
"""

from __future__ import annotations

from typing import Any

from adapters.chain.accounts import checksum_address
from adapters.chain.deployment import DEFAULT_ADMIN_ROLE, OPERATOR_ROLE, Contracts
from adapters.chain.gas import GAS_ADMIN
from adapters.chain.sender import TxResult


class Administration:
    """Sends the admin's transactions (see the module docstring).

    Parameters
    ----------
    contracts : Contracts
        The deployment.
    """

    def __init__(self, contracts: Contracts) -> None:
        self.contracts = contracts

    def grant_operator(self, address: str) -> TxResult:
        """Give ``address`` the operator role (it may then settle and register).

        Parameters
        ----------
        address : str
            The account to grant it to.
        """
        return self._send("grantRole", [OPERATOR_ROLE, checksum_address(address)])

    def revoke_operator(self, address: str) -> TxResult:
        """Take the operator role from ``address``.

        Parameters
        ----------
        address : str
            The account to take it from.
        """
        return self._send("revokeRole", [OPERATOR_ROLE, checksum_address(address)])

    def grant_admin(self, address: str) -> TxResult:
        """Give ``address`` the admin role.

        Parameters
        ----------
        address : str
            The account to grant it to.
        """
        return self._send("grantRole", [DEFAULT_ADMIN_ROLE, checksum_address(address)])

    def revoke_admin(self, address: str) -> TxResult:
        """Take the admin role from ``address``.

        Parameters
        ----------
        address : str
            The account to take it from.
        """
        return self._send("revokeRole", [DEFAULT_ADMIN_ROLE, checksum_address(address)])

    def pause(self) -> TxResult:
        """Stop settlements and deposits. Withdrawals and claims stay open."""
        return self._send("pause", [])

    def unpause(self) -> TxResult:
        """Lift the pause."""
        return self._send("unpause", [])

    def set_reward_policy(self, rate: int, cap: int) -> TxResult:
        """Set the reward rule.

        Parameters
        ----------
        rate : int
            Reward base units per kWh of verified local energy.
        cap : int
            Most reward base units minted per interval.

        Returns
        -------
        TxResult
            The mined transaction.
        """
        return self._send("set_reward_policy", [rate, cap])

    def set_withdrawal_delay(self, delay_s: int) -> TxResult:
        """Set the notice a withdrawal takes.

        Parameters
        ----------
        delay_s : int
            Time between a withdrawal request and the withdrawal [s].
        """
        return self._send("set_withdrawal_delay", [delay_s])

    def _send(self, fn: str, args: list[Any]) -> TxResult:
        settlement = self.contracts.settlement
        data = settlement.encode_abi(fn, args=args)
        return self.contracts.sender.transact(
            self.contracts.admin, settlement.address, data, GAS_ADMIN
        )[1]


__all__ = ["Administration"]

"""Moving money: gas money, minting, registration, deposits, withdrawals and reward claims.

:class:`Funds` sends the transactions that put tokens into escrow and take them out again.
Amounts are ``int`` token base units (6 decimals, :mod:`market.units`); each transaction is
signed by the account whose money moves (a depositor, a withdrawer), except :meth:`Funds.mint`
(the admin, who owns a payment token PeerGrid deployed) and :meth:`Funds.register` (the
operator, who pays for registering accounts before it settles them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3.exceptions import TransactionNotFound
from web3.types import TxParams, Wei

from adapters.chain.accounts import checksum_address
from adapters.chain.deployment import MAX_BATCH, Contracts
from adapters.chain.errors import ChainError, ConfirmationTimeout, InvalidArgument
from adapters.chain.gas import (
    GAS_APPROVE,
    GAS_CLAIM,
    GAS_DEPOSIT,
    GAS_DEPOSIT_WITH_PERMIT,
    GAS_ETH_TRANSFER,
    GAS_MINT,
    GAS_REQUEST_WITHDRAWAL,
    GAS_WITHDRAW,
    deposit_for_gas_limit,
    register_gas_limit,
)
from adapters.chain.node import NODE_ERRORS, call, hex0x, rpc
from adapters.chain.queries import ChainReader
from adapters.chain.sender import TxResult


class Funds:
    """Sends the money-moving transactions (see the module docstring).

    Parameters
    ----------
    contracts : Contracts
        The deployment.
    reader : ChainReader
        Reads registry indices (for :meth:`register`).
    """

    def __init__(self, contracts: Contracts, reader: ChainReader) -> None:
        self.contracts = contracts
        self.reader = reader

    def fund_eth(self, to: str, wei: int) -> TxResult:
        """Send ether for gas to ``to`` from the node's first unlocked account.

        Works on the embedded chain and dev nodes (anvil), whose nodes hold prefunded,
        unlocked accounts; a production node has none.

        Parameters
        ----------
        to : str
            The receiving address.
        wei : int
            The amount [wei].

        Returns
        -------
        TxResult
            The mined transfer.

        Raises
        ------
        ChainError
            If the node has no unlocked account, or fails.
        ConfirmationTimeout
            If the transfer is not mined within the sender's ``timeout_s``.
        """
        w3 = self.contracts.w3
        sender = self.contracts.sender
        accounts = rpc(lambda: w3.eth.accounts)
        if not accounts:
            msg = "the node has no unlocked, prefunded account to pay from"
            raise ChainError(msg)
        tx: TxParams = {
            "from": accounts[0],
            "to": checksum_address(to),
            "value": Wei(wei),
            "gas": GAS_ETH_TRANSFER,
        }
        tx_hash = rpc(lambda: w3.eth.send_transaction(tx))
        deadline = time.monotonic() + sender.timeout_s
        polls = 0
        while True:
            try:
                receipt = w3.eth.get_transaction_receipt(tx_hash)
                break
            except TransactionNotFound:
                if time.monotonic() > deadline:
                    raise ConfirmationTimeout(hex0x(tx_hash), sender.timeout_s) from None
                time.sleep(sender.pause(polls))
                polls += 1
            except NODE_ERRORS as exc:
                msg = f"waiting for {hex0x(tx_hash)} failed: {exc}"
                raise ChainError(msg) from exc
        return TxResult(
            tx_hash=hex0x(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
        )

    def mint(self, to: str, amount: int) -> TxResult:
        """Mint payment tokens to ``to``; the admin must own the payment token.

        Parameters
        ----------
        to : str
            The receiving wallet.
        amount : int
            The amount [token base units].

        Returns
        -------
        TxResult
            The mined transaction.
        """
        token, admin = self.contracts.token, self.contracts.admin
        data = token.encode_abi("mint", args=[checksum_address(to), amount])
        return self.contracts.sender.transact(admin, token.address, data, GAS_MINT)[1]

    def register(self, addresses: Iterable[str]) -> dict[ChecksumAddress, int]:
        """Give every address an index in the settlement contract (operator pays; idempotent).

        Parameters
        ----------
        addresses : iterable of str
            The accounts; those already registered are skipped.

        Returns
        -------
        dict
            Index of each address, read at the finality depth.
        """
        wanted = list(dict.fromkeys(checksum_address(a) for a in addresses))
        states = self.reader.account_states(wanted, final=True)
        missing = [a for a in wanted if states[a].index == 0]
        settlement = self.contracts.settlement
        for start in range(0, len(missing), MAX_BATCH):
            chunk = missing[start : start + MAX_BATCH]
            data = settlement.encode_abi("register_many", args=[chunk])
            gas = register_gas_limit(len(chunk))
            self.contracts.sender.transact(self.contracts.operator, settlement.address, data, gas)
        if missing:
            states = self.reader.account_states(wanted, final=True)
        return {a: states[a].index for a in wanted}

    def deposit(self, account: LocalAccount, amount: int) -> TxResult:
        """Move ``account``'s tokens into its escrow.

        Approves the settlement contract first when the allowance is short (two
        transactions, both signed by ``account``, which needs ether for gas); see
        :meth:`deposit_with_permit` for one.

        Parameters
        ----------
        account : LocalAccount
            The depositor; signs and pays gas.
        amount : int
            The amount [token base units].

        Returns
        -------
        TxResult
            The mined deposit.
        """
        token, spender = self.contracts.token, self.contracts.settlement.address
        allowance = int(call(token.functions.allowance(account.address, spender)))
        if allowance < amount:
            data = token.encode_abi("approve", args=[spender, amount])
            self.contracts.sender.transact(account, token.address, data, GAS_APPROVE)
        data = self.contracts.settlement.encode_abi("deposit", args=[amount])
        return self.contracts.sender.transact(account, spender, data, GAS_DEPOSIT)[1]

    def deposit_with_permit(
        self, account: LocalAccount, amount: int, *, deadline: int | None = None
    ) -> TxResult:
        """Deposit in one transaction, approving with an EIP-2612 permit signed off-chain.

        Parameters
        ----------
        account : LocalAccount
            The depositor; signs the permit and the transaction.
        amount : int
            The amount [token base units].
        deadline : int or None
            Last Unix time the permit is valid [s]; default one hour after the latest block.

        Returns
        -------
        TxResult
            The mined deposit.
        """
        token = self.contracts.token
        if deadline is None:
            w3 = self.contracts.w3
            latest = rpc(lambda: w3.eth.get_block("latest"))
            deadline = int(latest["timestamp"]) + 3600
        domain = call(token.functions.eip712Domain())
        nonce = int(call(token.functions.nonces(account.address)))
        settlement = self.contracts.settlement
        signed = account.sign_typed_data(
            domain_data={
                "name": domain[1],
                "version": domain[2],
                "chainId": int(domain[3]),
                "verifyingContract": domain[4],
            },
            message_types={
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ]
            },
            message_data={
                "owner": account.address,
                "spender": settlement.address,
                "value": amount,
                "nonce": nonce,
                "deadline": deadline,
            },
        )
        data = settlement.encode_abi(
            "deposit_with_permit",
            args=[
                amount,
                deadline,
                signed.v,
                signed.r.to_bytes(32, "big"),
                signed.s.to_bytes(32, "big"),
            ],
        )
        return self.contracts.sender.transact(
            account, settlement.address, data, GAS_DEPOSIT_WITH_PERMIT
        )[1]

    def deposit_for(self, payer: LocalAccount, amounts: Sequence[tuple[str, int]]) -> TxResult:
        """Fund several escrows from ``payer``'s tokens (e.g. a utility for its customers).

        Approves first when the allowance is short.

        Parameters
        ----------
        payer : LocalAccount
            Pays the tokens and the gas.
        amounts : sequence of (address, amount)
            Escrow to add per account [token base units]; at most :data:`MAX_BATCH` accounts.

        Returns
        -------
        TxResult
            The mined deposit.

        Raises
        ------
        InvalidArgument
            If more than :data:`MAX_BATCH` accounts are given (a :class:`ValueError`).
        """
        if len(amounts) > MAX_BATCH:
            msg = f"at most {MAX_BATCH} accounts per deposit_for, got {len(amounts)}"
            raise InvalidArgument(msg)
        total = sum(a for _, a in amounts)
        token, spender = self.contracts.token, self.contracts.settlement.address
        allowance = int(call(token.functions.allowance(payer.address, spender)))
        if allowance < total:
            data = token.encode_abi("approve", args=[spender, total])
            self.contracts.sender.transact(payer, token.address, data, GAS_APPROVE)
        data = self.contracts.settlement.encode_abi(
            "deposit_for",
            args=[[checksum_address(a) for a, _ in amounts], [a for _, a in amounts]],
        )
        gas = deposit_for_gas_limit(len(amounts))
        return self.contracts.sender.transact(payer, spender, data, gas)[1]

    def request_withdrawal(self, account: LocalAccount, amount: int) -> TxResult:
        """Ask to withdraw some of ``account``'s escrow (0 cancels the request).

        It can be withdrawn (:meth:`withdraw`) once the withdrawal delay has passed.

        Parameters
        ----------
        account : LocalAccount
            The escrow holder; signs and pays gas.
        amount : int
            The amount [token base units].

        Returns
        -------
        TxResult
            The mined request.
        """
        return self._send(account, "request_withdrawal", [amount], GAS_REQUEST_WITHDRAWAL)

    def withdraw(self, account: LocalAccount) -> TxResult:
        """Pay ``account``'s matured withdrawal request to its wallet.

        Parameters
        ----------
        account : LocalAccount
            The escrow holder; signs and pays gas.
        """
        return self._send(account, "withdraw", [], GAS_WITHDRAW)

    def claim_rewards(self, account: LocalAccount) -> TxResult:
        """Pay ``account``'s unclaimed rewards to its wallet.

        Parameters
        ----------
        account : LocalAccount
            The reward holder; signs and pays gas.
        """
        return self._send(account, "claim_rewards", [], GAS_CLAIM)

    def _send(self, account: LocalAccount, fn: str, args: list[int], gas: int) -> TxResult:
        settlement = self.contracts.settlement
        data = settlement.encode_abi(fn, args=args)
        return self.contracts.sender.transact(account, settlement.address, data, gas)[1]


__all__ = ["Funds"]

"""The one exception root of the ``adapters`` package.

::

    AdapterError
     ├── adapters.modbus.errors: DeviceUnavailable (ConnectionError), DeviceError,
     │                           WriteRefused (ValueError), RegisterMapError (ValueError),
     │                           CodecError (ValueError)
     └── adapters.chain.errors.ChainError: TransactionReverted, AlreadySettled,
                                            InsufficientEscrow, ConfirmationTimeout (TimeoutError)
"""

from __future__ import annotations


class AdapterError(Exception):
    """Root of every error raised by :mod:`adapters` (devices and chain)."""

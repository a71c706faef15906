"""The one exception root of the ``adapters`` package.

Each adapter draws its own part of the tree in full in its ``errors`` module; in short::

    AdapterError
     ├── adapters.modbus.errors (no sub-root):
     │    DeviceUnavailable (ConnectionError)
     │    │   ├── InvalidFrame, AnswerTimeout (TimeoutError),
     │    │   └── ConnectionClosed (ConnectionResetError)
     │    DeviceError, WriteRefused (ValueError), RegisterMapError (ValueError),
     │    SunSpecError, CodecError (ValueError), InvalidArgument (ValueError),
     │    SimulatorNotStarted (TimeoutError)
     └── adapters.chain.errors.ChainError:
          InvalidArgument (ValueError)
          │   ├── InvalidAccount, InvalidSettlement
          ArtifactNotFound (FileNotFoundError), CompilerUnavailable (ModuleNotFoundError),
          NodeUnavailable (ConnectionError), TransactionReverted, AlreadySettled,
          InsufficientEscrow, NonceConflict, ConfirmationTimeout (TimeoutError)
"""

from __future__ import annotations


class AdapterError(Exception):
    """Root of every error raised by :mod:`adapters` (devices and chain)."""

"""The one exception root of the ``adapters`` package.

Each adapter draws its own part of the tree in full in its ``errors`` module; in short::

    AdapterError
     ├── SiweRefused (ValueError): an EIP-4361 sign-in message or signature refused
     │    (adapters.chain.siwe; ``code`` malformed | bad_signature)
     ├── TypedDataRefused: a signed EIP-712 order, standing order or cancellation refused
     │    (adapters.chain.typed_data; ``code`` malformed | wrong_domain | bad_signature |
     │    signer_not_participant)
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

from typing import Literal


class AdapterError(Exception):
    """Root of every error raised by :mod:`adapters` (devices and chain)."""


class SiweRefused(AdapterError, ValueError):
    """A Sign-In with Ethereum (EIP-4361) message or signature that is refused.

    Raised by :mod:`adapters.chain.siwe`.

    Parameters
    ----------
    code : str
        ``"malformed"`` (not in the EIP-4361 grammar, or a signature that is not 65 bytes of
        hex) or ``"bad_signature"`` (it does not recover to the message's address).
    field : str
        The message field (``"domain"``, ``"Issued At"`` ...) or ``"signature"``.
    reason : str
        What is wrong, in one line.
    """

    def __init__(self, code: str, field: str, reason: str) -> None:
        self.code = code
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


RefusalCode = Literal["malformed", "wrong_domain", "bad_signature", "signer_not_participant"]
"""Why a signed EIP-712 payload was refused (:attr:`TypedDataRefused.code`)."""


class TypedDataRefused(AdapterError):
    """A signed EIP-712 payload (order, standing order, cancellation) that is refused.

    ``code`` is one of

    * ``"malformed"``: not PeerGrid's typed data (a missing or extra key, field or type, a
      value out of its type's range, an address with a bad EIP-55 checksum, an unknown
      ``primaryType`` or enum code);
    * ``"wrong_domain"``: well formed, but for another name, version, chain or contract;
    * ``"bad_signature"``: the signature is not 65 bytes, has a high ``s``, a bad ``v`` or
      recovers no key;
    * ``"signer_not_participant"``: the signature recovers an address other than the
      message's ``participant`` (also what any change to a signed message looks like).

    ``reason`` names the field or part at fault, e.g. ``"message.energyWh: ..."``.
    """

    def __init__(self, code: RefusalCode, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code: RefusalCode = code
        self.reason = reason

"""The one exception root of the ``controller`` package.

::

    ControllerError
     ├── ConfigError (ValueError)       a site file or a command's input that cannot be used;
     │                                  the message names the item and the field
     ├── NotOnBoundary (ValueError)     a tick asked for at a time that is not an interval
     │                                  boundary
     ├── AlreadyRunning (RuntimeError)  another controller holds this site's lock
     ├── SchemaError                    a database whose schema this release refuses: a revision
     │                                  it does not know, or tables unlike the baseline
     ├── SiteMismatch (ValueError)      a database bound to another site (name, chain,
     │                                  Settlement contract or grid differ); left unchanged
     ├── MissingDatabase                a read-only command (audit verify, db current, chain
     │   (FileNotFoundError)            status ...) pointed at a database that does not exist
     ├── NotWired (RuntimeError)        a part the runtime was built without (e.g. the grid
     │                                  of ``peergrid audit verify --no-reclear``) was used
     ├── AuthRefused                    a sign-in or session token refused (controller.auth);
     │                                  ``.status`` 401/403 and ``.code`` for the API
     └── IntakeRefused                  a signed order refused, nothing stored
                                        (controller.intake); ``.status`` 400-422, ``.code``

The command line maps :class:`ConfigError`, :class:`SchemaError`, :class:`SiteMismatch` and
:class:`MissingDatabase` to exit code 2 and :class:`AlreadyRunning` to
exit code 1. Errors of the other packages (``MarketError``, ``GridModelError``,
``AdapterError``) pass through the controller unchanged, except where the controller turns
them into a recorded outcome (a failed clearing, a settlement to retry).
"""

from __future__ import annotations


class ControllerError(Exception):
    """Root of every error raised by the ``controller`` package."""


class ConfigError(ControllerError, ValueError):
    """A site file or command input that cannot be used; the message names the item and field."""


class NotOnBoundary(ControllerError, ValueError):
    """A cycle tick asked for at a time that is not a boundary of the site's intervals."""


class AlreadyRunning(ControllerError, RuntimeError):
    """Another controller holds this site's lock."""


class SchemaError(ControllerError):
    """A database this release refuses (unknown revision, or tables unlike the baseline)."""


class SiteMismatch(ControllerError, ValueError):
    """The database belongs to another site; the message names both identities."""


class MissingDatabase(ControllerError, FileNotFoundError):
    """A command that only reads was pointed at a database that does not exist (none made)."""


class NotAWorker(ControllerError, RuntimeError):
    """A fleet task ran outside a ``peergrid worker`` process, or without its job (a bug)."""


class LostSite(ControllerError, RuntimeError):
    """A worker no longer holds the site it was running (``peergrid worker``): stop at once."""


class NotWired(ControllerError, RuntimeError):
    """A part of the runtime that :func:`controller.wiring.build_runtime` was told to leave out."""


class AuthRefused(ControllerError):
    """A sign-in, or a session token, that :class:`controller.auth.Auth` refuses.

    Parameters
    ----------
    status : int
        The HTTP status the API answers with: 401 (not signed in: a bad message, signature,
        nonce or token) or 403 (signed correctly, but the address has no role here).
    code : str
        Short snake_case reason (``wrong_domain``, ``nonce_used``, ``session_expired`` ...;
        :mod:`controller.auth` lists them).
    reason : str
        One line naming the field or value at fault.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        self.status = status
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")

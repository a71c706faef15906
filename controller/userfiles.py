"""Files and folders a user names: text files read, output folders made, with one-line errors.

:func:`read_text` reads a site, order or deployment file; :func:`output_folder` makes the
folder a command writes to. Every way such a read can fail becomes a
:class:`~controller.errors.ConfigError` whose message names the file and the problem, so
commands answer with exit code 2 and no traceback:

================================  ==========================================================
the path                          message
================================  ==========================================================
does not exist                    ``order file not found: orders.csv``
is a folder                       ``order file /tmp is a directory, not a file``
cannot be read (permission ...)   ``cannot read order file x.csv: Permission denied``
holds NUL bytes                   ``order file x.csv is a binary file, not text``
is not UTF-8                      ``order file x.csv is not UTF-8 text (byte 0xe9 at offset
                                  57); save it as UTF-8``
================================  ==========================================================

A UTF-8 byte order mark (as spreadsheets write at the start of a CSV file) is dropped.
An output folder that cannot be made or written to (``/proc/x``, below a file, read-only)
is refused the same way: ``cannot use /proc/x as the output folder: No such file or
directory``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from controller.errors import ConfigError

MAX_TEXT_BYTES = 64 * 1024 * 1024
"""Largest input file read [bytes] (64 MiB): a bigger one is refused, not loaded into memory."""


def read_text(path: str | Path, what: str) -> str:
    """The text of the file at ``path``, decoded as UTF-8 (a leading BOM dropped).

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        What the file is, for the message (``"order file"``, ``"site file"`` ...).

    Returns
    -------
    str
        The file's text.

    Raises
    ------
    ConfigError
        If the file is missing, a folder, unreadable, larger than :data:`MAX_TEXT_BYTES`,
        binary (NUL bytes) or not UTF-8; the message names it (module docstring).
    """
    p = Path(path)
    try:
        if p.is_dir():
            msg = f"{what} {p} is a directory, not a file"
            raise ConfigError(msg)
        with p.open("rb") as f:
            data = f.read(MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        msg = f"{what} not found: {p}"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"cannot read {what} {p}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    if len(data) > MAX_TEXT_BYTES:
        msg = f"{what} {p} is larger than {MAX_TEXT_BYTES // (1024 * 1024)} MiB"
        raise ConfigError(msg)
    if b"\x00" in data:
        msg = f"{what} {p} is a binary file, not text"
        raise ConfigError(msg)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = data[exc.start]
        msg = (
            f"{what} {p} is not UTF-8 text (byte 0x{byte:02x} at offset {exc.start}); "
            "save it as UTF-8"
        )
        raise ConfigError(msg) from None


def output_folder(path: str | Path, what: str = "output folder") -> Path:
    """Make the folder ``path`` (and its parents) if missing, and check a file can be made in it.

    Parameters
    ----------
    path : str or Path
        The folder.
    what : str
        What the folder is, for the message.

    Returns
    -------
    Path
        The folder.

    Raises
    ------
    ConfigError
        If the folder cannot be made (a file in the way, a read-only or virtual file
        system) or a file cannot be created in it.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".peergrid-probe-", dir=p)
        os.close(fd)
        Path(probe).unlink()
    except FileExistsError:
        msg = f"cannot use {p} as the {what}: it is a file, not a folder"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"cannot use {p} as the {what}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    return p

"""A linked pair of pseudo-terminals from socat: a serial line on one machine.

Modbus RTU needs a serial line. On a machine without one, ``socat`` makes two linked
pseudo-terminals: a simulator serves one end (:class:`~adapters.modbus.simulators.bus.RtuBus`),
the controller reads the other, and every byte crosses a real tty. The tests and trials use it;
production sites name their real ports.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from adapters.modbus.errors import DeviceUnavailable


@contextmanager
def socat_pair(folder: Path, *, timeout_s: float = 5.0) -> Iterator[tuple[str, str]]:
    """Two linked pty ends under ``folder`` (the devices' end, the controller's end).

    Parameters
    ----------
    folder : Path
        Where the two links are made (``bus-devices``, ``bus-controller``).
    timeout_s : float
        How long socat may take to make the pair [s].

    Yields
    ------
    tuple of str
        The devices' end and the controller's end; socat is stopped on exit.

    Raises
    ------
    DeviceUnavailable
        socat is not installed, exited, or made no pair in time.
    """
    socat = shutil.which("socat")
    if socat is None:
        msg = "socat is required for a pty pair (Debian package socat; scripts/test installs it)"
        raise DeviceUnavailable(msg)
    a, b = folder / "bus-devices", folder / "bus-controller"
    proc = subprocess.Popen(  # noqa: S603 - fixed arguments
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not (a.exists() and b.exists()):
            if proc.poll() is not None:
                msg = f"socat exited with code {proc.returncode} before making a pty pair"
                raise DeviceUnavailable(msg)
            if time.monotonic() > deadline:
                msg = f"socat made no pty pair within {timeout_s} s"
                raise DeviceUnavailable(msg)
            time.sleep(0.01)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(5)


__all__ = ["socat_pair"]

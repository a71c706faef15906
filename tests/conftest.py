"""Fixtures shared by the test packages."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pty ends from socat (the devices' end, the controller's end); socat is
    stopped afterwards."""
    socat = shutil.which("socat")
    assert socat, "socat is required (scripts/test installs it)"
    a, b = tmp_path / "bus-devices", tmp_path / "bus-controller"
    proc = subprocess.Popen(  # noqa: S603 - fixed arguments
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()):
            assert proc.poll() is None, "socat exited"
            assert time.monotonic() < deadline, "socat made no pty pair"
            time.sleep(0.01)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(5)

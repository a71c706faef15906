"""The ``served`` fixture's own check: a server that does not stop cleanly fails the test run.

In its own file so that, with ``--dist loadfile``, its server starts on the other worker while
``test_harness.py`` runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browserkit import ServeFailed, serve_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_server_that_does_not_stop_cleanly_fails_the_fixture(tmp_path: Path) -> None:
    with (  # noqa: PT012 - the fault is injected inside the served block
        pytest.raises(ServeFailed, match=r"ended with -9 after SIGTERM \(expected 0\)"),
        serve_demo(tmp_path, interval_s=20) as running,
    ):
        running.process.kill()  # a crash: SIGKILL, exit -9
        running.process.wait(60)

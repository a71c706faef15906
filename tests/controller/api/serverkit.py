"""The demo site's HTTP API on a real uvicorn server on 127.0.0.1, shared by the API tests.

:func:`serve_demo` builds the demo site's runtime (real SQLite store, loopback Modbus
simulators, the embedded chain), ticks 4 boundaries (3 intervals cleared, 2 settled), and
serves ``create_app(build_service(...))`` in a thread on a free port with an injected clock.
Each test module makes its own module-scoped server from it, so one module's operator
actions (pause, exclusions) never reach another module's tests.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.chain import derive_account, siwe
from adapters.chain.backends import free_port
from controller.api import create_app
from controller.config import ChainConfig
from controller.demo import DEMO_START, DEMO_TRIAL, ProfileForecaster, demo_site, start_simulators
from controller.service import Service, build_service
from controller.wiring import build_runtime

OPERATOR = "demo-operator"
AUDITOR = "demo-auditor"


class Clock:
    """The service's clock, set by the tests (never the wall clock)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@dataclasses.dataclass
class Api:
    base: str
    service: Service
    clock: Clock
    intervals: list[int]
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def site(self) -> str:
        return f"{self.base}/v1/sites/{self.service.site_id}"

    def client(self, who: str | None = None) -> httpx.Client:
        headers = {} if who is None else {"Authorization": f"Bearer {self.token(who)}"}
        return httpx.Client(base_url=self.site, headers=headers, timeout=30)

    def token(self, who: str) -> str:
        if who not in self.tokens:
            self.tokens[who] = sign_in(self, who)
        return self.tokens[who]


def sign_in(api: Api, label: str) -> str:
    """Sign in as the demo key of ``label`` with a real EIP-4361 message and signature."""
    account = derive_account(label)
    with httpx.Client(base_url=api.site, timeout=30) as http:
        nonce = http.post("/auth/nonce").json()["nonce"]
        host = api.base.removeprefix("http://")
        message = siwe.SiweMessage(
            domain=host,
            address=str(account.address),
            uri=api.base,
            chain_id=api.service.runtime.client.chain_id(),
            nonce=nonce,
            issued_at=siwe.rfc3339(api.clock()),
            statement="Sign in to PeerGrid.",
        )
        text = siwe.format_message(message)
        reply = http.post(
            "/auth/signin", json={"message": text, "signature": siwe.sign(text, account.key)}
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["token_type"] == "bearer"
    return str(body["token"])


def wait(predicate: Any, what: str, timeout_s: float = 60.0) -> None:
    """Poll ``predicate`` every 20 ms until it holds; fail the test after ``timeout_s`` s."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def serve_demo(out: Path, database: str | None = None) -> Iterator[Api]:
    """Serve the demo site's API until the block ends (database: ``database`` or under ``out``)."""
    site = dataclasses.replace(
        demo_site(),
        database=database or f"sqlite:///{(out / 'api.sqlite').as_posix()}",
        chain=ChainConfig(),
    )
    sims, forecasts, site = start_simulators(site, DEMO_START)
    runtime = build_runtime(site, trial=DEMO_TRIAL, forecaster=ProfileForecaster(forecasts))
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    try:
        boundaries = [DEMO_START + timedelta(seconds=site.interval_s * k) for k in range(4)]
        for k, boundary in enumerate(boundaries):
            for sim in sims.values():
                sim.advance(boundary)
            runtime.cycle.tick(boundary, clear_next=k < 3)
        clock = Clock(boundaries[-1] + timedelta(seconds=60))
        port = free_port()
        service = build_service(
            site,
            runtime=runtime,
            now=clock,
            domain=f"127.0.0.1:{port}",
            uri=f"http://127.0.0.1:{port}",
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(service),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait(lambda: server is not None and server.started, "the server to start")
        yield Api(
            base=f"http://127.0.0.1:{port}",
            service=service,
            clock=clock,
            intervals=[int(b.timestamp()) for b in boundaries[:3]],
        )
    finally:
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=30)
        runtime.close()
        for sim in sims.values():
            sim.stop()

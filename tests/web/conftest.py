"""Fixtures of the real-browser tests (the pieces are in ``browserkit.py``).

* ``served`` (session): a real ``peergrid serve --demo`` on 127.0.0.1 with the demo's
  simulators and embedded chain, ``--dev-interval-s`` :data:`INTERVAL_S` (an interval result
  every 20 s; ``PEERGRID_WEB_INTERVAL_S`` changes it); stopped with SIGTERM at the end, exit 0
  asserted. With ``--dist loadfile`` each xdist worker that runs a browser test file starts one.
* ``driver`` (session): Playwright's sync API; ``browser`` (module): Debian's Chromium on it,
  headless, offline but for this machine.
* ``new_page`` (function): ``new_page("desktop" | "phone", wallet=None)`` gives a
  :class:`browserkit.BrowserPage` (``.page``, ``.log``, ``.assert_clean()``,
  ``.screenshot(label)``); every page is photographed at the end of its test if the test took
  no shot of it (``<artifacts>/<test>-<viewport>.png``).
* ``wallet`` (function): ``wallet(label, connected=False)`` gives a
  :class:`browserkit.TestWallet` on the served chain; pass it to ``new_page``.

Demo labels: ``browserkit.OPERATOR``, ``browserkit.AUDITOR``; prosumers are the demo's
participant ids (``served.site["participants"]``: alice, bob, ...), each signing with its
derived demo key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from browserkit import (
    BrowserPage,
    MakeWallet,
    NewPage,
    Served,
    TestWallet,
    launch,
    open_page,
    serve_demo,
)
from playwright.sync_api import Browser, Error, Playwright, sync_playwright

INTERVAL_S = int(os.environ.get("PEERGRID_WEB_INTERVAL_S", "20"))
"""The served demo's development interval [s]: 20 divides a day; the demo has no gate closure
(``gate_closure_s`` 0), so orders for an interval are taken until it starts."""


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_demo(tmp_path_factory.mktemp("serve"), INTERVAL_S) as running:
        yield running


@pytest.fixture(scope="module")
def driver() -> Iterator[Playwright]:
    # per module, not per session: Playwright's sync API keeps an asyncio loop running in
    # this thread while it is started, and an xdist worker goes on to other files (e.g. a
    # test calling asyncio.run() fails "cannot be called from a running event loop")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(driver: Playwright) -> Iterator[Browser]:
    chromium = launch(driver)  # BrowserMissing (a failure) if Chromium is not installed
    yield chromium
    chromium.close()


@pytest.fixture
def new_page(browser: Browser, served: Served, request: pytest.FixtureRequest) -> Iterator[NewPage]:
    pages: list[BrowserPage] = []

    def make(viewport: str = "desktop", *, wallet: TestWallet | None = None) -> BrowserPage:
        n = sum(p.viewport == viewport for p in pages)
        name = f"{request.node.name}-{viewport}" + (f"-{n + 1}" if n else "")
        page = open_page(browser, served.base_url, viewport, name, wallet)
        pages.append(page)
        return page

    yield make
    for page in pages:
        if not page.shots and not page.page.is_closed():
            try:
                page.screenshot()
            except Error as exc:  # a crashed page has no picture; the test says why
                print(f"no screenshot of {page.name}: {exc}")
        page.context.close()


@pytest.fixture
def wallet(served: Served) -> MakeWallet:
    def make(label: str, *, connected: bool = False) -> TestWallet:
        return TestWallet(label, served.chain_id, connected=connected)

    return make


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private artifacts folder (``PEERGRID_ARTIFACTS``) for tests of the screenshots."""
    folder = tmp_path / "artifacts"
    monkeypatch.setenv("PEERGRID_ARTIFACTS", str(folder))
    return folder

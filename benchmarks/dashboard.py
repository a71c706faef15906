"""Page weight and speed of the dashboard, in Debian's Chromium against real servers.

Two servers, both real ``peergrid serve`` processes on 127.0.0.1:

* the demo site (CIGRE LV, 44 buses; ``--demo --dev-interval-s 20``, simulators, the embedded
  chain), waited on until intervals have cleared and settled: the operator's live page;
* a site on SimBench ``1-MVLV-semiurb-all-0-sw`` (9,099 buses, no devices): the feeder map.

For each page: the first render as the browser measures it (``performance.now()`` from
asking for the page to the point the page says it is drawn: every fragment swapped in, the
map drawn and painted), the bytes transferred (compressed, as on the wire) and uncompressed,
and the number of requests. The reference measured in the same run is the bare document: the
same page's HTML alone (its ``responseEnd``), so the ratio says what the data, the scripts and
the drawing add to it. Each page is loaded ``--repeat`` times in a fresh browser context (no
cache); the median is reported.

    python benchmarks/dashboard.py [--repeat 5] [--json]

Nothing here is a pass/fail test: the browser tests (tests/web) hold the limits.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, sync_playwright

from adapters.chain import derive_account
from controller.client import PeerGridClient

OPERATOR = "demo-operator"
CHROMIUM = "/usr/bin/chromium"
BIG_SITE = """
[site]
name = "MVLV semiurb"
grid = "simbench:1-MVLV-semiurb-all-0-sw"
database = "sqlite:///{db}"
operators = ["derive:{operator}"]

[[participants]]
id = "alice"
bus = "LV1.201 Bus 1"
"""


@contextmanager
def serve(work: Path, tail: list[str]) -> Iterator[str]:
    """A ``peergrid serve`` process on a free port; yields its base URL."""
    log = work / "serve.log"
    argv = [sys.executable, "-m", "controller", "-v", "serve", "--port", "0", *tail]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_")}
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=work)
    try:
        deadline = time.monotonic() + 900
        while "serving http://" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                msg = f"peergrid serve did not start:\n{log.read_text()[-2000:]}"
                raise SystemExit(msg)
            time.sleep(0.2)
        yield log.read_text().split("serving ", 1)[1].split()[0].rstrip("/")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


def token_for(base: str, label: str) -> tuple[str, str]:
    """Sign in from Python (EIP-4361, the project's client): the site id and a bearer token."""
    with PeerGridClient(base) as client:
        client.sign_in(derive_account(label))
        return client.site, str(client.token)


def load(browser: Browser, url: str, site_id: str, token: str) -> dict[str, Any]:
    """Load ``url`` signed in (the token in sessionStorage) in a fresh context; measure it."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(
        f"sessionStorage.setItem({json.dumps('peergrid.token.' + site_id)}, {json.dumps(token)})"
    )
    page: Page = context.new_page()
    sizes: list[tuple[int, int]] = []

    def finished(request: Any) -> None:
        response = request.response()
        if response is None or "/events" in request.url:
            return
        wire = request.sizes()["responseBodySize"]
        body = len(response.body())
        sizes.append((wire, body))

    page.on("requestfinished", finished)
    page.goto(url)
    page.locator("#map[data-rendered]").wait_for(timeout=120_000)
    page.locator("body[data-loaded]").wait_for(timeout=120_000)
    document = page.evaluate("() => performance.getEntriesByType('navigation')[0].responseEnd")
    rendered = max(
        float(page.get_attribute("#map", "data-rendered") or 0),
        float(page.get_attribute("body", "data-loaded") or 0),
    )
    page.wait_for_timeout(500)  # the last responses' sizes
    context.close()
    return {
        "first_render_ms": rendered,
        "document_ms": document,
        "requests": len(sizes),
        "bytes_wire": sum(w for w, _ in sizes),
        "bytes_uncompressed": sum(b for _, b in sizes),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        work = Path(tmp)
        (work / "demo").mkdir()
        with serve(work / "demo", ["--demo", "--dev-interval-s", "20", "--out", "out"]) as base:
            site_id, token = token_for(base, OPERATOR)
            headers = {"Authorization": f"Bearer {token}"}
            records = f"{base}/v1/sites/{site_id}/audit/records"
            while len(httpx.get(records, headers=headers, timeout=60).json()["items"]) < 3:
                time.sleep(1)
            url = f"{base}/ui/sites/{site_id}/operator"
            runs = [load(browser, url, site_id, token) for _ in range(args.repeat)]
            results["operator page, CIGRE LV (44 buses)"] = median_of(runs)
        (work / "big").mkdir()
        site = work / "big" / "site.toml"
        db = (work / "big" / "big.sqlite").as_posix()
        site.write_text(BIG_SITE.format(db=db, operator=OPERATOR))
        with serve(work / "big", ["--site", str(site)]) as base:
            site_id, token = token_for(base, OPERATOR)
            url = f"{base}/ui/sites/{site_id}/map"
            runs = [load(browser, url, site_id, token) for _ in range(args.repeat)]
            results["map page, 1-MVLV-semiurb-all-0-sw (9,099 buses)"] = median_of(runs)
        browser.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    head = ("page", "first render", "document", "ratio", "requests", "wire", "uncompr.")
    print("{:52} {:>13} {:>9} {:>6} {:>8} {:>10} {:>10}".format(*head))
    for name, r in results.items():
        ratio = r["first_render_ms"] / max(r["document_ms"], 1e-9)
        print(
            f"{name:52} {r['first_render_ms']:>10.0f} ms {r['document_ms']:>6.0f} ms"
            f" {ratio:>5.1f}x {r['requests']:>8.0f} {r['bytes_wire'] / 1024:>7.0f} KiB"
            f" {r['bytes_uncompressed'] / 1024:>7.0f} KiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

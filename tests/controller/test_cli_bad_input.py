"""Every ``peergrid`` command against a corpus of bad input, as real subprocesses.

Each case runs ``python -m controller ARGS`` in a scratch folder and must answer with exit
code 2, exactly one line on stderr that names the problem (a substring per case), and no
traceback; a few good inputs (a spreadsheet CSV with a byte order mark and spaces after the
commas) must pass. No case may change the site's existing database: it is hashed before and
after the whole corpus.

The cases run once per module in a thread pool (each is a subprocess, mostly waiting on
imports); every test below reads their outcomes. :func:`problems_of` is the harness's
judgement, and ``test_the_harness_can_fail`` shows that it catches a case whose expectations
are inverted, a traceback, a second line and a missing substring.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # ~100 processes, 2 cores

HEADER = "order_id,participant,bus,side,energy_wh,limit_price\n"
GOOD_ROWS = "s1,alice,LV3,sell,4000,90000\nb1,bob,LV1,buy,3000,320000\n"
"""Two orders that clear on the corpus grid (buses MV, LV0 ... LV3)."""

SITE = """\
[site]
name = "Bad-input corpus"
grid = "{grid}"
database = "{database}"

[tariffs]
import_price = 300_000
export_price = 80_000

[chain]
backend = "embedded"

[[participants]]
id = "alice"
bus = "LV1"
  [[participants.orders]]
  kind = "buy"
  price = {price}
  energy_wh = 1000
  [[participants.orders]]
  kind = "battery"
  price = 100_000
  discharge_price = 250_000
  min_soc_percent = {min_soc}
  max_soc_percent = {max_soc}

[[devices]]
id = "alice-meter"
participant = "alice"
kind = "meter"
host = "127.0.0.1"
port = {port}
unit = {unit}
map = "{map}"

[[devices]]
id = "alice-battery"
participant = "alice"
kind = "battery"
port = 15021
unit = 2
map = "battery"
rated_w = 5000
capacity_wh = 10000
"""
"""A site on the corpus grid; ``site(**changes)`` fills in the placeholders."""

SITE_DEFAULTS = {
    "price": "320_000",
    "port": "15020",
    "unit": "1",
    "map": "sdm630",
    "min_soc": "10",
    "max_soc": "95",
}


@dataclass(frozen=True)
class Case:
    """One command line and what it must answer."""

    name: str
    argv: tuple[str, ...]
    says: str
    """A substring of the one stderr line (exit 2), or of stdout (exit 0)."""
    code: int = 2


@dataclass(frozen=True)
class Outcome:
    """What a command line answered."""

    code: int
    out: str
    err: str


def problems_of(case: Case, outcome: Outcome) -> list[str]:
    """Everything wrong with ``outcome`` for ``case`` (empty: the case passes).

    Parameters
    ----------
    case : Case
        The command line and its expectations.
    outcome : Outcome
        Its exit code, stdout and stderr.

    Returns
    -------
    list of str
        One entry per broken rule: exit code, traceback, stderr lines, missing substring.
    """
    problems = []
    if outcome.code != case.code:
        problems.append(f"exit code {outcome.code}, expected {case.code}")
    if "Traceback" in outcome.err or "Traceback" in outcome.out:
        problems.append("a traceback was printed")
    if case.code == 2:
        lines = [line for line in outcome.err.splitlines() if line.strip()]
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr, expected one")
        if case.says not in outcome.err:
            problems.append(f"stderr does not say {case.says!r}")
    elif case.says not in outcome.out:
        problems.append(f"stdout does not say {case.says!r}")
    return problems


def run_case(case: Case, cwd: Path) -> Outcome:
    """Run ``python -m controller *case.argv`` in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_")}
    env["PEERGRID_CACHE"] = str(cwd / "cache")
    env["COLUMNS"] = "200"
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "controller", *case.argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


# ---------------------------------------------------------------------------- the corpus


def make_grid(path: Path) -> None:
    """A five-bus feeder as pandapower JSON: MV (slack) - trafo - LV0 - LV1 - LV2 - LV3."""
    import pandapower as pp  # only where the corpus is built

    net = pp.create_empty_network()
    mv = pp.create_bus(net, vn_kv=20.0, name="MV")
    lv = [pp.create_bus(net, vn_kv=0.4, name=f"LV{i}") for i in range(4)]
    pp.create_ext_grid(net, mv, vm_pu=1.0)
    pp.create_transformer(net, mv, lv[0], std_type="0.4 MVA 20/0.4 kV")
    for a, b in itertools.pairwise(lv):
        pp.create_line(net, a, b, length_km=0.1, std_type="NAYY 4x150 SE")
    pp.to_json(net, str(path))


def site(folder: Path, name: str, grid: str, database: str, **changes: str) -> str:
    """Write a site file with ``changes`` to the placeholders of :data:`SITE`."""
    values = {**SITE_DEFAULTS, **changes}
    path = folder / name
    path.write_text(SITE.format(grid=grid, database=database, **values), encoding="utf-8")
    return str(path)


def write(folder: Path, name: str, content: str | bytes) -> str:
    """Write a file (text as UTF-8) and return its path."""
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def corpus(d: Path) -> list[Case]:
    """The cases, with their files written to ``d``; ``d / 'site.sqlite'`` is the database."""
    grid = str(d / "grid.json")
    db = f"sqlite:///{(d / 'site.sqlite').as_posix()}"
    folder = d / "a-folder"
    folder.mkdir()
    (d / "folder.json").mkdir()
    binary = bytes(range(256)) * 4
    good = write(d, "good.csv", HEADER + GOOD_ROWS)
    good_site = site(d, "good.toml", grid, db)
    cases: list[Case] = []

    def add(name: str, argv: list[str], says: str, code: int = 2) -> None:
        cases.append(Case(name, tuple(argv), says, code))

    def orders(name: str, body: str, says: str, *, suffix: str = ".csv") -> None:
        path = write(d, f"{name}{suffix}", body)
        add(f"orders-{name}", ["clear", "--grid", grid, "--orders", path], says)

    def clear(name: str, flags: list[str], says: str, code: int = 2) -> None:
        add(f"clear-{name}", ["clear", "--grid", grid, "--orders", good, *flags], says, code)

    # -- order files: numbers within 0..10^9 price and 1..10^9 Wh, whole, named by row/column
    row = "s1,alice,LV3,sell,{energy},{price}\n"
    orders("price-1e308", HEADER + row.format(energy=4000, price="1e308"), "limit_price")
    orders("energy-2p63-1", HEADER + row.format(energy=2**63 - 1, price=1), "energy_wh")
    orders("energy-2p63", HEADER + row.format(energy=2**63, price=1), "row 1 (order s1)")
    orders("energy-fraction", HEADER + row.format(energy="1500.7", price=1), "'1500.7'")
    orders("energy-zero", HEADER + row.format(energy=0, price=1), "energy_wh must be")
    orders("energy-empty", HEADER + row.format(energy="", price=1), "missing energy_wh")
    orders("price-negative", HEADER + row.format(energy=10, price=-1), "limit_price must be")
    orders("price-nan", HEADER + row.format(energy=10, price="nan"), "'nan'")
    orders("price-over-1e9", HEADER + row.format(energy=10, price=10**9 + 1), "1_000_000_000")
    orders("price-word", HEADER + row.format(energy=10, price="cheap"), "'cheap'")
    orders("side", HEADER + "s1,alice,LV3,hold,10,1\n", "side must be 'buy' or 'sell'")
    orders("duplicate-id", HEADER + GOOD_ROWS + "s1,carol,LV2,sell,5,1\n", "duplicate order_id")
    orders("reserved-participant", HEADER + "s1,GRID,LV3,sell,5,1\n", "reserved")
    orders("unknown-bus", HEADER + "s1,alice,LV7,sell,5,1\n", "closest: 'LV0'")
    orders(
        "missing-column",
        "order_id,participant,bus,side,energy_wh\ns1,a,LV3,sell,5\n",
        "missing column(s) limit_price",
    )
    orders(
        "misspelt-column",
        HEADER.replace("limit_price", "limit_prise") + "s1,a,LV3,sell,5,1\n",
        "did you mean 'limit_price'",
    )
    orders("extra-field", HEADER + "s1,alice,LV3,sell,5,1,oops\n", "7 field(s)")
    orders("empty", "", "empty")
    orders("binary", binary.decode("latin-1"), "binary file")
    path = write(d, "latin1.csv", (HEADER + "s1,Jos\xe9,LV3,sell,5,1\n").encode("latin-1"))
    add("orders-not-utf8", ["clear", "--grid", grid, "--orders", path], "not UTF-8")
    add("orders-directory", ["clear", "--grid", grid, "--orders", str(folder)], "is a directory")
    add("orders-missing", ["clear", "--grid", grid, "--orders", str(d / "nope.csv")], "not found")
    orders("json-broken", '{"orders": [', "not valid JSON", suffix=".json")
    orders("json-shape", "42", "expected a list of order objects", suffix=".json")
    orders("json-extra-key", '{"orders": [], "note": 1}', "no other key", suffix=".json")
    orders("json-deep", "[" * 200_000, "nested more than 16 levels", suffix=".json")

    def json_order(**changes: object) -> str:
        order = {"order_id": "s1", "participant": "a", "bus": "LV3", "side": "sell"}
        return json.dumps([{**order, "energy_wh": 5, "limit_price": 1, **changes}])

    orders("json-true-energy", json_order(energy_wh=True), "energy_wh", suffix=".json")
    orders("json-infinity", json_order(limit_price=float("inf")), "got inf", suffix=".json")
    orders("json-list-bus", json_order(bus=["LV3"]), "bus must be text", suffix=".json")
    spreadsheet = "\ufeff" + HEADER.replace(",", ", ") + GOOD_ROWS.replace(",", ", ")
    path = write(d, "spreadsheet.csv", spreadsheet)
    add(
        "orders-bom-and-spaces-are-fine",
        ["clear", "--grid", grid, "--orders", path],
        "cleared",
        code=0,
    )

    # -- clear's numbers
    clear("vm-min-nan", ["--vm-min", "nan"], "argument --vm-min: must be a finite number")
    clear("vm-max-inf", ["--vm-max", "inf"], "argument --vm-max: must be a finite number")
    clear("vm-min-low", ["--vm-min", "0.1"], "argument --vm-min: must be a voltage from 0.5")
    clear("vm-band-inverted", ["--vm-min", "1.06"], "must be below vm_max_pu")
    clear("time-limit-negative", ["--time-limit", "-1"], "argument --time-limit")
    clear("time-limit-nan", ["--time-limit", "nan"], "argument --time-limit")
    clear("import-price-1e308", ["--import-price", "1e308"], "argument --import-price")
    clear("export-price-negative", ["--export-price", "-1"], "argument --export-price")
    clear("export-above-import", ["--export-price", "400000"], "must not exceed import_price")
    clear("time-step-negative", ["--time-step", "-1"], "argument --time-step")
    clear("time-step-without-profiles", ["--time-step", "5"], "has no profiles")
    clear("mechanism", ["--mechanism", "lottery"], "argument --mechanism: invalid choice")

    # -- grids
    def grid_spec(name: str, spec: str, says: str) -> None:
        add(f"grid-{name}", ["clear", "--grid", spec, "--orders", good], says)

    grid_spec("unknown", "atlantis", "unknown grid 'atlantis'")
    grid_spec("misspelt", "cigre_lv", "did you mean 'cigre-lv'")
    grid_spec("missing-file", str(d / "nope.json"), "grid file not found")
    grid_spec("directory", str(d / "folder.json"), "is a directory")
    grid_spec("binary", write(d, "binary.json", binary), "binary file")
    grid_spec("not-a-net", write(d, "empty.json", "{}"), "not a pandapower JSON network")
    grid_spec("simbench-code", "simbench:../../etc/passwd", "unknown SimBench code")
    add("grid-buses-unknown", ["grid", "buses", "--grid", "atlantis"], "unknown grid")
    add("grid-buses-directory", ["grid", "buses", "--grid", str(d / "folder.json")], "directory")
    add(
        "grid-buses-time-step",
        ["grid", "buses", "--grid", grid, "--time-step", "-5"],
        "argument --time-step",
    )
    add("grid-buses-lists-the-slack", ["grid", "buses", "--grid", grid], "slack", code=0)

    # -- site files (the validation `site check` and `run` share)
    def site_case(
        name: str, says: str, command: tuple[str, ...] = ("site", "check"), **changes: str
    ) -> None:
        path = site(d, f"{name}.toml", grid, db, **changes)
        add(f"site-{name}", [*command, "--site", path], says)

    add("site-good-passes", ["site", "check", "--site", good_site], "Bad-input corpus", code=0)
    site_case("unit-300", "unit", unit="300")
    site_case("port-70000", "port", port="70000")
    site_case("missing-map", "no_such_map", map="no_such_map")
    site_case("price-9.2e18", "price", price="9_200_000_000_000_000_000")
    site_case("soc-bounds", "min_soc_percent: must be below", min_soc="90", max_soc="10")
    site_case("unknown-key", "did you mean 'price'", price="1\n  prise = 2")
    site_case("run-refuses-too", "unit", ("run", "--once"), unit="300")
    path = write(d, "unknown-bus.toml", Path(good_site).read_text().replace('"LV1"', '"LV9"'))
    add("site-unknown-bus", ["site", "check", "--site", path], "closest: 'LV0'")
    path = write(d, "deep.toml", "x = " + "[" * 200_000 + "]" * 200_000 + "\n")
    add("site-deeply-nested", ["site", "check", "--site", path], "deep.toml")
    path = write(d, "not-toml.toml", "[site\nname = 1\n")
    add("site-not-toml", ["site", "check", "--site", path], "not valid TOML")
    add("site-directory", ["site", "check", "--site", str(folder)], "is a directory")
    add("site-binary", ["site", "check", "--site", write(d, "binary.toml", binary)], "binary")
    path = write(
        d, "latin1.toml", Path(good_site).read_text().replace("corpus", "\xe9").encode("latin-1")
    )
    add("site-not-utf8", ["site", "check", "--site", path], "not UTF-8")
    add("site-missing", ["site", "check", "--site", str(d / "nope.toml")], "not found")

    # -- database URLs and paths
    def db_case(name: str, url: str, says: str, command: str = "current") -> None:
        add(f"db-{command}-{name}", ["db", command, "--db", url], says)

    db_case("garbage", "not a url", "URL")
    db_case("driver-missing", "postgresql+pg8000://u@localhost/x", "driver")
    db_case("unknown-dialect", "foo://x", "foo")
    db_case("no-folder", "sqlite:////nonexistent-peergrid/x.db", "no folder", "upgrade")
    db_case("directory", f"sqlite:///{folder.as_posix()}", "is a directory", "upgrade")
    db_case("not-sqlite", f"sqlite:///{write(d, 'text.db', 'hello')}", "not a SQLite database")
    db_case("missing", f"sqlite:///{(d / 'nope.sqlite').as_posix()}", "no database", "current")
    add("db-site-missing", ["db", "current", "--site", str(d / "nope.toml")], "not found")
    bad_site = site(d, "bad-unit.toml", grid, db, unit="0")
    add("db-upgrade-bad-site", ["db", "upgrade", "--site", bad_site], "unit")
    add(
        "run-unknown-bus-site",
        ["run", "--once", "--site", str(d / "unknown-bus.toml")],
        "unknown bus 'LV9'",
    )

    def verify(name: str, argv: list[str], says: str) -> None:
        add(f"audit-verify-{name}", ["audit", "verify", *argv], says)

    verify("garbage-url", ["--site", good_site, "--db", "not a url"], "URL")
    verify("driver-missing", ["--site", good_site, "--db", "postgresql+pg8000://u@h/x"], "driver")
    verify(
        "missing-db", ["--site", good_site, "--db", f"sqlite:///{d / 'nope.sqlite'}"], "no database"
    )
    verify("missing-site", ["--site", str(d / "nope.toml")], "site file not found")
    verify("directory-site", ["--site", str(folder)], "is a directory")
    bad_url_site = write(d, "bad-url.toml", Path(good_site).read_text().replace(db, "nonsense"))
    verify("site-with-garbage-url", ["--site", bad_url_site, "--no-reclear"], "URL")

    # -- numbers, times and folders of the other commands
    add("demo-start-garbage", ["demo", "--start", "garbage"], "argument --start")
    add("demo-start-naive", ["demo", "--start", "2026-06-21T09:00"], "time zone")
    add("demo-start-off-boundary", ["demo", "--start", "2026-06-21T09:07Z"], "boundary")
    add("demo-intervals-zero", ["demo", "--intervals", "0"], "argument --intervals")
    add("demo-intervals-word", ["demo", "--intervals", "many"], "argument --intervals")
    add("demo-out-proc", ["demo", "--out", "/proc/peergrid-x"], "/proc/peergrid-x")
    add("demo-out-file", ["demo", "--out", good], "it is a file")
    add("demo-out-below-file", ["demo", "--out", f"{good}/sub"], "Not a directory")
    add("devices-read-port-70000", ["devices", "read", "--port", "70000"], "argument --port")
    add("devices-read-port-negative", ["devices", "read", "--port", "-1"], "argument --port")
    add("devices-read-unit-300", ["devices", "read", "--unit", "300"], "argument --unit")
    add("devices-read-timeout-nan", ["devices", "read", "--timeout", "nan"], "argument --timeout")
    add(
        "devices-read-baud-zero",
        ["devices", "read", "--rtu", "/dev/null", "--baud", "0"],
        "argument --baud",
    )
    add("devices-read-map-directory", ["devices", "read", "--map", str(folder)], "a-folder")
    add("devices-read-map-missing", ["devices", "read", "--map", str(d / "nope.json")], "nope.json")
    add(
        "devices-simulate-port",
        ["devices", "simulate", "meter", "--port", "70000"],
        "argument --port",
    )
    add(
        "devices-simulate-speed-nan",
        ["devices", "simulate", "meter", "--port", "0", "--speed", "nan"],
        "argument --speed",
    )
    add("run-site-directory", ["run", "--once", "--site", str(folder)], "is a directory")
    add(
        "chain-deployment-directory",
        ["chain", "status", "--deployment", str(folder)],
        "--deployment",
    )
    add("chain-interval-word", ["chain", "verify-trade", "--interval", "soon"], "--interval")
    add("unknown-command", ["trade"], "invalid choice: 'trade'")
    return cases


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus folder: grid, database (made by ``peergrid db upgrade``), files."""
    d = tmp_path_factory.mktemp("bad-input")
    make_grid(d / "grid.json")
    made = run_case(Case("db", ("db", "upgrade", "--db", f"sqlite:///{d / 'site.sqlite'}"), ""), d)
    assert made.code == 0, made.err
    return d


@pytest.fixture(scope="module")
def outcomes(scratch: Path) -> dict[str, tuple[Case, Outcome]]:
    """Every case's outcome; the database's hash is compared before and after."""
    before = hashlib.sha256((scratch / "site.sqlite").read_bytes()).hexdigest()
    cases = corpus(scratch)
    assert len({c.name for c in cases}) == len(cases), "case names must be unique"
    with ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 2) + 1)) as pool:
        results = list(pool.map(lambda c: run_case(c, scratch), cases))
    after = hashlib.sha256((scratch / "site.sqlite").read_bytes()).hexdigest()
    done = {c.name: (c, o) for c, o in zip(cases, results, strict=True)}
    done["<database unchanged>"] = (
        Case("<database unchanged>", (), before),
        Outcome(0, after, ""),
    )
    return done


def case_names() -> list[str]:
    """The case names, for parametrisation (the corpus built in a throwaway folder)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return [c.name for c in corpus(Path(d))]


def test_the_corpus_is_big_enough() -> None:
    names = case_names()
    assert len(names) >= 60
    kinds = {n.split("-")[0] for n in names}
    assert {"orders", "clear", "grid", "site", "db", "audit", "demo", "devices"} <= kinds


@pytest.mark.parametrize("name", case_names())
def test_bad_input_is_refused_in_one_line(
    outcomes: dict[str, tuple[Case, Outcome]], name: str
) -> None:
    case, outcome = outcomes[name]
    problems = problems_of(case, outcome)
    assert not problems, (
        f"{' '.join(case.argv)}\n  " + "\n  ".join(problems) + f"\n--- stderr:\n{outcome.err}"
    )


def test_no_case_changed_the_database(outcomes: dict[str, tuple[Case, Outcome]]) -> None:
    case, outcome = outcomes["<database unchanged>"]
    assert outcome.out == case.says


def test_the_harness_can_fail(scratch: Path) -> None:
    """The judgement catches inverted expectations, tracebacks, extra lines, a wrong message."""
    refused = run_case(Case("x", ("demo", "--intervals", "0"), ""), scratch)
    assert not problems_of(Case("ok", (), "--intervals"), refused)
    inverted = Case("inverted", ("demo", "--intervals", "0"), "--intervals", code=0)
    assert "exit code 2, expected 0" in problems_of(inverted, refused)
    assert "stdout does not say '--intervals'" in problems_of(inverted, refused)
    wrong_words = Case("wrong", (), "--start")
    assert problems_of(wrong_words, refused) == ["stderr does not say '--start'"]
    crash = Outcome(2, "", 'Traceback (most recent call last):\n  File "x"\nKeyError: 1\n')
    assert problems_of(Case("c", (), "KeyError"), crash) == [
        "a traceback was printed",
        "3 lines on stderr, expected one",
    ]
    failed = Outcome(1, "", "peergrid: error: boom\n")
    assert problems_of(Case("f", (), "boom"), failed) == ["exit code 1, expected 2"]

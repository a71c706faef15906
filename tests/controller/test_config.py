"""Site files: strict validation, every problem at once, each naming the item and the key."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest

from controller.cli import main
from controller.config import (
    ChainBackend,
    ChainConfig,
    ChainTable,
    DeviceConfig,
    DeviceEntry,
    InvalidSite,
    OrderEntry,
    ParticipantEntry,
    SiteTable,
    StandingOrder,
    TariffsTable,
    Transport,
    parse_site,
    read_site,
    site_schema,
)
from controller.demo import demo_site
from controller.errors import ConfigError
from controller.wiring import load_site_grid
from market.clearing.options import Engine
from market.domain import Mechanism, MeterRole

ROOT = Path(__file__).parents[2]
ADDRESS = "0x" + "ab" * 20

MINIMAL = """
[site]
grid = "cigre-lv"
database = "sqlite:///{db}"

[[participants]]
id = "alice"
bus = "Bus R11"
  [[participants.orders]]
  kind = "sell_surplus"
  price = 100_000

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = 1502
"""

BATTERY = """
[[participants]]
id = "heidi"
bus = "Bus C13"
  [[participants.orders]]
  kind = "battery"
  price = 150_000
  discharge_price = 280_000
  min_soc_percent = 10.0
  max_soc_percent = 95.0

[[devices]]
id = "heidi-battery"
participant = "heidi"
kind = "battery"
port = 1503
rated_w = 5000
capacity_wh = 13500
"""


def site_text(tmp_path: Path, extra: str = "") -> str:
    return MINIMAL.format(db=(tmp_path / "x.sqlite").as_posix()) + extra


def problems_of(text: str, tmp_path: Path, *, runnable: bool = False) -> tuple[str, ...]:
    with pytest.raises(InvalidSite) as caught:
        parse_site(tomllib.loads(text), "site.toml", base_dir=tmp_path, runnable=runnable)
    return caught.value.problems


def test_demo_site_parses_and_fits_its_grid() -> None:
    site = demo_site()
    assert len(site.participants) >= 8
    assert {d.kind for d in site.devices} == {"meter", "pv", "battery"}
    load_site_grid(site)


def test_minimal_site_takes_the_documented_defaults(tmp_path: Path) -> None:
    site = parse_site(tomllib.loads(site_text(tmp_path)))
    assert site.interval_s == 900
    assert (site.mechanism, site.engine, site.gate_closure_s) == (
        Mechanism.NODAL,
        Engine.HIGHSPY,
        0,
    )
    assert site.participants[0].orders[0].price == 100_000
    device = site.devices[0]
    assert device.map == "sunspec_inverter"
    assert device.role is MeterRole.GENERATION
    assert (device.transport, device.unit) == (Transport.TCP, 1)
    assert site.chain == ChainConfig()  # every [chain] default is the dataclass's


def test_file_defaults_agree_with_the_dataclass_defaults() -> None:
    """The pydantic models and the frozen dataclasses state each default once each: equal."""
    pairs = [
        (OrderEntry, StandingOrder),
        (DeviceEntry, DeviceConfig),
        (ChainTable, ChainConfig),
    ]
    for model, cls in pairs:
        for f in dataclasses.fields(cls):
            by_kind = {"role", "map"}  # the file's default depends on the device's kind
            if f.default is dataclasses.MISSING or f.name not in model.model_fields:
                continue
            if f.name in by_kind:
                continue
            assert model.model_fields[f.name].default == f.default, (model.__name__, f.name)


def test_new_keys_are_read(tmp_path: Path) -> None:
    extra = """
[[devices]]
id = "bob-net"
participant = "alice"
kind = "meter"
role = "connection_point"
transport = "rtu"
serial_port = "/dev/ttyUSB0"
baudrate = 19200
parity = "E"
unit = 7
"""
    text = site_text(tmp_path, extra).replace(
        "[site]\n", '[site]\nmechanism = "pay-as-bid"\nengine = "pyomo"\ngate_closure_s = 300\n'
    )
    text += f'\n[chain]\ngrid_account = "{ADDRESS}"\nadmin_key_env = "MY_ADMIN"\n'
    site = parse_site(tomllib.loads(text))
    assert (site.mechanism, site.engine, site.gate_closure_s) == (
        Mechanism.PAY_AS_BID,
        Engine.PYOMO,
        300,
    )
    rtu = site.devices[1]
    assert (rtu.transport, rtu.serial_port, rtu.baudrate, rtu.parity, rtu.unit, rtu.port) == (
        Transport.RTU,
        "/dev/ttyUSB0",
        19200,
        "E",
        7,
        0,
    )
    assert rtu.role is MeterRole.CONNECTION_POINT
    assert site.chain.grid_account == ADDRESS
    assert site.chain.admin_key_env == "MY_ADMIN"


def _device(**keys: object) -> str:
    body = {"id": "x", "participant": "alice", "kind": "meter", "port": 1600, **keys}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in body.items())
    return f"\n[[devices]]\n{lines}\n"


def _order(**keys: object) -> str:
    lines = "\n".join(f"  {k} = {json.dumps(v)}" for k, v in keys.items())
    return f'\n[[participants]]\nid = "bob"\nbus = "Bus R15"\n  [[participants.orders]]\n{lines}\n'


BAD = [
    # -- the examples
    (_device(map="maps/nope.json"), r"devices\[1\] \(x\)\.map: cannot read register map .*nope"),
    (_device(map="nosuch"), r"devices\[1\] \(x\)\.map: no built-in register map 'nosuch'"),
    (_device(unit=300), r"devices\[1\] \(x\)\.unit: must be <= 247, got 300"),
    (_device(port=70000), r"devices\[1\] \(x\)\.port: must be <= 65535, got 70000"),
    (
        BATTERY.replace("min_soc_percent = 10.0", "min_soc_percent = 90").replace(
            "max_soc_percent = 95.0", "max_soc_percent = 10"
        ),
        r"participants\[1\] \(heidi\)\.orders\[0\]\.min_soc_percent: must be below "
        r"max_soc_percent \(10\), got 90",
    ),
    (
        _order(kind="buy", price=9.2e18, energy_wh=100),
        r"participants\[1\] \(bob\)\.orders\[0\]\.price: must be an integer, got 9\.2e\+18",
    ),
    (
        _order(kind="buy", price=9_200_000_000_000_000_000, energy_wh=100),
        r"participants\[1\] \(bob\)\.orders\[0\]\.price: must be <= 1000000000",
    ),
    (
        _order(kind="sell_surplus", prise=100),
        r"participants\[1\] \(bob\)\.orders\[0\]\.prise: unknown key \(did you mean 'price'\?\)",
    ),
    (
        BATTERY.replace("rated_w = 5000\n", ""),
        r"devices\[1\] \(heidi-battery\)\.rated_w: a battery needs rated_w",
    ),
    (
        BATTERY.replace("capacity_wh = 13500\n", ""),
        r"devices\[1\] \(heidi-battery\)\.capacity_wh: a battery needs capacity_wh",
    ),
    (
        '\n[chain]\nbackend = "rpc"\nrpc_url = "http://127.0.0.1:8545"\n',
        r"participants\[0\] \(alice\)\.account: backend 'rpc' refuses derived \(demo\) keys",
    ),
    ('\n[chain]\nbackend = "anvil"\n', r"chain\.grid_account: backend 'anvil' refuses derived"),
    ('\n[chain]\nbackend = "anvil"\n', r"chain\.community_account: backend 'anvil' refuses"),
    (
        _device(participant="alcie"),
        r"devices\[1\] \(x\)\.participant: unknown participant 'alcie' \(did you mean 'alice'\?\)",
    ),
    # -- participants and orders
    (
        '\n[[participants]]\nid = "alice"\nbus = "Bus R15"\n',
        r"participants\[1\] \(alice\)\.id: dup",
    ),
    ('\n[[participants]]\nid = "GRID"\nbus = "Bus R15"\n', r"\(GRID\)\.id: 'GRID' is a reserved"),
    ('\n[[participants]]\nid = "a:b"\nbus = "Bus R15"\n', r"\(a:b\)\.id: must be letters"),
    (
        '\n[[participants]]\nid = "bob"\nbus = "Bus R15"\ndeposit = -5\n',
        r"\(bob\)\.deposit: must be >= 0",
    ),
    (
        '\n[[participants]]\nid = "bob"\nbus = "Bus R15"\ndeposit = "lots"\n',
        r"\(bob\)\.deposit: must be an integer, got 'lots'",
    ),
    (
        '\n[[participants]]\nid = "bob"\nbus = "Bus R15"\naccount = "0x12"\n',
        r"\(bob\)\.account: must be a 0x address",
    ),
    ('\n[[participants]]\nid = "bob"\n', r"participants\[1\] \(bob\)\.bus: missing \(required\)"),
    (_order(kind="buy", price=1), r"\(bob\)\.orders\[0\]\.energy_wh: a fixed buy order needs"),
    (_order(kind="sell", price=1, energy_wh=1500.7), r"orders\[0\]\.energy_wh: must be an integer"),
    (_order(kind="sell", price=1, energy_wh=10**9 + 1), r"energy_wh: must be <= 1000000000"),
    (_order(kind="buy_demand", price=1, energy_wh=5), r"energy_wh: only buy and sell orders"),
    (_order(kind="sell_surplus", price=1, max_soc_percent=5), r"only battery orders take max_soc"),
    (_order(kind="bid", price=1), r"orders\[0\]\.kind: must be one of 'sell_surplus'"),
    (_order(kind="sell", price=-1, energy_wh=5), r"orders\[0\]\.price: must be >= 0, got -1"),
    (
        _order(kind="battery", price=100, discharge_price=50),
        r"discharge_price: must be >= price .*got 50",
    ),
    (_order(kind="battery", price=100), r"orders\[0\]\.discharge_price: a battery order needs"),
    (
        _order(kind="battery", price=1, discharge_price=2),
        r"orders\[0\]\.kind: a battery order needs a battery device of 'bob'",
    ),
    ('\n[[participants.orders]]\nkind = "sell"\nprice = nan\nenergy_wh = 1\n', r"price: must be"),
    # -- devices
    (_device(id="alice-pv"), r"devices\[1\] \(alice-pv\)\.id: duplicate id 'alice-pv'"),
    (_device(kind="inverter"), r"devices\[1\] \(x\)\.kind: must be one of 'meter', 'pv'"),
    (_device(unit=0), r"\.unit: must be >= 1, got 0"),
    (_device(capacity_wh=5), r"\.capacity_wh: a meter takes no capacity_wh"),
    (_device(role="storage"), r"\.role: a meter can be connection_point, generation, load"),
    (_device(transport="rtu"), r"\.port: transport 'rtu' takes no port"),
    (_device(transport="rtu", port=0), r"\.serial_port: transport 'rtu' needs serial_port"),
    (_device(baudrate=9600), r"\.baudrate: transport 'tcp' takes no baudrate"),
    (_device(port=1502, unit=1), r"devices\[1\] \(x\)\.unit: 127\.0\.0\.1:1502 unit 1 is already"),
    (
        _device(id="a", transport="rtu", serial_port="/dev/ttyS0", port=0)
        + _device(id="b", transport="rtu", serial_port="/dev/ttyS0", port=0, baudrate=19200),
        r"devices\[2\] \(b\)\.serial_port: shares /dev/ttyS0 with 'a' but not its line",
    ),
    (
        _device(id="a", transport="rtu", serial_port="/dev/ttyS0", port=0)
        + _device(id="b", transport="rtu", serial_port="/dev/ttyS0", port=0),
        r"devices\[2\] \(b\)\.unit: /dev/ttyS0 unit 1 is already device 'a'",
    ),
    (_device(sunspec=True), r"devices\[1\] \(x\)\.sunspec: unknown key"),
    # -- [site], [tariffs], [chain] and tables
    ("\n[tarifs]\nimport_price = 1\n", r"^tarifs: unknown table \(did you mean 'tariffs'\?\)"),
    ("\n[tariffs]\nexport_price = 400_000\n", r"tariffs\.export_price: must not exceed import"),
    ("\n[tariffs]\nimport_price = 1e308\n", r"tariffs\.import_price: must be an integer"),
    ('\n[chain]\nbackend = "rpc"\n', r"chain\.rpc_url: backend 'rpc' needs rpc_url"),
    ('\n[chain]\nbackend = "ganache"\n', r"chain\.backend: must be one of 'embedded'"),
    ('\n[chain]\ntoken_address = "0x1"\n', r"chain\.token_address: must be a 0x address"),
    ('\n[chain]\noperator_key_env = "MY-KEY"\n', r"operator_key_env: must be an environment"),
    ('\n[chain]\nrpc_url = "localhost"\n', r"chain\.rpc_url: must be an http"),
    ("\n[chain]\nconfirmations = -1\n", r"chain\.confirmations: must be >= 0"),
]

SITE_KEYS = [
    ("interval_s = 700", r"site\.interval_s: must divide a day \(86400 s\) evenly, got 700"),
    ("interval_s = 30", r"site\.interval_s: must be >= 60, got 30"),
    ("gate_closure_s = 900", r"site\.gate_closure_s: must be below interval_s \(900\)"),
    ("vm_min_pu = 1.1", r"site\.vm_min_pu: must be below vm_max_pu \(1\.05\), got 1\.1"),
    ("vm_max_pu = inf", r"site\.vm_max_pu: must be a finite number, got inf"),
    ('mechanism = "nodall"', r"site\.mechanism: must be one of 'nodal', 'uniform'"),
    ('engine = "cplex"', r"site\.engine: must be one of 'highspy'"),
    ("solver_time_limit_s = 0", r"site\.solver_time_limit_s: must be > 0"),
    ("max_reading_age_s = 0", r"site\.max_reading_age_s: must be >= 1"),
    ('grid = "missing.json"', r"site\.grid: grid file not found: .*missing\.json"),
    ('database = "no url"', r"site\.database: not a database URL"),
    ("name = 5", r"site\.name: must be a string, got 5"),
    ("intervall_s = 900", r"site\.intervall_s: unknown key \(did you mean 'interval_s'\?\)"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_items_are_named(tmp_path: Path, extra: str, message: str) -> None:
    problems = problems_of(site_text(tmp_path, extra), tmp_path)
    assert any(re.search(message, p) for p in problems), problems


@pytest.mark.parametrize(("line", "message"), SITE_KEYS)
def test_bad_site_keys_are_named(tmp_path: Path, line: str, message: str) -> None:
    text = site_text(tmp_path)
    key = line.split(" = ", maxsplit=1)[0]
    if f"\n{key} = " in text:  # MINIMAL sets it already: replace its line
        text = re.sub(rf"\n{key} = .*\n", f"\n{line}\n", text, count=1)
    else:
        text = text.replace("[site]\n", f"[site]\n{line}\n")
    problems = problems_of(text, tmp_path)
    assert any(re.search(message, p) for p in problems), problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        site_text(tmp_path).replace("[site]\n", "[site]\ninterval_s = 700\n")
        + _order(
            kind="battery", price=9.2e18, discharge_price=1, min_soc_percent=90, max_soc_percent=10
        )
        + _device(unit=300, port=70000, participant="alcie")
        + BATTERY.replace("rated_w = 5000\n", "")
        + '\n[chain]\nbackend = "rpc"\n'
    )
    with pytest.raises(InvalidSite) as caught:
        parse_site(tomllib.loads(text), "site.toml", base_dir=tmp_path)
    problems = caught.value.problems
    expected = [
        r"^site\.interval_s: must divide a day",
        r"^chain\.rpc_url: ",
        r"^chain\.grid_account: ",
        r"^participants\[0\] \(alice\)\.account: backend 'rpc' refuses",
        r"^participants\[1\] \(bob\)\.orders\[0\]\.price: must be an integer",
        r"^participants\[1\] \(bob\)\.orders\[0\]\.kind: a battery order needs a battery device",
        r"^devices\[1\] \(x\)\.unit: must be <= 247",
        r"^devices\[1\] \(x\)\.port: must be <= 65535",
        r"^devices\[1\] \(x\)\.participant: unknown participant 'alcie'",
        r"^devices\[2\] \(heidi-battery\)\.rated_w: a battery needs rated_w",
    ]
    for pattern in expected:
        assert any(re.search(pattern, p) for p in problems), (pattern, problems)
    text_of_error = str(caught.value)
    assert text_of_error.startswith(f"site.toml: {len(problems)} problems:\n")
    assert text_of_error.count("\n") == len(problems)
    # in file order: [site], [chain], participants, devices
    firsts = [p.split(".")[0].split("[")[0] for p in problems]
    order = ["site", "chain", "participants", "devices"]
    assert firsts == sorted(firsts, key=order.index)
    assert isinstance(caught.value, ConfigError)


def test_a_rule_is_not_reported_for_a_key_already_wrong(tmp_path: Path) -> None:
    text = site_text(tmp_path) + BATTERY.replace("rated_w = 5000", 'rated_w = "5 kW"')
    assert problems_of(text, tmp_path) == (
        "devices[1] (heidi-battery).rated_w: must be an integer, got '5 kW'",
    )


def test_runnable_adds_what_run_needs(tmp_path: Path) -> None:
    text = site_text(tmp_path).replace("port = 1502", "port = 0")
    assert parse_site(tomllib.loads(text)).devices[0].port == 0  # simulated: the demo's
    (problem,) = problems_of(text, tmp_path, runnable=True)
    assert problem.startswith("devices[0] (alice-pv).port: 0 means a simulated device")
    anvil = site_text(tmp_path).replace(
        'bus = "Bus R11"', f'bus = "Bus R11"\naccount = "{ADDRESS}"'
    )
    anvil += (
        f'\n[chain]\nbackend = "anvil"\ngrid_account = "{ADDRESS}"\n'
        f'community_account = "{ADDRESS}"\noperator_keystore = "keys/op.json"\n'
    )
    site = parse_site(tomllib.loads(anvil), base_dir=tmp_path)
    assert site.chain.backend is ChainBackend.ANVIL
    problems = problems_of(anvil, tmp_path, runnable=True)
    assert [p.split(":")[0] for p in problems] == [
        "chain.token_address",
        "chain.settlement_address",
        "chain.operator_keystore",
    ]
    assert f"keystore not found: {tmp_path / 'keys/op.json'}" in problems[2]


def test_unknown_bus_is_named_with_the_closest_ones(tmp_path: Path) -> None:
    text = site_text(tmp_path).replace("Bus R11", "Bus R99") + BATTERY.replace("Bus C13", "Bus C99")
    site = parse_site(tomllib.loads(text))
    with pytest.raises(InvalidSite) as caught:
        load_site_grid(site)
    first, second = caught.value.problems
    assert first.startswith("participants[0] (alice).bus: unknown bus 'Bus R99' in grid cigre-lv")
    assert "closest" in first
    assert second.startswith("participants[1] (heidi).bus: unknown bus 'Bus C99'")


def test_the_schema_is_committed_and_in_step() -> None:
    committed = (ROOT / "controller/sites/site.schema.json").read_text("utf-8")
    generated = json.dumps(site_schema(), indent=2) + "\n"
    assert committed == generated, (
        "regenerate: peergrid site schema > controller/sites/site.schema.json"
    )
    schema = json.loads(committed)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"site", "tariffs", "chain", "participants", "devices"}
    device = schema["$defs"]["DeviceEntry"]["properties"]
    assert device["unit"]["minimum"] == 1
    assert device["unit"]["maximum"] == 247
    assert schema["$defs"]["OrderEntry"]["properties"]["price"]["maximum"] == 10**9


def test_the_schema_check_can_fail(tmp_path: Path) -> None:
    """A stale copy differs from the generated schema (what the test above compares)."""
    stale = json.loads((ROOT / "controller/sites/site.schema.json").read_text("utf-8"))
    del stale["$defs"]["DeviceEntry"]["properties"]["role"]
    assert json.dumps(stale, indent=2) + "\n" != json.dumps(site_schema(), indent=2) + "\n"


def _all_keys() -> set[str]:
    keys: set[str] = set()
    for model in (SiteTable, TariffsTable, ChainTable, ParticipantEntry, OrderEntry, DeviceEntry):
        keys |= set(model.model_fields)
    return keys


def test_every_key_is_documented() -> None:
    import controller.config

    doc = controller.config.__doc__ or ""
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("## Site file", 1)[1].split("\n## ", 1)[0]
    for key in sorted(_all_keys()):
        assert re.search(rf"\b{key}\b", doc), f"{key} missing in controller/config.py's docstring"
        assert f"`{key}`" in section, f"{key} missing in README.md's 'Site file' section"
    for must in ("60", "rated_w", "capacity_wh", "soc0_percent", "connection_point", "rtu"):
        assert must in section


def test_cli_exit_code_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site_text(tmp_path).replace("Bus R11", "Bus R99"), encoding="utf-8")
    assert main(["site", "check", "--site", str(path)]) == 2
    assert "unknown bus 'Bus R99'" in capsys.readouterr().err
    assert main(["run", "--site", str(path), "--once"]) == 2
    assert not (tmp_path / "x.sqlite").exists()
    (tmp_path / "bad.toml").write_text("[site\n", encoding="utf-8")
    assert main(["site", "check", "--site", str(tmp_path / "bad.toml")]) == 2
    assert main(["site", "check", "--site", str(tmp_path / "missing.toml")]) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (_device(map="maps/nope.json"), "devices[1] (x).map: cannot read register map"),
        (_device(unit=300), "devices[1] (x).unit: must be <= 247, got 300"),
        (_device(port=70000), "devices[1] (x).port: must be <= 65535, got 70000"),
        (BATTERY.replace("rated_w = 5000\n", ""), "a battery needs rated_w"),
        (_order(kind="buy", price=9.2e18, energy_wh=1), "orders[0].price: must be an integer"),
        (_device(port=0), "devices[1] (x).port: 0 means a simulated device"),
    ],
)
def test_site_check_refuses_what_run_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, message: str
) -> None:
    """``site check`` and ``run`` answer a bad site with the same exit code and message."""
    path = tmp_path / "site.toml"
    path.write_text(site_text(tmp_path, extra), encoding="utf-8")
    assert main(["site", "check", "--site", str(path)]) == 2
    check = capsys.readouterr().err
    assert main(["run", "--site", str(path), "--once"]) == 2
    run = capsys.readouterr().err
    assert message in check
    assert check == run
    assert "Traceback" not in check + run
    assert not (tmp_path / "x.sqlite").exists()


def test_site_check_passes_a_good_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site_text(tmp_path, BATTERY), encoding="utf-8")
    assert main(["site", "check", "--site", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in summary["devices"]] == ["alice-pv", "heidi-battery"]
    assert not (tmp_path / "x.sqlite").exists()


def test_site_schema_command_prints_the_committed_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["site", "schema"]) == 0
    committed = (ROOT / "controller/sites/site.schema.json").read_text("utf-8")
    assert capsys.readouterr().out == committed


def test_read_site_ok_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("\ufeff" + site_text(tmp_path), encoding="utf-8")
    site = read_site(path)
    assert site.participants[0].bus == "Bus R11"
    assert site.source == str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is a directory"),
        (b"\x00\x01binary", "is a binary file"),
        (b"[site]\nname = '\xe9'\n", "is not UTF-8 text"),
        (b"[site\n", "not valid TOML"),
        (b"site = 5\n[[participants]]\nid = 'a'\nbus = 'b'\n", "site: must be a table, got 5"),
        (b"[site]\n", "participants: a site needs at least one [[participants]] entry"),
        (b"[[participants]]\nid = 'a'\nbus = 'b'\n", "site: missing the table"),
    ],
)
def test_unreadable_site_files_are_one_line_errors(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "site.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_site(path)


def test_required_signatures_need_every_device_to_sign(tmp_path: Path) -> None:
    text = site_text(tmp_path, _device(id="bob-meter", signed_block=0x7000)).replace(
        "[site]\n", '[site]\nreading_signatures = "required"\n', 1
    )
    (problem,) = problems_of(text, tmp_path)
    assert "devices[0] (alice-pv).signed_block" in problem
    assert "alice-pv does not sign its readings, but the site requires signatures" in problem
    optional = parse_site(tomllib.loads(text.replace('"required"', '"optional"')))
    assert optional.reading_signatures == "optional"
    assert optional.unverified_penalty_bps == 2000
    assert [d.signed_block for d in optional.devices] == [None, 0x7000]
    assert any(
        "signed_block" in p
        for p in problems_of(site_text(tmp_path, _device(signed_block=0xFFFF)), tmp_path)
    )

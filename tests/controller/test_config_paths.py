"""Relative paths in a site file are the site folder's; ``site check --probe`` reads devices."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandapower as pp
import pandapower.networks as pn
import pytest

from adapters.modbus.simulators import LoadMeterSim, PVInverterSim
from controller.cli import main
from controller.config import read_site, resolve_database_url
from controller.wiring import load_site_grid

ROOT = Path(__file__).parents[2]

SITE = """
[site]
name = "s1"
grid = "grids/feeder.json"
database = "sqlite:///peergrid.sqlite"

[chain]
state_path = "chain/anvil-state.json"
operator_keystore = "keys/operator.json"
admin_keystore = "./keys/../keys/admin.json"

[[participants]]
id = "alice"
bus = "Bus R11"

[[devices]]
id = "alice-meter"
participant = "alice"
kind = "meter"
port = 1502
map = "maps/meter.json"
"""


@pytest.fixture
def site_folder(tmp_path: Path) -> Path:
    """``s1/`` with a site file, its grid JSON, a register map file and two keystores."""
    s1 = tmp_path / "s1"
    for sub in ("grids", "maps", "keys", "chain"):
        (s1 / sub).mkdir(parents=True)
    pp.to_json(pn.create_cigre_network_lv(), str(s1 / "grids/feeder.json"))
    shutil.copy(ROOT / "adapters/modbus/registermaps/sdm630.json", s1 / "maps/meter.json")
    (s1 / "keys/operator.json").write_text("{}", "utf-8")
    (s1 / "keys/admin.json").write_text("{}", "utf-8")
    (s1 / "site.toml").write_text(SITE, "utf-8")
    (tmp_path / "elsewhere").mkdir()
    return s1


def test_relative_paths_are_the_site_folders(
    site_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s1 = site_folder.resolve()
    monkeypatch.chdir(site_folder.parent / "elsewhere")
    site = read_site("../s1/site.toml")
    assert site.database == f"sqlite:///{(s1 / 'peergrid.sqlite').as_posix()}"
    assert site.grid == str(s1 / "grids/feeder.json")
    assert site.devices[0].map == str(s1 / "maps/meter.json")
    assert site.chain.state_path == str(s1 / "chain/anvil-state.json")
    assert site.chain.operator_keystore == str(s1 / "keys/operator.json")
    assert site.chain.admin_keystore == str(s1 / "keys/admin.json")
    assert "Bus R11" in load_site_grid(site).bus_names


def test_commands_from_another_folder_use_the_sites_database(
    site_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = site_folder.parent / "elsewhere"
    monkeypatch.chdir(elsewhere)
    assert main(["site", "check", "--site", "../s1/site.toml"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "s1"
    assert main(["db", "upgrade", "--site", "../s1/site.toml"]) == 0
    assert (site_folder / "peergrid.sqlite").is_file()
    assert list(elsewhere.iterdir()) == []  # nothing made in the current folder


def test_a_missing_relative_file_is_named_with_its_resolved_path(
    site_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (site_folder / "maps/meter.json").unlink()
    monkeypatch.chdir(site_folder.parent / "elsewhere")
    assert main(["site", "check", "--site", "../s1/site.toml"]) == 2
    err = capsys.readouterr().err
    s1 = site_folder.resolve()
    assert f"devices[0] (alice-meter).map: cannot read register map {s1 / 'maps/meter.json'}" in err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///peergrid.sqlite", "sqlite:////site/peergrid.sqlite"),
        ("sqlite:///db/../x.sqlite?timeout=5", "sqlite:////site/x.sqlite?timeout=5"),
        ("sqlite+pysqlite:///x.sqlite", "sqlite+pysqlite:////site/x.sqlite"),
        ("sqlite:////var/lib/pg.sqlite", "sqlite:////var/lib/pg.sqlite"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_sqlite_urls_are_made_absolute(url: str, expected: str) -> None:
    assert resolve_database_url(url, Path("/site")) == expected


PROBED = """
[site]
database = "sqlite:///s.sqlite"

[[participants]]
id = "alice"
bus = "Bus R11"

[[participants]]
id = "bob"
bus = "Bus R15"

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = {pv_port}
rated_w = 8000

[[devices]]
id = "bob-meter"
participant = "bob"
kind = "meter"
port = {meter_port}
"""


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_site_check_probe_reads_every_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    path = tmp_path / "site.toml"
    with (
        PVInverterSim(8000, lambda _t: 5000.0, start_at=now) as pv,
        LoadMeterSim(lambda _t: 3000.0, start_at=now) as meter,
    ):
        path.write_text(PROBED.format(pv_port=pv.port, meter_port=meter.port), "utf-8")
        assert main(["site", "check", "--site", str(path), "--probe"]) == 0
        probe = json.loads(capsys.readouterr().out)["probe"]
        assert {r["device"]: r["quality"] for r in probe} == {"alice-pv": "ok", "bob-meter": "ok"}
        assert next(r["p_w"] for r in probe if r["device"] == "bob-meter") > 0
    # The simulators are gone: the probe says so, device by device, with exit code 1.
    assert main(["site", "check", "--site", str(path), "--probe", "--timeout", "0.2"]) == 1
    probe = json.loads(capsys.readouterr().out)["probe"]
    assert {r["quality"] for r in probe} == {"missing"}
    assert all(r["reason"] for r in probe)
    assert not (tmp_path / "s.sqlite").exists()  # a check writes nothing

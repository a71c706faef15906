"""Site files: every error names the item; the CLI exits 2 and writes nothing."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from controller.cli import main
from controller.config import parse_site, read_site
from controller.demo import demo_site
from controller.errors import ConfigError
from controller.wiring import load_site_grid

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


def site_text(tmp_path: Path, extra: str = "", **replace: str) -> str:
    text = MINIMAL.format(db=tmp_path / "x.sqlite") + extra
    for old, new in replace.items():
        text = text.replace(old.replace("_", " "), new)
    return text


def test_demo_site_parses_and_fits_its_grid() -> None:
    site = demo_site()
    assert len(site.participants) >= 8
    kinds = {d.kind for d in site.devices}
    assert kinds == {"meter", "pv", "battery"}
    load_site_grid(site)


def test_minimal_site(tmp_path: Path) -> None:
    site = parse_site(tomllib.loads(site_text(tmp_path)))
    assert site.interval_s == 900
    assert site.participants[0].orders[0].price == 100_000
    assert site.devices[0].map == "sunspec_inverter"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '\n[[participants]]\nid = "alice"\nbus = "Bus R15"\n',
            r"participants\[1\] \(alice\): duplicate",
        ),
        (
            '\n[[participants]]\nid = "bob"\nbus = "Bus R15"\ndeposit = -5\n',
            r"\(bob\): deposit must be >= 0",
        ),
        (
            '\n[[participants]]\nid = "bob"\nbus = "Bus R15"\ndeposit = "lots"\n',
            r"\(bob\): deposit must be an integer",
        ),
        (
            '\n[[participants]]\nid = "bob"\nbus = "Bus R15"\n'
            '  [[participants.orders]]\n  kind = "buy"\n  price = 1\n',
            r"participants\[1\] \(bob\)\.orders\[0\]: a fixed buy order needs energy_wh > 0",
        ),
        (
            '\n[[devices]]\nid = "x"\nparticipant = "nobody"\nkind = "meter"\n',
            r"devices\[1\] \(x\): unknown participant",
        ),
        (
            '\n[[devices]]\nid = "alice-pv"\nparticipant = "alice"\nkind = "pv"\n',
            r"devices\[1\] \(alice-pv\): duplicate device",
        ),
        ('\n[[participants]]\nid = "GRID"\nbus = "Bus R15"\n', "reserved"),
    ],
)
def test_bad_items_are_named(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_site(tomllib.loads(site_text(tmp_path, extra)))


def test_unknown_bus_is_named(tmp_path: Path) -> None:
    site = parse_site(tomllib.loads(site_text(tmp_path).replace("Bus R11", "Bus R99")))
    with pytest.raises(ConfigError, match=r"participants\[0\] \(alice\): unknown bus 'Bus R99'"):
        load_site_grid(site)


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


def test_read_site_ok(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site_text(tmp_path), encoding="utf-8")
    assert read_site(path).participants[0].bus == "Bus R11"

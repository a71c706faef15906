"""The clearing engine is chosen by ``peergrid clear --engine`` and by the site file, end to end.

``highspy`` (the sparse fast path, the default) and ``pyomo`` (the algebraic reference model)
solve the same LP (``tests/market/test_engines_properties.py``). Here the option travels the
whole way: the command line (``main`` and a real ``peergrid`` process) and ``engine = "pyomo"``
in a site file's ``[site]`` table through ``read_site`` and ``build_runtime`` to the cycle's
clearing, with a spy on the pyomo model builder to show which path ran.

The books have a unique optimum (every order at its own price), so the two engines must agree
on every figure of the result, trades and prices included; on degenerate books only the status,
welfare and accepted energy are comparable (a later issue makes published prices unique).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import controller.demo
import market.clearing as mc
from controller.cli import main
from controller.config import read_site
from controller.demo import demo_runtime
from market.clearing import Engine
from market.clearing.model import BuiltModel
from market.domain import ClearingResult, ClearingStatus

ORDERS = "order_id,participant,bus,side,energy_wh,limit_price\n" + (
    "s1,alice,Bus R18,sell,9000,90000\n"
    "s2,bob,Bus C17,sell,6000,100000\n"
    "s3,erin,Bus R11,sell,3000,70000\n"
    "b1,carol,Bus R15,buy,7000,320000\n"
    "b2,dave,Bus I2,buy,5000,310000\n"
    "b3,frank,Bus C12,buy,4000,150000\n"
)


@pytest.fixture
def pyomo_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pyomo models ``clear`` builds (the real builder still runs)."""
    calls: list[int] = []
    build_model: Callable[..., BuiltModel] = mc.build_model

    def counted(*args: Any, **kwargs: Any) -> BuiltModel:
        calls.append(1)
        return build_model(*args, **kwargs)

    monkeypatch.setattr(mc, "build_model", counted)
    return calls


def deterministic(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without its timings, the engine's name and its solver's own status word."""
    return {k: v for k, v in doc.items() if k not in {"timings", "engine", "solver"}}


def clear_json(orders: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code = main(["clear", "--grid", "cigre-lv", "--orders", str(orders), "--json", *extra])
    assert code == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def test_clear_engine_pyomo_gives_the_same_trades_as_highspy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pyomo_builds: list[int]
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text(ORDERS, encoding="utf-8")
    fast = clear_json(orders, capsys=capsys)
    assert pyomo_builds == []  # highspy is the default
    ref = clear_json(orders, "--engine", "pyomo", capsys=capsys)
    assert len(pyomo_builds) == ref["iterations"] >= 1  # every solve of the AC loop
    assert (fast["engine"], ref["engine"]) == ("highspy", "pyomo")
    assert ref["status"] == "cleared"
    assert ref["trades"]
    assert ref["trades"] == fast["trades"]
    assert deterministic(ref) == deterministic(fast)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_peergrid_command_takes_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text(ORDERS, encoding="utf-8")
    fast = clear_json(orders, capsys=capsys)
    peergrid = Path(sys.executable).with_name("peergrid")
    command = [str(peergrid), "clear", "--grid", "cigre-lv", "--orders", str(orders), "--json"]
    done = subprocess.run(  # noqa: S603 - our own console script
        [*command, "--engine", "pyomo"],
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    ref = json.loads(done.stdout)
    assert ref["engine"] == "pyomo"
    assert deterministic(ref) == deterministic(fast)
    wrong = subprocess.run(  # noqa: S603
        [*command, "--engine", "cplex"],
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert wrong.returncode == 2
    assert "invalid choice: 'cplex'" in wrong.stderr


def test_clear_orders_file_refuses_an_unknown_engine(tmp_path: Path) -> None:
    from controller.clearing_job import clear_orders_file
    from controller.errors import ConfigError

    orders = tmp_path / "orders.csv"
    orders.write_text(ORDERS, encoding="utf-8")
    with pytest.raises(ConfigError, match="engine must be one of highspy, pyomo, got 'glpk'"):
        clear_orders_file("cigre-lv", orders, engine="glpk")


def demo_site_file(tmp_path: Path, engine: str | None) -> Path:
    """The demo's site file, with ``engine = ...`` in its ``[site]`` table (or none)."""
    text = resources.files("controller").joinpath("sites/demo.toml").read_text("utf-8")
    if engine is not None:
        assert text.count("[site]\n") == 1
        text = text.replace("[site]\n", f'[site]\nengine = "{engine}"\n')
    path = tmp_path / f"site-{engine}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def first_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str | None
) -> tuple[Engine, ClearingResult]:
    """Run the demo's first tick on the site file with ``engine``; the cycle's engine and result."""
    site = read_site(demo_site_file(tmp_path, engine))
    monkeypatch.setattr(controller.demo, "demo_site", lambda: site)
    with demo_runtime(tmp_path / f"run-{engine}") as rt:
        report = rt.tick(0)
        assert report.cleared is not None
        return rt.cycle.options.engine, report.cleared.result


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_site_with_engine_pyomo_clears_its_intervals_with_pyomo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pyomo_builds: list[int]
) -> None:
    engine, fast = first_interval(tmp_path, monkeypatch, None)
    assert engine is Engine.HIGHSPY  # the default
    assert pyomo_builds == []
    engine, ref = first_interval(tmp_path, monkeypatch, "pyomo")
    assert engine is Engine.PYOMO
    assert len(pyomo_builds) == ref.iterations >= 1
    assert ref.status is ClearingStatus.CLEARED
    assert fast.status is ref.status
    accepted = {o.order_id: o.accepted_wh for o in fast.orders}
    assert {o.order_id: o.accepted_wh for o in ref.orders} == accepted
    assert sum(accepted.values()) > 0
    assert ref.welfare == fast.welfare
    assert (ref.grid_import_wh, ref.grid_export_wh) == (fast.grid_import_wh, fast.grid_export_wh)

"""House rules that hold for the whole code base (issue 8), checked on the source itself.

* Every error raised inside the four packages is the project's own (``MarketError``,
  ``GridModelError``, ``AdapterError``, ``ControllerError`` or a subclass), never a bare
  builtin such as ``ValueError`` or ``RuntimeError``. Re-raising a caught exception (a bare
  ``raise``, or ``raise err``) is fine, and so is ``SystemExit`` for the CLI's exit codes.
* Each package's exceptions descend from its one root.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("controller", "market", "grid_models", "adapters")
ALLOWED_BUILTINS = {"SystemExit", "KeyboardInterrupt", "StopIteration", "NotImplementedError"}
BUILTIN_EXCEPTIONS = {
    name
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
} - ALLOWED_BUILTINS


def _raised_name(node: ast.Raise) -> str | None:
    """The class name a ``raise`` statement raises, when it names one directly."""
    exc = node.exc
    if exc is None:
        return None
    if isinstance(exc, ast.Call):
        exc = exc.func
    if isinstance(exc, ast.Name):
        return exc.id
    if isinstance(exc, ast.Attribute):
        return exc.attr
    return None


def builtin_raises(source: str, filename: str) -> list[str]:
    """``file:line: Name`` for every raise of a builtin exception class in ``source``."""
    tree = ast.parse(source, filename)
    return [
        f"{filename}:{node.lineno}: raise {name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise)
        and (name := _raised_name(node)) is not None
        and name in BUILTIN_EXCEPTIONS
    ]


def test_the_scanner_finds_builtin_raises() -> None:
    """The scanner itself can fail: it flags builtins and passes the project's own errors."""
    source = (
        "def f(x):\n"
        "    if x:\n"
        "        raise ValueError('bad')\n"
        "    try:\n"
        "        g()\n"
        "    except OSError:\n"
        "        raise\n"
        "    raise InvalidOrder('own error')\n"
        "def h():\n"
        "    raise RuntimeError\n"
        "def k():\n"
        "    raise SystemExit(2)\n"
    )
    assert sorted(builtin_raises(source, "x.py")) == [
        "x.py:10: raise RuntimeError",
        "x.py:3: raise ValueError",
    ]


def test_no_bare_builtin_raises_in_the_packages() -> None:
    found: list[str] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            found += builtin_raises(path.read_text(encoding="utf-8"), rel)
    assert not found, "raise the package's own error instead:\n" + "\n".join(found)


ROOTS = {
    "market": ("market.errors", "MarketError"),
    "grid_models": ("grid_models.errors", "GridModelError"),
    "adapters": ("adapters.errors", "AdapterError"),
    "controller": ("controller.errors", "ControllerError"),
}


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_exception_class_descends_from_its_package_root(package: str) -> None:
    module_name, root_name = ROOTS[package]
    root = getattr(importlib.import_module(module_name), root_name)
    pkg = importlib.import_module(package)
    strays: list[str] = []
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        if info.name.endswith("__main__") or ".migrations" in info.name:
            continue  # the CLI entry point, and Alembic's scripts (run by Alembic, not imported)
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not issubclass(obj, root)
            ):
                strays.append(f"{info.name}.{name}")
    assert not strays, f"not under {root_name}: {strays}"

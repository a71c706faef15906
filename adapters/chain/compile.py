"""Compile the Vyper contracts into the committed artifacts (a build step, never run at runtime).

Usage, from the repository root::

    python -m adapters.chain.compile           # (re)write adapters/chain/artifacts/*.json
    python -m adapters.chain.compile --check   # exit 1 if the committed files differ

The compiler is the pinned ``vyper`` from PyPI, called through its Python API
(:func:`vyper.compile_code`) with a :class:`~vyper.compiler.input_bundle.FilesystemInputBundle`
whose search paths are the contracts folder and the folder that holds the installed
``snekmate`` package, so ``from snekmate.tokens import erc20`` resolves to snekmate 0.1.2.
The EVM version is fixed (``cancun``) rather than left to the compiler's default, so the
bytecode runs on any current EVM chain and does not change when the default moves.

**Why snekmate.** ``snekmate.tokens.erc20``, ``snekmate.auth.ownable``,
``snekmate.auth.access_control``, ``snekmate.utils.pausable`` and ``snekmate.utils.math``
(its 512-bit ``_mul_div`` scales rewards under the cap) 0.1.2 declare
``# pragma version ~=0.4.3`` and compile cleanly with vyper 0.4.3 (no warnings). An audited,
widely used ERC-20 is safer than a hand-written one.

* ``PaymentToken.vy`` exports the ERC-20, EIP-2612 ``permit`` and ownership functions and
  replaces snekmate's minter-role ``mint`` with an owner-only one.
* ``RewardToken.vy`` exports snekmate's minter-role ``mint`` and ``set_minter``; it revokes the
  deployer's own minter role in its constructor, so only the minters the owner appoints (the
  ``Settlement`` contract) can mint, and the owner can never appoint itself.
* ``Settlement.vy`` takes its admin/operator roles from ``access_control`` and its emergency
  stop from ``pausable``; the escrow, the packed settlement and the SHA-256 Merkle proofs are
  hand-written (snekmate's ``merkle_proof_verification`` hashes with keccak256 and without
  the leaf/node domain separation PeerGrid's trees use).
* ``Membership.vy`` (issue 16, not yet deployed by the stack) keeps a community's members, one
  vote each, checkpointed by block for proposals' snapshots; ownership from ``ownable``. It
  is new, unaudited code: snekmate 0.1.2 has a timelock but no governor or membership module.

**Determinism.** The artifact JSON is written with sorted keys, an indent of 2 and a
trailing newline. The bytecode ends with Vyper's CBOR metadata, which holds the compiler
version and an integrity hash of the *contents* of the source and every imported module
(not their paths), so the output is the same on every machine with the same pinned
``vyper`` and ``snekmate``. A test recompiles and compares byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import vyper
from vyper.compiler.input_bundle import FilesystemInputBundle
from vyper.compiler.settings import OptimizationLevel, Settings

from adapters.chain.artifact import CONTRACT_NAMES
from adapters.chain.errors import CompilerUnavailable

PACKAGE_DIR = Path(__file__).resolve().parent
CONTRACTS_DIR = PACKAGE_DIR / "contracts"
ARTIFACTS_DIR = PACKAGE_DIR / "artifacts"

EVM_VERSION = "cancun"
"""Target EVM ruleset: supported by py-evm, anvil and current public EVM chains."""

COMPILER = f"vyper {vyper.__version__}"

_OUTPUT_FORMATS = ("abi", "bytecode", "bytecode_runtime")


def _snekmate_search_path() -> Path:
    """The folder that holds the installed ``snekmate`` package (it has no ``__init__.py``)."""
    spec = importlib.util.find_spec("snekmate")
    if spec is None or not spec.submodule_search_locations:
        msg = "snekmate is not installed: pip install snekmate==0.1.2"
        raise CompilerUnavailable(msg)
    return Path(next(iter(spec.submodule_search_locations))).parent


def compile_contract(name: str) -> dict[str, Any]:
    """Compile ``contracts/<name>.vy`` and return its artifact as a plain dict.

    Parameters
    ----------
    name : str
        Contract file stem, e.g. ``"Settlement"``.

    Returns
    -------
    dict
        ``abi``, ``bytecode``, ``bytecode_runtime``, ``compiler``, ``evm_version``,
        ``source_sha256``.

    Raises
    ------
    CompilerUnavailable
        If ``snekmate`` is not installed (a :class:`ModuleNotFoundError`).
    """
    path = CONTRACTS_DIR / f"{name}.vy"
    source = path.read_text(encoding="utf-8")
    bundle = FilesystemInputBundle([_snekmate_search_path(), CONTRACTS_DIR])
    settings = Settings(optimize=OptimizationLevel.GAS, evm_version=EVM_VERSION)
    out = vyper.compile_code(
        source,
        contract_path=path.name,
        resolved_path=path,
        input_bundle=bundle,
        settings=settings,
        output_formats=list(_OUTPUT_FORMATS),
    )
    return {
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
        "compiler": COMPILER,
        "evm_version": EVM_VERSION,
        "source_sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
    }


def render_artifact(artifact: dict[str, Any]) -> str:
    """Serialise an artifact deterministically: sorted keys, indent 2, trailing newline.

    Parameters
    ----------
    artifact : dict
        What :func:`compile_contract` returns.

    Returns
    -------
    str
        The file's text.
    """
    return json.dumps(artifact, sort_keys=True, indent=2, ensure_ascii=True) + "\n"


def artifact_path(name: str) -> Path:
    """Path of the committed artifact of contract ``name``.

    Parameters
    ----------
    name : str
        Contract name, one of :data:`~adapters.chain.artifact.CONTRACT_NAMES`.
    """
    return ARTIFACTS_DIR / f"{name}.json"


def build_all() -> dict[str, str]:
    """Compile every contract; map contract name to rendered artifact text."""
    return {name: render_artifact(compile_contract(name)) for name in CONTRACT_NAMES}


def write_artifacts() -> list[Path]:
    """Compile every contract and (over)write its artifact file; return the paths."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in build_all().items():
        path = artifact_path(name)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written


def stale_artifacts() -> list[str]:
    """Names of contracts whose committed artifact differs from a fresh compile (or is missing)."""
    stale = []
    for name, text in build_all().items():
        path = artifact_path(name)
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring).

    Parameters
    ----------
    argv : list of str or None
        Arguments; ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        Exit code: 0 done or up to date, 1 a committed artifact is stale.
    """
    parser = argparse.ArgumentParser(
        prog="python -m adapters.chain.compile",
        description="Compile PeerGrid's Vyper contracts into adapters/chain/artifacts/.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed artifacts differ from a fresh compile",
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_artifacts()
        for name in stale:
            sys.stderr.write(f"stale artifact: {artifact_path(name)}\n")
        if stale:
            sys.stderr.write("run `python -m adapters.chain.compile` and commit the result\n")
            return 1
        sys.stdout.write(f"artifacts up to date ({COMPILER}, evm {EVM_VERSION})\n")
        return 0
    for path in write_artifacts():
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which site a database belongs to: the site's fixed identity and its fingerprint.

A database holds one site's intervals, settlements and audit trail. The store records the
identity of the site it was first *bound* to (table ``site_identity``, revision ``0002``) and
every command that opens the store for a site compares; another site is refused with
:class:`~controller.errors.SiteMismatch`, naming both, before anything is written.

The identity is what cannot change without the database's records becoming another site's,
and nothing about participants (they join and leave):

* ``name``: the site file's ``[site] name``, exactly;
* ``chain``: ``"trial"`` for a chain PeerGrid deploys afresh on every start (the ``embedded``
  backend, and the anvil node ``peergrid demo --chain anvil`` starts itself: their contract
  addresses mean nothing once the process ends), else ``"eip155:<chain id>"`` as the node
  reports it;
* ``settlement``: the Settlement contract's address (lower case; empty on a trial chain);
* ``grid``: the SHA-256 of the grid's *topology* (:func:`grid_digest`): every bus by name with
  its nominal voltage, and every branch (line, transformer, three-winding transformer,
  impedance, bus-bus switch) by the names of the buses it joins, in or out of service. The
  records refer to buses by name, so that is what must not change; electrical parameters (a
  corrected line length, a new transformer rating) and where a pandapower JSON file lives do
  not change the digest. ``grid_spec`` (``cigre-lv``, ``simbench:<code>``, a JSON path) is
  kept for messages only.

The *fingerprint* is the SHA-256 of the canonical JSON of those four fields. A command that
does not know a field leaves it ``None`` and it is not compared: ``peergrid audit verify``
does not connect to the chain, so it compares name, Settlement address and grid, not the
chain id. Only a complete identity is bound.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from controller.config import ChainBackend, SiteConfig
from controller.errors import ConfigError
from market.canonical import content_hash

if TYPE_CHECKING:
    from grid_models.grids import Grid

TRIAL_CHAIN = "trial"
"""The ``chain`` of a site on a chain deployed afresh at every start (embedded, demo anvil)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteIdentity:
    """A site's fixed identity (module docstring); ``None`` marks a field a command cannot know.

    Parameters
    ----------
    name : str
        The site's ``[site] name``.
    chain : str or None
        ``"trial"`` or ``"eip155:<chain id>"``; ``None``: not known (not connected).
    settlement : str or None
        The Settlement contract's address in lower case, ``""`` on a trial chain; ``None``:
        not known.
    grid_digest : str
        :func:`grid_digest` of the site's grid (64 hex digits).
    grid_spec : str
        The site file's ``grid`` (for messages; not compared).
    """

    name: str
    chain: str | None
    settlement: str | None
    grid_digest: str
    grid_spec: str

    @property
    def complete(self) -> bool:
        """Every compared field is known (the identity may be bound to a database)."""
        return self.chain is not None and self.settlement is not None

    @property
    def fingerprint(self) -> str | None:
        """SHA-256 of the canonical JSON of name, chain, settlement and grid digest.

        ``None`` for an incomplete identity.
        """
        if self.chain is None or self.settlement is None:
            return None
        return content_hash(
            {
                "name": self.name,
                "chain": self.chain,
                "settlement": self.settlement,
                "grid": self.grid_digest,
            }
        )

    def on_chain(self, chain_id: int) -> SiteIdentity:
        """The identity with the chain id the node reported (a trial chain keeps ``trial``).

        Parameters
        ----------
        chain_id : int
            The node's chain id (EIP-155).
        """
        if self.chain == TRIAL_CHAIN:
            return self
        return replace(self, chain=f"eip155:{chain_id}")

    def differences(self, other: SiteIdentity) -> list[str]:
        """The compared fields in which ``other`` differs (``None`` on either side: skipped).

        Parameters
        ----------
        other : SiteIdentity
            The identity to compare with.

        Returns
        -------
        list of str
            ``"name"``, ``"chain"``, ``"settlement"`` and ``"grid"``, those that differ.
        """
        pairs = {
            "name": (self.name, other.name),
            "chain": (self.chain, other.chain),
            "settlement": (self.settlement, other.settlement),
            "grid": (self.grid_digest, other.grid_digest),
        }
        return [k for k, (a, b) in pairs.items() if a is not None and b is not None and a != b]

    def describe(self) -> str:
        """One line for people: ``'name' (chain ..., Settlement ..., grid spec [digest])``."""
        if self.chain is None:
            chain = "chain not checked"
        elif self.chain == TRIAL_CHAIN:
            chain = "a trial chain"
        else:
            chain = f"chain {self.chain}"
        parts = [chain]
        if self.settlement:
            parts.append(f"Settlement {self.settlement}")
        parts.append(f"grid {self.grid_spec} [topology {self.grid_digest[:12]}]")
        return f"{self.name!r} ({', '.join(parts)})"


def _kv(value: Any) -> str:  # noqa: ANN401 - a pandas scalar
    return f"{float(value):.6g}"


def grid_digest(grid: Grid) -> str:
    """SHA-256 of the grid's topology: buses by name and voltage, branches by bus names.

    Parameters
    ----------
    grid : Grid
        A loaded grid (its pandapower ``net`` is only read).

    Returns
    -------
    str
        64 hex digits of :func:`market.canonical.content_hash` over ``buses`` (``[name,
        vn_kv]``, nominal voltage [kV] to six significant digits), ``lines`` and
        ``impedances`` (``[from, to]``), ``trafos`` (``[hv, lv]``), ``trafo3ws`` (``[hv, mv,
        lv]``) and ``bus_switches`` (``[bus, bus]``), each list sorted; every element counts,
        in service or not.
    """
    net = grid.net
    name = grid.bus_name

    def joined(table: str, *columns: str) -> list[list[str]]:
        frame = getattr(net, table, None)
        if frame is None or not len(frame):
            return []
        return sorted(
            [str(name(int(b))) for b in row]
            for row in zip(*(frame[c] for c in columns), strict=True)
        )

    switches = getattr(net, "switch", None)
    bus_switches = (
        sorted(
            sorted([str(name(int(b))), str(name(int(e)))])
            for b, e, et in zip(switches["bus"], switches["element"], switches["et"], strict=True)
            if et == "b"
        )
        if switches is not None and len(switches)
        else []
    )
    topology = {
        "buses": sorted(
            [str(name(int(i))), _kv(v)]
            for i, v in zip(net.bus.index, net.bus["vn_kv"], strict=True)
        ),
        "lines": joined("line", "from_bus", "to_bus"),
        "impedances": joined("impedance", "from_bus", "to_bus"),
        "trafos": joined("trafo", "hv_bus", "lv_bus"),
        "trafo3ws": joined("trafo3w", "hv_bus", "mv_bus", "lv_bus"),
        "bus_switches": bus_switches,
    }
    return content_hash(topology)


def load_identity_grid(site: SiteConfig) -> Grid:
    """The site's grid, loaded only to take its identity (SimBench conversions are cached).

    Parameters
    ----------
    site : SiteConfig
        ``site.grid`` names the grid.

    Raises
    ------
    ConfigError
        The grid cannot be loaded.
    """
    from grid_models.errors import GridModelError  # noqa: PLC0415 - pandapower when needed
    from grid_models.grids import load_grid_cached  # noqa: PLC0415

    try:
        return load_grid_cached(site.grid)
    except GridModelError as exc:
        msg = f"site.grid: {exc}"
        raise ConfigError(msg) from None


def site_identity(
    site: SiteConfig,
    grid: Grid | None = None,
    *,
    trial: bool | None = None,
    chain_id: int | None = None,
    settlement: str | None = None,
) -> SiteIdentity:
    """The identity of ``site`` as far as the caller knows it (module docstring).

    Parameters
    ----------
    site : SiteConfig
        The site: ``name``, ``grid``, ``chain.backend`` and ``chain.settlement_address``.
    grid : Grid or None
        The site's loaded grid; ``None`` loads it (:func:`load_identity_grid`).
    trial : bool or None
        The chain is deployed afresh at start; ``None``: when the backend is ``embedded``.
    chain_id : int or None
        The chain id the node reported; ``None``: not known (the chain is not compared).
    settlement : str or None
        The Settlement contract's address the command uses; ``None``: the site file's (not
        compared when the site file has none).

    Returns
    -------
    SiteIdentity
        Complete when the chain is a trial chain, or its chain id and Settlement address are
        known.

    Raises
    ------
    ConfigError
        The grid cannot be loaded.
    """
    loaded = grid if grid is not None else load_identity_grid(site)
    is_trial = site.chain.backend is ChainBackend.EMBEDDED if trial is None else trial
    identity = SiteIdentity(
        name=site.name,
        chain=TRIAL_CHAIN if is_trial else None,
        settlement=""
        if is_trial
        else ((settlement or site.chain.settlement_address).lower() or None),
        grid_digest=grid_digest(loaded),
        grid_spec=site.grid,
    )
    return identity if chain_id is None else identity.on_chain(chain_id)


__all__ = [
    "TRIAL_CHAIN",
    "SiteIdentity",
    "grid_digest",
    "load_identity_grid",
    "site_identity",
]

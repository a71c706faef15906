"""Site configuration: one TOML file describes a microgrid (parsed with :mod:`tomllib`).

Example (``controller/sites/demo.toml`` is the complete one the demo uses)::

    [site]
    name = "Riverside community"
    grid = "cigre-lv"               # or "simbench:<code>" or a pandapower JSON path
    interval_s = 900                # market interval [s]
    database = "sqlite:///peergrid.sqlite"
    vm_min_pu = 0.95
    vm_max_pu = 1.05
    base_load_scale = 0.35          # the grid's own (non-participant) loads x this
    max_reading_age_s = 120         # older readings are STALE

    [tariffs]                       # token base units per kWh (6 decimals: 300_000 = 0.30)
    import_price = 300_000
    export_price = 80_000

    [chain]
    backend = "embedded"            # embedded | anvil | rpc
    rpc_url = ""                    # for rpc
    confirmations = 0               # finality depth [blocks]
    state_path = ""                 # anvil's state file (kept across restarts)
    token_address = ""              # anvil / rpc: the deployed contracts
    settlement_address = ""
    operator_key_env = "PEERGRID_OPERATOR_KEY"   # env var holding the operator's key (0x...)

    [[participants]]
    id = "alice"
    bus = "Bus R11"                 # pandapower bus name
    account = "derive"              # 0x-address, or "derive" (demo/test key from the id)
    deposit = 50_000_000            # escrow deposited by the demo [token base units]

      [[participants.orders]]       # standing orders, turned into each interval's orders
      kind = "sell_surplus"         # sell_surplus | buy_demand | buy | sell | battery
      price = 100_000               # floor (sell) or ceiling (buy) [token base units / kWh]

    [[devices]]
    id = "alice-pv"
    participant = "alice"
    kind = "pv"                     # meter | pv | battery
    host = "127.0.0.1"
    port = 15020
    unit = 1
    map = "sunspec_inverter"        # a built-in register map name or a JSON file path

Every error names the item (``participants[2] (bob): ...``) and nothing is half-loaded.
"""

from __future__ import annotations

import enum
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from controller.errors import ConfigError
from market.domain import BusId, DeviceId, ParticipantId


class OrderKind(enum.StrEnum):
    """What a standing order trades each interval (its TOML ``kind``, see StandingOrder)."""

    SELL_SURPLUS = "sell_surplus"
    BUY_DEMAND = "buy_demand"
    BUY = "buy"
    SELL = "sell"
    BATTERY = "battery"


class DeviceKind(enum.StrEnum):
    """What a Modbus device is (its TOML ``kind``): a meter, a PV inverter or a battery."""

    METER = "meter"
    PV = "pv"
    BATTERY = "battery"


class ChainBackend(enum.StrEnum):
    """Where settlement happens (the ``[chain]`` table's ``backend``).

    ``embedded``: an in-process chain, deployed and funded at start (trials only);
    ``anvil``: a local anvil node started by PeerGrid with a state file; ``rpc``: any node.
    """

    EMBEDDED = "embedded"
    ANVIL = "anvil"
    RPC = "rpc"


DEFAULT_MAPS = {
    DeviceKind.METER: "sdm630",
    DeviceKind.PV: "sunspec_inverter",
    DeviceKind.BATTERY: "battery",
}
"""The built-in register map of each device kind, used when a device names none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StandingOrder:
    """A participant's rule that becomes orders every interval.

    ``kind``:

    * ``sell_surplus``: offer the forecast surplus (production above consumption) at no less
      than ``price``;
    * ``buy_demand``: bid for the forecast net consumption (inflexible: it is consumed
      whatever clears) at no more than ``price``, raised to the import tariff if lower;
    * ``buy`` / ``sell``: a fixed ``energy_wh`` [Wh] each interval at the limit ``price``;
    * ``battery``: bid to charge at no more than ``price`` and offer to discharge at no less
      than ``discharge_price``, each up to the battery's power over the interval within
      ``[min_soc_percent, max_soc_percent]``.

    Prices in token base units per kWh.
    """

    kind: OrderKind
    price: int
    energy_wh: int = 0
    discharge_price: int = 0
    min_soc_percent: float = 10.0
    max_soc_percent: float = 95.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantConfig:
    """A prosumer: where it is connected, its account, deposit and standing orders."""

    id: ParticipantId
    bus: BusId
    account: str
    deposit: int
    orders: tuple[StandingOrder, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """A Modbus device of a participant.

    ``rated_w`` and ``capacity_wh`` describe the device for the simulators, the bidding and
    the setpoints (PV rating [W]; battery power [W] and capacity [Wh]); ``soc0_percent`` is
    a simulated battery's initial state of charge [%] and ``profile_scale_w`` a simulated
    load's peak [W] (the demo's simulators). ``profile`` is a free-text label of the
    device's profile (``"pv"``, ``"household"``); nothing reads it.
    """

    id: DeviceId
    participant: ParticipantId
    kind: DeviceKind
    host: str
    port: int
    unit: int
    map: str
    rated_w: int = 0
    capacity_wh: int = 0
    soc0_percent: float = 50.0
    profile: str = ""
    profile_scale_w: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainConfig:
    """Which chain settles, and how."""

    backend: ChainBackend = ChainBackend.EMBEDDED
    rpc_url: str = ""
    confirmations: int = 0
    token_address: str = ""
    settlement_address: str = ""
    state_path: str = ""
    operator_key_env: str = "PEERGRID_OPERATOR_KEY"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteConfig:
    """A whole site, as parsed from its TOML file."""

    name: str
    grid: str
    interval_s: int
    database: str
    vm_min_pu: float
    vm_max_pu: float
    base_load_scale: float
    base_sgen_scale: float
    max_reading_age_s: int
    import_price: int
    export_price: int
    solver_time_limit_s: float
    chain: ChainConfig
    participants: tuple[ParticipantConfig, ...]
    devices: tuple[DeviceConfig, ...]
    source: str = ""

    def participant(self, pid: str) -> ParticipantConfig:
        """The participant called ``pid``.

        Parameters
        ----------
        pid : str
            The participant's id.

        Raises
        ------
        ConfigError
            No participant has that id.
        """
        for p in self.participants:
            if p.id == pid:
                return p
        msg = f"unknown participant {pid!r}"
        raise ConfigError(msg)

    def devices_of(self, pid: str) -> tuple[DeviceConfig, ...]:
        """The devices of participant ``pid``, in site-file order (empty if it has none).

        Parameters
        ----------
        pid : str
            The participant's id.
        """
        return tuple(d for d in self.devices if d.participant == pid)


_K = TypeVar("_K", bound=enum.StrEnum)


def _int(
    where: str,
    table: Mapping[str, Any],
    key: str,
    default: int | None = None,
    *,
    minimum: int | None = 0,
) -> int:
    if key not in table:
        if default is None:
            msg = f"{where}: missing {key}"
            raise ConfigError(msg)
        return default
    raw = table[key]
    if isinstance(raw, bool) or not isinstance(raw, int):
        msg = f"{where}: {key} must be an integer, got {raw!r}"
        raise ConfigError(msg)
    if minimum is not None and raw < minimum:
        msg = f"{where}: {key} must be >= {minimum}, got {raw}"
        raise ConfigError(msg)
    return raw


def _float(
    where: str, table: Mapping[str, Any], key: str, default: float, *, minimum: float = 0.0
) -> float:
    raw = table.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        msg = f"{where}: {key} must be a number, got {raw!r}"
        raise ConfigError(msg)
    if raw < minimum:
        msg = f"{where}: {key} must be >= {minimum}, got {raw}"
        raise ConfigError(msg)
    return float(raw)


def _str(where: str, table: Mapping[str, Any], key: str, default: str | None = None) -> str:
    raw = table.get(key, default)
    if raw is None:
        msg = f"{where}: missing {key}"
        raise ConfigError(msg)
    if not isinstance(raw, str):
        msg = f"{where}: {key} must be a string, got {raw!r}"
        raise ConfigError(msg)
    return raw


def _kind(
    where: str, raw: Mapping[str, Any], key: str, kinds: type[_K], default: str | None = None
) -> _K:
    """``raw[key]`` as a member of ``kinds``; a string that is none of them is a ConfigError."""
    text = _str(where, raw, key, default)
    try:
        return kinds(text)
    except ValueError:
        msg = f"{where}: {key} must be one of {', '.join(kinds)}, got {text!r}"
        raise ConfigError(msg) from None


def _standing_order(where: str, raw: Mapping[str, Any]) -> StandingOrder:
    kind = _kind(where, raw, "kind", OrderKind)
    energy = _int(where, raw, "energy_wh", 0)
    if kind in {OrderKind.BUY, OrderKind.SELL} and energy <= 0:
        msg = f"{where}: a fixed {kind} order needs energy_wh > 0"
        raise ConfigError(msg)
    order = StandingOrder(
        kind=kind,
        price=_int(where, raw, "price"),
        energy_wh=energy,
        discharge_price=_int(where, raw, "discharge_price", 0),
        min_soc_percent=_float(where, raw, "min_soc_percent", 10.0),
        max_soc_percent=_float(where, raw, "max_soc_percent", 95.0),
    )
    if kind is OrderKind.BATTERY and order.discharge_price < order.price:
        msg = f"{where}: discharge_price must be >= price (the charge ceiling)"
        raise ConfigError(msg)
    return order


def parse_site(data: Mapping[str, Any], source: str = "<memory>") -> SiteConfig:
    """Validate a parsed TOML document into a :class:`SiteConfig`.

    Missing optional keys take the defaults shown in the module docstring; unknown keys are
    ignored. Bus names are checked against the grid later, by
    :func:`controller.wiring.load_site_grid` (which loads the grid).

    Parameters
    ----------
    data : Mapping
        The document as :func:`tomllib.loads` returns it.
    source : str
        Where it came from (a file name), quoted in errors and kept as ``SiteConfig.source``.

    Returns
    -------
    SiteConfig
        The site, with kinds as :class:`OrderKind`, :class:`DeviceKind` and
        :class:`ChainBackend`.

    Raises
    ------
    ConfigError
        Naming the first bad item.
    """
    site = data.get("site")
    if not isinstance(site, Mapping):
        msg = f"{source}: missing [site] table"
        raise ConfigError(msg)
    tariffs = data.get("tariffs", {})
    chain_raw = data.get("chain", {})
    interval_s = _int("site", site, "interval_s", 900, minimum=60)
    if 86400 % interval_s:
        msg = f"site: interval_s must divide a day evenly, got {interval_s}"
        raise ConfigError(msg)
    backend = _kind("chain", chain_raw, "backend", ChainBackend, "embedded")
    chain = ChainConfig(
        backend=backend,
        rpc_url=_str("chain", chain_raw, "rpc_url", ""),
        confirmations=_int("chain", chain_raw, "confirmations", 0),
        token_address=_str("chain", chain_raw, "token_address", ""),
        settlement_address=_str("chain", chain_raw, "settlement_address", ""),
        state_path=_str("chain", chain_raw, "state_path", ""),
        operator_key_env=_str("chain", chain_raw, "operator_key_env", "PEERGRID_OPERATOR_KEY"),
    )
    if backend is ChainBackend.RPC and not chain.rpc_url:
        msg = "chain: backend 'rpc' needs rpc_url"
        raise ConfigError(msg)

    participants: list[ParticipantConfig] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("participants", [])):
        where = f"participants[{i}]"
        pid = _str(where, raw, "id").strip()
        where = f"participants[{i}] ({pid})"
        if not pid or pid in {"GRID", "COMMUNITY"}:
            msg = f"{where}: id must be non-empty and not a reserved name"
            raise ConfigError(msg)
        if pid in seen:
            msg = f"{where}: duplicate participant id {pid!r}"
            raise ConfigError(msg)
        seen.add(pid)
        orders = tuple(
            _standing_order(f"{where}.orders[{j}]", o) for j, o in enumerate(raw.get("orders", []))
        )
        participants.append(
            ParticipantConfig(
                id=ParticipantId(pid),
                bus=BusId(_str(where, raw, "bus")),
                account=_str(where, raw, "account", "derive"),
                deposit=_int(where, raw, "deposit", 0),
                orders=orders,
            )
        )
    if not participants:
        msg = f"{source}: a site needs at least one [[participants]] entry"
        raise ConfigError(msg)
    devices: list[DeviceConfig] = []
    seen_dev: set[str] = set()
    for i, raw in enumerate(data.get("devices", [])):
        where = f"devices[{i}]"
        did = _str(where, raw, "id").strip()
        where = f"devices[{i}] ({did})"
        if did in seen_dev:
            msg = f"{where}: duplicate device id"
            raise ConfigError(msg)
        seen_dev.add(did)
        owner = _str(where, raw, "participant")
        if owner not in seen:
            msg = f"{where}: unknown participant {owner!r}"
            raise ConfigError(msg)
        kind = _kind(where, raw, "kind", DeviceKind)
        devices.append(
            DeviceConfig(
                id=DeviceId(did),
                participant=ParticipantId(owner),
                kind=kind,
                host=_str(where, raw, "host", "127.0.0.1"),
                port=_int(where, raw, "port", 0),
                unit=_int(where, raw, "unit", 1, minimum=0),
                map=_str(where, raw, "map", DEFAULT_MAPS[kind]),
                rated_w=_int(where, raw, "rated_w", 0),
                capacity_wh=_int(where, raw, "capacity_wh", 0),
                soc0_percent=_float(where, raw, "soc0_percent", 50.0),
                profile=_str(where, raw, "profile", ""),
                profile_scale_w=_int(where, raw, "profile_scale_w", 0),
            )
        )
    vm_min = _float("site", site, "vm_min_pu", 0.95)
    vm_max = _float("site", site, "vm_max_pu", 1.05)
    if not vm_min < vm_max:
        msg = "site: vm_min_pu must be below vm_max_pu"
        raise ConfigError(msg)
    import_price = _int("tariffs", tariffs, "import_price", 300_000)
    export_price = _int("tariffs", tariffs, "export_price", 80_000)
    if export_price > import_price:
        msg = "tariffs: export_price must not exceed import_price"
        raise ConfigError(msg)
    return SiteConfig(
        name=_str("site", site, "name", "PeerGrid site"),
        grid=_str("site", site, "grid", "cigre-lv"),
        interval_s=interval_s,
        database=_str("site", site, "database", "sqlite:///peergrid.sqlite"),
        vm_min_pu=vm_min,
        vm_max_pu=vm_max,
        base_load_scale=_float("site", site, "base_load_scale", 1.0),
        base_sgen_scale=_float("site", site, "base_sgen_scale", 1.0),
        max_reading_age_s=_int("site", site, "max_reading_age_s", 120, minimum=1),
        import_price=import_price,
        export_price=export_price,
        solver_time_limit_s=_float("site", site, "solver_time_limit_s", 10.0),
        chain=chain,
        participants=tuple(participants),
        devices=tuple(devices),
        source=source,
    )


def read_site(path: str | Path) -> SiteConfig:
    """Read a site TOML file and validate it with :func:`parse_site`.

    Parameters
    ----------
    path : str or Path
        The site file (UTF-8 TOML).

    Raises
    ------
    ConfigError
        If the file is missing, not TOML, or invalid (the message names the item).
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"site file not found: {p}"
        raise ConfigError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"{p}: not valid TOML: {exc}"
        raise ConfigError(msg) from None
    return parse_site(data, str(p))

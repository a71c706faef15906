"""Site configuration: one TOML file describes a microgrid.

The file is read with :mod:`tomllib` and validated by pydantic models (:class:`SiteFile`:
frozen, unknown keys forbidden), then by the rules that span keys and items (cross-references,
kinds, backends); :func:`read_site` returns the frozen :class:`SiteConfig` the controller runs
on. Every problem is reported at once, one line each, naming the item and the key::

    site.toml: 3 problems
      participants[2] (bob).orders[0].prise: unknown key (did you mean 'price'?)
      devices[0] (bob-meter).unit: must be <= 247, got 300
      devices[1] (bob-pv).participant: unknown participant 'bbo' (did you mean 'bob'?)

``peergrid site check`` and ``peergrid run`` validate with the same functions
(:func:`read_site` with ``runnable=True``, then the grid's buses in
:func:`controller.wiring.load_site_grid`). A JSON Schema of the file, generated from the
models (:func:`site_schema`, ``peergrid site schema``), is committed as
``controller/sites/site.schema.json``; editors that read ``#:schema`` comments (taplo, Even
Better TOML) check a site file against it. ``controller/sites/demo.toml`` is a complete site.

Relative paths (the SQLite database, a grid JSON, register map files, anvil's state file,
keystores) are relative to the site file's folder, never to the current directory, and
:class:`SiteConfig` holds them absolute.

Units: prices in token base units per kWh (6 decimals: ``300_000`` = 0.30 per kWh), energies
[Wh], powers [W], times [s]. Limits: a price is at most :data:`MAX_PRICE` (10^9) and an
energy at most :data:`MAX_ENERGY_WH` (10^9 Wh), so every amount fits the contracts' 64-bit
lanes.

``[site]``

==================== ======= ================================== ===============================
key                  type    default                            range / meaning
==================== ======= ================================== ===============================
name                 string  ``"PeerGrid site"``                not empty
grid                 string  ``"cigre-lv"``                     ``cigre-lv``,
                                                                ``simbench:<code>`` or a
                                                                pandapower JSON file (path)
interval_s           int     900                                market interval [s]: >= 60 and
                                                                a divisor of 86400 (a day)
database             string  ``"sqlite:///peergrid.sqlite"``    SQLAlchemy URL; a relative
                                                                SQLite path is the site
                                                                folder's
vm_min_pu            float   0.95                               voltage band [p.u.], 0.5-1.5,
vm_max_pu            float   1.05                               ``vm_min_pu < vm_max_pu``
base_load_scale      float   1.0                                0-100: the grid's own
                                                                (non-participant) loads x this
                                                                x the daily load shape
base_sgen_scale      float   1.0                                0-100: the grid's own static
                                                                generators x this (grids
                                                                without profiles)
max_reading_age_s    int     120                                1-86400 [s]: older readings
                                                                are STALE; a signed reading
                                                                whose time lies further from
                                                                its boundary is UNVERIFIED
reading_signatures   string  ``"optional"``                     ``optional`` | ``required``:
                                                                whether every device must sign
                                                                its readings (``signed_block``);
                                                                unsigned energy earns no reward
unverified_penalty_bps int   2000                               0-10000: penalty for readings
                                                                that fail verification, of the
                                                                cleared purchase at the import
                                                                tariff (settlement rule 4b)
solver_time_limit_s  float   10.0                               (0, 3600] [s]: wall-clock
                                                                budget of one clearing (AC
                                                                loop and HiGHS); a stop is
                                                                recorded as time_limit
mechanism            string  ``"nodal"``                        ``nodal`` | ``uniform`` |
                                                                ``pay-as-bid`` (pricing)
engine               string  ``"highspy"``                      ``highspy`` | ``pyomo`` (how
                                                                the LP reaches HiGHS)
gate_closure_s       int     0                                  0 <= g < interval_s [s]:
                                                                orders of an interval are
                                                                final this long before it
                                                                starts (once members govern
                                                                it, the governed value wins)
operators            array   ``[]``                             addresses that sign in (EIP-4361)
                                                                as operator: EIP-55 checksummed
                                                                0x addresses, or
                                                                ``derive:<label>`` (a demo key:
                                                                embedded only)
auditors             array   ``[]``                             likewise, for the auditor role
                                                                (read-only); no address in both
==================== ======= ================================== ===============================

``[site.alerts]`` (:mod:`controller.alerts`)

==================== ======= ================================== ===============================
webhook_url          string  ``""``                             ``http(s)://host[:port]/path``
                                                                the alerts are POSTed to when
                                                                they change (empty: none); it
                                                                may carry a token: only its
                                                                scheme and host are logged
gas_low_wei          int     ``5 * 10**16`` (0.05 ether)        0-10^24 [wei]: the operator's
                                                                gas balance below this alerts
clock_skew_s         float   2.0                                (0, 3600] [s]: the controller's
                                                                clock this far off the chain's
                                                                latest block (rpc chains)
block_time_s         int     12                                 0-3600 [s]: the rpc chain's
                                                                block time (0: blocks on
                                                                demand; only a block from the
                                                                future is checked)
escrow_days          float   1.0                                (0, 365]: escrow below this
                                                                many days of a participant's
                                                                typical spend alerts
==================== ======= ================================== ===============================

``[tariffs]`` (token base units per kWh, 0 to 10^9)

==================== ======= ================================== ===============================
import_price         int     300_000                            the upstream supplier sells
export_price         int     80_000                             it buys; <= import_price
==================== ======= ================================== ===============================

``[chain]``

===================== ======= ================================= ===============================
backend               string  ``"embedded"``                    ``embedded`` (in-process trial
                                                                chain) | ``anvil`` (a local
                                                                node PeerGrid starts with
                                                                ``state_path``) | ``rpc``
rpc_url               string  ``""``                            ``http(s)://`` or ``ws(s)://``;
                                                                needed by ``rpc``
confirmations         int     0                                 0-1000 [blocks]: finality depth
token_address         string  ``""``                            0x address (anvil / rpc: the
settlement_address    string  ``""``                            deployed contracts; ``run``
                                                                needs them)
state_path            string  ``""``                            anvil's state file (path)
operator_key_env      string  ``"PEERGRID_OPERATOR_KEY"``       env var holding the operator's
                                                                hex key
operator_keystore     string  ``""``                            the operator's Web3 Secret
                                                                Storage JSON (path)
keystore_password_env string  ``"PEERGRID_KEYSTORE_PASSWORD"``  env var holding a keystore's
                                                                password (else a prompt on a
                                                                terminal)
admin_keystore        string  ``""``                            the admin's keystore (path), for
                                                                ``peergrid chain`` admin
                                                                commands
admin_key_env         string  ``""``                            env var holding the admin's hex
                                                                key
grid_account          string  ``""``                            0x address of GRID (the
                                                                upstream supplier)
community_account     string  ``""``                            0x address of COMMUNITY
governance_file       string  ``""``                            the community's contracts
                                                                (path: ``peergrid gov deploy
                                                                --out``); the cycle applies
                                                                their governed terms
device_keys_address   string  ``""``                            0x address of the device key
                                                                registry (``DeviceKeys``) the
                                                                signed readings are verified
                                                                against
===================== ======= ================================= ===============================

Key sources: the controller signs only as the operator, with the key of
``operator_keystore`` (password from ``keystore_password_env`` or a prompt) or of the
variable ``operator_key_env``; the admin likewise (:mod:`controller.keys`). Derived demo keys
(``account = "derive"``, and GRID / COMMUNITY without an address: anyone who knows the name
knows the key) are allowed on the ``embedded`` backend only (and in ``peergrid demo``, which
may start its own anvil); an ``anvil`` or ``rpc`` site that uses them is refused, naming the
item. Environment variable names match ``[A-Za-z_][A-Za-z0-9_]*``.

``[[participants]]`` (at least one)

==================== ======= ================================== ===============================
id                   string  required                           ``[A-Za-z0-9][A-Za-z0-9_.-]*``,
                                                                at most 64, unique, not
                                                                ``GRID`` / ``COMMUNITY``
bus                  string  required                           a bus name of the grid
account              string  ``"derive"``                       0x address, or ``derive`` (a
                                                                demo key from the id:
                                                                embedded only)
deposit              int     0                                  0-10^18 [token base units]:
                                                                escrow a trial chain deposits
orders               array   ``[]``                             standing orders (below)
==================== ======= ================================== ===============================

``[[participants.orders]]``: standing orders, turned into each interval's orders

==================== ======= ================================== ===============================
kind                 string  required                           ``sell_surplus`` |
                                                                ``buy_demand`` | ``buy`` |
                                                                ``sell`` | ``battery``
price                int     required                           0-10^9 [token base units/kWh]:
                                                                floor (sell) or ceiling (buy);
                                                                a battery's charge ceiling
energy_wh            int     0                                  buy / sell only, and required
                                                                there: 1-10^9 [Wh] per interval
discharge_price      int     0                                  battery only, and required
                                                                there: 0-10^9, >= price
min_soc_percent      float   10.0                               battery only: 0-100 [%],
max_soc_percent      float   95.0                               ``min < max``
==================== ======= ================================== ===============================

``[[devices]]``: Modbus devices of the participants

==================== ======= ================================== ===============================
id                   string  required                           as a participant id; unique
participant          string  required                           a participant's id
kind                 string  required                           ``meter`` | ``pv`` |
                                                                ``battery``
role                 string  by kind: meter ->                  ``connection_point`` |
                             ``connection_point``, pv ->        ``generation`` | ``load``
                             ``generation``, battery ->         (meters); pv: ``generation``;
                             ``storage``                        battery: ``storage``
map                  string  by kind: ``sdm630``,               a built-in register map,
                             ``sunspec_inverter``, ``battery``  ``sunspec`` (discover the
                                                                models on first contact) or a
                                                                JSON file (path; it must load)
unit                 int     1                                  Modbus unit id, 1-247
transport            string  ``"tcp"``                          ``tcp`` | ``rtu`` (serial)
host                 string  ``"127.0.0.1"``                    tcp only
port                 int     502                                tcp only: 1-65535; 0 means a
                                                                simulated device whose port
                                                                ``peergrid demo`` fills in
                                                                (``run`` refuses it)
serial_port          string  ``""``                             rtu only, and required there
                                                                (``/dev/ttyUSB0``); devices may
                                                                share a line (distinct units,
                                                                same line settings)
baudrate             int     9600                               rtu only: 300-921600 [bit/s]
parity               string  ``"N"``                            rtu only: ``N`` | ``E`` | ``O``
bytesize             int     8                                  rtu only: 5-8 [bits]
stopbits             int     1                                  rtu only: 1-2 [bits]
rated_w              int     0                                  pv and battery: 0-10^9 [W]; a
                                                                battery needs >= 1
capacity_wh          int     0                                  battery only, required:
                                                                1-10^9 [Wh]
soc0_percent         float   50.0                               battery only: 0-100 [%]
                                                                (a simulated battery's start)
profile              string  ``""``                             a label of the device's profile
                                                                (``pv``, ``household``); free
                                                                text, nothing reads it
profile_scale_w      int     0                                  meter only: 0-10^9 [W], a
                                                                simulated load's peak
signed_block         int     none                               0-65448: input register of the
                                                                device's signed-reading block
                                                                (88 registers; none: the device
                                                                does not sign)
==================== ======= ================================== ===============================

Cross-references: a device's participant exists; ids are unique; a participant with a
``battery`` order has a battery device; two devices never share a Modbus address (host, port
and unit; or serial line and unit); devices on one serial line agree on its settings; with
``runnable=True`` (``run``, ``site check``) every TCP device has a real port, and an
``anvil`` / ``rpc`` site has its contract addresses and the keystores it names. Buses are
checked against the grid by :func:`controller.wiring.load_site_grid` (closest names
suggested).

Errors::

    ConfigError (controller.errors)
     └── InvalidSite     a site file with problems; ``problems`` holds one line each
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from adapters.errors import AdapterError
from adapters.modbus.discovered import SUNSPEC_DISCOVERY
from adapters.modbus.mapfiles import load_register_map
from controller.errors import ConfigError
from market.clearing.options import Engine
from market.domain import COMMUNITY, GRID, BusId, DeviceId, Mechanism, MeterRole, ParticipantId
from market.units import MAX_ORDER_WH, MAX_PRICE_PER_KWH

MAX_PRICE: Final = MAX_PRICE_PER_KWH
"""Most token base units per kWh a price may be (a tariff, an order's limit): the kernel's."""
MAX_ENERGY_WH: Final = MAX_ORDER_WH
"""Most Wh one order (or a battery's capacity) may be: the kernel's order limit."""
MAX_POWER_W: Final = 10**9
"""Most W a device's rating may be."""
MAX_DEPOSIT: Final = 10**18
"""Most token base units a participant's trial deposit may be."""


class InvalidSite(ConfigError):
    """A site file with problems; ``problems`` holds one line per problem, naming the item.

    Parameters
    ----------
    source : str
        The file (or ``<memory>``) the problems are in.
    problems : sequence of str
        One line each: ``participants[2] (bob).orders[0].price: must be <= ...``.
    """

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = f"{source}: {self.problems[0]}"
        else:
            lines = "\n  ".join(self.problems)
            text = f"{source}: {len(self.problems)} problems:\n  {lines}"
        super().__init__(text)


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


class Transport(enum.StrEnum):
    """How a device is reached (its TOML ``transport``): Modbus TCP or Modbus RTU (serial)."""

    TCP = "tcp"
    RTU = "rtu"


class Parity(enum.StrEnum):
    """A serial line's parity (its TOML ``parity``): none, even or odd."""

    NONE = "N"
    EVEN = "E"
    ODD = "O"


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

DEFAULT_ROLES = {
    DeviceKind.METER: MeterRole.CONNECTION_POINT,
    DeviceKind.PV: MeterRole.GENERATION,
    DeviceKind.BATTERY: MeterRole.STORAGE,
}
"""The role of each device kind, used when a device names none."""

ALLOWED_ROLES = {
    DeviceKind.METER: frozenset({MeterRole.CONNECTION_POINT, MeterRole.GENERATION, MeterRole.LOAD}),
    DeviceKind.PV: frozenset({MeterRole.GENERATION}),
    DeviceKind.BATTERY: frozenset({MeterRole.STORAGE}),
}
"""The roles a device of each kind may declare."""


# ------------------------------------------------------------------ the parsed site (API)


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
    device's profile (``"pv"``, ``"household"``); nothing reads it. ``transport`` says how
    it is reached: ``tcp`` at ``host``:``port`` (0 = simulated, the demo fills it in) or
    ``rtu`` on ``serial_port`` with ``baudrate`` [bit/s], ``parity``, ``bytesize`` and
    ``stopbits``; ``unit`` is its Modbus unit id either way. ``map`` is a built-in register
    map name, ``"sunspec"`` (discover) or an absolute JSON path; ``role`` what it measures.
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
    transport: Transport = Transport.TCP
    serial_port: str = ""
    baudrate: int = 9600
    parity: Parity = Parity.NONE
    bytesize: int = 8
    stopbits: int = 1
    role: MeterRole = MeterRole.CONNECTION_POINT
    signed_block: int | None = None

    def __post_init__(self) -> None:
        # The field's default fits a meter; a PV inverter or a battery built without a role
        # (in code, not from a site file) gets its kind's default rather than a role it may
        # not have, so nothing but a meter is ever taken for the connection point.
        if self.role not in ALLOWED_ROLES[self.kind]:
            object.__setattr__(self, "role", DEFAULT_ROLES[self.kind])


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainConfig:
    """Which chain settles, and how (the ``[chain]`` table; paths absolute or empty)."""

    backend: ChainBackend = ChainBackend.EMBEDDED
    rpc_url: str = ""
    confirmations: int = 0
    token_address: str = ""
    settlement_address: str = ""
    state_path: str = ""
    operator_key_env: str = "PEERGRID_OPERATOR_KEY"
    operator_keystore: str = ""
    keystore_password_env: str = "PEERGRID_KEYSTORE_PASSWORD"  # noqa: S105 (a variable name)
    admin_keystore: str = ""
    admin_key_env: str = ""
    grid_account: str = ""
    community_account: str = ""
    governance_file: str = ""
    device_keys_address: str = ""


DEFAULT_GAS_LOW_WEI: Final = 5 * 10**16
"""The default ``gas_low_wei`` [wei]: 0.05 ether, about 100 settlements of ~250 000 gas at
2 gwei (an L2 or a quiet L1); raise it for a busier chain."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertsConfig:
    """When the site's alerts fire, and where they go (the ``[site.alerts]`` table).

    ``webhook_url`` may carry a secret (a token in its path or query): log
    :func:`controller.alerts.safe_url` of it, never the URL itself.
    """

    webhook_url: str = ""
    gas_low_wei: int = DEFAULT_GAS_LOW_WEI
    clock_skew_s: float = 2.0
    block_time_s: int = 12
    escrow_days: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteConfig:
    """A whole site, as parsed from its TOML file (see the module docstring for every key).

    The ``[site]`` and ``[tariffs]`` keys are attributes of the site itself
    (``site.interval_s``, ``site.import_price``); ``chain`` is the ``[chain]`` table;
    ``source`` the file it was read from.
    """

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
    mechanism: Mechanism = Mechanism.NODAL
    engine: Engine = Engine.HIGHSPY
    gate_closure_s: int = 0
    operators: tuple[str, ...] = ()
    auditors: tuple[str, ...] = ()
    alerts: AlertsConfig = AlertsConfig()
    reading_signatures: str = "optional"
    unverified_penalty_bps: int = 2000
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


# ------------------------------------------------------------------ the file (pydantic)

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
_ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_URL_PATTERN = r"^(https?|wss?)://\S+$"
DERIVE_PREFIX: Final = "derive:"
"""An ``operators`` / ``auditors`` entry ``derive:<label>`` is the demo key of ``<label>``."""
_ROLE_PATTERN = rf"^({DERIVE_PREFIX}{_ID_PATTERN[1:-1]}|{_ADDRESS_PATTERN[1:-1]})$"
_PATTERN_HINTS = {
    _ID_PATTERN: "letters, digits, '_', '.', '-' (first a letter or digit), at most 64",
    _ADDRESS_PATTERN: "a 0x address: 0x and 40 hex digits",
    rf"^(derive|{_ADDRESS_PATTERN[1:-1]})$": 'a 0x address (0x and 40 hex digits) or "derive"',
    rf"^$|{_ADDRESS_PATTERN}": "a 0x address (0x and 40 hex digits), or empty",
    _ENV_PATTERN: "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
    rf"^$|{_ENV_PATTERN}": "an environment variable name ([A-Za-z_][A-Za-z0-9_]*), or empty",
    rf"^$|{_URL_PATTERN}": "an http(s):// or ws(s):// URL, or empty",
    _ROLE_PATTERN: 'an EIP-55 0x address (0x and 40 hex digits) or "derive:<label>"',
}

Int = Annotated[int, Strict()]


def _checksummed(value: str) -> str:
    """A role entry: a ``derive:`` label as is, an address only in EIP-55 checksum form."""
    if value.startswith(DERIVE_PREFIX):
        return value
    from adapters.chain.accounts import checksum_address  # noqa: PLC0415 - web3 only if needed

    checksummed = checksum_address(value)
    if value == checksummed:
        return value
    if value[2:] in {value[2:].lower(), value[2:].upper()}:
        msg = f"must be in EIP-55 checksum form: {checksummed} (the same address), got {value}"
    else:
        msg = f"EIP-55 checksum does not match (a typo?): {value}"
    raise _problem(msg)


RoleAddress = Annotated[str, Field(pattern=_ROLE_PATTERN), AfterValidator(_checksummed)]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]


# Enum keys accept their TOML strings (pydantic's lax mode for enums; strict for the rest).
MechanismKey = Annotated[Mechanism, Strict(False)]
EngineKey = Annotated[Engine, Strict(False)]
BackendKey = Annotated[ChainBackend, Strict(False)]
OrderKindKey = Annotated[OrderKind, Strict(False)]
DeviceKindKey = Annotated[DeviceKind, Strict(False)]
RoleKey = Annotated[MeterRole, Strict(False)]
TransportKey = Annotated[Transport, Strict(False)]
ParityKey = Annotated[Parity, Strict(False)]


class _Table(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _base_dir(info: ValidationInfo) -> Path:
    """The folder relative paths are resolved against (the validation context's)."""
    context = info.context if isinstance(info.context, Mapping) else {}
    base = context.get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def _resolve(text: str, info: ValidationInfo) -> str:
    """``text`` as an absolute path (relative ones against the site's folder); ``""`` stays."""
    if not text:
        return text
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (_base_dir(info) / path).resolve())


def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("site_rule", message)


_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?):///(.*)$")


def resolve_database_url(url: str, base_dir: Path) -> str:
    """A database URL whose relative SQLite path is made absolute against ``base_dir``.

    ``sqlite:///peergrid.sqlite`` (relative) becomes ``sqlite:////<base_dir>/peergrid.sqlite``;
    absolute SQLite paths, in-memory databases and other databases are returned unchanged.

    Parameters
    ----------
    url : str
        A SQLAlchemy URL.
    base_dir : Path
        The folder a relative SQLite path is relative to (the site file's).
    """
    match = _SQLITE_URL.match(url)
    if match is None:
        return url
    dialect, rest = match.groups()
    path, sep, query = rest.partition("?")
    if not path or path == ":memory:" or path.startswith("file:") or Path(path).is_absolute():
        return url
    absolute = (base_dir / Path(path).expanduser()).resolve()
    return f"{dialect}:///{absolute.as_posix()}{sep}{query}"


class AlertsTable(_Table):
    """The ``[site.alerts]`` table (:mod:`controller.alerts`)."""

    webhook_url: str = Field(
        default="",
        description="http(s) URL the alerts are POSTed to (JSON) when they change; empty: "
        "none. Only its scheme and host are ever logged",
    )
    gas_low_wei: Int = Field(
        default=DEFAULT_GAS_LOW_WEI,
        ge=0,
        le=10**24,
        description="alert when the operator's gas balance is below this [wei]",
    )
    clock_skew_s: Number = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="alert when the controller's clock is this far off the chain's latest "
        "block [s] (rpc chains)",
    )
    block_time_s: Int = Field(
        default=12,
        ge=0,
        le=3600,
        description="the rpc chain's block time [s]; 0: blocks mined on demand (only a block "
        "from the future is checked)",
    )
    escrow_days: Number = Field(
        default=1.0,
        gt=0,
        le=365,
        description="alert when a participant's free escrow is below this many days of its "
        "typical spend [days]",
    )

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from urllib.parse import urlsplit  # noqa: PLC0415

        text = value.strip()
        if not text:
            return ""
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in {"http", "https"}
            or not parts.hostname
            or any(c.isspace() for c in text)
        ):
            msg = f"must be an http:// or https:// URL with a host, got {text.split(':')[0]}:..."
            raise _problem(msg)
        return text


class SiteTable(_Table):
    """The ``[site]`` table."""

    name: str = Field(default="PeerGrid site", min_length=1, description="the site's name")
    grid: str = Field(
        default="cigre-lv",
        min_length=1,
        description="cigre-lv, simbench:<code> or a pandapower JSON file (relative to the site "
        "file's folder)",
    )
    interval_s: Int = Field(
        default=900, ge=60, le=86400, description="market interval [s]; a divisor of 86400"
    )
    database: str = Field(
        default="sqlite:///peergrid.sqlite",
        min_length=1,
        description="SQLAlchemy URL; a relative SQLite path is relative to the site file's folder",
    )
    vm_min_pu: Number = Field(
        default=0.95, ge=0.5, le=1.5, description="lower voltage limit [p.u.]"
    )
    vm_max_pu: Number = Field(
        default=1.05, ge=0.5, le=1.5, description="upper voltage limit [p.u.]"
    )
    base_load_scale: Number = Field(
        default=1.0,
        ge=0,
        le=100,
        description="the grid's own loads x this x the daily load shape [-]",
    )
    base_sgen_scale: Number = Field(
        default=1.0, ge=0, le=100, description="the grid's own static generators x this [-]"
    )
    max_reading_age_s: Int = Field(
        default=120, ge=1, le=86400, description="older readings are STALE [s]"
    )
    solver_time_limit_s: Number = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="wall-clock budget of one clearing, the AC loop and HiGHS [s]; a stop it "
        "causes is recorded as time_limit (re-clears run without it)",
    )
    mechanism: MechanismKey = Field(default=Mechanism.NODAL, description="how trades are priced")
    engine: EngineKey = Field(default=Engine.HIGHSPY, description="how the LP reaches HiGHS")
    gate_closure_s: Int = Field(
        default=0,
        ge=0,
        le=86400,
        description="orders of an interval are final this long before it starts [s]; "
        "below interval_s",
    )
    reading_signatures: Literal["optional", "required"] = Field(
        default="optional",
        description="whether every device must sign its readings (signed_block); unsigned "
        "energy earns no reward either way",
    )
    unverified_penalty_bps: Int = Field(
        default=2000,
        ge=0,
        le=10_000,
        description="penalty for readings that fail verification, of the cleared purchase "
        "valued at the import tariff [basis points]",
    )
    operators: list[RoleAddress] = Field(
        default_factory=list,
        description="addresses that sign in as operator (EIP-4361): EIP-55 checksummed 0x "
        'addresses, or "derive:<label>" (a demo key from the label: embedded backend only)',
    )
    auditors: list[RoleAddress] = Field(
        default_factory=list,
        description="addresses that sign in as auditor (read-only everything), as operators; "
        "no address may be both",
    )
    alerts: AlertsTable = Field(
        default=AlertsTable(), description="when alerts fire and where they go"
    )

    @field_validator("interval_s")
    @classmethod
    def _divides_a_day(cls, value: int) -> int:
        if 86400 % value:
            msg = f"must divide a day (86400 s) evenly, got {value}"
            raise _problem(msg)
        return value

    @field_validator("grid")
    @classmethod
    def _grid_file(cls, value: str, info: ValidationInfo) -> str:
        spec = value.strip()
        if not spec.lower().endswith(".json"):
            return spec
        path = _resolve(spec, info)
        if not Path(path).is_file():
            msg = f"grid file not found: {path}"
            raise _problem(msg)
        return path

    @field_validator("database")
    @classmethod
    def _database_url(cls, value: str, info: ValidationInfo) -> str:
        from sqlalchemy.engine import make_url  # noqa: PLC0415 - SQLAlchemy only when parsing
        from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

        try:
            make_url(value)
        except ArgumentError:
            msg = f"not a database URL (e.g. sqlite:///peergrid.sqlite): {value!r}"
            raise _problem(msg) from None
        return resolve_database_url(value, _base_dir(info))


class TariffsTable(_Table):
    """The ``[tariffs]`` table: the upstream supplier's prices [token base units per kWh]."""

    import_price: Int = Field(
        default=300_000,
        ge=0,
        le=MAX_PRICE,
        description="the supplier sells at [token base units/kWh]",
    )
    export_price: Int = Field(
        default=80_000,
        ge=0,
        le=MAX_PRICE,
        description="the supplier buys at [token base units/kWh]",
    )


class ChainTable(_Table):
    """The ``[chain]`` table."""

    backend: BackendKey = Field(default=ChainBackend.EMBEDDED, description="where to settle")
    rpc_url: str = Field(default="", pattern=rf"^$|{_URL_PATTERN}", description="the node (rpc)")
    confirmations: Int = Field(default=0, ge=0, le=1000, description="finality depth [blocks]")
    token_address: str = Field(
        default="", pattern=rf"^$|{_ADDRESS_PATTERN}", description="the payment token (anvil, rpc)"
    )
    settlement_address: str = Field(
        default="", pattern=rf"^$|{_ADDRESS_PATTERN}", description="the settlement contract"
    )
    state_path: str = Field(
        default="", description="anvil's state file (relative to the site file)"
    )
    operator_key_env: str = Field(
        default="PEERGRID_OPERATOR_KEY",
        pattern=_ENV_PATTERN,
        description="env var holding the operator's hex key",
    )
    operator_keystore: str = Field(
        default="",
        description="the operator's Web3 Secret Storage JSON (relative to the site file)",
    )
    keystore_password_env: str = Field(
        default="PEERGRID_KEYSTORE_PASSWORD",
        pattern=_ENV_PATTERN,
        description="env var holding a keystore's password (else a prompt on a terminal)",
    )
    admin_keystore: str = Field(
        default="", description="the admin's Web3 Secret Storage JSON (relative to the site file)"
    )
    admin_key_env: str = Field(
        default="", pattern=rf"^$|{_ENV_PATTERN}", description="env var holding the admin's hex key"
    )
    grid_account: str = Field(
        default="", pattern=rf"^$|{_ADDRESS_PATTERN}", description="GRID's address (anvil, rpc)"
    )
    community_account: str = Field(
        default="",
        pattern=rf"^$|{_ADDRESS_PATTERN}",
        description="COMMUNITY's address (anvil, rpc)",
    )
    governance_file: str = Field(
        default="",
        description="the community's contracts, from 'peergrid gov deploy --out' (path)",
    )
    device_keys_address: str = Field(
        default="",
        pattern=rf"^$|{_ADDRESS_PATTERN}",
        description="the device key registry (DeviceKeys) signed readings are verified against",
    )

    @field_validator("state_path", "operator_keystore", "admin_keystore", "governance_file")
    @classmethod
    def _path(cls, value: str, info: ValidationInfo) -> str:
        return _resolve(value, info)


class OrderEntry(_Table):
    """A ``[[participants.orders]]`` entry: a standing order."""

    kind: OrderKindKey = Field(description="what it trades each interval")
    price: Int = Field(
        ge=0, le=MAX_PRICE, description="floor (sell) or ceiling (buy) [token base units/kWh]"
    )
    energy_wh: Int = Field(
        default=0, ge=0, le=MAX_ENERGY_WH, description="buy / sell only (required): 1-10^9 [Wh]"
    )
    discharge_price: Int = Field(
        default=0,
        ge=0,
        le=MAX_PRICE,
        description="battery only (required), >= price [base units/kWh]",
    )
    min_soc_percent: Number = Field(default=10.0, ge=0, le=100, description="battery only [%]")
    max_soc_percent: Number = Field(default=95.0, ge=0, le=100, description="battery only [%]")


class ParticipantEntry(_Table):
    """A ``[[participants]]`` entry."""

    id: str = Field(pattern=_ID_PATTERN, description="unique; not GRID or COMMUNITY")
    bus: str = Field(min_length=1, description="a bus name of the grid")
    account: str = Field(
        default="derive",
        pattern=rf"^(derive|{_ADDRESS_PATTERN[1:-1]})$",
        description='0x address, or "derive" (a demo key from the id: embedded only)',
    )
    deposit: Int = Field(
        default=0,
        ge=0,
        le=MAX_DEPOSIT,
        description="escrow a trial chain deposits [token base units]",
    )
    orders: list[OrderEntry] = Field(default_factory=list, description="standing orders")


class DeviceEntry(_Table):
    """A ``[[devices]]`` entry: a Modbus device of a participant."""

    id: str = Field(pattern=_ID_PATTERN, description="unique")
    participant: str = Field(min_length=1, description="a participant's id")
    kind: DeviceKindKey = Field(description="meter, pv or battery")
    role: RoleKey | None = Field(
        default=None,
        description="what it measures; default by kind: meter connection_point, pv "
        "generation, battery storage",
    )
    map: str = Field(
        default="",
        description="built-in register map, sunspec, or a JSON file (relative to the site "
        "file); default by kind: sdm630, sunspec_inverter, battery",
    )
    unit: Int = Field(default=1, ge=1, le=247, description="Modbus unit id")
    transport: TransportKey = Field(default=Transport.TCP, description="tcp or rtu (serial)")
    host: str = Field(default="127.0.0.1", min_length=1, description="tcp only")
    port: Int = Field(
        default=502, ge=0, le=65535, description="tcp only: 1-65535 (0: simulated, the demo's)"
    )
    serial_port: str = Field(default="", description="rtu only (required there), e.g. /dev/ttyUSB0")
    baudrate: Int = Field(default=9600, ge=300, le=921600, description="rtu only [bit/s]")
    parity: ParityKey = Field(default=Parity.NONE, description="rtu only: N, E or O")
    bytesize: Int = Field(default=8, ge=5, le=8, description="rtu only [bits]")
    stopbits: Int = Field(default=1, ge=1, le=2, description="rtu only [bits]")
    rated_w: Int = Field(
        default=0,
        ge=0,
        le=MAX_POWER_W,
        description="pv and battery: rating [W] (battery: required)",
    )
    capacity_wh: Int = Field(
        default=0, ge=0, le=MAX_ENERGY_WH, description="battery only (required): capacity [Wh]"
    )
    soc0_percent: Number = Field(
        default=50.0, ge=0, le=100, description="battery only: a simulated battery's start [%]"
    )
    profile: str = Field(default="", description="free-text label of the device's profile")
    profile_scale_w: Int = Field(
        default=0, ge=0, le=MAX_POWER_W, description="meter only: a simulated load's peak [W]"
    )
    signed_block: Int | None = Field(
        default=None,
        ge=0,
        le=0x10000 - 88,
        description="input register of the device's signed-reading block (88 registers); "
        "absent: the device does not sign",
    )

    @field_validator("map")
    @classmethod
    def _register_map(cls, value: str, info: ValidationInfo) -> str:
        if not value or value == SUNSPEC_DISCOVERY:
            return value
        name = value
        if value.endswith(".json") or "/" in value or os.sep in value:
            name = _resolve(value, info)
        try:
            load_register_map(name)
        except AdapterError as exc:
            raise _problem(str(exc)) from None
        return name


class SiteFile(_Table):
    """A whole site file (the models behind :func:`parse_site` and the JSON Schema)."""

    model_config = ConfigDict(
        title="PeerGrid site file",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    site: SiteTable = Field(description="the site")
    tariffs: TariffsTable = Field(default=TariffsTable(), description="tariffs")
    chain: ChainTable = Field(default=ChainTable(), description="settlement chain")
    participants: list[ParticipantEntry] = Field(min_length=1, description="the prosumers")
    devices: list[DeviceEntry] = Field(default_factory=list, description="Modbus devices")


# ------------------------------------------------------------------ problems


_SECTIONS = ("", "site", "tariffs", "chain", "participants", "devices")


@dataclass(frozen=True, slots=True)
class _Problem:
    """One problem: where (a location in the document) and what."""

    loc: tuple[str | int, ...]
    message: str

    def order(self) -> tuple[int, int]:
        """Sorts problems by section, then item, in file order."""
        head = self.loc[0] if self.loc else ""
        rank = _SECTIONS.index(head) if head in _SECTIONS else 0
        index = self.loc[1] if len(self.loc) > 1 and isinstance(self.loc[1], int) else -1
        return rank, index

    def line(self, data: object) -> str:
        """``participants[2] (bob).orders[0].price: must be ...``."""
        where = _name(data, self.loc)
        return f"{where}: {self.message}" if where else self.message


def _name(data: object, loc: Sequence[str | int]) -> str:
    """``participants[2] (bob).orders[0].price`` for a location in the raw document."""
    out = ""
    node: object = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            ident = node.get("id") if isinstance(node, Mapping) else None
            if isinstance(ident, str) and ident.strip():
                out += f" ({ident})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    return out


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class whose keys are valid at ``loc`` (for 'did you mean')."""
    model: type[BaseModel] = SiteFile
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        if info is None:
            return None
        candidates = [info.annotation, *getattr(info.annotation, "__args__", ())]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return None
    return model


def _suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'price'?)`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _shown(value: object) -> str:
    """A value as the message quotes it (at most 60 characters)."""
    text = str(value) if isinstance(value, float) and not math.isfinite(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "list_type": "must be an array of tables",
    "string_too_short": "must not be empty",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "enum": "must be one of {expected}",
}


def _describe(err: ErrorDetails) -> _Problem:
    """One pydantic error as a problem."""
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        keys = list(model.model_fields) if model is not None else []
        hint = _suggest(str(loc[-1]), keys) or (f" (known: {', '.join(keys)})" if keys else "")
        return _Problem(loc, f"unknown {'table' if len(loc) == 1 else 'key'}{hint}")
    if loc == ("participants",) and kind in {"missing", "too_short"}:
        return _Problem(loc, "a site needs at least one [[participants]] entry")
    if kind == "missing":
        return _Problem(loc, "missing the table" if loc == ("site",) else "missing (required)")
    if kind == "site_rule":
        return _Problem(loc, err["msg"])
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        text = f"must be {_PATTERN_HINTS.get(pattern, 'of the form ' + pattern)}"
    elif kind in _TYPE_MESSAGES:
        text = _TYPE_MESSAGES[kind].format(**ctx)
    else:
        text = err["msg"].replace("Input should be", "must be")
        text = text[:1].lower() + text[1:]
    return _Problem(loc, f"{text}, got {_shown(err.get('input'))}")


# ------------------------------------------------------------------ rules across keys

_Loc = tuple[str | int, ...]
_M = TypeVar("_M", bound="_Table")


def _salvage(
    model: type[_M], raw: object, context: Mapping[str, object]
) -> tuple[_M | None, frozenset[str]]:
    """``raw`` validated on its own, leaving out its bad keys, and the keys left out.

    The rules across keys then run on what is valid, so that every problem is reported at
    once; a rule about a key that was left out is not (its own problem already is). A
    required key left out takes a stand-in no rule reads (:data:`_STAND_INS`). ``None``
    when even that does not validate (a bad ``kind``, or no table at all).
    """
    table = {} if raw is None else raw
    if not isinstance(table, Mapping):
        return None, frozenset()
    try:
        return model.model_validate(table, context=context), frozenset()
    except ValidationError as exc:
        bad = frozenset(str(e["loc"][0]) for e in exc.errors() if e["loc"])
    try:
        rest = {k: v for k, v in table.items() if k not in bad}
        rest |= {k: v for k, v in _STAND_INS.items() if k in bad and k in model.model_fields}
        return model.model_validate(rest, context=context), bad
    except ValidationError:
        return None, bad


_STAND_INS: Final[Mapping[str, object]] = {
    "price": 0,
    "id": "?",
    "bus": "?",
    "participant": "?",
}
"""Values a bad required key takes while the rules run on the rest of its item: a price of 0
makes ``discharge_price >= price`` hold, and a rule about the key itself is not reported."""


def _kept(prefix: _Loc, dropped: frozenset[str], found: Iterable[_Problem]) -> list[_Problem]:
    """The problems of ``found`` that are not about a key left out of the item at ``prefix``."""
    n = len(prefix)
    return [p for p in found if not (len(p.loc) > n and p.loc[n] in dropped)]


def _array(raw: object) -> list[object]:
    return list(raw) if isinstance(raw, list) else []


def _site_rules(site: SiteTable) -> Iterator[_Problem]:
    if site.vm_min_pu >= site.vm_max_pu:
        yield _Problem(
            ("site", "vm_min_pu"),
            f"must be below vm_max_pu ({site.vm_max_pu:g}), got {site.vm_min_pu:g}",
        )
    if site.gate_closure_s >= site.interval_s:
        yield _Problem(
            ("site", "gate_closure_s"),
            f"must be below interval_s ({site.interval_s}), got {site.gate_closure_s}",
        )


def _role_rules(
    site: SiteTable, backend: ChainBackend, participants: Sequence[str]
) -> Iterator[_Problem]:
    """Operators and auditors: no address in both roles or twice; demo keys on embedded only."""
    seen: dict[str, str] = {}
    for key in ("operators", "auditors"):
        for i, entry in enumerate(getattr(site, key)):
            loc: _Loc = ("site", key, i)
            if entry in seen:
                yield _Problem(loc, f"{entry} is already {seen[entry]}")
                continue
            seen[entry] = f"{key}[{i}]"
            label = entry.removeprefix(DERIVE_PREFIX)
            if label == entry:
                continue
            if backend is not ChainBackend.EMBEDDED:
                yield _Problem(
                    loc,
                    f"backend {str(backend)!r} refuses derived (demo) keys, which anyone who "
                    "knows the label can compute; give the 0x address",
                )
            elif label in {*participants, GRID, COMMUNITY}:
                yield _Problem(
                    loc, f"{entry} is the demo key of account {label!r}; use another label"
                )


def _tariff_rules(tariffs: TariffsTable) -> Iterator[_Problem]:
    if tariffs.export_price > tariffs.import_price:
        yield _Problem(
            ("tariffs", "export_price"),
            f"must not exceed import_price ({tariffs.import_price}), got {tariffs.export_price}",
        )


def _order_rules(loc: _Loc, order: OrderEntry) -> Iterator[_Problem]:
    given = order.model_fields_set
    fixed = order.kind in {OrderKind.BUY, OrderKind.SELL}
    if fixed and order.energy_wh < 1:
        yield _Problem(
            (*loc, "energy_wh"), f"a fixed {order.kind} order needs energy_wh (1 to 10^9 Wh)"
        )
    if not fixed and "energy_wh" in given:
        yield _Problem((*loc, "energy_wh"), "only buy and sell orders take energy_wh")
    if order.kind is not OrderKind.BATTERY:
        for key in ("discharge_price", "min_soc_percent", "max_soc_percent"):
            if key in given:
                yield _Problem((*loc, key), f"only battery orders take {key}")
        return
    if "discharge_price" not in given:
        yield _Problem((*loc, "discharge_price"), "a battery order needs discharge_price")
    elif order.discharge_price < order.price:
        yield _Problem(
            (*loc, "discharge_price"),
            f"must be >= price (the charge ceiling, {order.price}), got {order.discharge_price}",
        )
    if order.min_soc_percent >= order.max_soc_percent:
        yield _Problem(
            (*loc, "min_soc_percent"),
            f"must be below max_soc_percent ({order.max_soc_percent:g}), "
            f"got {order.min_soc_percent:g}",
        )


def _chain_rules(
    chain: ChainTable, accounts: Sequence[tuple[_Loc, str]], *, runnable: bool
) -> Iterator[_Problem]:
    backend = chain.backend
    if backend is ChainBackend.RPC and not chain.rpc_url:
        yield _Problem(("chain", "rpc_url"), "backend 'rpc' needs rpc_url")
    if backend is ChainBackend.EMBEDDED:
        return
    why = (
        f"backend {str(backend)!r} refuses derived (demo) keys, which anyone who knows the "
        "name can compute"
    )
    for loc, account in accounts:
        if account == "derive":
            yield _Problem(loc, f"{why}; give the participant's 0x address")
    for key, label in (("grid_account", GRID), ("community_account", COMMUNITY)):
        if not getattr(chain, key):
            yield _Problem(("chain", key), f"{why}; give {label}'s 0x address")
    if not runnable:
        return
    for key in ("token_address", "settlement_address"):
        if not getattr(chain, key):
            yield _Problem(
                ("chain", key),
                f"backend {str(backend)!r} needs the deployed contracts' addresses "
                "(deploy them with 'peergrid chain deploy')",
            )
    for key in ("operator_keystore", "admin_keystore"):
        path = getattr(chain, key)
        if path and not Path(path).is_file():
            yield _Problem(("chain", key), f"keystore not found: {path}")


_KIND_KEYS = {
    "rated_w": (DeviceKind.PV, DeviceKind.BATTERY),
    "capacity_wh": (DeviceKind.BATTERY,),
    "soc0_percent": (DeviceKind.BATTERY,),
    "profile_scale_w": (DeviceKind.METER,),
}
_TCP_KEYS = ("host", "port")
_RTU_KEYS = ("serial_port", "baudrate", "parity", "bytesize", "stopbits")


def _device_rules(loc: _Loc, device: DeviceEntry, *, runnable: bool) -> Iterator[_Problem]:
    given = device.model_fields_set
    for key, kinds in _KIND_KEYS.items():
        if key in given and device.kind not in kinds:
            only = " and ".join(kinds)
            yield _Problem((*loc, key), f"a {device.kind} takes no {key} (only {only} devices)")
    if device.kind is DeviceKind.BATTERY:
        for key in ("rated_w", "capacity_wh"):
            if getattr(device, key) < 1:
                yield _Problem((*loc, key), f"a battery needs {key} (>= 1)")
    role = device.role or DEFAULT_ROLES[device.kind]
    if role not in ALLOWED_ROLES[device.kind]:
        allowed = ", ".join(sorted(ALLOWED_ROLES[device.kind]))
        yield _Problem((*loc, "role"), f"a {device.kind} can be {allowed}, got {str(role)!r}")
    tcp = device.transport is Transport.TCP
    for key in _RTU_KEYS if tcp else _TCP_KEYS:
        if key in given:
            yield _Problem((*loc, key), f"transport {str(device.transport)!r} takes no {key}")
    if not tcp and not device.serial_port:
        yield _Problem((*loc, "serial_port"), "transport 'rtu' needs serial_port")
    if tcp and device.port == 0 and runnable:
        yield _Problem(
            (*loc, "port"),
            "0 means a simulated device, which only 'peergrid demo' runs; give the device's "
            "Modbus TCP port (1-65535)",
        )


def _bus_rules(devices: Sequence[tuple[_Loc, DeviceEntry, frozenset[str]]]) -> Iterator[_Problem]:
    """Two devices never share a Modbus address; devices on one serial line agree on it."""
    seen: dict[tuple[object, ...], str] = {}
    lines: dict[str, tuple[tuple[object, ...], str]] = {}
    line_keys = ("baudrate", "parity", "bytesize", "stopbits")
    for loc, d, dropped in devices:
        if dropped & {"transport", "host", "port", "unit", "serial_port", *line_keys}:
            continue
        if d.transport is Transport.TCP:
            if d.port == 0:
                continue  # simulated: the demo gives each its own port
            address: tuple[object, ...] = ("tcp", d.host, d.port, d.unit)
            shown = f"{d.host}:{d.port} unit {d.unit}"
        else:
            address = ("rtu", d.serial_port, d.unit)
            shown = f"{d.serial_port} unit {d.unit}"
            settings = tuple(getattr(d, k) for k in line_keys)
            first_settings, first = lines.setdefault(d.serial_port, (settings, d.id))
            if first_settings != settings:
                yield _Problem(
                    (*loc, "serial_port"),
                    f"shares {d.serial_port} with {first!r} but not its line settings "
                    f"({', '.join(line_keys)})",
                )
        if address in seen:
            yield _Problem((*loc, "unit"), f"{shown} is already device {seen[address]!r}")
        else:
            seen[address] = d.id


def _ids(section: str, raw: object) -> tuple[list[str], list[_Problem]]:
    """The string ids of an array of tables, and a problem for each repeated or reserved one."""
    ids: list[str] = []
    problems: list[_Problem] = []
    for i, item in enumerate(_array(raw)):
        ident = item.get("id") if isinstance(item, Mapping) else None
        if not isinstance(ident, str):
            continue
        if ident in ids:
            problems.append(_Problem((section, i, "id"), f"duplicate id {ident!r}"))
        elif section == "participants" and ident in {GRID, COMMUNITY}:
            problems.append(_Problem((section, i, "id"), f"{ident!r} is a reserved name"))
        ids.append(ident)
    return ids, problems


def _cross_rules(
    data: Mapping[str, object], context: Mapping[str, object], *, runnable: bool
) -> list[_Problem]:
    """Every rule that spans keys or items, run on what validates (see :func:`_salvage`)."""
    pids, problems = _ids("participants", data.get("participants"))
    problems += _ids("devices", data.get("devices"))[1]
    site, site_dropped = _salvage(SiteTable, data.get("site"), context)
    if site is not None:
        problems += _kept(("site",), site_dropped, _site_rules(site))
    tariffs, dropped = _salvage(TariffsTable, data.get("tariffs"), context)
    if tariffs is not None:
        problems += _kept(("tariffs",), dropped, _tariff_rules(tariffs))

    accounts: list[tuple[_Loc, str]] = []
    battery_orders: list[tuple[_Loc, str]] = []
    for i, raw in enumerate(_array(data.get("participants"))):
        participant, dropped = _salvage(ParticipantEntry, raw, context)
        if participant is not None and "account" not in dropped:
            accounts.append((("participants", i, "account"), participant.account))
        ident = raw.get("id") if isinstance(raw, Mapping) else None
        orders = raw.get("orders") if isinstance(raw, Mapping) else None
        for j, raw_order in enumerate(_array(orders)):
            loc: _Loc = ("participants", i, "orders", j)
            order, dropped = _salvage(OrderEntry, raw_order, context)
            if order is None:
                continue
            problems += _kept(loc, dropped, _order_rules(loc, order))
            if order.kind is OrderKind.BATTERY and isinstance(ident, str):
                battery_orders.append(((*loc, "kind"), ident))
    chain, dropped = _salvage(ChainTable, data.get("chain"), context)
    if chain is not None:
        problems += _kept(("chain",), dropped, _chain_rules(chain, accounts, runnable=runnable))
    if site is not None:
        backend = chain.backend if chain is not None else ChainBackend.EMBEDDED
        problems += _kept(("site",), site_dropped, _role_rules(site, backend, pids))

    devices: list[tuple[_Loc, DeviceEntry, frozenset[str]]] = []
    for i, raw in enumerate(_array(data.get("devices"))):
        device, dropped = _salvage(DeviceEntry, raw, context)
        if device is not None:
            devices.append((("devices", i), device, dropped))
    battery_owners = set()
    for loc, d, dropped in devices:
        problems += _kept(loc, dropped, _device_rules(loc, d, runnable=runnable))
        if "participant" not in dropped and d.participant not in pids:
            hint = _suggest(d.participant, pids)
            problems.append(
                _Problem((*loc, "participant"), f"unknown participant {d.participant!r}{hint}")
            )
        if d.kind is DeviceKind.BATTERY:
            battery_owners.add(d.participant)
    problems += _bus_rules(devices)
    if site is not None and site.reading_signatures == "required":
        problems += [
            _Problem(
                (*loc, "signed_block"),
                f"{d.id} does not sign its readings, but the site requires signatures "
                '(set its signed_block, or reading_signatures = "optional")',
            )
            for loc, d, _ in devices
            if d.signed_block is None
        ]
    problems += [
        _Problem(loc, f"a battery order needs a battery device of {owner!r}")
        for loc, owner in battery_orders
        if owner not in battery_owners
    ]
    return problems


# ------------------------------------------------------------------ parse and read


def _build(doc: SiteFile, source: str) -> SiteConfig:
    s, t, c = doc.site, doc.tariffs, doc.chain
    return SiteConfig(
        name=s.name,
        grid=s.grid,
        interval_s=s.interval_s,
        database=s.database,
        vm_min_pu=s.vm_min_pu,
        vm_max_pu=s.vm_max_pu,
        base_load_scale=s.base_load_scale,
        base_sgen_scale=s.base_sgen_scale,
        max_reading_age_s=s.max_reading_age_s,
        import_price=t.import_price,
        export_price=t.export_price,
        solver_time_limit_s=s.solver_time_limit_s,
        mechanism=Mechanism(s.mechanism),
        engine=Engine(s.engine),
        gate_closure_s=s.gate_closure_s,
        operators=tuple(s.operators),
        auditors=tuple(s.auditors),
        reading_signatures=s.reading_signatures,
        unverified_penalty_bps=s.unverified_penalty_bps,
        alerts=AlertsConfig(
            webhook_url=s.alerts.webhook_url,
            gas_low_wei=s.alerts.gas_low_wei,
            clock_skew_s=s.alerts.clock_skew_s,
            block_time_s=s.alerts.block_time_s,
            escrow_days=s.alerts.escrow_days,
        ),
        chain=ChainConfig(
            backend=ChainBackend(c.backend),
            rpc_url=c.rpc_url,
            confirmations=c.confirmations,
            token_address=c.token_address,
            settlement_address=c.settlement_address,
            state_path=c.state_path,
            operator_key_env=c.operator_key_env,
            operator_keystore=c.operator_keystore,
            keystore_password_env=c.keystore_password_env,
            admin_keystore=c.admin_keystore,
            admin_key_env=c.admin_key_env,
            grid_account=c.grid_account,
            community_account=c.community_account,
            governance_file=c.governance_file,
            device_keys_address=c.device_keys_address,
        ),
        participants=tuple(
            ParticipantConfig(
                id=ParticipantId(p.id),
                bus=BusId(p.bus),
                account=p.account,
                deposit=p.deposit,
                orders=tuple(
                    StandingOrder(
                        kind=OrderKind(o.kind),
                        price=o.price,
                        energy_wh=o.energy_wh,
                        discharge_price=o.discharge_price,
                        min_soc_percent=o.min_soc_percent,
                        max_soc_percent=o.max_soc_percent,
                    )
                    for o in p.orders
                ),
            )
            for p in doc.participants
        ),
        devices=tuple(
            DeviceConfig(
                id=DeviceId(d.id),
                participant=ParticipantId(d.participant),
                kind=DeviceKind(d.kind),
                host=d.host,
                port=d.port if d.transport is Transport.TCP else 0,
                unit=d.unit,
                map=d.map or DEFAULT_MAPS[DeviceKind(d.kind)],
                rated_w=d.rated_w,
                capacity_wh=d.capacity_wh,
                soc0_percent=d.soc0_percent,
                profile=d.profile,
                profile_scale_w=d.profile_scale_w,
                transport=Transport(d.transport),
                serial_port=d.serial_port,
                baudrate=d.baudrate,
                parity=Parity(d.parity),
                bytesize=d.bytesize,
                stopbits=d.stopbits,
                role=MeterRole(d.role or DEFAULT_ROLES[DeviceKind(d.kind)]),
                signed_block=d.signed_block,
            )
            for d in doc.devices
        ),
        source=source,
    )


def parse_site(
    data: Mapping[str, Any],
    source: str = "<memory>",
    *,
    base_dir: str | Path | None = None,
    runnable: bool = False,
) -> SiteConfig:
    """Validate a parsed TOML document into a :class:`SiteConfig` (module docstring).

    Every problem is collected first: the pydantic models' (types, ranges, unknown keys with
    the closest known one, register maps that do not load), then the rules across keys and
    items. Bus names are checked against the grid later, by
    :func:`controller.wiring.load_site_grid` (which loads the grid).

    Parameters
    ----------
    data : Mapping
        The document as :func:`tomllib.loads` returns it.
    source : str
        Where it came from (a file name), quoted in errors and kept as ``SiteConfig.source``.
    base_dir : str, Path or None
        The folder relative paths are relative to (the site file's); ``None``: the current
        directory. Paths in the result are absolute.
    runnable : bool
        Also require what ``peergrid run`` needs (``site check`` asks for it too): a real
        port for every TCP device (0 = simulated is the demo's) and, on ``anvil`` / ``rpc``,
        the contract addresses and the files of the keystores named.

    Returns
    -------
    SiteConfig
        The site, with kinds as enums (:class:`OrderKind`, :class:`DeviceKind`,
        :class:`ChainBackend`, :class:`~market.domain.MeterRole` ...).

    Raises
    ------
    InvalidSite
        One line per problem, each naming the item (``participants[2] (bob).orders[0]
        .price: ...``).
    """
    context = {"base_dir": Path(base_dir).resolve() if base_dir is not None else Path.cwd()}
    problems: list[_Problem] = []
    doc: SiteFile | None = None
    try:
        doc = SiteFile.model_validate(data, context=context)
    except ValidationError as exc:
        problems += [_describe(err) for err in exc.errors()]
    if isinstance(data, Mapping):
        problems += _cross_rules(data, context, runnable=runnable)
    if problems or doc is None:
        lines = [p.line(data) for p in sorted(problems, key=_Problem.order)]
        raise InvalidSite(source, list(dict.fromkeys(lines)))
    return _build(doc, source)


def read_site(path: str | Path, *, runnable: bool = False) -> SiteConfig:
    """Read a site TOML file and validate it with :func:`parse_site`.

    Relative paths in the file are relative to the file's folder.

    Parameters
    ----------
    path : str or Path
        The site file (UTF-8 TOML; a byte-order mark is allowed).
    runnable : bool
        Also require what ``peergrid run`` needs (see :func:`parse_site`).

    Raises
    ------
    ConfigError
        If the file is missing, a folder, unreadable, binary, not UTF-8 or not TOML, naming
        the file;
        :class:`InvalidSite` if it is invalid (naming every item).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        msg = f"site file not found: {p}"
        raise ConfigError(msg) from None
    except IsADirectoryError:
        msg = f"site file {p} is a directory, not a file"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"cannot read site file {p}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    if b"\0" in raw:
        msg = f"site file {p} is a binary file, not text"
        raise ConfigError(msg)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = f"site file {p} is not UTF-8 text (byte at offset {exc.start}); save it as UTF-8"
        raise ConfigError(msg) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{p}: not valid TOML: {exc}"
        raise ConfigError(msg) from None
    except RecursionError:  # arrays or inline tables nested thousands of levels deep
        msg = f"{p}: not valid TOML for a site: nested too deeply"
        raise ConfigError(msg) from None
    return parse_site(data, str(p), base_dir=p.resolve().parent, runnable=runnable)


def site_schema() -> dict[str, Any]:
    """The JSON Schema of a site file, generated from :class:`SiteFile`.

    ``controller/sites/site.schema.json`` is this, committed (a test keeps it in step;
    ``peergrid site schema`` prints it).
    """
    return SiteFile.model_json_schema()

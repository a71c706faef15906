"""The API's request and response bodies (pydantic): the OpenAPI document is built from them.

Every quantity is an integer in the unit its name says: ``_wh`` [Wh], ``_w`` [W], ``_units``
[token base units; the payment token has 6 decimals], ``_per_kwh`` [token base units per
kWh], ``_s`` [s, or Unix seconds for a time: ``interval_start_s``]; ``_pu`` [p.u.] and
``_percent`` [%] are floats. Times meant for people are ISO 8601 strings in UTC.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_UNIX_S = 4_102_444_800
"""The latest time the API takes [Unix s]: 2100-01-01T00:00:00Z."""

MAX_DURATION_S = 10 * 366 * 86_400
"""The longest period an operator's exclusion may have [s] (ten years)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _json_int(value: object) -> object:
    """JSON's ``15601.0`` is the integer 15601 (JSON Schema agrees); other values unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_int)]
"""An integer of a strict request body: a JSON integer, written with a fraction or not."""


class _Input(BaseModel):
    """A request body: strict (no ``false`` for ``0``, no ``"1"`` for ``1``), no extra keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ErrorBody(_Model):
    """Every error: a short snake_case ``code`` and a ``reason`` for people."""

    code: str = Field(description="short snake_case code, e.g. not_found, forbidden")
    reason: str = Field(description="what was wrong, naming the field or item")


# ---------------------------------------------------------------------------- service
class Health(_Model):
    """The service is up."""

    status: str = Field(description="ok")
    site_id: str
    started_at: str = Field(description="when the service started, ISO 8601 UTC")
    now_s: int = Field(description="the service's clock [Unix s]")


# ---------------------------------------------------------------------------- auth
class NonceOut(_Model):
    """A single-use sign-in nonce, to put in the EIP-4361 message."""

    nonce: str
    message: str | None = Field(
        default=None,
        description="the EIP-4361 message for the address asked for, ready to sign",
    )


class NonceIn(_Input):
    """Optionally, the address that will sign in: the reply then carries its message."""

    address: str | None = Field(
        default=None,
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description="the wallet's address (any case): the server writes the message for it",
    )


class SignInIn(_Input):
    """A signed EIP-4361 (Sign-In with Ethereum) message."""

    message: str = Field(max_length=8192, description="the EIP-4361 message, as signed")
    signature: str = Field(
        max_length=200, description="EIP-191 personal_sign signature, 0x + 130 hex digits"
    )


class PrincipalOut(_Model):
    """Who a session is."""

    address: str
    role: str = Field(description="prosumer | operator | auditor")
    participant: str | None = Field(description="the participant id of a prosumer")


class SessionOut(_Model):
    """A bearer token: send ``Authorization: Bearer <token>``."""

    token: str
    token_type: str = Field(description="bearer")
    expires_at: str = Field(description="ISO 8601 UTC")
    principal: PrincipalOut


class SignedOut(_Model):
    """The session is gone."""

    signed_out: bool


# ---------------------------------------------------------------------------- intervals
class Page(_Model):
    """A page of a list: pass ``next_cursor`` as ``cursor`` for the next one."""

    next_cursor: str | None = Field(description="null on the last page")


class IntervalSummary(_Model):
    """One interval, as listed."""

    interval_start_s: int = Field(description="start [Unix s] (the interval's id)")
    interval_start: str = Field(description="ISO 8601 UTC")
    length_s: int
    status: str = Field(description="claimed | cleared | no_crossing | infeasible | ...")
    reason: str
    n_orders: int
    settlement_state: str | None = Field(description="intent | settled | failed | null")


class IntervalPage(Page):
    """Intervals, newest first."""

    items: list[IntervalSummary]


class TradeOut(_Model):
    """A seller -> buyer trade (the upstream grid is ``GRID``)."""

    trade_id: str
    interval_start_s: int
    seller: str
    buyer: str
    seller_bus: str | None
    buyer_bus: str | None
    seller_order: str | None
    buyer_order: str | None
    energy_wh: int
    seller_price_per_kwh: int
    buyer_price_per_kwh: int
    seller_amount_units: int
    buyer_amount_units: int


class AcCheckOut(_Model):
    """The AC power flow check of the cleared dispatch (pandapower names and units)."""

    converged: bool
    min_vm_pu: float | None
    max_vm_pu: float | None
    max_line_loading_percent: float | None
    max_trafo_loading_percent: float | None
    slack_p_w: int | None
    n_violations: int
    violations: list[dict[str, Any]]


class SettlementOut(_Model):
    """An interval's settlement on the chain."""

    state: str = Field(description="intent | settled | failed")
    batch_id: str
    tx_hash: str | None
    block_number: int | None
    gas_used: int | None
    error: str | None


class IntervalDetail(_Model):
    """One interval: outcome, prices, grid exchange, trades, AC check and settlement.

    A prosumer sees only the trades it is a party to (``trades_hidden`` counts the others).
    """

    interval_start_s: int
    interval_start: str
    length_s: int
    status: str
    reason: str
    mechanism: str | None
    n_orders: int
    prices_per_kwh: dict[str, int] = Field(description="nodal price per bus name")
    grid_import_wh: int
    grid_export_wh: int
    trades: list[TradeOut]
    trades_hidden: int
    ac_check: AcCheckOut | None
    iterations: int | None
    settlement: SettlementOut | None


class CurrentOut(_Model):
    """The interval now, and the next one open for orders."""

    now_s: int
    interval_s: int
    current_interval_start_s: int
    next_interval_start_s: int = Field(description="the first interval whose gate is open")
    gate_closure_s: int = Field(description="gate closure of next_interval_start_s [Unix s]")
    seconds_to_gate_closure: int
    gate_closure_lead_s: int = Field(description="the site's gate_closure_s [s]")
    paused: bool


class AuditOut(_Model):
    """An interval's audit record as stored, and its hash (SHA-256 of its core)."""

    interval_start_s: int
    record_hash: str
    record: dict[str, Any]


# ---------------------------------------------------------------------------- participant
class ClearedOrderOut(_Model):
    """An order of the participant as it cleared."""

    interval_start_s: int
    order_id: str
    bus: str
    side: str = Field(description="buy | sell")
    accepted_wh: int
    price_per_kwh: int
    amount_units: int


class ClearedOrderList(_Model):
    """A participant's cleared orders in a period, oldest first."""

    participant: str
    next_start_s: int | None = Field(
        description="more of the period follows: ask again with this start_s (null: done)"
    )
    items: list[ClearedOrderOut]


class TradeList(_Model):
    """A participant's trades in a period, oldest first."""

    participant: str
    next_start_s: int | None = Field(
        description="more of the period follows: ask again with this start_s (null: done)"
    )
    items: list[TradeOut]


class BalancesOut(_Model):
    """A participant's money on the chain [token base units]."""

    participant: str
    address: str
    wallet_units: int
    escrow_units: int
    unclaimed_reward_units: int


class EscrowOut(_Model):
    """A participant's escrow and what backs its bids [token base units]."""

    participant: str
    address: str
    escrow_units: int
    available_units: int = Field(description="escrow less a pending withdrawal")
    pending_withdrawal_units: int
    owed_pending_units: int = Field(description="charges of settlements not yet on-chain")
    outstanding_debt_units: int = Field(description="+ = owes COMMUNITY")
    free_units: int = Field(description="what new buy orders may still commit")


class DebtRow(_Model):
    """What one settlement did to the participant's carried balance (+ = owes COMMUNITY)."""

    interval_start_s: int
    balance_before_units: int
    balance_after_units: int


class DebtsOut(_Model):
    """A participant's carried balance and its history in a period."""

    participant: str
    outstanding_units: int
    items: list[DebtRow]


class EarningRow(_Model):
    """One interval's settlement line of the participant."""

    interval_start_s: int
    cleared_buy_wh: int
    cleared_sell_wh: int
    metered_import_wh: int
    metered_export_wh: int
    imbalance_wh: int
    trade_amount_units: int
    imbalance_amount_units: int
    net_amount_units: int = Field(description="+ = credited to the participant")
    reward_wh: int = Field(description="locally delivered energy rewarded [Wh]")
    metered: bool
    settlement_state: str
    unverified: str = Field(
        default="",
        description="why its energy is not verified by signed readings (empty: it is); "
        "unverified energy earns no reward (README, 'Signed meter readings')",
    )
    penalty_units: int = Field(
        default=0, description="penalty for readings that failed verification [token units]"
    )


class EarningsOut(_Model):
    """A participant's settlements in a period, with totals."""

    participant: str
    next_start_s: int | None = Field(
        description="more of the period follows: ask again with this start_s (null: done)"
    )
    net_amount_units: int
    trade_amount_units: int
    imbalance_amount_units: int
    reward_wh: int
    items: list[EarningRow]


class ReadingOut(_Model):
    """A device reading (``p_w`` + = import from the microgrid, - = export)."""

    boundary_s: int = Field(description="the interval boundary it was taken at [Unix s]")
    device_id: str
    participant: str
    bus: str
    measured_at: str
    p_w: int
    import_wh_total: int
    export_wh_total: int
    quality: str = Field(
        description="ok | stale | missing | unverified (a signed reading that failed its "
        "check, or an unsigned one where the site requires signatures; reason says which)"
    )
    reason: str
    soc_percent: float | None
    signed: bool = Field(
        default=False, description="the device signed it (verified, unless quality says not)"
    )
    seq: int | None = Field(default=None, description="the device's sequence number, if signed")


class ReadingPage(Page):
    """Readings of a participant's devices, newest first."""

    participant: str
    items: list[ReadingOut]


class DeviceOut(_Model):
    """A device with its last reading."""

    device_id: str
    participant: str
    kind: str = Field(description="meter | pv | battery")
    role: str
    rated_w: int
    capacity_wh: int
    last_reading: ReadingOut | None


class DeviceList(_Model):
    """The devices a principal may see."""

    items: list[DeviceOut]


# ---------------------------------------------------------------------------- orders
class SignedPayload(_Input):
    """EIP-712 typed data as the wallet signed it (``eth_signTypedData_v4``) and its signature."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    typed_data: dict[str, Any] = Field(alias="typedData", description="the full v4 JSON")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="0x + 130 hex digits")


class AckOut(_Model):
    """The intake's acknowledgement of a signed message (persisted before it was sent)."""

    digest: str = Field(description="the EIP-712 digest, 0x + 64 hex digits")
    kind: str = Field(description="Order | StandingOrder | Cancel")
    participant: str
    nonce: str = Field(description="the message's uint256 nonce, decimal")
    status: str = Field(description="accepted | cancelled")
    received_at: str = Field(description="when it was first stored, ISO 8601 UTC")
    interval_start_s: int | None = Field(description="an order's interval [Unix s]")
    valid_from_s: int | None = Field(description="a standing order's window as applied")
    valid_until_s: int | None
    cancels: str | None = Field(description="the digest a Cancel cancelled")
    duplicate: bool = Field(description="true: the same message was acknowledged before")


class SignedOrderOut(_Model):
    """A signed message as stored."""

    digest: str
    kind: str
    participant: str
    signer: str
    nonce: str
    status: str = Field(description="accepted | cancelled")
    interval_start_s: int | None
    valid_from_s: int | None
    valid_until_s: int | None
    received_at: str
    cancel_digest: str | None
    message: dict[str, Any]
    signature: str


class SignedOrderPage(Page):
    """Signed messages, newest first."""

    items: list[SignedOrderOut]


# ---------------------------------------------------------------------------- operator
WHITESPACE: Final = (
    "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
"""Every character Python's ``str.strip``, Rust's regex ``\\s`` (pydantic) or ECMAScript's
``\\s`` (the OpenAPI document's readers) takes for white space, written out: the engines'
``\\s`` differ (U+0085, U+FEFF, U+001C-001F), and a schema-valid reason must never be refused."""
NOT_BLANK: Final = f"[^{WHITESPACE}]"
"""The pattern of a reason: at least one character that no engine counts as white space."""


class PauseIn(_Input):
    """Pause the market."""

    reason: str = Field(min_length=1, max_length=2000, pattern=NOT_BLANK, description="not blank")


class ExclusionIn(_Input):
    """Take a participant, device or bus out of the market for ``duration_s`` from ``start_s``."""

    kind: Literal["participant", "device", "bus"]
    target: str = Field(min_length=1, max_length=200, description="its id (a bus: its name)")
    start_s: JsonInt = Field(ge=0, le=MAX_UNIX_S, description="[Unix s]")
    duration_s: JsonInt = Field(ge=1, le=MAX_DURATION_S, description="[s]")
    reason: str = Field(min_length=1, max_length=2000, pattern=NOT_BLANK, description="not blank")


class ExclusionOut(_Model):
    """An exclusion in the market."""

    exclusion_id: int
    kind: str
    target: str
    start_s: int
    end_s: int
    reason: str
    by: str
    at: str


class MarketOut(_Model):
    """The market's state: paused or not, and every exclusion taken."""

    paused: bool
    paused_reason: str | None
    paused_by: str | None
    paused_at: str | None
    exclusions: list[ExclusionOut]

"""A participant's own data: orders, trades, readings, balances, escrow, debts, earnings.

``/v1/sites/{site}/participants/{participant}/...``. A prosumer may read only its own
participant (another's is 403, whether or not it exists); operators and auditors read any.
Periods are ``start_s`` and ``end_s`` [Unix s], half-open, by interval start; without them
the last day up to the service's clock; an empty period (``start_s >= end_s``) has no rows.
Orders, trades and earnings come a day (:data:`PAGE_S`) at a time: a reply that does not
reach ``end_s`` gives ``next_start_s``, the ``start_s`` of the next request.

Per-account settlement amounts are public on-chain (the Settlement contract's events): the
API keeps them per prosumer, the chain does not.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from controller.api.deps import PrincipalDep, SiteDep, require_participant
from controller.api.models import (
    MAX_UNIX_S,
    BalancesOut,
    ClearedOrderList,
    ClearedOrderOut,
    DebtRow,
    DebtsOut,
    EarningRow,
    EarningsOut,
    ErrorBody,
    EscrowOut,
    ReadingOut,
    ReadingPage,
    TradeList,
)
from controller.api.queries import reading_page, results_between, settlements_between
from controller.api.routes_reads import MAX_LIMIT, trade_out
from controller.service import Service
from market.domain import ParticipantId

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)
}

router = APIRouter(
    prefix="/v1/sites/{site}/participants/{participant}", tags=["participants"], responses=ERRORS
)

PAGE_S = 86_400
"""How much of a period one reply of orders, trades or earnings covers [s] (a day)."""
DEFAULT_PERIOD_S = 86_400

ParticipantPath = Annotated[
    str, Path(min_length=1, max_length=64, description="the participant's id")
]
StartS = Annotated[int | None, Query(ge=0, le=MAX_UNIX_S, description="[Unix s], inclusive")]
EndS = Annotated[int | None, Query(ge=0, le=MAX_UNIX_S, description="[Unix s], exclusive")]


def period(service: Service, start_s: int | None, end_s: int | None) -> tuple[int, int]:
    """The period ``[start_s, end_s)`` [Unix s] of a request (see the module docstring)."""
    if end_s is None:
        end_s = int(service.now().timestamp()) + service.site.interval_s
    if start_s is None:
        start_s = max(0, end_s - DEFAULT_PERIOD_S)
    return start_s, max(start_s, end_s)


def page(lo: int, hi: int) -> tuple[int, int | None]:
    """The end of the page of ``[lo, hi)`` answered now, and the next page's start."""
    end = min(hi, lo + PAGE_S)
    return end, (end if end < hi else None)


def _address(service: Service, participant: str) -> str:
    return str(service.runtime.accounts[ParticipantId(participant)])


@router.get("/orders", response_model=ClearedOrderList, summary="the participant's cleared orders")
def participant_orders(
    service: SiteDep,
    principal: PrincipalDep,
    participant: ParticipantPath,
    start_s: StartS = None,
    end_s: EndS = None,
) -> ClearedOrderList:
    """Every order of the participant in the intervals of the period, as it cleared."""
    require_participant(service, principal, participant)
    lo, hi = period(service, start_s, end_s)
    hi, nxt = page(lo, hi)
    items = [
        ClearedOrderOut(
            interval_start_s=interval_id,
            order_id=str(o["order_id"]),
            bus=str(o["bus"]),
            side=str(o["side"]),
            accepted_wh=int(o["accepted_wh"]),
            price_per_kwh=int(o["price"]),
            amount_units=int(o["amount"]),
        )
        for interval_id, result in results_between(service.runtime.store, lo, hi)
        for o in result.get("orders") or []
        if o.get("participant") == participant
    ]
    return ClearedOrderList(participant=participant, next_start_s=nxt, items=items)


@router.get("/trades", response_model=TradeList, summary="the participant's trades")
def participant_trades(
    service: SiteDep,
    principal: PrincipalDep,
    participant: ParticipantPath,
    start_s: StartS = None,
    end_s: EndS = None,
) -> TradeList:
    """Every trade the participant is seller or buyer of in the period."""
    require_participant(service, principal, participant)
    lo, hi = period(service, start_s, end_s)
    hi, nxt = page(lo, hi)
    items = [
        trade_out(t)
        for _, result in results_between(service.runtime.store, lo, hi)
        for t in result.get("trades") or []
        if participant in {t.get("seller"), t.get("buyer")}
    ]
    return TradeList(participant=participant, next_start_s=nxt, items=items)


@router.get("/readings", response_model=ReadingPage, summary="the participant's readings")
def participant_readings(
    service: SiteDep,
    principal: PrincipalDep,
    participant: ParticipantPath,
    start_s: StartS = None,
    end_s: EndS = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,13}$")] = None,
) -> ReadingPage:
    """The readings of the participant's devices taken in the period, newest first."""
    require_participant(service, principal, participant)
    lo, hi = period(service, start_s, end_s)
    rows, nxt = reading_page(
        service.runtime.store,
        participant,
        start_s=lo,
        end_s=hi,
        limit=limit,
        cursor=None if cursor is None else int(cursor),
    )
    return ReadingPage(
        participant=participant, items=[ReadingOut(**r) for r in rows], next_cursor=nxt
    )


@router.get("/balances", response_model=BalancesOut, summary="wallet, escrow and rewards")
def participant_balances(
    service: SiteDep, principal: PrincipalDep, participant: ParticipantPath
) -> BalancesOut:
    """The participant's wallet, escrow and unclaimed rewards on the chain now."""
    require_participant(service, principal, participant)
    address = _address(service, participant)
    client = service.runtime.client
    with service.chain_lock:
        wallet = int(client.token_balance(address))
        escrow = int(client.escrow_balance(address))
        rewards = int(client.unclaimed_rewards(address)) if client.reward_token is not None else 0
    return BalancesOut(
        participant=participant,
        address=address,
        wallet_units=wallet,
        escrow_units=escrow,
        unclaimed_reward_units=rewards,
    )


@router.get("/escrow", response_model=EscrowOut, summary="escrow and what backs new bids")
def participant_escrow(
    service: SiteDep, principal: PrincipalDep, participant: ParticipantPath
) -> EscrowOut:
    """Escrow, a pending withdrawal, charges not yet on-chain, debt, and what is left free."""
    require_participant(service, principal, participant)
    address = _address(service, participant)
    client = service.runtime.client
    with service.chain_lock:
        states = client.account_states([address])
    state = next(iter(states.values()), None)
    escrow = 0 if state is None else int(state.escrow)
    available = 0 if state is None else int(state.available)
    pending_withdrawal = 0 if state is None else int(state.pending_withdrawal)
    store = service.runtime.store
    owed = sum(
        -int(amount)
        for pending in store.pending_settlements()
        for account, amount in pending.batch.get("amounts", [])
        if account == participant and int(amount) < 0
    )
    debt = int(store.outstanding_debts().get(participant, 0))
    return EscrowOut(
        participant=participant,
        address=address,
        escrow_units=escrow,
        available_units=available,
        pending_withdrawal_units=pending_withdrawal,
        owed_pending_units=owed,
        outstanding_debt_units=debt,
        free_units=max(0, available - owed - max(0, debt)),
    )


@router.get("/debts", response_model=DebtsOut, summary="carried balance and its history")
def participant_debts(
    service: SiteDep,
    principal: PrincipalDep,
    participant: ParticipantPath,
    start_s: StartS = None,
    end_s: EndS = None,
) -> DebtsOut:
    """The participant's outstanding balance (+ = owes COMMUNITY) and changes in the period."""
    require_participant(service, principal, participant)
    lo, hi = period(service, start_s, end_s)
    store = service.runtime.store
    rows = [r for r in store.debt_rows(participant) if lo <= int(r["interval_id"]) < hi]
    return DebtsOut(
        participant=participant,
        outstanding_units=int(store.outstanding_debts().get(participant, 0)),
        items=[
            DebtRow(
                interval_start_s=int(r["interval_id"]),
                balance_before_units=int(r["balance_before"]),
                balance_after_units=int(r["balance_after"]),
            )
            for r in rows
        ],
    )


@router.get("/earnings", response_model=EarningsOut, summary="settlement lines and totals")
def participant_earnings(
    service: SiteDep,
    principal: PrincipalDep,
    participant: ParticipantPath,
    start_s: StartS = None,
    end_s: EndS = None,
) -> EarningsOut:
    """The participant's settlement line of every interval settled in the period, and totals."""
    require_participant(service, principal, participant)
    lo, hi = period(service, start_s, end_s)
    hi, nxt = page(lo, hi)
    items: list[EarningRow] = []
    for row in settlements_between(service.runtime.store, lo, hi):
        batch = row["batch"] or {}
        rewards = {str(p): int(wh) for p, wh in batch.get("rewards") or []}
        for line in batch.get("lines") or []:
            if line.get("participant") != participant:
                continue
            items.append(
                EarningRow(
                    interval_start_s=int(row["interval_id"]),
                    cleared_buy_wh=int(line["cleared_buy_wh"]),
                    cleared_sell_wh=int(line["cleared_sell_wh"]),
                    metered_import_wh=int(line["metered_import_wh"]),
                    metered_export_wh=int(line["metered_export_wh"]),
                    imbalance_wh=int(line["imbalance_wh"]),
                    trade_amount_units=int(line["trade_amount"]),
                    imbalance_amount_units=int(line["imbalance_amount"]),
                    net_amount_units=int(line["net_amount"]),
                    reward_wh=rewards.get(participant, 0),
                    metered=bool(line.get("metered", True)),
                    settlement_state=str(row["state"]),
                    unverified=str(line.get("unverified", "")),
                    penalty_units=int(line.get("penalty_amount", 0)),
                )
            )
    return EarningsOut(
        participant=participant,
        next_start_s=nxt,
        net_amount_units=sum(i.net_amount_units for i in items),
        trade_amount_units=sum(i.trade_amount_units for i in items),
        imbalance_amount_units=sum(i.imbalance_amount_units for i in items),
        reward_wh=sum(i.reward_wh for i in items),
        items=items,
    )

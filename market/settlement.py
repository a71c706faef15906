"""Settlement arithmetic: cleared trades plus metered imbalance -> one zero-sum batch.

Rules (exact integers, DESIGN.md section 3):

1. **Trades.** For every trade the buyer pays ``ceil(wh * buyer_price / 1000)`` and the seller
   receives ``floor(wh * seller_price / 1000)``; the difference (rounding remainder and
   congestion rent) goes to :data:`~market.domain.COMMUNITY`.
2. **Imbalance.** A participant's metered net import over the interval (sum over its devices
   of the counter deltas) is compared with its cleared net purchase. Taking more than cleared
   (consumed more, or produced less) is bought from :data:`~market.domain.GRID` at the import
   tariff; taking less is sold to the grid at the export tariff. The same ceil/floor rule
   applies, the remainder again to the community.
3. **Unmetered.** A participant without a complete reading (a device MISSING at the start or end
   of the interval) settles its trades as cleared and no imbalance; the line is flagged
   ``metered=False`` with the reason, so the operator can settle it by hand. Nothing is guessed.

The batch's ``amounts`` are signed per account (positive = credit, negative = debit) and sum to
zero, to the unit; ``rewards_wh`` is each producer's verified local delivery (the basis of the
reward token, :func:`verified_local_wh`); its ``batch_id`` is the content hash of everything the
chain records and is the idempotency key of the settlement transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from market.domain import (
    COMMUNITY,
    GRID,
    ClearingResult,
    ParticipantId,
    SettlementBatch,
    SettlementLine,
    Side,
    trade_to_dict,
)
from market.errors import SettlementError
from market.merkle import merkle_root
from market.units import TokenUnits, Wh, buyer_payment, seller_revenue


@dataclass(frozen=True, slots=True, kw_only=True)
class MeteredEnergy:
    """A participant's metered energy over one interval [Wh], summed over its devices.

    ``import_wh`` is energy taken from the microgrid, ``export_wh`` energy fed into it, both
    >= 0. ``complete`` is False when a device's counters were missing; ``reason`` says which.
    """

    participant: ParticipantId
    import_wh: Wh
    export_wh: Wh
    complete: bool = True
    reason: str = ""

    def __post_init__(self) -> None:
        if self.import_wh < 0 or self.export_wh < 0:
            msg = (
                f"{self.participant}: metered energy must be >= 0 Wh, got import "
                f"{self.import_wh}, export {self.export_wh} (did a counter go backwards?)"
            )
            raise SettlementError(msg)


def verified_local_wh(
    result: ClearingResult, lines: Iterable[SettlementLine]
) -> tuple[tuple[ParticipantId, Wh], ...]:
    """Energy each producer verifiably delivered inside the microgrid [Wh] (the reward basis).

    ``min(energy it sold to other participants, its metered export)``: only trades between
    participants count (not sales to the grid), and only what the meters confirm. An
    unmetered participant earns nothing for the interval.
    """
    sold_locally: dict[ParticipantId, int] = defaultdict(int)
    system = {GRID, COMMUNITY}
    for t in result.trades:
        if t.seller not in system and t.buyer not in system:
            sold_locally[t.seller] += t.energy_wh
    out: list[tuple[ParticipantId, Wh]] = []
    for line in lines:
        wh = min(sold_locally.get(line.participant, 0), line.metered_export_wh)
        if line.metered and wh > 0:
            out.append((line.participant, Wh(wh)))
    return tuple(sorted(out))


def settle(
    result: ClearingResult,
    metered: Mapping[ParticipantId, MeteredEnergy],
    *,
    import_price: int,
    export_price: int,
    reading_leaves: Iterable[Mapping[str, Any]] = (),
) -> SettlementBatch:
    """Settle a cleared interval against metered energy.

    Parameters
    ----------
    result : ClearingResult
        The interval's clearing (its trades and accepted orders).
    metered : mapping of ParticipantId to MeteredEnergy
        Metered energy per participant; a participant with cleared orders but no entry is
        settled as unmetered (flagged).
    import_price, export_price : int
        Grid tariffs for imbalance [token base units / kWh].
    reading_leaves : iterable of mapping
        The readings behind ``metered`` as JSON objects, hashed into ``readings_root``.

    Returns
    -------
    SettlementBatch
        Zero-sum amounts per account and the Merkle roots.
    """
    amounts: dict[ParticipantId, int] = defaultdict(int)
    trade_amount: dict[ParticipantId, int] = defaultdict(int)
    for t in result.trades:
        amounts[t.buyer] -= t.buyer_amount
        amounts[t.seller] += t.seller_amount
        amounts[COMMUNITY] += t.buyer_amount - t.seller_amount
        trade_amount[t.buyer] -= t.buyer_amount
        trade_amount[t.seller] += t.seller_amount

    bought: dict[ParticipantId, int] = defaultdict(int)
    sold: dict[ParticipantId, int] = defaultdict(int)
    for o in result.orders:
        (bought if o.side is Side.BUY else sold)[o.participant] += o.accepted_wh

    participants = sorted(set(bought) | set(sold) | set(metered))
    lines: list[SettlementLine] = []
    for p in participants:
        m = metered.get(p)
        cleared_net = bought[p] - sold[p]
        if m is None or not m.complete:
            reason = "no reading" if m is None else m.reason
            lines.append(
                SettlementLine(
                    participant=p,
                    cleared_buy_wh=Wh(bought[p]),
                    cleared_sell_wh=Wh(sold[p]),
                    metered_import_wh=Wh(0 if m is None else m.import_wh),
                    metered_export_wh=Wh(0 if m is None else m.export_wh),
                    imbalance_wh=Wh(0),
                    trade_amount=TokenUnits(trade_amount[p]),
                    imbalance_amount=TokenUnits(0),
                    metered=False,
                    reason=f"unmetered, settled as cleared: {reason}",
                )
            )
            continue
        imbalance = (m.import_wh - m.export_wh) - cleared_net
        imb_amount = 0
        if imbalance > 0:
            pay = buyer_payment(imbalance, import_price)
            get = seller_revenue(imbalance, import_price)
            amounts[p] -= pay
            amounts[GRID] += get
            amounts[COMMUNITY] += pay - get
            imb_amount = -pay
        elif imbalance < 0:
            pay = buyer_payment(-imbalance, export_price)
            get = seller_revenue(-imbalance, export_price)
            amounts[GRID] -= pay
            amounts[p] += get
            amounts[COMMUNITY] += pay - get
            imb_amount = get
        lines.append(
            SettlementLine(
                participant=p,
                cleared_buy_wh=Wh(bought[p]),
                cleared_sell_wh=Wh(sold[p]),
                metered_import_wh=m.import_wh,
                metered_export_wh=m.export_wh,
                imbalance_wh=Wh(imbalance),
                trade_amount=TokenUnits(trade_amount[p]),
                imbalance_amount=TokenUnits(imb_amount),
                metered=True,
            )
        )
    return SettlementBatch(
        interval=result.interval,
        rewards_wh=verified_local_wh(result, lines),
        lines=tuple(lines),
        amounts=tuple((acct, TokenUnits(amt)) for acct, amt in sorted(amounts.items()) if amt != 0),
        trades_root=merkle_root(trade_to_dict(t) for t in result.trades),
        readings_root=merkle_root(reading_leaves),
        import_price=import_price,
        export_price=export_price,
    )

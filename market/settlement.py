"""Settlement: a cleared interval and its two reading snapshots -> one zero-sum batch.

``settle(result, start_readings, end_readings, tariffs)`` applies these rules (exact
integers, DESIGN.md section 3):

1. **Trades.** For every trade the buyer pays ``ceil(wh * buyer_price / 1000)`` and the seller
   receives ``floor(wh * seller_price / 1000)``; the difference (rounding remainder and
   congestion rent) goes to :data:`~market.domain.COMMUNITY`.
2. **Metering.** Each participant's metered energy is read off its devices' counters between
   the two snapshots (:func:`market.metering.metered_energy`): its connection-point meters
   where it has any (so a PV inverter behind a net meter is not counted twice), else the sum
   of its generation, load and storage devices.
3. **Imbalance.** A participant's metered net import (import minus export) is compared with
   its cleared net purchase. Taking more than cleared (consumed more, or produced less) is
   bought from :data:`~market.domain.GRID` at the import tariff; taking less is sold to the
   grid at the export tariff (:class:`~market.domain.Tariffs`). The same ceil/floor rule
   applies, the remainder again to the community.
4. **Unmetered.** A participant without a complete reading (a counting device MISSING at the
   start or end of the interval) settles its trades as cleared and no imbalance; the line is flagged
   ``metered=False`` with the reason, so the operator can settle it by hand. Nothing is guessed.
5. **Roots.** ``trades_root`` is the Merkle root (:mod:`market.merkle`) of the trades
   (:func:`~market.domain.trade_to_dict`), ``readings_root`` that of the devices' boundary
   readings (:func:`~market.codec.reading_leaves`).

The batch's ``amounts`` are signed per account (positive = credit, negative = debit) and sum to
zero, to the unit; ``rewards_wh`` is each producer's verified local delivery (the basis of the
reward token, :func:`verified_local_wh`); its ``batch_id`` is the content hash of everything the
chain records and is the idempotency key of the settlement transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from market.codec import reading_leaves, reading_to_dict
from market.domain import (
    COMMUNITY,
    GRID,
    ClearingResult,
    DeviceId,
    MeterReading,
    ParticipantId,
    SettlementBatch,
    SettlementLine,
    Side,
    Tariffs,
    trade_to_dict,
)
from market.merkle import merkle_root
from market.metering import Meter, MeteredEnergy, metered_energy
from market.units import TokenUnits, Wh, buyer_payment, seller_revenue


def verified_local_wh(
    result: ClearingResult, lines: Iterable[SettlementLine]
) -> tuple[tuple[ParticipantId, Wh], ...]:
    """Energy each producer verifiably delivered inside the microgrid [Wh] (the reward basis).

    ``min(energy it sold to other participants, its metered export)``: only trades between
    participants count (not sales to the grid), and only what the meters confirm. An
    unmetered participant earns nothing for the interval.

    Parameters
    ----------
    result : ClearingResult
        The interval's clearing (its trades).
    lines : iterable of SettlementLine
        The interval's settlement lines (metered export [Wh], whether metered).

    Returns
    -------
    tuple of (ParticipantId, Wh)
        Producers with a positive verified delivery [Wh], sorted by participant.
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
    start_readings: Mapping[DeviceId, MeterReading],
    end_readings: Mapping[DeviceId, MeterReading],
    tariffs: Tariffs,
    *,
    meters: Mapping[ParticipantId, Sequence[Meter]] | None = None,
) -> SettlementBatch:
    """Settle a cleared interval against the meters (the module's rules).

    Parameters
    ----------
    result : ClearingResult
        The interval's clearing (its trades and accepted orders).
    start_readings, end_readings : mapping of DeviceId to MeterReading
        The snapshots at the interval's start and end (cumulative counters [Wh]).
    tariffs : Tariffs
        The grid's prices for imbalance [token units / kWh].
    meters : mapping of ParticipantId to sequence of Meter, optional
        Which devices meter each participant and their roles (the site's configuration);
        a listed participant without a complete reading of its counting devices is settled
        as unmetered. Default: the devices the snapshots show, by their readings'
        participant, all summed.

    Returns
    -------
    SettlementBatch
        Zero-sum amounts per account, one line per participant and the Merkle roots.

    Raises
    ------
    SettlementError
        If the batch would not sum to zero (a bug, never an input).
    """
    metered = metered_energy(start_readings, end_readings, meters)
    leaves = reading_leaves(
        [reading_to_dict(r) for r in start_readings.values()],
        [reading_to_dict(r) for r in end_readings.values()],
    )
    return _settle_metered(result, metered, tariffs, merkle_root(leaves))


def _settle_metered(
    result: ClearingResult,
    metered: Mapping[ParticipantId, MeteredEnergy],
    tariffs: Tariffs,
    readings_root: bytes,
) -> SettlementBatch:
    """Rules 1, 3 and 4 on metered energy; ``readings_root`` goes into the batch as given."""
    import_price, export_price = tariffs.import_price, tariffs.export_price
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
        readings_root=readings_root,
        import_price=import_price,
        export_price=export_price,
    )


__all__ = ["settle", "verified_local_wh"]

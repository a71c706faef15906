"""Settlement: a cleared interval and its two reading snapshots -> one zero-sum batch.

``settle(result, start_readings, end_readings, tariffs)`` applies these rules (exact
integers, DESIGN.md section 3):

1. **Trades.** For every trade the buyer pays its ``buyer_amount`` and the seller receives its
   ``seller_amount``: each order's exact amount (``ceil(accepted_wh * price / 1000)`` for a
   buyer, ``floor(...)`` for a seller, one rounding per order or GRID/COMMUNITY leg) split over
   its trades by largest remainder (:mod:`market.matching`); the difference (rounding remainder
   and congestion rent) goes to :data:`~market.domain.COMMUNITY`.

   1a. **Community fee** (governed by the members, issue 16; 0 unless voted). Each sell
   order pays ``floor(sum of its local trades' buyer amounts * fee_bps / 10,000)``, at most
   its revenue from them, out of the seller's revenue to COMMUNITY (:func:`community_fees`).
   Trades with GRID or COMMUNITY pay none. The seller's line shows it as ``fee_amount``.
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

   4b. **Unverified** (issue 17: signed readings). A participant with a counting device read
   ``UNVERIFIED`` at either boundary (its signature, key, sequence or time failed, or it is
   unsigned where the site requires signatures; or, with ``reading_signatures =
   "required"``, any counting device read without a signature) gains nothing by it. Energy it
   fed in through such a device is **not delivered**: that export counts 0. What it took
   counts **at least as cleared**: ``max(its devices' import, its cleared purchase)``, the
   unverified counters only ever raising it. The imbalance rule (3) then settles the
   difference, so a sale not backed by verified readings is bought back from GRID at the
   import tariff. On top it pays a **penalty** to COMMUNITY of ``unverified_penalty_bps`` of
   its cleared purchase valued at the import tariff, ``ceil(cleared_buy_wh * import_price
   * bps / 10^7)`` (:func:`unverified_penalty`), shown as the line's ``penalty_amount``,
   and it earns **no reward**. This rule comes before rule 4: a failed verification is never
   settled as cleared. The line's ``unverified`` says why.

   4c. **Unsigned, signing optional.** With ``reading_signatures = "optional"`` a participant
   metered by unsigned (legacy) meters is settled by them as usual, but its line says
   ``unverified`` and it earns no reward. Sites settled before signed readings (no policy,
   ``""``) count every OK reading as verified, as they always did.
5. **Roots.** ``trades_root`` is the Merkle root (:mod:`market.merkle`) of the trades
   (:func:`~market.domain.trade_to_dict`), ``readings_root`` that of the devices' boundary
   readings (:func:`~market.codec.reading_leaves`).

The batch's ``amounts`` are signed per account (positive = credit, negative = debit) and sum to
zero, to the unit; ``rewards_wh`` is each producer's verified local delivery (the basis of the
reward token, :func:`verified_local_wh`); its ``batch_id`` is the content hash of everything the
chain records and is the idempotency key of the settlement transaction.

**Debts** (:func:`apply_debts`, applied by the controller when it records the intent, before the
batch id is fixed). The contract reverts a whole settlement if one account's debit exceeds its
escrow, so one participant who cannot pay would block everyone's settlement, tick after tick.
Instead no account is debited more than it can pay, and the rest is carried:

6. **Carried balances.** Each account (not COMMUNITY) carries a signed debt balance [token
   units]: positive = it owes COMMUNITY, negative = COMMUNITY owes it. A batch first settles the
   balance: the account's amount becomes ``amount - balance`` (a debt is collected from its
   credit in the batch or from its escrow; a withheld credit is paid) and COMMUNITY's moves the
   other way.
7. **Cap.** Where that would debit an account more than its ``available`` funds (the
   contract's ``available`` less the debits of intents not yet on-chain), the debit is capped
   at ``available`` and the shortfall becomes its new balance (a debt).
8. **COMMUNITY fronts the shortfall.** The shortfalls are taken from COMMUNITY's amount (its
   credit is reduced, or it is debited): COMMUNITY pays the debtor's counterparties now and is
   owed the debt. It is the account built to absorb the market's losses (it also takes every
   rounding remainder), and its reserve is the operator's to size.
9. **If COMMUNITY cannot front it either** (its debit would exceed its own ``available``), it
   is capped too and the rest is withheld from the accounts credited in the batch (GRID and
   participants alike), in proportion to their credits, by largest remainder (ties to the
   earlier account): each withheld unit becomes a negative balance, paid by a later batch once
   COMMUNITY has the funds.

Everything stays in integers: the batch sums to zero to the unit, no capped account is debited
more than its ``available``, and for every account ``new amount - amount == after - before``
while COMMUNITY's changes by the sum of ``before - after`` (:class:`~market.domain.DebtChange`).
An account's outstanding balance is the ``after`` of the latest batch that changed it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from market.codec import reading_leaves, reading_to_dict
from market.domain import (
    COMMUNITY,
    GRID,
    ClearingResult,
    DebtChange,
    DeviceId,
    MeterReading,
    ParticipantId,
    SettlementBatch,
    SettlementLine,
    Side,
    Tariffs,
    trade_to_dict,
)
from market.errors import InvalidQuantity, SettlementError
from market.governance import BPS, community_fee
from market.merkle import merkle_root
from market.metering import Meter, MeteredEnergy, metered_energy
from market.units import TokenUnits, Wh, buyer_payment, seller_revenue

SIGNATURE_POLICIES = ("", "optional", "required")
"""``reading_signatures`` values: none (before signed readings), optional, required."""


def unverified_penalty(cleared_buy_wh: int, import_price: int, penalty_bps: int) -> int:
    """Rule 4b's penalty [token units]: ``ceil(cleared_buy_wh * import_price * bps / 10^7)``.

    ``penalty_bps`` of the participant's cleared purchase [Wh] valued at the import tariff
    [token units / kWh]: 10,000 bps charge the purchase once more at the grid's price.

    Raises
    ------
    InvalidQuantity
        ``penalty_bps`` outside 0..10,000, or a negative energy or price.
    """
    if not 0 <= penalty_bps <= BPS:
        msg = f"unverified_penalty_bps must be 0..{BPS}, got {penalty_bps}"
        raise InvalidQuantity(msg)
    if cleared_buy_wh < 0 or import_price < 0:
        msg = f"penalty of {cleared_buy_wh} Wh at {import_price} per kWh: both must be >= 0"
        raise InvalidQuantity(msg)
    return -(-cleared_buy_wh * import_price * penalty_bps // (1000 * BPS))


def verified_local_wh(
    result: ClearingResult, lines: Iterable[SettlementLine]
) -> tuple[tuple[ParticipantId, Wh], ...]:
    """Energy each producer verifiably delivered inside the microgrid [Wh] (the reward basis).

    ``min(energy it sold to other participants, its metered export)``: only trades between
    participants count (not sales to the grid), and only what the meters confirm. An
    unmetered or unverified participant (rules 4, 4b, 4c) earns nothing for the interval.

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
        if line.metered and not line.unverified and wh > 0:
            out.append((line.participant, Wh(wh)))
    return tuple(sorted(out))


def settle(
    result: ClearingResult,
    start_readings: Mapping[DeviceId, MeterReading],
    end_readings: Mapping[DeviceId, MeterReading],
    tariffs: Tariffs,
    *,
    meters: Mapping[ParticipantId, Sequence[Meter]] | None = None,
    community_fee_bps: int = 0,
    reading_signatures: str = "",
    unverified_penalty_bps: int = 0,
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
    community_fee_bps : int
        The community fee in force (rule 1a) [basis points], 0 to 10,000.
    reading_signatures : str
        The site's signing policy (:data:`SIGNATURE_POLICIES`; rules 4b, 4c).
    unverified_penalty_bps : int
        Rule 4b's penalty [basis points], 0 to 10,000.

    Returns
    -------
    SettlementBatch
        Zero-sum amounts per account, one line per participant and the Merkle roots.

    Raises
    ------
    SettlementError
        If the batch would not sum to zero (a bug, never an input), or the policy is unknown.
    InvalidQuantity
        A fee or penalty rate outside 0..10,000.
    """
    metered = metered_energy(start_readings, end_readings, meters)
    leaves = reading_leaves(
        [reading_to_dict(r) for r in start_readings.values()],
        [reading_to_dict(r) for r in end_readings.values()],
    )
    return _settle_metered(
        result,
        metered,
        tariffs,
        merkle_root(leaves),
        community_fee_bps,
        reading_signatures=reading_signatures,
        unverified_penalty_bps=unverified_penalty_bps,
    )


def _unverified_reason(m: MeteredEnergy, reading_signatures: str) -> tuple[str, bool]:
    """Why ``m`` is not verified, and whether that is a failure (rule 4b) or unsigned (4c)."""
    if m.unverified:
        return m.unverified, True
    if not m.unsigned or not reading_signatures:
        return "", False
    devices = ", ".join(m.unsigned)
    if reading_signatures == "required":
        return f"{devices}: not signed (the site requires signed readings)", True
    return f"{devices}: unsigned readings (signing optional)", False


def _settle_metered(
    result: ClearingResult,
    metered: Mapping[ParticipantId, MeteredEnergy],
    tariffs: Tariffs,
    readings_root: bytes,
    community_fee_bps: int = 0,
    *,
    reading_signatures: str = "",
    unverified_penalty_bps: int = 0,
) -> SettlementBatch:
    """Rules 1 to 4c on metered energy; ``readings_root`` goes into the batch as given."""
    if reading_signatures not in SIGNATURE_POLICIES:
        msg = f"reading_signatures must be one of {SIGNATURE_POLICIES}, got {reading_signatures!r}"
        raise SettlementError(msg)
    unverified_penalty(0, 0, unverified_penalty_bps)  # checks the rate
    import_price, export_price = tariffs.import_price, tariffs.export_price
    amounts: dict[ParticipantId, int] = defaultdict(int)
    trade_amount: dict[ParticipantId, int] = defaultdict(int)
    for t in result.trades:
        amounts[t.buyer] -= t.buyer_amount
        amounts[t.seller] += t.seller_amount
        amounts[COMMUNITY] += t.buyer_amount - t.seller_amount
        trade_amount[t.buyer] -= t.buyer_amount
        trade_amount[t.seller] += t.seller_amount
    fees = community_fees(result, community_fee_bps)
    for seller, fee in fees.items():
        amounts[seller] -= fee
        amounts[COMMUNITY] += fee

    bought: dict[ParticipantId, int] = defaultdict(int)
    sold: dict[ParticipantId, int] = defaultdict(int)
    for o in result.orders:
        (bought if o.side is Side.BUY else sold)[o.participant] += o.accepted_wh

    participants = sorted(set(bought) | set(sold) | set(metered))
    lines: list[SettlementLine] = []
    for p in participants:
        m = metered.get(p)
        cleared_net = bought[p] - sold[p]
        why, failed = ("", False) if m is None else _unverified_reason(m, reading_signatures)
        penalty = 0
        if m is not None and failed:  # rule 4b: export not delivered, import at least cleared
            taken = max(m.import_wh, bought[p])
            fed = m.export_wh - m.unverified_export_wh
            if m.unsigned and reading_signatures == "required" and not m.unverified:
                fed = 0
            penalty = unverified_penalty(bought[p], import_price, unverified_penalty_bps)
            amounts[p] -= penalty
            amounts[COMMUNITY] += penalty
            m = MeteredEnergy(
                participant=p,
                import_wh=Wh(taken),
                export_wh=Wh(fed),
                counted=m.counted,
                unverified=m.unverified,
            )
        elif m is None or not m.complete:
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
                    fee_amount=TokenUnits(fees.get(p, 0)),
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
                reason=(
                    f"unverified: export not counted, import at least as cleared, penalty {penalty}"
                    if failed
                    else ""
                ),
                fee_amount=TokenUnits(fees.get(p, 0)),
                unverified=why,
                penalty_amount=TokenUnits(penalty),
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
        community_fee_bps=community_fee_bps,
        reading_signatures=reading_signatures,
        unverified_penalty_bps=unverified_penalty_bps if reading_signatures else 0,
    )


def community_fees(result: ClearingResult, fee_bps: int) -> dict[ParticipantId, int]:
    """Rule 1a: each seller's community fee on its local sales [token units].

    Per sell order, over its trades with another participant (not :data:`GRID`, not
    :data:`COMMUNITY`): ``floor(sum of the buyers' amounts * fee_bps / 10,000)``
    (:func:`market.governance.community_fee`), and never more than the order's revenue
    from those trades, so selling never costs a seller money. Sellers without such
    trades pay nothing and are left out.

    Parameters
    ----------
    result : ClearingResult
        The interval's clearing.
    fee_bps : int
        The community fee in force [basis points], 0 to 10,000.

    Returns
    -------
    dict of ParticipantId to int
        Fee per seller [token units], only where it is > 0.

    Raises
    ------
    InvalidQuantity
        If ``fee_bps`` is outside 0..10,000.
    """
    community_fee(0, fee_bps)  # checks the rate even when nothing is traded
    buyer_sums: dict[tuple[ParticipantId, str], int] = defaultdict(int)
    revenues: dict[tuple[ParticipantId, str], int] = defaultdict(int)
    for t in result.trades:
        if {t.seller, t.buyer} & {GRID, COMMUNITY}:
            continue
        key = (t.seller, str(t.seller_order))
        buyer_sums[key] += t.buyer_amount
        revenues[key] += t.seller_amount
    fees: dict[ParticipantId, int] = defaultdict(int)
    for key, gross in sorted(buyer_sums.items()):
        seller = key[0]
        fee = min(community_fee(gross, fee_bps), revenues[key])
        if fee > 0:
            fees[seller] += fee
    return dict(fees)


def carry_debts(
    amounts: Mapping[ParticipantId, int],
    available: Mapping[ParticipantId, int],
    outstanding: Mapping[ParticipantId, int],
) -> tuple[dict[ParticipantId, int], tuple[DebtChange, ...]]:
    """Settle carried balances and cap debits at what each account can pay (rules 6-9).

    Parameters
    ----------
    amounts : mapping of ParticipantId to int
        The batch's signed amounts [token units], + = credit, summing to zero.
    available : mapping of ParticipantId to int
        What each account can be debited [token units], >= 0. An account not in it is not
        capped (its debit is taken as payable); COMMUNITY is capped only if it is in it.
    outstanding : mapping of ParticipantId to int
        Each account's carried balance before the batch [token units] (+ = it owes
        COMMUNITY, - = COMMUNITY owes it); absent = 0. COMMUNITY carries none.

    Returns
    -------
    amounts : dict of ParticipantId to int
        The new signed amounts [token units], summing to zero, zeros dropped, sorted.
    changes : tuple of DebtChange
        Every account whose balance was or is now non-zero, sorted by account.

    Raises
    ------
    SettlementError
        If ``amounts`` do not sum to zero, an ``available`` is negative, or COMMUNITY has an
        outstanding balance.
    """
    total = sum(amounts.values())
    if total != 0:
        msg = f"amounts sum to {total}, not 0"
        raise SettlementError(msg)
    negative = sorted(p for p, a in available.items() if a < 0)
    if negative:
        msg = f"available funds must be >= 0, got {available[negative[0]]} for {negative[0]}"
        raise SettlementError(msg)
    if outstanding.get(COMMUNITY, 0):
        msg = "COMMUNITY carries no debt balance"
        raise SettlementError(msg)
    others = {p for p, a in amounts.items() if a} | {p for p, b in outstanding.items() if b}
    accounts = sorted(others - {COMMUNITY})
    before = {p: outstanding.get(p, 0) for p in accounts}
    want = {p: amounts.get(p, 0) - before[p] for p in accounts}  # rule 6
    community = amounts.get(COMMUNITY, 0) + sum(before.values())
    after = dict.fromkeys(accounts, 0)
    for p in accounts:  # rules 7 and 8
        cap = available.get(p)
        if cap is not None and want[p] < -cap:
            after[p] = -cap - want[p]
            community -= after[p]
            want[p] = -cap
    community_cap = available.get(COMMUNITY)
    if community_cap is not None and community < -community_cap:  # rule 9
        withheld = -community_cap - community
        community = -community_cap
        credited = [p for p in accounts if want[p] > 0]
        shares = _largest_remainder(withheld, [want[p] for p in credited])
        for p, share in zip(credited, shares, strict=True):
            want[p] -= share
            after[p] -= share
    new = {p: a for p, a in want.items() if a}
    if community:
        new[COMMUNITY] = community
    changes = tuple(
        DebtChange(account=p, before=TokenUnits(before[p]), after=TokenUnits(after[p]))
        for p in accounts
        if before[p] or after[p]
    )
    return dict(sorted(new.items())), changes


def _largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Share ``total`` over positive ``weights`` pro rata, in integers (``total <= sum``).

    Each share is ``floor(total * w / sum)``; the units still missing go one each to the
    largest remainders, ties to the earlier item. No share exceeds its weight.
    """
    whole = sum(weights)
    if total == 0 or whole == 0:
        return [0] * len(weights)
    parts = [divmod(total * w, whole) for w in weights]
    shares = [q for q, _ in parts]
    missing = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-parts[i][1], i))
    for i in order[:missing]:
        shares[i] += 1
    return shares


def apply_debts(
    batch: SettlementBatch,
    available: Mapping[ParticipantId, int],
    outstanding: Mapping[ParticipantId, int],
) -> SettlementBatch:
    """The batch with carried balances settled and debits capped (rules 6-9).

    Apply it once, when the settlement intent is recorded: the result has another
    ``batch_id`` than ``batch`` whenever a balance changes (its ``debts`` are part of the
    id), and must not change after it is recorded.

    Parameters
    ----------
    batch : SettlementBatch
        The interval's batch from :func:`settle` (no debts yet).
    available : mapping of ParticipantId to int
        What each account can be debited [token units], >= 0; absent = not capped.
    outstanding : mapping of ParticipantId to int
        Each account's carried balance [token units] (+ = owes COMMUNITY); absent = 0.

    Returns
    -------
    SettlementBatch
        ``batch`` itself when no balance is carried in or out; else a copy with new
        ``amounts`` and its ``debts``. Lines, rewards and roots are unchanged.

    Raises
    ------
    SettlementError
        As :func:`carry_debts`, or if ``batch`` already carries debts.
    """
    if batch.debts:
        msg = f"batch for {batch.interval.label()} already carries debts"
        raise SettlementError(msg)
    amounts, changes = carry_debts(dict(batch.amounts), available, outstanding)
    if not changes:
        return batch
    return SettlementBatch(
        interval=batch.interval,
        lines=batch.lines,
        amounts=tuple((p, TokenUnits(a)) for p, a in amounts.items()),
        trades_root=batch.trades_root,
        readings_root=batch.readings_root,
        import_price=batch.import_price,
        export_price=batch.export_price,
        rewards_wh=batch.rewards_wh,
        debts=changes,
    )


__all__ = ["apply_debts", "carry_debts", "settle", "verified_local_wh"]

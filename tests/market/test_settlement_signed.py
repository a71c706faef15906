"""Settlement of signed readings (issue 17): nobody gains by failing verification.

Rule 4b of ``market.settlement``: a participant with a counting device read UNVERIFIED has
its export taken as not delivered, its import as at least what it bought, pays a penalty of
``unverified_penalty_bps`` of its purchase at the import tariff, and earns no reward. Rule
4c: with signing optional, unsigned meters settle as metered but earn no reward. Literal
cases pin each one (among them a seller who would gain by breaking its meter's signature
under the old "settled as cleared" rule); a property holds that breaking a signature never
raises a participant's net amount, for any trades and honest counters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from market_factories import INTERVAL, Snapshot, meter_reading
from test_settlement import PEOPLE, TARIFFS, TRADES, hand_result

from market.codec import batch_from_dict, batch_to_dict
from market.domain import COMMUNITY, GRID, DeviceId, ParticipantId, ReadingQuality
from market.errors import InvalidQuantity, SettlementError
from market.settlement import settle, unverified_penalty
from market.signed_readings import ReadingPayload, new_private_key, sign

ALICE, BOB = ParticipantId("alice"), ParticipantId("bob")
KEY = new_private_key()
IMPORT = TARIFFS.import_price


def readings(
    meters: Mapping[str, tuple[int, int]],
    *,
    unverified: frozenset[str] = frozenset(),
    unsigned: frozenset[str] = frozenset(),
) -> tuple[Snapshot, Snapshot]:
    """Signed start/end snapshots of ``participant -> (import Wh, export Wh)`` meters.

    A participant in ``unverified`` has its end reading UNVERIFIED (its counters as read,
    honest); one in ``unsigned`` is read OK without signatures.
    """
    start: Snapshot = {}
    end: Snapshot = {}
    for participant, (imp, exp) in meters.items():
        device = DeviceId(f"{participant}-meter")
        pair = []
        for at, (i, e) in (
            (INTERVAL.start, (1000, 2000)),
            (INTERVAL.end, (1000 + imp, 2000 + exp)),
        ):
            r = meter_reading(device, participant, at, i, e)
            if participant not in unsigned:
                payload = ReadingPayload(
                    device_id=device,
                    seq=len(pair) + 1,
                    measured_at_ms=int(at.timestamp() * 1000),
                    import_wh_total=i,
                    export_wh_total=e,
                    p_w=0,
                )
                r = dataclasses.replace(r, signed=sign(KEY, payload))
            pair.append(r)
        if participant in unverified:
            pair[1] = dataclasses.replace(
                pair[1],
                quality=ReadingQuality.UNVERIFIED,
                reason="signature not valid under the device's key",
            )
        start[device], end[device] = pair
    return start, end


def net(batch_amounts: tuple[tuple[ParticipantId, int], ...], who: ParticipantId) -> int:
    return dict(batch_amounts).get(who, 0)


def test_a_seller_who_breaks_its_signature_delivers_nothing_and_gains_nothing() -> None:
    # bob sold alice 1,000 Wh but delivered only 400 (his meter says so)
    result = hand_result([(BOB, ALICE, 1_000, 100_000, 0)])
    honest = readings({ALICE: (1_000, 0), BOB: (0, 400)})
    broken = readings({ALICE: (1_000, 0), BOB: (0, 400)}, unverified=frozenset({BOB}))
    kw = {"reading_signatures": "required", "unverified_penalty_bps": 2_000}
    paid_honest = net(settle(result, *honest, TARIFFS, **kw).amounts, BOB)
    batch = settle(result, *broken, TARIFFS, **kw)
    paid_broken = net(batch.amounts, BOB)
    # honest: paid for 1,000 Wh, buys the 600 Wh short back at the import tariff
    assert paid_honest == 100_000 - (-(-600 * IMPORT // 1000))
    # broken: none of his 400 Wh counts, all 1,000 Wh are bought back
    assert paid_broken == 100_000 - (-(-1_000 * IMPORT // 1000))
    assert paid_broken < paid_honest
    # under the old rule (an unmetered seller is settled as cleared) he would have gained
    missing = readings({ALICE: (1_000, 0), BOB: (0, 400)})
    dead = dict(missing[1])
    dead[DeviceId("bob-meter")] = meter_reading(
        "bob-meter", "bob", INTERVAL.end, 0, 0, ReadingQuality.MISSING
    )
    as_cleared = net(settle(result, missing[0], dead, TARIFFS, **kw).amounts, BOB)
    assert as_cleared == 100_000 > paid_honest
    (line,) = [ln for ln in batch.lines if ln.participant == BOB]
    assert line.unverified == "bob-meter: signature not valid under the device's key"
    assert line.metered_export_wh == 0
    assert line.penalty_amount == 0  # he bought nothing
    assert batch.rewards_wh == ()  # alice bought; bob earns no reward


def test_a_buyer_with_unverified_readings_is_charged_as_cleared_plus_the_penalty() -> None:
    result = hand_result([(BOB, ALICE, 1_000, 100_000, 0)])
    kw = {"reading_signatures": "required", "unverified_penalty_bps": 2_000}
    penalty = unverified_penalty(1_000, IMPORT, 2_000)
    assert penalty == -(-1_000 * IMPORT * 2_000 // 10**7) == 60_001
    # alice's (unverified) counters claim she took only 300 Wh: she still pays for 1,000
    low = settle(
        result, *readings({ALICE: (300, 0), BOB: (0, 1_000)}, unverified={ALICE}), TARIFFS, **kw
    )
    assert net(low.amounts, ALICE) == -100_000 - penalty
    # and if they show more than she bought, she pays the rest at the import tariff too
    high = settle(
        result, *readings({ALICE: (1_500, 0), BOB: (0, 1_000)}, unverified={ALICE}), TARIFFS, **kw
    )
    assert net(high.amounts, ALICE) == -100_000 - (-(-500 * IMPORT // 1000)) - penalty
    honest = settle(result, *readings({ALICE: (300, 0), BOB: (0, 1_000)}), TARIFFS, **kw)
    assert net(honest.amounts, ALICE) > net(low.amounts, ALICE)
    (line,) = [ln for ln in low.lines if ln.participant == ALICE]
    assert line.penalty_amount == penalty
    assert line.net_amount == net(low.amounts, ALICE)
    assert sum(a for _, a in low.amounts) == 0
    assert dict(low.amounts)[COMMUNITY] >= penalty  # the penalty goes to COMMUNITY
    # bob delivered, verified: he earns his reward
    assert low.rewards_wh == ((BOB, 1_000),)
    stored = batch_to_dict(low)
    assert stored["reading_signatures"] == "required"
    assert batch_from_dict(stored, INTERVAL) == low


def test_rewards_only_for_verified_energy_and_unsigned_meters_under_each_policy() -> None:
    result = hand_result([(BOB, ALICE, 1_000, 100_000, 0)])
    unsigned = readings({ALICE: (1_000, 0), BOB: (0, 1_000)}, unsigned=frozenset({BOB}))
    # no policy (sites settled before signed readings): every OK reading counts, as before
    before = settle(result, *unsigned, TARIFFS)
    assert before.rewards_wh == ((BOB, 1_000),)
    assert "reading_signatures" not in batch_to_dict(before)
    # optional: settled by the meter, no reward, said so
    optional = settle(result, *unsigned, TARIFFS, reading_signatures="optional")
    assert optional.rewards_wh == ()
    assert net(optional.amounts, BOB) == net(before.amounts, BOB)
    (line,) = [ln for ln in optional.lines if ln.participant == BOB]
    assert line.unverified == "bob-meter: unsigned readings (signing optional)"
    assert line.penalty_amount == 0
    # required: an unsigned meter vouches for nothing (rule 4b)
    required = settle(result, *unsigned, TARIFFS, reading_signatures="required")
    assert required.rewards_wh == ()
    assert net(required.amounts, BOB) == 100_000 - (-(-1_000 * IMPORT // 1000))
    # signed and verified: rewarded under either policy
    signed = readings({ALICE: (1_000, 0), BOB: (0, 1_000)})
    for policy in ("optional", "required"):
        assert settle(result, *signed, TARIFFS, reading_signatures=policy).rewards_wh == (
            (BOB, 1_000),
        )


def test_a_bad_policy_or_penalty_is_refused() -> None:
    result = hand_result([(BOB, ALICE, 1_000, 100_000, 0)])
    snaps = readings({ALICE: (1_000, 0), BOB: (0, 1_000)})
    with pytest.raises(SettlementError, match="reading_signatures"):
        settle(result, *snaps, TARIFFS, reading_signatures="sometimes")
    with pytest.raises(InvalidQuantity, match="unverified_penalty_bps"):
        settle(result, *snaps, TARIFFS, reading_signatures="required", unverified_penalty_bps=-1)


@settings(max_examples=150)
@given(
    TRADES,
    st.dictionaries(
        st.sampled_from(PEOPLE), st.tuples(st.integers(0, 20_000), st.integers(0, 20_000))
    ),
    st.sampled_from(PEOPLE),
    st.integers(0, 10_000),
)
def test_breaking_a_signature_never_raises_a_participants_net_amount(
    rows: list[tuple[ParticipantId, ParticipantId, int, int, int]],
    meters: dict[ParticipantId, tuple[int, int]],
    who: ParticipantId,
    bps: int,
) -> None:
    result = hand_result(rows)
    meters = {**meters, who: meters.get(who, (0, 0))}
    kw = {"reading_signatures": "required", "unverified_penalty_bps": bps}
    honest = settle(result, *readings(meters), TARIFFS, **kw)
    broken = settle(result, *readings(meters, unverified=frozenset({who})), TARIFFS, **kw)
    assert sum(a for _, a in broken.amounts) == 0
    assert net(broken.amounts, who) <= net(honest.amounts, who)
    assert who not in dict(broken.rewards_wh)
    # the others settle exactly as before (the difference goes to GRID and COMMUNITY)
    for p in PEOPLE:
        if p != who:
            assert net(broken.amounts, p) == net(honest.amounts, p)
    assert {GRID, COMMUNITY} >= {
        p for p in dict(broken.amounts).keys() | dict(honest.amounts).keys()
        if net(broken.amounts, p) != net(honest.amounts, p)
    } - {who}  # fmt: skip

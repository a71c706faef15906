"""Metered energy from counter readings: what each participant took from and fed into the grid.

The rule (DESIGN.md section 3), for one interval and one participant:

* the interval's energy is read off each device's cumulative counters at the interval's two
  boundaries: ``import_wh = Σ (end.import_wh_total - start.import_wh_total)`` over the
  participant's devices, the same for ``export_wh``;
* a participant is **complete** only if every one of its devices has an OK reading at both
  boundaries and no counter went backwards. Otherwise the participant is incomplete, with a
  reason per device in the order the devices are listed (``"; "``-joined), and settlement
  treats it as unmetered: settled as cleared, flagged (:mod:`market.settlement`). A
  participant without any device is incomplete too: its energy cannot be verified.

The energy of the devices that did read is still summed, so an operator settling an
incomplete participant by hand sees what was measured. Nothing is estimated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from market.domain import DeviceId, MeterReading, ParticipantId, ReadingQuality
from market.errors import SettlementError
from market.units import Wh


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


def _meters_in(
    *snapshots: Mapping[DeviceId, MeterReading],
) -> dict[ParticipantId, tuple[DeviceId, ...]]:
    """Each participant with a reading in any snapshot, and its devices sorted by id."""
    devices: dict[ParticipantId, set[DeviceId]] = {}
    for snapshot in snapshots:
        for reading in snapshot.values():
            devices.setdefault(reading.participant, set()).add(reading.device_id)
    return {p: tuple(sorted(ds)) for p, ds in devices.items()}


def metered_energy(
    start: Mapping[DeviceId, MeterReading],
    end: Mapping[DeviceId, MeterReading],
    meters: Mapping[ParticipantId, Sequence[DeviceId]] | None = None,
) -> dict[ParticipantId, MeteredEnergy]:
    """Counter deltas per participant between two boundary snapshots (the module's rule).

    Parameters
    ----------
    start, end : mapping of DeviceId to MeterReading
        The readings at the interval's start and end (counters [Wh]).
    meters : mapping of ParticipantId to sequence of DeviceId, optional
        Which devices meter each participant (the site's configuration). A listed device
        without a reading at either end makes its participant incomplete, and so does an
        empty list. Default: every device read at either end, under its reading's
        participant.

    Returns
    -------
    dict of ParticipantId to MeteredEnergy
        One entry per participant of ``meters``.
    """
    roster = _meters_in(start, end) if meters is None else meters
    out: dict[ParticipantId, MeteredEnergy] = {}
    for participant, devices in roster.items():
        imp = exp = 0
        problems: list[str] = []
        if not devices:
            problems.append("no metering device: energy cannot be verified")
        for d in devices:
            a, b = start.get(d), end.get(d)
            if a is None or b is None:
                problems.append(f"{d}: no reading at the interval's start or end")
                continue
            if a.quality is not ReadingQuality.OK or b.quality is not ReadingQuality.OK:
                problems.append(f"{d}: reading {a.quality.value}/{b.quality.value}")
                continue
            d_imp = b.import_wh_total - a.import_wh_total
            d_exp = b.export_wh_total - a.export_wh_total
            if d_imp < 0 or d_exp < 0:
                problems.append(f"{d}: counter went backwards (meter reset?)")
                continue
            imp += d_imp
            exp += d_exp
        out[participant] = MeteredEnergy(
            participant=participant,
            import_wh=Wh(imp),
            export_wh=Wh(exp),
            complete=not problems,
            reason="; ".join(problems),
        )
    return out


__all__ = ["MeteredEnergy", "metered_energy"]

"""Metered energy from counter readings: what each participant took from and fed into the grid.

The rule (DESIGN.md section 3), for one interval and one participant:

* each device's energy is read off its cumulative counters at the interval's two
  boundaries: ``end.import_wh_total - start.import_wh_total``, the same for ``export_wh``;
* **which devices count** follows their roles (:class:`~market.domain.MeterRole`). A
  participant with a ``connection_point`` meter is metered by its connection-point meters
  only (summed if it has several): they see its net exchange with the microgrid, so the
  devices behind them (a PV inverter, a battery) are not counted a second time. A
  participant without one is metered by the sum of its ``generation``, ``load`` and
  ``storage`` devices, each signed by its own counters (a PV inverter's export counter, a
  load's import counter, a battery's both);
* a counting device read **UNVERIFIED** at either boundary (its signed reading failed its
  checks, :mod:`market.signed_readings`) makes its participant *unverified*, with the reason
  (:attr:`MeteredEnergy.unverified`): its import still counts (taken as read, never less
  than 0), its export is kept apart (:attr:`MeteredEnergy.unverified_export_wh`) because it
  vouches for no delivery (:mod:`market.settlement`, rule 4b). Devices read OK without a
  signature are listed in :attr:`MeteredEnergy.unsigned`;
* a participant is **complete** only if every device that counts has an OK (or
  UNVERIFIED) reading at both boundaries and no verified counter went backwards. Otherwise
  the participant is incomplete, with a reason per device in the order the devices are
  listed (``"; "``-joined), and settlement treats it as unmetered: settled as cleared,
  flagged (:mod:`market.settlement`). A participant without any device is incomplete too:
  its energy cannot be verified. A device that does not count (a PV inverter behind a
  connection-point meter) does not make its participant incomplete.

The energy of the counting devices that did read is still summed, so an operator settling
an incomplete participant by hand sees what was measured. Nothing is estimated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from market.domain import DeviceId, MeterReading, MeterRole, ParticipantId, ReadingQuality
from market.errors import SettlementError
from market.units import Wh

OK = ReadingQuality.OK


@dataclass(frozen=True, slots=True)
class Meter:
    """A device that meters a participant, and what it measures.

    Parameters
    ----------
    device_id : DeviceId
        The device.
    role : MeterRole
        ``connection_point``, ``generation``, ``load`` or ``storage`` (the string values are
        accepted and stored as the enum member).

    Raises
    ------
    SettlementError
        An unknown role.
    """

    device_id: DeviceId
    role: MeterRole

    def __post_init__(self) -> None:
        try:
            role = MeterRole(self.role)
        except ValueError:
            known = ", ".join(r.value for r in MeterRole)
            msg = f"{self.device_id}: unknown meter role {self.role!r}; known: {known}"
            raise SettlementError(msg) from None
        object.__setattr__(self, "role", role)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeteredEnergy:
    """A participant's metered energy over one interval [Wh], from its counting devices.

    ``import_wh`` is energy taken from the microgrid, ``export_wh`` energy fed into it, both
    >= 0. ``complete`` is False when a counting device's counters were missing; ``reason``
    says which. ``counted`` names the devices whose counters make the figures (the
    connection-point meters where there are any, else every device; see the module's rule).
    """

    participant: ParticipantId
    import_wh: Wh
    export_wh: Wh
    complete: bool = True
    reason: str = ""
    counted: tuple[DeviceId, ...] = ()
    unverified: str = ""
    """Why some counting device's readings are not verified (``""``: none is UNVERIFIED)."""
    unverified_export_wh: Wh = Wh(0)  # noqa: RUF009 - a NewType: the int 0
    """The part of ``export_wh`` read from UNVERIFIED devices [Wh]."""
    unsigned: tuple[DeviceId, ...] = ()
    """Counting devices read OK without a signed reading at either boundary."""

    def __post_init__(self) -> None:
        if self.import_wh < 0 or self.export_wh < 0:
            msg = (
                f"{self.participant}: metered energy must be >= 0 Wh, got import "
                f"{self.import_wh}, export {self.export_wh} (did a counter go backwards?)"
            )
            raise SettlementError(msg)


def counting_devices(meters: Sequence[Meter]) -> tuple[DeviceId, ...]:
    """The devices whose counters meter a participant (the module's rule).

    Parameters
    ----------
    meters : sequence of Meter
        The participant's devices and their roles, in site-file order.

    Returns
    -------
    tuple of DeviceId
        Its ``connection_point`` meters if it has any, else all of its devices, in the
        given order.
    """
    at_connection = tuple(m.device_id for m in meters if m.role is MeterRole.CONNECTION_POINT)
    return at_connection or tuple(m.device_id for m in meters)


def _devices_in(
    *snapshots: Mapping[DeviceId, MeterReading],
) -> dict[ParticipantId, tuple[DeviceId, ...]]:
    """Each participant with a reading in any snapshot, and its devices sorted by id."""
    devices: dict[ParticipantId, set[DeviceId]] = {}
    for snapshot in snapshots:
        for reading in snapshot.values():
            devices.setdefault(reading.participant, set()).add(reading.device_id)
    return {p: tuple(sorted(ds)) for p, ds in devices.items()}


def _energy_of(
    participant: ParticipantId,
    devices: Sequence[DeviceId],
    start: Mapping[DeviceId, MeterReading],
    end: Mapping[DeviceId, MeterReading],
) -> MeteredEnergy:
    """The summed counter deltas of ``devices`` [Wh], with every device's problem named."""
    imp = exp = unverified_exp = 0
    problems: list[str] = []
    unverified: list[str] = []
    unsigned: list[DeviceId] = []
    if not devices:
        problems.append("no metering device: energy cannot be verified")
    for d in devices:
        a, b = start.get(d), end.get(d)
        if a is None or b is None:
            problems.append(f"{d}: no reading at the interval's start or end")
            continue
        if ReadingQuality.UNVERIFIED in (a.quality, b.quality):
            why = [r.reason or r.quality.value for r in (a, b) if r.quality is not OK]
            unverified.append(f"{d}: {'; '.join(dict.fromkeys(why))}")
            if ReadingQuality.MISSING not in (a.quality, b.quality):  # both hold counters
                imp += max(0, b.import_wh_total - a.import_wh_total)
                unverified_exp += max(0, b.export_wh_total - a.export_wh_total)
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
        if a.signed is None or b.signed is None:
            unsigned.append(d)
    return MeteredEnergy(
        participant=participant,
        import_wh=Wh(imp),
        export_wh=Wh(exp + unverified_exp),
        complete=not problems,
        reason="; ".join(problems),
        counted=tuple(devices),
        unverified="; ".join(unverified),
        unverified_export_wh=Wh(unverified_exp),
        unsigned=tuple(unsigned),
    )


def metered_energy(
    start: Mapping[DeviceId, MeterReading],
    end: Mapping[DeviceId, MeterReading],
    meters: Mapping[ParticipantId, Sequence[Meter]] | None = None,
) -> dict[ParticipantId, MeteredEnergy]:
    """Counter deltas per participant between two boundary snapshots (the module's rule).

    Parameters
    ----------
    start, end : mapping of DeviceId to MeterReading
        The readings at the interval's start and end (counters [Wh]).
    meters : mapping of ParticipantId to sequence of Meter, optional
        Which devices meter each participant and their roles (the site's configuration).
        A counting device without a reading at either end makes its participant
        incomplete, and so does an empty list. Default: every device read at either end,
        under its reading's participant, all summed (readings carry no roles, so none is
        taken as a connection-point meter).

    Returns
    -------
    dict of ParticipantId to MeteredEnergy
        One entry per participant of ``meters``.
    """
    if meters is None:
        roster = _devices_in(start, end)
    else:
        roster = {p: counting_devices(ms) for p, ms in meters.items()}
    return {p: _energy_of(p, devices, start, end) for p, devices in roster.items()}


__all__ = ["Meter", "MeteredEnergy", "counting_devices", "metered_energy"]

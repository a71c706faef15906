"""Several simulators started, advanced and stopped together."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Self

from adapters.modbus.simulators.base import DeviceSimulator


class SimulatedSite:
    """Several simulators started, advanced and stopped together.

    Parameters
    ----------
    simulators : Mapping[str, DeviceSimulator]
        Simulators by device id.

    Examples
    --------
    >>> from adapters.modbus.simulators import PVInverterSim, constant_profile
    >>> site = SimulatedSite({"pv1": PVInverterSim(5000, constant_profile(3000))})
    >>> with site:
    ...     sorted(site.ports)
    ['pv1']
    """

    def __init__(self, simulators: Mapping[str, DeviceSimulator]) -> None:
        self.simulators = dict(simulators)

    def __getitem__(self, device_id: str) -> DeviceSimulator:
        return self.simulators[device_id]

    @property
    def ports(self) -> dict[str, int]:
        """TCP port of each simulator."""
        return {name: sim.port for name, sim in self.simulators.items()}

    def start(self) -> dict[str, int]:
        """Start every simulator (all or none); return their ports."""
        try:
            for sim in self.simulators.values():
                sim.start()
        except BaseException:
            self.stop()
            raise
        return self.ports

    def stop(self) -> None:
        """Stop every simulator (idempotent)."""
        for sim in self.simulators.values():
            sim.stop()

    def advance(self, to: datetime) -> None:
        """Advance every simulator to ``to``.

        Parameters
        ----------
        to : datetime
            New simulated time (timezone-aware).
        """
        for sim in self.simulators.values():
            sim.advance(to)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["SimulatedSite"]

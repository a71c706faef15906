"""What the dashboard's pages and routes read: map, grid state, verification, alerts, status.

One :class:`Dashboard` per application (``app.state.dashboard``), next to the
:class:`~controller.service.Service`. It keeps what is costly and does not change (the
feeder map's geometry, computed once from the site's pandapower model) and what the pages
ask for again and again (the alerts, at most every :data:`ALERTS_TTL_S` seconds; the outcome
of each interval's last full verification). Nothing here writes to the store or the chain.

Roles: the map's geometry and each interval's bus voltages, branch loadings and nodal
prices are public figures (every signed-in role sees them, as it sees an interval's prices);
participant markers and the trades drawn as flows follow :func:`~controller.api.deps.may_read`
(a prosumer sees its own); alerts and verifications are for operators and auditors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from controller.api.deps import may_read
from controller.api.queries import audit_row, interval_row, latest_result_interval
from controller.auth import Principal, Role
from controller.errors import ControllerError
from controller.service import Service
from market.domain import Interval, utc_label

log = logging.getLogger("peergrid.dashboard")

ALERTS_TTL_S: Final = 5.0
"""How long a computed list of alerts is reused [s] (each evaluation reads the chain)."""


@dataclass(eq=False)
class Dashboard:
    """The dashboard's read model of one service (see the module docstring).

    Parameters
    ----------
    service : Service
        The site's service.
    monotonic : callable
        A monotonic clock [s] for the caches (tests inject one).
    """

    service: Service
    monotonic: Callable[[], float] = time.monotonic
    _map: dict[str, Any] | None = field(default=None, repr=False)
    _map_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _verified: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    _alerts: tuple[float, list[dict[str, Any]]] | None = field(default=None, repr=False)
    _reclearer: Any = field(default=None, repr=False)
    _verify_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- the feeder map ---------------------------------------------------------------------

    def feeder_map(self) -> dict[str, Any]:
        """The grid's map geometry (:func:`grid_models.layout.feeder_map_json`), built once.

        Raises
        ------
        DashboardError
            The service runs without a grid.
        """
        with self._map_lock:
            if self._map is None:
                from grid_models.layout import feeder_map, feeder_map_json  # noqa: PLC0415

                grid = self.service.runtime.grid
                if grid is None:
                    msg = "this service has no grid model"
                    raise DashboardError(msg)
                self._map = feeder_map_json(feeder_map(grid))
            return self._map

    def warm(self) -> None:
        """Build what the pages will ask for first (the map's geometry), ahead of them."""
        try:
            self.feeder_map()
        except DashboardError as exc:  # no grid: the map answers 404 when asked
            log.info("no feeder map to prepare: %s", exc)

    def map_for(self, principal: Principal) -> dict[str, Any]:
        """The map's geometry and the participants ``principal`` may see, by bus position."""
        geometry = self.feeder_map()
        where = {name: i for i, name in enumerate(geometry["buses"]["name"])}
        markers = [
            {"participant": str(p.id), "bus": str(p.bus), "at": where.get(str(p.bus))}
            for p in self.service.site.participants
            if may_read(principal, str(p.id))
        ]
        return {**geometry, "participants": markers}

    def grid_state(self, interval_id: int | None, principal: Principal) -> dict[str, Any] | None:
        """An interval's state on the map: voltages, loadings, prices, flows (or ``None``).

        Parameters
        ----------
        interval_id : int or None
            The interval's start [Unix s]; ``None``: the latest interval with a result.
        principal : Principal
            Who asks (the trades drawn as flows are the ones it may see).

        Returns
        -------
        dict or None
            ``interval_start_s``, ``status``, ``reason``, ``vm_pu`` (bus name -> p.u.),
            ``loading_pct`` (branch id -> %), ``prices_per_kwh`` (bus name -> token units
            per kWh), ``flows`` (``seller_bus``, ``buyer_bus``, ``energy_wh``),
            ``ac_converged``, ``violations``, ``has_ac_detail`` (whether per-bus results
            were stored); ``None`` when there is no such interval.
        """
        store = self.service.runtime.store
        if interval_id is None:
            interval_id = latest_result_interval(store)
            if interval_id is None:
                return None
        row = interval_row(store, interval_id)
        if row is None:
            return None
        result: dict[str, Any] = row["result"] or {}
        record_row = audit_row(store, interval_id)
        record = (record_row or {}).get("record") or {}
        check = record.get("ac_check") or result.get("ac_check") or {}
        vm = {str(b["name"]): float(b["vm_pu"]) for b in check.get("buses") or []}
        loading = {str(b["branch"]): float(b["loading_pct"]) for b in check.get("branches") or []}
        flows: dict[tuple[str, str], int] = {}
        for trade in result.get("trades") or []:
            if not (may_read(principal, trade["seller"]) or may_read(principal, trade["buyer"])):
                continue
            key = (str(trade.get("seller_bus") or ""), str(trade.get("buyer_bus") or ""))
            if key[0] and key[1] and key[0] != key[1]:
                flows[key] = flows.get(key, 0) + int(trade["energy_wh"])
        return {
            "interval_start_s": interval_id,
            "interval_start": utc_label(interval_id),
            "status": str(row["status"]),
            "reason": str(row["reason"] or ""),
            "vm_pu": vm,
            "loading_pct": loading,
            "prices_per_kwh": {str(k): int(v) for k, v in (result.get("prices") or {}).items()},
            "flows": [
                {"seller_bus": s, "buyer_bus": b, "energy_wh": wh}
                for (s, b), wh in sorted(flows.items())
            ],
            "ac_converged": bool(check.get("converged", False)),
            "violations": [str(v) for v in check.get("violations") or []],
            "vm_min_pu": check.get("min_vm_pu"),
            "vm_max_pu": check.get("max_vm_pu"),
            "has_ac_detail": bool(vm),
        }

    # -- the interval now -------------------------------------------------------------------

    def phase(self) -> dict[str, Any]:
        """The interval now: its phase, the next gate closure and the seconds to it.

        Returns
        -------
        dict
            ``now_s``, ``delivering_start_s``/``delivering_start`` (the interval now) and its
            ``phase`` (:func:`controller.history.interval_phase`), ``interval_start_s``/
            ``interval_start`` (the next interval whose orders are collected),
            ``gate_closure_s`` [Unix s], ``seconds_to_gate_closure``, ``paused``.
        """
        from controller.history import interval_phase  # noqa: PLC0415

        service = self.service
        now = interval_phase(
            service.runtime.store,
            interval_s=service.site.interval_s,
            gate_closure_s=service.runtime.store.gate_closure_in_force(
                service.site.gate_closure_s, service.site.interval_s
            ),
            now=service.now(),
        )
        return {
            "now_s": now["now_s"],
            "delivering_start_s": now["interval_start_s"],
            "delivering_start": utc_label(now["interval_start_s"]),
            "phase": now["phase"],
            "interval_start_s": now["next_interval_start_s"],
            "interval_start": utc_label(now["next_interval_start_s"]),
            "gate_closure_s": now["gate_closure_s"],
            "seconds_to_gate_closure": now["seconds_to_gate_closure"],
            "paused": service.controls.paused is not None,
        }

    def recent(self, back: int, ahead: int = 0) -> list[dict[str, Any]]:
        """History rows around now, newest first (:func:`controller.history.history_rows`).

        Parameters
        ----------
        back : int
            Intervals before the one delivering now.
        ahead : int
            Intervals after it (a site with a gate closure clears the next one early).
        """
        from controller.history import history_rows  # noqa: PLC0415

        length = self.service.site.interval_s
        now = Interval.containing(self.service.now(), length).interval_id
        rows = history_rows(
            self.service.runtime.store, now - back * length, now + (ahead + 1) * length
        )
        return rows[::-1]

    # -- alerts -----------------------------------------------------------------------------

    def alerts(self) -> list[dict[str, Any]]:
        """The site's alerts now (:func:`controller.alerts.site_alerts`), cached briefly."""
        at = self.monotonic()
        if self._alerts is not None and at - self._alerts[0] < ALERTS_TTL_S:
            return self._alerts[1]
        from controller import alerts  # noqa: PLC0415

        service = self.service
        facts = None
        if service.runtime.settler is not None:
            with service.chain_lock:
                facts = alerts.chain_facts(service.runtime)
        found = alerts.site_alerts(
            service.runtime.store, service.site, now=service.now(), chain=facts
        )
        listed = [a.to_dict() for a in found]
        self._alerts = (at, listed)
        return listed

    # -- verification -----------------------------------------------------------------------

    def verify(self, interval_id: int) -> dict[str, Any] | None:
        """Verify one interval's record in full: hashes, roots, the chain, a re-clear.

        Returns
        -------
        dict or None
            ``interval_start_s``, ``verified`` (bool), ``problems`` (list of str),
            ``accepted``, ``checked_at_s`` (the service's clock [Unix s]); ``None`` when
            the interval has no record.
        """
        from controller.audit import Reclearer, verify_records  # noqa: PLC0415

        service = self.service
        store = service.runtime.store
        row = audit_row(store, interval_id)
        if row is None:
            return None
        if self._reclearer is None:
            self._reclearer = Reclearer(store.grid_json)
        chain = None
        domain = None
        if service.runtime.settler is not None:
            chain = LockedChainView(service.runtime.client, service.chain_lock)
            domain = (service.intake.chain_id, service.intake.verifying_contract)
        # one verification at a time (they share the re-clearer); the chain lock is held only
        # for each read, never through the re-clear, so orders and the cycle are not held up
        with self._verify_lock:
            summary = verify_records(
                [row],
                reclear=service.runtime.cycle.reclear,
                chain=chain,
                tables=store,
                reclear_anchored=self._reclearer,
                signing_domain=domain,
            )
        outcome = {
            "interval_start_s": interval_id,
            "verified": not summary["problems"] and summary["verified"] == 1,
            "problems": [str(p) for p in summary["problems"]],
            "accepted": [str(a) for a in summary.get("accepted") or []],
            "chain_checked": chain is not None,
            "checked_at_s": int(service.now().timestamp()),
        }
        self._verified[interval_id] = outcome
        return outcome

    def last_verification(self, interval_id: int) -> dict[str, Any] | None:
        """The outcome of the last :meth:`verify` of ``interval_id`` by this service, if any."""
        return self._verified.get(interval_id)


@dataclass(frozen=True)
class LockedChainView:
    """The audit's read-only view of the Settlement contract, each read under ``lock``.

    Parameters
    ----------
    client : ChainView
        The service's chain client (:class:`controller.audit.ChainView`).
    lock : threading.RLock
        The service's chain lock (the cycle and the intake share the client).
    """

    client: Any
    lock: Any

    def settled_batch(self, interval_id: int) -> Any:  # noqa: ANN401 - the client's SettledBatch
        """What the contract stores for ``interval_id`` (:meth:`ChainView.settled_batch`)."""
        with self.lock:
            return self.client.settled_batch(interval_id)

    def settled_entries(self, interval_id: int) -> tuple[tuple[str, int, int], ...]:
        """What was settled for ``interval_id`` (:meth:`ChainView.settled_entries`)."""
        with self.lock:
            return tuple(self.client.settled_entries(interval_id))


class DashboardError(ControllerError):
    """Raised for what the dashboard cannot show (e.g. a service without a grid)."""


def is_reader_of_all(principal: Principal) -> bool:
    """Whether ``principal`` reads every participant's data (operator or auditor)."""
    return principal.role is not Role.PROSUMER

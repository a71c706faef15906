"""The references :mod:`benchmarks.clearing` measures PeerGrid against (benchmark code only).

* :func:`raw_highs` - the very LP PeerGrid built (:func:`market.clearing.lp.build_lp`'s
  arrays) solved by a fresh ``highspy.Highs()`` with PeerGrid's own options; only ``run()``
  is timed.
* :func:`opf_reference` - pandapower's AC OPF (``pp.runopp``) of the same orders as
  controllable loads (bids) and sgens (offers) with linear costs, the upstream grid as a
  controllable ext_grid priced at the tariffs, run in a forked child with a timeout.
* :func:`merit_order` - the welfare optimum of the orders without a network (sorted
  curves), optionally with the upstream grid as an unlimited seller at the import tariff and
  buyer at the export tariff.
* :func:`pymarket_run` - pymarket 0.7.6's mechanisms (no network) on the same orders.
* :func:`one_bus_network` - a single-bus :class:`~market.network.NetworkModel` every grid bus
  name maps onto, to clear the same book without a network.

Money: prices are token base units per kWh as in PeerGrid; every welfare returned here is in
*currency* (token units / 1e6), energies in kWh.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

CURRENCY_PER_TOKEN = 1e-6


# --------------------------------------------------------------------------- raw HiGHS


def raw_highs(
    lp: Any, solver: str = "choose", time_limit_s: float = 60.0
) -> tuple[float, str, float]:
    """Solve PeerGrid's LP with a fresh ``highspy.Highs()``: (run seconds, status, objective).

    Same options as :func:`market.clearing.solve.solve_lp` (``threads=1``, ``solver``,
    ``time_limit``, no output); only ``run()`` is timed.
    """
    from market.clearing.options import ClearingOptions
    from market.clearing.solve import highs_for

    # the production path's HiGHS set-up (same options), with the full LP's bounds
    options = ClearingOptions(time_limit_s=time_limit_s, solver=solver)
    h = highs_for(lp, options, lp.col_lower, lp.col_upper)
    started = time.perf_counter()
    h.run()
    elapsed = time.perf_counter() - started
    status = h.modelStatusToString(h.getModelStatus())
    return elapsed, status, float(h.getInfo().objective_function_value)


# --------------------------------------------------------------------------- merit order


def merit_order(
    bids: list[tuple[float, float]],
    offers: list[tuple[float, float]],
    import_price: float | None = None,
    export_price: float | None = None,
) -> tuple[float, float]:
    """Welfare-maximising volume of sorted bid/offer curves: (welfare, kWh bought by bidders).

    ``bids``/``offers`` are (kWh, price per kWh). With tariffs, the upstream grid is an
    unlimited seller at ``import_price`` and an unlimited buyer at ``export_price``.
    """
    inf = float("inf")
    b = sorted(((p, q) for q, p in bids), key=lambda t: -t[0])
    s = sorted((p, q) for q, p in offers)
    if import_price is not None:
        s.append((import_price, inf))
        s.sort(key=lambda t: t[0])
    if export_price is not None:
        b.append((export_price, inf))
        b.sort(key=lambda t: -t[0])
    welfare = 0.0
    bought = 0.0
    i = j = 0
    bq = b[0][1] if b else 0.0
    sq = s[0][1] if s else 0.0
    while i < len(b) and j < len(s) and b[i][0] >= s[j][0]:
        q = min(bq, sq)
        if q == inf:  # grid buying from the grid: nothing to gain
            break
        welfare += q * (b[i][0] - s[j][0])
        if b[i][1] != inf:
            bought += q
        bq -= q
        sq -= q
        if bq <= 1e-12:
            i += 1
            bq = b[i][1] if i < len(b) else 0.0
        if sq <= 1e-12:
            j += 1
            sq = s[j][1] if j < len(s) else 0.0
    return welfare, bought


# --------------------------------------------------------------------------- one-bus network


def one_bus_network(names: list[str]) -> Any:
    """A lossless single-bus network; every name in ``names`` is an alias of its one bus."""
    from market.network import NetworkModel

    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0)
    return NetworkModel(
        bus_names=("__market__",),  # type: ignore[arg-type]
        slack=0,
        vm_slack_pu=1.0,
        from_bus=empty_i,
        to_bus=empty_i,
        r_pu=empty_f,
        x_pu=empty_f,
        s_max_va=empty_f,
        branch_names=(),
        branch_kinds=(),
        vm_min_pu=np.array([0.0]),
        vm_max_pu=np.array([2.0]),
        base_p_w=np.zeros(1),
        base_q_var=np.zeros(1),
        v_offset_pu2=np.zeros(1),
        losses=False,
        aliases=tuple((n, 0) for n in names),  # type: ignore[misc]
    )


# --------------------------------------------------------------------------- pandapower OPF


@dataclass
class OpfOutcome:
    """What the OPF reference reports (welfare in currency, energies in kWh)."""

    status: str  # "converged", "not converged", "timeout", "error", "skipped"
    seconds: float = float("nan")
    welfare: float = float("nan")
    bought_kwh: float = float("nan")
    sold_kwh: float = float("nan")
    grid_kwh: float = float("nan")  # market's net exchange with the grid (+ import)
    min_vm_pu: float = float("nan")
    max_vm_pu: float = float("nan")
    max_line_loading: float = float("nan")
    max_trafo_loading: float = float("nan")
    detail: str = ""


def _opf_net(
    grid: Any,
    linear: Any,
    groups: Any,
    import_price: int,
    export_price: int,
    hours: float,
) -> Any:
    """A copy of ``grid.net`` set up for ``pp.runopp``, the order groups as flexible elements."""
    import pandapower as pp

    net = copy.deepcopy(grid.net)
    for table in (net.load, net.sgen, net.gen, net.storage):
        if len(table):
            table["controllable"] = False
    # voltage band: the same effective limits PeerGrid clears against (widened only where the
    # base case already violates them), the slack pinned at its set-point (else the OPF
    # raises it to cut losses)
    lo, hi = linear.effective_limits()
    net.bus["min_vm_pu"] = 0.9
    net.bus["max_vm_pu"] = 1.1
    net.bus.loc[linear.base.bus_index, "min_vm_pu"] = lo
    net.bus.loc[linear.base.bus_index, "max_vm_pu"] = hi
    ext = net.ext_grid.index[net.ext_grid["in_service"].astype(bool)][0]
    vm_slack = float(net.ext_grid.at[ext, "vm_pu"])
    slack_bus = int(net.ext_grid.at[ext, "bus"])
    net.bus.loc[slack_bus, ["min_vm_pu", "max_vm_pu"]] = vm_slack
    line_lim, trafo_lim = linear.effective_loading_limits()
    net.line["max_loading_percent"] = 100.0
    net.line.loc[linear.base.line_index, "max_loading_percent"] = line_lim
    if len(net.trafo):
        net.trafo["max_loading_percent"] = 100.0
        net.trafo.loc[linear.base.trafo_index, "max_loading_percent"] = trafo_lim
    # the upstream grid: controllable, priced at the tariffs around its base-case exchange
    # (what the market trades with the grid is the change of the slack's exchange)
    big = 1e4
    p0 = linear.base.slack_p_w / 1e6
    net.ext_grid["controllable"] = False
    net.ext_grid.loc[ext, ["controllable", "min_p_mw", "max_p_mw", "min_q_mvar", "max_q_mvar"]] = [
        True,
        -big,
        big,
        -big,
        big,
    ]
    per_mwh = 1000 * CURRENCY_PER_TOKEN  # token/kWh -> currency/MWh
    pp.create_pwl_cost(
        net,
        ext,
        "ext_grid",
        [[-big, p0, export_price * per_mwh], [p0, big, import_price * per_mwh]],
    )
    buses = linear.pp_index
    buy = [g for g in groups if g.side.value == "buy"]
    sell = [g for g in groups if g.side.value != "buy"]
    if buy:
        idx = pp.create_loads(
            net,
            buses=[int(buses[g.bus]) for g in buy],
            p_mw=0.0,
            q_mvar=0.0,
            controllable=True,
            min_p_mw=0.0,
            max_p_mw=[g.energy_wh / 1e6 / hours for g in buy],
            min_q_mvar=0.0,
            max_q_mvar=0.0,
            name=[f"bid group {i}" for i in range(len(buy))],
        )
        cost = [-g.limit_price * per_mwh for g in buy]
        pp.create_poly_costs(net, idx, "load", cp1_eur_per_mw=cost)
    if sell:
        idx = pp.create_sgens(
            net,
            buses=[int(buses[g.bus]) for g in sell],
            p_mw=0.0,
            q_mvar=0.0,
            controllable=True,
            min_p_mw=0.0,
            max_p_mw=[g.energy_wh / 1e6 / hours for g in sell],
            min_q_mvar=0.0,
            max_q_mvar=0.0,
            name=[f"offer group {i}" for i in range(len(sell))],
        )
        cost = [g.limit_price * per_mwh for g in sell]
        pp.create_poly_costs(net, idx, "sgen", cp1_eur_per_mw=cost)
    return net


def _opf_child(net: Any, meta: dict[str, Any], conn: Any) -> None:
    """Run ``pp.runopp`` and send back the dispatch figures (in the forked child)."""
    import pandapower as pp

    out: dict[str, Any]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            try:
                pp.runopp(net, calculate_voltage_angles=False, numba=False, verbose=False)
                converged = bool(net.OPF_converged)
            except pp.OPFNotConverged:
                converged = False
            seconds = time.perf_counter() - started
        out = {"status": "converged" if converged else "not converged", "seconds": seconds}
        if converged:
            hours = meta["hours"]
            load = net.res_load["p_mw"].to_numpy()
            sgen = net.res_sgen["p_mw"].to_numpy()
            b_idx, b_price = meta["buy_idx"], meta["buy_price"]
            s_idx, s_price = meta["sell_idx"], meta["sell_price"]
            b_kwh = load[b_idx] * 1000 * hours if len(b_idx) else np.zeros(0)
            s_kwh = sgen[s_idx] * 1000 * hours if len(s_idx) else np.zeros(0)
            grid_kwh = (float(net.res_ext_grid["p_mw"].sum()) - meta["p0_mw"]) * 1000 * hours
            tariff = meta["import"] if grid_kwh > 0 else meta["export"]
            welfare = (
                float(np.dot(b_kwh, b_price)) - float(np.dot(s_kwh, s_price)) - grid_kwh * tariff
            )
            out.update(
                welfare=welfare * CURRENCY_PER_TOKEN,
                bought_kwh=float(b_kwh.sum()),
                sold_kwh=float(s_kwh.sum()),
                grid_kwh=grid_kwh,
                min_vm_pu=float(net.res_bus["vm_pu"].min()),
                max_vm_pu=float(net.res_bus["vm_pu"].max()),
                max_line_loading=float(net.res_line["loading_percent"].max()),
                max_trafo_loading=float(net.res_trafo["loading_percent"].max())
                if len(net.trafo)
                else 0.0,
            )
    except Exception as exc:  # report anything the reference raises
        out = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"[:300]}
        traceback.print_exc()
    conn.send(out)
    conn.close()


def opf_reference(
    grid: Any,
    linear: Any,
    groups: Any,
    import_price: int,
    export_price: int,
    hours: float,
    timeout_s: float,
) -> OpfOutcome:
    """pandapower's AC OPF of ``groups`` (PeerGrid's order groups) on ``grid``.

    Each (bus, side, limit) group of orders is one controllable load (bid) or sgen (offer),
    ``0 <= p <= energy / interval``, ``q = 0`` (unity power factor, as PeerGrid's check), with a
    linear cost of minus (bid) or plus (offer) its limit price. The ext_grid is controllable
    with a piecewise-linear cost: the export tariff below its base-case exchange and the import
    tariff above (so the OPF pays the same tariff terms as PeerGrid), its voltage pinned. Bus,
    line and trafo limits are the effective limits PeerGrid clears against. ``runopp`` runs in a
    forked child killed after ``timeout_s``; only ``runopp`` itself is timed.
    """
    meta: dict[str, Any] = {"hours": hours, "import": import_price, "export": export_price}
    net = _opf_net(grid, linear, groups, import_price, export_price, hours)
    buy = [g for g in groups if g.side.value == "buy"]
    sell = [g for g in groups if g.side.value != "buy"]
    loads = net.load.index[net.load["name"].astype(str).str.startswith("bid group ")]
    sgens = net.sgen.index[net.sgen["name"].astype(str).str.startswith("offer group ")]
    meta["buy_idx"] = np.asarray([net.load.index.get_loc(i) for i in loads], dtype=np.int64)
    meta["sell_idx"] = np.asarray([net.sgen.index.get_loc(i) for i in sgens], dtype=np.int64)
    meta["buy_price"] = np.array([g.limit_price for g in buy], dtype=float)
    meta["sell_price"] = np.array([g.limit_price for g in sell], dtype=float)
    meta["p0_mw"] = linear.base.slack_p_w / 1e6
    ctx = mp.get_context("fork")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_opf_child, args=(net, meta, child_conn), daemon=True)
    started = time.perf_counter()
    proc.start()
    child_conn.close()
    if parent_conn.poll(timeout_s):
        try:
            out = parent_conn.recv()
        except EOFError:
            out = {"status": "error", "detail": "the OPF child died"}
        proc.join(10)
    else:
        proc.kill()
        proc.join(10)
        out = {
            "status": "timeout",
            "seconds": time.perf_counter() - started,
            "detail": f"runopp still running after {timeout_s:.0f} s (killed)",
        }
    return OpfOutcome(**out)


# --------------------------------------------------------------------------- pymarket


def pymarket_version() -> str | None:
    """pymarket's version, or None when it is not installed."""
    try:
        from importlib import metadata

        return metadata.version("pymarket")
    except Exception:
        return None


def pymarket_run(
    orders: list[tuple[float, float, bool]], mechanism: str, seed: int
) -> tuple[float, float, float, str]:
    """Run one pymarket mechanism: (welfare, kWh bought by bidders, seconds, note).

    ``orders`` are (kWh, price per kWh [currency], is_bid); every order is its own user. The
    welfare counts each transaction at the order's own (truthful) limit price, like PeerGrid's.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pymarket as pm

        market = pm.Market()
        for user, (kwh, price, is_bid) in enumerate(orders):
            market.accept_bid(kwh, price, user, is_bid)
        kwargs: dict[str, Any] = {}
        if mechanism in {"muda", "p2p"}:
            kwargs["r"] = np.random.RandomState(seed)
        started = time.perf_counter()
        trans, extra = market.run(mechanism, **kwargs)
        seconds = time.perf_counter() - started
    df = trans.get_df()
    welfare = 0.0
    bought = sold = 0.0
    for bid, qty in zip(df["bid"].to_numpy(), df["quantity"].to_numpy(), strict=True):
        kwh, price, is_bid = orders[int(bid)]
        if is_bid:
            welfare += qty * price
            bought += qty
        else:
            welfare -= qty * price
            sold += qty
    note = ""
    if abs(bought - sold) > 1e-6:
        note = f"unbalanced: {bought:.3f} kWh bought vs {sold:.3f} sold"
    if mechanism == "huang" and not extra:
        note = "no trade: its intersect_stepwise needs a strict crossing of the curves"
    return welfare, bought, seconds, note

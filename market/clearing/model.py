r"""The clearing LP as an algebraic pyomo model: the readable reference for the fast path.

:func:`build_model` states, constraint by constraint, the same LP that :mod:`market.clearing.lp`
builds as sparse arrays for HiGHS (the production path); the engine cross-check tests solve
both and compare. Orders are aggregated into *groups* of equal (bus, side, limit price)
(:mod:`market.clearing.groups`): one variable per group, never one per order and bus. The
network is LinDistFlow on a radial feeder (Baran & Wu 1989, linearised): one row per bus and
per branch.

Notation (interval of :math:`h` hours; energies in kWh, powers in kW and kvar, voltages in
p.u.; the linear network state is :mod:`market.network`'s):

* :math:`a_g \in [0, E_g]` accepted energy of group :math:`g` [kWh] with limit price
  :math:`c_g`; :math:`c` in currency / kWh (token base units x
  :data:`~market.clearing.pricing.CURRENCY_PER_UNIT`);
* :math:`g^{imp}, g^{exp} \ge 0` the market's purchase from / sale to the upstream grid [kWh]
  at the import and export tariffs :math:`c^{imp} \ge c^{exp}`;
* :math:`P_k` active flow on branch :math:`k` from its parent bus :math:`i` to its child bus
  :math:`j` [kW]; its reactive flow is the constant :math:`Q^0_k` [kvar], the base reactive
  load below it (orders are active power at unity power factor), so there is no reactive
  variable and no reactive balance;
* :math:`v_b` squared voltage magnitude [p.u.²] without the AC correction :math:`\delta_b`
  (``v_offset_pu2``);
* :math:`B_b` the inflexible net injection at bus :math:`b` [kW] (positive = export);
* :math:`\alpha_k` [kW], :math:`\beta_k` [-] the branch losses linearised at the operating
  point, :math:`\ell_k \approx \alpha_k + \beta_k P_k` (zero when ``network.losses`` is
  false; :func:`market.network.loss_coefficients`), and
  :math:`L^{base} = \sum_k (\alpha_k + \beta_k P^{base}_k)` the linearised losses at the
  base case's flows :math:`P^{base}` (:func:`market.network.linear_state`);
* :math:`r_k, x_k` branch resistance and reactance [p.u.] on :math:`S = S_{base}` [kVA].

Objective ``welfare`` (currency)::

    max  Σ_{g∈buy} c_g a_g − Σ_{g∈sell} c_g a_g − c^imp g^imp + c^exp g^exp

Constraints::

    balance(b):   h Σ_{k→b} P_k − h Σ_{b→k} (1 + β_k) P_k + Σ_{g∈sell(b)} a_g − Σ_{g∈buy(b)} a_g
                  + [b = slack] (g^imp − g^exp)
                  = −h B_b + h Σ_{b→k} α_k − [b = slack] h (Σ_b' −B_b' + L^base)
    drop(k):      v_j − v_i + 2 r_k P_k / S = −2 x_k Q^0_k / S
    thermal (k):  |P_k| ≤ max(√(S_max,k² − (Q^0_k)²), |P^base_k|)     (variable bounds; none
                                                                      where S_max,k = ∞)
    voltage (b):  V_min,b² − δ_b ≤ v_b ≤ V_max,b² − δ_b,   v_slack = V_slack² (fixed)
    slack_import_max:  g^imp − g^exp ≤ h P_imp,max − h (Σ_b −B_b + L^base)   (if finite)
    slack_export_max:  g^imp − g^exp ≥ −h P_exp,max − h (Σ_b −B_b + L^base)  (if finite)

The slack's physical exchange is the market's grid trade plus the base case's net load and
losses (constants), so inflexible loads and generation shape the flows but are never traded.
The thermal bound is exact for a flow with the constant reactive part :math:`Q^0_k`
(:math:`P_k^2 + (Q^0_k)^2 \le S_{max,k}^2`); a branch the base case already overloads keeps its
base-case flow as the limit (never worsened). The dual of ``balance(b)`` is minus the nodal
price [currency / kWh] (:func:`market.clearing.pricing.nodal_prices`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyomo.environ as pyo
from numpy.typing import NDArray

from market.clearing.groups import OrderGroup, group_orders
from market.clearing.lp import LOOSE, LpData, build_lp
from market.clearing.options import ClearingOptions
from market.clearing.pricing import CURRENCY_PER_UNIT
from market.domain import OrderBook, Side
from market.network import NetworkModel, Sensitivities, linear_state, loss_coefficients


@dataclass(frozen=True, slots=True, eq=False)
class BuiltModel:
    """A built (unsolved) pyomo model and the index data to read it back.

    Parameters
    ----------
    model : pyomo.environ.ConcreteModel
        The LP of the module docstring, with a ``dual`` import suffix.
    groups : tuple of OrderGroup
        The order groups, in the order of the variables ``a``.
    network : NetworkModel
        The feeder it was built on.
    hours : float
        Interval length [h].
    lp : LpData
        The same LP as sparse arrays (:func:`market.clearing.lp.build_lp`): the unique
        prices and dispatch (:mod:`market.clearing.unique`) are chosen on it, so that both
        engines publish the same ones.
    """

    model: pyo.ConcreteModel
    groups: tuple[OrderGroup, ...]
    network: NetworkModel
    hours: float
    lp: LpData


def build_model(
    book: OrderBook,
    network: NetworkModel,
    options: ClearingOptions,
    groups: tuple[OrderGroup, ...] | None = None,
) -> BuiltModel:
    """Build the LP of the module docstring as an algebraic pyomo model (no solve).

    Parameters
    ----------
    book : OrderBook
        Validated orders of one interval.
    network : NetworkModel
        The feeder's linear model.
    options : ClearingOptions
        The tariffs (the objective's grid terms).
    groups : tuple of OrderGroup, optional
        The book's groups on this network's buses, when already made.

    Returns
    -------
    BuiltModel
        The pyomo model with a ``dual`` import suffix, and the order groups in variable order.
    """
    h = book.interval.hours
    if groups is None:
        groups = group_orders(book, network)
    if network.meshed is not None:
        return _build_meshed_model(book, network, network.meshed, options, groups)
    n, nk = network.n_bus, network.n_branch
    s_kva = network.s_base_va / 1000.0
    base_kw = network.base_p_w / 1000.0
    slack = network.slack
    alpha, beta, q0 = loss_coefficients(network)
    p_base, _ = linear_state(network, network.base_p_w)
    loss_base = float(sum(alpha + beta * p_base))
    base_net_load = -float(base_kw.sum())

    m = pyo.ConcreteModel(name="peergrid_clearing")
    m.G = pyo.RangeSet(0, len(groups) - 1) if groups else pyo.Set(initialize=[])
    m.B = pyo.RangeSet(0, n - 1)
    m.K = pyo.RangeSet(0, nk - 1) if nk else pyo.Set(initialize=[])
    m.a = pyo.Var(m.G, bounds=lambda _m, g: (0.0, groups[g].energy_wh / 1000.0))
    m.g_imp = pyo.Var(bounds=(0.0, None))
    m.g_exp = pyo.Var(bounds=(0.0, None))

    def p_bounds(_m: pyo.ConcreteModel, k: int) -> tuple[float | None, float | None]:
        s_max = float(network.s_max_va[k]) / 1000.0
        if not math.isfinite(s_max):
            return (None, None)
        p_max = math.sqrt(max(s_max**2 - float(q0[k]) ** 2, 0.0))
        p_max = max(p_max, abs(float(p_base[k])))  # a base-case overload is never worsened
        return (-p_max, p_max)

    m.P = pyo.Var(m.K, bounds=p_bounds)
    vmin2 = network.vm_min_pu**2 - network.v_offset_pu2
    vmax2 = network.vm_max_pu**2 - network.v_offset_pu2
    m.v = pyo.Var(m.B, bounds=lambda _m, b: (float(vmin2[b]), float(vmax2[b])))

    sells_at, buys_at = _welfare(m, groups, options, n)
    into: list[list[int]] = [[] for _ in range(n)]
    out_of: list[list[int]] = [[] for _ in range(n)]
    for k in range(nk):
        into[int(network.to_bus[k])].append(k)
        out_of[int(network.from_bus[k])].append(k)

    def balance_rule(_m: pyo.ConcreteModel, b: int) -> object:
        lhs = (
            h * sum(m.P[k] for k in into[b])
            - h * sum((1.0 + float(beta[k])) * m.P[k] for k in out_of[b])
            + sum(m.a[g] for g in sells_at[b])
            - sum(m.a[g] for g in buys_at[b])
        )
        rhs = -h * float(base_kw[b]) + h * sum(float(alpha[k]) for k in out_of[b])
        if b == slack:
            lhs = lhs + m.g_imp - m.g_exp
            rhs = rhs - h * (base_net_load + loss_base)
        return lhs == rhs

    m.balance = pyo.Constraint(m.B, rule=balance_rule)

    def drop_rule(_m: pyo.ConcreteModel, k: int) -> object:
        i, j = int(network.from_bus[k]), int(network.to_bus[k])
        r = float(network.r_pu[k]) / s_kva
        x = float(network.x_pu[k]) / s_kva
        return m.v[j] - m.v[i] + 2.0 * r * m.P[k] == -2.0 * x * float(q0[k])

    m.drop = pyo.Constraint(m.K, rule=drop_rule)
    m.v[slack].fix(network.vm_slack_pu**2)
    return _finish(m, book, network, options, groups, h * (base_net_load + loss_base))


def _build_meshed_model(
    book: OrderBook,
    network: NetworkModel,
    sens: Sensitivities,
    options: ClearingOptions,
    groups: tuple[OrderGroup, ...],
) -> BuiltModel:
    r"""A meshed feeder's LP as a pyomo model: the AC power flow linearised at a point.

    The same LP as :func:`market.clearing.lp._build_meshed` (its docstring has the rows),
    constraint by constraint: ``a``, ``g_imp``, ``g_exp`` as on a radial feeder; ``P[k]`` the
    branch's squared loading [-] (at most :math:`\lambda_{max,k}^2`), ``v[b]`` the voltage
    magnitude [p.u.], ``theta[j]`` the ``j``-th non-slack bus's angle from the operating
    point's [rad]; ``balance[b]`` (its dual is minus the bus's price), ``loading[k]``,
    ``reactive[j]``.
    """
    h = book.interval.hours
    n, nk = network.n_bus, network.n_branch
    s_kw = network.s_base_va / 1000.0
    slack = network.slack
    non_slack = [b for b in range(n) if b != slack]
    m = pyo.ConcreteModel(name="peergrid_clearing_meshed")
    m.G = pyo.RangeSet(0, len(groups) - 1) if groups else pyo.Set(initialize=[])
    m.B = pyo.RangeSet(0, n - 1)
    m.K = pyo.RangeSet(0, nk - 1) if nk else pyo.Set(initialize=[])
    m.J = pyo.RangeSet(0, n - 2) if n > 1 else pyo.Set(initialize=[])
    m.a = pyo.Var(m.G, bounds=lambda _m, g: (0.0, groups[g].energy_wh / 1000.0))
    m.g_imp = pyo.Var(bounds=(0.0, None))
    m.g_exp = pyo.Var(bounds=(0.0, None))
    m.P = pyo.Var(m.K, bounds=lambda _m, k: (-LOOSE, float(sens.loading_max[k]) ** 2))
    m.v = pyo.Var(
        m.B, bounds=lambda _m, b: (float(network.vm_min_pu[b]), float(network.vm_max_pu[b]))
    )
    m.theta = pyo.Var(m.J, bounds=(-LOOSE, LOOSE))  # never binding, as in the LP
    m.v[slack].fix(network.vm_slack_pu)

    def x(j: int) -> Any:  # noqa: ANN401 - a pyomo expression
        """The state's ``j``-th entry as a deviation from the operating point."""
        if j < n - 1:
            return m.theta[j]
        b = non_slack[j - (n - 1)]
        return m.v[b] - float(sens.vm_op_pu[b])

    def rows_of(
        triplet: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]], size: int
    ) -> list[list[tuple[int, float]]]:
        out: list[list[tuple[int, float]]] = [[] for _ in range(size)]
        for r, c, v in zip(*(t.tolist() for t in triplet), strict=True):
            out[r].append((c, v))
        return out

    jac_p = rows_of(sens.jac_p, n)
    jac_q = rows_of(sens.jac_q, n - 1)
    jac_l = rows_of(sens.jac_l, nk)

    sells_at, buys_at = _welfare(m, groups, options, n)

    def balance_rule(_m: pyo.ConcreteModel, b: int) -> object:
        # the market's injection change at b is what the linearised AC injection changes by
        lhs = sum(m.a[g] for g in sells_at[b]) - sum(m.a[g] for g in buys_at[b])
        rhs = h * float(sens.market_op_kw[b])
        if b == slack:
            lhs = lhs + m.g_imp - m.g_exp
            rhs = rhs + h * sens.grid_op_kw
        return lhs - h * s_kw * sum(v * x(c) for c, v in jac_p[b]) == rhs

    m.balance = pyo.Constraint(m.B, rule=balance_rule)

    def loading_rule(_m: pyo.ConcreteModel, k: int) -> object:
        return m.P[k] - sum(v * x(c) for c, v in jac_l[k]) == float(sens.loading_op[k])

    m.loading = pyo.Constraint(m.K, rule=loading_rule)

    def reactive_rule(_m: pyo.ConcreteModel, j: int) -> object:
        return sum(v * x(c) for c, v in jac_q[j]) == 0.0

    m.reactive = pyo.Constraint(m.J, rule=reactive_rule)
    return _finish(m, book, network, options, groups, h * sens.slack_base_kw)


def _welfare(
    m: pyo.ConcreteModel, groups: tuple[OrderGroup, ...], options: ClearingOptions, n: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Set ``m.welfare`` (both models' objective); the sell and buy groups at each bus."""

    def price(g: int) -> float:
        return groups[g].limit_price * CURRENCY_PER_UNIT

    buys = [g for g in range(len(groups)) if groups[g].side is Side.BUY]
    sells = [g for g in range(len(groups)) if groups[g].side is Side.SELL]
    m.welfare = pyo.Objective(
        expr=sum(price(g) * m.a[g] for g in buys)
        - sum(price(g) * m.a[g] for g in sells)
        - options.import_price * CURRENCY_PER_UNIT * m.g_imp
        + options.export_price * CURRENCY_PER_UNIT * m.g_exp,
        sense=pyo.maximize,
    )
    sells_at: list[list[int]] = [[] for _ in range(n)]
    buys_at: list[list[int]] = [[] for _ in range(n)]
    for g in sells:
        sells_at[groups[g].bus].append(g)
    for g in buys:
        buys_at[groups[g].bus].append(g)
    return sells_at, buys_at


def _finish(
    m: pyo.ConcreteModel,
    book: OrderBook,
    network: NetworkModel,
    options: ClearingOptions,
    groups: tuple[OrderGroup, ...],
    physical_kwh: float,
) -> BuiltModel:
    """Both models' upstream limits, dual suffix and :class:`BuiltModel`.

    ``physical_kwh`` is the slack's exchange without the market [kWh]: the limits bound it plus
    the market's ``g_imp - g_exp``.
    """
    h = book.interval.hours
    if math.isfinite(network.slack_import_max_w):
        m.slack_import_max = pyo.Constraint(
            expr=m.g_imp - m.g_exp <= h * network.slack_import_max_w / 1000.0 - physical_kwh
        )
    if math.isfinite(network.slack_export_max_w):
        m.slack_export_max = pyo.Constraint(
            expr=m.g_imp - m.g_exp >= -h * network.slack_export_max_w / 1000.0 - physical_kwh
        )
    m.dual = pyo.Suffix(direction=pyo.Suffix.IMPORT)
    return BuiltModel(
        model=m,
        groups=groups,
        network=network,
        hours=h,
        lp=build_lp(book, network, options, groups),
    )

r"""The clearing LP as sparse arrays for HiGHS (the fast path; no pyomo, no dense matrix).

The same LP as :mod:`market.clearing.model` (read its docstring for the notation and the
maths; the engine cross-check tests hold the two to the same optimum), built column-wise for
highspy. Two choices keep it small and exact for radial feeders where orders are active power
at unity power factor:

* **Reactive flows are constants.** Orders carry no reactive power, so the reactive flow on
  each branch is the base case's, :math:`Q^0_k` (sum of the base reactive load below it). The
  thermal limit :math:`P_k^2 + (Q^0_k)^2 \le S_{max,k}^2` is then exactly the variable bound
  :math:`|P_k| \le \sqrt{S_{max,k}^2 - (Q^0_k)^2}`: no thermal rows at all.
* **Losses, linearised.** The loss of branch :math:`k`,
  :math:`\ell_k = r_k (P_k^2 + (Q^0_k)^2) / S_{base}`, is linearised at the operating point
  :math:`P^{op}_k` as :math:`\ell_k \approx \alpha_k + \beta_k P_k`
  (:func:`market.network.loss_coefficients`) and drawn at the sending (parent) bus. The market
  buys its *incremental* losses from the grid (the base case's losses are part of the base
  case), and nodal prices carry the marginal loss component.

Columns: ``a_g`` (accepted kWh per order group), ``g_imp``, ``g_exp`` (kWh), ``P_k`` (kW),
``v_b`` (p.u.²). Rows: one energy balance per bus (kWh), one voltage drop per branch, and one
ranged row for the upstream connection's limits when either is finite::

    balance(b):  h Σ_{k→b} P_k − h Σ_{b→k} (1 + β_k) P_k + Σ_{sell(b)} a_g − Σ_{buy(b)} a_g
                 + [b = slack](g_imp − g_exp)
                 = −h B_b + h Σ_{b→k} α_k − [b = slack] h (Σ_b' −B_b' + L^base)
    drop(k):     v_j − v_i + 2 r_k P_k / S = −2 x_k Q^0_k / S
    bounds:      0 ≤ a_g ≤ E_g,  |P_k| ≤ P_max,k,  V_min,b² − δ_b ≤ v_b ≤ V_max,b² − δ_b,
                 v_slack = V_slack²
    upstream:    −h P_exp,max ≤ g_imp − g_exp + h (Σ −B + L^base) ≤ h P_imp,max

(:math:`h` interval hours, :math:`B_b` base net injection [kW], :math:`L^{base}` the linearised
losses at the base-case flows.) A base case that already breaks a thermal limit keeps the
limit at its base-case flow (never worsened), and a note says so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from market.clearing.groups import OrderGroup, group_orders
from market.clearing.options import ClearingOptions
from market.clearing.pricing import CURRENCY_PER_UNIT
from market.domain import OrderBook, Side
from market.network import NetworkModel, Sensitivities, linear_state, loss_coefficients

INF = math.inf

LOOSE = 10.0
"""Bound of a meshed LP's otherwise free columns: squared loadings from below [-], angles
from the operating point's [rad]; never binding (a loading² of -10 or an angle of 10 rad is
far outside any linearisation)."""


@dataclass(frozen=True, slots=True, eq=False)
class LpData:
    """A built LP: column/row data in HiGHS's column-wise sparse form, plus how to read it.

    ``col_scale`` (a meshed feeder's LP only): each column is its quantity times this (the
    voltage and angle columns are scaled so that their largest coefficient is 1, which keeps
    the canonical rules' reduced costs accurate); None for all ones.
    """

    groups: tuple[OrderGroup, ...]
    network: NetworkModel
    hours: float
    col_cost: NDArray[np.float64]
    col_lower: NDArray[np.float64]
    col_upper: NDArray[np.float64]
    row_lower: NDArray[np.float64]
    row_upper: NDArray[np.float64]
    a_start: NDArray[np.int32]
    a_index: NDArray[np.int32]
    a_value: NDArray[np.float64]
    n_groups: int
    notes: tuple[str, ...]
    col_scale: NDArray[np.float64] | None = None

    @property
    def num_col(self) -> int:
        """Number of columns."""
        return len(self.col_cost)

    @property
    def num_row(self) -> int:
        """Number of rows."""
        return len(self.row_lower)

    @property
    def col_p0(self) -> int:
        """First column of the branch flows [kW] (a meshed feeder's: squared loadings [-])."""
        return self.n_groups + 2

    @property
    def col_v0(self) -> int:
        """First column of the squared voltages [p.u.²] (a meshed feeder's: magnitudes [p.u.])."""
        return self.n_groups + 2 + self.network.n_branch


def build_lp(
    book: OrderBook,
    network: NetworkModel,
    options: ClearingOptions,
    groups: tuple[OrderGroup, ...] | None = None,
) -> LpData:
    """Build the LP of the module docstring (no solve).

    Parameters
    ----------
    book : OrderBook
        Validated orders of one interval.
    network : NetworkModel
        The feeder's linear model.
    options : ClearingOptions
        The tariffs (the grid columns' costs).
    groups : tuple of OrderGroup, optional
        The book's groups on this network's buses (:func:`group_orders`), when already
        made (the AC loop clears one book on several models of one feeder).

    Returns
    -------
    LpData
        The LP in HiGHS's column-wise form, the order groups in column order, and notes (a
        base-case overload kept at its base-case flow).
    """
    h = book.interval.hours
    if groups is None:
        groups = group_orders(book, network)
    if network.meshed is not None:
        return _build_meshed(book, network, network.meshed, options, groups)
    n, nk, ng = network.n_bus, network.n_branch, len(groups)
    s_kva = network.s_base_va / 1000.0
    base_kw = network.base_p_w / 1000.0
    frm, to = network.from_bus, network.to_bus
    alpha, beta, q0 = loss_coefficients(network)
    notes: list[str] = []
    p_base, _ = linear_state(network, network.base_p_w)
    loss_base = float(np.sum(alpha + beta * p_base))
    base_net_load = -float(base_kw.sum())

    # ---- columns: a_g | g_imp g_exp | P_k | v_b
    n_col = ng + 2 + nk + n
    cost = np.zeros(n_col)
    lower = np.zeros(n_col)
    upper = np.zeros(n_col)
    sign = _order_columns(groups, options, cost, lower, upper)

    s_max_kw = network.s_max_va / 1000.0
    with np.errstate(invalid="ignore"):
        p_max = np.sqrt(np.maximum(s_max_kw**2 - q0**2, 0.0))
    p_max[~np.isfinite(s_max_kw)] = INF
    p_base_flow = p_base
    over = np.isfinite(p_max) & (np.abs(p_base_flow) > p_max)
    if over.any():
        p_max[over] = np.abs(p_base_flow[over])
        worst = int(np.argmax(np.where(over, np.abs(p_base_flow) / np.maximum(p_max, 1e-9), 0)))
        notes.append(
            f"base case overloads {int(over.sum())} branch(es) before any trade (e.g. "
            f"{network.branch_names[worst]}); their limit is the base-case flow: never worsened"
        )
    lower[ng + 2 : ng + 2 + nk] = -p_max
    upper[ng + 2 : ng + 2 + nk] = p_max
    v_lo = network.vm_min_pu**2 - network.v_offset_pu2
    v_hi = network.vm_max_pu**2 - network.v_offset_pu2
    lower[ng + 2 + nk :] = v_lo
    upper[ng + 2 + nk :] = v_hi
    slack_v = ng + 2 + nk + network.slack
    lower[slack_v] = upper[slack_v] = network.vm_slack_pu**2

    # ---- rows: balance (n) | drop (nk) | upstream (0-2)
    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    vals: list[NDArray[np.float64]] = []
    group_bus = np.array([g.bus for g in groups], dtype=np.int64)
    rows.append(group_bus)
    cols.append(np.arange(ng, dtype=np.int64))
    vals.append(-sign)  # sell +1, buy -1
    rows.append(np.array([network.slack, network.slack], dtype=np.int64))
    cols.append(np.array([ng, ng + 1], dtype=np.int64))
    vals.append(np.array([1.0, -1.0]))
    kcols = ng + 2 + np.arange(nk, dtype=np.int64)
    rows.extend([to, frm])
    cols.extend([kcols, kcols])
    vals.extend([np.full(nk, h), -h * (1.0 + beta)])
    bal_rhs = -h * base_kw + h * np.bincount(frm, weights=alpha, minlength=n)
    bal_rhs[network.slack] -= h * (base_net_load + loss_base)

    drop_rows = n + np.arange(nk, dtype=np.int64)
    vcol = ng + 2 + nk
    rows.extend([drop_rows, drop_rows, drop_rows])
    cols.extend([vcol + to, vcol + frm, kcols])
    vals.extend([np.ones(nk), -np.ones(nk), 2.0 * network.r_pu / s_kva])
    drop_rhs = -2.0 * network.x_pu * q0 / s_kva

    row_lo = [bal_rhs, drop_rhs]
    row_hi = [bal_rhs, drop_rhs]
    n_row = n + nk
    physical = h * (base_net_load + loss_base)
    if math.isfinite(network.slack_import_max_w) or math.isfinite(network.slack_export_max_w):
        rows.extend([np.array([n_row, n_row], dtype=np.int64)])
        cols.extend([np.array([ng, ng + 1], dtype=np.int64)])
        vals.extend([np.array([1.0, -1.0])])
        lo = -h * network.slack_export_max_w / 1000.0 - physical
        hi = h * network.slack_import_max_w / 1000.0 - physical
        row_lo.append(np.array([lo]))
        row_hi.append(np.array([hi]))
        n_row += 1

    return _lp_data(
        groups,
        network,
        h,
        (cost, lower, upper),
        (rows, cols, vals),
        (row_lo, row_hi),
        tuple(notes),
    )


def _build_meshed(
    book: OrderBook,
    network: NetworkModel,
    sens: Sensitivities,
    options: ClearingOptions,
    groups: tuple[OrderGroup, ...],
) -> LpData:
    r"""The LP of a meshed feeder: the AC power flow linearised at an operating point.

    Columns ``a_g | g_imp g_exp | L_k | v_b | θ_b`` (as the radial LP, with ``L_k`` the
    branch's squared loading [-] where the radial LP has its flow, ``v_b`` the voltage
    magnitude [p.u.] where it has its square, and the non-slack buses' angles [rad, from the
    operating point's], free, at the end). With :math:`J` the sensitivities
    (:class:`~market.network.Sensitivities`), :math:`S` the base [kW], :math:`m^{op}` the
    market's injection at the operating point [kW], :math:`G^{op}` the market's grid exchange
    there [kW] and :math:`x = (\theta, v)` (``v`` over the non-slack buses)::

        balance(b):  Σ_{sell(b)} a_g − Σ_{buy(b)} a_g + [b = slack](g_imp − g_exp)
                     − h S J^P_b x = h m^op_b + [b = slack] h G^op − h S J^{P,v}_b v^op
        loading(k):  L_k − J^L_k x = λ^{op 2}_k − J^{L,v}_k v^op
        reactive(b): J^Q_b x = J^{Q,v}_b v^op            (non-slack b: orders are active power)
        bounds:      L_k ≤ λ^2_{max,k},  V_min,b ≤ v_b ≤ V_max,b,  v_slack = V_slack

    The slack's balance row is the linearised grid exchange, losses included; its dual, like
    every balance row's, is minus the bus's price. The upstream connection's limits bound
    :math:`G^{base} + (g_imp − g_exp) / h` as in the radial LP.
    """
    h = book.interval.hours
    n, nk, ng = network.n_bus, network.n_branch, len(groups)
    s_kw = network.s_base_va / 1000.0
    slack = network.slack
    non_slack = np.array([b for b in range(n) if b != slack], dtype=np.int64)
    v_op_ns = sens.vm_op_pu[non_slack]

    # ---- columns: a_g | g_imp g_exp | L_k | v_b | θ (non-slack)
    col_l0 = ng + 2
    col_v0 = col_l0 + nk
    col_t0 = col_v0 + n
    n_col = col_t0 + (n - 1)
    x_col = np.concatenate([col_t0 + np.arange(n - 1), col_v0 + non_slack])  # x -> LP column
    cost = np.zeros(n_col)
    lower = np.full(n_col, -INF)
    upper = np.full(n_col, INF)
    sign = _order_columns(groups, options, cost, lower, upper)
    upper[col_l0:col_v0] = sens.loading_max**2
    # finite, never binding: HiGHS's QP (the unique-dispatch rule) stops ("Not Set") on free
    # columns without curvature; a linearised squared loading may dip below 0, and an angle
    # moves by milliradians between AC iterations
    lower[col_l0:col_v0] = -LOOSE
    lower[col_t0:] = -LOOSE
    upper[col_t0:] = LOOSE
    lower[col_v0:col_t0] = network.vm_min_pu
    upper[col_v0:col_t0] = network.vm_max_pu
    lower[col_v0 + slack] = upper[col_v0 + slack] = network.vm_slack_pu

    def part_v(
        triplet: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]], rows: int
    ) -> NDArray[np.float64]:
        """``J^{·,v} v^op`` per row: the magnitude columns' share at the operating point."""
        r, c, v = triplet
        on_v = c >= n - 1
        weights = v[on_v] * v_op_ns[c[on_v] - (n - 1)]
        return np.bincount(r[on_v], weights=weights, minlength=rows).astype(np.float64)

    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    vals: list[NDArray[np.float64]] = []
    # balance (n)
    rows.append(np.array([g.bus for g in groups], dtype=np.int64))
    cols.append(np.arange(ng, dtype=np.int64))
    vals.append(-sign)
    rows.append(np.array([slack, slack], dtype=np.int64))
    cols.append(np.array([ng, ng + 1], dtype=np.int64))
    vals.append(np.array([1.0, -1.0]))
    r, c, v = sens.jac_p
    rows.append(r)
    cols.append(x_col[c])
    vals.append(-h * s_kw * v)
    bal_rhs = h * sens.market_op_kw - h * s_kw * part_v(sens.jac_p, n)
    bal_rhs[slack] += h * sens.grid_op_kw
    # loading (nk)
    rows.append(n + np.arange(nk, dtype=np.int64))
    cols.append(col_l0 + np.arange(nk, dtype=np.int64))
    vals.append(np.ones(nk))
    r, c, v = sens.jac_l
    rows.append(n + r)
    cols.append(x_col[c])
    vals.append(-v)
    load_rhs = sens.loading_op - part_v(sens.jac_l, nk)
    # reactive (n - 1)
    r, c, v = sens.jac_q
    rows.append(n + nk + r)
    cols.append(x_col[c])
    vals.append(v)
    q_rhs = part_v(sens.jac_q, n - 1)
    row_lo = [bal_rhs, load_rhs, q_rhs]
    row_hi = [bal_rhs, load_rhs, q_rhs]
    n_row = n + nk + n - 1
    if math.isfinite(network.slack_import_max_w) or math.isfinite(network.slack_export_max_w):
        rows.append(np.array([n_row, n_row], dtype=np.int64))
        cols.append(np.array([ng, ng + 1], dtype=np.int64))
        vals.append(np.array([1.0, -1.0]))
        row_lo.append(np.array([-h * network.slack_export_max_w / 1000.0 - h * sens.slack_base_kw]))
        row_hi.append(np.array([h * network.slack_import_max_w / 1000.0 - h * sens.slack_base_kw]))
        n_row += 1

    # equilibrate the state columns: their coefficients are h S J (up to ~1e5 kWh per rad);
    # column j holds s_j x_j with s_j its largest coefficient, bounds scaled alike
    all_c = np.concatenate(cols)
    all_v = np.concatenate(vals)
    scale = np.ones(n_col)
    state = np.zeros(n_col, dtype=bool)
    state[x_col] = True
    on_state = state[all_c]
    np.maximum.at(scale, all_c[on_state], np.abs(all_v[on_state]))
    scale[~state] = 1.0
    scale[scale <= 0] = 1.0
    vals = [v / scale[c] for c, v in zip(cols, vals, strict=True)]
    lower, upper = lower * scale, upper * scale
    data = _lp_data(
        groups, network, h, (cost, lower, upper), (rows, cols, vals), (row_lo, row_hi), ()
    )
    return dataclasses.replace(data, col_scale=scale)


def _order_columns(
    groups: tuple[OrderGroup, ...],
    options: ClearingOptions,
    cost: NDArray[np.float64],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Fill the order groups' and the grid's columns (both LPs lay them out first).

    Returns
    -------
    ndarray of float
        Each group's sign: +1 buy, -1 sell.
    """
    ng = len(groups)
    sign = np.array([1.0 if g.side is Side.BUY else -1.0 for g in groups])
    prices = np.array([g.limit_price for g in groups], dtype=float)
    cost[:ng] = sign * prices * CURRENCY_PER_UNIT
    lower[: ng + 2] = 0.0
    upper[:ng] = np.array([g.energy_wh for g in groups], dtype=float) / 1000.0
    upper[ng] = upper[ng + 1] = INF
    cost[ng] = -options.import_price * CURRENCY_PER_UNIT
    cost[ng + 1] = options.export_price * CURRENCY_PER_UNIT
    return sign


def _lp_data(
    groups: tuple[OrderGroup, ...],
    network: NetworkModel,
    hours: float,
    columns: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    entries: tuple[list[NDArray[np.int64]], list[NDArray[np.int64]], list[NDArray[np.float64]]],
    row_bounds: tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]],
    notes: tuple[str, ...],
) -> LpData:
    """An :class:`LpData` from its columns (cost, lower, upper) and coordinate entries."""
    cost, lower, upper = columns
    r = np.concatenate(entries[0])
    c = np.concatenate(entries[1])
    v = np.concatenate(entries[2])
    order = np.lexsort((r, c))
    r, c, v = r[order], c[order], v[order]
    start = np.searchsorted(c, np.arange(len(cost) + 1)).astype(np.int32)
    return LpData(
        groups=groups,
        network=network,
        hours=hours,
        col_cost=cost,
        col_lower=lower,
        col_upper=upper,
        row_lower=np.concatenate(row_bounds[0]),
        row_upper=np.concatenate(row_bounds[1]),
        a_start=start,
        a_index=r.astype(np.int32),
        a_value=v,
        n_groups=len(groups),
        notes=notes,
    )

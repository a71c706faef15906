r"""The welfare-maximising double auction as an algebraic pyomo model (the reference path).

The production path builds the same LP as sparse arrays (:mod:`market.clearing.lp`, whose
docstring has the exact constraints, including losses and the exact thermal bounds); this
module keeps the shared option and grouping types and the readable pyomo model that the tests
check the fast path against. The maths below is the lossless core.

Orders are aggregated into *groups* of equal (bus, side, limit price): one variable per group,
never one per order and bus. The network is a LinDistFlow model of a radial feeder (Baran & Wu
1989, linearised): sparse, one row per bus and branch.

Notation (interval of :math:`h` hours; energies in kWh, powers in kW/kvar):

* :math:`a_g \in [0, E_g]` accepted energy of group :math:`g` with limit price :math:`c_g`;
* :math:`g^{imp}, g^{exp} \ge 0` the market's purchase from / sale to the upstream grid at the
  import and export tariffs :math:`c^{imp} \ge c^{exp}`;
* :math:`P_k, Q_k` flow on branch :math:`k` from its parent :math:`i` to its child :math:`j`;
* :math:`v_b` squared voltage magnitude [p.u.^2]; :math:`\delta_b` the AC correction
  (``v_offset_pu2``); :math:`B_b` the inflexible net injection at bus :math:`b` [kW].

Objective (welfare, currency units = token base units / 1e6)::

    max  Σ_{g∈buy} c_g a_g − Σ_{g∈sell} c_g a_g − c^imp g^imp + c^exp g^exp

Constraints::

    energy balance (b):  h (Σ_{k→b} P_k − Σ_{b→k} P_k) + Σ_{g∈sell(b)} a_g − Σ_{g∈buy(b)} a_g
                         + [b = slack] (g^imp − g^exp) = −h B_b − [b = slack] h Σ_b' B_b'
    reactive balance (b): Σ_{k→b} Q_k − Σ_{b→k} Q_k + [b = slack] q^s = −B^q_b
    voltage drop (k):    v_j = v_i − 2 (r_k P_k + x_k Q_k) / S_base
    slack voltage:       v_slack = V_slack²
    voltage band (b):    V_min,b² − δ_b ≤ v_b ≤ V_max,b² − δ_b
    thermal (k, f):      cos θ_f P_k + sin θ_f Q_k ≤ S_max,k cos(π/8),  θ_f = π/8 + f π/4
    upstream limit:      −P_exp,max ≤ (g^imp − g^exp) − Σ_b B_b h / h ≤ P_imp,max

The slack's physical exchange is the market's grid trade plus the base case's net load
(a constant), so inflexible loads and generation shape the flows but are never traded: base
generation does not sell to market buyers for free. The thermal polygon is inscribed in the
circle :math:`P^2 + Q^2 \le S_{max}^2` with vertices on the P and Q axes, so it never admits
a flow above the limit and is exact for pure active power. The dual of each energy balance is
the negative of the nodal price (currency per kWh).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import pyomo.environ as pyo

from market.domain import BusId, Order, OrderBook, Side
from market.errors import InvalidOrder
from market.network import NetworkModel

CURRENCY_PER_UNIT = 1e-6
"""The objective is in currency (token base units x 1e-6), which keeps coefficients near 1."""

N_FACETS = 8
MECHANISMS = ("nodal", "uniform", "pay-as-bid")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearingOptions:
    """Tariffs and settings of one clearing.

    Parameters
    ----------
    import_price : int
        Price at which the upstream grid sells to the market [token base units / kWh].
    export_price : int
        Price at which the upstream grid buys from the market [token base units / kWh];
        must not exceed ``import_price``.
    time_limit_s : float
        Wall-clock limit for the solver [s].
    mechanism : str
        ``"nodal"`` (pay-as-clear at each bus's price, the default), ``"uniform"`` (one price
        for all) or ``"pay-as-bid"`` (every order at its own limit).
    engine : str
        ``"highspy"`` (sparse arrays straight into HiGHS, the default) or ``"pyomo"`` (the
        algebraic reference model through pyomo).
    solver : str
        HiGHS's ``solver`` option: ``"choose"``, ``"simplex"`` or ``"ipm"``.
    """

    import_price: int = 300_000
    export_price: int = 80_000
    time_limit_s: float = 10.0
    mechanism: str = "nodal"
    engine: str = "highspy"
    solver: str = "choose"

    def __post_init__(self) -> None:
        if self.import_price < 0 or self.export_price < 0:
            msg = "tariffs must be >= 0"
            raise InvalidOrder(msg)
        if self.export_price > self.import_price:
            msg = (
                f"export price {self.export_price} above import price {self.import_price} "
                "would let the market buy from the grid to sell back at a profit"
            )
            raise InvalidOrder(msg)
        if self.mechanism not in MECHANISMS:
            msg = (
                f"unknown pricing mechanism {self.mechanism!r}; available: {', '.join(MECHANISMS)}"
            )
            raise InvalidOrder(msg)
        if self.engine not in {"highspy", "pyomo"}:
            msg = f"unknown engine {self.engine!r}; available: highspy, pyomo"
            raise InvalidOrder(msg)
        if self.solver not in {"choose", "simplex", "ipm"}:
            msg = f"unknown solver {self.solver!r}; available: choose, simplex, ipm"
            raise InvalidOrder(msg)
        if not self.time_limit_s > 0:
            msg = "time_limit_s must be > 0"
            raise InvalidOrder(msg)


@dataclass(frozen=True, slots=True)
class OrderGroup:
    """Orders of equal bus, side and limit price; one LP variable."""

    bus: int
    side: Side
    limit_price: int
    energy_wh: int
    orders: tuple[Order, ...]


@dataclass(frozen=True, slots=True, eq=False)
class BuiltModel:
    """A built (unsolved) model and the index data to read it back."""

    model: pyo.ConcreteModel
    groups: tuple[OrderGroup, ...]
    network: NetworkModel
    hours: float


def group_orders(book: OrderBook, network: NetworkModel) -> tuple[OrderGroup, ...]:
    """Aggregate the book's orders by (bus, side, limit price), in canonical order."""
    index = network.bus_index()
    buckets: dict[tuple[int, Side, int], list[Order]] = defaultdict(list)
    for order in book.orders:
        if order.bus not in index:
            msg = f"order {order.order_id}: bus {order.bus!r} is not in the network"
            raise InvalidOrder(msg)
        buckets[(index[BusId(order.bus)], order.side, order.limit_price)].append(order)
    return tuple(
        OrderGroup(
            bus=bus,
            side=side,
            limit_price=price,
            energy_wh=sum(o.energy_wh for o in orders),
            orders=tuple(orders),
        )
        for (bus, side, price), orders in sorted(
            buckets.items(), key=lambda kv: (kv[0][0], kv[0][1].value, kv[0][2])
        )
    )


def build_model(book: OrderBook, network: NetworkModel, options: ClearingOptions) -> BuiltModel:
    """Build the clearing LP as an algebraic pyomo model (no solve).

    The reference formulation: the same maths as :mod:`market.clearing.lp` (read its
    docstring), written constraint by constraint, so the fast path can be checked against it.

    Returns
    -------
    BuiltModel
        The pyomo model with a ``dual`` import suffix, and the order groups in variable order.
    """
    from market.clearing.lp import linear_state, loss_coefficients  # noqa: PLC0415 - no cycle

    h = book.interval.hours
    groups = group_orders(book, network)
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
    into: list[list[int]] = [[] for _ in range(n)]
    out_of: list[list[int]] = [[] for _ in range(n)]
    for k in range(nk):
        into[int(network.to_bus[k])].append(k)
        out_of[int(network.from_bus[k])].append(k)
    sells_at: list[list[int]] = [[] for _ in range(n)]
    buys_at: list[list[int]] = [[] for _ in range(n)]
    for g in sells:
        sells_at[groups[g].bus].append(g)
    for g in buys:
        buys_at[groups[g].bus].append(g)

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
    physical = h * (base_net_load + loss_base)
    if math.isfinite(network.slack_import_max_w):
        m.slack_import_max = pyo.Constraint(
            expr=m.g_imp - m.g_exp <= h * network.slack_import_max_w / 1000.0 - physical
        )
    if math.isfinite(network.slack_export_max_w):
        m.slack_export_max = pyo.Constraint(
            expr=m.g_imp - m.g_exp >= -h * network.slack_export_max_w / 1000.0 - physical
        )
    m.dual = pyo.Suffix(direction=pyo.Suffix.IMPORT)
    return BuiltModel(model=m, groups=groups, network=network, hours=h)

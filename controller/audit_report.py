"""``peergrid audit report``: an HTML report and a PDF for a utility, drawn from the exports.

Every figure is drawn from the tables of :func:`controller.audit_export.export_tables` and
from nothing else (the chain's settled intervals and the verification findings excepted,
which are inputs of their own). The pipeline has three stages, each a plain function:

1. :func:`report_data` (pure, pandas only): the export tables -> the series each figure
   plots, as JSON-able lists (``report_data.json`` holds exactly these);
2. :func:`render_svgs` / :func:`render_pdf`: the series -> matplotlib figures (backend
   ``Agg``, no display), one inline ``<svg>`` per figure and one PDF page per figure;
3. :func:`write_report`: ``report.html`` (jinja2, self-contained: inline SVG, inline CSS,
   no external asset), ``report.pdf`` (matplotlib's ``PdfPages``) and ``report_data.json``.

The figures, in order (:data:`FIGURES`):

* ``energy``: per interval, energy traded locally (peer to peer, neither side ``GRID``)
  [Wh], imported from and exported to the grid [Wh], and the local share
  ``local / (local + import)`` [-];
* ``prices``: the nodal price of every bus per interval [token units/kWh];
* ``voltage``: the lowest and highest bus voltage per interval against the band [p.u.];
* ``loading``: the highest line and transformer loading per interval [%];
* ``imbalance``: per interval, the absolute metered-minus-cleared imbalance summed over
  participants [Wh] and the number of participants settled without a meter reading;
* ``curtailment``: curtailed energy per interval [Wh], stacked by reason;
* ``reconciliation``: per interval, the gross amount the database settled (sum of the
  positive amounts) [token units], and the part whose batch id the chain holds;

followed by every verification finding (one line each, naming interval and field).

Matplotlib and jinja2 are imported inside the functions that use them, so importing this
module (and starting ``peergrid``) stays fast. Outputs are reproducible: the SVGs' ids are
salted by figure name and no creation date is written into the SVG or the PDF.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market.domain import GRID, utc_label

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from controller.audit import ChainSettlement, ChainView
    from controller.store import Store

FIGURES: tuple[tuple[str, str], ...] = (
    ("energy", "Energy flows and local share"),
    ("prices", "Nodal prices per bus"),
    ("voltage", "Voltage envelope against the band"),
    ("loading", "Line and transformer loading"),
    ("imbalance", "Imbalance and unmetered participants"),
    ("curtailment", "Curtailment by reason"),
    ("reconciliation", "Settlement reconciliation: database vs chain"),
)
"""``(name, title)`` of every figure, in the report's order."""

FINDINGS_PER_PAGE = 40
"""Finding lines per PDF page (the findings take at least one page)."""

DEFAULT_VM_BAND = (0.95, 1.05)
"""The voltage band [p.u.] drawn when neither the exports nor the caller give one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Findings:
    """What verification found, for the report's last section.

    ``problems``: one line per finding (interval and field named); ``checked``: one
    sentence saying what was verified (and what not); ``records`` and ``verified``: counts.
    """

    problems: tuple[str, ...] = ()
    checked: str = ""
    records: int = 0
    verified: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportFiles:
    """The files :func:`write_report` wrote, and the PDF's page count."""

    html: Path
    pdf: Path
    data: Path
    pdf_pages: int
    figures: tuple[str, ...] = field(default=())


def pdf_page_count(n_findings: int) -> int:
    """The PDF's pages: a title page, one per figure, the findings pages.

    Parameters
    ----------
    n_findings : int
        Finding lines.

    Returns
    -------
    int
        ``1 + len(FIGURES) + max(1, ceil(n_findings / FINDINGS_PER_PAGE))``.
    """
    return 1 + len(FIGURES) + max(1, math.ceil(n_findings / FINDINGS_PER_PAGE))


def collect(
    store: Store,
    start: datetime,
    end: datetime,
    *,
    chain: ChainView | None = None,
    settled: Sequence[ChainSettlement] | None = None,
    reclear: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    reclear_anchored: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] | None = None,
    signing_domain: tuple[int, str] | None = None,
    governed_at: Callable[[str, int], Mapping[str, int]] | None = None,
    device_key_at: Callable[[str, str, str, int], bytes | None] | None = None,
) -> tuple[dict[str, pd.DataFrame], Findings]:
    """The export tables and the verification findings for the intervals in ``[start, end)``.

    The findings are those of ``peergrid audit verify`` restricted to the range:
    :func:`controller.audit.verify_records` (with the store's tables, the chain and the
    re-clears given) and :func:`controller.audit.compare_with_chain`.

    Parameters
    ----------
    store : Store
        The controller's database (only read).
    start, end : datetime
        The range (time-zone aware), half-open.
    chain : ChainView, optional
        Read access to the settlement contract (each record against its entries).
    settled : sequence of ChainSettlement, optional
        Every interval the contract settled (its ``Settled`` events), compared with the
        records both ways; ``None``: the chain was not consulted.
    reclear, reclear_anchored : callable, optional
        As for :func:`controller.audit.verify_records`; without them nothing is re-cleared.
    signing_domain : (int, str), optional
        As for :func:`controller.audit.verify_records` (the chain's id and Settlement).
    governed_at : callable, optional
        As for :func:`controller.audit.verify_records` (the community's registry).
    device_key_at : callable, optional
        As for :func:`controller.audit.verify_records` (the device key registry); each
        unverified reading is one finding line, marked as such.

    Returns
    -------
    tables : dict of str to DataFrame
        :func:`controller.audit_export.export_tables`.
    findings : Findings
        What verification found, and what it checked.

    Raises
    ------
    ExportError
        ``start`` or ``end`` has no time zone, or ``end`` is not after ``start``.
    """
    from controller.audit import compare_with_chain, verify_records  # noqa: PLC0415
    from controller.audit_export import export_tables  # noqa: PLC0415

    tables = export_tables(store, start, end)  # checks the range first
    lo, hi = int(start.timestamp()), int(end.timestamp())
    rows = [r for r in store.audit_records() if lo <= int(r["interval_id"]) < hi]
    summary = verify_records(
        rows,
        reclear=reclear,
        chain=chain,
        tables=store,
        reclear_anchored=reclear_anchored,
        signing_domain=signing_domain,
        governed_at=governed_at,
        device_key_at=device_key_at,
    )
    problems: list[str] = list(summary["problems"])
    problems += [f"unverified reading (settled by rule 4b): {u}" for u in summary["unverified"]]
    checked = (
        "Record hashes, batch ids, Merkle roots and zero sums recomputed; records compared "
        "with the readings and settlements tables"
    )
    if reclear is not None or reclear_anchored is not None:
        checked += "; every interval re-cleared from its stored book"
    else:
        checked += "; not re-cleared"
    if settled is not None:
        in_range = [c for c in settled if lo <= c.interval_id < hi]
        settlement_rows = [r for r in store.settlement_rows() if lo <= int(r["interval_id"]) < hi]
        problems += compare_with_chain(rows, in_range, settlement_rows)
        checked += (
            "; each record compared with the chain's entries, and the chain's Settled events "
            "with the records both ways."
        )
    else:
        checked += "; not compared with the chain."
    accepted = summary.get("accepted") or []
    if accepted:
        checked += " Accepted as recorded: " + "; ".join(str(a) for a in accepted) + "."
    return tables, Findings(
        problems=tuple(problems),
        checked=checked,
        records=int(summary["records"]),
        verified=int(summary["verified"]),
    )


# ------------------------------------------------------------------------ stage 1: the data
def _missing(value: Any) -> bool:  # noqa: ANN401 - any cell of a frame
    import pandas as pd  # noqa: PLC0415

    return value is None or bool(pd.isna(value))


def _ints(values: Iterable[Any]) -> list[int]:
    return [int(v) for v in values]


def _floats(values: Iterable[Any]) -> list[float | None]:
    out: list[float | None] = []
    for v in values:
        out.append(None if _missing(v) else float(v))
    return out


def _per_interval(
    frame: pd.DataFrame, ids: Sequence[int], column: str, how: str, fill: float = 0
) -> pd.Series[Any]:
    """``column`` aggregated (``how``) per ``interval_id``, on the report's interval axis."""
    import pandas as pd  # noqa: PLC0415

    if frame.empty:
        return pd.Series([fill] * len(ids), index=list(ids), dtype=float)
    grouped = frame.groupby("interval_id")[column].agg(how)
    grouped.index = grouped.index.astype(int)
    return grouped.reindex(list(ids), fill_value=fill)


def report_data(
    tables: Mapping[str, pd.DataFrame],
    *,
    start: datetime,
    end: datetime,
    vm_band: tuple[float, float] | None = None,
    chain: Sequence[ChainSettlement] | None = None,
    findings: Findings | None = None,
    title: str = "PeerGrid audit report",
) -> dict[str, Any]:
    """The series every figure plots, computed from the export tables only.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        :func:`controller.audit_export.export_tables` for ``[start, end)``.
    start, end : datetime
        The report's range (UTC), half-open.
    vm_band : (float, float), optional
        The voltage band [p.u.] for intervals whose record names none; default: each
        interval's ``vm_min_pu``/``vm_max_pu`` in ``intervals.params_json``, else
        :data:`DEFAULT_VM_BAND`.
    chain : sequence of ChainSettlement, optional
        Every interval the settlement contract settled; ``None``: the chain was not
        consulted (the reconciliation says so).
    findings : Findings, optional
        Verification's findings.
    title : str
        The report's title.

    Returns
    -------
    dict
        ``title``, ``from``, ``to``, ``intervals`` (ids [Unix s]), ``labels`` (UTC),
        ``figures`` (name -> ``title``, ``unit`` and ``series``: lists on the interval axis,
        keyed by bus for ``prices`` and by reason for ``curtailment``), ``findings`` and
        ``chain_consulted``.
    """
    intervals = tables["intervals"]
    ids = sorted(_ints(intervals["interval_id"]))
    by_id = intervals.set_index("interval_id").reindex(ids)
    trades = tables["trades"]
    peer = trades[(trades["buyer"] != GRID) & (trades["seller"] != GRID)]
    local = _ints(_per_interval(peer, ids, "energy_wh", "sum"))
    exchange = tables["grid_exchange"]
    imported = _ints(_per_interval(exchange, ids, "import_wh", "sum"))
    exported = _ints(_per_interval(exchange, ids, "export_wh", "sum"))
    share = [
        None if lo + im == 0 else lo / (lo + im) for lo, im in zip(local, imported, strict=True)
    ]

    prices = tables["prices"]
    per_bus: dict[str, list[int | None]] = {}
    for bus, rows in prices.groupby("bus", sort=True):
        values = rows.set_index("interval_id")["price_per_kwh"].reindex(ids)
        per_bus[str(bus)] = [None if _missing(v) else int(v) for v in values]

    buses, branches = tables["ac_buses"], tables["ac_branches"]
    # per-bus and per-branch values where the record has them, else the record's summary
    vm_lo = _prefer(_per_interval(buses, ids, "vm_pu", "min", math.nan), by_id["min_vm_pu"])
    vm_hi = _prefer(_per_interval(buses, ids, "vm_pu", "max", math.nan), by_id["max_vm_pu"])
    line = _prefer(
        _per_interval(branches[branches["kind"] == "line"], ids, "loading_pct", "max", math.nan),
        by_id["max_line_loading_pct"],
    )
    trafo = _prefer(
        _per_interval(branches[branches["kind"] == "trafo"], ids, "loading_pct", "max", math.nan),
        by_id["max_trafo_loading_pct"],
    )
    bands = [_band_of(text, vm_band) for text in by_id["params_json"]]

    settlements = tables["settlements"]
    unmetered_rows = settlements[~settlements["metered"].fillna(value=True).astype(bool)]
    imbalance = settlements.assign(abs_imbalance_wh=settlements["imbalance_wh"].abs())

    figures: dict[str, dict[str, Any]] = {
        "energy": {
            "unit": "Wh",
            "series": {
                "local_wh": local,
                "grid_import_wh": imported,
                "grid_export_wh": exported,
                "local_share": share,
            },
        },
        "prices": {"unit": "token units/kWh", "series": per_bus},
        "voltage": {
            "unit": "p.u.",
            "series": {
                "min_vm_pu": vm_lo,
                "max_vm_pu": vm_hi,
                "vm_min_limit_pu": [b[0] for b in bands],
                "vm_max_limit_pu": [b[1] for b in bands],
            },
        },
        "loading": {
            "unit": "%",
            "series": {"max_line_loading_pct": line, "max_trafo_loading_pct": trafo},
        },
        "imbalance": {
            "unit": "Wh",
            "series": {
                "abs_imbalance_wh": _ints(_per_interval(imbalance, ids, "abs_imbalance_wh", "sum")),
                "unmetered_participants": _ints(
                    _per_interval(unmetered_rows, ids, "account", "nunique")
                ),
            },
        },
        "curtailment": {"unit": "Wh", "series": _curtailment(tables["curtailment"], ids)},
        "reconciliation": {
            "unit": "token units",
            "series": _reconciliation(settlements, ids, chain),
        },
    }
    for name, fig_title in FIGURES:
        figures[name]["title"] = fig_title
    found = findings or Findings()
    return {
        "title": title,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "intervals": ids,
        "labels": [utc_label(i) for i in ids],
        "figures": figures,
        "chain_consulted": chain is not None,
        "findings": {
            "problems": list(found.problems),
            "checked": found.checked,
            "records": found.records,
            "verified": found.verified,
        },
    }


def _prefer(detail: pd.Series[Any], summary: pd.Series[Any]) -> list[float | None]:
    """``detail`` where it has a value, else ``summary`` (both on the interval axis)."""
    out: list[float | None] = []
    for d, s in zip(_floats(detail), _floats(summary), strict=True):
        out.append(d if d is not None else s)
    return out


def _band_of(params_json: Any, default: tuple[float, float] | None) -> tuple[float, float]:  # noqa: ANN401 - a string or pandas' NA
    """The voltage band [p.u.] of a record's parameters (canonical JSON, ``""``: none)."""
    params = json.loads(params_json) if isinstance(params_json, str) and params_json else {}
    fallback = default or DEFAULT_VM_BAND
    return (
        float(params.get("vm_min_pu", fallback[0])),
        float(params.get("vm_max_pu", fallback[1])),
    )


def curtailment_reason(reason: str) -> str:
    """The category of a curtailment reason (``curtailment.reason`` of the exports).

    Parameters
    ----------
    reason : str
        The setpoint's reason, as :mod:`controller.bidding` writes it.

    Returns
    -------
    str
        ``network limit`` (the network could not take the energy), ``floor above the
        export tariff`` (the owner's price floor was not met), ``unsold`` (offered, not
        bought) or ``other``.
    """
    if "network" in reason:
        return "network limit"
    if "floor is above the export tariff" in reason:
        return "floor above the export tariff"
    if "unsold" in reason:
        return "unsold"
    return "other"


def _curtailment(curtailment: pd.DataFrame, ids: Sequence[int]) -> dict[str, list[int]]:
    """Curtailed energy [Wh] per interval (export ``curtailed_wh``), keyed by reason category."""
    index = {interval_id: k for k, interval_id in enumerate(ids)}
    out: dict[str, list[int]] = {}
    for interval_id, reason, energy in zip(
        _ints(curtailment["interval_id"]),
        curtailment["reason"].tolist(),
        _ints(curtailment["curtailed_wh"]),
        strict=True,
    ):
        out.setdefault(curtailment_reason(str(reason)), [0] * len(ids))[index[interval_id]] += (
            energy
        )
    return dict(sorted(out.items()))


def _reconciliation(
    settlements: pd.DataFrame, ids: Sequence[int], chain: Sequence[ChainSettlement] | None
) -> dict[str, list[Any]]:
    """Per interval: the database's state and gross amount, and whether the chain agrees."""
    on_chain = {c.interval_id: c.batch_id for c in chain or ()}
    credits = settlements.assign(credit_units=settlements["amount_units"].clip(lower=0))
    db_gross = _ints(_per_interval(credits, ids, "credit_units", "sum"))
    batch: dict[int, str] = {}
    state: dict[int, str] = {}
    first = settlements.drop_duplicates("interval_id")
    for interval_id, batch_id, state_name in zip(
        _ints(first["interval_id"]),
        first["batch_id"].tolist(),
        first["state"].tolist(),
        strict=True,
    ):
        batch[interval_id] = str(batch_id)
        state[interval_id] = str(state_name)
    chain_gross: list[int | None] = []
    status: list[str] = []
    for interval_id, amount in zip(ids, db_gross, strict=True):
        if chain is None:
            chain_gross.append(None)
            status.append("chain not consulted")
        elif interval_id not in on_chain:
            chain_gross.append(0)
            status.append("not on chain" if interval_id in batch else "no settlement")
        elif on_chain[interval_id] == batch.get(interval_id):
            chain_gross.append(amount)
            status.append("match")
        else:
            chain_gross.append(0)
            status.append("other batch id on chain")
    return {
        "db_gross_amount_units": db_gross,
        "chain_confirmed_amount_units": chain_gross,
        "db_state": [state.get(i, "none") for i in ids],
        "status": status,
    }


# --------------------------------------------------------------------- stage 2: the figures
def _figure(name: str, data: Mapping[str, Any]) -> Figure:
    """Draw one figure of :data:`FIGURES` from ``data["figures"][name]`` (matplotlib, Agg)."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - lazy: start-up stays fast
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    spec = data["figures"][name]
    series: Mapping[str, list[Any]] = spec["series"]
    days = {label[:10] for label in data["labels"]}
    labels = [label[11:16] if len(days) == 1 else label[5:16] for label in data["labels"]]
    x = list(range(len(labels)))
    fig = Figure(figsize=(10, 5.0))
    fig.subplots_adjust(left=0.09, right=0.91, bottom=0.2, top=0.92)  # fixed: no layout solver
    ax = fig.add_subplot()
    ax.set_title(spec["title"])
    if not x:
        ax.text(0.5, 0.5, "no intervals in this range", ha="center", va="center")
        ax.set_axis_off()
        return fig
    if name == "energy":
        ax.bar(x, series["local_wh"], label="local (peer to peer)", color="tab:green")
        ax.bar(
            x,
            series["grid_import_wh"],
            bottom=series["local_wh"],
            label="grid import",
            color="tab:red",
        )
        ax.bar(x, [-v for v in series["grid_export_wh"]], label="grid export", color="tab:blue")
        ax.set_ylabel("energy [Wh]")
        share_ax = ax.twinx()
        share = [math.nan if v is None else 100 * v for v in series["local_share"]]
        share_ax.plot(x, share, "k.-", label="local share")
        share_ax.set_ylabel("local share [%]")
        share_ax.set_ylim(0, 105)
    elif name == "prices":
        for bus, values in series.items():
            ax.plot(x, [math.nan if v is None else v for v in values], lw=0.8, label=bus)
        ax.set_ylabel("price [token units/kWh]")
    elif name == "voltage":
        lo = [math.nan if v is None else v for v in series["min_vm_pu"]]
        hi = [math.nan if v is None else v for v in series["max_vm_pu"]]
        ax.fill_between(x, lo, hi, alpha=0.3, label="bus voltages (min-max)")
        ax.plot(x, lo, "b.-", lw=0.8)
        ax.plot(x, hi, "b.-", lw=0.8)
        ax.plot(x, series["vm_min_limit_pu"], "r--", label="band")
        ax.plot(x, series["vm_max_limit_pu"], "r--")
        ax.set_ylabel("voltage [p.u.]")
    elif name == "loading":
        for key, label in (
            ("max_line_loading_pct", "highest line"),
            ("max_trafo_loading_pct", "highest transformer"),
        ):
            ax.plot(x, [math.nan if v is None else v for v in series[key]], ".-", label=label)
        ax.axhline(100, color="r", ls="--", label="100 %")
        ax.set_ylabel("loading [%]")
    elif name == "imbalance":
        ax.bar(x, series["abs_imbalance_wh"], label="|metered - cleared|", color="tab:orange")
        ax.set_ylabel("imbalance [Wh]")
        count_ax = ax.twinx()
        count_ax.plot(x, series["unmetered_participants"], "k.-", label="unmetered")
        count_ax.set_ylabel("participants without a reading")
        count_ax.set_ylim(0, max(1, *series["unmetered_participants"]) + 0.5)
        count_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    elif name == "curtailment":
        bottom = [0] * len(x)
        for reason, values in series.items():
            ax.bar(x, values, bottom=bottom, label=reason)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        if not series:
            ax.text(0.5, 0.5, "nothing curtailed", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel("curtailed [Wh]")
    elif name == "reconciliation":
        width = 0.4
        ax.bar([i - width / 2 for i in x], series["db_gross_amount_units"], width, label="database")
        chain = series["chain_confirmed_amount_units"]
        if any(v is not None for v in chain):
            ax.bar(
                [i + width / 2 for i in x],
                [v or 0 for v in chain],
                width,
                label="same batch id on chain",
            )
        else:
            ax.text(
                0.5,
                0.95,
                "the chain was not consulted",
                ha="center",
                va="top",
                transform=ax.transAxes,
            )
        ax.set_ylabel("gross amount settled [token units]")
    step = max(1, len(x) // 16)
    ax.set_xticks(x[::step], labels[::step], rotation=45, ha="right")
    ax.set_xlabel("interval start (UTC)")
    if name != "prices" or len(series) <= 12:
        handles, names = ax.get_legend_handles_labels()
        for other in fig.axes[1:]:
            more, more_names = other.get_legend_handles_labels()
            handles += more
            names += more_names
        if handles:
            ax.legend(handles, names, fontsize="small", loc="best")
    return fig


def render_svgs(
    data: Mapping[str, Any], figures: Mapping[str, Figure] | None = None
) -> dict[str, str]:
    """Every figure as an inline ``<svg>`` element (no XML header), by name.

    Parameters
    ----------
    data : mapping
        :func:`report_data`'s output.
    figures : mapping of str to Figure, optional
        The figures, already drawn (default: drawn here).

    Returns
    -------
    dict of str to str
        Figure name -> SVG markup, in :data:`FIGURES` order. Fonts are drawn as paths and
        ids are salted by the figure's name, so the markup is self-contained and unique
        per figure.
    """
    import io  # noqa: PLC0415

    import matplotlib as mpl  # noqa: PLC0415

    out: dict[str, str] = {}
    for name, _ in FIGURES:
        fig = figures[name] if figures is not None else _figure(name, data)
        buf = io.StringIO()
        with mpl.rc_context({"svg.hashsalt": f"peergrid-{name}", "svg.fonttype": "path"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
        text = buf.getvalue()
        out[name] = text[text.index("<svg") :]
    return out


def render_pdf(
    data: Mapping[str, Any], path: Path, figures: Mapping[str, Figure] | None = None
) -> int:
    """Write the PDF: a title page, one page per figure, the findings pages.

    Parameters
    ----------
    data : mapping
        :func:`report_data`'s output.
    path : Path
        The PDF file.
    figures : mapping of str to Figure, optional
        The figures, already drawn (default: drawn here).

    Returns
    -------
    int
        Pages written (:func:`pdf_page_count`).
    """
    from matplotlib.backends.backend_pdf import PdfPages  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    findings = data["findings"]
    problems: list[str] = findings["problems"]
    pages = 0
    with PdfPages(path, metadata={"CreationDate": None, "Title": data["title"]}) as pdf:
        title = Figure(figsize=(10, 5.0))
        lines = [
            data["title"],
            "",
            f"intervals starting in [{data['from']}, {data['to']}): {len(data['intervals'])}",
            f"records verified: {findings['verified']}/{findings['records']}",
            f"findings: {len(problems)}",
            f"chain consulted: {'yes' if data['chain_consulted'] else 'no'}",
            "",
            *_wrap(findings["checked"], 110),
        ]
        title.text(0.05, 0.95, "\n".join(lines), va="top", family="monospace", fontsize=10)
        pdf.savefig(title)
        pages += 1
        for name, _ in FIGURES:
            pdf.savefig(figures[name] if figures is not None else _figure(name, data))
            pages += 1
        chunks = [
            problems[i : i + FINDINGS_PER_PAGE] for i in range(0, len(problems), FINDINGS_PER_PAGE)
        ] or [["no findings: every check passed"]]
        for k, chunk in enumerate(chunks, start=1):
            page = Figure(figsize=(10, 7.5))
            page.text(
                0.03,
                0.97,
                f"Verification findings ({k}/{len(chunks)})\n\n"
                + "\n".join(line[:150] for line in chunk),
                va="top",
                family="monospace",
                fontsize=7,
            )
            pdf.savefig(page)
            pages += 1
    return pages


def _wrap(text: str, width: int) -> list[str]:
    import textwrap  # noqa: PLC0415

    return textwrap.wrap(text, width) if text else []


# ----------------------------------------------------------------------- stage 3: the files
_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ data.title }}</title>
<style>
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
figure { margin: 2em 0; } figure svg { width: 100%; height: auto; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 6px; }
.ok { color: #070; } .bad { color: #a00; }
</style>
</head>
<body>
<h1>{{ data.title }}</h1>
<p>Intervals starting in [{{ data["from"] }}, {{ data["to"] }}): {{ data.intervals|length }}.
Every figure is drawn from the exports (<code>peergrid audit export</code>); the series are in
<code>report_data.json</code>.</p>
<nav><ul>
{% for name, title in figures %}<li><a href="#{{ name }}">{{ title }}</a></li>
{% endfor %}<li><a href="#findings">Verification findings</a></li>
</ul></nav>
{% for name, title in figures %}
<section id="{{ name }}">
<h2>{{ title }}</h2>
<figure>{{ svgs[name] | safe }}</figure>
</section>
{% endfor %}
<section id="findings">
<h2>Verification findings</h2>
<p>{{ data.findings.verified }}/{{ data.findings.records }} interval records verified.
{{ data.findings.checked }}</p>
{% if data.findings.problems %}
<ol class="bad">
{% for problem in data.findings.problems %}<li>{{ problem }}</li>
{% endfor %}</ol>
{% else %}
<p class="ok">No findings: every check passed.</p>
{% endif %}
</section>
</body>
</html>
"""


def render_html(data: Mapping[str, Any], svgs: Mapping[str, str]) -> str:
    """The self-contained HTML report (jinja2, autoescaped; the SVGs inline).

    Parameters
    ----------
    data : mapping
        :func:`report_data`'s output.
    svgs : mapping of str to str
        :func:`render_svgs`'s output.

    Returns
    -------
    str
        The HTML document.
    """
    import jinja2  # noqa: PLC0415

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(data=data, svgs=svgs, figures=FIGURES)


def write_report(
    tables: Mapping[str, pd.DataFrame],
    out_dir: Path,
    *,
    start: datetime,
    end: datetime,
    vm_band: tuple[float, float] | None = None,
    chain: Sequence[ChainSettlement] | None = None,
    findings: Findings | None = None,
    title: str = "PeerGrid audit report",
) -> ReportFiles:
    """Write ``report.html``, ``report.pdf`` and ``report_data.json`` to ``out_dir``.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        :func:`controller.audit_export.export_tables` for ``[start, end)``.
    out_dir : Path
        The folder (created if missing).
    start, end, vm_band, chain, findings, title
        As for :func:`report_data`.

    Returns
    -------
    ReportFiles
        The paths and the PDF's page count.
    """
    data = report_data(
        tables,
        start=start,
        end=end,
        vm_band=vm_band,
        chain=chain,
        findings=findings,
        title=title,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = out_dir / "report_data.json"
    data_path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", "utf-8")
    html_path = out_dir / "report.html"
    figures = {name: _figure(name, data) for name, _ in FIGURES}  # drawn once, saved twice
    html_path.write_text(render_html(data, render_svgs(data, figures)), "utf-8")
    pdf_path = out_dir / "report.pdf"
    pages = render_pdf(data, pdf_path, figures)
    return ReportFiles(
        html=html_path,
        pdf=pdf_path,
        data=data_path,
        pdf_pages=pages,
        figures=tuple(name for name, _ in FIGURES),
    )

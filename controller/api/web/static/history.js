/* PeerGrid history: uPlot charts over a day, week or month (GET history and
 * participants/{p}/history), and the CSV of what each chart shows. */
(function () {
  "use strict";
  const charts = {};
  let last = null;

  function el(id) { return document.getElementById(id); }
  function col(rows, key, scale) {
    return rows.map((r) => (r[key] === null || r[key] === undefined) ? null : r[key] * scale);
  }

  const SPECS = {
    prices: { site: true, keys: [["price_min_per_kwh", "min nodal", 1e-6], ["price_max_per_kwh", "max nodal", 1e-6], ["import_tariff_per_kwh", "import tariff", 1e-6], ["export_tariff_per_kwh", "export tariff", 1e-6]] },
    energy: { site: true, keys: [["traded_wh", "traded locally", 1e-3], ["grid_import_wh", "grid import", 1e-3], ["grid_export_wh", "grid export", 1e-3]] },
    voltage: { site: true, keys: [["vm_min_pu", "min voltage", 1], ["vm_max_pu", "max voltage", 1]] },
    losses: { site: true, keys: [["curtailed_wh", "curtailed", 1e-3], ["losses_wh", "losses", 1e-3]] },
    welfare: { site: true, keys: [["welfare_units", "welfare", 1e-6]] },
    participant: { site: false, keys: [["bought_wh", "bought [kWh]", 1e-3], ["sold_wh", "sold [kWh]", 1e-3], ["paid_units", "paid", 1e-6], ["received_units", "received", 1e-6], ["savings_units", "saved vs grid", 1e-6]] },
  };
  // Okabe-Ito: distinguishable with the common colour-vision deficiencies
  const COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"];

  function plot(id, rows) {
    const spec = SPECS[id];
    const box = el("c-" + id);
    if (charts[id]) { charts[id].destroy(); delete charts[id]; }
    box.replaceChildren();
    if (!rows.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No intervals in this period.";
      box.appendChild(p);
      return;
    }
    const data = [rows.map((r) => r.interval_start_s)];
    const series = [{}];
    spec.keys.forEach(([key, label, scale], k) => {
      data.push(col(rows, key, scale));
      series.push({ label: label, stroke: COLOURS[k % COLOURS.length], width: 1.5, dash: k % 2 ? [6, 3] : undefined, spanGaps: false });
    });
    const width = Math.max(280, box.clientWidth || 600);
    charts[id] = new uPlot({ width: width, height: 220, series: series, scales: { x: { time: true } }, axes: [{}, {}], legend: { live: true } }, data, box);
  }

  function csvLinks(start, end, participant) {
    for (const a of document.querySelectorAll("a.csv")) {
      const id = a.dataset.chart;
      const base = SPECS[id].site ? PG.apiBase + "/history" : PG.apiBase + "/participants/" + encodeURIComponent(participant) + "/history";
      a.dataset.href = base + "?format=csv&start_s=" + start + "&end_s=" + end;
    }
  }

  async function download(evt) {
    evt.preventDefault();
    const a = evt.currentTarget;
    if (!a.dataset.href) return;
    const reply = await fetch(a.dataset.href, { headers: { Authorization: "Bearer " + PG.token() } });
    if (!reply.ok) { PG.setStatus("CSV download failed: HTTP " + reply.status); return; }
    const blob = await reply.blob();
    const name = (reply.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name ? name[1] : "peergrid.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  async function show(evt) {
    if (evt) evt.preventDefault();
    const span = Number(el("h-period").value);
    const endDay = el("h-end").value;
    const end = endDay ? Math.floor(Date.parse(endDay + "T00:00:00Z") / 1000) + 86400 : null;
    const q = end ? "?start_s=" + (end - span) + "&end_s=" + end : "?start_s=" + 0 + "&end_s=" + 0;
    let site;
    if (end) site = await PG.api("/history" + q);
    else {
      // no date chosen: the period up to the service's clock
      const now = (await PG.api("/intervals/current")).now_s + 1;
      site = await PG.api("/history?start_s=" + (now - span) + "&end_s=" + now);
    }
    last = site;
    for (const id of Object.keys(SPECS)) if (SPECS[id].site) plot(id, site.rows);
    const who = el("h-participant").value;
    if (who) {
      const mine = await PG.api("/participants/" + encodeURIComponent(who) + "/history?start_s=" + site.start_s + "&end_s=" + site.end_s);
      plot("participant", mine.rows);
    }
    csvLinks(site.start_s, site.end_s, who);
    el("h-summary").textContent = site.rows.length + " intervals, " + PG.fmt.time(site.start_s) + " to " + PG.fmt.time(site.end_s);
    document.body.dataset.historyLoaded = String(site.rows.length);
  }

  document.addEventListener("DOMContentLoaded", () => {
    el("history-form").addEventListener("submit", (e) => { show(e).catch((err) => PG.setStatus("History unavailable: " + err.message)); });
    for (const a of document.querySelectorAll("a.csv")) a.addEventListener("click", (e) => { download(e).catch((err) => PG.setStatus(err.message)); });
    PG.onReady((me) => {
      const sel = el("h-participant");
      const names = me.role === "prosumer" ? [me.participant] : JSON.parse(document.getElementById("participants").textContent);
      sel.replaceChildren();
      for (const n of names) sel.add(new Option(n, n));
      show().catch((err) => PG.setStatus("History unavailable: " + err.message));
    });
    document.body.addEventListener("pg:interval", () => { if (last) show().catch((e) => PG.setStatus("History not refreshed: " + e.message)); });
  });
})();

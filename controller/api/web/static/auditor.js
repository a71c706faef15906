/* PeerGrid audit page: verify one record from the page, an anchor's on-chain detail by its
 * transaction hash, and CSV exports (fetched with the session, saved as files). */
(function () {
  "use strict";
  function el(id) { return document.getElementById(id); }

  function detail(title, lines, bad) {
    const box = el("verify-detail");
    if (!box) return;
    box.replaceChildren();
    const h = document.createElement("h3");
    h.textContent = title;
    box.appendChild(h);
    const ul = document.createElement("ul");
    for (const line of lines) {
      const li = document.createElement("li");
      li.textContent = line;
      ul.appendChild(li);
    }
    box.appendChild(ul);
    box.className = "panel-sub " + (bad ? "bad" : "good");
  }

  async function verify(button) {
    const id = button.dataset.interval;
    button.disabled = true;
    button.textContent = "Verifying…";
    try {
      const out = await PG.api("/intervals/" + id + "/verify", { method: "POST" });
      const cellEl = button.closest("tr").querySelector(".verification");
      cellEl.replaceChildren();
      const badge = document.createElement("span");
      badge.className = "badge " + (out.verified ? "ok" : "bad");
      badge.textContent = out.verified ? "verified" : out.problems.length + " problem(s)";
      cellEl.appendChild(badge);
      detail("Interval " + PG.fmt.time(Number(id)) + ": " + (out.verified ? "verified" : "problems found"),
        out.verified
          ? ["record hash, batch id and Merkle roots recomputed and equal to the anchor on-chain" + (out.chain_checked ? "" : " (no chain here: not compared)"), "order book re-cleared to the identical result"].concat(out.accepted)
          : out.problems,
        !out.verified);
    } catch (e) {
      detail("Could not verify", [e.message], true);
    } finally {
      button.disabled = false;
      button.textContent = "Verify";
    }
  }

  async function anchor(link) {
    const id = link.dataset.interval;
    const a = await PG.api("/intervals/" + id + "/anchor");
    const lines = [
      "transaction " + a.tx_hash + " in block " + a.block_number,
      "batch id: record " + a.record.batch_id + ", chain " + (a.chain ? a.chain.batch_id : "not read"),
      "trades root: record " + a.record.trades_root + ", chain " + (a.chain ? a.chain.trades_root : "not read"),
      "readings root: record " + a.record.readings_root + ", chain " + (a.chain ? a.chain.readings_root : "not read"),
    ];
    detail("Anchor of " + PG.fmt.time(Number(id)) + (a.matches ? ": the chain holds the record's batch" : ": MISMATCH"), lines, !a.matches);
  }

  async function exportCsv(evt) {
    evt.preventDefault();
    const from = el("x-from").value, to = el("x-to").value;
    if (!from || !to) { PG.setStatus("Choose the first and the last day to export."); return; }
    const start = Date.parse(from + "T00:00:00Z") / 1000, end = Date.parse(to + "T00:00:00Z") / 1000 + 86400;
    // one reply covers at most 31 days: follow X-PeerGrid-Next-Start-S, keep one header
    const parts = [];
    let from_s = start;
    while (from_s !== null) {
      const reply = await PG.api("/audit/export?table=" + el("x-table").value + "&start_s=" + from_s + "&end_s=" + end, { raw: true });
      const text = await reply.text();
      parts.push(parts.length ? text.slice(text.indexOf("\r\n") + 2) : text);
      const next = reply.headers.get("X-PeerGrid-Next-Start-S");
      from_s = next === null ? null : Number(next);
    }
    const blob = new Blob(parts, { type: "text/csv" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "peergrid-" + el("x-table").value + "-" + from + "-" + to + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
  }

  document.addEventListener("click", (evt) => {
    const t = evt.target;
    if (t.matches && t.matches("button.verify")) verify(t);
    else if (t.matches && t.matches("a.tx")) { evt.preventDefault(); anchor(t).catch((e) => detail("Could not read the anchor", [e.message], true)); }
  });
  document.addEventListener("DOMContentLoaded", () => {
    const today = new Date().toISOString().slice(0, 10);
    el("x-from").value = today;
    el("x-to").value = today;
    el("export-form").addEventListener("submit", (e) => { exportCsv(e).catch((err) => PG.setStatus("Export failed: " + err.message)); });
  });
})();

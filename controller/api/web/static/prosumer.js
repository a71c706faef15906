/* PeerGrid prosumer page: balances, earnings and savings, own orders (placed and cancelled by
 * signing EIP-712 typed data with the browser's wallet, eth_signTypedData_v4), trades and
 * readings. Every number comes from the API; the page never computes money itself. */
(function () {
  "use strict";
  const who = document.body.dataset.participant;
  const P = "/participants/" + encodeURIComponent(who);
  let site = null;

  function el(id) { return document.getElementById(id); }
  function facts(dl, pairs) {
    dl.replaceChildren();
    for (const [k, v] of pairs) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      dl.append(dt, dd);
    }
  }
  function msg(text, bad) {
    const p = el("order-msg");
    p.textContent = text;
    p.className = bad ? "error" : "ok-line";
  }
  function nonce() {
    const a = new Uint32Array(4);
    crypto.getRandomValues(a);
    return a.reduce((acc, x) => acc * 4294967296n + BigInt(x), 0n).toString();
  }

  async function balances() {
    const [b, e] = await Promise.all([PG.api(P + "/balances"), PG.api(P + "/escrow")]);
    facts(el("balances"), [
      ["Wallet", PG.fmt.units(b.wallet_units) + " tokens"],
      ["Escrow", PG.fmt.units(e.escrow_units) + " tokens"],
      ["Free for new buy orders", PG.fmt.units(e.free_units) + " tokens"],
      ["Pending withdrawal", PG.fmt.units(e.pending_withdrawal_units) + " tokens"],
      ["Owed, not yet settled", PG.fmt.units(e.owed_pending_units) + " tokens"],
      ["Unclaimed rewards", PG.fmt.units(b.unclaimed_reward_units) + " reward tokens"],
      ["Address", b.address],
    ]);
  }

  async function earnings() {
    const span = Number(el("earn-period").value);
    const now = (await PG.api("/intervals/current")).now_s + 1;
    const h = await PG.api(P + "/history?start_s=" + (now - span) + "&end_s=" + now);
    const sum = (k) => h.rows.reduce((acc, r) => acc + (r[k] || 0), 0);
    facts(el("earnings"), [
      ["Intervals", String(h.rows.length)],
      ["Bought", PG.fmt.kwh(sum("bought_wh"))],
      ["Sold", PG.fmt.kwh(sum("sold_wh"))],
      ["Paid", PG.fmt.units(sum("paid_units")) + " tokens"],
      ["Received", PG.fmt.units(sum("received_units")) + " tokens"],
      ["At the grid tariffs it would have been", PG.fmt.units(sum("grid_cost_units")) + " tokens"],
      ["Saved against the grid", PG.fmt.units(sum("savings_units")) + " tokens"],
      ["Rewarded (verified local energy)", PG.fmt.kwh(sum("reward_wh"))],
      // signed readings (README): an interval whose readings were not verified earns nothing
      ["Intervals not verified", String(h.rows.filter((r) => r.unverified).length)],
    ]);
  }

  function sideName(code) { return Number(code) === 0 ? "buy" : "sell"; }

  async function orders() {
    const [one, standing] = await Promise.all([PG.api("/orders?limit=50"), PG.api("/standing-orders?limit=50")]);
    const tbody = el("orders").tBodies[0];
    tbody.replaceChildren();
    // an operator or auditor opening this page reads every participant's: show this one's
    const rows = one.items.concat(standing.items)
      .filter((o) => o.participant === who)
      .sort((a, b) => (a.received_at < b.received_at ? 1 : -1));
    if (!rows.length) {
      const tr = tbody.insertRow();
      PG.cell(tr, "No signed orders yet.", "muted").colSpan = 7;
    }
    for (const o of rows) {
      const m = o.message;
      const tr = tbody.insertRow();
      tr.dataset.digest = o.digest;
      tr.dataset.status = o.status;
      PG.cell(tr, o.kind === "Order" ? "order" : "standing");
      PG.cell(tr, o.interval_start_s !== null ? PG.fmt.time(o.interval_start_s) : PG.fmt.time(o.valid_from_s) + " – " + PG.fmt.time(o.valid_until_s));
      PG.cell(tr, o.kind === "Order" ? sideName(m.side) : "kind " + m.kind);
      PG.cell(tr, (m.energyWh !== undefined ? m.energyWh : "–") + " Wh");
      PG.cell(tr, PG.fmt.price(Number(o.kind === "Order" ? m.limitPrice : m.price)));
      PG.cell(tr, o.status);
      const td = PG.cell(tr, "");
      if (o.status === "accepted") {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "cancel";
        b.textContent = "Cancel";
        b.setAttribute("aria-label", "Cancel order " + o.digest.slice(0, 10));
        b.addEventListener("click", () => cancel(o.digest).catch((e) => msg("Cancel failed: " + e.message, true)));
        td.appendChild(b);
      }
    }
  }

  async function trades() {
    const t = await PG.api(P + "/trades");
    const tbody = el("trades").tBodies[0];
    tbody.replaceChildren();
    if (!t.items.length) PG.cell(tbody.insertRow(), "No trades in the last day.", "muted").colSpan = 6;
    for (const x of t.items.slice().reverse()) {
      const tr = tbody.insertRow();
      const selling = x.seller === who;
      PG.cell(tr, PG.fmt.time(x.interval_start_s));
      PG.cell(tr, selling ? "sold" : "bought");
      PG.cell(tr, selling ? x.buyer : x.seller);
      PG.cell(tr, x.energy_wh + " Wh");
      PG.cell(tr, PG.fmt.price(selling ? x.seller_price_per_kwh : x.buyer_price_per_kwh));
      PG.cell(tr, PG.fmt.units(selling ? x.seller_amount_units : x.buyer_amount_units));
    }
  }

  async function readings() {
    const r = await PG.api(P + "/readings?limit=24");
    const tbody = el("readings").tBodies[0];
    tbody.replaceChildren();
    for (const x of r.items) {
      const tr = tbody.insertRow();
      PG.cell(tr, PG.fmt.time(x.boundary_s));
      PG.cell(tr, x.device_id);
      PG.cell(tr, x.p_w + " W");
      PG.cell(tr, PG.fmt.kwh(x.import_wh_total));
      PG.cell(tr, PG.fmt.kwh(x.export_wh_total));
      // a signed reading that passed its check is verified; unsigned ones earn no reward
      const state = x.quality !== "ok" ? "" : (x.signed ? ", signed" : ", unsigned");
      PG.cell(tr, x.quality.toUpperCase() + state).title = x.reason || "";
    }
  }

  async function intervals() {
    const now = await PG.api("/intervals/current");
    const sel = el("o-interval");
    sel.replaceChildren();
    for (let k = 0; k < 8; k++) {
      const start = now.next_interval_start_s + k * now.interval_s;
      sel.add(new Option(PG.fmt.time(start) + (k === 0 ? " (next open)" : ""), String(start)));
    }
    return now;
  }

  async function signAndPost(kind, message, path) {
    const eth = PG.wallet();
    const me = PG.me();
    const typed = {
      types: { EIP712Domain: site.eip712_types.EIP712Domain, [kind]: site.eip712_types[kind] },
      primaryType: kind,
      domain: site.eip712_domain,
      message: message,
    };
    const accounts = await eth.request({ method: "eth_requestAccounts" });
    if (!accounts.length || accounts[0].toLowerCase() !== me.address.toLowerCase()) {
      throw new Error("the wallet's account is not the one signed in (" + me.address + ")");
    }
    const signature = await eth.request({ method: "eth_signTypedData_v4", params: [me.address, JSON.stringify(typed)] });
    return PG.api(path, { method: "POST", json: { typedData: typed, signature: signature } });
  }

  async function place(evt) {
    evt.preventDefault();
    const me = PG.me();
    const start = Number(el("o-interval").value);
    const energy = Number(el("o-energy").value);
    const price = Math.round(Number(el("o-price").value) * 1e6);
    if (!Number.isInteger(energy) || energy < 1) { msg("Energy must be a whole number of Wh, at least 1.", true); return; }
    if (!Number.isFinite(price) || price < 0) { msg("The price must be a number of tokens per kWh.", true); return; }
    el("o-submit").disabled = true;
    try {
      const message = {
        participant: me.address,
        intervalStart: String(start),
        side: el("o-side").value === "buy" ? "0" : "1",
        energyWh: String(energy),
        limitPrice: String(price),
        nonce: nonce(),
        deadline: String(start - site.gate_closure_s),
      };
      const ack = await signAndPost("Order", message, "/orders");
      msg("Order placed for " + PG.fmt.time(start) + " (digest " + ack.digest.slice(0, 12) + "…).", false);
      await orders();
      await balances();
    } catch (e) {
      msg("Not placed: " + e.message + (e.code === 4001 ? " (declined in the wallet)" : ""), true);
    } finally {
      el("o-submit").disabled = false;
    }
  }

  function standingKindShown() {
    const kind = Number(el("s-kind").value);
    for (const x of document.querySelectorAll(".s-fixed")) x.hidden = !(kind === 2 || kind === 3);
    for (const x of document.querySelectorAll(".s-battery")) x.hidden = kind !== 4;
  }

  async function placeStanding(evt) {
    evt.preventDefault();
    const me = PG.me();
    const kind = Number(el("s-kind").value);
    const fixed = kind === 2 || kind === 3, battery = kind === 4;
    const units = (id) => Math.round(Number(el(id).value) * 1e6);
    const now = await PG.api("/intervals/current");
    const from = now.next_interval_start_s;
    const until = from + Number(el("s-hours").value) * 3600;
    el("s-submit").disabled = true;
    try {
      const message = {
        participant: me.address,
        kind: String(kind),
        energyWh: String(fixed ? Number(el("s-energy").value) : 0),
        price: String(units("s-price")),
        dischargePrice: String(battery ? units("s-discharge") : 0),
        minSocPermille: String(battery ? Number(el("s-soc-min").value) * 10 : 0),
        maxSocPermille: String(battery ? Number(el("s-soc-max").value) * 10 : 0),
        validFrom: String(from),
        validUntil: String(until),
        nonce: nonce(),
        deadline: String(from - site.gate_closure_s),
      };
      const ack = await signAndPost("StandingOrder", message, "/standing-orders");
      msg("Standing order set from " + PG.fmt.time(from) + " to " + PG.fmt.time(until) + " (digest " + ack.digest.slice(0, 12) + "…).", false);
      await orders();
    } catch (e) {
      msg("Not set: " + e.message + (e.code === 4001 ? " (declined in the wallet)" : ""), true);
    } finally {
      el("s-submit").disabled = false;
    }
  }

  async function cancel(digest) {
    const me = PG.me();
    const now = await PG.api("/intervals/current");
    const message = { participant: me.address, orderDigest: digest, nonce: nonce(), deadline: String(now.now_s + now.interval_s) };
    await signAndPost("Cancel", message, "/cancels");
    msg("Cancelled " + digest.slice(0, 12) + "….", false);
    await orders();
  }

  async function refresh() {
    await Promise.all([balances(), earnings(), orders(), trades(), readings()]);
    document.body.dataset.prosumerLoaded = "1";
  }

  document.addEventListener("DOMContentLoaded", () => {
    el("order-form").addEventListener("submit", place);
    el("standing-form").addEventListener("submit", (e) => { placeStanding(e).catch((err) => msg("Not set: " + err.message, true)); });
    el("s-kind").addEventListener("change", standingKindShown);
    standingKindShown();
    el("earn-period").addEventListener("change", () => earnings().catch((e) => PG.setStatus(e.message)));
    PG.onReady(async () => {
      try {
        site = await PG.api("");
        await intervals();
        await refresh();
      } catch (e) {
        PG.setStatus("Could not load the account: " + e.message);
      }
    });
    document.body.addEventListener("pg:interval", () => { intervals().then(refresh).catch((e) => PG.setStatus("Account not refreshed: " + e.message)); });
  });
})();

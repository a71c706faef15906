/* PeerGrid dashboard: sign-in with the browser's wallet, the API, live events.
 *
 * The session token (from EIP-4361 sign-in) lives in this tab's sessionStorage and is sent as
 * "Authorization: Bearer" on every API call and htmx request; never as a cookie.
 * Pages call PG.onReady(fn): fn(me) runs once the session is known to be valid for the page.
 * Live events (GET .../events, server-sent events) are read with fetch(), since EventSource
 * cannot send the Authorization header; each event is re-dispatched on <body> as
 * "pg:interval" / "pg:settlement" (htmx triggers listen for these).
 */
(function () {
  "use strict";
  const body = document.body;
  const api = body.dataset.api;
  const ui = body.dataset.ui;
  const site = body.dataset.site;
  const page = body.dataset.page;
  const roles = (body.dataset.roles || "").split(" ").filter(Boolean);
  const key = "peergrid.token." + site;
  const readyFns = [];
  let me = null;
  let streamAbort = null;

  function $(sel, root) { return (root || document).querySelector(sel); }
  function token() { return sessionStorage.getItem(key); }
  function setStatus(text) { const el = $("#status-line"); if (el) el.textContent = text || ""; }

  class ApiError extends Error {
    constructor(status, code, reason) { super(reason); this.status = status; this.code = code; }
  }

  async function call(path, options) {
    const opts = Object.assign({ method: "GET" }, options || {});
    const headers = Object.assign({ "Accept": "application/json" }, opts.headers || {});
    const t = token();
    if (t && !opts.anonymous) headers["Authorization"] = "Bearer " + t;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
    }
    const reply = await fetch(api + path, { method: opts.method, headers: headers, body: opts.body });
    if (opts.raw) {
      if (!reply.ok) throw new ApiError(reply.status, "http_error", await reply.text());
      return reply;
    }
    let data = null;
    const text = await reply.text();
    if (text) { try { data = JSON.parse(text); } catch (e) { data = { reason: text }; } }
    if (!reply.ok) {
      const err = new ApiError(reply.status, (data && data.code) || "http_error",
                               (data && data.reason) || reply.statusText);
      if (reply.status === 401 && !opts.anonymous) { signedOut(err.message); }
      throw err;
    }
    return data;
  }

  function wallet() {
    if (!window.ethereum || typeof window.ethereum.request !== "function") {
      throw new Error("No browser wallet found: install or enable an Ethereum wallet (EIP-1193) and reload.");
    }
    return window.ethereum;
  }

  function utf8Hex(text) {
    const bytes = new TextEncoder().encode(text);
    let hex = "0x";
    for (const b of bytes) hex += b.toString(16).padStart(2, "0");
    return hex;
  }

  async function signIn() {
    const errEl = $("#signin-error");
    errEl.textContent = "";
    try {
      const eth = wallet();
      const accounts = await eth.request({ method: "eth_requestAccounts" });
      if (!accounts || !accounts.length) throw new Error("the wallet gave no account");
      const address = accounts[0];
      const info = await call("", { anonymous: true });
      const chainHex = await eth.request({ method: "eth_chainId" });
      if (parseInt(chainHex, 16) !== info.chain_id) {
        throw new Error("the wallet is on chain " + parseInt(chainHex, 16) + ", this site settles on chain " + info.chain_id + ": switch networks");
      }
      const nonce = await call("/auth/nonce", { method: "POST", json: { address: address }, anonymous: true });
      const signature = await eth.request({ method: "personal_sign", params: [utf8Hex(nonce.message), address] });
      const session = await call("/auth/signin", { method: "POST", json: { message: nonce.message, signature: signature }, anonymous: true });
      sessionStorage.setItem(key, session.token);
      await start();
    } catch (e) {
      errEl.textContent = "Sign-in failed: " + (e && e.message ? e.message : String(e)) + (e && e.code === 4001 ? " (you declined in the wallet)" : "");
    }
  }

  function signedOut(reason) {
    sessionStorage.removeItem(key);
    me = null;
    if (streamAbort) { streamAbort.abort(); streamAbort = null; }
    $("#main").hidden = true;
    $("#nav").hidden = true;
    $("#who").hidden = true;
    $("#signin").hidden = false;
    if (reason) $("#signin-error").textContent = reason;
    delete body.dataset.ready;
  }

  function home(principal) {
    if (principal.role === "prosumer") return ui + "/prosumer/" + encodeURIComponent(principal.participant);
    if (principal.role === "auditor") return ui + "/auditor";
    return ui + "/operator";
  }

  function refuse(text) {
    const el = $("#refused");
    el.textContent = text;
    el.hidden = false;
    $("#main").hidden = true;
  }

  async function start() {
    if (!token()) { signedOut(); return; }
    try {
      me = await call("/auth/me");
    } catch (e) {
      if (e.status !== 401) signedOut("Could not check the session: " + e.message);
      return;
    }
    $("#signin").hidden = true;
    $("#who").hidden = false;
    $("#who-text").textContent = me.role + (me.participant ? " " + me.participant : "") + " · " + me.address.slice(0, 6) + "…" + me.address.slice(-4);
    $("#nav").hidden = false;
    for (const a of document.querySelectorAll("#nav [data-role]")) {
      a.hidden = !a.dataset.role.split(" ").includes(me.role);
    }
    const acct = $("#nav-account");
    if (acct && me.participant) acct.href = ui + "/prosumer/" + encodeURIComponent(me.participant);
    if (page === "signin") { window.location.assign(home(me)); return; }
    if (page === "prosumer") {
      const who = body.dataset.participant;
      if (me.role === "prosumer" && me.participant !== who) {
        refuse("This is " + who + "'s page: a prosumer may see only their own account. Your page is " + me.participant + "'s.");
        return;
      }
    } else if (!roles.includes(me.role)) {
      refuse("This page is for " + roles.map((r) => r + "s").join(" and ") + "; you are signed in as a " + me.role + ".");
      return;
    }
    $("#refused").hidden = true;
    $("#main").hidden = false;
    body.dataset.ready = "1";
    for (const fn of readyFns) {
      try { fn(me); } catch (e) { console.error(e); }
    }
    const pending = new Set(document.querySelectorAll("#main [hx-trigger*='pg:ready']"));
    const swapped = (e) => {
      pending.delete(e.detail.elt);
      if (!pending.size) {
        body.dataset.loaded = String(Math.round(performance.now()));  // every part swapped in
        document.removeEventListener("htmx:afterSettle", swapped);
      }
    };
    if (pending.size) document.addEventListener("htmx:afterSettle", swapped);
    else body.dataset.loaded = String(Math.round(performance.now()));
    body.dispatchEvent(new CustomEvent("pg:ready", { detail: me }));
    listen();
  }

  /* Server-sent events over fetch (EventSource cannot send Authorization). */
  async function listen() {
    if (streamAbort) streamAbort.abort();
    const controller = new AbortController();
    streamAbort = controller;
    let delay = 1000;
    let reconnected = false;
    while (!controller.signal.aborted && token()) {
      try {
        const reply = await fetch(api + "/events", {
          headers: { "Authorization": "Bearer " + token(), "Accept": "text/event-stream" },
          signal: controller.signal,
        });
        if (reply.status === 401) { signedOut("Your session ended: sign in again."); return; }
        if (!reply.ok || !reply.body) throw new Error("events: HTTP " + reply.status);
        body.dataset.live = "1";
        setStatus("Live: updates arrive by themselves.");
        if (reconnected) body.dispatchEvent(new CustomEvent("pg:interval", { detail: {} }));  // what was missed
        reconnected = true;
        delay = 1000;
        const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            dispatch(block);
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      delete body.dataset.live;
      setStatus("Reconnecting to live updates…");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30000);
    }
  }

  function dispatch(block) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let detail = null;
    try { detail = JSON.parse(data.join("\n")); } catch (e) { return; }
    if (type === "session_ended") { signedOut("Your session ended: " + (detail.reason || "sign in again") + "."); return; }
    if (type === "lagged") {  // events were dropped for this tab: refresh everything once
      body.dispatchEvent(new CustomEvent("pg:interval", { detail: {} }));
      return;
    }
    body.dispatchEvent(new CustomEvent("pg:" + type, { detail: detail }));
  }

  /* htmx: every request carries the session; errors are shown in place. */
  document.addEventListener("htmx:configRequest", (e) => {
    const t = token();
    if (t) e.detail.headers["Authorization"] = "Bearer " + t;
  });
  document.addEventListener("htmx:responseError", (e) => {
    const xhr = e.detail.xhr;
    if (xhr.status === 401) { signedOut("Your session ended: sign in again."); return; }
    let reason = xhr.statusText;
    try { reason = JSON.parse(xhr.responseText).reason || reason; } catch (err) { /* not JSON */ }
    const target = e.detail.target;
    if (target) {
      const p = document.createElement("p");
      p.className = "error";
      p.setAttribute("role", "alert");
      p.textContent = "Could not load: " + reason;
      target.replaceChildren(p);
    }
  });
  document.addEventListener("htmx:afterSwap", () => { tickCountdowns(); });

  function tickCountdowns() {
    const skew = Date.now() / 1000;
    for (const el of document.querySelectorAll(".countdown[data-deadline]")) {
      if (!el.dataset.offset) el.dataset.offset = String(Number(el.dataset.now) - skew);
      const now = Date.now() / 1000 + Number(el.dataset.offset);
      const left = Math.round(Number(el.dataset.deadline) - now);
      el.textContent = left > 0 ? fmtDuration(left) : "closed";
    }
  }
  function fmtDuration(s) {
    const m = Math.floor(s / 60), r = s % 60;
    return m ? m + " min " + String(r).padStart(2, "0") + " s" : r + " s";
  }
  setInterval(tickCountdowns, 1000);
  setInterval(() => { if (body.dataset.ready) body.dispatchEvent(new CustomEvent("pg:tick")); }, 30000);

  /* formatting shared by the pages: integers in named units */
  const fmt = {
    kwh: (wh) => (wh === null || wh === undefined) ? "–" : (wh / 1000).toFixed(2) + " kWh",
    price: (u) => (u === null || u === undefined) ? "–" : (u / 1e6).toFixed(4) + "/kWh",
    units: (u) => (u === null || u === undefined) ? "–" : (u / 1e6).toFixed(6),
    time: (s) => new Date(s * 1000).toISOString().slice(0, 16).replace("T", " ") + "Z",
  };

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  window.PG = {
    api: call, ApiError: ApiError, site: site, ui: ui, apiBase: api, fmt: fmt, cell: cell,
    me: () => me, token: token, wallet: wallet, setStatus: setStatus,
    onReady: (fn) => { readyFns.push(fn); if (me && body.dataset.ready) fn(me); },
  };

  document.addEventListener("DOMContentLoaded", () => {
    $("#signin-button").addEventListener("click", signIn);
    $("#signout").addEventListener("click", async () => {
      try { await call("/auth/signout", { method: "POST" }); } catch (e) { /* already gone */ }
      signedOut("Signed out.");
    });
    start();
  });
})();

/* PeerGrid feeder map: an SVG drawn from the grid's pandapower model (GET grid/map) and an
 * interval's AC results (GET grid/state): buses coloured by voltage, lines by loading,
 * participants marked, trades drawable as flows. One <circle class="bus"> per in-service bus.
 * Zoom: wheel, +/- keys, or a feeder from the list; pan: drag or arrow keys.
 * Colours: a blue-orange diverging scale for voltage and viridis for loading (both readable
 * with the common colour-vision deficiencies; the legend names every class), and violations
 * are marked by shape too (a thick ring, a dashed line), not by colour alone.
 */
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const V_EDGES = [0.95, 0.97, 0.99, 1.01, 1.03, 1.05];   // 7 classes v0..v6
  const V_LABELS = ["< 0.95 (violation)", "0.95–0.97", "0.97–0.99", "0.99–1.01", "1.01–1.03", "1.03–1.05", "> 1.05 (violation)"];
  const L_EDGES = [20, 40, 60, 80, 100];                  // 6 classes l0..l5
  const L_LABELS = ["< 20 %", "20–40 %", "40–60 %", "60–80 %", "80–100 %", "> 100 % (violation)"];

  function vClass(vm) {
    if (vm === undefined || vm === null) return "vn";
    let k = 0;
    while (k < V_EDGES.length && vm >= V_EDGES[k]) k++;
    return "v" + k;
  }
  function lClass(pct) {
    if (pct === undefined || pct === null) return "ln";
    let k = 0;
    while (k < L_EDGES.length && pct >= L_EDGES[k]) k++;
    return "l" + k;
  }

  const state = { geo: null, grid: null, view: null, full: null, drag: null };

  function el(id) { return document.getElementById(id); }

  function esc(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function setView(v) {
    state.view = v;
    const svg = el("map");
    svg.setAttribute("viewBox", v.x.toFixed(2) + " " + v.y.toFixed(2) + " " + v.w.toFixed(2) + " " + v.h.toFixed(2));
    // buses keep about their size on screen when zoomed in (growing a little, up to 9 px)
    const px = svg.getBoundingClientRect().width || 800;
    const unitsPerPx = Math.max(v.w / px, v.h / (svg.getBoundingClientRect().height || 600));
    const basePx = Number(svg.dataset.r || 3) / Math.max(state.fullUnitsPerPx || unitsPerPx, 1e-9);
    const zoomed = state.full ? state.full.w / v.w : 1;
    const rPx = Math.min(9, Math.max(1.5, basePx * Math.pow(zoomed, 0.35)));
    const buses = el("map-buses");
    if (buses) buses.style.setProperty("--r", (rPx * unitsPerPx).toFixed(3) + "px");
  }

  function bboxOf(indices) {
    const b = state.geo.buses;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const i of indices) {
      x0 = Math.min(x0, b.x[i]); x1 = Math.max(x1, b.x[i]);
      y0 = Math.min(y0, b.y[i]); y1 = Math.max(y1, b.y[i]);
    }
    const pad = Math.max(10, 0.06 * Math.max(x1 - x0, y1 - y0));
    return { x: x0 - pad, y: y0 - pad, w: (x1 - x0) + 2 * pad, h: (y1 - y0) + 2 * pad };
  }

  function draw() {
    const g = state.geo;
    const svg = el("map");
    const b = g.buses, br = g.branches;
    const n = b.name.length;
    const shown = [];
    for (let i = 0; i < n; i++) if (b.in_service[i]) shown.push(i);
    const r = Math.max(0.6, Math.min(9, 260 / Math.sqrt(Math.max(shown.length, 1))));
    svg.dataset.r = String(r);
    const parts = [];
    parts.push('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="5" markerHeight="5" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>');
    parts.push('<g id="map-branches">');
    for (let k = 0; k < br.id.length; k++) {
      const f = br.from[k], t = br.to[k];
      const cls = "branch " + (br.kind[k] === "trafo" ? "trafo " : "") + (br.in_service[k] ? "" : "open ");
      parts.push('<line class="' + cls + '" data-k="' + k + '" x1="' + b.x[f] + '" y1="' + b.y[f] + '" x2="' + b.x[t] + '" y2="' + b.y[t] + '"/>');
    }
    parts.push('</g><g id="map-flows"></g><g id="map-buses">');
    for (const i of shown) {
      parts.push('<circle class="bus vn' + (b.slack[i] ? " slack" : "") + '" data-i="' + i + '" cx="' + b.x[i] + '" cy="' + b.y[i] + '" r="' + r.toFixed(2) + '"/>');
    }
    parts.push('</g><g id="map-participants">');
    for (const p of g.participants) {
      if (p.at === null || p.at === undefined) continue;
      const x = b.x[p.at], y = b.y[p.at], s = r * 1.6;
      parts.push('<path class="participant" data-p="' + esc(p.participant) + '" d="M' + (x) + ' ' + (y - s - r) + ' l' + s + ' ' + (-s) + ' h' + (-2 * s) + ' z"><title>' + esc(p.participant) + " at " + esc(p.bus) + '</title></path>');
    }
    parts.push("</g>");
    svg.innerHTML = parts.join("");
    svg.dataset.buses = String(shown.length);
    const pad = 0.04 * Math.max(g.width, g.height);  // room for the markers above the buses
    state.full = { x: -pad, y: -pad, w: g.width + 2 * pad, h: g.height + 2 * pad };
    const rect = svg.getBoundingClientRect();
    state.fullUnitsPerPx = Math.max(state.full.w / (rect.width || 800), state.full.h / (rect.height || 600));
    setView(state.full);
    const sel = el("map-feeder");
    sel.replaceChildren(new Option("Whole grid", ""));
    for (const f of g.feeders) sel.add(new Option(f, f));
    legend();
  }

  function legend() {
    const box = el("map-legend");
    const parts = ['<span class="lg-title">Bus voltage [p.u.]</span>'];
    V_LABELS.forEach((t, k) => parts.push('<span class="lg-item"><svg width="14" height="14" aria-hidden="true"><circle class="bus v' + k + '" cx="7" cy="7" r="5"/></svg>' + esc(t) + "</span>"));
    parts.push('<span class="lg-item"><svg width="14" height="14" aria-hidden="true"><circle class="bus vn" cx="7" cy="7" r="5"/></svg>no AC result</span>');
    parts.push('<span class="lg-title">Line loading</span>');
    L_LABELS.forEach((t, k) => parts.push('<span class="lg-item"><svg width="22" height="10" aria-hidden="true"><line class="branch l' + k + '" x1="1" y1="5" x2="21" y2="5"/></svg>' + esc(t) + "</span>"));
    parts.push('<span class="lg-item"><svg width="14" height="14" aria-hidden="true"><path class="participant" d="M7 12 l5 -8 h-10 z"/></svg>participant</span>');
    box.innerHTML = parts.join("");
  }

  function paint() {
    const g = state.geo, s = state.grid;
    if (!g) return;
    const b = g.buses, br = g.branches;
    const vm = (s && s.vm_pu) || {};
    const loading = (s && s.loading_pct) || {};
    const mode = el("map-mode").value;
    for (const c of el("map-buses").children) {
      const i = Number(c.dataset.i);
      const v = vm[b.name[i]];
      c.setAttribute("class", "bus " + vClass(v) + (b.slack[i] ? " slack" : ""));
    }
    for (const line of el("map-branches").children) {
      const k = Number(line.dataset.k);
      const cls = ["branch"];
      if (br.kind[k] === "trafo") cls.push("trafo");
      if (!br.in_service[k]) cls.push("open");
      if (mode === "loading") cls.push(lClass(loading[br.id[k]]));
      line.setAttribute("class", cls.join(" "));
    }
    flows();
    const label = el("map-interval");
    label.textContent = s ? ("Interval " + s.interval_start + ": " + s.status + (s.has_ac_detail ? "" : " (no per-bus AC results stored)") + (s.violations.length ? ", " + s.violations.length + " AC violation(s)" : "")) : "No cleared interval yet.";
    el("map").dataset.interval = s ? String(s.interval_start_s) : "";
  }

  function flows() {
    const box = el("map-flows");
    box.replaceChildren();
    const s = state.grid;
    if (!el("map-flows-box").checked || !s) return;
    const b = state.geo.buses;
    const where = {};
    b.name.forEach((n, i) => { where[n] = i; });
    const max = Math.max(1, ...s.flows.map((f) => f.energy_wh));
    for (const f of s.flows) {
      const a = where[f.seller_bus], c = where[f.buyer_bus];
      if (a === undefined || c === undefined) continue;
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("class", "flow");
      line.setAttribute("x1", b.x[a]); line.setAttribute("y1", b.y[a]);
      line.setAttribute("x2", b.x[c]); line.setAttribute("y2", b.y[c]);
      line.setAttribute("marker-end", "url(#arrow)");
      line.setAttribute("stroke-width", (1.2 + 3.8 * f.energy_wh / max).toFixed(2));
      const title = document.createElementNS(SVG, "title");
      title.textContent = f.seller_bus + " → " + f.buyer_bus + ": " + f.energy_wh + " Wh";
      line.appendChild(title);
      box.appendChild(line);
    }
  }

  function tip(evt) {
    const t = evt.target;
    const box = el("map-tip");
    if (!t.classList || !t.classList.contains("bus") || !state.geo) { box.hidden = true; return; }
    const i = Number(t.dataset.i);
    const b = state.geo.buses;
    const s = state.grid || { vm_pu: {}, prices_per_kwh: {} };
    const name = b.name[i];
    const vm = s.vm_pu[name];
    const price = s.prices_per_kwh[name];
    box.innerHTML = "<strong>" + esc(name) + "</strong><br>" + esc(b.vn_kv[i]) + " kV" + (b.feeder[i] ? " · " + esc(b.feeder[i]) : "") +
      "<br>voltage " + (vm === undefined ? "–" : vm.toFixed(4) + " p.u.") +
      "<br>nodal price " + (price === undefined ? "–" : (price / 1e6).toFixed(4) + "/kWh");
    const wrap = el("map").getBoundingClientRect();
    box.style.left = (evt.clientX - wrap.left + 12) + "px";
    box.style.top = (evt.clientY - wrap.top + 12) + "px";
    box.hidden = false;
  }

  function zoom(factor, cx, cy) {
    const v = state.view;
    const x = cx === undefined ? v.x + v.w / 2 : cx;
    const y = cy === undefined ? v.y + v.h / 2 : cy;
    setView({ x: x - (x - v.x) * factor, y: y - (y - v.y) * factor, w: v.w * factor, h: v.h * factor });
  }

  function toSvg(evt) {
    const rect = el("map").getBoundingClientRect();
    const v = state.view;
    const scale = Math.max(v.w / rect.width, v.h / rect.height);
    const ox = v.x + (v.w - rect.width * scale) / 2, oy = v.y + (v.h - rect.height * scale) / 2;
    return { x: ox + (evt.clientX - rect.left) * scale, y: oy + (evt.clientY - rect.top) * scale, scale: scale };
  }

  function wire() {
    const svg = el("map");
    svg.addEventListener("mousemove", tip);
    svg.addEventListener("mouseleave", () => { el("map-tip").hidden = true; });
    svg.addEventListener("wheel", (evt) => {
      evt.preventDefault();
      const p = toSvg(evt);
      zoom(evt.deltaY > 0 ? 1.25 : 0.8, p.x, p.y);
    }, { passive: false });
    svg.addEventListener("pointerdown", (evt) => { state.drag = { x: evt.clientX, y: evt.clientY, v: state.view }; });
    window.addEventListener("pointerup", () => { state.drag = null; });
    svg.addEventListener("pointermove", (evt) => {
      if (!state.drag) return;
      const rect = svg.getBoundingClientRect();
      const v = state.drag.v;
      const scale = Math.max(v.w / rect.width, v.h / rect.height);
      setView({ x: v.x - (evt.clientX - state.drag.x) * scale, y: v.y - (evt.clientY - state.drag.y) * scale, w: v.w, h: v.h });
    });
    svg.addEventListener("keydown", (evt) => {
      const v = state.view, step = 0.1;
      const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      if (evt.key === "+" || evt.key === "=") zoom(0.8);
      else if (evt.key === "-") zoom(1.25);
      else if (evt.key === "0") setView(state.full);
      else if (moves[evt.key]) setView({ x: v.x + moves[evt.key][0] * v.w, y: v.y + moves[evt.key][1] * v.h, w: v.w, h: v.h });
      else return;
      evt.preventDefault();
    });
    el("map-reset").addEventListener("click", () => { el("map-feeder").value = ""; setView(state.full); });
    el("map-feeder").addEventListener("change", (evt) => {
      const f = evt.target.value;
      if (!f) { setView(state.full); return; }
      const idx = [];
      state.geo.buses.feeder.forEach((x, i) => { if (x === f) idx.push(i); });
      if (idx.length) setView(bboxOf(idx));
    });
    el("map-mode").addEventListener("change", paint);
    el("map-flows-box").addEventListener("change", flows);
  }

  async function stateOf(intervalId) {
    let id = intervalId;
    if (!id) {  // the latest interval, if there is one yet (asking for none would be a 404)
      const page = await PG.api("/intervals?limit=1");
      id = page.items.length ? page.items[0].interval_start_s : null;
    }
    return id ? PG.api("/grid/state?interval_start_s=" + id) : null;
  }

  async function loadState(intervalId) {
    state.grid = await stateOf(intervalId);
    paint();
  }

  let early = null;  // the geometry, asked for while the session is being checked

  async function init() {
    const t0 = performance.now();
    const [geo, grid] = await Promise.all([early || PG.api("/grid/map"), stateOf(null)]);
    state.geo = geo;
    draw();
    state.grid = grid;
    paint();
    const svg = el("map");
    svg.dataset.renderMs = String(Math.round(performance.now() - t0));  // fetch, draw, paint
    svg.dataset.rendered = String(Math.round(performance.now()));  // since the page was asked for
    svg.dispatchEvent(new CustomEvent("pg:map-rendered", { bubbles: true }));
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!el("map")) return;
    wire();
    if (PG.token()) {
      early = PG.api("/grid/map");
      early.catch(() => null);  // a refused session is handled by the page's own check
    }
    PG.onReady(() => { init().catch((e) => { el("map-interval").textContent = "Map unavailable: " + e.message; }); });
    document.body.addEventListener("pg:interval", (evt) => {
      if (state.geo) loadState(evt.detail && evt.detail.interval_start_s).catch((e) => { el("map-interval").textContent = "Map not refreshed: " + e.message; });
    });
  });
  window.PGMap = { vClass: vClass, lClass: lClass, state: state };
})();

// Live dashboard: polls GET /v1/totals every second with If-None-Match (a 304 costs the
// service almost nothing) and updates the page in place; no framework, no build step.
"use strict";

const POLL_MS = 1000;
const DAYS = 30;
// ISO 4217 minor-unit exponents that differ from 2 (shared/money.py).
const EXPONENT = { JPY: 0, KRW: 0, VND: 0, KWD: 3, BHD: 3, OMR: 3, JOD: 3, TND: 3 };

const state = { etag: null, items: [], selected: null, daily: { key: null, etag: null } };
const $ = (id) => document.getElementById(id);

function formatMinor(amount, currency) {
  const exponent = EXPONENT[currency] ?? 2;
  const sign = amount < 0 ? "-" : "";
  const digits = String(Math.abs(amount)).padStart(exponent + 1, "0");
  const units = digits.slice(0, digits.length - exponent) || "0";
  const grouped = units.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const minor = exponent ? "." + digits.slice(digits.length - exponent) : "";
  return `${sign}${grouped}${minor} ${currency}`;
}

function keyOf(item) {
  return `${item.project_id}:${item.currency}`;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) {
    node.textContent = text;
    return true;
  }
  return false;
}

function newRow(item) {
  const row = el("tr");
  row.dataset.projectId = item.project_id;
  row.dataset.key = keyOf(item);
  const bar = el("div", { className: "bar" }, [el("div", { className: "fill" })]);
  row.append(
    el("td", { className: "charity" }),
    el("td", { className: "project" }),
    el("td", { className: "num net" }),
    el("td", { className: "goal" }, [bar, el("div", { className: "bar-label" })]),
    el("td", { className: "num donations" }),
    el("td", { className: "num sellers" }),
    el("td", { className: "state" }, [el("span", { className: "badge" })]),
  );
  row.addEventListener("click", () => select(item.project_id));
  return row;
}

function updateRow(row, item) {
  const q = (cls) => row.querySelector(cls);
  let changed = false;
  setText(q(".charity"), item.charity_name ?? "—");
  setText(q(".project"), item.name ?? `${item.project_id} (not in registry)`);
  changed = setText(q(".net"), formatMinor(item.net_minor, item.currency)) || changed;
  changed = setText(q(".donations"), item.donation_count.toLocaleString("en")) || changed;
  changed = setText(q(".sellers"), item.seller_count.toLocaleString("en")) || changed;
  const fill = q(".fill");
  const label = q(".bar-label");
  if (item.goal_minor) {
    const pct = Math.max(0, Math.min(100, (item.net_minor / item.goal_minor) * 100));
    fill.style.width = `${pct.toFixed(1)}%`;
    setText(label, `${pct.toFixed(1)}% of ${formatMinor(item.goal_minor, item.currency)}`);
  } else {
    fill.style.width = "0%";
    setText(label, "no goal set");
  }
  const badge = q(".badge");
  setText(badge, item.status ?? "unregistered");
  badge.className = `badge ${item.status === "active" ? "" : "closed"}`;
  row.classList.toggle("selected", item.project_id === state.selected);
  return changed;
}

function render(items, firstRender) {
  const tbody = $("rows");
  const existing = new Map([...tbody.children].map((row) => [row.dataset.key, row]));
  const wanted = new Set();
  items.forEach((item, index) => {
    const key = keyOf(item);
    wanted.add(key);
    let row = existing.get(key);
    if (!row) {
      row = newRow(item);
    }
    if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] ?? null);
    if (updateRow(row, item) && !firstRender) {
      row.classList.remove("flash");
      void row.offsetWidth; // restart the animation
      row.classList.add("flash");
    }
  });
  for (const [key, row] of existing) if (!wanted.has(key)) row.remove();
  $("empty").hidden = items.length > 0;
  renderSummary(items);
}

function renderSummary(items) {
  const byCurrency = new Map();
  let donations = 0;
  for (const item of items) {
    byCurrency.set(item.currency, (byCurrency.get(item.currency) ?? 0) + item.net_minor);
    donations += item.donation_count;
  }
  const cards = [
    ...[...byCurrency].map(([currency, net]) => ["Net raised", formatMinor(net, currency)]),
    ["Donations", donations.toLocaleString("en")],
    ["Projects", items.filter((i) => i.status).length.toLocaleString("en")],
  ];
  const summary = $("summary");
  summary.replaceChildren(
    ...cards.map(([label, value]) =>
      el("div", { className: "card" }, [
        el("div", { className: "label", textContent: label }),
        el("div", { className: "value", textContent: value }),
      ]),
    ),
  );
}

function setStatus(ok, text) {
  $("live-dot").className = `dot ${ok ? "live" : "down"}`;
  setText($("status"), text);
}

async function poll() {
  try {
    const headers = state.etag ? { "If-None-Match": state.etag } : {};
    const response = await fetch("/v1/totals", { cache: "no-store", headers });
    if (response.status === 200) {
      const body = await response.json();
      const first = state.etag === null;
      state.etag = response.headers.get("ETag");
      state.items = body.items;
      if (state.selected === null && body.items.length) {
        const active = body.items.find((i) => i.donation_count > 0) ?? body.items[0];
        state.selected = active.project_id;
      }
      render(body.items, first);
      await refreshChart(false);
      setStatus(true, `live · updated ${new Date(body.as_of).toLocaleTimeString()}`);
    } else if (response.status === 304) {
      setStatus(true, `live · ${state.items.length} projects`);
    } else {
      setStatus(false, `totals unavailable (HTTP ${response.status})`);
    }
  } catch (error) {
    setStatus(false, `offline: ${error.message}`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function select(projectId) {
  state.selected = projectId;
  for (const row of $("rows").children) {
    row.classList.toggle("selected", row.dataset.projectId === projectId);
  }
  refreshChart(true);
}

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

async function refreshChart(force) {
  const item = state.items.find((i) => i.project_id === state.selected);
  if (!item) {
    $("chart-panel").hidden = true;
    return;
  }
  const to = new Date();
  const from = new Date(to.getTime() - (DAYS - 1) * 86400000);
  const key = `${item.project_id}:${isoDay(from)}:${isoDay(to)}`;
  if (force || state.daily.key !== key) state.daily = { key, etag: null };
  const headers = state.daily.etag ? { "If-None-Match": state.daily.etag } : {};
  const url = `/v1/projects/${item.project_id}/totals/daily?from=${isoDay(from)}&to=${isoDay(to)}`;
  const response = await fetch(url, { cache: "no-store", headers });
  if (response.status !== 200) return;
  state.daily.etag = response.headers.get("ETag");
  const days = await response.json();
  $("chart-panel").hidden = false;
  setText($("chart-title"), `Daily donations: ${item.name ?? item.project_id}`);
  drawChart(days, from, item.currency);
}

function drawChart(days, from, currency) {
  const byDay = new Map(days.map((d) => [d.date, d]));
  const series = [];
  for (let n = 0; n < DAYS; n++) {
    const date = isoDay(new Date(from.getTime() + n * 86400000));
    const day = byDay.get(date) ?? { donated_minor: 0, reversed_minor: 0, donation_count: 0 };
    series.push({ date, ...day });
  }
  const width = 600, height = 260, left = 84, bottom = 24, top = 10;
  const max = Math.max(1, ...series.map((d) => Math.max(d.donated_minor, d.reversed_minor)));
  const slot = (width - left) / series.length;
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  for (const fraction of [0, 0.5, 1]) {
    const v = Math.round(max * fraction);
    add("line", { x1: left, x2: width, y1: y(v), y2: y(v), stroke: "#e3e6eb" });
    add("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11,
                  fill: "#6b7385" }, formatMinor(v, currency));
  }
  series.forEach((d, i) => {
    const x = left + i * slot;
    const w = Math.max(2, slot * 0.42);
    const bar = add("rect", { x: x + slot * 0.08, y: y(d.donated_minor), width: w,
      height: y(0) - y(d.donated_minor), fill: "#1f8a5b", class: "donated" });
    bar.dataset.date = d.date;
    bar.dataset.value = d.donated_minor;
    add("title", {}, `${d.date}: ${formatMinor(d.donated_minor, currency)} donated, ` +
      `${formatMinor(d.reversed_minor, currency)} reversed, ${d.donation_count} donations`);
    svg.lastChild.previousSibling.append(svg.lastChild);
    add("rect", { x: x + slot * 0.08 + w, y: y(d.reversed_minor), width: w,
      height: y(0) - y(d.reversed_minor), fill: "#c2412d", class: "reversed" });
    if (i % 5 === 0 || i === series.length - 1) {
      const last = i === series.length - 1;
      add("text", { x: last ? width : x + slot / 2, y: height - 6,
                    "text-anchor": last ? "end" : "middle", "font-size": 10,
                    fill: "#6b7385" }, d.date.slice(5));
    }
  });
  $("chart").replaceChildren(svg);
}

window.gfgDashboard = { state, formatMinor };
poll();

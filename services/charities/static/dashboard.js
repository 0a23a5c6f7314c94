// Live dashboard: polls GET /v1/totals every second with If-None-Match (a 304 costs the
// service almost nothing) and updates the page in place; no framework, no build step.
// The selected project's matching campaigns come from GET /v1/projects/{id}/campaigns
// (this service relays the donations service's answer) every few seconds and whenever
// the project's matched money changes.
// Amounts and counts are BigInt from parse to display: JSON numbers above 2^53 would lose
// digits as doubles, so the JSON is parsed with a reviver that reads each one's source text.
"use strict";

const POLL_MS = 1000;
const CAMPAIGNS_MS = 5000;
const DAYS = 30;
// ISO 4217 minor-unit exponents that differ from 2 (shared/money.py).
const EXPONENT = { JPY: 0, KRW: 0, VND: 0, KWD: 3, BHD: 3, OMR: 3, JOD: 3, TND: 3 };

const state = {
  etag: null, items: [], selected: null, daily: { key: null, etag: null }, chart: null,
  campaigns: { projectId: null, matched: null, etag: null, at: 0 },
};
const $ = (id) => document.getElementById(id);

// `*_minor` amounts and `*_count` counters become BigInt, exact whatever their size.
function exactInteger(key, value, context) {
  if (typeof value !== "number" || !(key.endsWith("_minor") || key.endsWith("_count"))) {
    return value;
  }
  // context.source is the number's JSON text (JSON.parse source text access).
  return BigInt(context?.source ?? value);
}

async function readJson(response) {
  return JSON.parse(await response.text(), exactInteger);
}

// "1,234.56" for 123456n in a 2-decimal currency; no float anywhere.
function formatAmount(amount, currency) {
  const exponent = EXPONENT[currency] ?? 2;
  const value = BigInt(amount);
  const sign = value < 0n ? "-" : "";
  const digits = (value < 0n ? -value : value).toString().padStart(exponent + 1, "0");
  const units = digits.slice(0, digits.length - exponent);
  const grouped = units.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const minor = exponent ? "." + digits.slice(digits.length - exponent) : "";
  return `${sign}${grouped}${minor}`;
}

function formatMinor(amount, currency) {
  return `${formatAmount(amount, currency)} ${currency}`;
}

// Share of the goal in tenths of a percent, rounded half up and clamped to 0..1000.
function goalTenths(net, goal) {
  if (net <= 0n) return 0n;
  const tenths = (net * 2000n / goal + 1n) / 2n;
  return tenths > 1000n ? 1000n : tenths;
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
  const cell = (className, label, children = []) => {
    const td = el("td", { className }, children);
    td.dataset.label = label; // the column's name where the table stacks (phones)
    return td;
  };
  row.append(
    cell("charity", "Charity"),
    cell("project", "Project"),
    cell("num net", "Net raised", [el("span", { className: "amount" }),
                                   el("div", { className: "matched" })]),
    cell("goal", "Goal", [el("div", { className: "goal-box" },
                             [bar, el("div", { className: "bar-label" })])]),
    cell("num donations", "Donations"),
    cell("num sellers", "Sellers"),
    cell("state", "Status", [el("span", { className: "badge" })]),
  );
  row.addEventListener("click", () => select(item.project_id));
  return row;
}

function updateRow(row, item) {
  const q = (cls) => row.querySelector(cls);
  let changed = false;
  setText(q(".charity"), item.charity_name ?? "—");
  setText(q(".project"), item.name ?? `${item.project_id} (not in registry)`);
  changed = setText(q(".net .amount"), formatMinor(item.net_minor, item.currency)) || changed;
  const matched = item.matched_minor ?? 0n;
  setText(q(".net .matched"),
          matched === 0n ? "" : `incl. ${formatMinor(matched, item.currency)} matched`);
  changed = setText(q(".donations"), item.donation_count.toLocaleString("en")) || changed;
  changed = setText(q(".sellers"), item.seller_count.toLocaleString("en")) || changed;
  const fill = q(".fill");
  const label = q(".bar-label");
  if (item.goal_minor) {
    const tenths = goalTenths(item.net_minor, item.goal_minor);
    const pct = `${tenths / 10n}.${tenths % 10n}%`;
    fill.style.width = pct;
    setText(label, `${pct} of ${formatMinor(item.goal_minor, item.currency)}`);
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
  const matchedBy = new Map();
  let donations = 0n;
  for (const item of items) {
    byCurrency.set(item.currency, (byCurrency.get(item.currency) ?? 0n) + item.net_minor);
    matchedBy.set(item.currency, (matchedBy.get(item.currency) ?? 0n) +
                                 (item.matched_minor ?? 0n));
    donations += item.donation_count;
  }
  const cards = [
    ...[...byCurrency].map(([currency, net]) => ["Net raised", formatMinor(net, currency)]),
    ...[...matchedBy].filter(([, matched]) => matched !== 0n)
      .map(([currency, matched]) => ["Matched by sponsors", formatMinor(matched, currency)]),
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
      const body = await readJson(response);
      const first = state.etag === null;
      state.etag = response.headers.get("ETag");
      state.items = body.items;
      if (state.selected === null && body.items.length) {
        const active = body.items.find((i) => i.donation_count > 0) ?? body.items[0];
        state.selected = active.project_id;
      }
      render(body.items, first);
      await refreshChart(false);
      await refreshCampaigns(false);
      setStatus(true, `live · updated ${new Date(body.as_of).toLocaleTimeString()}`);
    } else if (response.status === 304) {
      setStatus(true, `live · ${state.items.length} projects`);
      await refreshCampaigns(false);
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
  refreshCampaigns(true).catch(() => {}); // the next poll asks again
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
  const days = await readJson(response);
  $("chart-panel").hidden = false;
  setText($("chart-title"), `Daily donations: ${item.name ?? item.project_id}`);
  drawChart(days, from, item.currency);
}

// The selected project's campaigns: asked again when the selection or its matched money
// changes, and every CAMPAIGNS_MS (remaining budgets move with other projects' orders
// too). Only registered projects have campaigns to ask about.
async function refreshCampaigns(force) {
  const item = state.items.find((i) => i.project_id === state.selected);
  const box = $("campaigns");
  if (!item || !item.status) {
    box.hidden = true;
    return;
  }
  const seen = state.campaigns;
  const due = force || seen.projectId !== item.project_id || seen.matched !== item.matched_minor
    || Date.now() - seen.at >= CAMPAIGNS_MS;
  if (!due) return;
  if (seen.projectId !== item.project_id) seen.etag = null;
  Object.assign(seen, { projectId: item.project_id, matched: item.matched_minor, at: Date.now() });
  const headers = seen.etag ? { "If-None-Match": seen.etag } : {};
  const response = await fetch(`/v1/projects/${item.project_id}/campaigns`,
                               { cache: "no-store", headers });
  if (response.status !== 200 || state.selected !== item.project_id) return;
  seen.etag = response.headers.get("ETag");
  renderCampaigns(await readJson(response));
}

function renderCampaigns(body) {
  const active = body.items.filter((c) => c.status === "active");
  const rows = active.map((c) => {
    const bar = el("div", { className: "bar" }, [el("div", { className: "fill" })]);
    const tenths = c.budget_minor > 0n ? goalTenths(c.remaining_minor, c.budget_minor) : 0n;
    bar.firstChild.style.width = `${tenths / 10n}.${tenths % 10n}%`;
    const li = el("li", {}, [
      el("div", { className: "head" }, [
        el("span", { className: "sponsor", textContent: c.sponsor }),
        el("span", { className: "remaining",
          textContent: `${formatMinor(c.remaining_minor, c.currency)} left of ` +
                       formatMinor(c.budget_minor, c.currency) }),
      ]),
      bar,
    ]);
    li.dataset.campaignId = c.campaign_id;
    li.dataset.remaining = c.remaining_minor;
    return li;
  });
  $("campaign-list").replaceChildren(...rows);
  const others = body.items.length - active.length;
  let note = "";
  if (body.source === "unavailable") note = "Campaigns are unavailable right now.";
  else if (body.source === "stale") {
    note = `As of ${new Date(body.fetched_at).toLocaleTimeString()} (donations not answering).`;
  } else if (!active.length) note = "No active matching campaign.";
  if (others > 0) note += `${note ? " " : ""}${others} scheduled, exhausted or ended.`;
  setText($("campaign-note"), note);
  $("campaigns").hidden = false;
}

const SVG_NS = "http://www.w3.org/2000/svg";
let drawnWidth = 0;

function drawChart(days, from, currency) {
  state.chart = { days, from, currency };
  const byDay = new Map(days.map((d) => [d.date, d]));
  const series = [];
  for (let n = 0; n < DAYS; n++) {
    const date = isoDay(new Date(from.getTime() + n * 86400000));
    const day = byDay.get(date) ?? { donated_minor: 0n, reversed_minor: 0n, donation_count: 0n };
    series.push({ date, ...day });
  }
  // Drawn at the box's own pixel width (1 SVG unit = 1 CSS px), so labels keep their
  // size on a phone instead of shrinking with a fixed viewBox; redrawn on resize.
  const box = $("chart");
  drawnWidth = Math.floor(box.clientWidth);
  const width = Math.max(240, Math.floor(box.clientWidth) || 600);
  const height = width < 480 ? 200 : 240;
  const top = 24, bottom = 22, right = 4;
  let max = 1n;
  for (const d of series) {
    if (d.donated_minor > max) max = d.donated_minor;
    if (d.reversed_minor > max) max = d.reversed_minor;
  }
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  box.replaceChildren(svg);
  // Y labels without the currency (it is the axis title); the plot starts right of the
  // widest one, measured as rendered.
  const ticks = [0n, max / 2n, max];
  const labels = ticks.map((v) => add("text", { class: "y-label", "text-anchor": "end",
    "font-size": 11, fill: "#6b7385" }, formatAmount(v, currency)));
  const widest = Math.max(...labels.map((label) => label.getComputedTextLength()));
  const left = Math.ceil(widest) + 10;
  add("text", { class: "y-title", x: 0, y: 11, "font-size": 11, fill: "#6b7385" }, currency);
  const plot = height - top - bottom;
  const y = (v) => top + plot * (1 - Number(v) / Number(max));
  ticks.forEach((v, i) => {
    labels[i].setAttribute("x", left - 6);
    labels[i].setAttribute("y", y(v) + 4);
    svg.insertBefore(makeLine(left, width - right, y(v)), svg.firstChild);
  });
  const slot = (width - left - right) / series.length;
  const every = slot < 14 ? 10 : 5;
  series.forEach((d, i) => {
    const x = left + i * slot;
    const w = Math.max(1, slot * 0.42);
    const bar = add("rect", { x: x + slot * 0.08, y: y(d.donated_minor), width: w,
      height: y(0n) - y(d.donated_minor), fill: "#1f8a5b", class: "donated" });
    bar.dataset.date = d.date;
    bar.dataset.value = d.donated_minor;
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = `${d.date}: ${formatMinor(d.donated_minor, currency)} donated, ` +
      `${formatMinor(d.reversed_minor, currency)} reversed, ${d.donation_count} donations`;
    bar.append(title);
    add("rect", { x: x + slot * 0.08 + w, y: y(d.reversed_minor), width: w,
      height: y(0n) - y(d.reversed_minor), fill: "#c2412d", class: "reversed" });
    const last = i === series.length - 1;
    if (last || (i % every === 0 && i < series.length - every / 2)) {
      add("text", { class: "x-label", x: last ? width - right : x + slot / 2, y: height - 6,
                    "text-anchor": last ? "end" : "middle", "font-size": 10,
                    fill: "#6b7385" }, d.date.slice(5));
    }
  });
}

function makeLine(x1, x2, y) {
  const line = document.createElementNS(SVG_NS, "line");
  for (const [k, v] of Object.entries({ x1, x2, y1: y, y2: y, stroke: "#e3e6eb" })) {
    line.setAttribute(k, v);
  }
  return line;
}

new ResizeObserver(() => {
  const width = Math.floor($("chart").clientWidth);
  if (state.chart && width && width !== drawnWidth) {
    drawnWidth = width;
    drawChart(state.chart.days, state.chart.from, state.chart.currency);
  }
}).observe($("chart"));

window.gfgDashboard = { state, formatMinor, readJson };
poll();

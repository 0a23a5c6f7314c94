// The project page at /projects/{project_id}: goal and progress, pending, posted,
// disbursed and available money (refreshed every few seconds), the disbursements, a
// box that traces an order's donation to what it paid for, and "check my donation",
// which verifies the order's proof from the donations log here (donation-proof.js). Amounts stay BigInt from
// parse to display (see dashboard.js); no framework, no inline script or style.
"use strict";

const REFRESH_MS = 3000;
const EXPONENT = { JPY: 0, KRW: 0, VND: 0, KWD: 3, BHD: 3, OMR: 3, JOD: 3, TND: 3 };
const $ = (id) => document.getElementById(id);
const projectId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const state = { totalsEtag: null, listKey: null, project: null };

function exactInteger(key, value, context) {
  if (typeof value !== "number" || !(key.endsWith("_minor") || key.endsWith("_count"))) {
    return value;
  }
  return BigInt(context?.source ?? value);
}

async function readJson(response) {
  return JSON.parse(await response.text(), exactInteger);
}

function formatMinor(amount, currency) {
  const exponent = EXPONENT[currency] ?? 2;
  const value = BigInt(amount);
  const sign = value < 0n ? "-" : "";
  const digits = (value < 0n ? -value : value).toString().padStart(exponent + 1, "0");
  const units = digits.slice(0, digits.length - exponent).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const minor = exponent ? "." + digits.slice(digits.length - exponent) : "";
  return `${sign}${units}${minor} ${currency}`;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function when(iso) {
  return new Date(iso).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

function setStatus(ok, text) {
  $("live-dot").className = "dot " + (ok ? "live" : "down");
  $("status").textContent = text;
}

async function loadProject() {
  const response = await fetch(`/v1/projects/${encodeURIComponent(projectId)}`);
  if (!response.ok) throw new Error(response.status === 404 ? "no such project" : "HTTP " + response.status);
  state.project = await readJson(response);
  $("project-name").textContent = state.project.name;
  $("project-description").textContent = state.project.description || "";
  document.title = `Goods for Good — ${state.project.name}`;
  const charity = await fetch(`/v1/charities/${state.project.charity_id}`);
  if (charity.ok) $("charity-name").textContent = (await readJson(charity)).name;
}

function card(label, value, id) {
  return el("div", { className: "card", id }, [
    el("div", { className: "label", textContent: label }),
    el("div", { className: "value", textContent: value }),
  ]);
}

function renderMoney(totals) {
  const c = totals.currency;
  $("money").replaceChildren(
    card("Net raised", formatMinor(totals.net_minor, c), "money-net"),
    card("Pending", formatMinor(totals.pending_minor, c), "money-pending"),
    card("Posted", formatMinor(totals.posted_minor, c), "money-posted"),
    card("Disbursed", formatMinor(totals.disbursed_minor, c), "money-disbursed"),
    card("Available", formatMinor(totals.available_minor, c), "money-available"),
  );
  const goal = state.project.goal_minor;
  if (goal === null || goal === undefined || goal <= 0n) {
    $("goal-progress").hidden = true;
    $("goal-label").textContent = "no goal set";
    return;
  }
  const net = totals.net_minor > 0n ? totals.net_minor : 0n;
  let tenths = (net * 2000n / goal + 1n) / 2n;
  if (tenths > 1000n) tenths = 1000n;
  $("goal-progress").value = Number(tenths);
  $("goal-label").textContent =
    `${tenths / 10n}.${tenths % 10n}% of ${formatMinor(goal, state.project.currency)}`;
}

function cell(label, props) {
  const td = el("td", props);
  td.dataset.label = label;
  return td;
}

function renderDisbursements(items) {
  const rows = items.map((d) => {
    const evidence = cell("Evidence", { className: "evidence" });
    if (d.evidence_url && /^https?:\/\//.test(d.evidence_url)) {
      evidence.append(el("a", { href: d.evidence_url, textContent: "receipt", rel: "noopener noreferrer" }));
    } else {
      evidence.textContent = d.evidence_sha256 ? d.evidence_sha256.slice(0, 12) + "…" : "—";
    }
    const row = el("tr", {}, [
      cell("Recorded", { textContent: when(d.recorded_at) }),
      cell("Recipient", { className: "project", textContent: d.recipient }),
      cell("Purpose", { textContent: d.purpose }),
      cell("Amount", { className: "num", textContent: formatMinor(d.amount_minor, d.currency) }),
      evidence,
    ]);
    row.dataset.disbursementId = d.disbursement_id;
    return row;
  });
  $("disbursement-rows").replaceChildren(...rows);
  $("no-disbursements").hidden = items.length > 0;
}

async function refresh() {
  try {
    const headers = state.totalsEtag ? { "If-None-Match": state.totalsEtag } : {};
    const response = await fetch(`/v1/projects/${projectId}/totals`, { cache: "no-store", headers });
    if (response.status === 200) {
      state.totalsEtag = response.headers.get("ETag");
      renderMoney(await readJson(response));
      const list = await fetch(`/v1/projects/${projectId}/disbursements?limit=200`, { cache: "no-store" });
      if (list.ok) renderDisbursements((await readJson(list)).items);
    } else if (response.status !== 304) {
      throw new Error("HTTP " + response.status);
    }
    setStatus(true, "up to date");
  } catch (error) {
    setStatus(false, "cannot reach the service (" + error.message + ")");
  }
}

async function trace(event) {
  event.preventDefault();
  const orderId = $("order-id").value.trim();
  const result = $("trace-result");
  if (!orderId) return;
  const response = await fetch(`/v1/orders/${encodeURIComponent(orderId)}/trace`, { cache: "no-store" });
  if (response.status === 404) {
    result.replaceChildren(el("p", { className: "trace-error", textContent: `No donation found for order ${orderId}.` }));
    return;
  }
  if (!response.ok) {
    result.replaceChildren(el("p", { className: "trace-error", textContent: "The trace is unavailable right now." }));
    return;
  }
  const t = await readJson(response);
  const c = t.currency;
  const given = t.net_minor + t.matched_minor;
  const summary = el("p", {
    className: "trace-summary",
    textContent:
      `Order ${t.order_id} gave ${formatMinor(t.net_minor, c)}` +
      (t.matched_minor ? ` (+ ${formatMinor(t.matched_minor, c)} matched)` : "") +
      ` — ${t.status === "posted" ? "posted" : "pending its return window"}; ` +
      `${formatMinor(given - t.unallocated_minor, c)} spent, ${formatMinor(t.unallocated_minor, c)} not yet.`,
  });
  summary.dataset.status = t.status;
  const list = el("ul", { id: "trace-allocations" }, t.allocations.map((a) => {
    const item = el("li", {
      textContent: `${formatMinor(a.amount_minor, c)} to ${a.recipient} for ${a.purpose} (${when(a.recorded_at)})`,
    });
    item.dataset.disbursementId = a.disbursement_id;
    return item;
  }));
  result.replaceChildren(summary, list);
}

// The donations log's verifier key as this service pins it, fetched once per page.
let verifierKey = null;

function checkFailed(text) {
  $("check-result").replaceChildren(el("p", { className: "trace-error", id: "check-failed", textContent: text }));
}

async function checkDonation(event) {
  event.preventDefault();
  const orderId = $("check-order-id").value.trim();
  if (!orderId) return;
  $("check-result").replaceChildren(el("p", { className: "check-detail", textContent: "checking…" }));
  const { verifyDonationProof, ProofError } = await import("/static/donation-proof.js");
  if (verifierKey === null) {
    const key = await fetch("/v1/donations-log/key", { cache: "no-store" });
    if (!key.ok) return checkFailed("The donations log's key is unavailable right now.");
    verifierKey = (await key.text()).trim();
  }
  const response = await fetch(`/v1/orders/${encodeURIComponent(orderId)}/donation/proof`, { cache: "no-store" });
  if (response.status === 404) return checkFailed(`No donation found for order ${orderId}.`);
  if (!response.ok) return checkFailed("The donations log cannot answer right now (a new donation is logged within seconds).");
  let proven;
  try {
    proven = await verifyDonationProof(await response.json(), orderId, verifierKey);
  } catch (error) {
    if (!(error instanceof ProofError)) throw error;
    return checkFailed(`NOT verified: ${error.message}.`);
  }
  const project = proven.projectId === projectId && state.project ? state.project.name : `project ${proven.projectId}`;
  const ok = el("p", {
    className: "check-ok",
    id: "check-verified",
    textContent: `verified: ${formatMinor(proven.amountMinor, proven.currency)} to ${project}, ` +
      `in tree of size ${proven.treeSize}` + (proven.posted ? " (posted, final)" : " (pending its return window)"),
  });
  const detail = el("p", {
    className: "check-detail",
    textContent: `${proven.records.length} record(s) at leaves ${proven.records.map((r) => r.leafIndex).join(", ")}; ` +
      `root ${proven.root}; key ${verifierKey.split("+").slice(0, 2).join("+")}`,
  });
  $("check-result").replaceChildren(ok, detail);
}

async function start() {
  $("trace-form").addEventListener("submit", (event) => {
    trace(event).catch((error) => setStatus(false, error.message));
  });
  $("check-form").addEventListener("submit", (event) => {
    checkDonation(event).catch((error) => checkFailed(`NOT verified: ${error.message}.`));
  });
  try {
    await loadProject();
  } catch (error) {
    setStatus(false, error.message);
    return;
  }
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

start();

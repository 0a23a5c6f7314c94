// Verifies an order's proof from the donations transparency log in the browser, with
// WebCrypto only (SHA-256 and Ed25519; no library), as docs/LOG.md defines it:
//   1. the checkpoint is a C2SP signed note with a valid Ed25519 signature by the pinned
//      verifier key (Go sumdb/note key format), and its body is "<origin>\n<size>\n<root>\n";
//   2. every record's leaf is in the tree of that size and root (RFC 9162 inclusion proof);
//   3. every leaf carries the order's commitment SHA-256(UTF-8(order_id) || 0x00 || salt);
//   4. a record with an entry_id is that ledger entry, one without is the order's posting.
// verifyDonationProof resolves to what was proven or rejects with a ProofError naming
// the first check that failed.
"use strict";

export class ProofError extends Error {
  name = "ProofError";
}

const encoder = new TextEncoder();

function fromBase64(text, what) {
  if (typeof text !== "string" || !/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text)) {
    throw new ProofError(`${what} is not base64`);
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function toBase64(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

function hex(bytes) {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

// Amounts stay exact: every *_minor number is parsed as a BigInt from its source text.
function parseLeaf(bytes, index) {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes), (key, value, context) =>
      typeof value === "number" && key.endsWith("_minor") ? BigInt(context?.source ?? value) : value);
  } catch {
    throw new ProofError(`leaf ${index} is not JSON`);
  }
}

// "<name>+<8 hex digits of key hash>+<base64(0x01 || 32-byte Ed25519 key)>"
async function parseVerifierKey(vkey) {
  // The name and hash contain no "+"; base64 may.
  const [name, hashHex, ...keyParts] = vkey.trim().split("+");
  const raw = keyParts.length ? fromBase64(keyParts.join("+"), "the verifier key") : new Uint8Array();
  if (!name || raw.length !== 33 || raw[0] !== 0x01) {
    throw new ProofError("the verifier key is not an Ed25519 key <name>+<hash>+<key>");
  }
  const keyHash = (await sha256(encoder.encode(name + "\n"), raw)).slice(0, 4);
  if (hex(keyHash) !== hashHex) throw new ProofError("the verifier key's hash does not match it");
  const key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
  return { name, keyHash, key };
}

async function openCheckpoint(note, verifier) {
  const split = typeof note === "string" ? note.lastIndexOf("\n\n") : -1;
  if (split <= 0) throw new ProofError("the checkpoint is not a signed note");
  const text = note.slice(0, split + 1);
  let signed = false;
  for (const line of note.slice(split + 2).replace(/\n$/, "").split("\n")) {
    const [dash, signer, sigB64] = line.split(" ");
    if (dash !== "\u2014" || signer !== verifier.name) continue;
    const sig = fromBase64(sigB64, "a checkpoint signature");
    if (sig.length !== 68 || !equal(sig.slice(0, 4), verifier.keyHash)) continue;
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, verifier.key, sig.slice(4), encoder.encode(text));
    if (!ok) throw new ProofError(`the checkpoint's signature by ${verifier.name} is invalid`);
    signed = true;
  }
  if (!signed) throw new ProofError(`the checkpoint has no signature by the key ${verifier.name}`);
  const lines = text.split("\n");
  if (lines.length < 4 || lines[0] !== verifier.name || !/^(0|[1-9][0-9]{0,15})$/.test(lines[1])) {
    throw new ProofError(`the note is not a checkpoint of the log ${verifier.name}`);
  }
  const root = fromBase64(lines[2], "the checkpoint's root");
  if (root.length !== 32) throw new ProofError("the checkpoint's root hash is malformed");
  return { size: Number(lines[1]), root };
}

// RFC 9162 section 2.1.3.2 (plain arithmetic: indexes may pass 2^31, where JS bit
// operators would wrap).
async function checkInclusion(leaf, index, size, path, root) {
  if (!Number.isSafeInteger(index) || index < 0 || index >= size) {
    throw new ProofError(`leaf index ${index} is outside the tree of size ${size}`);
  }
  let fn = index;
  let sn = size - 1;
  let r = await sha256(new Uint8Array([0]), leaf);
  for (const p of path) {
    if (sn === 0 || p.length !== 32) throw new ProofError(`the inclusion proof of leaf ${index} is malformed`);
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(new Uint8Array([1]), p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = await sha256(new Uint8Array([1]), r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0 || !equal(r, root)) {
    throw new ProofError(`leaf ${index} is not in the tree of size ${size} and this root`);
  }
}

const CREDITS = new Set(["accrual", "match"]);
const DEBITS = new Set(["reversal", "match_reversal"]);

/** Checks `proof` (the body of GET /v1/orders/{id}/donation/proof) for `orderId` against
 * the pinned `verifierKey`; resolves to {treeSize, root (base64), projectId, currency,
 * amountMinor (BigInt), posted, records} or rejects with a ProofError. */
export async function verifyDonationProof(proof, orderId, verifierKey) {
  const verifier = await parseVerifierKey(verifierKey);
  const { size, root } = await openCheckpoint(proof?.checkpoint, verifier);
  if (typeof proof.order_salt !== "string" || !/^([0-9a-f]{2})+$/.test(proof.order_salt)) {
    throw new ProofError("the order's salt is malformed");
  }
  const salt = Uint8Array.from(proof.order_salt.match(/../g), (h) => parseInt(h, 16));
  const commitment = hex(await sha256(encoder.encode(orderId), new Uint8Array([0]), salt));
  if (!Array.isArray(proof.entries) || proof.entries.length === 0) throw new ProofError("the proof has no records");
  const records = [];
  for (const e of proof.entries) {
    const leaf = fromBase64(e.leaf_b64, `leaf ${e.leaf_index}`);
    const path = (e.inclusion_proof ?? []).map((h) => fromBase64(h, `the proof of leaf ${e.leaf_index}`));
    await checkInclusion(leaf, e.leaf_index, size, path, root);
    const fields = parseLeaf(leaf, e.leaf_index);
    if (fields.order_commitment !== commitment) {
      throw new ProofError(`leaf ${e.leaf_index} is not a record of order ${orderId}`);
    }
    const isPosting = e.entry_id === null && fields.type === "posting";
    if (!isPosting && (fields.type !== "entry" || fields.entry_id !== e.entry_id)) {
      throw new ProofError(`leaf ${e.leaf_index} is not entry ${e.entry_id}`);
    }
    records.push({ leafIndex: e.leaf_index, ...fields });
  }
  const first = records[0];
  if (records.some((r) => r.project_id !== first.project_id || r.currency !== first.currency)) {
    throw new ProofError("the order's records name different projects or currencies");
  }
  const posting = records.find((r) => r.type === "posting");
  let amountMinor = 0n;
  for (const r of records) {
    if (CREDITS.has(r.kind)) amountMinor += r.amount_minor;
    if (DEBITS.has(r.kind)) amountMinor -= r.amount_minor;
  }
  return {
    treeSize: size,
    root: toBase64(root),
    projectId: first.project_id,
    currency: first.currency,
    amountMinor: posting ? posting.posted_minor : amountMinor,
    posted: Boolean(posting),
    records,
  };
}

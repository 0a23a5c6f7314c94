"""``make audit``: both transparency logs rebuilt from the services' own rows, and every
record whose row no longer matches its leaf, named.

Each log is read in one read-only snapshot (REPEATABLE READ), streaming chunks of
``--chunk`` leaves in log order (never the whole table):

1. every leaf of ``log_leaf`` is rebuilt from its record with the formats of docs/LOG.md,
   written out here independently of the services' code: the donations log from
   ``ledger_entry`` or ``posting`` + ``order_salt``, the charities log from
   ``disbursement`` and ``allocation``; a leaf whose row changed (field by field) or
   was deleted is named;
2. the stored hashes (``log_hash``) are recomputed from the stored leaves, and the root at
   the latest signed checkpoint's size is compared with that checkpoint (and, with
   ``--key`` / ``--charities-key``, its signature is checked); the tree rebuilt from the
   rows is compared too;
3. records (ledger entries, postings, disbursements, allocations) with no leaf that are
   not in the pending queue are named;
4. donations: each project's net in the charities totals (donated - reversed + matched)
   equals the net of its logged entries (accruals and matches less reversals);
   charities: each project's ``disbursed_minor`` equals its logged (or queued)
   disbursements, and each logged disbursement's allocations add up to its amount.

Exit 1 on any finding, 0 when clean. ``--log donations|charities|all`` (default all).
Databases: ``GFG_DONATIONS_DB``, ``GFG_CHARITIES_DB``. Other tools call
``run(argv) -> exit code`` (or ``main(parse_args(argv))`` in a running event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg

from shared.db import connect
from shared.settings import CommonSettings
from shared.tlog.checkpoint import open_checkpoint, parse_checkpoint
from shared.tlog.hashing import (
    append_leaves,
    leaf_hash,
    root_from_peaks,
    stored_hash_count,
)
from shared.tlog.note import Verifier

CREDIT_KINDS = frozenset({"accrual", "match"})
MATCH_KINDS = frozenset({"match", "match_reversal"})
Row: TypeAlias = Mapping[str, Any] | asyncpg.Record

_CHECKPOINT = "SELECT size, root_hash, note FROM log_checkpoint ORDER BY size DESC LIMIT 1"
_SIZE = "SELECT size FROM log_tree"
# campaign_id is null but on matches and match reversals (whose rule_version is null).
# A leaf's record is a ledger entry or a posting (record_exists says whether it is found).
_LEAF_ROWS = """
SELECT l.leaf_index, l.record_table, l.record_key, l.leaf, e.entry_id::text AS entry_id,
       e.kind, e.amount_minor, e.rule_version, e.campaign_id, e.recorded_at,
       p.posted_minor, p.posted_at, coalesce(e.seq, p.seq) IS NOT NULL AS record_exists,
       coalesce(e.order_id, p.order_id) AS order_id,
       coalesce(e.currency, p.currency) AS currency,
       coalesce(e.project_id, p.project_id)::text AS project_id,
       coalesce(e.seller_id, p.seller_id) AS seller_id, s.salt
FROM log_leaf AS l
LEFT JOIN ledger_entry AS e ON l.record_table = 'ledger_entry' AND e.seq::text = l.record_key
LEFT JOIN posting AS p ON l.record_table = 'posting' AND p.seq::text = l.record_key
LEFT JOIN order_salt AS s ON s.order_id = coalesce(e.order_id, p.order_id)
WHERE l.leaf_index >= $1 ORDER BY l.leaf_index LIMIT $2
"""
_HASHES = "SELECT hash FROM log_hash WHERE hash_index >= $1 AND hash_index < $2 ORDER BY hash_index"
_UNLOGGED = """
SELECT e.seq, e.entry_id::text AS entry_id FROM ledger_entry AS e
WHERE e.seq > $1
  AND NOT EXISTS (SELECT 1 FROM log_leaf AS l
                  WHERE l.record_table = 'ledger_entry' AND l.record_key = e.seq::text)
  AND NOT EXISTS (SELECT 1 FROM log_pending AS p
                  WHERE p.record_table = 'ledger_entry' AND p.record_key = e.seq::text)
ORDER BY e.seq LIMIT $2
"""
_UNLOGGED_POSTINGS = """
SELECT p.seq FROM posting AS p
WHERE p.seq > $1
  AND NOT EXISTS (SELECT 1 FROM log_leaf AS l
                  WHERE l.record_table = 'posting' AND l.record_key = p.seq::text)
  AND NOT EXISTS (SELECT 1 FROM log_pending AS q
                  WHERE q.record_table = 'posting' AND q.record_key = p.seq::text)
ORDER BY p.seq LIMIT $2
"""
_TOTALS = """
SELECT project_id::text AS project_id, currency,
       (donated_minor - reversed_minor + matched_minor) AS net
FROM project_total WHERE project_id = ANY($1::uuid[])
"""

# The charities log: a disbursement's record key is its id, an allocation's
# '<disbursement_id>:<entry_id>' (the CASEs keep other tables' keys out of the casts).
_CHARITIES_LEAF_ROWS = """
SELECT l.leaf_index, l.record_table, l.record_key, l.leaf,
       d.disbursement_id::text AS disbursement_id, d.project_id::text AS project_id,
       d.currency, d.amount_minor, d.recipient, d.purpose, d.evidence_sha256, d.recorded_at,
       a.disbursement_id::text AS a_disbursement_id, a.entry_id::text AS a_entry_id,
       a.amount_minor AS a_amount_minor
FROM log_leaf AS l
LEFT JOIN disbursement AS d
  ON d.disbursement_id = (CASE WHEN l.record_table = 'disbursement' THEN l.record_key END)::uuid
LEFT JOIN allocation AS a
  ON a.disbursement_id = (CASE WHEN l.record_table = 'allocation'
                               THEN split_part(l.record_key, ':', 1) END)::uuid
 AND a.entry_id = (CASE WHEN l.record_table = 'allocation'
                        THEN split_part(l.record_key, ':', 2) END)::uuid
WHERE l.leaf_index >= $1 ORDER BY l.leaf_index LIMIT $2
"""
_CHARITIES_UNLOGGED = """
SELECT record_table, record_key FROM (
    SELECT 'disbursement' AS record_table, disbursement_id::text AS record_key
    FROM disbursement
    UNION ALL
    SELECT 'allocation', disbursement_id::text || ':' || entry_id::text FROM allocation
) AS r
WHERE NOT EXISTS (SELECT 1 FROM log_leaf AS l
                  WHERE l.record_table = r.record_table AND l.record_key = r.record_key)
  AND NOT EXISTS (SELECT 1 FROM log_pending AS p
                  WHERE p.record_table = r.record_table AND p.record_key = r.record_key)
ORDER BY record_table DESC, record_key
"""
# Disbursements still queued for the log (their own row or an allocation's).
_CHARITIES_QUEUED = """
SELECT DISTINCT split_part(record_key, ':', 1) AS disbursement_id FROM log_pending
WHERE record_table IN ('disbursement', 'allocation')
"""
_CHARITIES_QUEUED_AMOUNTS = """
SELECT d.project_id::text AS project_id, d.currency, sum(d.amount_minor) AS amount_minor
FROM log_pending AS p
JOIN disbursement AS d
  ON d.disbursement_id = (CASE WHEN p.record_table = 'disbursement' THEN p.record_key END)::uuid
WHERE NOT EXISTS (SELECT 1 FROM log_leaf AS l
                  WHERE l.record_table = 'disbursement' AND l.record_key = p.record_key)
GROUP BY 1, 2
"""
_CHARITIES_FUNDS = """
SELECT project_id::text AS project_id, currency, disbursed_minor FROM project_funds
WHERE disbursed_minor <> 0
"""


def canonical_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def log_time(at: datetime) -> str:
    """RFC 3339 UTC, four-digit year, six fractional digits, ``Z`` (docs/LOG.md)."""
    at = at.astimezone(UTC)
    return f"{at.year:04d}-{at:%m-%dT%H:%M:%S.%f}Z"


def entry_leaf(row: asyncpg.Record) -> bytes:
    """A ledger entry's leaf as docs/LOG.md defines it."""
    match = row["kind"] in MATCH_KINDS
    commitment = hashlib.sha256(row["order_id"].encode() + b"\x00" + bytes(row["salt"]))
    return canonical_json(
        {
            "type": "entry",
            "entry_id": row["entry_id"],
            "kind": row["kind"],
            "amount_minor": row["amount_minor"],
            "currency": row["currency"],
            "project_id": row["project_id"],
            "seller_id": row["seller_id"],
            "rule_version": None if match else row["rule_version"],
            "campaign_id": row["campaign_id"] if match else None,
            "order_commitment": commitment.hexdigest(),
            "recorded_at": log_time(row["recorded_at"]),
        }
    )


def posting_leaf(row: Row) -> bytes:
    """A posting's leaf as docs/LOG.md defines it."""
    commitment = hashlib.sha256(row["order_id"].encode() + b"\x00" + bytes(row["salt"]))
    return canonical_json(
        {
            "type": "posting",
            "order_commitment": commitment.hexdigest(),
            "project_id": row["project_id"],
            "seller_id": row["seller_id"],
            "currency": row["currency"],
            "posted_minor": row["posted_minor"],
            "posted_at": log_time(row["posted_at"]),
        }
    )


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


@dataclass
class TreePass:
    """What one pass over a log's leaves found: findings and the audited size."""

    findings: list[str] = field(default_factory=list)
    leaves: int = 0
    checkpoint_size: int = -1


# Rebuilds a leaf from its joined row: (the leaf, or None if the record's row is gone).
Rebuild = Callable[[asyncpg.Record], bytes | None]


async def _audit_tree(
    conn: asyncpg.Connection[Any],
    leaf_rows: str,
    rebuild: Rebuild,
    tally: Callable[[dict[str, Any]], None],
    *,
    chunk: int,
    key: str | None,
) -> TreePass:
    """Steps 1 and 2 for one log: ``leaf_rows`` selects (leaf_index, record_table,
    record_key, leaf, the record's columns) from ``$1`` on, at most ``$2`` rows;
    ``tally`` sees every stored leaf's fields."""
    out = TreePass()
    findings = out.findings
    cp = await conn.fetchrow(_CHECKPOINT)
    tree_size: int = await conn.fetchval(_SIZE)
    cp_size = out.checkpoint_size = -1 if cp is None else int(cp["size"])
    if cp is None:
        findings.append("no signed checkpoint is stored")
    stored_peaks: list[bytes] = []
    rebuilt_peaks: list[bytes] = []
    roots: tuple[bytes, bytes] | None = None
    n = 0
    while True:
        if n == cp_size:  # the chunks stop exactly at the checkpoint's size
            roots = root_from_peaks(stored_peaks), root_from_peaks(rebuilt_peaks)
        rows = await conn.fetch(leaf_rows, n, min(chunk, cp_size - n) if n < cp_size else chunk)
        if not rows:
            break
        leaves: list[bytes] = []
        rebuilt: list[bytes] = []
        for r in rows:
            if r["leaf_index"] != n + len(leaves):
                findings.append(f"leaf {n + len(leaves)} is missing (next is {r['leaf_index']})")
                break
            leaf = bytes(r["leaf"])
            leaves.append(leaf)
            fields = json.loads(leaf)
            tally(fields)
            name = f"{r['record_table']} {r['record_key']}"
            if r["record_table"] == "ledger_entry":
                name += f" (entry_id {fields.get('entry_id')})"
            elif r["record_table"] == "posting":
                name += f" (order commitment {fields.get('order_commitment')})"
            mine = rebuild(r)
            if mine is None:
                findings.append(f"leaf {r['leaf_index']}: {name}: row deleted")
                rebuilt.append(leaf)  # nothing to rebuild it from
                continue
            rebuilt.append(mine)
            if mine != leaf:
                now = json.loads(mine)
                changed = ", ".join(
                    f"{k} {fields.get(k)!r} -> {now[k]!r}"
                    for k in sorted(now)
                    if fields.get(k) != now[k]
                )
                findings.append(f"leaf {r['leaf_index']}: {name}: row changed: {changed}")
        first = stored_hash_count(n)
        hashes, stored_peaks = append_leaves(n, stored_peaks, [leaf_hash(x) for x in leaves])
        _, rebuilt_peaks = append_leaves(n, rebuilt_peaks, [leaf_hash(x) for x in rebuilt])
        stored = [bytes(h["hash"]) for h in await conn.fetch(_HASHES, first, first + len(hashes))]
        if stored != hashes:
            findings.append(f"stored hashes of leaves {n}..{n + len(leaves) - 1} differ")
        n += len(leaves)
        if len(leaves) < len(rows):
            break
    out.leaves = n
    if n != tree_size:
        findings.append(f"the tree size is {tree_size} but {n} consecutive leaves are stored")
    if cp is not None:
        findings += _check_checkpoint(cp, roots, key)
    return out


def _rebuild_donations(row: asyncpg.Record) -> bytes | None:
    if not row["record_exists"] or row["salt"] is None:
        return None
    return posting_leaf(row) if row["record_table"] == "posting" else entry_leaf(row)


async def audit(
    conn: asyncpg.Connection[Any],
    charities: asyncpg.Connection[Any] | None,
    *,
    chunk: int = 5000,
    key: str | None = None,
) -> tuple[list[str], dict[str, int]]:
    """The donations log's findings (empty when clean) and what was audited; ``conn``
    must be in a read-only REPEATABLE READ transaction so every chunk sees one snapshot."""
    nets: dict[tuple[str, str], int] = defaultdict(int)

    def tally(fields: dict[str, Any]) -> None:
        if fields.get("type") == "entry":
            sign = 1 if fields["kind"] in CREDIT_KINDS else -1
            nets[(fields["project_id"], fields["currency"])] += sign * fields["amount_minor"]

    tree = await _audit_tree(conn, _LEAF_ROWS, _rebuild_donations, tally, chunk=chunk, key=key)
    findings = tree.findings

    after = 0
    while rows := await conn.fetch(_UNLOGGED, after, chunk):
        findings += [
            f"ledger_entry {r['seq']} (entry_id {r['entry_id']}): row added without a leaf"
            for r in rows
        ]
        after = rows[-1]["seq"]
    after = 0
    while rows := await conn.fetch(_UNLOGGED_POSTINGS, after, chunk):
        findings += [f"posting {r['seq']}: row added without a leaf" for r in rows]
        after = rows[-1]["seq"]

    if charities is not None and nets:
        projects = sorted({p for p, _ in nets})
        totals = {
            (t["project_id"], t["currency"]): int(t["net"])
            for t in await charities.fetch(_TOTALS, projects)
        }
        for (project, currency), net in sorted(nets.items()):
            if totals.get((project, currency), 0) != net:
                findings.append(
                    f"project {project} ({currency}): logged net {net},"
                    f" charities totals net {totals.get((project, currency), 0)}"
                )
    return findings, {
        "leaves": tree.leaves,
        "checkpoint_size": tree.checkpoint_size,
        "projects": len(nets),
    }


def disbursement_leaf(row: Row) -> bytes:
    """A disbursement's leaf as docs/LOG.md defines it."""
    return canonical_json(
        {
            "type": "disbursement",
            "disbursement_id": row["disbursement_id"],
            "project_id": row["project_id"],
            "currency": row["currency"],
            "amount_minor": row["amount_minor"],
            "recipient": row["recipient"],
            "purpose": row["purpose"],
            "evidence_sha256": row["evidence_sha256"],
            "recorded_at": log_time(row["recorded_at"]),
        }
    )


def allocation_leaf(row: Row) -> bytes:
    """An allocation's leaf as docs/LOG.md defines it."""
    return canonical_json(
        {
            "type": "allocation",
            "disbursement_id": row["a_disbursement_id"],
            "entry_id": row["a_entry_id"],
            "amount_minor": row["a_amount_minor"],
        }
    )


def _rebuild_charities(row: asyncpg.Record) -> bytes | None:
    if row["record_table"] == "disbursement":
        return None if row["disbursement_id"] is None else disbursement_leaf(row)
    if row["record_table"] == "allocation":
        return None if row["a_disbursement_id"] is None else allocation_leaf(row)
    return None


async def audit_charities(
    conn: asyncpg.Connection[Any], *, chunk: int = 5000, key: str | None = None
) -> tuple[list[str], dict[str, int]]:
    """The charities log's findings (empty when clean) and what was audited; ``conn``
    must be in a read-only REPEATABLE READ transaction."""
    if await conn.fetchval("SELECT to_regclass('log_leaf')") is None:
        return ["the charities log's tables are missing (migration 0060 not applied)"], {
            "leaves": 0,
            "checkpoint_size": -1,
            "projects": 0,
        }
    disbursed: dict[tuple[str, str], int] = defaultdict(int)
    unallocated: dict[str, int] = defaultdict(int)  # disbursement - its allocations

    def tally(fields: dict[str, Any]) -> None:
        if fields.get("type") == "disbursement":
            disbursed[(fields["project_id"], fields["currency"])] += fields["amount_minor"]
            unallocated[fields["disbursement_id"]] += fields["amount_minor"]
        elif fields.get("type") == "allocation":
            unallocated[fields["disbursement_id"]] -= fields["amount_minor"]

    tree = await _audit_tree(
        conn, _CHARITIES_LEAF_ROWS, _rebuild_charities, tally, chunk=chunk, key=key
    )
    findings = tree.findings
    async for r in conn.cursor(_CHARITIES_UNLOGGED, prefetch=chunk):
        findings.append(f"{r['record_table']} {r['record_key']}: row added without a leaf")

    queued = {r["disbursement_id"] for r in await conn.fetch(_CHARITIES_QUEUED)}
    for disbursement_id, left in sorted(unallocated.items()):
        if left != 0 and disbursement_id not in queued:
            findings.append(
                f"disbursement {disbursement_id}: its logged allocations differ from its"
                f" logged amount by {left}"
            )
    for r in await conn.fetch(_CHARITIES_QUEUED_AMOUNTS):
        disbursed[(r["project_id"], r["currency"])] += int(r["amount_minor"])
    funds = {
        (r["project_id"], r["currency"]): int(r["disbursed_minor"])
        for r in await conn.fetch(_CHARITIES_FUNDS)
    }
    for project, currency in sorted(set(funds) | set(disbursed)):
        logged, total = disbursed.get((project, currency), 0), funds.get((project, currency), 0)
        if logged != total:
            findings.append(
                f"project {project} ({currency}): logged disbursements {logged},"
                f" project funds disbursed_minor {total}"
            )
    return findings, {
        "leaves": tree.leaves,
        "checkpoint_size": tree.checkpoint_size,
        "projects": len(disbursed),
    }


def _check_checkpoint(
    cp: asyncpg.Record, roots: tuple[bytes, bytes] | None, key: str | None
) -> list[str]:
    size, root = int(cp["size"]), bytes(cp["root_hash"])
    note = bytes(cp["note"])
    findings: list[str] = []
    try:
        if key is not None:
            verifier = Verifier.from_key(key.strip())
            body = open_checkpoint(note, verifier.name, [verifier])
        else:  # the signature is not checked without the key
            body = parse_checkpoint(note.decode().split("\n\n")[0] + "\n")
    except ValueError as e:
        return [f"the checkpoint of size {size} does not verify: {e}"]
    if (body.size, body.root_hash) != (size, root):
        findings.append(f"the checkpoint note of size {size} is not its stored size and root")
    if roots is None:
        return [*findings, f"the checkpoint's size {size} is beyond the stored leaves"]
    if roots[0] != root:
        findings.append(
            f"the stored leaves' root at size {size} is {_b64(roots[0])},"
            f" the signed checkpoint's is {_b64(root)}"
        )
    if roots[1] != root:
        findings.append(
            f"the tree rebuilt from the rows has root {_b64(roots[1])} at size {size},"
            f" the signed checkpoint's is {_b64(root)}"
        )
    return findings


async def _snapshot(
    dsn: str, work: Callable[[asyncpg.Connection[Any]], Awaitable[tuple[list[str], dict[str, int]]]]
) -> tuple[list[str], dict[str, int]]:
    conn = await connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await work(conn)
    finally:
        await conn.close()


def _report(name: str, db: str, findings: list[str], counts: dict[str, int]) -> None:
    print(
        f"audit {name}: {counts['leaves']} leaves, checkpoint size {counts['checkpoint_size']},"
        f" {counts['projects']} project(s) in {db}"
    )
    for line in findings:  # under their log's line
        print(f"FINDING {line}")


async def main(args: argparse.Namespace, settings: CommonSettings | None = None) -> int:
    """``make audit``; ``settings`` (default: from the environment) name the servers."""
    settings = settings or CommonSettings(jwt_secret=os.environ.get("GFG_JWT_SECRET", "x" * 32))
    donations_db = args.donations_db or os.environ.get("GFG_DONATIONS_DB", "donations")
    charities_db = args.charities_db or os.environ.get("GFG_CHARITIES_DB", "charities")
    findings: list[str] = []
    if args.log in ("donations", "all"):
        charities = None if args.no_totals else await connect(settings.dsn(charities_db))
        try:
            found, counts = await _snapshot(
                settings.dsn(donations_db),
                lambda conn: audit(conn, charities, chunk=args.chunk, key=args.key),
            )
        finally:
            if charities is not None:
                await charities.close()
        _report("donations", donations_db, found, counts)
        findings += found
    if args.log in ("charities", "all"):
        found, counts = await _snapshot(
            settings.dsn(charities_db),
            lambda conn: audit_charities(conn, chunk=args.chunk, key=args.charities_key),
        )
        _report("charities", charities_db, found, counts)
        findings += found
    print("audit: clean" if not findings else f"audit: {len(findings)} finding(s)")
    return 1 if findings else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log", choices=("donations", "charities", "all"), default="all", help="default: all"
    )
    parser.add_argument("--donations-db", help="default: GFG_DONATIONS_DB or donations")
    parser.add_argument("--charities-db", help="default: GFG_CHARITIES_DB or charities")
    parser.add_argument("--no-totals", action="store_true", help="skip the charities totals")
    parser.add_argument("--key", help="the donations log's verifier key: check the signature")
    parser.add_argument("--charities-key", help="the charities log's verifier key, likewise")
    parser.add_argument("--chunk", type=int, default=5000, help="leaves per query")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    """The exit code of ``python -m tools.audit`` with ``argv``."""
    return asyncio.run(main(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(run())

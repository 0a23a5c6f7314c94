"""``make audit``: the donations log rebuilt from the service's own rows, and every
record whose row no longer matches its leaf, named.

In one read-only snapshot (REPEATABLE READ), streaming chunks of ``--chunk`` leaves in log
order (never the whole table):

1. every leaf of ``log_leaf`` is rebuilt from its record (``ledger_entry`` + ``order_salt``)
   with the format of docs/LOG.md, written out here independently of the service's code;
   a leaf whose row changed (field by field) or was deleted is named;
2. the stored hashes (``log_hash``) are recomputed from the stored leaves, and the root at
   the latest signed checkpoint's size is compared with that checkpoint (and, with
   ``--key``, its signature is checked); the tree rebuilt from the rows is compared too;
3. ledger entries with no leaf that are not in the pending queue are named;
4. each project's net in the charities totals (donated - reversed) equals the net of its
   logged records (accruals and matches less reversals), for the projects in the log.

Exit 1 on any finding, 0 when clean. Databases: ``GFG_DONATIONS_DB``, ``GFG_CHARITIES_DB``.
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
from datetime import UTC
from typing import Any

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

_CHECKPOINT = "SELECT size, root_hash, note FROM log_checkpoint ORDER BY size DESC LIMIT 1"
_SIZE = "SELECT size FROM log_tree"
# campaign_id is null but on matches and match reversals (whose rule_version is null).
_LEAF_ROWS = """
SELECT l.leaf_index, l.record_table, l.record_key, l.leaf, e.entry_id::text AS entry_id,
       e.order_id, e.kind, e.amount_minor, e.currency, e.project_id::text AS project_id,
       e.seller_id, e.rule_version, e.campaign_id, e.recorded_at, s.salt
FROM log_leaf AS l
LEFT JOIN ledger_entry AS e ON l.record_table = 'ledger_entry' AND e.seq::text = l.record_key
LEFT JOIN order_salt AS s ON s.order_id = e.order_id
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
_TOTALS = """
SELECT project_id::text AS project_id, currency,
       (donated_minor - reversed_minor + matched_minor) AS net
FROM project_total WHERE project_id = ANY($1::uuid[])
"""


def canonical_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_leaf(row: asyncpg.Record) -> bytes:
    """A ledger entry's leaf as docs/LOG.md defines it."""
    at = row["recorded_at"].astimezone(UTC)
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
            "recorded_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
    )


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


async def audit(
    conn: asyncpg.Connection[Any],
    charities: asyncpg.Connection[Any] | None,
    *,
    chunk: int = 5000,
    key: str | None = None,
) -> tuple[list[str], dict[str, int]]:
    """The findings (empty when clean) and what was audited; ``conn`` must be in a
    read-only REPEATABLE READ transaction so every chunk sees one snapshot."""
    findings: list[str] = []
    cp = await conn.fetchrow(_CHECKPOINT)
    tree_size: int = await conn.fetchval(_SIZE)
    cp_size = -1 if cp is None else int(cp["size"])
    if cp is None:
        findings.append("no signed checkpoint is stored")
    stored_peaks: list[bytes] = []
    rebuilt_peaks: list[bytes] = []
    roots: tuple[bytes, bytes] | None = None
    nets: dict[tuple[str, str], int] = defaultdict(int)
    n = 0
    while True:
        if n == cp_size:  # the chunks stop exactly at the checkpoint's size
            roots = root_from_peaks(stored_peaks), root_from_peaks(rebuilt_peaks)
        rows = await conn.fetch(_LEAF_ROWS, n, min(chunk, cp_size - n) if n < cp_size else chunk)
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
            if fields.get("type") == "entry":
                sign = 1 if fields["kind"] in CREDIT_KINDS else -1
                nets[(fields["project_id"], fields["currency"])] += sign * fields["amount_minor"]
            name = f"{r['record_table']} {r['record_key']} (entry_id {fields.get('entry_id')})"
            if r["entry_id"] is None or r["salt"] is None:
                findings.append(f"leaf {r['leaf_index']}: {name}: row deleted")
                rebuilt.append(leaf)  # nothing to rebuild it from
                continue
            mine = entry_leaf(r)
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
    if n != tree_size:
        findings.append(f"the tree size is {tree_size} but {n} consecutive leaves are stored")
    if cp is not None:
        findings += _check_checkpoint(cp, roots, key)

    after = 0
    while rows := await conn.fetch(_UNLOGGED, after, chunk):
        findings += [
            f"ledger_entry {r['seq']} (entry_id {r['entry_id']}): row added without a leaf"
            for r in rows
        ]
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
    return findings, {"leaves": n, "checkpoint_size": cp_size, "projects": len(nets)}


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


async def main(args: argparse.Namespace, settings: CommonSettings | None = None) -> int:
    """``make audit``; ``settings`` (default: from the environment) name the servers."""
    settings = settings or CommonSettings(jwt_secret=os.environ.get("GFG_JWT_SECRET", "x" * 32))
    donations_db = args.donations_db or os.environ.get("GFG_DONATIONS_DB", "donations")
    charities_db = args.charities_db or os.environ.get("GFG_CHARITIES_DB", "charities")
    conn = await connect(settings.dsn(donations_db))
    charities = None if args.no_totals else await connect(settings.dsn(charities_db))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            findings, counts = await audit(conn, charities, chunk=args.chunk, key=args.key)
    finally:
        await conn.close()
        if charities is not None:
            await charities.close()
    print(
        f"audit: {counts['leaves']} leaves, checkpoint size {counts['checkpoint_size']},"
        f" {counts['projects']} project(s) in {donations_db}"
    )
    for line in findings:
        print(f"FINDING {line}")
    print("audit: clean" if not findings else f"audit: {len(findings)} finding(s)")
    return 1 if findings else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--donations-db", help="default: GFG_DONATIONS_DB or donations")
    parser.add_argument("--charities-db", help="default: GFG_CHARITIES_DB or charities")
    parser.add_argument("--no-totals", action="store_true", help="skip the charities totals")
    parser.add_argument("--key", help="the log's verifier key: also check the signature")
    parser.add_argument("--chunk", type=int, default=5000, help="leaves per query")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

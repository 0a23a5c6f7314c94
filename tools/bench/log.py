"""The donations log's benchmarks, on a fresh database ``<GFG_DONATIONS_DB>_logbench``
(dropped and created again at the start of each run, kept after it: a ``DROP DATABASE``
forces a checkpoint, which after the run would land right before the next module's
measured part and make its first writes of every page full-page images):

- ``log.append_leaves_per_s``: the sequencer draining pre-recorded entries. Ledger entries
  are inserted first with the consumer's own statement (its trigger queues one pending
  row each), then the clock runs while the sequencer appends them: per batch, read the
  pending rows, build the leaves (entry rows and order salts), compute the stored
  hashes, COPY leaves and hashes, delete the pending rows, sign and store a checkpoint.
  ``log.append_cpu_s_per_100k``: the sequencer's own CPU time (this process; the
  database's is not counted) per 100,000 leaves.
- ``log.proof_per_s`` (and ``log.proof_cpu_ms_per_1k``, the server's CPU time per 1,000
  proofs, far less sensitive to the machine's load, and ``log.proof_db_cpu_ms_per_1k``,
  that of the PostgreSQL backends serving it): then half of the orders are posted and
  their postings logged, and the donations service (uvicorn with
  ``GFG_BENCH_LOG_PROOF_WORKERS`` worker processes, default 2, as
  ``GFG_DONATIONS_WORKERS=2`` runs it; posting job off) serves
  ``GET /v1/orders/{id}/donation/proof`` to ``wrk`` (32 connections, a Lua script that
  walks all 50,000 order ids), every answer a 200 with 2 or 3 records and their proofs.

    python -m tools.bench log

``GFG_BENCH_LOG_APPEND_ONLY=1`` runs the append part only (no postings, no proofs). The
append part also prints (stderr) the CPU time of the sequencer's PostgreSQL backend.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services.donations import repository
from services.donations.app import MIGRATIONS
from services.donations.config import Settings
from services.donations.ledger import NewEntry
from services.donations.log import LEAF_SOURCES
from shared.migrations import migrate
from shared.tlog.hashing import stored_hash_count
from shared.tlog.note import Signer, generate_key
from shared.tlog.sequencer import Sequencer
from tools.bench import Figure, start_app, stop_app
from tools.bench.cpu import backends_used, database_backends, process_seconds, tree_seconds

ENTRIES = 100_000
INSERT_CHUNK = 10_000
BATCH = 5_000
ORDERS = ENTRIES // 2
PROOF_SECONDS = 8
CONNECTIONS = 32
# Every order has an accrual and a reversal; the even ones are posted too (3 records;
# the bench's reversals may exceed their accruals, the posting's amount does not).
_POST_EVEN_ORDERS = """
INSERT INTO posting (order_id, seller_id, project_id, currency, posted_minor, posted_at)
SELECT order_id, min(seller_id), (array_agg(project_id))[1], min(currency),
       greatest(sum(CASE WHEN kind = 'reversal' THEN -amount_minor ELSE amount_minor END), 0),
       now()
FROM ledger_entry
WHERE split_part(order_id, '-', 3)::int % 2 = 0
GROUP BY order_id
"""
# One wrk thread walks the order ids with a stride coprime to their count (every id,
# never the same one twice in a row, no pattern the database could cache by chance).
_WRK_SCRIPT = """
local orders, stride, n = %(orders)d, 7919, 0
request = function()
  n = (n + stride) %% orders
  return wrk.format("GET", "/v1/orders/bench-order-" .. n .. "/donation/proof")
end
"""


def _settings() -> Settings:
    return Settings(
        jwt_secret=os.environ.get("GFG_JWT_SECRET", "bench-secret-not-for-production-0123456789"),
        log_level="WARNING",
    )


async def _recreate(settings: Settings, name: str) -> None:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(settings.dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


AVAILABLE_ON = datetime(2100, 1, 1, tzinfo=UTC)  # accruals only; never due here


def _entries(start: int, count: int) -> list[NewEntry]:
    projects = [uuid.UUID(int=n + 1) for n in range(50)]
    return [
        NewEntry(
            entry_id=str(uuid.uuid4()),
            order_id=f"bench-order-{n // 2}",  # two entries per order, as with refunds
            event_key="accrual" if n % 2 == 0 else "refund:r1",
            seller_id=f"bench-seller-{n % 1000}",
            project_id=projects[n % 50],
            kind="accrual" if n % 2 == 0 else "reversal",
            amount_minor=100 + n % 5000,
            currency="CNY",
            rule_version=1,
            event_id=uuid.uuid4(),
            available_on=AVAILABLE_ON if n % 2 == 0 else None,
        )
        for n in range(start, start + count)
    ]


async def run() -> list[Figure]:
    settings = _settings()
    database = f"{settings.donations_db}_logbench"
    dsn = settings.dsn(database)
    await _recreate(settings, database)
    await migrate(dsn, MIGRATIONS)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
    try:
        for start in range(0, ENTRIES, INSERT_CHUNK):
            async with conn.transaction():
                await repository.insert_entries(
                    conn, _entries(start, INSERT_CHUNK), datetime.now(UTC)
                )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    origin = settings.donations_log_origin
    signer_key = generate_key(origin)[0]
    sequencer = Sequencer(
        origin=origin,
        dsn=dsn,
        signer=Signer.from_key(signer_key),
        sources=LEAF_SOURCES,
        batch_size=BATCH,
    )
    try:
        if not await sequencer.claim():
            raise RuntimeError("another sequencer holds the bench log")
        before = {pid: process_seconds(pid) for pid in sequencer.server_pids()}
        started, cpu = time.perf_counter(), time.process_time()
        while await sequencer.drain():
            pass
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        # Its backends: the owning connection's and the reader's (made by drain).
        pg_cpu = sum(process_seconds(p) - before.get(p, 0.0) for p in sequencer.server_pids())
        print(
            f"# append: {ENTRIES} leaves in {elapsed:.2f} s, sequencer CPU {cpu:.2f} s,"
            f" its PostgreSQL backends {pg_cpu:.2f} s",
            file=sys.stderr,
        )
        conn = await asyncpg.connect(dsn)
        try:
            size = await conn.fetchval("SELECT size FROM log_tree")
            hashes = await conn.fetchval("SELECT count(*) FROM log_hash")
            if size != ENTRIES or hashes != stored_hash_count(ENTRIES):
                raise AssertionError(f"log has {size} leaves and {hashes} hashes")
            posted = int((await conn.execute(_POST_EVEN_ORDERS)).split()[-1])
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
        while await sequencer.drain():  # the postings' leaves (not timed)
            pass
    finally:
        await sequencer.close()
    figures = [
        Figure("log.append_leaves_per_s", ENTRIES / elapsed, "leaves/s"),
        Figure("log.append_cpu_s_per_100k", cpu * 100_000 / ENTRIES, "s"),
    ]
    if os.environ.get("GFG_BENCH_LOG_APPEND_ONLY"):
        return figures
    return figures + await _bench_proofs(settings, database, signer_key, posted)


def _wrk(url: str, script: str) -> tuple[float, int, float, str]:
    """(requests/s, requests, p99 ms, output) of one wrk run with ``script``."""
    args = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{PROOF_SECONDS}s", "--latency", "-s", script]
    output = subprocess.run(
        [*args, url], capture_output=True, text=True, check=True, timeout=PROOF_SECONDS + 30
    ).stdout
    if "Non-2xx or 3xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    rate_match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count_match = re.search(r"(\d+) requests in", output)
    if rate_match is None or count_match is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    rate, count = float(rate_match.group(1)), int(count_match.group(1))
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", output)
    assert p99 is not None, output
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rate, count, float(p99.group(1)) * scale, output


async def _bench_proofs(
    settings: Settings, database: str, signer_key: str, posted: int
) -> list[Figure]:
    if shutil.which("wrk") is None:
        raise RuntimeError("log.proof_per_s needs wrk (apt-get install wrk)")
    env = {
        **os.environ,
        "GFG_DONATIONS_DB": database,
        "GFG_TOPIC_PREFIX": "bench.log.",  # topics of its own, on which nothing arrives
        "GFG_JWT_SECRET": settings.hs256_secret(),
        "GFG_DONATIONS_LOG_KEY": signer_key,
        "GFG_POSTING_ENABLED": "false",
        "GFG_LOG_LEVEL": "WARNING",
        # Proofs are stateless reads: one process per core (the rest is safe with several).
        "UVICORN_WORKERS": os.environ.get("GFG_BENCH_LOG_PROOF_WORKERS", "2"),
    }
    server, base = await start_app("services.donations.app:create_app", env)
    try:
        async with httpx.AsyncClient() as client:
            for n, records in ((0, 3), (1, 2)):  # a posted order and one not posted
                proof = await client.get(f"{base}/v1/orders/bench-order-{n}/donation/proof")
                if proof.status_code != 200 or len(proof.json()["entries"]) != records:
                    raise AssertionError(f"bench-order-{n}: {proof.status_code} {proof.text}")
        with tempfile.TemporaryDirectory(prefix="gfg-bench-") as tmp:
            script = Path(tmp) / "proofs.lua"
            script.write_text(_WRK_SCRIPT % {"orders": ORDERS})
            cpu_before, db_before = tree_seconds(server.pid), database_backends(database)
            rate, count, p99, _ = await asyncio.to_thread(_wrk, base, str(script))
            used = tree_seconds(server.pid) - cpu_before
            db_used = backends_used(db_before, database_backends(database))
        print(
            f"# proofs: {count} in {PROOF_SECONDS} s over {ORDERS} orders ({posted} posted),"
            f" tree size {ENTRIES + posted}, {CONNECTIONS} connections, p99 {p99:.1f} ms,"
            f" server CPU {used:.2f} s = {used / count * 1000 * 1000:.0f} ms per 1k proofs,"
            f" database {db_used / count * 1000 * 1000:.0f} ms per 1k, {env['UVICORN_WORKERS']}"
            " worker processes",
            file=sys.stderr,
        )
    finally:
        await stop_app(server)
    return [
        Figure("log.proof_per_s", rate, "req/s"),
        Figure("log.proof_cpu_ms_per_1k", used / count * 1_000_000, "ms"),
        Figure("log.proof_db_cpu_ms_per_1k", db_used / count * 1_000_000, "ms"),
    ]

"""Postings in the donations log, on real PostgreSQL and Kafka: a donations app with a 2 s
return window on a fresh database. Every posting gets exactly one leaf, an order's proof
covers its entries and then its posting (``tools.verify`` prints it and refuses a posting
passed off as an entry), and ``tools.audit`` names an ``UPDATE`` of ``posted_minor`` and
a posting that slipped past the log.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.donations.app import create_app
from services.donations.config import Settings
from shared.db import connect
from shared.events import TOPIC_ORDERS
from shared.kafka import Producer
from shared.tlog.hashing import leaf_hash
from shared.tlog.proofs import check_record
from tests.conftest import unique
from tests.integration.donations.conftest import Donations, create_project, publish, put_rule
from tests.integration.donations.log_support import (
    b64d,
    check_stored_log,
    delete_topics,
    drop_database,
    fresh_database,
    served_checkpoint,
)
from tests.integration.donations.test_consumer import completed, refunded
from tests.integration.donations.test_log_tools import run_tool
from tests.support import eventually, serve

WINDOW = timedelta(seconds=2)


@pytest.fixture(scope="module")
async def posted_log(charities_url: str) -> AsyncIterator[Donations]:
    base = Settings()
    settings = Settings(
        charities_url=charities_url,
        donations_db=f"{base.donations_db}_logpost",
        topic_prefix=f"{base.topic_prefix}{unique('logpost')}.",
        return_window_s=int(WINDOW.total_seconds()),
        posting_grace_s=4.0,
        posting_interval_s=0.2,
    )
    await fresh_database(settings, settings.donations_db)
    try:
        async with serve(create_app(settings)) as url:
            yield Donations(url, charities_url, settings)
    finally:
        await delete_topics(settings)
        await drop_database(settings, settings.donations_db)


@pytest.fixture
async def db(posted_log: Donations) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await connect(posted_log.settings.dsn(posted_log.settings.donations_db))
    try:
        yield conn
    finally:
        await conn.close()


async def _drained(db: asyncpg.Connection[Any]) -> int:
    """Waits until every entry and posting has its leaf under a signed checkpoint."""

    async def probe() -> tuple[int, int, int, int]:
        row = await db.fetchrow(
            "SELECT (SELECT count(*) FROM ledger_entry) + (SELECT count(*) FROM posting) AS r,"
            " (SELECT count(*) FROM log_pending) AS p, (SELECT size FROM log_tree) AS s,"
            " (SELECT max(size) FROM log_checkpoint) AS c"
        )
        assert row is not None
        return row["r"], row["p"], row["s"], row["c"] or 0

    done = await eventually(probe, lambda r: r[1] == 0 and r[0] == r[2] == r[3])
    return done[2]


async def _posted_orders(
    http: httpx.AsyncClient, d: Donations, producer: Producer, db: asyncpg.Connection[Any]
) -> tuple[str, str, str]:
    """Two orders of one seller (10 %), one refunded in full inside the window, both
    posted and logged: (kept order, emptied order, project)."""
    seller = unique("seller")
    project = await create_project(http, d.charities_url)
    await put_rule(http, d, seller, project_id=project, mode="percent", basis_points=1000)
    kept = completed(unique("order"), seller, 5_000)
    emptied = completed(unique("order"), seller, 3_000)
    full = refunded(emptied, "r-all", 3_000, 3_000)
    await publish(producer, d.settings.topic(TOPIC_ORDERS), kept, emptied, full)
    ids = [kept.order.order_id, emptied.order.order_id]

    async def posted() -> int:
        n: int = await db.fetchval(
            "SELECT count(*) FROM posting WHERE order_id = ANY($1::text[])", ids
        )
        return n

    await eventually(posted, lambda n: n == 2)
    await _drained(db)
    return kept.order.order_id, emptied.order.order_id, project


async def _proof(http: httpx.AsyncClient, d: Donations, order_id: str) -> dict[str, Any]:
    response = await eventually(
        lambda: http.get(f"{d.url}/v1/orders/{order_id}/donation/proof"),
        lambda r: r.status_code == 200,
    )
    body: dict[str, Any] = response.json()
    return body


async def test_every_posting_gets_one_leaf_and_the_proof_ends_with_it(
    http: httpx.AsyncClient,
    posted_log: Donations,
    order_producer: Producer,
    db: asyncpg.Connection[Any],
    tmp_path: Path,
) -> None:
    kept, emptied, project = await _posted_orders(http, posted_log, order_producer, db)
    size = await check_stored_log(db)
    postings = await db.fetch("SELECT seq::text AS key, order_id FROM posting")
    posting_leaves = await db.fetch(
        "SELECT record_key, leaf FROM log_leaf WHERE record_table = 'posting'"
    )
    assert sorted(r["record_key"] for r in posting_leaves) == sorted(r["key"] for r in postings)
    assert {json.loads(r["leaf"])["type"] for r in posting_leaves} == {"posting"}

    checkpoint = await served_checkpoint(http, posted_log.url)
    assert checkpoint.size >= size
    proof = await _proof(http, posted_log, kept)
    assert proof["checkpoint"].splitlines()[1] == str(checkpoint.size)
    *entries, posting = proof["entries"]
    assert [json.loads(b64d(e["leaf_b64"]))["kind"] for e in entries] == ["accrual"]
    assert posting["entry_id"] is None
    leaf = json.loads(b64d(posting["leaf_b64"]))
    assert leaf["type"] == "posting"
    assert (leaf["posted_minor"], leaf["project_id"], leaf["currency"]) == (500, project, "CNY")
    for e in proof["entries"]:
        path = [b64d(h) for h in e["inclusion_proof"]]
        hashed = leaf_hash(b64d(e["leaf_b64"]))
        check_record(path, checkpoint.size, checkpoint.root_hash, e["leaf_index"], hashed)
    zero = await _proof(http, posted_log, emptied)
    assert [e["entry_id"] is None for e in zero["entries"]] == [False, False, True]
    assert json.loads(b64d(zero["entries"][-1]["leaf_b64"]))["posted_minor"] == 0

    key = (await http.get(f"{posted_log.url}/v1/log/key")).text
    saved = tmp_path / "proof.json"
    saved.write_text(json.dumps(proof))
    ok = await run_tool("tools.verify", "--key", key, str(saved))
    assert ok.code == 0, ok.err
    assert f"OK: order {kept} has 2 record(s)" in ok.out
    assert f"posted 500 CNY to project {project} at {leaf['posted_at']} (final)" in ok.out

    disguised = json.loads(json.dumps(proof))  # the posting passed off as the accrual
    disguised["entries"][-1]["entry_id"] = entries[0]["entry_id"]
    (tmp_path / "disguised.json").write_text(json.dumps(disguised))
    failed = await run_tool("tools.verify", "--key", key, str(tmp_path / "disguised.json"))
    assert failed.code == 1, failed.out
    assert f"leaf {posting['leaf_index']} is not entry {entries[0]['entry_id']}" in failed.err

    inflated = json.loads(json.dumps(proof))
    inflated["entries"][-1]["leaf_b64"] = base64.b64encode(
        b64d(posting["leaf_b64"]).replace(b'"posted_minor":500,', b'"posted_minor":5000,')
    ).decode()
    (tmp_path / "inflated.json").write_text(json.dumps(inflated))
    failed = await run_tool("tools.verify", "--key", key, str(tmp_path / "inflated.json"))
    assert failed.code == 1, failed.out
    assert f"leaf {posting['leaf_index']} is not in the tree" in failed.err


async def test_audit_names_a_changed_posting_and_one_without_a_leaf(
    http: httpx.AsyncClient,
    posted_log: Donations,
    order_producer: Producer,
    db: asyncpg.Connection[Any],
) -> None:
    kept, _, _ = await _posted_orders(http, posted_log, order_producer, db)
    key = (await http.get(f"{posted_log.url}/v1/log/key")).text
    audit = (
        "tools.audit",
        "--log",
        "donations",
        "--donations-db",
        posted_log.settings.donations_db,
        "--key",
        key,
    )
    clean = await run_tool(*audit, "--no-totals", "--chunk", "2")
    assert clean.code == 0, clean.out + clean.err
    assert "audit: clean" in clean.out

    seq = await db.fetchval("SELECT seq FROM posting WHERE order_id = $1", kept)
    await db.execute("UPDATE posting SET posted_minor = posted_minor + 1 WHERE seq = $1", seq)
    try:
        changed = await run_tool(*audit, "--no-totals", "--chunk", "2")
    finally:
        await db.execute("UPDATE posting SET posted_minor = posted_minor - 1 WHERE seq = $1", seq)
    assert changed.code == 1, changed.out
    findings = [line for line in changed.out.splitlines() if line.startswith("FINDING")]
    assert any(f"posting {seq} (order commitment " in f for f in findings), changed.out
    assert any("row changed: posted_minor 500 -> 501" in f for f in findings), changed.out
    assert any("the tree rebuilt from the rows has root" in f for f in findings), changed.out
    assert len(findings) == 2, changed.out

    async with db.transaction():  # a posting slipped past the log (its queue row removed)
        extra = await db.fetchval(
            "INSERT INTO posting (order_id, seller_id, project_id, currency, posted_minor,"
            " posted_at) VALUES ($1, 's', $2, 'CNY', 7, now()) RETURNING seq",
            unique("order"),
            uuid.uuid4(),
        )
        await db.execute("DELETE FROM log_pending")
    unlogged = await run_tool(*audit, "--no-totals")
    await db.execute("DELETE FROM posting WHERE seq = $1", extra)
    assert unlogged.code == 1, unlogged.out
    assert f"FINDING posting {extra}: row added without a leaf" in unlogged.out
    again = await run_tool(*audit, "--no-totals")
    assert again.code == 0, again.out

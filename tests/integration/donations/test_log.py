"""The donations transparency log through the real service: empty log, exactly one leaf
per entry across redelivered Kafka batches, order proofs, paging, consistency proofs.

The module runs its own donations app on a fresh database and its own topics, so the log
starts empty and holds only what these tests put in it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from services.donations.app import create_app
from services.donations.config import Settings
from services.donations.consumer import LedgerHandler
from services.donations.schemas import OrderProofOut
from shared.db import connect, create_pool
from shared.events import TOPIC_LEDGER, TOPIC_ORDERS
from shared.kafka import Producer, Record, make_producer
from shared.tlog.checkpoint import open_checkpoint
from shared.tlog.hashing import EMPTY_ROOT, leaf_hash, leaf_hashes, merkle_root
from shared.tlog.note import Verifier
from shared.tlog.proofs import ProofError, check_record, check_tree
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
from tests.support import eventually, serve


@pytest.fixture(scope="module")
async def log_donations(charities_url: str) -> AsyncIterator[Donations]:
    base = Settings()
    settings = Settings(
        charities_url=charities_url,
        donations_db=f"{base.donations_db}_log",
        topic_prefix=f"{base.topic_prefix}{unique('log')}.",
        topic_partitions=3,
    )
    await fresh_database(settings, settings.donations_db)
    try:
        async with serve(create_app(settings)) as url:
            yield Donations(url, charities_url, settings)
    finally:
        await delete_topics(settings)
        await drop_database(settings, settings.donations_db)


@pytest.fixture
async def log_db(log_donations: Donations) -> AsyncIterator[asyncpg.Connection[Any]]:
    settings = log_donations.settings
    conn = await connect(settings.dsn(settings.donations_db))
    try:
        yield conn
    finally:
        await conn.close()


async def _drained(db: asyncpg.Connection[Any], entries: int) -> None:
    async def probe() -> tuple[int, int, int]:
        row = await db.fetchrow(
            "SELECT (SELECT count(*) FROM ledger_entry) AS e,"
            " (SELECT count(*) FROM log_pending) AS p, (SELECT size FROM log_tree) AS s"
        )
        assert row is not None
        return row["e"], row["p"], row["s"]

    await eventually(probe, lambda r: r[0] == entries and r[1] == 0 and r[2] == entries)


async def test_an_empty_log_serves_a_signed_checkpoint_of_size_0(
    http: httpx.AsyncClient, log_donations: Donations
) -> None:
    url = log_donations.url

    async def probe() -> httpx.Response:
        return await http.get(f"{url}/v1/log/checkpoint")

    await eventually(probe, lambda r: r.status_code == 200)
    checkpoint = await served_checkpoint(http, url)
    assert (checkpoint.size, checkpoint.root_hash) == (0, EMPTY_ROOT)
    assert checkpoint.root_hash == hashlib.sha256(b"").digest()
    entries = await http.get(f"{url}/v1/log/entries", params={"start": 0})
    assert entries.status_code == 200
    assert entries.json() == {"entries": []}
    proof = await http.get(f"{url}/v1/log/consistency", params={"first": 0, "second": 0})
    assert proof.json() == {"first": 0, "second": 0, "proof": []}
    beyond = await http.get(f"{url}/v1/log/entries", params={"start": 1})
    assert beyond.status_code == 422, beyond.text
    assert beyond.json()["errors"][0]["field"] == "start"


async def test_every_entry_gets_exactly_one_leaf_across_redelivered_batches(
    http: httpx.AsyncClient, log_donations: Donations, log_db: asyncpg.Connection[Any]
) -> None:
    settings = log_donations.settings
    seller = unique("seller")
    project = await create_project(http, log_donations.charities_url)
    await put_rule(
        http, log_donations, seller, project_id=project, mode="percent", basis_points=300
    )
    events: list[Any] = []
    entries = 0
    for n in range(120):
        order = completed(unique("order"), seller, 2_000 + 13 * n)
        events.append(order)
        entries += 1
        if n % 4 == 0:
            total = order.order.total_minor
            events += [refunded(order, "r1", total, total)] * 2  # a duplicate refund
            entries += 1
    events += events[:10]  # duplicate completions
    topic = settings.topic(TOPIC_ORDERS)
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await publish(producer, topic, *events)
    finally:
        await producer.stop()
    await _drained(log_db, entries)

    # The same records again, as a consumer group that lost its offsets gets them: the
    # handler records nothing, so the trigger queues nothing and no leaf is added.
    records = await _read_topic(settings, topic, len(events))
    pool = await create_pool(settings.dsn(settings.donations_db), min_size=1, max_size=2)
    try:
        handler = LedgerHandler(pool, settings.topic(TOPIC_LEDGER))
        await asyncio.gather(handler.handle(records[: len(records) // 2]), handler.handle(records))
        assert handler.entries_recorded == 0
    finally:
        await pool.close()
    assert await log_db.fetchval("SELECT count(*) FROM log_pending") == 0
    await _drained(log_db, entries)
    assert await check_stored_log(log_db) == entries


async def _read_topic(settings: Settings, topic: str, count: int) -> list[Record]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=unique("log-redelivery"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    records: list[Record] = []
    try:
        async with asyncio.timeout(60):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500)
                records += [r for part in batches.values() for r in part]
    finally:
        await consumer.stop()
    return records


async def test_an_order_proof_verifies_against_the_signed_checkpoint(
    http: httpx.AsyncClient, log_donations: Donations, log_db: asyncpg.Connection[Any]
) -> None:
    settings = log_donations.settings
    seller = unique("seller")
    project = await create_project(http, log_donations.charities_url)
    await put_rule(http, log_donations, seller, project_id=project, mode="fixed", amount_minor=7)
    order = completed(unique("order"), seller, 5_000)
    order_id = order.order.order_id
    producer: Producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await publish(producer, settings.topic(TOPIC_ORDERS), order)
        await publish(producer, settings.topic(TOPIC_ORDERS), refunded(order, "r", 5_000, 5_000))
    finally:
        await producer.stop()

    async def probe() -> httpx.Response:
        return await http.get(f"{log_donations.url}/v1/orders/{order_id}/donation/proof")

    response = await eventually(
        probe, lambda r: r.status_code == 200 and len(r.json()["entries"]) == 2
    )
    body = response.json()
    receipt = (await http.get(f"{log_donations.url}/v1/orders/{order_id}/donation")).json()
    assert [e["entry_id"] for e in body["entries"]] == [e["entry_id"] for e in receipt["entries"]]

    key = (await http.get(f"{log_donations.url}/v1/log/key")).text
    checkpoint = open_checkpoint(
        body["checkpoint"].encode(), settings.donations_log_origin, [Verifier.from_key(key)]
    )
    salt = bytes.fromhex(body["order_salt"])
    assert len(salt) == 16
    assert body["order_salt"] == salt.hex()
    commitment = hashlib.sha256(order_id.encode() + b"\x00" + salt).hexdigest()
    for entry, seen in zip(body["entries"], receipt["entries"], strict=True):
        leaf = b64d(entry["leaf_b64"])
        proof = [b64d(h) for h in entry["inclusion_proof"]]
        check_record(
            proof, checkpoint.size, checkpoint.root_hash, entry["leaf_index"], leaf_hash(leaf)
        )
        fields = orjson.loads(leaf)
        assert leaf == orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)  # canonical
        assert order_id.encode() not in leaf
        assert fields == {
            "type": "entry",
            "entry_id": entry["entry_id"],
            "kind": seen["kind"],
            "amount_minor": 7,
            "currency": "CNY",
            "project_id": project,
            "seller_id": seller,
            "rule_version": seen["rule_version"],
            "campaign_id": None,
            "order_commitment": commitment,
            "recorded_at": fields["recorded_at"],
        }
        assert fields["recorded_at"].endswith("Z")
        assert len(fields["recorded_at"]) == 27
    tampered = bytearray(b64d(body["entries"][0]["leaf_b64"]))
    tampered[-3] ^= 1
    with pytest.raises(ProofError):
        check_record(
            [b64d(h) for h in body["entries"][0]["inclusion_proof"]],
            checkpoint.size,
            checkpoint.root_hash,
            body["entries"][0]["leaf_index"],
            leaf_hash(bytes(tampered)),
        )
    missing = await http.get(f"{log_donations.url}/v1/orders/{unique('order')}/donation/proof")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["x-content-type-options"] == "nosniff"
    # The fast path answers valid ids; FastAPI's route still answers the rest as before.
    fast = await probe()
    assert fast.headers["content-type"] == "application/json"
    assert fast.headers["x-content-type-options"] == "nosniff"
    assert (
        fast.content == OrderProofOut.model_validate_json(fast.content).model_dump_json().encode()
    )
    too_long = await http.get(f"{log_donations.url}/v1/orders/{'x' * 65}/donation/proof")
    assert too_long.status_code == 422
    assert too_long.headers["content-type"] == "application/problem+json"
    assert too_long.json()["errors"][0]["field"] == "order_id"
    nul = await http.get(f"{log_donations.url}/v1/orders/a%00b/donation/proof")
    assert nul.status_code == 422
    head = await http.head(f"{log_donations.url}/v1/orders/{order_id}/donation/proof")
    assert head.status_code == 405
    assert await log_db.fetchval("SELECT count(*) FROM order_salt WHERE order_id = $1", order_id)


async def test_entries_page_through_the_log_and_consistency_proofs_verify(
    http: httpx.AsyncClient, log_donations: Donations
) -> None:
    url = log_donations.url
    checkpoint = await served_checkpoint(http, url)
    size = checkpoint.size
    assert size > 100  # the earlier tests logged entries
    leaves: list[bytes] = []
    while len(leaves) < size:
        page = await http.get(f"{url}/v1/log/entries", params={"start": len(leaves), "limit": 37})
        assert page.status_code == 200, page.text
        entries = page.json()["entries"]
        assert entries
        assert [e["leaf_index"] for e in entries] == list(
            range(len(leaves), len(leaves) + len(entries))
        )
        leaves += [b64d(e["leaf_b64"]) for e in entries]
    assert len(leaves) == size
    end = await http.get(f"{url}/v1/log/entries", params={"start": size})
    assert end.json() == {"entries": []}
    hashes = leaf_hashes(leaves)
    assert merkle_root(hashes) == checkpoint.root_hash
    for first, second in [(1, size), (size // 3, size), (7, 8), (size - 1, size), (size, size)]:
        response = await http.get(
            f"{url}/v1/log/consistency", params={"first": first, "second": second}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["first"], body["second"]) == (first, second)
        check_tree(
            [b64d(h) for h in body["proof"]],
            second,
            merkle_root(hashes[:second]),
            first,
            merkle_root(hashes[:first]),
        )
    bad: list[dict[str, str | int]] = [
        {"first": 5, "second": 4},
        {"first": 1, "second": size + 1},
        {"first": -1, "second": 3},
        {"first": "x", "second": 3},
        {"second": 3},
    ]
    for params in bad:
        response = await http.get(f"{url}/v1/log/consistency", params=params)
        assert response.status_code == 422, response.text
    for page_params in ({"start": size + 1}, {"start": -1}, {"limit": 0}, {"limit": 1001}):
        response = await http.get(f"{url}/v1/log/entries", params=page_params)
        assert response.status_code == 422, response.text

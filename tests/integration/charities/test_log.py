"""The charities transparency log through the real service, on real PostgreSQL and Kafka:
exactly one leaf per disbursement and allocation, the disbursement proof (accepted by
``tools.verify``, rejected when tampered), ``tools.audit`` naming a changed allocation,
and checkpoints that stay consistent across a restart (checked by ``tools.witness`` too).

Each app here runs on a fresh database and its own topics, with a signing key the tests
hold, so its log holds only what these tests put in it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from services.charities.app import create_app
from services.charities.config import Settings
from shared.db import connect
from shared.events import TOPIC_LEDGER
from shared.kafka import Producer, make_producer
from shared.tlog.checkpoint import Checkpoint, open_checkpoint
from shared.tlog.hashing import append_leaves, leaf_hashes, root_from_peaks, stored_hash_count
from shared.tlog.note import Verifier, generate_key
from shared.tlog.proofs import check_tree
from tests.conftest import bearer, unique
from tests.integration.charities.funds import disbursement, funded_project
from tests.integration.donations.log_support import delete_topics, drop_database, fresh_database
from tests.support import assert_problem, eventually, serve
from tools.verify import VerifyError, verify_disbursement

ROOT = Path(__file__).parents[3]
ORIGIN = "goods-for-good/charities"


@dataclass(frozen=True)
class Log:
    url: str
    settings: Settings
    verifier_key: str


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def _settings(tag: str, signer_key: str) -> Settings:
    base = Settings()
    return Settings(
        charities_db=f"{base.charities_db}_{tag}",
        topic_prefix=f"{base.topic_prefix}{unique(tag)}.",
        totals_cache_seconds=0.0,
        charities_log_key=SecretStr(signer_key),
    )


@asynccontextmanager
async def _fresh(settings: Settings) -> AsyncIterator[None]:
    await fresh_database(settings, settings.charities_db)
    try:
        yield
    finally:
        await delete_topics(settings)
        await drop_database(settings, settings.charities_db)


@pytest.fixture(scope="module")
async def log() -> AsyncIterator[Log]:
    skey, vkey = generate_key(ORIGIN)
    settings = _settings("chlog", skey)
    async with _fresh(settings), serve(create_app(settings)) as url:
        yield Log(url, settings, vkey)


@pytest.fixture
async def client(log: Log) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=log.url, timeout=30) as client:
        yield client


@pytest.fixture
async def producer() -> AsyncIterator[Producer]:
    producer = make_producer(Settings().kafka_bootstrap)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@pytest.fixture
async def db(log: Log) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await connect(log.settings.dsn(log.settings.charities_db))
    try:
        yield conn
    finally:
        await conn.close()


async def run_tool(*args: str) -> Run:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def _disburse(
    client: httpx.AsyncClient, project_id: str, amount_minor: int, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/projects/{project_id}/disbursements",
        json=disbursement(amount_minor, **fields),
        headers=bearer("admin"),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _funded(
    client: httpx.AsyncClient, producer: Producer, log: Log, amounts: list[int]
) -> str:
    _, project_id, _ = await funded_project(
        client, producer, log.settings.topic(TOPIC_LEDGER), amounts
    )
    return project_id


async def _drained(db: asyncpg.Connection[Any]) -> int:
    """Waits until every disbursement and allocation has its leaf and the latest
    checkpoint is of the whole tree; returns the size."""

    async def probe() -> tuple[int, int, int, int]:
        row = await db.fetchrow(
            "SELECT (SELECT count(*) FROM disbursement) + (SELECT count(*) FROM allocation) AS r,"
            " (SELECT count(*) FROM log_pending) AS p, (SELECT size FROM log_tree) AS s,"
            " (SELECT max(size) FROM log_checkpoint) AS c"
        )
        assert row is not None
        return row["r"], row["p"], row["s"], row["c"] or 0

    done = await eventually(probe, lambda r: r[1] == 0 and r[0] == r[2] == r[3])
    return done[2]


async def _proof(client: httpx.AsyncClient, disbursement_id: str) -> dict[str, Any]:
    response = await eventually(
        lambda: client.get(f"/v1/disbursements/{disbursement_id}/proof"),
        lambda r: r.status_code == 200,
    )
    body: dict[str, Any] = response.json()
    return body


def _leaf(entry: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(base64.b64decode(entry["leaf_b64"]))
    return fields


async def test_every_disbursement_and_allocation_gets_exactly_one_leaf(
    client: httpx.AsyncClient, producer: Producer, log: Log, db: asyncpg.Connection[Any]
) -> None:
    project_id = await _funded(client, producer, log, [100, 200, 300])
    evidence = "ab" * 32
    first = await _disburse(client, project_id, 150, evidence_sha256=evidence)
    second = await _disburse(client, project_id, 250)
    retry = await client.post(  # the same disbursement again: no new record, no new leaf
        f"/v1/projects/{project_id}/disbursements",
        json={
            k: first[k]
            for k in ("disbursement_id", "amount_minor", "recipient", "purpose", "evidence_sha256")
        },
        headers=bearer("admin"),
    )
    assert retry.status_code == 200, retry.text
    size = await _drained(db)

    leaves = await db.fetch(
        "SELECT leaf_index, record_table, record_key, leaf FROM log_leaf ORDER BY leaf_index"
    )
    assert [r["leaf_index"] for r in leaves] == list(range(size))
    keys = [(r["record_table"], r["record_key"]) for r in leaves]
    assert len(set(keys)) == size, "a record has two leaves"
    records = await db.fetch(
        "SELECT 'disbursement' AS t, disbursement_id::text AS k FROM disbursement UNION ALL"
        " SELECT 'allocation', disbursement_id::text || ':' || entry_id::text FROM allocation"
    )
    assert sorted(keys) == sorted((r["t"], r["k"]) for r in records)

    # The stored hashes and the latest checkpoint are what shared.tlog computes.
    expected, peaks = append_leaves(0, [], leaf_hashes(bytes(r["leaf"]) for r in leaves))
    stored = await db.fetch("SELECT hash_index, hash FROM log_hash ORDER BY hash_index")
    assert len(stored) == stored_hash_count(size)
    assert [bytes(r["hash"]) for r in stored] == expected
    latest = await db.fetchrow("SELECT size, root_hash FROM log_checkpoint ORDER BY size DESC")
    assert latest is not None
    assert (latest["size"], bytes(latest["root_hash"])) == (size, root_from_peaks(peaks))

    # The leaves say what the rows say, in the documented format (FIFO: 150 = 100 + 50).
    by_key = {(r["record_table"], r["record_key"]): bytes(r["leaf"]) for r in leaves}
    row = await db.fetchrow(
        "SELECT recorded_at FROM disbursement WHERE disbursement_id = $1",
        uuid.UUID(first["disbursement_id"]),
    )
    assert row is not None
    at = row["recorded_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    d_id = first["disbursement_id"]
    expected_leaf = (
        f'{{"amount_minor":150,"currency":"CNY","disbursement_id":"{d_id}",'
        f'"evidence_sha256":"{evidence}","project_id":"{project_id}","purpose":"books",'
        f'"recipient":"Village school","recorded_at":"{at}","type":"disbursement"}}'
    )
    assert by_key[("disbursement", d_id)] == expected_leaf.encode()
    allocations = await db.fetch(
        "SELECT entry_id::text AS entry_id, amount_minor FROM allocation"
        " WHERE disbursement_id = $1 ORDER BY amount_minor DESC",
        uuid.UUID(first["disbursement_id"]),
    )
    assert [a["amount_minor"] for a in allocations] == [100, 50]
    for a in allocations:
        expected_leaf = (
            f'{{"amount_minor":{a["amount_minor"]},"disbursement_id":"{d_id}",'
            f'"entry_id":"{a["entry_id"]}","type":"allocation"}}'
        )
        assert by_key[("allocation", f"{d_id}:{a['entry_id']}")] == expected_leaf.encode()
    second_leaf = json.loads(by_key[("disbursement", second["disbursement_id"])])
    assert second_leaf["evidence_sha256"] is None
    assert second_leaf["amount_minor"] == 250

    # Records queued again (by hand) keep their one leaf: the sequencer drops them.
    await db.execute(
        "INSERT INTO log_pending (record_table, record_key) SELECT record_table, record_key"
        " FROM log_leaf ORDER BY leaf_index LIMIT 4"
    )
    await eventually(lambda: db.fetchval("SELECT count(*) FROM log_pending"), lambda n: n == 0)
    assert await db.fetchval("SELECT count(*) FROM log_leaf") == size
    assert await db.fetchval("SELECT size FROM log_tree") == size


async def test_a_disbursement_proof_verifies_and_fails_when_tampered(
    client: httpx.AsyncClient,
    producer: Producer,
    log: Log,
    db: asyncpg.Connection[Any],
    tmp_path: Path,
) -> None:
    project_id = await _funded(client, producer, log, [100, 200, 300])
    await _disburse(client, project_id, 20)  # the next one starts mid-entry
    made = await _disburse(client, project_id, 400)
    disbursement_id = made["disbursement_id"]
    proof = await _proof(client, disbursement_id)
    assert proof["disbursement_id"] == disbursement_id
    kinds = [_leaf(e)["type"] for e in proof["entries"]]
    assert kinds == ["disbursement", "allocation", "allocation", "allocation"]
    assert sorted(_leaf(e)["amount_minor"] for e in proof["entries"][1:]) == [80, 120, 200]
    indexes = [e["leaf_index"] for e in proof["entries"]]
    assert indexes[1:] == sorted(indexes[1:])
    assert (await client.get("/v1/log/key")).text.strip() == log.verifier_key

    lines = verify_disbursement(proof, disbursement_id, log.verifier_key)
    assert lines[0].startswith(f"OK: disbursement {disbursement_id} is in the log")
    assert f"400 CNY from project {project_id} to 'Village school'" in lines[0]
    assert len(lines) == 5  # and one line per allocation

    saved = tmp_path / "proof.json"
    saved.write_text(json.dumps(proof))
    ok = await run_tool("tools.verify", "--key", log.verifier_key, str(saved))
    assert ok.code == 0, ok.err
    assert f"OK: disbursement {disbursement_id} is in the log" in ok.out
    fetched = await run_tool(
        "tools.verify",
        "--key",
        log.verifier_key,
        "--url",
        log.url,
        "--disbursement",
        disbursement_id,
    )
    assert fetched.code == 0, fetched.err
    entry = next(
        _leaf(e)["entry_id"] for e in proof["entries"][1:] if _leaf(e)["amount_minor"] == 200
    )
    assert f"  {entry}: 200" in fetched.out.splitlines()

    def tampered(change: Any) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(proof))
        change(body)
        return body

    def more_money(body: dict[str, Any]) -> None:
        (entry,) = [e for e in body["entries"] if _leaf(e)["amount_minor"] == 200]
        leaf = base64.b64decode(entry["leaf_b64"])
        entry["leaf_b64"] = base64.b64encode(
            leaf.replace(b'"amount_minor":200,', b'"amount_minor":900,')
        ).decode()

    def flip_proof_byte(body: dict[str, Any]) -> None:
        h = bytearray(base64.b64decode(body["entries"][0]["inclusion_proof"][0]))
        h[3] ^= 0x01
        body["entries"][0]["inclusion_proof"][0] = base64.b64encode(bytes(h)).decode()

    def drop_allocation(body: dict[str, Any]) -> None:
        del body["entries"][3]

    def twice(body: dict[str, Any]) -> None:
        body["entries"][3] = body["entries"][2]

    def swap(body: dict[str, Any]) -> None:  # an allocation first
        body["entries"][0], body["entries"][1] = body["entries"][1], body["entries"][0]

    _, other_key = generate_key(ORIGIN)
    cases = {
        "tampered leaf": (tampered(more_money), log.verifier_key, "is not in the tree"),
        "flipped proof": (tampered(flip_proof_byte), log.verifier_key, "is not in the tree"),
        "missing allocation": (tampered(drop_allocation), log.verifier_key, "do not add up"),
        "leaf twice": (tampered(twice), log.verifier_key, "holds a leaf twice"),
        "not its own": (tampered(swap), log.verifier_key, "are not disbursement"),
        "wrong key": (proof, other_key, f"has no signature by the key {ORIGIN}"),
    }
    for name, (body, key, message) in cases.items():
        with pytest.raises(VerifyError, match=message):
            verify_disbursement(body, disbursement_id, key)
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        path.write_text(json.dumps(body))
        failed = await run_tool("tools.verify", "--key", key, str(path))
        assert failed.code == 1, (name, failed.out)
        assert message in failed.err, (name, failed.err)
    with pytest.raises(VerifyError, match="the leaves are not disbursement"):
        verify_disbursement(proof, str(uuid.uuid4()), log.verifier_key)

    assert_problem(await client.get(f"/v1/disbursements/{uuid.uuid4()}/proof"), 404)
    assert_problem(await client.get("/v1/disbursements/not-a-uuid/proof"), 404)


async def test_a_proof_waits_for_the_checkpoint(
    client: httpx.AsyncClient, producer: Producer, log: Log, db: asyncpg.Connection[Any]
) -> None:
    project_id = await _funded(client, producer, log, [500])
    await _drained(db)
    blocker = await connect(log.settings.dsn(log.settings.charities_db))
    try:
        # Holding the tree's row keeps the sequencer's next batch from committing.
        async with blocker.transaction():
            await blocker.execute("SELECT size FROM log_tree FOR UPDATE")
            made = await _disburse(client, project_id, 200)
            waiting = await client.get(f"/v1/disbursements/{made['disbursement_id']}/proof")
            assert_problem(waiting, 503)
            assert waiting.headers["retry-after"] == "1"
    finally:
        await blocker.close()
    proof = await _proof(client, made["disbursement_id"])
    assert len(proof["entries"]) == 2
    verify_disbursement(proof, made["disbursement_id"], log.verifier_key)


async def test_audit_names_an_updated_allocation_amount_and_an_unlogged_row(
    client: httpx.AsyncClient, producer: Producer, log: Log, db: asyncpg.Connection[Any]
) -> None:
    project_id = await _funded(client, producer, log, [300, 300])
    made = await _disburse(client, project_id, 450)
    await _drained(db)
    audit = (
        "tools.audit",
        "--log",
        "charities",
        "--charities-db",
        log.settings.charities_db,
        "--charities-key",
        log.verifier_key,
        "--chunk",
        "3",
    )
    clean = await run_tool(*audit)
    assert clean.code == 0, clean.out + clean.err
    assert "audit: clean" in clean.out

    row = await db.fetchrow(
        "SELECT entry_id::text AS entry_id, amount_minor FROM allocation"
        " WHERE disbursement_id = $1 ORDER BY amount_minor LIMIT 1",
        uuid.UUID(made["disbursement_id"]),
    )
    assert row is not None
    assert row["amount_minor"] == 150
    update = "UPDATE allocation SET amount_minor = $3 WHERE disbursement_id = $1 AND entry_id = $2"
    key = (uuid.UUID(made["disbursement_id"]), uuid.UUID(row["entry_id"]))
    await db.execute(update, *key, 1150)
    try:
        changed = await run_tool(*audit)
    finally:
        await db.execute(update, *key, 150)
    assert changed.code == 1, changed.out
    findings = [line for line in changed.out.splitlines() if line.startswith("FINDING")]
    assert any(
        f"allocation {made['disbursement_id']}:{row['entry_id']}: row changed:"
        " amount_minor 150 -> 1150" in f
        for f in findings
    ), changed.out
    assert any("the tree rebuilt from the rows has root" in f for f in findings), changed.out
    assert len(findings) == 2, changed.out  # the logged leaves still add up

    # A disbursement that slipped past the log (its queue row removed).
    sneaked = uuid.uuid4()
    async with db.transaction():
        await db.execute(
            "INSERT INTO disbursement (disbursement_id, project_id, currency, amount_minor,"
            " recipient, purpose, allocations_count) VALUES ($1, $2, 'CNY', 1, 'x', 'y', 0)",
            sneaked,
            uuid.UUID(project_id),
        )
        await db.execute("DELETE FROM log_pending")
    try:
        unlogged = await run_tool(*audit)
    finally:
        await db.execute("DELETE FROM disbursement WHERE disbursement_id = $1", sneaked)
    assert unlogged.code == 1, unlogged.out
    assert f"disbursement {sneaked}: row added without a leaf" in unlogged.out
    again = await run_tool(*audit)
    assert again.code == 0, again.out


async def test_checkpoints_stay_consistent_across_a_restart(
    producer: Producer, tmp_path: Path
) -> None:
    skey, vkey = generate_key(ORIGIN)
    settings = _settings("chlogrestart", skey)
    verifier = Verifier.from_key(vkey)
    state = tmp_path / "witness.json"

    async def checkpoint(client: httpx.AsyncClient) -> Checkpoint:
        note = (await client.get("/v1/log/checkpoint")).content
        return open_checkpoint(note, ORIGIN, [verifier])

    async with _fresh(settings):
        conn = await connect(settings.dsn(settings.charities_db))
        try:
            run = Log("", settings, vkey)
            async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
                project_id = await _funded(c, producer, run, [100, 200])
                await _disburse(c, project_id, 120)
                size = await _drained(conn)
                before = await eventually(lambda: checkpoint(c), lambda cp: cp.size == size)
                seen = await run_tool("tools.witness", "--url", url, "--state", str(state))
                assert seen.code == 0, seen.err
            async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
                restarted = await checkpoint(c)  # re-signed on start: the same tree
                assert (restarted.size, restarted.root_hash) == (before.size, before.root_hash)
                await _disburse(c, project_id, 180)
                after_size = await _drained(conn)
                assert after_size == size + 2  # the disbursement and its one allocation
                after = await eventually(lambda: checkpoint(c), lambda cp: cp.size == after_size)
                proof = (
                    await c.get("/v1/log/consistency", params={"first": size, "second": after_size})
                ).json()["proof"]
                check_tree(
                    [base64.b64decode(h) for h in proof],
                    after.size,
                    after.root_hash,
                    before.size,
                    before.root_hash,
                )
                witnessed = await run_tool("tools.witness", "--url", url, "--state", str(state))
                assert witnessed.code == 0, witnessed.err
                assert f"witness: ok, size {after_size}" in witnessed.out
        finally:
            await conn.close()

"""The log's outside checkers against a real donations service: ``tools.verify`` accepts a
served proof and rejects every tampering, ``tools.audit`` names a changed ledger row, and
``tools.witness`` catches an operator who rewrote the log's history.

The module runs its own donations app on a fresh database with a signing key the tests
hold (to play the dishonest operator who re-signs). The tools run as subprocesses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from services.donations.app import create_app
from services.donations.config import Settings
from services.donations.ledger import NewEntry
from shared.db import connect
from shared.tlog.checkpoint import Checkpoint, sign_checkpoint
from shared.tlog.hashing import append_leaves, leaf_hashes, root_from_peaks
from shared.tlog.note import Signer, generate_key
from tests.conftest import unique
from tests.integration.donations.log_support import (
    delete_topics,
    drop_database,
    fresh_database,
    insert_entries,
    ledger_entries,
)
from tests.support import eventually, serve

ROOT = Path(__file__).parents[3]


@dataclass(frozen=True)
class Log:
    url: str
    settings: Settings
    signer_key: str
    verifier_key: str


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
async def log(charities_url: str) -> AsyncIterator[Log]:
    base = Settings()
    skey, vkey = generate_key(base.donations_log_origin)
    settings = Settings(
        charities_url=charities_url,
        donations_db=f"{base.donations_db}_logtools",
        topic_prefix=f"{base.topic_prefix}{unique('logtools')}.",
        donations_log_key=SecretStr(skey),
    )
    await fresh_database(settings, settings.donations_db)
    try:
        async with serve(create_app(settings)) as url:
            yield Log(url, settings, skey, vkey)
    finally:
        await delete_topics(settings)
        await drop_database(settings, settings.donations_db)


@pytest.fixture
async def log_db(log: Log) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await connect(log.settings.dsn(log.settings.donations_db))
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


async def _drained(db: asyncpg.Connection[Any]) -> int:
    async def probe() -> tuple[int, int, int, int]:
        row = await db.fetchrow(
            "SELECT (SELECT count(*) FROM ledger_entry) AS e, (SELECT count(*) FROM log_pending)"
            " AS p, (SELECT size FROM log_tree) AS s, (SELECT max(size) FROM log_checkpoint) AS c"
        )
        assert row is not None
        return row["e"], row["p"], row["s"], row["c"] or 0

    done = await eventually(probe, lambda r: r[1] == 0 and r[0] == r[2] == r[3])
    return done[2]


async def _logged_order(http: httpx.AsyncClient, log: Log, db: asyncpg.Connection[Any]) -> str:
    """Three accruals of three orders, and a reversal of the first: returns that order."""
    entries = ledger_entries(3, unique("seller"), unique("order"))
    first = entries[0]
    reversal = first._replace(
        entry_id=str(uuid.uuid4()),
        event_key="refund:r1",
        kind="reversal",
        amount_minor=40,
        available_on=None,
    )
    await insert_entries(db, entries)
    await insert_entries(db, [reversal._replace(event_id=uuid.uuid4())])
    await _drained(db)

    async def probe() -> httpx.Response:
        return await http.get(f"{log.url}/v1/orders/{first.order_id}/donation/proof")

    await eventually(probe, lambda r: r.status_code == 200 and len(r.json()["entries"]) == 2)
    return first.order_id


async def test_verify_accepts_a_served_proof_and_rejects_every_tampering(
    http: httpx.AsyncClient, log: Log, log_db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    order_id = await _logged_order(http, log, log_db)
    proof = (await http.get(f"{log.url}/v1/orders/{order_id}/donation/proof")).json()
    assert (await http.get(f"{log.url}/v1/log/key")).text.strip() == log.verifier_key
    saved = tmp_path / "proof.json"
    saved.write_text(json.dumps(proof))

    ok = await run_tool("tools.verify", "--key", log.verifier_key, str(saved))
    assert ok.code == 0, ok.err
    project = json.loads(base64.b64decode(proof["entries"][0]["leaf_b64"]))["project_id"]
    assert f"OK: order {order_id} has 2 record(s)" in ok.out
    assert f"accrual 100 CNY to project {project}" in ok.out
    assert f"reversal 40 CNY to project {project}" in ok.out
    assert "tree size 4" in ok.out

    key_file = tmp_path / "log.key"
    key_file.write_text(log.verifier_key + "\n")
    fetched = await run_tool(
        "tools.verify", "--key-file", str(key_file), "--url", log.url, "--order", order_id
    )
    assert fetched.code == 0, fetched.err
    assert f"OK: order {order_id} has 2 record(s)" in fetched.out

    def tampered(change: Any) -> Path:
        body = json.loads(json.dumps(proof))
        change(body)
        path = tmp_path / f"tampered-{uuid.uuid4()}.json"
        path.write_text(json.dumps(body))
        return path

    def more_money(body: dict[str, Any]) -> None:
        leaf = base64.b64decode(body["entries"][0]["leaf_b64"])
        assert b'"amount_minor":100,' in leaf
        body["entries"][0]["leaf_b64"] = base64.b64encode(
            leaf.replace(b'"amount_minor":100,', b'"amount_minor":900,')
        ).decode()

    def flip_proof_byte(body: dict[str, Any]) -> None:
        h = bytearray(base64.b64decode(body["entries"][1]["inclusion_proof"][0]))
        h[5] ^= 0x01
        body["entries"][1]["inclusion_proof"][0] = base64.b64encode(bytes(h)).decode()

    _, other_key = generate_key(log.settings.donations_log_origin)
    failures = {
        "tampered leaf": ["--key", log.verifier_key, str(tampered(more_money))],
        "flipped proof byte": ["--key", log.verifier_key, str(tampered(flip_proof_byte))],
        "wrong key": ["--key", other_key, str(saved)],
        "wrong order id": ["--key", log.verifier_key, "--order", f"{order_id}x", str(saved)],
    }
    messages = {
        "tampered leaf": "leaf 0 is not in the tree of size 4",
        "flipped proof byte": "leaf 3 is not in the tree of size 4",
        "wrong key": "has no signature by the key goods-for-good/donations",
        "wrong order id": f"leaf 0 is not a record of order {order_id}x",
    }
    for name, args in failures.items():
        failed = await run_tool("tools.verify", *args)
        assert failed.code == 1, (name, failed.out)
        assert failed.out == ""
        assert messages[name] in failed.err, (name, failed.err)


async def test_audit_names_a_changed_amount_and_a_row_without_a_leaf(
    http: httpx.AsyncClient, log: Log, log_db: asyncpg.Connection[Any]
) -> None:
    await _logged_order(http, log, log_db)
    charities_db = os.environ.get("GFG_CHARITIES_DB", "charities")
    charities = await connect(log.settings.dsn(charities_db))
    try:  # the charities service's totals of these projects, as its consumer folds them
        totals = await log_db.fetch(
            """SELECT project_id, currency,
                      sum(amount_minor) FILTER (WHERE kind = 'accrual') AS donated,
                      coalesce(sum(amount_minor) FILTER (WHERE kind = 'reversal'), 0) AS reversed
               FROM ledger_entry GROUP BY project_id, currency"""
        )
        await charities.executemany(
            """INSERT INTO project_total (project_id, currency, donated_minor, reversed_minor)
               VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, currency) DO UPDATE
               SET donated_minor = excluded.donated_minor,
                   reversed_minor = excluded.reversed_minor""",
            [tuple(r) for r in totals],
        )
    finally:
        await charities.close()
    audit = (
        "tools.audit",
        "--log",
        "donations",
        "--donations-db",
        log.settings.donations_db,
        "--key",
        log.verifier_key,
    )
    clean = await run_tool(*audit, "--charities-db", charities_db, "--chunk", "3")
    assert clean.code == 0, clean.out + clean.err
    assert "audit: clean" in clean.out

    row = await log_db.fetchrow(
        "SELECT seq, entry_id::text AS entry_id, project_id::text AS project_id"
        " FROM ledger_entry WHERE kind = 'accrual' ORDER BY seq DESC LIMIT 1"
    )
    assert row is not None
    await log_db.execute(
        "UPDATE ledger_entry SET amount_minor = amount_minor + 1 WHERE seq = $1", row["seq"]
    )
    try:
        changed = await run_tool(*audit, "--charities-db", charities_db, "--chunk", "3")
    finally:
        await log_db.execute(
            "UPDATE ledger_entry SET amount_minor = amount_minor - 1 WHERE seq = $1", row["seq"]
        )
    assert changed.code == 1, changed.out
    findings = [line for line in changed.out.splitlines() if line.startswith("FINDING")]
    assert any(
        f"ledger_entry {row['seq']} (entry_id {row['entry_id']}): row changed: amount_minor" in f
        for f in findings
    ), changed.out
    assert any("the tree rebuilt from the rows has root" in f for f in findings), changed.out
    assert len(findings) == 2, changed.out  # the totals agree with the log, not the row

    async with log_db.transaction():  # an entry slipped past the log (queue row removed)
        extra = ledger_entries(1, unique("seller"), unique("order"))
        await insert_entries(log_db, extra)
        await log_db.execute("DELETE FROM log_pending")
    unlogged = await run_tool(*audit, "--no-totals")
    assert unlogged.code == 1, unlogged.out
    assert f"(entry_id {extra[0].entry_id}): row added without a leaf" in unlogged.out
    await log_db.execute("DELETE FROM ledger_entry WHERE entry_id = $1", extra[0].entry_id)
    again = await run_tool(*audit, "--no-totals")
    assert again.code == 0, again.out


async def test_a_rewritten_history_is_caught_by_the_witness(
    http: httpx.AsyncClient, log: Log, log_db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    await _logged_order(http, log, log_db)
    size = await _drained(log_db)
    state = tmp_path / "witness.json"
    witness = ("tools.witness", "--url", log.url, "--state", str(state))
    seen = await run_tool(*witness, "--key", log.verifier_key)
    assert seen.code == 0, seen.err
    assert f"witness: ok, size {size}" in seen.out
    again = await run_tool(*witness)
    assert again.code == 0, again.err
    recorded = json.loads(state.read_text())
    assert [c["size"] for c in recorded["checkpoints"]] == [size]

    # The operator deletes a leaf and its record, renumbers the later leaves, recomputes
    # every stored hash with shared.tlog and re-signs with the service's own key.
    victim = size // 2
    async with log_db.transaction():
        key = await log_db.fetchval("SELECT record_key FROM log_leaf WHERE leaf_index = $1", victim)
        await log_db.execute("DELETE FROM ledger_entry WHERE seq = $1", int(key))
        await log_db.execute("DELETE FROM log_leaf WHERE leaf_index = $1", victim)
        await log_db.execute(
            "UPDATE log_leaf SET leaf_index = leaf_index + 1000000 WHERE leaf_index > $1", victim
        )
        await log_db.execute(
            "UPDATE log_leaf SET leaf_index = leaf_index - 1000001 WHERE leaf_index > 1000000"
        )
        leaves = [
            bytes(r["leaf"])
            for r in await log_db.fetch("SELECT leaf FROM log_leaf ORDER BY leaf_index")
        ]
        assert len(leaves) == size - 1
        stored, peaks = append_leaves(0, [], leaf_hashes(leaves))
        await log_db.execute("DELETE FROM log_hash")
        await log_db.copy_records_to_table(
            "log_hash", records=list(enumerate(stored)), columns=("hash_index", "hash")
        )
        await log_db.execute("UPDATE log_tree SET size = $1", size - 1)
        await log_db.execute("DELETE FROM log_checkpoint")
        root = root_from_peaks(peaks)
        note = sign_checkpoint(
            Checkpoint(log.settings.donations_log_origin, size - 1, root),
            [Signer.from_key(log.signer_key)],
        )
        await log_db.execute(
            "INSERT INTO log_checkpoint (size, root_hash, note) VALUES ($1, $2, $3)",
            size - 1,
            root,
            note,
        )
    # New donations grow the rewritten tree past what the witness saw; every checkpoint
    # is validly signed, but the tree no longer extends the one the witness kept.
    more: list[NewEntry] = ledger_entries(2, unique("seller"), unique("order"))
    await insert_entries(log_db, more)
    assert await _drained(log_db) == size + 1
    await eventually(
        lambda: http.get(f"{log.url}/v1/log/checkpoint"),
        lambda r: r.text.splitlines()[1] == str(size + 1),
    )
    caught = await run_tool(*witness)
    assert caught.code == 1, caught.out
    assert (
        f"inconsistent: the tree of size {size + 1} does not extend the tree of size {size}"
        in caught.err
    )
    assert json.loads(state.read_text()) == recorded  # the rewritten log is not accepted

""" "Check my donation" on the project page, in headless Chromium: the page fetches an
order's proof from the donations log through this service and verifies it in the browser
(WebCrypto SHA-256 and Ed25519 only). A real donations app, on a fresh database, logs an
order's accrual and its posting; the page shows the donation verified, then rejects the
proof once the posting's stored leaf is changed in SQL, and the page's verifier rejects
a wrong order id, a bad signature and another key (screenshots in test-artifacts/)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from services.charities.app import create_app
from services.charities.config import Settings
from services.donations.app import create_app as create_donations_app
from services.donations.config import Settings as DonationsSettings
from shared.db import connect
from shared.tlog.note import generate_key
from tests.conftest import unique
from tests.integration.charities.helpers import new_project
from tests.integration.charities.test_dashboard import (
    ARTIFACTS,
    assert_no_console_errors,
    browser,  # noqa: F401  (the fixture)
)
from tests.integration.donations.log_support import (
    delete_topics,
    drop_database,
    fresh_database,
    insert_entries,
    ledger_entries,
)
from tests.support import eventually, free_port, serve

_READ = """
const text = (id) => document.getElementById(id)?.textContent ?? null;
return {
  name: text("project-name"),
  verified: text("check-verified"),
  failed: text("check-failed"),
  overflow: document.documentElement.scrollWidth > window.innerWidth,
};
"""
# Runs the page's own verifier on a proof object the test hands in.
_VERIFY = """
const [proof, orderId, key, done] = arguments;
import("/static/donation-proof.js")
  .then((m) => m.verifyDonationProof(proof, orderId, key))
  .then((r) => done({ ok: true, size: r.treeSize, amount: String(r.amountMinor) }))
  .catch((e) => done({ ok: false, error: `${e.name}: ${e.message}` }));
"""


@dataclass(frozen=True)
class DonationsLog:
    url: str
    settings: DonationsSettings


@pytest.fixture(scope="module")
async def donations_log() -> AsyncIterator[DonationsLog]:
    base = DonationsSettings()
    settings = DonationsSettings(
        donations_db=f"{base.donations_db}_check",
        topic_prefix=f"{base.topic_prefix}{unique('check')}.",
    )
    await fresh_database(settings, settings.donations_db)
    try:
        async with serve(create_donations_app(settings)) as url:
            yield DonationsLog(url, settings)
    finally:
        await delete_topics(settings)
        await drop_database(settings, settings.donations_db)


@pytest.fixture
async def donations_db(donations_log: DonationsLog) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await connect(donations_log.settings.dsn(donations_log.settings.donations_db))
    try:
        yield conn
    finally:
        await conn.close()


async def _posted_order(
    http: httpx.AsyncClient, d: DonationsLog, db: asyncpg.Connection[Any], project_id: str
) -> dict[str, Any]:
    """An order's accrual of 25.00 CNY to the project and its posting, both logged:
    returns the order's proof as donations serves it."""
    [entry] = ledger_entries(1, unique("seller"), unique("order"))
    entry = entry._replace(project_id=uuid.UUID(project_id), amount_minor=2_500)
    await insert_entries(db, [entry])
    await db.execute(
        "INSERT INTO posting (order_id, seller_id, project_id, currency, posted_minor, posted_at)"
        " VALUES ($1, $2, $3, 'CNY', 2500, now())",
        entry.order_id,
        entry.seller_id,
        entry.project_id,
    )
    response = await eventually(
        lambda: http.get(f"{d.url}/v1/orders/{entry.order_id}/donation/proof"),
        lambda r: r.status_code == 200 and len(r.json()["entries"]) == 2,
    )
    proof: dict[str, Any] = response.json()
    return proof


async def test_check_my_donation_verifies_in_the_browser_and_rejects_a_tampered_proof(
    client: httpx.AsyncClient,
    donations_log: DonationsLog,
    donations_db: asyncpg.Connection[Any],
    browser: webdriver.Chrome,  # noqa: F811
) -> None:
    _, project_id = await new_project(client)
    name = (await client.get(f"/v1/projects/{project_id}")).json()["name"]
    async with httpx.AsyncClient(timeout=15) as http:
        proof = await _posted_order(http, donations_log, donations_db, project_id)
        key = (await http.get(f"{donations_log.url}/v1/log/key")).text.strip()
    order_id = proof["order_id"]
    size = int(proof["checkpoint"].splitlines()[1])
    settings = Settings(donations_url=donations_log.url, totals_cache_seconds=0.0)

    async with serve(create_app(settings, consume=False)) as base_url:
        await asyncio.to_thread(browser.get, f"{base_url}/projects/{project_id}")

        async def read() -> dict[str, Any]:
            page: dict[str, Any] = await asyncio.to_thread(browser.execute_script, _READ)
            return page

        async def check(order: str) -> None:
            field = await asyncio.to_thread(browser.find_element, By.ID, "check-order-id")
            await asyncio.to_thread(field.clear)
            await asyncio.to_thread(field.send_keys, order)
            button = await asyncio.to_thread(
                browser.find_element, By.CSS_SELECTOR, "#check-form button"
            )
            await asyncio.to_thread(button.click)

        await eventually(read, lambda p: p["name"] == name)
        await check(order_id)
        page = await eventually(read, lambda p: p["verified"] is not None)
        assert page["verified"] == (
            f"verified: 25.00 CNY to {name}, in tree of size {size} (posted, final)"
        )
        assert page["failed"] is None
        assert not page["overflow"]
        ARTIFACTS.mkdir(exist_ok=True)
        assert await asyncio.to_thread(
            browser.save_screenshot, str(ARTIFACTS / "check-donation-verified.png")
        )

        async def verify_in_page(body: dict[str, Any], order: str, vkey: str) -> dict[str, Any]:
            result: dict[str, Any] = await asyncio.to_thread(
                browser.execute_async_script, _VERIFY, body, order, vkey
            )
            return result

        assert await verify_in_page(proof, order_id, key) == {
            "ok": True,
            "size": size,
            "amount": "2500",
        }
        signature = proof["checkpoint"].rstrip("\n").rsplit(" ", 1)[1]
        raw = bytearray(base64.b64decode(signature))
        raw[10] ^= 0x01
        bad_signature = json.loads(json.dumps(proof))
        bad_signature["checkpoint"] = proof["checkpoint"].replace(
            signature, base64.b64encode(bytes(raw)).decode()
        )
        _, other_key = generate_key(donations_log.settings.donations_log_origin)
        rejections = {
            "wrong order": (proof, f"{order_id}x", key),
            "bad signature": (bad_signature, order_id, key),
            "other key": (proof, order_id, other_key),
        }
        reasons = {
            "wrong order": f"leaf 0 is not a record of order {order_id}x",
            "bad signature": "the checkpoint's signature by goods-for-good/donations is invalid",
            "other key": "the checkpoint has no signature by the key goods-for-good/donations",
        }
        for case, args in rejections.items():
            result = await verify_in_page(*args)
            assert result == {"ok": False, "error": f"ProofError: {reasons[case]}"}, case

        # The operator changes the posting's stored leaf: the proof served no longer verifies.
        posting = proof["entries"][1]
        assert posting["entry_id"] is None
        await donations_db.execute(
            """UPDATE log_leaf SET leaf = convert_to(replace(convert_from(leaf, 'UTF8'),
                   '"posted_minor":2500,', '"posted_minor":25000,'), 'UTF8')
               WHERE record_table = 'posting' AND leaf_index = $1""",
            posting["leaf_index"],
        )
        await check(order_id)
        page = await eventually(read, lambda p: p["failed"] is not None)
        assert page["verified"] is None
        assert page["failed"] == (
            f"NOT verified: leaf {posting['leaf_index']} is not in the tree of size {size}"
            " and this root."
        )
        assert await asyncio.to_thread(
            browser.save_screenshot, str(ARTIFACTS / "check-donation-rejected.png")
        )

        await asyncio.to_thread(assert_no_console_errors, browser)

        unknown = unique("order")  # (its 404 is a console error, hence checked last)
        await check(unknown)
        page = await eventually(read, lambda p: p["failed"] is not None and unknown in p["failed"])
        assert page["failed"] == f"No donation found for order {unknown}."


async def test_the_relay_answers_503_while_donations_is_down_and_serves_a_configured_key() -> None:
    _, vkey = generate_key("goods-for-good/donations")
    settings = Settings(
        donations_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        donations_verifier_key=vkey,
        totals_cache_seconds=0.0,
    )
    app = create_app(settings, consume=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://charities") as client:
            proof = await client.get(f"/v1/orders/{unique('order')}/donation/proof")
            assert proof.status_code == 503, proof.text
            assert proof.headers["retry-after"] == "1"
            assert proof.json()["title"] == "Donations log unavailable"
            key = await client.get("/v1/donations-log/key")
            assert key.status_code == 200
            assert key.text == vkey
    unpinned = create_app(Settings(donations_url=settings.donations_url), consume=False)
    async with unpinned.router.lifespan_context(unpinned):
        transport = httpx.ASGITransport(app=unpinned)
        async with httpx.AsyncClient(transport=transport, base_url="http://charities") as client:
            assert (await client.get("/v1/donations-log/key")).status_code == 503

"""The project page in headless Chromium: goal and progress, pending and posted money,
the disbursements, and the "where did my donation go?" box tracing an order split across
two disbursements, at desktop and phone width, under the strict CSP (screenshots in
test-artifacts/)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI
from selenium import webdriver
from selenium.webdriver.common.by import By

from services.charities.app import create_app
from services.charities.config import Settings
from shared.kafka import Producer
from tests.conftest import unique
from tests.integration.charities.funds import (
    T0,
    disbursement,
    posted,
    recorded,
    send,
    totals,
)
from tests.integration.charities.helpers import new_project
from tests.integration.charities.test_dashboard import (
    ARTIFACTS,
    DESKTOP,
    PHONE,
    assert_no_console_errors,
    browser,  # noqa: F401  (the fixture)
    set_viewport,
)
from tests.support import eventually, serve

_READ = """
const text = (id) => document.getElementById(id)?.textContent ?? null;
const q = (sel) => [...document.querySelectorAll(sel)];
return {
  name: text("project-name"),
  goal: text("goal-label"),
  progress: document.getElementById("goal-progress").value,
  pending: document.querySelector("#money-pending .value")?.textContent ?? null,
  posted: document.querySelector("#money-posted .value")?.textContent ?? null,
  available: document.querySelector("#money-available .value")?.textContent ?? null,
  rows: q("#disbursement-rows tr").map((r) => r.dataset.disbursementId),
  amounts: q("#disbursement-rows td.num").map((c) => c.textContent),
  trace: document.querySelector("#trace-result .trace-summary")?.textContent ?? null,
  traced: q("#trace-allocations li").map((li) => [li.dataset.disbursementId, li.textContent]),
  overflow: document.documentElement.scrollWidth > window.innerWidth,
};
"""


async def test_project_page_shows_money_disbursements_and_a_trace(
    client: httpx.AsyncClient,
    ledger_producer: Producer,
    ledger_topic: str,
    charities_settings: Settings,
    charities_app: FastAPI,
    browser: webdriver.Chrome,  # noqa: F811
    admin: dict[str, str],
) -> None:
    _, project_id = await new_project(client, goal_minor=100_000)
    first, second, waiting = unique("order"), unique("order"), unique("order")
    await send(
        ledger_producer,
        ledger_topic,
        [
            recorded(project_id, first, 30_000),
            recorded(project_id, second, 20_000),
            recorded(project_id, waiting, 5_000),
            posted(project_id, first, 30_000, T0),
            posted(project_id, second, 20_000, T0.replace(hour=1)),
        ],
    )
    await eventually(lambda: totals(client, project_id), lambda b: b["posted_minor"] == 50_000)
    url = f"/v1/projects/{project_id}/disbursements"
    books = disbursement(25_000, recipient="Village school", purpose="books")
    desks = disbursement(10_000, recipient="Carpenter", purpose="desks")
    for body in (books, desks):
        response = await client.post(url, json=body, headers=admin)
        assert response.status_code == 201, response.text

    async with serve(create_app(charities_settings, consume=False)) as base_url:
        await asyncio.to_thread(browser.get, f"{base_url}/projects/{project_id}")

        async def read() -> dict[str, Any]:
            page: dict[str, Any] = await asyncio.to_thread(browser.execute_script, _READ)
            return page

        page = await eventually(read, lambda p: len(p["rows"]) == 2)
        assert page["goal"] == "55.0% of 1,000.00 CNY"
        assert page["progress"] == 550
        assert page["pending"] == "50.00 CNY"
        assert page["posted"] == "500.00 CNY"
        assert page["available"] == "150.00 CNY"
        assert page["rows"] == [books["disbursement_id"], desks["disbursement_id"]]
        assert page["amounts"] == ["250.00 CNY", "100.00 CNY"]

        # FIFO: "books" takes 250.00 of the first order, "desks" its last 50.00 (and 50.00 more)
        field = await asyncio.to_thread(browser.find_element, By.ID, "order-id")
        await asyncio.to_thread(field.send_keys, first)
        button = await asyncio.to_thread(
            browser.find_element, By.CSS_SELECTOR, "#trace-form button"
        )
        await asyncio.to_thread(button.click)
        page = await eventually(read, lambda p: len(p["traced"]) == 2)
        assert [d for d, _ in page["traced"]] == [
            books["disbursement_id"],
            desks["disbursement_id"],
        ]
        assert page["traced"][0][1].startswith("250.00 CNY to Village school for books")
        assert page["traced"][1][1].startswith("50.00 CNY to Carpenter for desks")
        assert "300.00 CNY" in page["trace"]
        assert "posted" in page["trace"]
        assert "300.00 CNY spent, 0.00 CNY not yet" in page["trace"]
        assert not page["overflow"]
        ARTIFACTS.mkdir(exist_ok=True)
        assert await asyncio.to_thread(
            browser.save_screenshot, str(ARTIFACTS / "project-desktop.png")
        )

        await asyncio.to_thread(set_viewport, browser, *PHONE)
        page = await read()
        assert not page["overflow"], "the project page is wider than a phone"
        assert await asyncio.to_thread(
            browser.save_screenshot, str(ARTIFACTS / "project-phone.png")
        )
        await asyncio.to_thread(set_viewport, browser, *DESKTOP)
        await asyncio.to_thread(assert_no_console_errors, browser)

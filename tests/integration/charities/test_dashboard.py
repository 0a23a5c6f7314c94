"""The dashboard page in headless Chromium: a new donation shows up without a reload."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from services.charities.app import create_app
from services.charities.config import Settings
from shared.kafka import Producer
from tests.integration.charities.helpers import ledger_entry, new_project, produce
from tests.support import eventually, serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium is missing: run deploy/browser.sh")
    with tempfile.TemporaryDirectory(prefix="gfg-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


_READ_ROW = """
const row = document.querySelector(`tr[data-project-id="${arguments[0]}"]`);
if (!row) return null;
const cells = {};
for (const cls of ["project", "net", "donations", "sellers", "bar-label"]) {
  cells[cls] = row.querySelector("." + cls).textContent;
}
return cells;
"""


def _cells(driver: webdriver.Chrome, project_id: str) -> dict[str, str] | None:
    """The row's cells read in one script, so they all come from the same render."""
    cells: dict[str, str] | None = driver.execute_script(_READ_ROW, project_id)
    return cells


async def test_new_donation_appears_without_reload(
    client: httpx.AsyncClient,
    ledger_producer: Producer,
    ledger_topic: str,
    charities_settings: Settings,
    browser: webdriver.Chrome,
) -> None:
    _, project_id = await new_project(client, goal_minor=1000)
    # The page is served by a second instance (API only) over a real socket; the session
    # app's consumer folds the ledger into the same database.
    async with serve(create_app(charities_settings, consume=False)) as base_url:
        await asyncio.to_thread(browser.get, base_url + "/")

        async def cells() -> dict[str, str] | None:
            return await asyncio.to_thread(_cells, browser, project_id)

        before = await eventually(cells, lambda c: c is not None)
        assert before is not None
        assert before["donations"] == "0"
        assert before["net"] == "0.00 CNY"
        await asyncio.to_thread(browser.execute_script, "window.__sameDocument = true;")

        await produce(
            ledger_producer,
            ledger_topic,
            [ledger_entry(project_id, 123, seller_id="s-a"), ledger_entry(project_id, 2)],
        )
        after = await eventually(cells, lambda c: c is not None and c["donations"] == "2")
        assert after is not None
        assert after["net"] == "1.25 CNY"
        assert after["sellers"] == "2"
        assert after["bar-label"].startswith("12.5% of 10.00 CNY")
        same_document = await asyncio.to_thread(
            browser.execute_script, "return window.__sameDocument === true;"
        )
        assert same_document, "the page reloaded instead of updating in place"

        # the daily chart of the selected project shows today's bar
        row = await asyncio.to_thread(
            browser.find_element, By.CSS_SELECTOR, f'tr[data-project-id="{project_id}"]'
        )
        await asyncio.to_thread(row.click)

        async def bars() -> list[str]:
            def read() -> list[str]:
                found = browser.find_elements(By.CSS_SELECTOR, "#chart rect.donated")
                return [str(bar.get_attribute("data-value")) for bar in found]

            try:
                return await asyncio.to_thread(read)
            except StaleElementReferenceException:
                return []

        values = await eventually(bars, lambda v: "125" in v)
        assert len(values) == 30
        ARTIFACTS.mkdir(exist_ok=True)
        assert await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "dashboard.png"))

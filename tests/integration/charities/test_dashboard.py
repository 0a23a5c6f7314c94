"""The dashboard page in headless Chromium: a new donation shows up without a reload, the
layout holds from 1280 px wide down to a phone, amounts above 2^53 show exactly, the
sponsors' matched money and the selected project's active campaigns show (from a stand-in
donations service) and update, and the strict Content-Security-Policy blocks nothing the
page needs."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from services.charities.app import create_app
from services.charities.config import Settings
from shared.kafka import Producer
from tests.integration.charities.helpers import (
    campaign,
    donations_stand_in,
    fold_directly,
    ledger_entry,
    match_entry,
    new_project,
    produce,
)
from tests.support import eventually, free_port, serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


DESKTOP = (1280, 900, False)
TABLET_WIDE = (1024, 768, False)  # the narrowest with the chart beside the summary
TABLET = (800, 900, False)  # rows as two-column cards
PHONE = (390, 844, True)  # rows as one-column cards


def set_viewport(driver: webdriver.Chrome, width: int, height: int, mobile: bool) -> None:
    """An exact viewport (``--window-size`` includes the window's frame)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


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
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            set_viewport(driver, *DESKTOP)
            yield driver
        finally:
            driver.quit()


_READ_ROW = """
const row = document.querySelector(`tr[data-project-id="${arguments[0]}"]`);
if (!row) return null;
const cells = {};
const selectors = {project: ".project", net: ".net .amount", matched: ".net .matched",
                   donations: ".donations", sellers: ".sellers", "bar-label": ".bar-label"};
for (const [name, selector] of Object.entries(selectors)) {
  cells[name] = row.querySelector(selector).textContent;
}
return cells;
"""


# The campaigns panel as shown: each listed campaign's sponsor, remaining text and bar width.
_READ_CAMPAIGNS = """
const box = document.getElementById("campaigns");
if (box.hidden) return null;
return {
  items: [...box.querySelectorAll("li")].map((li) => ({
    id: li.dataset.campaignId,
    sponsor: li.querySelector(".sponsor").textContent,
    remaining: li.querySelector(".remaining").textContent,
    width: li.querySelector(".fill").style.width,
  })),
  note: document.getElementById("campaign-note").textContent,
};
"""


def _campaigns(driver: webdriver.Chrome) -> dict[str, Any] | None:
    shown: dict[str, Any] | None = driver.execute_script(_READ_CAMPAIGNS)
    return shown


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
    # app's consumer folds the ledger into the same database. No donations service
    # answers: the campaigns panel says so and nothing else on the page minds.
    settings = charities_settings.model_copy(
        update={"donations_url": f"http://127.0.0.1:{free_port()}"}
    )
    async with serve(create_app(settings, consume=False)) as base_url:
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
        shown = await eventually(
            lambda: asyncio.to_thread(_campaigns, browser), lambda c: c is not None
        )
        assert shown == {"items": [], "note": "Campaigns are unavailable right now."}
        # read while the server is up: a poll after it stops is refused, and logged
        assert_no_console_errors(browser)


def assert_no_console_errors(driver: webdriver.Chrome) -> None:
    """No console error: a script or style blocked by the CSP, a failed request, a throw."""
    # selenium leaves get_log unannotated
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    errors = [
        e["message"]
        for e in entries
        if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]
    ]
    assert errors == []


# Everything the layout assertions need, read in one script from one render.
_LAYOUT = """
const rect = (node) => {
  const r = node.getBoundingClientRect();
  return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, height: r.height};
};
const row = document.querySelector(`tr[data-project-id="${arguments[0]}"]`);
// scroll the page only (scrollIntoView would also scroll the table's box sideways)
window.scrollTo(0, window.scrollY + row.getBoundingClientRect().top - window.innerHeight / 2);
const cells = [...row.children].map((td) => {
  const r = rect(td);
  const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
  return {name: td.className, rect: r, onTop: hit !== null && td.contains(hit)};
});
const svg = document.querySelector("#chart svg");
const texts = (selector) => [...svg.querySelectorAll(selector)].map(
  (t) => ({text: t.textContent, rect: rect(t)}));
return {
  viewport: {width: window.innerWidth, height: window.innerHeight},
  pageWidth: document.documentElement.scrollWidth,
  tableBox: rect(document.getElementById("table-box")),
  chartPanel: rect(document.getElementById("chart-panel")),
  campaignParts: [...document.querySelectorAll(
    "#campaigns .sponsor, #campaigns .remaining, #campaigns .bar")].map(rect),
  cells,
  svg: rect(svg),
  yLabels: texts("text.y-label"),
  axisLabels: texts("text"),
};
"""

# The page's own parser and formatter on amounts no double holds, signs and exponents.
_FORMATS = """
const done = arguments[arguments.length - 1];
const {formatMinor, readJson} = window.gfgDashboard;
const body = '{"net_minor": 12345678901234567891, "donation_count": 18446744073709551617}';
readJson(new Response(body)).then((parsed) => done([
  formatMinor(parsed.net_minor, "CNY"),
  String(parsed.donation_count),
  formatMinor(-5n, "CNY"),
  formatMinor(1234n, "JPY"),
  formatMinor(1234n, "KWD"),
  formatMinor(0n, "CNY"),
]));
"""

_CHART_DRAWN_AT_WIDTH = """
const box = document.getElementById("chart");
const svg = box.querySelector("svg");
return svg !== null && box.clientWidth > 0
  && Number(svg.getAttribute("width")) === Math.max(240, Math.floor(box.clientWidth));
"""


def _inside(inner: dict[str, float], outer: dict[str, float], slack: float = 0.5) -> bool:
    return (
        inner["left"] >= outer["left"] - slack
        and inner["right"] <= outer["right"] + slack
        and inner["top"] >= outer["top"] - slack
        and inner["bottom"] <= outer["bottom"] + slack
    )


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["left"] < b["right"]
        and b["left"] < a["right"]
        and a["top"] < b["bottom"]
        and b["top"] < a["bottom"]
    )


def assert_laid_out(layout: dict[str, Any], y_labels: list[str]) -> None:
    viewport = layout["viewport"]
    page = {"left": 0, "right": viewport["width"], "top": 0, "bottom": viewport["height"]}
    assert layout["pageWidth"] <= viewport["width"], "the page scrolls sideways"
    assert [c["name"].split()[-1] for c in layout["cells"]] == [
        "charity", "project", "net", "goal", "donations", "sellers", "state",
    ]  # fmt: skip
    for cell in layout["cells"]:
        name, box = cell["name"], cell["rect"]
        assert _inside(box, page), (name, box, viewport)
        horizontally = {**box, "top": layout["tableBox"]["top"], "bottom": 0}
        horizontally["bottom"] = layout["tableBox"]["bottom"]
        assert _inside(horizontally, layout["tableBox"]), (name, box, layout["tableBox"])
        assert not _overlap(box, layout["chartPanel"]), (name, box, layout["chartPanel"])
        assert cell["onTop"], f"the {name} cell is covered by another element"
    assert layout["campaignParts"], "the campaigns panel shows"
    for part in layout["campaignParts"]:
        assert _inside(part, layout["chartPanel"]), (part, layout["chartPanel"])
        assert part["right"] <= viewport["width"], part
    assert sorted(label["text"] for label in layout["yLabels"]) == sorted(y_labels)
    for label in layout["axisLabels"]:
        assert _inside(label["rect"], layout["svg"]), (label, layout["svg"])
        assert label["rect"]["height"] >= 10, f"unreadably small: {label}"


async def test_layout_from_desktop_to_phone_with_exact_amounts(
    client: httpx.AsyncClient,
    charities_app: FastAPI,
    charities_settings: Settings,
    browser: webdriver.Chrome,
) -> None:
    goal = 10**15  # the largest amount one entry or goal may hold
    _, project_id = await new_project(client, goal_minor=goal)
    # The total passes 2^53 (9,007,199,254,740,992), where doubles lose integers:
    # donated 9,007,199,254,740,995 and reversed 2 leave a net of ...993, an odd number
    # no double can hold.
    accruals = [goal] * 9 + [9_007_199_254_740_995 - 9 * goal]
    events = [ledger_entry(project_id, amount) for amount in accruals]
    events.append(ledger_entry(project_id, 2, kind="reversal"))
    match = match_entry(project_id, 10, campaign_id="layout", order_id="o-layout")
    assert await fold_directly(charities_app.state.pool, [*events, match]) == len(events) + 1
    # a campaign with a long sponsor name and amounts past 2^53, beside the chart
    sponsor = "The Exceedingly Long-Named Foundation for Matching Donations " * 2
    campaigns = [
        campaign(
            project_id,
            "layout",
            sponsor=sponsor.strip(),
            budget_minor=goal * 10,
            matched_minor=10,
            remaining_minor=goal * 10 - 10,
        ),  # fmt: skip
    ]
    donations = serve(donations_stand_in(campaigns, {"status": 200}))
    async with (
        donations as donations_url,
        serve(
            create_app(
                charities_settings.model_copy(update={"donations_url": donations_url}),
                consume=False,
            )
        ) as base_url,
    ):
        await asyncio.to_thread(browser.get, base_url + "/")
        cells = await eventually(
            lambda: asyncio.to_thread(_cells, browser, project_id), lambda c: c is not None
        )
        assert cells == {
            "project": cells and cells["project"],
            "net": "90,071,992,547,410.03 CNY",
            "matched": "incl. 0.10 CNY matched",
            "donations": "10",
            "sellers": "1",
            "bar-label": "100.0% of 10,000,000,000,000.00 CNY",
        }
        row = await asyncio.to_thread(
            browser.find_element, By.CSS_SELECTOR, f'tr[data-project-id="{project_id}"]'
        )
        await asyncio.to_thread(row.click)

        def today_bar() -> str | None:
            try:
                bars = browser.find_elements(By.CSS_SELECTOR, "#chart rect.donated")
                return bars[-1].get_attribute("data-value") if bars else None
            except StaleElementReferenceException:
                return None

        value = await eventually(
            lambda: asyncio.to_thread(today_bar), lambda v: v == "9007199254740995"
        )
        shown = await eventually(
            lambda: asyncio.to_thread(_campaigns, browser), lambda c: c is not None
        )
        assert shown is not None
        assert [c["remaining"] for c in shown["items"]] == [
            "99,999,999,999,999.90 CNY left of 100,000,000,000,000.00 CNY"
        ]
        assert value == "9007199254740995"
        # compact labels: the currency is the axis title, the amounts are exact
        y_labels = ["0.00", "45,035,996,273,704.97", "90,071,992,547,409.95"]

        ARTIFACTS.mkdir(exist_ok=True)
        for name, viewport in (
            ("1280", DESKTOP),
            ("1024", TABLET_WIDE),
            ("800", TABLET),
            ("phone", PHONE),
        ):
            await asyncio.to_thread(set_viewport, browser, *viewport)

            async def drawn() -> bool:
                done: bool = await asyncio.to_thread(browser.execute_script, _CHART_DRAWN_AT_WIDTH)
                return done

            await eventually(drawn, bool)
            layout = await asyncio.to_thread(browser.execute_script, _LAYOUT, project_id)
            await asyncio.to_thread(browser.execute_script, "window.scrollTo(0, 0);")
            shot = str(ARTIFACTS / f"dashboard-{name}.png")
            assert await asyncio.to_thread(browser.save_screenshot, shot)
            assert_laid_out(layout, y_labels)
        await asyncio.to_thread(
            browser.execute_script, "document.getElementById('chart-panel').scrollIntoView();"
        )
        shot = str(ARTIFACTS / "dashboard-phone-chart.png")
        assert await asyncio.to_thread(browser.save_screenshot, shot)
        formatted = await asyncio.to_thread(browser.execute_async_script, _FORMATS)
        assert formatted == [
            "123,456,789,012,345,678.91 CNY",
            "18446744073709551617",
            "-0.05 CNY",
            "1,234 JPY",
            "1.234 KWD",
            "0.00 CNY",
        ]
        assert_no_console_errors(browser)


async def test_matches_and_campaign_budgets_update_in_place(
    client: httpx.AsyncClient,
    ledger_producer: Producer,
    ledger_topic: str,
    charities_settings: Settings,
    browser: webdriver.Chrome,
) -> None:
    _, project_id = await new_project(client)
    campaigns = [
        campaign(
            project_id,
            "per-item",
            sponsor="Brand",
            ratio_bp=0,
            per_item_minor=100,
            budget_minor=1_000,
            matched_minor=0,
            remaining_minor=1_000,
        ),  # fmt: skip
        campaign(
            project_id,
            "spent",
            sponsor="Foundation",
            status="exhausted",
            matched_minor=10_000,
            remaining_minor=0,
        ),  # fmt: skip
    ]
    async with (
        serve(donations_stand_in(campaigns, {"status": 200})) as donations_url,
        serve(
            create_app(
                charities_settings.model_copy(update={"donations_url": donations_url}),
                consume=False,
            )
        ) as base_url,
    ):
        order_id = f"o-match-{project_id[:8]}"
        await produce(
            ledger_producer, ledger_topic, [ledger_entry(project_id, 100, order_id=order_id)]
        )
        await asyncio.to_thread(browser.get, base_url + "/")
        await eventually(
            lambda: asyncio.to_thread(_cells, browser, project_id),
            lambda c: c is not None and c["donations"] == "1",
        )
        row = await asyncio.to_thread(
            browser.find_element, By.CSS_SELECTOR, f'tr[data-project-id="{project_id}"]'
        )
        await asyncio.to_thread(row.click)
        shown = await eventually(
            lambda: asyncio.to_thread(_campaigns, browser),
            lambda c: c is not None and len(c["items"]) == 1,
        )
        assert shown == {
            "items": [
                {
                    "id": "per-item",
                    "sponsor": "Brand",
                    "remaining": "10.00 CNY left of 10.00 CNY",
                    "width": "100%",
                }
            ],
            "note": "1 scheduled, exhausted or ended.",
        }

        # the sponsor matches the order: the row shows it, and the panel asks again
        campaigns[0].update(matched_minor=300, remaining_minor=700)
        match = match_entry(project_id, 300, campaign_id="per-item", order_id=order_id)
        await produce(ledger_producer, ledger_topic, [match])
        cells = await eventually(
            lambda: asyncio.to_thread(_cells, browser, project_id),
            lambda c: c is not None and c["matched"] != "",
        )
        assert cells is not None
        assert (cells["net"], cells["matched"]) == ("4.00 CNY", "incl. 3.00 CNY matched")
        shown = await eventually(
            lambda: asyncio.to_thread(_campaigns, browser),
            lambda c: c is not None and c["items"][0]["width"] != "100%",
        )
        assert shown is not None
        assert shown["items"][0]["remaining"] == "7.00 CNY left of 10.00 CNY"
        assert shown["items"][0]["width"] == "70%"
        assert_no_console_errors(browser)

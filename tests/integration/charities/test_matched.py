"""Sponsors' matches in the totals: ``match`` and ``match_reversal`` entries fold into
``matched_minor`` (and ``net_minor``) of the project, the charity and ``/v1/totals``,
apart from the sellers' donations; unknown kinds are skipped and counted."""

from __future__ import annotations

from typing import Any

import httpx

from services.charities.consumer import ENTRIES_SKIPPED
from shared.kafka import Producer
from tests.conftest import unique
from tests.integration.charities.helpers import ledger_entry, match_entry, new_project, produce
from tests.support import eventually


async def _totals(client: httpx.AsyncClient, project_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/projects/{project_id}/totals")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_matches_are_totalled_apart_from_donations(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    charity_id, project_id = await new_project(client)
    ratio, per_item = unique("ratio"), unique("per-item")
    a, b = unique("order-a"), unique("order-b")
    events: list[Any] = [
        ledger_entry(project_id, 100, order_id=a),
        match_entry(project_id, 50, campaign_id=ratio, order_id=a),
        match_entry(project_id, 30, campaign_id=per_item, order_id=a),
        ledger_entry(project_id, 40, order_id=b, seller_id="seller-2"),
        match_entry(project_id, 20, campaign_id=ratio, order_id=b, seller_id="seller-2"),
        # order a fully refunded: its donation and both matches go back
        ledger_entry(project_id, 100, order_id=a, kind="reversal"),
        match_entry(project_id, 50, campaign_id=ratio, order_id=a, kind="match_reversal"),
        match_entry(project_id, 30, campaign_id=per_item, order_id=a, kind="match_reversal"),
    ]
    skipped_before = ENTRIES_SKIPPED._value.get()
    unknown = match_entry(project_id, 999, campaign_id=ratio, order_id=b)
    unknown["entry"]["kind"] = "bonus"
    await produce(ledger_producer, ledger_topic, [*events, unknown])
    # redelivered matches add nothing
    await produce(ledger_producer, ledger_topic, events[1:3])
    marker = match_entry(project_id, 7, campaign_id=per_item, order_id=b, seller_id="seller-2")
    await produce(ledger_producer, ledger_topic, [marker])

    expected = {
        "donated_minor": 140,
        "reversed_minor": 100,
        "matched_minor": 50 + 30 + 20 - 50 - 30 + 7,
        "net_minor": 140 - 100 + 27,
        "donation_count": 2,
        "seller_count": 2,
    }
    body = await eventually(
        lambda: _totals(client, project_id),
        lambda t: t["reversed_minor"] == 100 and t["matched_minor"] == 27,
    )
    assert {k: body[k] for k in expected} == expected
    assert ENTRIES_SKIPPED._value.get() >= skipped_before + 1

    charity = (await client.get(f"/v1/charities/{charity_id}/totals")).json()["items"]
    assert [(i["matched_minor"], i["net_minor"]) for i in charity] == [(27, 67)]
    listed = [
        i for i in (await client.get("/v1/totals")).json()["items"] if i["project_id"] == project_id
    ]
    assert [(i["matched_minor"], i["net_minor"]) for i in listed] == [(27, 67)]
    today = body["last_donation_at"][:10]
    daily = (
        await client.get(
            f"/v1/projects/{project_id}/totals/daily", params={"from": today, "to": today}
        )
    ).json()
    assert sum(d["matched_minor"] for d in daily) == 27
    assert sum(d["donated_minor"] for d in daily) == 140


async def test_a_project_with_only_matches_counts_no_donation_and_no_seller(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    _, project_id = await new_project(client)
    await produce(
        ledger_producer,
        ledger_topic,
        [match_entry(project_id, 12, campaign_id=unique("c"), order_id=unique("o"))],
    )
    body = await eventually(lambda: _totals(client, project_id), lambda t: t["matched_minor"] > 0)
    assert (body["donated_minor"], body["matched_minor"], body["net_minor"]) == (0, 12, 12)
    assert (body["donation_count"], body["seller_count"]) == (0, 0)
    assert body["last_donation_at"] is None


async def test_a_match_alone_changes_every_etag(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    charity_id, project_id = await new_project(client)
    order_id = unique("o")
    await produce(ledger_producer, ledger_topic, [ledger_entry(project_id, 5, order_id=order_id)])
    await eventually(lambda: _totals(client, project_id), lambda t: t["donation_count"] == 1)
    urls = [f"/v1/projects/{project_id}/totals", f"/v1/charities/{charity_id}/totals", "/v1/totals"]
    tags = {url: (await client.get(url)).headers["etag"] for url in urls}

    campaign = unique("c")
    await produce(
        ledger_producer,
        ledger_topic,
        [match_entry(project_id, 5, campaign_id=campaign, order_id=order_id)],
    )
    await eventually(lambda: _totals(client, project_id), lambda t: t["matched_minor"] == 5)
    for url in urls:
        response = await client.get(url, headers={"If-None-Match": tags[url]})
        assert response.status_code == 200, url
        assert response.headers["etag"] != tags[url]

"""Posted money, disbursements and the trace, from ledger events on the real topic:
pending turning into posted, FIFO allocation with splits, concurrent disbursements that
never overdraw, who may disburse, idempotent retries, and an order's trace."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
from fastapi import FastAPI

from services.charities.app import create_app
from services.charities.config import Settings
from shared.db import Pool
from shared.kafka import Producer
from tests.conftest import bearer, unique
from tests.integration.charities.funds import (
    T0,
    disbursement,
    funded_project,
    posted,
    recorded,
    send,
    totals,
)
from tests.integration.charities.helpers import new_project
from tests.support import eventually, serve
from tools.reconcile import reconcile_funds


async def test_pending_turns_into_posted(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    _, project_id = await new_project(client)
    first, second = unique("order"), unique("order")
    await send(
        ledger_producer,
        ledger_topic,
        [
            recorded(project_id, first, 700),
            recorded(project_id, first, 200, kind="reversal", recorded_at=T0 + timedelta(hours=1)),
            recorded(project_id, second, 300),
        ],
    )
    body = await eventually(lambda: totals(client, project_id), lambda b: b["net_minor"] == 800)
    assert (body["pending_minor"], body["posted_minor"]) == (800, 0)
    assert (body["disbursed_minor"], body["available_minor"]) == (0, 0)
    etag = (await client.get(f"/v1/projects/{project_id}/totals")).headers["etag"]

    posting = posted(project_id, first, 500, T0 + timedelta(days=8))
    await send(ledger_producer, ledger_topic, [posting, posting])  # redelivered too
    body = await eventually(lambda: totals(client, project_id), lambda b: b["posted_minor"] > 0)
    assert body["posted_minor"] == 500  # the order's net: 700 accrued - 200 reversed
    assert body["pending_minor"] == 300
    assert body["net_minor"] == body["pending_minor"] + body["posted_minor"]
    assert body["available_minor"] == 500
    assert (await client.get(f"/v1/projects/{project_id}/totals")).headers["etag"] != etag

    trace = (await client.get(f"/v1/orders/{first}/trace")).json()
    assert trace["status"] == "posted"
    assert trace["net_minor"] == 500
    assert trace["unallocated_minor"] == 500
    assert (await client.get(f"/v1/orders/{second}/trace")).json()["status"] == "pending"

    charity = (await client.get("/v1/totals")).json()
    mine = [i for i in charity["items"] if i["project_id"] == project_id]
    assert mine[0]["posted_minor"] == 500
    assert mine[0]["available_minor"] == 500


async def test_fifo_allocation_splits_donations_and_the_trace_follows(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str, admin: dict[str, str]
) -> None:
    charity_id, project_id = await new_project(client)
    o1, o2, o3, o4 = (unique("order") for _ in range(4))
    campaign = str(uuid.uuid4())
    events = [
        # o3's entry is the oldest recorded, but o3 is posted last: posting time rules
        recorded(project_id, o3, 200, recorded_at=T0 - timedelta(days=1)),
        recorded(project_id, o1, 300),
        recorded(project_id, o1, 100, kind="match", campaign_id=campaign),
        recorded(project_id, o2, 500),
        recorded(project_id, o2, 100, kind="reversal", recorded_at=T0 + timedelta(hours=2)),
        recorded(project_id, o4, 999),  # never posted: never allocated
        posted(project_id, o1, 400, T0 + timedelta(days=8)),
        posted(project_id, o2, 400, T0 + timedelta(days=8, hours=1)),
        posted(project_id, o3, 200, T0 + timedelta(days=8, hours=2)),
    ]
    await send(ledger_producer, ledger_topic, events)
    await eventually(lambda: totals(client, project_id), lambda b: b["posted_minor"] == 1000)

    own = bearer("charity", charities=[charity_id])
    first = await client.post(
        f"/v1/projects/{project_id}/disbursements", json=disbursement(600), headers=own
    )
    assert first.status_code == 201, first.text
    # o1's accrual (300) and its match (100), then 200 of o2's 400
    assert first.json()["allocations_count"] == 3
    assert first.json()["currency"] == "CNY"
    second = await client.post(
        f"/v1/projects/{project_id}/disbursements",
        json=disbursement(250, recipient="Clinic", purpose="medicine"),
        headers=admin,
    )
    assert second.status_code == 201, second.text
    assert second.json()["allocations_count"] == 2  # o2's last 200, then 50 of o3
    too_much = await client.post(
        f"/v1/projects/{project_id}/disbursements", json=disbursement(151), headers=admin
    )
    assert too_much.status_code == 422, too_much.text
    assert too_much.json()["available_minor"] == 150

    body = await totals(client, project_id)
    assert (body["posted_minor"], body["disbursed_minor"], body["available_minor"]) == (
        1000,
        850,
        150,
    )

    trace = (await client.get(f"/v1/orders/{o2}/trace")).json()
    assert (trace["net_minor"], trace["matched_minor"], trace["status"]) == (400, 0, "posted")
    assert [(a["disbursement_id"], a["amount_minor"]) for a in trace["allocations"]] == [
        (first.json()["disbursement_id"], 200),
        (second.json()["disbursement_id"], 200),
    ]
    assert trace["allocations"][1]["recipient"] == "Clinic"
    assert trace["unallocated_minor"] == 0

    trace = (await client.get(f"/v1/orders/{o1}/trace")).json()
    assert (trace["net_minor"], trace["matched_minor"], trace["unallocated_minor"]) == (300, 100, 0)
    assert len(trace["allocations"]) == 2  # the accrual and the match: two entries
    trace = (await client.get(f"/v1/orders/{o3}/trace")).json()
    assert trace["unallocated_minor"] == 150
    trace = (await client.get(f"/v1/orders/{o4}/trace")).json()
    assert (trace["status"], trace["allocations"], trace["unallocated_minor"]) == (
        "pending",
        [],
        999,
    )
    assert (await client.get(f"/v1/orders/{unique('nobody')}/trace")).status_code == 404

    listed = await client.get(f"/v1/projects/{project_id}/disbursements", params={"limit": 1})
    assert listed.status_code == 200
    assert [d["disbursement_id"] for d in listed.json()["items"]] == [
        first.json()["disbursement_id"]
    ]
    rest = await client.get(
        f"/v1/projects/{project_id}/disbursements",
        params={"limit": 1, "cursor": listed.json()["next_cursor"]},
    )
    assert [d["disbursement_id"] for d in rest.json()["items"]] == [
        second.json()["disbursement_id"]
    ]
    one = await client.get(f"/v1/disbursements/{second.json()['disbursement_id']}")
    assert one.json() == second.json()


async def test_concurrent_disbursements_never_overdraw(
    client: httpx.AsyncClient,
    ledger_producer: Producer,
    ledger_topic: str,
    charities_settings: Settings,
    charities_app: FastAPI,
    admin: dict[str, str],
) -> None:
    _, project_id, _ = await funded_project(
        client, ledger_producer, ledger_topic, [250, 250, 250, 250]
    )
    async with (
        serve(create_app(charities_settings, consume=False)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        responses = await asyncio.gather(
            *(
                http.post(
                    f"/v1/projects/{project_id}/disbursements",
                    json=disbursement(300),
                    headers=admin,
                )
                for _ in range(8)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 3 + [422] * 5, [r.text for r in responses]
    body = await totals(client, project_id)
    assert (body["disbursed_minor"], body["available_minor"]) == (900, 100)

    pool: Pool = charities_app.state.service._pool
    async with pool.acquire() as conn:
        per_entry = await conn.fetch(
            """
            SELECT e.entry_id, e.allocatable_minor, e.allocated_minor,
                   coalesce(sum(a.amount_minor), 0) AS allocations
            FROM ledger_entry AS e LEFT JOIN allocation AS a USING (entry_id)
            WHERE e.project_id = $1 GROUP BY e.entry_id
            """,
            uuid.UUID(project_id),
        )
        sums = await conn.fetch(
            """
            SELECT d.amount_minor, sum(a.amount_minor) AS allocated
            FROM disbursement AS d JOIN allocation AS a USING (disbursement_id)
            WHERE d.project_id = $1 GROUP BY d.disbursement_id
            """,
            uuid.UUID(project_id),
        )
    assert len(per_entry) == 4
    for row in per_entry:
        assert row["allocations"] == row["allocated_minor"] <= row["allocatable_minor"]
    assert len(sums) == 3
    assert all(row["amount_minor"] == row["allocated"] for row in sums)


async def test_who_may_disburse(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    charity_id, project_id, _ = await funded_project(client, ledger_producer, ledger_topic, [100])
    url = f"/v1/projects/{project_id}/disbursements"
    other_charity = bearer("charity", charities=[str(uuid.uuid4())])
    for headers, status in [
        ({}, 401),
        (other_charity, 403),
        (bearer("seller", "seller-d"), 403),
        (bearer("storefront"), 403),
    ]:
        response = await client.post(url, json=disbursement(10), headers=headers)
        assert response.status_code == status, response.text
    unknown = await client.post(
        f"/v1/projects/{uuid.uuid4()}/disbursements",
        json=disbursement(10),
        headers=bearer("charity", charities=[charity_id]),
    )
    assert unknown.status_code == 404
    invalid = await client.post(url, json=disbursement(0), headers=bearer("admin"))
    assert invalid.status_code == 422
    assert (await totals(client, project_id))["disbursed_minor"] == 0
    mine = await client.post(
        url, json=disbursement(10), headers=bearer("charity", charities=[charity_id])
    )
    assert mine.status_code == 201, mine.text


async def test_retries_are_idempotent_and_another_body_conflicts(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str, admin: dict[str, str]
) -> None:
    _, project_id, _ = await funded_project(client, ledger_producer, ledger_topic, [100, 50])
    url = f"/v1/projects/{project_id}/disbursements"
    body = disbursement(150, evidence_sha256="ab" * 32, evidence_url="https://example.org/r/1")
    created = await client.post(url, json=body, headers=admin)
    assert created.status_code == 201, created.text
    # a retry after the money is spent is still the same disbursement, not a 422
    again = await client.post(url, json=body, headers=admin)
    assert again.status_code == 200, again.text
    assert again.json() == created.json()
    for change in ({"amount_minor": 149}, {"purpose": "other"}, {"evidence_url": None}):
        conflict = await client.post(url, json={**body, **change}, headers=admin)
        assert conflict.status_code == 409, (change, conflict.text)
    _, other_project, _ = await funded_project(client, ledger_producer, ledger_topic, [500])
    elsewhere = await client.post(
        f"/v1/projects/{other_project}/disbursements", json=body, headers=admin
    )
    assert elsewhere.status_code == 409
    body_totals = await totals(client, project_id)
    assert (body_totals["disbursed_minor"], body_totals["available_minor"]) == (150, 0)
    assert (await totals(client, other_project))["disbursed_minor"] == 0


async def test_reconcile_names_broken_funds_rules(
    client: httpx.AsyncClient,
    ledger_producer: Producer,
    ledger_topic: str,
    charities_settings: Settings,
    charities_app: FastAPI,
    admin: dict[str, str],
) -> None:
    _, project_id, _ = await funded_project(client, ledger_producer, ledger_topic, [100, 100])
    created = await client.post(
        f"/v1/projects/{project_id}/disbursements", json=disbursement(150), headers=admin
    )
    assert created.status_code == 201, created.text
    disbursement_id = created.json()["disbursement_id"]
    assert (
        await reconcile_funds(charities_settings, charities_settings.charities_db, [project_id])
        == []
    )

    pool: Pool = charities_app.state.service._pool
    async with pool.acquire() as conn:  # a second allocation row from nowhere
        entry_id = await conn.fetchval(
            "SELECT entry_id FROM ledger_entry WHERE project_id = $1 AND allocated_minor = 50",
            uuid.UUID(project_id),
        )
        await conn.execute(
            "UPDATE allocation SET amount_minor = amount_minor + 60 WHERE entry_id = $1",
            entry_id,
        )
    differences = await reconcile_funds(
        charities_settings, charities_settings.charities_db, [project_id]
    )
    assert differences == [
        f"disbursement {disbursement_id}: amount 150, allocations sum to 210 in 2 rows"
        " (allocations_count 2)",
        f"entry {entry_id}: allocatable 100, allocated 50, allocations sum to 110",
    ]


async def test_reversals_reduce_what_a_posting_makes_allocatable(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str, admin: dict[str, str]
) -> None:
    _, project_id = await new_project(client)
    order = unique("order")
    campaign = str(uuid.uuid4())
    later = T0 + timedelta(hours=1)
    await send(
        ledger_producer,
        ledger_topic,
        [
            recorded(project_id, order, 100),
            recorded(project_id, order, 50, kind="match", campaign_id=campaign),
            recorded(project_id, order, 30, kind="reversal", recorded_at=later),
            recorded(
                project_id,
                order,
                20,
                kind="match_reversal",
                campaign_id=campaign,
                recorded_at=later,
            ),
            posted(project_id, order, 70, T0 + timedelta(days=8)),
        ],
    )
    await eventually(lambda: totals(client, project_id), lambda b: b["posted_minor"] > 0)
    body = await totals(client, project_id)
    assert body["posted_minor"] == 100  # 100 - 30 of the seller's, 50 - 20 matched
    too_much = await client.post(
        f"/v1/projects/{project_id}/disbursements", json=disbursement(101), headers=admin
    )
    assert too_much.status_code == 422
    everything = await client.post(
        f"/v1/projects/{project_id}/disbursements", json=disbursement(100), headers=admin
    )
    assert everything.json()["allocations_count"] == 2
    trace = (await client.get(f"/v1/orders/{order}/trace")).json()
    assert (trace["net_minor"], trace["matched_minor"]) == (70, 30)
    assert sorted(a["amount_minor"] for a in trace["allocations"]) == [30, 70]
    assert trace["unallocated_minor"] == 0

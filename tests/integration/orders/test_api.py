"""The orders API against real PostgreSQL and Kafka: contract, idempotency, races, events."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import orjson
import pytest

from shared.auth import Role
from shared.events import OrderLifecycleEvent
from tests.conftest import bearer, unique
from tests.integration.orders.conftest import TopicWatch, new_order, storefront


def assert_problem(response: httpx.Response, status: int, *fields: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    named = {e["field"] for e in body.get("errors", [])}
    assert set(fields) <= named, body
    return body


async def test_create_get_and_retry(http: httpx.AsyncClient) -> None:
    seller = unique("seller")
    order = new_order(seller, buyer_ref="b-1")
    created = await http.post("/v1/orders", json=order, headers=storefront(seller))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "placed"
    assert body["refunded_minor"] == 0
    assert body["placed_at"] == "2025-11-11T00:00:00+00:00"  # stored and returned in UTC

    again = await http.post("/v1/orders", json=order, headers=storefront(seller))
    assert again.status_code == 200
    assert again.json() == body

    same_in_utc = order | {"placed_at": "2025-11-11T00:00:00Z"}
    assert (
        await http.post("/v1/orders", json=same_in_utc, headers=storefront(seller))
    ).status_code == 200

    changed = order | {"buyer_ref": "someone else"}
    conflict = await http.post("/v1/orders", json=changed, headers=storefront(seller))
    assert_problem(conflict, 409)

    fetched = await http.get(f"/v1/orders/{order['order_id']}", headers=storefront(seller))
    assert fetched.status_code == 200
    assert fetched.json() == body
    as_admin = await http.get(f"/v1/orders/{order['order_id']}", headers=bearer(Role.ADMIN))
    assert as_admin.status_code == 200
    other = await http.get(f"/v1/orders/{order['order_id']}", headers=storefront("other"))
    assert_problem(other, 404)
    missing = await http.get(f"/v1/orders/{unique('nope')}", headers=storefront(seller))
    assert_problem(missing, 404)


async def test_placed_at_defaults_to_now(http: httpx.AsyncClient) -> None:
    seller = unique("seller")
    order = new_order(seller)
    del order["placed_at"]
    created = await http.post("/v1/orders", json=order, headers=storefront(seller))
    assert created.status_code == 201, created.text
    assert created.json()["placed_at"].startswith("20")
    # The retry without placed_at is the same request.
    assert (
        await http.post("/v1/orders", json=order, headers=storefront(seller))
    ).status_code == 200


async def test_a_completed_order_without_placed_at_was_placed_when_it_completed(
    http: httpx.AsyncClient,
) -> None:
    seller = unique("seller")
    order = new_order(seller)
    del order["placed_at"]
    order |= {"status": "completed", "completed_at": "2026-01-02T03:04:05Z"}
    created = await http.post("/v1/orders", json=order, headers=storefront(seller))
    assert created.status_code == 201, created.text
    assert created.json()["placed_at"] == created.json()["completed_at"]
    assert created.json()["completed_at"].startswith("2026-01-02T03:04:05")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"total_minor": 1249}, "total_minor"),
        ({"total_minor": 1250.0}, "total_minor"),
        ({"total_minor": "1250"}, "total_minor"),
        ({"total_minor": -5}, "total_minor"),
        ({"currency": "ABC"}, "currency"),
        ({"order_id": "bad id!"}, "order_id"),
        ({"order_id": "x" * 65}, "order_id"),
        ({"seller_id": ""}, "seller_id"),
        ({"items": []}, "items"),
        ({"items": [{"item_id": "a", "quantity": 0, "unit_price_minor": 1}]}, "items.0.quantity"),
        ({"placed_at": "2025-11-11T08:00:00"}, "placed_at"),
        ({"placed_at": "2999-01-01T00:00:00Z"}, "placed_at"),
        ({"status": "completed", "completed_at": "2025-11-10T00:00:00Z"}, "completed_at"),
        ({"completed_at": "2025-11-12T00:00:00Z"}, "completed_at"),
        ({"status": "cancelled"}, "status"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_orders_name_the_field(
    http: httpx.AsyncClient, overrides: dict[str, Any], field: str
) -> None:
    seller = unique("seller")
    order = new_order(seller) | overrides
    order.setdefault("seller_id", seller)
    response = await http.post("/v1/orders", json=order, headers=storefront(seller, ""))
    assert_problem(response, 422, field)
    if "order_id" in order and isinstance(order["order_id"], str) and len(order["order_id"]) < 65:
        check = await http.get(f"/v1/orders/{order['order_id']}", headers=bearer(Role.ADMIN))
        assert check.status_code in (404, 422)  # nothing was stored


async def test_single_create_answers_as_the_schema_says(http: httpx.AsyncClient) -> None:
    """The lean route of ``POST /v1/orders`` answers like the documented FastAPI route:
    the same body as a read, the bodies it does not take as they are refused alike."""
    seller = unique("seller")
    order = new_order(seller, buyer_ref="b-1")
    created = await http.post("/v1/orders", json=order, headers=storefront(seller))
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"
    read = await http.get(f"/v1/orders/{order['order_id']}", headers=storefront(seller))
    assert created.json() == read.json()
    headers = storefront(seller)
    as_text = headers | {"content-type": "text/plain"}
    assert_problem(await http.post("/v1/orders", content=orjson.dumps(order), headers=as_text), 422)
    as_json = headers | {"content-type": "application/json"}
    for body in (b"[1, 2]", b'{"order_id": ', b""):
        assert_problem(await http.post("/v1/orders", content=body, headers=as_json), 422)
    schema = (await http.get("/openapi.json")).json()
    create = schema["paths"]["/v1/orders"]["post"]
    assert {"201", "200", "401", "409", "422"} <= set(create["responses"])
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OrderIn"
    )


async def test_auth_and_body_limit(http: httpx.AsyncClient) -> None:
    seller = unique("seller")
    order = new_order(seller)
    assert_problem(await http.post("/v1/orders", json=order), 401)
    assert_problem(await http.post("/v1/orders", json=order, headers=storefront("x")), 403)
    assert_problem(
        await http.post("/v1/orders", json=order, headers=bearer(Role.SELLER, seller)), 403
    )
    assert_problem(await http.post("/v1/orders", json=order, headers=bearer(Role.ADMIN)), 403)
    huge = order | {"buyer_ref": "x" * (1024 * 1024 + 10)}
    assert_problem(await http.post("/v1/orders", json=huge, headers=storefront(seller)), 413)


async def test_completed_on_create_emits_one_event(
    http: httpx.AsyncClient, watch: TopicWatch
) -> None:
    seller = unique("seller")
    order = new_order(seller, status="completed", completed_at="2025-11-11T01:00:00Z")
    created = await http.post("/v1/orders", json=order, headers=storefront(seller))
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "completed"
    assert (
        await http.post("/v1/orders", json=order, headers=storefront(seller))
    ).status_code == 200

    (event,) = await watch.wait_for({order["order_id"]}, 1)
    parsed = msgspec.convert(event.value, OrderLifecycleEvent)
    assert parsed.type == "order.completed"
    assert event.value["schema_version"] == 1
    snapshot = event.value["order"]
    assert snapshot["order_id"] == order["order_id"]
    assert snapshot["seller_id"] == seller
    assert snapshot["total_minor"] == 1250
    assert snapshot["items"] == order["items"]
    assert snapshot["placed_at"].startswith("2025-11-11T00:00:00")
    assert snapshot["completed_at"].startswith("2025-11-11T01:00:00")


async def test_lifecycle_events_in_order(http: httpx.AsyncClient, watch: TopicWatch) -> None:
    seller = unique("seller")
    headers = storefront(seller)
    order = new_order(seller)
    oid = order["order_id"]
    assert (await http.post("/v1/orders", json=order, headers=headers)).status_code == 201

    early = await http.post(
        f"/v1/orders/{oid}/refunds",
        json={"refund_id": unique("r"), "amount_minor": 1},
        headers=headers,
    )
    assert assert_problem(early, 409)["current_status"] == "placed"

    done = await http.post(f"/v1/orders/{oid}/complete", headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    again = await http.post(f"/v1/orders/{oid}/complete", json={}, headers=headers)
    assert again.status_code == 200
    assert again.json() == done.json()

    cancel = await http.post(f"/v1/orders/{oid}/cancel", headers=headers)
    assert assert_problem(cancel, 409)["current_status"] == "completed"

    r1 = {"refund_id": unique("r"), "amount_minor": 250}
    first = await http.post(f"/v1/orders/{oid}/refunds", json=r1, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["refunded_total_minor"] == 250
    assert (
        await http.post(f"/v1/orders/{oid}/refunds", json=r1, headers=headers)
    ).json() == first.json()
    changed = await http.post(
        f"/v1/orders/{oid}/refunds", json=r1 | {"amount_minor": 5}, headers=headers
    )
    assert_problem(changed, 409)
    beyond = {"refund_id": unique("r"), "amount_minor": 1001}
    assert_problem(
        await http.post(f"/v1/orders/{oid}/refunds", json=beyond, headers=headers),
        422,
        "amount_minor",
    )
    assert_problem(
        await http.post(
            f"/v1/orders/{oid}/refunds", json={"refund_id": "r", "amount_minor": 0}, headers=headers
        ),
        422,
        "amount_minor",
    )

    state = (await http.get(f"/v1/orders/{oid}", headers=headers)).json()
    assert (state["status"], state["refunded_minor"]) == ("completed", 250)

    r2 = {"refund_id": unique("r"), "amount_minor": 1000}
    second = await http.post(f"/v1/orders/{oid}/refunds", json=r2, headers=headers)
    assert second.status_code == 201, second.text
    assert second.json()["status"] == "refunded"
    state = (await http.get(f"/v1/orders/{oid}", headers=headers)).json()
    assert (state["status"], state["refunded_minor"]) == ("refunded", 1250)
    assert (
        await http.post(f"/v1/orders/{oid}/refunds", json=r1, headers=headers)
    ).status_code == 200
    more = await http.post(
        f"/v1/orders/{oid}/refunds",
        json={"refund_id": unique("r"), "amount_minor": 1},
        headers=headers,
    )
    assert assert_problem(more, 409)["current_status"] == "refunded"
    assert (await http.post(f"/v1/orders/{oid}/complete", headers=headers)).status_code == 200

    events = await watch.wait_for({oid}, 3)
    assert [e.value["type"] for e in events] == [
        "order.completed",
        "order.refunded",
        "order.refunded",
    ]
    assert len({e.partition for e in events}) == 1
    refunds = [e.value for e in events[1:]]
    assert [(r["refund_id"], r["amount_minor"], r["refunded_total_minor"]) for r in refunds] == [
        (r1["refund_id"], 250, 250),
        (r2["refund_id"], 1000, 1250),
    ]
    assert all(
        r["total_minor"] == 1250 and r["currency"] == "CNY" and r["seller_id"] == seller
        for r in refunds
    )
    assert len({e.value["event_id"] for e in events}) == 3


async def test_cancel(http: httpx.AsyncClient, watch: TopicWatch) -> None:
    seller = unique("seller")
    headers = storefront(seller)
    order = new_order(seller)
    oid = order["order_id"]
    assert (await http.post("/v1/orders", json=order, headers=headers)).status_code == 201
    assert_problem(await http.post(f"/v1/orders/{oid}/cancel", headers=storefront("other")), 404)
    cancelled = await http.post(f"/v1/orders/{oid}/cancel", headers=headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert (await http.post(f"/v1/orders/{oid}/cancel", headers=headers)).status_code == 200
    assert (
        assert_problem(await http.post(f"/v1/orders/{oid}/complete", headers=headers), 409)[
            "current_status"
        ]
        == "cancelled"
    )
    refund = {"refund_id": unique("r"), "amount_minor": 1}
    assert_problem(await http.post(f"/v1/orders/{oid}/refunds", json=refund, headers=headers), 409)
    assert_problem(await http.post(f"/v1/orders/{unique('nope')}/cancel", headers=headers), 404)

    (event,) = await watch.wait_for({oid}, 1)
    assert event.value["type"] == "order.cancelled"
    assert (event.value["order_id"], event.value["seller_id"]) == (oid, seller)


async def test_batch(http: httpx.AsyncClient, watch: TopicWatch) -> None:
    seller = unique("seller")
    headers = storefront(seller)
    orders = [new_order(seller) for _ in range(999)]
    orders.append(new_order(seller, status="completed", completed_at="2025-11-11T02:00:00Z"))
    response = await http.post("/v1/orders/batch", json={"orders": orders}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1000}
    again = await http.post("/v1/orders/batch", json={"orders": orders}, headers=headers)
    assert again.json() == {"accepted": 1000}
    last = orders[-1]["order_id"]
    got = (await http.get(f"/v1/orders/{last}", headers=headers)).json()
    assert got["status"] == "completed"
    events = await watch.wait_for({o["order_id"] for o in orders}, 1)
    assert [e.key for e in events] == [last]


async def test_batch_is_all_or_nothing(http: httpx.AsyncClient) -> None:
    seller = unique("seller")
    headers = storefront(seller)
    existing = new_order(seller)
    assert (await http.post("/v1/orders", json=existing, headers=headers)).status_code == 201

    fresh = [new_order(seller) for _ in range(3)]
    bad = fresh + [new_order(seller, total_minor=1)]
    assert_problem(
        await http.post("/v1/orders/batch", json={"orders": bad}, headers=headers),
        422,
        "orders.3.total_minor",
    )
    dup = fresh + [fresh[0]]
    assert_problem(
        await http.post("/v1/orders/batch", json={"orders": dup}, headers=headers),
        422,
        "orders.3.order_id",
    )
    conflicting = fresh + [existing | {"buyer_ref": "changed"}]
    assert_problem(
        await http.post("/v1/orders/batch", json={"orders": conflicting}, headers=headers), 409
    )
    foreign = fresh + [new_order("someone-else")]
    assert_problem(
        await http.post("/v1/orders/batch", json={"orders": foreign}, headers=headers), 403
    )
    too_many = {"orders": [new_order(seller) for _ in range(1001)]}
    assert_problem(
        await http.post("/v1/orders/batch", json=too_many, headers=headers), 422, "orders"
    )
    assert_problem(
        await http.post("/v1/orders/batch", json={"orders": [], "x": 1}, headers=headers), 422
    )
    for order in fresh:
        assert (
            await http.get(f"/v1/orders/{order['order_id']}", headers=headers)
        ).status_code == 404

    retry_with_existing = fresh + [existing]
    ok = await http.post("/v1/orders/batch", json={"orders": retry_with_existing}, headers=headers)
    assert ok.json() == {"accepted": 4}


async def test_racing_requests_serialize(http: httpx.AsyncClient, watch: TopicWatch) -> None:
    seller = unique("seller")
    headers = storefront(seller)
    order = new_order(seller)
    oid = order["order_id"]
    assert (await http.post("/v1/orders", json=order, headers=headers)).status_code == 201

    # Double (eightfold) complete: one transition, one event, every caller gets 200.
    completes = await asyncio.gather(
        *(http.post(f"/v1/orders/{oid}/complete", headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in completes} == {200}
    assert len({r.json()["completed_at"] for r in completes}) == 1

    # The same refund eight times at once: one 201, the others 200, one event.
    refund = {"refund_id": unique("r"), "amount_minor": 50}
    same = await asyncio.gather(
        *(http.post(f"/v1/orders/{oid}/refunds", json=refund, headers=headers) for _ in range(8))
    )
    assert sorted(r.status_code for r in same) == [200] * 7 + [201]

    # Distinct refunds worth more than what is left: the total never goes over.
    many = [{"refund_id": unique("r"), "amount_minor": 300} for _ in range(6)]
    results = await asyncio.gather(
        *(http.post(f"/v1/orders/{oid}/refunds", json=r, headers=headers) for r in many)
    )
    # 50 + 4 * 300 is the whole total: the order is refunded, the last two find it so.
    assert sorted(r.status_code for r in results) == [201] * 4 + [409] * 2
    assert {r.json().get("current_status") for r in results if r.status_code == 409} == {"refunded"}
    state = (await http.get(f"/v1/orders/{oid}", headers=headers)).json()
    assert (state["status"], state["refunded_minor"]) == ("refunded", 1250)

    events = await watch.wait_for({oid}, 6)
    assert [e.value["type"] for e in events] == ["order.completed"] + ["order.refunded"] * 5
    totals = [e.value["refunded_total_minor"] for e in events[1:]]
    assert totals == [50, 350, 650, 950, 1250]


async def test_complete_racing_refund(http: httpx.AsyncClient, watch: TopicWatch) -> None:
    seller = unique("seller")
    headers = storefront(seller)
    oids = []
    for _ in range(5):
        order = new_order(seller)
        oids.append(order["order_id"])
        assert (await http.post("/v1/orders", json=order, headers=headers)).status_code == 201
    outcomes = []
    for oid in oids:
        refund = {"refund_id": unique("r"), "amount_minor": 100}
        done, refunded = await asyncio.gather(
            http.post(f"/v1/orders/{oid}/complete", headers=headers),
            http.post(f"/v1/orders/{oid}/refunds", json=refund, headers=headers),
        )
        assert done.status_code == 200
        assert refunded.status_code in (201, 409), refunded.text
        outcomes.append(refunded.status_code)
    expected = len(oids) + outcomes.count(201)
    events = await watch.wait_for(set(oids), expected)
    assert len(events) == expected
    for oid in oids:
        types = [e.value["type"] for e in events if e.key == oid]
        assert types[0] == "order.completed"  # a refund is never published before completion
        assert types.count("order.completed") == 1


async def test_metrics_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/readyz")).status_code == 200
    text = (await http.get("/metrics")).text
    assert 'gfg_orders_requests_total{operation="create",outcome="created"}' in text
    assert "gfg_outbox_backlog" in text
    assert "gfg_outbox_oldest_age_seconds" in text
    assert "gfg_outbox_publish_latency_seconds" in text
    assert (await http.get("/openapi.json")).status_code == 200

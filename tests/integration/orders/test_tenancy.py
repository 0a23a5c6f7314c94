"""Storefronts as tenants: another storefront's order looks exactly like an unknown one,
refund ids belong to their order, and no conflict names another tenant's data."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import unique
from tests.integration.orders.conftest import new_order, storefront


def _items(total_minor: int) -> list[dict[str, Any]]:
    return [{"item_id": "tea", "quantity": 1, "unit_price_minor": total_minor}]


def _anonymised(response: httpx.Response, order_id: str) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/problem+json")
    text = response.text.replace(order_id, "<id>")
    body: dict[str, Any] = httpx.Response(200, content=text.encode()).json()
    return {"status": response.status_code, **body}


async def test_another_storefronts_order_is_answered_like_an_unknown_one(
    http: httpx.AsyncClient,
) -> None:
    owner, intruder = unique("seller-a"), unique("seller-b")
    order = new_order(owner, total_minor=987_654, items=_items(987_654))
    oid = order["order_id"]
    assert (await http.post("/v1/orders", json=order, headers=storefront(owner))).status_code == 201
    unknown = unique("ord")
    refund = {"refund_id": unique("r"), "amount_minor": 1}
    calls = [
        ("GET", "/v1/orders/{}", None),
        ("POST", "/v1/orders/{}/complete", None),
        ("POST", "/v1/orders/{}/cancel", None),
        ("POST", "/v1/orders/{}/refunds", refund),
    ]
    for method, path, body in calls:
        theirs = await http.request(
            method, path.format(oid), json=body, headers=storefront(intruder)
        )
        missing = await http.request(
            method, path.format(unknown), json=body, headers=storefront(intruder)
        )
        assert theirs.status_code == 404, (path, theirs.text)
        assert _anonymised(theirs, oid) == _anonymised(missing, unknown), path
        assert owner not in theirs.text
    # the owner's order was not moved by any of these
    mine = await http.get(f"/v1/orders/{oid}", headers=storefront(owner))
    assert mine.json()["status"] == "placed"


async def test_creating_a_taken_order_id_names_nothing_of_its_owner(
    http: httpx.AsyncClient,
) -> None:
    owner, intruder = unique("seller-a"), unique("seller-b")
    order = new_order(owner, total_minor=424_242, items=_items(424_242), buyer_ref="buyer-secret")
    assert (await http.post("/v1/orders", json=order, headers=storefront(owner))).status_code == 201
    squat = order | {"seller_id": intruder, "total_minor": 5, "items": _items(5), "buyer_ref": None}
    taken = await http.post("/v1/orders", json=squat, headers=storefront(intruder))
    assert taken.status_code == 409, taken.text
    for secret in (owner, "424242", "424_242", "buyer-secret", "completed", "placed"):
        assert secret not in taken.text
    # and answered as a changed body of one's own order would be
    mine = new_order(intruder)
    assert (
        await http.post("/v1/orders", json=mine, headers=storefront(intruder))
    ).status_code == 201
    changed = await http.post(
        "/v1/orders",
        json=mine | {"total_minor": 5, "items": _items(5)},
        headers=storefront(intruder),
    )
    assert _anonymised(changed, mine["order_id"]) == _anonymised(taken, order["order_id"])


async def test_refund_ids_belong_to_their_order(http: httpx.AsyncClient) -> None:
    a, b = unique("seller-a"), unique("seller-b")
    refund_id = unique("refund")
    orders = {}
    for seller in (a, b):
        order = new_order(seller, status="completed", completed_at="2025-11-11T09:00:00Z")
        created = await http.post("/v1/orders", json=order, headers=storefront(seller))
        assert created.status_code == 201, created.text
        orders[seller] = order["order_id"]

    first = await http.post(
        f"/v1/orders/{orders[a]}/refunds",
        json={"refund_id": refund_id, "amount_minor": 333},
        headers=storefront(a),
    )
    assert first.status_code == 201, first.text
    second = await http.post(
        f"/v1/orders/{orders[b]}/refunds",
        json={"refund_id": refund_id, "amount_minor": 7},
        headers=storefront(b),
    )
    assert second.status_code == 201, second.text
    assert second.json()["order_id"] == orders[b]
    assert second.json()["amount_minor"] == 7

    retry = await http.post(
        f"/v1/orders/{orders[b]}/refunds",
        json={"refund_id": refund_id, "amount_minor": 7},
        headers=storefront(b),
    )
    assert retry.status_code == 200
    assert retry.json() == second.json()
    changed = await http.post(
        f"/v1/orders/{orders[b]}/refunds",
        json={"refund_id": refund_id, "amount_minor": 8},
        headers=storefront(b),
    )
    assert changed.status_code == 409, changed.text
    for secret in (orders[a], a, "333"):
        assert secret not in changed.text

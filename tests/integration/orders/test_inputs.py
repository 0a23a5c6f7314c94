"""Inputs that once crashed the orders service answer 4xx problems and change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.problems import MAX_BODY_BYTES
from tests.integration.orders.conftest import new_order, storefront
from tests.support import ascii_json, assert_problem

EXTREME_TIMESTAMPS = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:30:00+01:00",  # in UTC, before year 1
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-01:00",  # in UTC, after year 9999
    "1999-12-31T23:59Z",
    "2100-01-01T00:00:00.000001Z",
]


async def post_raw(http: httpx.AsyncClient, url: str, body: Any, seller: str) -> httpx.Response:
    headers = storefront(seller) | {"content-type": "application/json"}
    return await http.post(url, content=ascii_json(body), headers=headers)


async def assert_not_stored(http: httpx.AsyncClient, order: dict[str, Any]) -> None:
    got = await http.get(f"/v1/orders/{order['order_id']}", headers=storefront(order["seller_id"]))
    assert_problem(got, 404)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"buyer_ref": "a\x00b"}, "buyer_ref"),
        ({"buyer_ref": "a\ud800b"}, "buyer_ref"),
        ({"buyer_ref": "\udfff"}, "buyer_ref"),
        (
            {"items": [{"item_id": "tea\x00", "quantity": 1, "unit_price_minor": 1250}]},
            "items.0.item_id",
        ),
        (
            {"items": [{"item_id": "\ud83d", "quantity": 1, "unit_price_minor": 1250}]},
            "items.0.item_id",
        ),
        ({"currency": "CN\x00"}, "currency"),
    ],
)
async def test_unstorable_text_is_a_422_naming_the_field(
    http: httpx.AsyncClient, overrides: dict[str, Any], field: str
) -> None:
    order = new_order(f"seller-{len(field)}", **overrides)
    response = await post_raw(http, "/v1/orders", order, order["seller_id"])
    assert_problem(response, 422, field)
    batch = await post_raw(http, "/v1/orders/batch", {"orders": [order]}, order["seller_id"])
    assert_problem(batch, 422, f"orders.0.{field}")
    await assert_not_stored(http, order)


@pytest.mark.parametrize("when", EXTREME_TIMESTAMPS)
@pytest.mark.parametrize("field", ["placed_at", "completed_at"])
async def test_timestamps_out_of_range_are_422(
    http: httpx.AsyncClient, when: str, field: str
) -> None:
    order = new_order("seller-ts", status="completed", **{field: when})
    assert_problem(await post_raw(http, "/v1/orders", order, "seller-ts"), 422, field)
    await assert_not_stored(http, order)


@pytest.mark.parametrize("when", EXTREME_TIMESTAMPS)
async def test_complete_with_a_timestamp_out_of_range_is_422(
    http: httpx.AsyncClient, when: str
) -> None:
    order = new_order("seller-ts")
    created = await http.post("/v1/orders", json=order, headers=storefront("seller-ts"))
    assert created.status_code == 201, created.text
    url = f"/v1/orders/{order['order_id']}/complete"
    response = await post_raw(http, url, {"completed_at": when}, "seller-ts")
    assert_problem(response, 422, "completed_at")
    got = await http.get(f"/v1/orders/{order['order_id']}", headers=storefront("seller-ts"))
    assert got.json()["status"] == "placed"


@pytest.mark.parametrize("order_id", ["a%00b", "%00", "a%ED%A0%80b"])
async def test_unstorable_path_ids_are_422(http: httpx.AsyncClient, order_id: str) -> None:
    got = await http.get(f"/v1/orders/{order_id}", headers=storefront("s"))
    assert_problem(got, 422, "order_id")
    moved = await http.post(f"/v1/orders/{order_id}/cancel", headers=storefront("s"))
    assert_problem(moved, 422, "order_id")


async def _chunks(total: int, chunk: bytes) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)


async def test_a_streamed_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    # A JSON document that stays valid up to the limit: an order whose buyer_ref never ends.
    order = new_order("seller-big")
    head = ascii_json(order)[:-1] + b', "buyer_ref": "'
    body = _chunks(MAX_BODY_BYTES + 64 * 1024, b"x" * 16 * 1024)

    async def stream() -> AsyncIterator[bytes]:
        yield head
        async for chunk in body:
            yield chunk

    headers = storefront("seller-big") | {"content-type": "application/json"}
    response = await http.post("/v1/orders", content=stream(), headers=headers)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)
    await assert_not_stored(http, order)


async def test_the_token_is_checked_before_the_body_is_read(http: httpx.AsyncClient) -> None:
    """Not JSON at all: parsing it first would answer 422; the missing token comes first."""
    garbage = b"{" * 100_000
    json_type = {"content-type": "application/json"}
    for url in ("/v1/orders", "/v1/orders/batch", "/v1/orders/x/refunds"):
        assert_problem(await http.post(url, content=garbage, headers=json_type), 401)
    forged = json_type | {"Authorization": "Bearer not-a-token"}
    assert_problem(await http.post("/v1/orders", content=garbage, headers=forged), 401)
    # With a valid token the same body is the client's mistake: 422, as before.
    valid = json_type | storefront("s")
    assert_problem(await http.post("/v1/orders", content=garbage, headers=valid), 422)

"""With the broker down the API keeps accepting; the events follow once it is back.

The broker it stops is a private one (tests/servers.py), never the one ``make run`` uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import unique
from tests.integration.orders.conftest import PrivateOrders, new_order, orders_on, storefront
from tests.servers import PrivateKafka, start_private_kafka


@pytest.fixture
async def broker() -> AsyncIterator[PrivateKafka]:
    async with start_private_kafka() as kafka:
        yield kafka


@pytest.fixture
async def private(broker: PrivateKafka) -> AsyncIterator[PrivateOrders]:
    async with orders_on(broker) as orders:
        yield orders


@pytest.mark.slow
async def test_orders_accepted_while_the_broker_is_down(
    broker: PrivateKafka, private: PrivateOrders
) -> None:
    http, watch = private.http, private.watch
    seller = unique("seller")
    headers = storefront(seller)
    placed = new_order(seller)
    assert (await http.post("/v1/orders", json=placed, headers=headers)).status_code == 201
    await watch.wait_for(set(), 0)  # the watch is connected before the outage
    orders = [new_order(seller, status="completed") for _ in range(3)]
    await broker.stop()  # waits until the broker JVM has exited
    try:
        for order in orders:
            response = await http.post("/v1/orders", json=order, headers=headers)
            assert response.status_code == 201, response.text
        done = await http.post(f"/v1/orders/{placed['order_id']}/complete", headers=headers)
        assert done.status_code == 200, done.text
        refund = {"refund_id": unique("r"), "amount_minor": 100}
        refunded = await http.post(
            f"/v1/orders/{placed['order_id']}/refunds", json=refund, headers=headers
        )
        assert refunded.status_code == 201, refunded.text
        assert (await http.get("/readyz")).status_code == 503
        keys = {o["order_id"] for o in orders} | {placed["order_id"]}
        assert await private.pending(sorted(keys)) == 5
    finally:
        await broker.start()
    events = await watch.wait_for(keys, 5, within=90)
    by_key = {k: [e.value["type"] for e in events if e.key == k] for k in keys}
    assert by_key[placed["order_id"]][:2] == ["order.completed", "order.refunded"]
    for order in orders:
        assert by_key[order["order_id"]][0] == "order.completed"

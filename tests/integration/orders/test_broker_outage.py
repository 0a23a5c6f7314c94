"""With the broker down the API keeps accepting; the events follow once it is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.conftest import unique
from tests.integration.orders.conftest import TopicWatch, new_order, storefront

ROOT = Path(__file__).parents[3]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"


async def kafka(action: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(KAFKA_SH),
        action,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


async def stop_broker() -> None:
    await kafka("stop")  # waits until the broker JVM has exited


@pytest.mark.slow
async def test_orders_accepted_while_the_broker_is_down(
    http: httpx.AsyncClient, watch: TopicWatch
) -> None:
    seller = unique("seller")
    headers = storefront(seller)
    placed = new_order(seller)
    assert (await http.post("/v1/orders", json=placed, headers=headers)).status_code == 201
    await watch.wait_for(set(), 0)  # the watch is connected before the outage
    orders = [new_order(seller, status="completed") for _ in range(3)]
    await stop_broker()
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
    finally:
        await kafka("start")
    keys = {o["order_id"] for o in orders} | {placed["order_id"]}
    events = await watch.wait_for(keys, 5, within=90)
    by_key = {k: [e.value["type"] for e in events if e.key == k] for k in keys}
    assert by_key[placed["order_id"]][:2] == ["order.completed", "order.refunded"]
    for order in orders:
        assert by_key[order["order_id"]][0] == "order.completed"

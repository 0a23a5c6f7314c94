"""A fixed rule of 0 (an item-only rule) is accepted and records nothing for orders."""

from __future__ import annotations

import httpx

from shared.auth import Role
from shared.events import encode
from shared.kafka import Producer
from tests.conftest import bearer, unique
from tests.integration.donations.conftest import (
    Donations,
    create_project,
    orders_topic,
    put_rule,
)
from tests.integration.donations.test_consumer import completed, receipt, wait_net


async def test_a_fixed_rule_of_zero_is_accepted_and_records_nothing(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    zero_seller, seller = unique("seller"), unique("seller")
    project = await create_project(http, donations.charities_url)
    rule = await put_rule(
        http, donations, zero_seller, project_id=project, mode="fixed", amount_minor=0
    )
    assert (rule["mode"], rule["amount_minor"], rule["version"]) == ("fixed", 0, 1)
    negative = await http.put(
        f"{donations.url}/v1/sellers/{zero_seller}/donation-rule",
        json={"project_id": project, "mode": "fixed", "amount_minor": -1, "active": True},
        headers=bearer(Role.SELLER, zero_seller),
    )
    assert negative.status_code == 422, negative.text
    await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=2)

    # one key, one partition: the sentinel is handled after the zero-rule order
    key = unique("key").encode()
    topic = orders_topic(donations)
    nothing = completed(unique("order"), zero_seller, 5000)
    sentinel = completed(unique("order"), seller, 5000)
    for event in (nothing, sentinel):
        await order_producer.send_and_wait(topic, encode(event), key=key)
    await wait_net(http, donations, sentinel.order.order_id, 2)
    assert (await receipt(http, donations, nothing.order.order_id)).status_code == 404

"""Charity-item rules (``per_item``) end to end: the rule API and the running consumer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from shared.auth import Role
from shared.events import OrderCompleted, OrderItem, OrderSnapshot
from shared.kafka import Producer
from tests.conftest import bearer, unique
from tests.integration.donations.conftest import (
    Donations,
    create_project,
    orders_topic,
    publish,
    put_rule,
)
from tests.integration.donations.test_consumer import refunded, wait_net


def order_with(
    seller_id: str,
    total_minor: int,
    items: list[tuple[str, int]],
    *,
    placed_at: datetime | None = None,
) -> OrderCompleted:
    placed = placed_at or datetime.now(UTC)
    return OrderCompleted(
        order=OrderSnapshot(
            order_id=unique("order"),
            seller_id=seller_id,
            currency="CNY",
            total_minor=total_minor,
            items=[OrderItem(item_id=i, quantity=q, unit_price_minor=100) for i, q in items],
            placed_at=placed,
            completed_at=placed + timedelta(seconds=1),
        )
    )


async def test_per_item_is_versioned_and_returned(
    http: httpx.AsyncClient, donations: Donations
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    v1 = await put_rule(
        http,
        donations,
        seller,
        project_id=project,
        mode="fixed",
        amount_minor=0,
        per_item=[{"item_id": "tea", "amount_minor": 5}, {"item_id": "cup", "amount_minor": 2}],
    )
    assert v1["per_item"] == [
        {"item_id": "cup", "amount_minor": 2},
        {"item_id": "tea", "amount_minor": 5},
    ]
    same = await put_rule(
        http,
        donations,
        seller,
        project_id=project,
        mode="fixed",
        amount_minor=0,
        per_item=[{"item_id": "cup", "amount_minor": 2}, {"item_id": "tea", "amount_minor": 5}],
    )
    assert same["version"] == 1  # the same terms in another order are not a change
    v2 = await put_rule(
        http,
        donations,
        seller,
        project_id=project,
        mode="fixed",
        amount_minor=0,
        per_item=[{"item_id": "tea", "amount_minor": 6}],
    )
    assert (v2["version"], v2["per_item"]) == (2, [{"item_id": "tea", "amount_minor": 6}])
    versions = await http.get(
        f"{donations.url}/v1/sellers/{seller}/donation-rule/versions",
        headers=bearer(Role.SELLER, seller),
    )
    assert [v["per_item"] for v in versions.json()["items"]] == [v2["per_item"], v1["per_item"]]


async def test_item_donations_cap_and_refunds(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    await put_rule(
        http,
        donations,
        seller,
        project_id=project,
        mode="percent",
        basis_points=1000,
        per_item=[{"item_id": "tea", "amount_minor": 30}],
    )
    topic = orders_topic(donations)
    listed = order_with(seller, 10_000, [("tea", 2), ("cup", 5), ("tea", 1)])
    unlisted = order_with(seller, 10_000, [("cup", 5)])
    capped = order_with(seller, 100, [("tea", 4)])  # 10 + 120 > 100: capped at the total
    await publish(order_producer, topic, listed, unlisted, capped)
    body = await wait_net(http, donations, listed.order.order_id, 1_000 + 90)
    assert [(e["kind"], e["amount_minor"]) for e in body["entries"]] == [("accrual", 1_090)]
    assert body["matched_minor"] == 0
    await wait_net(http, donations, unlisted.order.order_id, 1_000)
    await wait_net(http, donations, capped.order.order_id, 100)

    # partial refund: the order part follows the percent rule, the item part stays
    await publish(order_producer, topic, refunded(listed, "r1", 4_000, 4_000))
    body = await wait_net(http, donations, listed.order.order_id, 600 + 90)
    # a full refund reverses the rest, items included
    await publish(order_producer, topic, refunded(listed, "r2", 6_000, 10_000))
    body = await wait_net(http, donations, listed.order.order_id, 0)
    assert [(e["kind"], e["amount_minor"]) for e in body["entries"]] == [
        ("accrual", 1_090),
        ("reversal", 400),
        ("reversal", 690),
    ]
    # the capped accrual came all from items (100 = 10 from the order part + 90 of 120)
    await publish(order_producer, topic, refunded(capped, "r1", 50, 50))
    await wait_net(http, donations, capped.order.order_id, 5 + 90)


async def test_item_only_fixed_rule_reverses_only_on_a_full_refund(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    await put_rule(
        http,
        donations,
        seller,
        project_id=project,
        mode="fixed",
        amount_minor=0,
        per_item=[{"item_id": "tea", "amount_minor": 7}],
    )
    topic = orders_topic(donations)
    order = order_with(seller, 5_000, [("tea", 3)])
    nothing = order_with(seller, 5_000, [("cup", 3)])
    await publish(order_producer, topic, order, nothing)
    await wait_net(http, donations, order.order.order_id, 21)
    await publish(order_producer, topic, refunded(order, "r1", 4_999, 4_999))
    await publish(order_producer, topic, refunded(order, "r2", 1, 5_000))
    body = await wait_net(http, donations, order.order.order_id, 0)
    assert [(e["kind"], e["amount_minor"]) for e in body["entries"]] == [
        ("accrual", 21),
        ("reversal", 21),
    ]
    missing = await http.get(f"{donations.url}/v1/orders/{nothing.order.order_id}/donation")
    assert missing.status_code == 404

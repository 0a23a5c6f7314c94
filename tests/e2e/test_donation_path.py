"""The thin slice through all three services: rule → completed orders → project total."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.auth import Role
from tests.conftest import bearer, unique
from tests.e2e.conftest import Stack
from tests.support import eventually


def order_body(order_id: str, seller_id: str, *, status: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": order_id,
        "seller_id": seller_id,
        "currency": "CNY",
        "total_minor": 2500,
        "items": [{"item_id": "tea", "quantity": 1, "unit_price_minor": 2500}],
    }
    if status == "completed":
        body["status"] = "completed"
        body["completed_at"] = datetime.now(UTC).isoformat()
    return body


async def create_project(client: httpx.AsyncClient, stack: Stack) -> str:
    admin = bearer(Role.ADMIN)
    charity = await client.post(
        f"{stack.charities}/v1/charities", json={"name": unique("Charity")}, headers=admin
    )
    assert charity.status_code == 201, charity.text
    project = await client.post(
        f"{stack.charities}/v1/charities/{charity.json()['charity_id']}/projects",
        json={"name": "Clean water", "currency": "CNY", "goal_minor": 1_000_000},
        headers=admin,
    )
    assert project.status_code == 201, project.text
    project_id: str = project.json()["project_id"]
    return project_id


async def test_completed_orders_become_exactly_one_donation_each(stack: Stack) -> None:
    seller = unique("seller")
    async with httpx.AsyncClient(timeout=10) as client:
        project_id = await create_project(client, stack)
        rule = await client.put(
            f"{stack.donations}/v1/sellers/{seller}/donation-rule",
            json={"project_id": project_id, "mode": "fixed", "amount_minor": 2, "active": True},
            headers=bearer(Role.SELLER, seller),
        )
        assert rule.status_code == 200, rule.text
        assert rule.json()["version"] == 1

        storefront = bearer(Role.STOREFRONT, seller)
        order_ids = [unique("order") for _ in range(3)]
        # one placed then completed (twice), two posted as already completed (one twice)
        placed = await client.post(
            f"{stack.orders}/v1/orders", json=order_body(order_ids[0], seller), headers=storefront
        )
        assert placed.status_code == 201, placed.text
        for _ in range(2):
            done = await client.post(
                f"{stack.orders}/v1/orders/{order_ids[0]}/complete", headers=storefront
            )
            assert done.status_code == 200, done.text
        bodies = [order_body(order_id, seller, status="completed") for order_id in order_ids[1:]]
        for body in bodies:
            created = await client.post(f"{stack.orders}/v1/orders", json=body, headers=storefront)
            assert created.status_code == 201, created.text
        again = await client.post(f"{stack.orders}/v1/orders", json=bodies[-1], headers=storefront)
        assert again.status_code == 200, again.text
        assert again.json() == created.json()

        async def totals() -> dict[str, Any]:
            response = await client.get(f"{stack.charities}/v1/projects/{project_id}/totals")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        total = await eventually(totals, lambda t: t["net_minor"] >= 6, within=60)
        assert total["net_minor"] == 6
        assert total["donation_count"] == 3
        assert total["seller_count"] == 1
        assert total["currency"] == "CNY"

        receipt = await client.get(f"{stack.donations}/v1/orders/{order_ids[0]}/donation")
        assert receipt.status_code == 200, receipt.text
        assert receipt.json()["net_minor"] == 2
        assert [e["kind"] for e in receipt.json()["entries"]] == ["accrual"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer nonsense"}, 401),
        (bearer(Role.SELLER, "s-x"), 403),
        (bearer(Role.STOREFRONT, "someone-else"), 403),
    ],
)
async def test_missing_or_out_of_scope_tokens_are_refused(
    stack: Stack, headers: dict[str, str], status: int
) -> None:
    order_id = unique("order")
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{stack.orders}/v1/orders", json=order_body(order_id, "s-x"), headers=headers
        )
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        missing = await client.get(
            f"{stack.orders}/v1/orders/{order_id}", headers=bearer(Role.STOREFRONT, "s-x")
        )
        assert missing.status_code == 404


async def test_a_malformed_body_is_a_422_problem_and_changes_nothing(stack: Stack) -> None:
    seller = unique("seller")
    order_id = unique("order")
    body = order_body(order_id, seller)
    body["total_minor"] = 12.5
    body["surprise"] = True
    headers = bearer(Role.STOREFRONT, seller)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{stack.orders}/v1/orders", json=body, headers=headers)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == 422
        fields = {error["field"] for error in problem["errors"]}
        assert {"total_minor", "surprise"} <= fields
        after = await client.get(f"{stack.orders}/v1/orders/{order_id}", headers=headers)
        assert after.status_code == 404

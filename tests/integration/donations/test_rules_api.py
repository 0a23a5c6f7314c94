"""The rule API against real PostgreSQL, a real charities service and Kafka."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from services.donations.app import create_app
from services.donations.config import Settings
from shared.auth import Role
from tests.conftest import bearer, unique
from tests.integration.donations.conftest import Donations, create_project, put_rule
from tests.support import free_port, serve


def rule_url(donations: Donations, seller_id: str) -> str:
    return f"{donations.url}/v1/sellers/{seller_id}/donation-rule"


async def test_rule_versions_are_kept_newest_first(
    http: httpx.AsyncClient, donations: Donations
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url, "CNY")
    headers = bearer(Role.SELLER, seller)
    assert (await http.get(rule_url(donations, seller), headers=headers)).status_code == 404

    v1 = await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=2)
    assert v1 == {
        "seller_id": seller,
        "version": 1,
        "project_id": project,
        "mode": "fixed",
        "amount_minor": 2,
        "basis_points": None,
        "min_minor": None,
        "max_minor": None,
        "currency": "CNY",
        "active": True,
        "effective_from": v1["effective_from"],
        "per_item": [],
    }
    assert datetime.fromisoformat(v1["effective_from"]).utcoffset() is not None

    v2 = await put_rule(
        http,
        donations,
        seller,
        project_id=project,
        mode="percent",
        basis_points=50,
        min_minor=1,
        max_minor=500,
    )
    assert (v2["version"], v2["mode"], v2["basis_points"], v2["amount_minor"]) == (
        2,
        "percent",
        50,
        None,
    )
    assert v2["effective_from"] >= v1["effective_from"]
    # the same rule again is not a change
    again = await put_rule(
        http,
        donations,
        seller,
        project_id=project,
        mode="percent",
        basis_points=50,
        min_minor=1,
        max_minor=500,
    )
    assert again == v2
    v3 = await put_rule(
        http,
        donations,
        seller,
        project_id=project,
        mode="percent",
        basis_points=50,
        min_minor=1,
        max_minor=500,
        active=False,
    )
    assert (v3["version"], v3["active"]) == (3, False)

    current = await http.get(rule_url(donations, seller), headers=headers)
    assert current.status_code == 200
    assert current.json() == v3
    versions = await http.get(f"{rule_url(donations, seller)}/versions", headers=headers)
    assert versions.status_code == 200
    assert [v["version"] for v in versions.json()["items"]] == [3, 2, 1]
    assert versions.json()["next_cursor"] is None

    page = await http.get(
        f"{rule_url(donations, seller)}/versions", params={"limit": 2}, headers=headers
    )
    assert [v["version"] for v in page.json()["items"]] == [3, 2]
    rest = await http.get(
        f"{rule_url(donations, seller)}/versions",
        params={"limit": 2, "cursor": page.json()["next_cursor"]},
        headers=headers,
    )
    assert [v["version"] for v in rest.json()["items"]] == [1]

    # an admin may read, not write
    admin = bearer(Role.ADMIN)
    assert (await http.get(rule_url(donations, seller), headers=admin)).json() == v3
    denied = await http.put(
        rule_url(donations, seller),
        json={"project_id": project, "mode": "fixed", "amount_minor": 1, "active": True},
        headers=admin,
    )
    assert denied.status_code == 403


async def test_rule_currency_is_the_projects(http: httpx.AsyncClient, donations: Donations) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url, "JPY")
    rule = await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=1)
    assert rule["currency"] == "JPY"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"mode": "fixed"}, {"amount_minor"}),
        ({"mode": "fixed", "amount_minor": 2, "basis_points": 50}, {"basis_points"}),
        (
            {
                "mode": "fixed",
                "amount_minor": 0,
                "per_item": [{"item_id": "a", "amount_minor": 1}] * 2,
            },
            {"per_item.1.item_id"},
        ),
        (
            {
                "mode": "fixed",
                "amount_minor": 0,
                "per_item": [{"item_id": f"i{n}", "amount_minor": 1} for n in range(1001)],
            },
            {"per_item"},
        ),
        (
            {
                "mode": "fixed",
                "amount_minor": 0,
                "per_item": [{"item_id": "a", "amount_minor": -1}],
            },
            {"per_item.0.amount_minor"},
        ),
        ({"mode": "fixed", "amount_minor": -1}, {"amount_minor"}),
        ({"mode": "fixed", "amount_minor": 1.5}, {"amount_minor"}),
        ({"mode": "percent"}, {"basis_points"}),
        ({"mode": "percent", "basis_points": 0}, {"basis_points"}),
        ({"mode": "percent", "basis_points": 10_001}, {"basis_points"}),
        ({"mode": "percent", "basis_points": 50, "amount_minor": 3}, {"amount_minor"}),
        ({"mode": "percent", "basis_points": 50, "min_minor": 9, "max_minor": 3}, {"min_minor"}),
        ({"mode": "percent", "basis_points": 50, "surprise": 1}, {"surprise"}),
        ({"mode": "tithe", "basis_points": 50}, {"mode"}),
        ({"mode": "fixed", "amount_minor": 2, "active": None}, {"active"}),
        ({"mode": "fixed", "amount_minor": 2, "project_id": "not-a-uuid"}, {"project_id"}),
    ],
)
async def test_invalid_rules_are_422_problems(
    http: httpx.AsyncClient, donations: Donations, body: dict[str, Any], fields: set[str]
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    payload = {"project_id": project, "active": True, **body}
    response = await http.put(
        rule_url(donations, seller), json=payload, headers=bearer(Role.SELLER, seller)
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert fields <= {e["field"] for e in response.json()["errors"]}
    missing = await http.get(rule_url(donations, seller), headers=bearer(Role.SELLER, seller))
    assert missing.status_code == 404


async def test_unknown_or_closed_projects_are_refused(
    http: httpx.AsyncClient, donations: Donations
) -> None:
    seller = unique("seller")
    headers = bearer(Role.SELLER, seller)
    closed = await create_project(http, donations.charities_url, closed=True)
    unknown = "00000000-0000-4000-8000-00000000dead"
    for project, word in ((closed, "closed"), (unknown, "does not exist")):
        response = await http.put(
            rule_url(donations, seller),
            json={"project_id": project, "mode": "fixed", "amount_minor": 2, "active": True},
            headers=headers,
        )
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["errors"][0]["field"] == "project_id"
        assert word in problem["detail"]
        assert project in problem["detail"]
    assert (await http.get(rule_url(donations, seller), headers=headers)).status_code == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer nonsense"}, 401),
        (bearer(Role.SELLER, "someone-else"), 403),
        (bearer(Role.STOREFRONT, "owner"), 403),
    ],
)
async def test_only_the_seller_itself_may_set_its_rule(
    http: httpx.AsyncClient, donations: Donations, headers: dict[str, str], status: int
) -> None:
    project = await create_project(http, donations.charities_url)
    body = {"project_id": project, "mode": "fixed", "amount_minor": 2, "active": True}
    response = await http.put(rule_url(donations, "owner"), json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    for path in ("", "/versions"):
        read = await http.get(rule_url(donations, "owner") + path, headers=headers)
        assert read.status_code == status
    statement = await http.get(f"{donations.url}/v1/sellers/owner/donations", headers=headers)
    assert statement.status_code == status


async def test_charities_down_means_503_and_no_rule(
    http: httpx.AsyncClient, donations: Donations
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    settings = Settings(charities_url=f"http://127.0.0.1:{free_port()}")
    async with serve(create_app(settings)) as url:
        response = await http.put(
            f"{url}/v1/sellers/{seller}/donation-rule",
            json={"project_id": project, "mode": "fixed", "amount_minor": 2, "active": True},
            headers=bearer(Role.SELLER, seller),
        )
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        detail = response.json()["detail"]
        assert "charities service" in detail
        for leak in ("127.0.0.1", settings.charities_url, "Error", "errno", "refused"):
            assert leak not in detail
    missing = await http.get(rule_url(donations, seller), headers=bearer(Role.SELLER, seller))
    assert missing.status_code == 404

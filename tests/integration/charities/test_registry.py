"""Registry endpoints against the real database: success, auth and validation errors."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import bearer, unique


async def _charity(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    response = await client.post("/v1/charities", json={"name": unique("Charity")}, headers=admin)
    assert response.status_code == 201, response.text
    charity_id: str = response.json()["charity_id"]
    return charity_id


async def test_create_and_read_charity(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    registration_no = unique("REG")
    name = unique("Blue Sky Foundation")
    created = await client.post(
        "/v1/charities", json={"name": name, "registration_no": registration_no}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"charity_id", "name", "registration_no", "created_at"}
    assert body["name"] == name
    assert body["registration_no"] == registration_no
    uuid.UUID(body["charity_id"])

    got = await client.get(f"/v1/charities/{body['charity_id']}")
    assert got.status_code == 200
    assert got.json() == body

    again = await client.post(
        "/v1/charities", json={"name": name, "registration_no": registration_no}, headers=admin
    )
    assert again.status_code == 200
    assert again.json() == body

    other = await client.post(
        "/v1/charities",
        json={"name": name + " (other)", "registration_no": registration_no},
        headers=admin,
    )
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"


async def test_create_project_and_close(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    charity_id = await _charity(client, admin)
    created = await client.post(
        f"/v1/charities/{charity_id}/projects",
        json={"name": "Clean water", "currency": "CNY", "goal_minor": 100_000, "description": "x"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    project = created.json()
    assert project["status"] == "active"
    assert project["charity_id"] == charity_id
    assert project["currency"] == "CNY"
    assert project["goal_minor"] == 100_000
    for field in ("project_id", "charity_id", "name", "currency", "goal_minor", "created_at"):
        assert field in project

    got = await client.get(f"/v1/projects/{project['project_id']}")
    assert got.status_code == 200
    assert got.json() == project

    retried = await client.post(
        f"/v1/charities/{charity_id}/projects",
        json={"name": "Clean water", "currency": "CNY", "goal_minor": 100_000, "description": "x"},
        headers=admin,
    )
    assert retried.status_code == 200
    assert retried.json()["project_id"] == project["project_id"]
    clash = await client.post(
        f"/v1/charities/{charity_id}/projects",
        json={"name": "Clean water", "currency": "USD"},
        headers=admin,
    )
    assert clash.status_code == 409

    closed = await client.post(f"/v1/projects/{project['project_id']}/close", headers=admin)
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    assert closed.json()["closed_at"] is not None
    closed_again = await client.post(f"/v1/projects/{project['project_id']}/close", headers=admin)
    assert closed_again.status_code == 200
    assert closed_again.json() == closed.json()
    assert (await client.get(f"/v1/projects/{project['project_id']}")).json()["status"] == "closed"


async def test_goal_is_optional(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    charity_id = await _charity(client, admin)
    created = await client.post(
        f"/v1/charities/{charity_id}/projects",
        json={"name": "Books", "currency": "JPY"},
        headers=admin,
    )
    assert created.status_code == 201
    assert created.json()["goal_minor"] is None


async def test_writes_need_an_admin_token(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {"name": unique("Charity")}
    assert (await client.post("/v1/charities", json=body)).status_code == 401
    bad = await client.post("/v1/charities", json=body, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    seller = await client.post("/v1/charities", json=body, headers=bearer("seller", "s1"))
    assert seller.status_code == 403
    assert seller.headers["content-type"] == "application/problem+json"

    charity_id = await _charity(client, admin)
    project = {"name": "P", "currency": "CNY"}
    url = f"/v1/charities/{charity_id}/projects"
    assert (await client.post(url, json=project)).status_code == 401
    assert (
        await client.post(url, json=project, headers=bearer("storefront", "s"))
    ).status_code == 403
    created = await client.post(url, json=project, headers=admin)
    close_url = f"/v1/projects/{created.json()['project_id']}/close"
    assert (await client.post(close_url)).status_code == 401
    assert (await client.post(close_url, headers=bearer("seller", "s1"))).status_code == 403
    assert (await client.get(close_url.removesuffix("/close"))).json()["status"] == "active"


async def test_validation_problems(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for body, field in [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "unknown": 1}, "unknown"),
        ({"name": "x" * 201}, "name"),
    ]:
        response = await client.post("/v1/charities", json=body, headers=admin)
        assert response.status_code == 422, body
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in problem["errors"]], problem

    charity_id = await _charity(client, admin)
    url = f"/v1/charities/{charity_id}/projects"
    for body, field in [
        ({"name": "P", "currency": "XXX"}, "currency"),
        ({"name": "P", "currency": "cny"}, "currency"),
        ({"name": "P"}, "currency"),
        ({"name": "P", "currency": "CNY", "goal_minor": -1}, "goal_minor"),
        ({"name": "P", "currency": "CNY", "goal_minor": 1.5}, "goal_minor"),
        ({"name": "P", "currency": "CNY", "goal_minor": "100"}, "goal_minor"),
        ({"name": "P", "currency": "CNY", "colour": "red"}, "colour"),
    ]:
        response = await client.post(url, json=body, headers=admin)
        assert response.status_code == 422, body
        assert field in [e["field"] for e in response.json()["errors"]], response.json()

    assert (await client.get("/v1/projects?status=open")).status_code == 422
    assert (await client.get("/v1/projects?limit=0")).status_code == 422
    assert (await client.get("/v1/projects?limit=1001")).status_code == 422
    assert (await client.get("/v1/projects?charity_id=nope")).status_code == 422
    bad_cursor = await client.get("/v1/projects?cursor=garbage")
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["errors"][0]["field"] == "cursor"


async def test_unknown_ids_are_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    missing = str(uuid.uuid4())
    assert (await client.get(f"/v1/charities/{missing}")).status_code == 404
    assert (await client.get(f"/v1/projects/{missing}")).status_code == 404
    assert (await client.get("/v1/projects/not-a-uuid")).status_code == 404
    assert (await client.post(f"/v1/projects/{missing}/close", headers=admin)).status_code == 404
    response = await client.post(
        f"/v1/charities/{missing}/projects", json={"name": "P", "currency": "CNY"}, headers=admin
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_list_projects_filters_and_pages(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    charity_id = await _charity(client, admin)
    other_charity = await _charity(client, admin)
    ids = []
    for n in range(5):
        response = await client.post(
            f"/v1/charities/{charity_id}/projects",
            json={"name": f"P{n}", "currency": "CNY"},
            headers=admin,
        )
        ids.append(response.json()["project_id"])
    await client.post(
        f"/v1/charities/{other_charity}/projects",
        json={"name": "X", "currency": "CNY"},
        headers=admin,
    )
    await client.post(f"/v1/projects/{ids[1]}/close", headers=admin)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"charity_id": charity_id, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/projects", params=params)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= 2
        seen += [p["project_id"] for p in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids

    closed = await client.get("/v1/projects", params={"charity_id": charity_id, "status": "closed"})
    assert [p["project_id"] for p in closed.json()["items"]] == [ids[1]]
    active = await client.get("/v1/projects", params={"charity_id": charity_id, "status": "active"})
    assert [p["project_id"] for p in active.json()["items"]] == [ids[0], *ids[2:]]


async def test_list_charities_pages(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    mine = {await _charity(client, admin) for _ in range(3)}
    first = await client.get("/v1/charities", params={"limit": 1})
    assert first.status_code == 200
    assert len(first.json()["items"]) == 1
    assert first.json()["next_cursor"]
    found: set[str] = set()
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/v1/charities", params=params)).json()
        found |= {c["charity_id"] for c in body["items"]}
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert mine <= found

"""Inputs that once crashed the charities service answer 422 problems and change nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import unique
from tests.integration.charities.helpers import new_project
from tests.support import ascii_json, assert_problem, forged_cursor

UNSTORABLE = ["a\x00b", "\x00", "a\ud800b", "\udc00"]


async def post_raw(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], admin: dict[str, str]
) -> httpx.Response:
    headers = admin | {"content-type": "application/json"}
    return await client.post(url, content=ascii_json(body), headers=headers)


async def names_listed(client: httpx.AsyncClient, url: str) -> set[str]:
    names: set[str] = set()
    cursor = None
    while True:
        page = await client.get(
            url, params={"limit": 1000} | ({"cursor": cursor} if cursor else {})
        )
        assert page.status_code == 200, page.text
        names |= {item["name"] for item in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return names


@pytest.mark.parametrize("text", UNSTORABLE)
@pytest.mark.parametrize("field", ["name", "registration_no"])
async def test_charity_fields_refuse_unstorable_text(
    client: httpx.AsyncClient, admin: dict[str, str], text: str, field: str
) -> None:
    marker = unique("Charity")
    body = {"name": marker, "registration_no": unique("reg")} | {field: marker + text}
    assert_problem(await post_raw(client, "/v1/charities", body, admin), 422, field)
    listed = await names_listed(client, "/v1/charities")
    assert not {name for name in listed if name.startswith(marker)}


@pytest.mark.parametrize("text", UNSTORABLE)
@pytest.mark.parametrize("field", ["name", "description"])
async def test_project_fields_refuse_unstorable_text(
    client: httpx.AsyncClient, admin: dict[str, str], text: str, field: str
) -> None:
    charity_id, _ = await new_project(client)
    marker = unique("Project")
    body = {"name": marker, "description": "d", "currency": "CNY"} | {field: marker + text}
    url = f"/v1/charities/{charity_id}/projects"
    assert_problem(await post_raw(client, url, body, admin), 422, field)
    listed = await names_listed(client, f"/v1/projects?charity_id={charity_id}")
    assert not {name for name in listed if name.startswith(marker)}


@pytest.mark.parametrize("key", ["a%00b", "%00", "a%ED%A0%80b"])
@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/charities/{}", "charity_id"),
        ("GET", "/v1/charities/{}/totals", "charity_id"),
        ("POST", "/v1/charities/{}/projects", "charity_id"),
        ("GET", "/v1/projects/{}", "project_id"),
        ("GET", "/v1/projects/{}/totals", "project_id"),
        ("GET", "/v1/projects/{}/totals/daily", "project_id"),
        ("POST", "/v1/projects/{}/close", "project_id"),
    ],
)
async def test_path_ids_refuse_unstorable_text(
    client: httpx.AsyncClient, admin: dict[str, str], key: str, method: str, path: str, field: str
) -> None:
    body = {"name": "n", "currency": "CNY"} if method == "POST" else None
    response = await client.request(method, path.format(key), json=body, headers=admin)
    assert response.status_code in (404, 422), response.text
    if "%00" in key:  # the invalid UTF-8 of the other is decoded with replacement characters
        assert_problem(response, 422, field)
    else:
        assert_problem(response, 404)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({"to": "0001-01-01"}, ["to"]),
        ({"from": "0001-01-01"}, ["from"]),
        ({"to": "9999-12-31"}, ["to"]),
        ({"from": "9999-12-31", "to": "9999-12-31"}, ["from", "to"]),
        ({"from": "1999-12-31", "to": "2000-01-05"}, ["from"]),
    ],
)
async def test_daily_totals_refuse_dates_out_of_range(
    client: httpx.AsyncClient, query: dict[str, str], fields: list[str]
) -> None:
    _, project_id = await new_project(client)
    got = await client.get(f"/v1/projects/{project_id}/totals/daily", params=query)
    assert_problem(got, 422, *fields)
    fine = await client.get(
        f"/v1/projects/{project_id}/totals/daily", params={"from": "2000-01-01", "to": "2000-01-02"}
    )
    assert fine.status_code == 200, fine.text


@pytest.mark.parametrize(
    "position",
    [
        ["0001-01-01T00:00:00+00:00", str(uuid.uuid4())],
        ["9999-12-31T23:59:59.999999-23:59", str(uuid.uuid4())],
        ["0001-01-01T00:00:00+23:59", str(uuid.uuid4())],
        ["2030-01-01T00:00:00", str(uuid.uuid4())],
        ["2030-01-01T00:00:00+00:00", "not-a-uuid"],
        ["2030-01-01T00:00:00+00:00", 12],
        [2**70, str(uuid.uuid4())],
        ["2030-01-01T00:00:00+00:00"],
        {"a": 1},
    ],
)
@pytest.mark.parametrize("url", ["/v1/charities", "/v1/projects"])
async def test_list_cursors_out_of_range_are_422(
    client: httpx.AsyncClient, position: object, url: str
) -> None:
    got = await client.get(url, params={"cursor": forged_cursor(position)})
    assert_problem(got, 422, "cursor")
    nul = await client.get(url, params={"cursor": json.dumps(position) + "\x00"})
    assert_problem(nul, 422, "cursor")


async def test_the_token_is_checked_before_the_body_is_read(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    garbage = b"{" * 100_000
    json_type = {"content-type": "application/json"}
    for url in ("/v1/charities", f"/v1/charities/{uuid.uuid4()}/projects"):
        assert_problem(await client.post(url, content=garbage, headers=json_type), 401)
        seller = json_type | {"Authorization": admin["Authorization"] + "x"}
        assert_problem(await client.post(url, content=garbage, headers=seller), 401)
    valid = json_type | admin
    assert_problem(await client.post("/v1/charities", content=garbage, headers=valid), 422)

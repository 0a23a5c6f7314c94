"""Inputs that once crashed the donations service answer 422 problems and change nothing."""

from __future__ import annotations

import httpx
import pytest

from shared.auth import Role
from tests.conftest import bearer, unique
from tests.integration.donations.conftest import Donations, create_project, put_rule
from tests.support import assert_problem, forged_cursor

# The largest values of the columns the cursors point into: rule versions are ``integer``,
# ledger sequence numbers ``bigint``.
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
UNSTORABLE_IDS = ["a%00b", "%00", "%00%00"]


@pytest.mark.parametrize("order_id", UNSTORABLE_IDS)
async def test_the_public_receipt_refuses_unstorable_order_ids(
    http: httpx.AsyncClient, donations: Donations, order_id: str
) -> None:
    got = await http.get(f"{donations.url}/v1/orders/{order_id}/donation")
    assert_problem(got, 422, "order_id")


@pytest.mark.parametrize("seller_id", UNSTORABLE_IDS)
@pytest.mark.parametrize("path", ["donation-rule", "donation-rule/versions", "donations"])
async def test_seller_paths_refuse_unstorable_ids(
    http: httpx.AsyncClient, donations: Donations, seller_id: str, path: str
) -> None:
    got = await http.get(
        f"{donations.url}/v1/sellers/{seller_id}/{path}", headers=bearer(Role.ADMIN)
    )
    assert_problem(got, 422, "seller_id")


async def test_putting_a_rule_for_an_unstorable_seller_changes_nothing(
    http: httpx.AsyncClient, donations: Donations
) -> None:
    project = await create_project(http, donations.charities_url)
    body = {"project_id": project, "mode": "fixed", "amount_minor": 1, "active": True}
    put = await http.put(
        f"{donations.url}/v1/sellers/a%00b/donation-rule",
        json=body,
        headers=bearer(Role.SELLER, "a\x00b"),
    )
    assert_problem(put, 422, "seller_id")


@pytest.mark.parametrize(
    ("path", "position"),
    [
        ("donation-rule/versions", INT4_MAX + 1),
        ("donation-rule/versions", 2**64),
        ("donation-rule/versions", -1),
        ("donations", INT8_MAX + 1),
        ("donations", 10**40),
        ("donations", 1.5),
        ("donations", "0001-01-01T00:00:00+00:00"),
    ],
)
async def test_cursors_out_of_the_columns_range_are_422(
    http: httpx.AsyncClient, donations: Donations, path: str, position: object
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=1)
    got = await http.get(
        f"{donations.url}/v1/sellers/{seller}/{path}",
        params={"cursor": forged_cursor(position)},
        headers=bearer(Role.SELLER, seller),
    )
    assert_problem(got, 422, "cursor")
    # The largest position the column holds is still a cursor (of an empty page).
    largest = INT4_MAX if path.endswith("versions") else INT8_MAX
    edge = await http.get(
        f"{donations.url}/v1/sellers/{seller}/{path}",
        params={"cursor": forged_cursor(largest)},
        headers=bearer(Role.SELLER, seller),
    )
    assert edge.status_code == 200, edge.text


async def test_the_token_is_checked_before_the_body_is_read(
    http: httpx.AsyncClient, donations: Donations
) -> None:
    url = f"{donations.url}/v1/sellers/s-1/donation-rule"
    garbage = b"{" * 100_000
    json_type = {"content-type": "application/json"}
    assert_problem(await http.put(url, content=garbage, headers=json_type), 401)
    admin = json_type | bearer(Role.ADMIN)  # a valid token of a role that may not PUT
    assert_problem(await http.put(url, content=garbage, headers=admin), 403)
    own = json_type | bearer(Role.SELLER, "s-1")
    assert_problem(await http.put(url, content=garbage, headers=own), 422)

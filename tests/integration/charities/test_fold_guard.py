"""The fold's duplicate guard: an entry counts once, whether it comes again in a later
batch or was folded before the service kept entries (then only ``applied_entry`` has it)."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI

from tests.integration.charities.helpers import fold_directly, ledger_entry, new_project


async def _donated(client: httpx.AsyncClient, project_id: str) -> int:
    response = await client.get(f"/v1/projects/{project_id}/totals")
    assert response.status_code == 200, response.text
    return int(response.json()["donated_minor"])


async def test_an_entry_is_folded_once_and_legacy_applied_ids_are_not_folded_again(
    client: httpx.AsyncClient, charities_app: FastAPI
) -> None:
    pool = charities_app.state.pool
    _, project_id = await new_project(client)
    first, second = ledger_entry(project_id, 700), ledger_entry(project_id, 40)
    legacy = ledger_entry(project_id, 5_000)
    # folded by a version of the service that did not keep entries yet
    await pool.execute(
        "INSERT INTO applied_entry (entry_id, project_id) VALUES ($1, $2)",
        legacy.entry.entry_id,
        uuid.UUID(project_id),
    )

    assert await fold_directly(pool, [first, legacy]) == 1
    assert await _donated(client, project_id) == 700
    # redelivered, beside a new one: only the new one counts
    assert await fold_directly(pool, [first, legacy, second]) == 1
    assert await _donated(client, project_id) == 740
    kept = await pool.fetchval(
        "SELECT count(*) FROM ledger_entry WHERE entry_id = ANY($1::uuid[])",
        [first.entry.entry_id, second.entry.entry_id, legacy.entry.entry_id],
    )
    assert kept == 3

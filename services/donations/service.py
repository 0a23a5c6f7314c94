"""Use cases of the rule API: validation, the project check, versioning. No SQL, no HTTP.

Donation arithmetic is in rules.py and the batch planning of the consumer in ledger.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.donations import repository
from services.donations.charities import CharitiesClient, CharitiesUnavailable
from services.donations.rules import RuleVersion
from services.donations.schemas import RuleIn
from shared.problems import Problem, unprocessable


def rule_errors(body: RuleIn) -> list[dict[str, str]]:
    """What a mode requires and forbids, as problem ``errors`` entries (empty when valid)."""
    errors: list[dict[str, str]] = []

    def error(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    if body.mode == "fixed":
        if body.amount_minor is None:
            error("amount_minor", "required when mode is 'fixed'")
        elif body.amount_minor < 1:
            error("amount_minor", "must be at least 1")
        for name in ("basis_points", "min_minor", "max_minor"):
            if getattr(body, name) is not None:
                error(name, "not allowed when mode is 'fixed'")
    else:
        if body.basis_points is None:
            error("basis_points", "required when mode is 'percent'")
        if body.amount_minor is not None:
            error("amount_minor", "not allowed when mode is 'percent' (use basis_points)")
        if (
            body.min_minor is not None
            and body.max_minor is not None
            and body.min_minor > body.max_minor
        ):
            error("min_minor", "must not exceed max_minor")
    return errors


def _same_terms(a: RuleVersion, b: RuleVersion) -> bool:
    return (
        a.project_id,
        a.mode,
        a.amount_minor,
        a.basis_points,
        a.min_minor,
        a.max_minor,
        a.currency,
        a.active,
    ) == (
        b.project_id,
        b.mode,
        b.amount_minor,
        b.basis_points,
        b.min_minor,
        b.max_minor,
        b.currency,
        b.active,
    )


async def set_rule(
    pool: asyncpg.Pool[Any], charities: CharitiesClient, seller_id: str, body: RuleIn
) -> RuleVersion:
    """Records ``body`` as the seller's next rule version (or returns the current one if
    it already says exactly this: a repeated PUT is not a change)."""
    errors = rule_errors(body)
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise Problem(422, "validation-error", "Validation failed", detail, errors=errors)
    try:
        project = await charities.project(body.project_id)
    except CharitiesUnavailable as exc:
        raise Problem(
            503,
            "unavailable",
            "Charities service unavailable",
            f"could not check project {body.project_id} with the charities service: {exc}",
            headers={"Retry-After": "2"},
        ) from exc
    if project is None:
        raise unprocessable("project_id", f"project {body.project_id} does not exist")
    if not project.active:
        raise unprocessable("project_id", f"project {body.project_id} is {project.status}")
    async with pool.acquire() as conn, conn.transaction():
        await repository.lock_seller_rule(conn, seller_id)
        current = await repository.current_rule(conn, seller_id)
        candidate = RuleVersion(
            seller_id=seller_id,
            version=current.version + 1 if current is not None else 1,
            project_id=body.project_id,
            mode=body.mode,
            amount_minor=body.amount_minor,
            basis_points=body.basis_points,
            min_minor=body.min_minor,
            max_minor=body.max_minor,
            currency=project.currency,
            active=body.active,
            effective_from=datetime.now(UTC),  # replaced by the database clock
        )
        if current is not None and _same_terms(current, candidate):
            return current
        return await repository.insert_rule(
            conn, candidate, current.effective_from if current is not None else None
        )

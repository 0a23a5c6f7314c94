"""Reconcile must name a difference when one exists (and stay quiet when none does)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.db import connect
from shared.migrations import migrate
from shared.settings import CommonSettings
from tests.conftest import unique
from tools.reconcile import reconcile

ROOT = Path(__file__).parents[2]
DBS = {s: os.environ[f"GFG_{s.upper()}_DB"] for s in ("orders", "donations", "charities")}


async def test_reconcile_names_a_missing_donation_and_a_total_that_lags(
    common_settings: CommonSettings,
) -> None:
    for service, db in DBS.items():  # the tables exist even if no service started yet
        await migrate(common_settings.dsn(db), ROOT / "services" / service / "migrations")

    prefix = unique("recon") + "-"
    seller = prefix + "s1"
    project_id = uuid.uuid4()
    placed = datetime.now(UTC) - timedelta(minutes=5)
    orders = await connect(common_settings.dsn(DBS["orders"]))
    donations = await connect(common_settings.dsn(DBS["donations"]))
    try:
        await donations.execute(
            """INSERT INTO donation_rule (seller_id, version, project_id, mode, amount_minor,
                 currency, active, effective_from)
               VALUES ($1, 1, $2, 'fixed', 7, 'CNY', true, $3)""",
            seller,
            project_id,
            placed - timedelta(minutes=1),
        )
        clean = await reconcile(common_settings, DBS, prefix)
        assert clean.differences == []

        await orders.execute(
            """INSERT INTO sales_order (order_id, seller_id, currency, total_minor, items,
                 placed_at, status, completed_at, request_hash)
               VALUES ($1, $2, 'CNY', 100, '[]'::jsonb, $3, 'completed', $3, '\\x00')""",
            prefix + "o1",
            seller,
            placed,
        )
        missing = await reconcile(common_settings, DBS, prefix)
        assert missing.differences == [
            f"order {prefix}o1: expected net donation 7, ledger has 0",
        ]

        await donations.execute(
            """INSERT INTO ledger_entry (entry_id, order_id, event_key, seller_id, project_id,
                 kind, amount_minor, currency, rule_version, event_id, recorded_at)
               VALUES ($1, $2, 'accrual', $3, $4, 'accrual', 7, 'CNY', 1, $5, now())""",
            uuid.uuid4(),
            prefix + "o1",
            seller,
            project_id,
            uuid.uuid4(),
        )
        lagging = await reconcile(common_settings, DBS, prefix)
        assert lagging.differences == [
            f"project {project_id}: ledger (donated, reversed, matched, donations, sellers) = "
            "(7, 0, 0, 1, 1), charities totals = (0, 0, 0, 0, 0)"
        ]
    finally:
        await orders.close()
        await donations.close()


async def test_reconcile_holds_a_fixed_rule_above_the_order_total_to_the_total(
    common_settings: CommonSettings,
) -> None:
    """Issue 9: fixed 31 on an order of 4 fen donates 4; a ledger of 4 is clean, 31 is not."""
    for service, db in DBS.items():
        await migrate(common_settings.dsn(db), ROOT / "services" / service / "migrations")

    prefix = unique("recon") + "-"
    seller = prefix + "s1"
    project_id = uuid.uuid4()
    placed = datetime.now(UTC) - timedelta(minutes=5)
    orders = await connect(common_settings.dsn(DBS["orders"]))
    donations = await connect(common_settings.dsn(DBS["donations"]))
    charities = await connect(common_settings.dsn(DBS["charities"]))
    try:
        await donations.execute(
            """INSERT INTO donation_rule (seller_id, version, project_id, mode, amount_minor,
                 currency, active, effective_from)
               VALUES ($1, 1, $2, 'fixed', 31, 'CNY', true, $3)""",
            seller,
            project_id,
            placed - timedelta(minutes=1),
        )
        await orders.execute(
            """INSERT INTO sales_order (order_id, seller_id, currency, total_minor, items,
                 placed_at, status, completed_at, request_hash)
               VALUES ($1, $2, 'CNY', 4, '[]'::jsonb, $3, 'completed', $3, '\\x00')""",
            prefix + "o1",
            seller,
            placed,
        )
        accrual = uuid.uuid4()
        await donations.execute(
            """INSERT INTO ledger_entry (entry_id, order_id, event_key, seller_id, project_id,
                 kind, amount_minor, currency, rule_version, event_id, recorded_at)
               VALUES ($1, $2, 'accrual', $3, $4, 'accrual', 4, 'CNY', 1, $5, now())""",
            accrual,
            prefix + "o1",
            seller,
            project_id,
            uuid.uuid4(),
        )
        await charities.execute(
            """INSERT INTO project_total (project_id, currency, donated_minor, reversed_minor,
                 donation_count, seller_count)
               VALUES ($1, 'CNY', 4, 0, 1, 1)""",
            project_id,
        )
        clean = await reconcile(common_settings, DBS, prefix)
        assert clean.differences == []

        await donations.execute(
            "UPDATE ledger_entry SET amount_minor = 31 WHERE entry_id = $1", accrual
        )
        await charities.execute(
            "UPDATE project_total SET donated_minor = 31 WHERE project_id = $1", project_id
        )
        uncapped = await reconcile(common_settings, DBS, prefix)
        assert uncapped.differences == [
            f"order {prefix}o1: expected net donation 4, ledger has 31",
        ]
    finally:
        await orders.close()
        await donations.close()
        await charities.close()


async def test_reconcile_counts_only_refunds_made_inside_the_return_window(
    common_settings: CommonSettings,
) -> None:
    """A full refund before the accrual's ``available_on`` must be reversed in the ledger;
    one at or after it reverses nothing (the donation is final), so no reversal is right."""
    for service, db in DBS.items():
        await migrate(common_settings.dsn(db), ROOT / "services" / service / "migrations")
    prefix = unique("recon") + "-"
    seller = prefix + "s1"
    project_id = uuid.uuid4()
    completed = datetime.now(UTC) - timedelta(minutes=5)
    available_on = completed + timedelta(seconds=5)
    orders = await connect(common_settings.dsn(DBS["orders"]))
    donations = await connect(common_settings.dsn(DBS["donations"]))
    try:
        await donations.execute(
            """INSERT INTO donation_rule (seller_id, version, project_id, mode, amount_minor,
                 currency, active, effective_from)
               VALUES ($1, 1, $2, 'fixed', 7, 'CNY', true, $3)""",
            seller,
            project_id,
            completed - timedelta(minutes=1),
        )
        # Both orders fully refunded, neither reversed: "late" after its window, "early"
        # inside it.
        for name, refunded_at in (
            ("late", available_on),
            ("early", available_on - timedelta(microseconds=1)),
        ):
            order_id = prefix + name
            await orders.execute(
                """INSERT INTO sales_order (order_id, seller_id, currency, total_minor, items,
                     placed_at, status, completed_at, refunded_minor, request_hash)
                   VALUES ($1, $2, 'CNY', 100, '[]'::jsonb, $3, 'refunded', $3, 100, '\\x00')""",
                order_id,
                seller,
                completed,
            )
            await orders.execute(
                """INSERT INTO order_refund (refund_id, order_id, amount_minor,
                     refunded_total_minor, request_hash, created_at)
                   VALUES ('r1', $1, 100, 100, '\\x00', $2)""",
                order_id,
                refunded_at,
            )
            await donations.execute(
                """INSERT INTO ledger_entry (entry_id, order_id, event_key, seller_id,
                     project_id, kind, amount_minor, currency, rule_version, event_id,
                     recorded_at, available_on)
                   VALUES ($1, $2, 'accrual', $3, $4, 'accrual', 7, 'CNY', 1, $5, $6, $7)""",
                uuid.uuid4(),
                order_id,
                seller,
                project_id,
                uuid.uuid4(),
                completed,
                available_on,
            )
        result = await reconcile(common_settings, DBS, prefix)
        assert [d for d in result.differences if d.startswith("order ")] == [
            f"order {prefix}early: expected net donation 0, ledger has 7",
        ]
    finally:
        await orders.close()
        await donations.close()

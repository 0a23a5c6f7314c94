"""``make reconcile``: proves the three databases agree, and names every difference.

1. orders → ledger: every completed or refunded order whose seller had an active rule at
   ``placed_at`` has the net donation the rule gives (``tools.simulate.expected_net``:
   computed from the contract, independently of the donations service's code, with the
   accrual capped at the order's total), in the rule's project; no other order has ledger
   entries. Only refunds made before the accrual's ``available_on`` count (the return
   window): a later one reverses nothing.
   Matches are not part of an order's net donation here (they are the sponsor's).
2. ledger → totals: every project's charities totals (donated, reversed, matched, donation
   and seller counts) equal the sums of its ledger entries.
3. campaigns (when the donations database has them): every campaign's ``matched_minor``
   equals its match entries minus its match reversals in the ledger, lies within
   ``[0, budget_minor]``, and no order has two matches of one campaign.
4. charities funds (its own tables only): per project, disbursed ≤ posted and the
   disbursed total equals its disbursements; each disbursement's allocations sum to its
   amount; no entry is allocated beyond what its posting made allocatable.

Run it once the pipeline has drained (``--wait`` retries until clean or the deadline).
``--seller-prefix`` limits it to one simulation's sellers and their projects. Exit 1 on
any difference, 0 when clean.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from shared.db import connect
from shared.settings import CommonSettings
from tools.simulate import OrderPlan, RuleVersion, expected_net, rule_at

SELLER_KINDS = ("accrual", "reversal")
MATCH_SIGN = {"match": 1, "match_reversal": -1}


@dataclass
class Report:
    orders: int = 0
    ledger_entries: int = 0
    projects: int = 0
    campaigns: int = 0
    pending_outbox: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)


async def _fetch(dsn: str, sql: str, *args: Any) -> list[Any]:
    conn = await connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def reconcile(settings: CommonSettings, dbs: dict[str, str], prefix: str) -> Report:
    like = prefix + "%"
    report = Report()
    donations_dsn = settings.dsn(dbs["donations"])
    # A donations database from before matching has no campaigns and no item rules.
    schema = await _fetch(
        donations_dsn,
        """SELECT to_regclass('campaign') IS NOT NULL AS campaigns,
                  EXISTS (SELECT 1 FROM information_schema.columns
                          WHERE table_name = 'donation_rule' AND column_name = 'per_item')
                      AS per_item,
                  EXISTS (SELECT 1 FROM information_schema.columns
                          WHERE table_name = 'ledger_entry' AND column_name = 'available_on')
                      AS window""",
    )
    has_campaigns, has_per_item = schema[0]["campaigns"], schema[0]["per_item"]
    has_window = schema[0]["window"]
    per_item = "per_item" if has_per_item else "'{}'::jsonb AS per_item"
    campaign_id = "campaign_id" if has_campaigns else "NULL::text AS campaign_id"
    available_on = "available_on" if has_window else "NULL::timestamptz AS available_on"
    orders, refunds, rules, ledger, outbox_orders, outbox_donations = await asyncio.gather(
        _fetch(
            settings.dsn(dbs["orders"]),
            """SELECT order_id, seller_id, currency, total_minor, placed_at, status,
                      refunded_minor, items
               FROM sales_order WHERE seller_id LIKE $1 AND status IN ('completed', 'refunded')""",
            like,
        ),
        _fetch(
            settings.dsn(dbs["orders"]),
            """SELECT r.order_id, r.refunded_total_minor, r.created_at
               FROM order_refund AS r JOIN sales_order AS o USING (order_id)
               WHERE o.seller_id LIKE $1 ORDER BY r.order_id, r.created_at""",
            like,
        ),
        _fetch(
            donations_dsn,
            f"""SELECT seller_id, version, project_id::text AS project_id, mode,
                      coalesce(amount_minor, 0) AS amount_minor,
                      coalesce(basis_points, 0) AS basis_points, min_minor, max_minor,
                      currency, active, effective_from, {per_item}
               FROM donation_rule WHERE seller_id LIKE $1 ORDER BY seller_id, version""",
            like,
        ),
        _fetch(
            donations_dsn,
            f"""SELECT order_id, seller_id, project_id::text AS project_id, kind, amount_minor,
                      currency, {campaign_id}, {available_on}
               FROM ledger_entry WHERE seller_id LIKE $1""",
            like,
        ),
        _fetch(settings.dsn(dbs["orders"]), "SELECT count(*) AS n FROM outbox"),
        _fetch(settings.dsn(dbs["donations"]), "SELECT count(*) AS n FROM outbox"),
    )
    report.pending_outbox = {"orders": outbox_orders[0]["n"], "donations": outbox_donations[0]["n"]}
    report.orders = len(orders)
    report.ledger_entries = len(ledger)

    history: dict[str, list[RuleVersion]] = defaultdict(list)
    project_currency: dict[str, str] = {}
    for r in rules:
        history[r["seller_id"]].append(
            RuleVersion(
                effective_from=r["effective_from"],
                project_id=r["project_id"],
                mode=r["mode"],
                amount_minor=r["amount_minor"],
                basis_points=r["basis_points"],
                min_minor=r["min_minor"],
                max_minor=r["max_minor"],
                active=r["active"],
                per_item=dict(_json(r["per_item"])),
            )
        )
        project_currency[r["project_id"]] = r["currency"]

    # 1. orders -> ledger, per order
    ledger_net: dict[str, int] = defaultdict(int)
    ledger_project: dict[str, set[str]] = defaultdict(set)
    window_ends: dict[str, datetime] = {}
    for e in ledger:
        if e["kind"] == "accrual" and e["available_on"] is not None:
            window_ends[e["order_id"]] = e["available_on"]
        if e["kind"] not in SELLER_KINDS:
            continue
        sign = 1 if e["kind"] == "accrual" else -1
        ledger_net[e["order_id"]] += sign * e["amount_minor"]
        ledger_project[e["order_id"]].add(e["project_id"])
    refunded_in_window: dict[str, int] = {}
    for r in refunds:  # each order's refunds oldest first: the last one inside the window
        ends = window_ends.get(r["order_id"])
        if ends is None or r["created_at"] < ends:
            refunded_in_window[r["order_id"]] = r["refunded_total_minor"]
    seen: set[str] = set()
    for o in orders:
        seen.add(o["order_id"])
        refunded = refunded_in_window.get(o["order_id"], 0)
        plan = OrderPlan(
            o["order_id"],
            o["seller_id"],
            o["currency"],
            o["total_minor"],
            o["placed_at"],
            completed=True,
            # The cumulative total of the last refund inside the window is enough: each
            # refund's target is at most the one before, so the net after all of them is
            # that of the last one.
            refunded_totals=[refunded] if refunded else [],
            items=[(i["item_id"], i["quantity"]) for i in _json(o["items"])],
        )
        rule = rule_at(history[o["seller_id"]], o["placed_at"])
        want = 0
        if rule is not None:
            want = expected_net(plan, rule, project_currency[rule.project_id])
        got = ledger_net.get(o["order_id"], 0)
        if want != got:
            report.differences.append(
                f"order {o['order_id']}: expected net donation {want}, ledger has {got}"
            )
        if rule is not None and ledger_project.get(o["order_id"], {rule.project_id}) != {
            rule.project_id
        }:
            report.differences.append(
                f"order {o['order_id']}: ledger project {sorted(ledger_project[o['order_id']])}"
                f" is not the rule's project {rule.project_id}"
            )
    for order_id, net in ledger_net.items():
        if order_id not in seen:
            report.differences.append(
                f"order {order_id}: ledger net {net} but the order is not completed or refunded"
            )

    # 2. ledger -> charities totals, per project
    sums: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"donated": 0, "reversed": 0, "matched": 0, "count": 0, "sellers": set()}
    )
    for e in ledger:
        s = sums[e["project_id"]]
        if e["kind"] == "accrual":
            s["donated"] += e["amount_minor"]
            s["count"] += 1
            s["sellers"].add(e["seller_id"])
        elif e["kind"] == "reversal":
            s["reversed"] += e["amount_minor"]
        else:
            s["matched"] += MATCH_SIGN[e["kind"]] * e["amount_minor"]
    projects = sorted(set(sums) | set(project_currency))
    report.projects = len(projects)
    totals = await _fetch(
        settings.dsn(dbs["charities"]),
        """SELECT project_id::text AS project_id, sum(donated_minor) AS donated,
                  sum(reversed_minor) AS reversed, sum(matched_minor) AS matched,
                  sum(donation_count) AS count, sum(seller_count) AS sellers
           FROM project_total WHERE project_id = ANY($1::uuid[]) GROUP BY project_id""",
        projects,
    )
    by_project = {t["project_id"]: t for t in totals}
    for project_id in projects:
        sums_of = sums[project_id]
        row = by_project.get(project_id)
        reported: tuple[int, ...] = (
            tuple(int(row[k]) for k in ("donated", "reversed", "matched", "count", "sellers"))
            if row is not None
            else (0, 0, 0, 0, 0)
        )
        derived = (
            sums_of["donated"],
            sums_of["reversed"],
            sums_of["matched"],
            sums_of["count"],
            len(sums_of["sellers"]),
        )
        if reported != derived:
            report.differences.append(
                f"project {project_id}: ledger (donated, reversed, matched, donations, "
                f"sellers) = {derived}, charities totals = {reported}"
            )

    # 3. campaigns -> their match entries
    if has_campaigns:
        campaigns = await _fetch(
            donations_dsn,
            """SELECT campaign_id, budget_minor, matched_minor FROM campaign
               WHERE campaign_id = ANY($1::text[])""",
            sorted({e["campaign_id"] for e in ledger if e["campaign_id"] is not None}),
        )
        report.differences += check_campaigns(campaigns, ledger)
        report.campaigns = len(campaigns)

    # 4. charities funds
    report.differences += await reconcile_funds(settings, dbs["charities"], projects)
    return report


# Each row is one broken rule: (what, key, detail). Set-based, over all projects given.
_FUNDS_CHECKS = """
WITH p AS (SELECT unnest($1::uuid[]) AS project_id),
d AS (
    SELECT d.project_id, d.currency, sum(d.amount_minor) AS disbursed
    FROM disbursement AS d JOIN p USING (project_id) GROUP BY 1, 2
)
SELECT 'project' AS what, f.project_id::text AS key,
       format('posted %s, disbursed %s (disbursements sum to %s)', f.posted_minor,
              f.disbursed_minor, coalesce(d.disbursed, 0)) AS detail
FROM project_funds AS f JOIN p USING (project_id)
LEFT JOIN d USING (project_id, currency)
WHERE f.disbursed_minor > f.posted_minor OR f.disbursed_minor <> coalesce(d.disbursed, 0)
UNION ALL
SELECT 'project', d.project_id::text, format('disbursements %s but no posted money', d.disbursed)
FROM d WHERE NOT EXISTS (
    SELECT 1 FROM project_funds AS f
    WHERE f.project_id = d.project_id AND f.currency = d.currency
)
UNION ALL
SELECT 'disbursement', d.disbursement_id::text,
       format('amount %s, allocations sum to %s in %s rows (allocations_count %s)',
              d.amount_minor, coalesce(sum(a.amount_minor), 0), count(a.entry_id),
              d.allocations_count)
FROM disbursement AS d JOIN p USING (project_id)
LEFT JOIN allocation AS a USING (disbursement_id)
GROUP BY d.disbursement_id
HAVING coalesce(sum(a.amount_minor), 0) <> d.amount_minor
    OR count(a.entry_id) <> d.allocations_count
UNION ALL
SELECT 'entry', e.entry_id::text,
       format('allocatable %s, allocated %s, allocations sum to %s',
              e.allocatable_minor, e.allocated_minor, coalesce(sum(a.amount_minor), 0))
FROM ledger_entry AS e JOIN p USING (project_id)
LEFT JOIN allocation AS a USING (entry_id)
GROUP BY e.entry_id
HAVING coalesce(sum(a.amount_minor), 0) > coalesce(e.allocatable_minor, 0)
    OR coalesce(sum(a.amount_minor), 0) <> e.allocated_minor
ORDER BY 1, 2
"""


async def reconcile_funds(
    settings: CommonSettings, charities_db: str, projects: list[str]
) -> list[str]:
    """The broken funds rules of ``projects`` (project ids), read from charities tables."""
    rows = await _fetch(settings.dsn(charities_db), _FUNDS_CHECKS, projects)
    return [f"{r['what']} {r['key']}: {r['detail']}" for r in rows]


def check_campaigns(campaigns: list[Any], ledger: list[Any]) -> list[str]:
    """Each campaign's matched total against its ledger entries and its budget, and at
    most one match per (order, campaign). Pure, over the rows read."""
    out = []
    net: dict[str, int] = defaultdict(int)
    matches: dict[tuple[str, str], int] = defaultdict(int)
    for e in ledger:
        if e["kind"] in MATCH_SIGN:
            net[e["campaign_id"]] += MATCH_SIGN[e["kind"]] * e["amount_minor"]
            if e["kind"] == "match":
                matches[e["order_id"], e["campaign_id"]] += 1
    for c in campaigns:
        got, budget = c["matched_minor"], c["budget_minor"]
        if got != net[c["campaign_id"]]:
            out.append(
                f"campaign {c['campaign_id']}: matched_minor {got}, ledger matches minus "
                f"match reversals {net[c['campaign_id']]}"
            )
        if not 0 <= got <= budget:
            out.append(f"campaign {c['campaign_id']}: matched {got} outside [0, {budget}]")
    known = {c["campaign_id"] for c in campaigns}
    for campaign_id in sorted(set(net) - known):
        out.append(f"campaign {campaign_id}: ledger matches {net[campaign_id]}, no campaign")
    for (order_id, campaign_id), n in sorted(matches.items()):
        if n > 1:
            out.append(f"order {order_id}: {n} matches of campaign {campaign_id}")
    return out


def _json(value: Any) -> Any:
    """A jsonb column as asyncpg returns it without a codec (text), or already decoded."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def print_report(report: Report) -> None:
    print(
        f"reconcile: {report.orders} completed/refunded orders, {report.ledger_entries} ledger"
        f" entries, {report.projects} projects, {report.campaigns} campaigns; outbox backlog"
        f" {report.pending_outbox}"
    )
    for line in report.differences:
        print(f"DIFFERENCE {line}")
    print(
        "reconcile: clean"
        if not report.differences
        else f"reconcile: {len(report.differences)} difference(s)"
    )


async def main(args: argparse.Namespace) -> int:
    settings = CommonSettings(jwt_secret=os.environ.get("GFG_JWT_SECRET", "x" * 32))
    dbs = {
        svc: os.environ.get(f"GFG_{svc.upper()}_DB", svc)
        for svc in ("orders", "donations", "charities")
    }
    deadline = time.monotonic() + args.wait
    while True:
        report = await reconcile(settings, dbs, args.seller_prefix)
        if not report.differences or time.monotonic() >= deadline:
            break
        await asyncio.sleep(1)
    print_report(report)
    return 1 if report.differences else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seller-prefix", default="", help="only sellers whose id starts so")
    parser.add_argument("--wait", type=float, default=0, help="retry until clean, up to N s")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

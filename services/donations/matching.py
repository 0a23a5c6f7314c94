"""Sponsor matching: which accruals a campaign matches, for how much, and how a refund
gives a match back. Pure, no I/O (tested in tests/unit/test_donations_matching.py).

Why the budget is never exceeded, whatever runs concurrently (several consumers in one
group, a rebalance that hands a batch to a second consumer while the first still writes
it, redelivery after a crash between the database commit and the offset commit):

- The consumer computes matches only for the seller entries that its batch's insert
  ACTUALLY inserted (``INSERT ... ON CONFLICT DO NOTHING RETURNING``). A redelivered
  event inserts nothing, so it matches nothing; and since an accrual and its matches
  commit in one transaction, a batch redelivered after a crash finds all its entries
  already there and matches nothing again. Match entries have their own unique keys
  (``match:<campaign_id>``, ``match_reversal:<campaign_id>:<refund_id>``) as well.
- Once per batch, before any entry is written, the consumer locks the campaigns of the
  batch's projects (one ``SELECT ... ORDER BY campaign_id FOR UPDATE``: a fixed lock
  order, so two consumers never deadlock on them). Two batches touching one project
  therefore run one after the other, per batch and never per event, and each reads
  ``matched_minor`` as the previous one committed it.
- ``plan_matches`` then allocates sequentially, in event order, against each campaign's
  remaining budget as locked, and the consumer moves each touched campaign's
  ``matched_minor`` once, by the sum of the match entries it inserted. The table's
  ``CHECK (matched_minor BETWEEN 0 AND budget_minor)`` is the last line of defence: a bug
  here would fail the batch (and retry it), never overspend.
- ``close`` updates the campaign row, so it waits for (or is waited for by) a batch
  holding the lock: every batch that commits after it sees ``closed_at`` and matches
  nothing more, whatever the order's ``placed_at``.

Proportional match reversal (exact definition): when a refund reverses ``r`` of an
order's seller donation whose net just before was ``n``, each of the order's matches
with ``m`` still unreversed gives back ``min(m, round_half_up(m * r / n))``; a full
refund (``refunded_total_minor >= total_minor``), or one that takes the seller's net to
0, gives back all of ``m``. Only a refund that reverses some of the seller's donation
(a ledger entry) reverses matches: e.g. a partial refund under a ``fixed`` rule leaves
both the donation and its matches as they are. The amount goes back to that
campaign's budget (``matched_minor`` is net of match reversals), which turns an
``exhausted`` campaign back into ``active`` unless it has ended or been closed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from services.donations.ledger import AccrualFacts, NewEntry
from services.donations.rules import entry_id
from shared.money import apply_basis_points, div_round_half_up

CampaignStatus = Literal["scheduled", "active", "exhausted", "ended"]


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: str
    sponsor: str
    project_id: uuid.UUID
    ratio_bp: int
    per_item_minor: int
    per_order_cap_minor: int | None
    budget_minor: int
    currency: str
    starts_at: datetime
    ends_at: datetime
    sellers: tuple[str, ...] | None
    closed_at: datetime | None
    matched_minor: int

    @property
    def remaining_minor(self) -> int:
        return self.budget_minor - self.matched_minor


def campaign_status(campaign: Campaign, now: datetime) -> CampaignStatus:
    """Closed or past ``ends_at``: ended; before ``starts_at``: scheduled; no budget left:
    exhausted; otherwise active."""
    if campaign.closed_at is not None or now >= campaign.ends_at:
        return "ended"
    if now < campaign.starts_at:
        return "scheduled"
    if campaign.remaining_minor <= 0:
        return "exhausted"
    return "active"


def match_key(campaign_id: str) -> str:
    return f"match:{campaign_id}"


def match_reversal_key(campaign_id: str, refund_id: str) -> str:
    return f"match_reversal:{campaign_id}:{refund_id}"


def match_amount(campaign: Campaign, accrual_minor: int, units: int) -> int:
    """What ``campaign`` would match of an accrual before its budget: ``ratio_bp`` of the
    accrual (half up) plus ``per_item_minor`` per unit, capped at ``per_order_cap_minor``."""
    amount = apply_basis_points(accrual_minor, campaign.ratio_bp) + campaign.per_item_minor * max(
        0, units
    )
    if campaign.per_order_cap_minor is not None:
        amount = min(amount, campaign.per_order_cap_minor)
    return max(0, amount)


def matches(campaign: Campaign, entry: NewEntry, facts: AccrualFacts) -> bool:
    """Whether ``campaign`` matches the accrual ``entry`` at all (budget aside)."""
    return (
        campaign.closed_at is None
        and campaign.project_id == entry.project_id
        and campaign.currency == entry.currency
        and campaign.starts_at <= facts.placed_at < campaign.ends_at
        and (campaign.sellers is None or entry.seller_id in campaign.sellers)
    )


def match_reversal_amount(
    match_left: int, reversal_minor: int, net_before_minor: int, full_refund: bool = False
) -> int:
    """What a seller reversal of ``reversal_minor`` (out of ``net_before_minor``) takes
    back of a match with ``match_left`` unreversed: in proportion, half up, all of it on
    a full refund or when the seller's net goes to 0, never more than is left."""
    if match_left <= 0 or reversal_minor <= 0:
        return 0
    if full_refund or reversal_minor >= net_before_minor:
        return match_left
    return min(match_left, div_round_half_up(match_left * reversal_minor, net_before_minor))


@dataclass(slots=True)
class MatchPlan:
    entries: list[NewEntry] = field(default_factory=list)
    # campaign_id -> change of matched_minor (matches minus match reversals)
    deltas: dict[str, int] = field(default_factory=dict)


def plan_matches(
    recorded: Sequence[NewEntry],
    accruals: Mapping[str, AccrualFacts],
    net_before: Mapping[str, int],
    campaigns: Sequence[Campaign],
    prior: Mapping[str, Mapping[str, int]],
    full_refunds: Set[str] = frozenset(),
) -> MatchPlan:
    """Match entries for the seller entries ``recorded`` (those the batch inserted, in
    event order), against ``campaigns`` as locked; ``prior`` holds, per order, what each
    campaign's earlier matches still have unreversed."""
    plan = MatchPlan()
    if not campaigns:
        return plan
    by_project: dict[uuid.UUID, list[Campaign]] = {}
    for campaign in sorted(campaigns, key=lambda c: (c.starts_at, c.campaign_id)):
        by_project.setdefault(campaign.project_id, []).append(campaign)
    by_id = {c.campaign_id: c for c in campaigns}
    remaining = {c.campaign_id: c.remaining_minor for c in campaigns}
    left: dict[str, dict[str, int]] = {}  # order_id -> campaign_id -> unreversed match
    for entry in recorded:
        if entry.kind == "accrual":
            facts = accruals.get(entry.entry_id)
            if facts is None:
                continue
            for campaign in by_project.get(entry.project_id, ()):
                cid = campaign.campaign_id
                if remaining[cid] <= 0 or not matches(campaign, entry, facts):
                    continue
                amount = min(
                    match_amount(campaign, entry.amount_minor, facts.units), remaining[cid]
                )
                if amount <= 0:
                    continue
                remaining[cid] -= amount
                plan.deltas[cid] = plan.deltas.get(cid, 0) + amount
                left.setdefault(entry.order_id, {})[cid] = amount
                plan.entries.append(_entry(entry, "match", match_key(cid), cid, amount))
        elif entry.kind == "reversal":
            order_left = left.get(entry.order_id)
            if order_left is None:
                order_left = dict(prior.get(entry.order_id, {}))
                left[entry.order_id] = order_left
            refund_id = entry.event_key.removeprefix("refund:")
            net = net_before.get(entry.entry_id, entry.amount_minor)
            full = entry.entry_id in full_refunds
            for cid in sorted(order_left):
                if cid not in by_id:
                    continue
                amount = match_reversal_amount(order_left[cid], entry.amount_minor, net, full)
                if amount <= 0:
                    continue
                order_left[cid] -= amount
                remaining[cid] += amount
                plan.deltas[cid] = plan.deltas.get(cid, 0) - amount
                key = match_reversal_key(cid, refund_id)
                plan.entries.append(_entry(entry, "match_reversal", key, cid, amount))
    return plan


def _entry(
    source: NewEntry,
    kind: Literal["match", "match_reversal"],
    key: str,
    campaign_id: str,
    amount: int,
) -> NewEntry:
    return NewEntry(
        entry_id=entry_id(source.order_id, key),
        order_id=source.order_id,
        event_key=key,
        seller_id=source.seller_id,
        project_id=source.project_id,
        kind=kind,
        amount_minor=amount,
        currency=source.currency,
        rule_version=None,
        event_id=source.event_id,
        campaign_id=campaign_id,
    )

"""One completed order, one trace: from the storefront's POST through the orders outbox,
Kafka, the donations consumer and its outbox, to the charities fold (shared/tracing.py).

The services write their spans to JSON-lines files (the stack's ``traces`` folder); the
test reads all three and follows the parent links of the order's trace.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import orjson

from shared.auth import Role
from shared.events import TOPIC_LEDGER, TOPIC_ORDERS
from shared.settings import CommonSettings
from tests.conftest import bearer, unique
from tests.e2e.conftest import Stack
from tests.e2e.test_donation_path import create_project, order_body
from tests.support import eventually

Span = dict[str, Any]


def read_spans(folder: Path) -> list[Span]:
    spans: list[Span] = []
    for service in ("orders", "donations", "charities"):
        path = folder / f"{service}.jsonl"
        if not path.exists():
            continue
        for line in path.read_bytes().splitlines():
            try:
                span = orjson.loads(line)
            except orjson.JSONDecodeError:  # a line being written right now
                continue
            assert span["service"] == service
            spans.append(span)
    return spans


def only(spans: list[Span], **wanted: Any) -> Span:
    found = [s for s in spans if all(s.get(k) == v for k, v in wanted.items())]
    assert len(found) == 1, (wanted, spans)
    return found[0]


def follow_chain(spans: list[Span], order_id: str, topics: tuple[str, str]) -> Span:
    """Checks the order's five spans and their parent links; returns the POST's span."""
    orders_topic, ledger_topic = topics
    assert len({s["trace_id"] for s in spans}) == 1
    post = only(spans, service="orders", kind="SERVER", name="POST /v1/orders")
    assert post["attributes"]["http.response.status_code"] == 201
    publish = only(spans, service="orders", kind="PRODUCER", name=f"publish {orders_topic}")
    assert publish["parent_span_id"] == post["span_id"]
    assert publish["attributes"]["messaging.kafka.message.key"] == order_id
    process = only(spans, service="donations", kind="CONSUMER", name=f"process {orders_topic}")
    assert process["parent_span_id"] == publish["span_id"]
    assert process["attributes"]["messaging.kafka.message.key"] == order_id
    relay = only(spans, service="donations", kind="PRODUCER", name=f"publish {ledger_topic}")
    assert relay["parent_span_id"] == process["span_id"]
    fold = only(spans, service="charities", kind="CONSUMER", name=f"process {ledger_topic}")
    assert fold["parent_span_id"] == relay["span_id"]
    assert fold["attributes"]["messaging.kafka.message.key"] == order_id
    for span in (post, publish, process, relay, fold):
        assert span["status"] != "ERROR", span
        assert span["start_ns"] <= span["end_ns"]
    return post


async def test_one_completed_order_is_one_trace_across_the_three_services(stack: Stack) -> None:
    settings = CommonSettings()
    topics = (settings.topic(TOPIC_ORDERS), settings.topic(TOPIC_LEDGER))
    seller = unique("seller")
    async with httpx.AsyncClient(timeout=10) as client:
        project_id = await create_project(client, stack)
        rule = await client.put(
            f"{stack.donations}/v1/sellers/{seller}/donation-rule",
            json={"project_id": project_id, "mode": "fixed", "amount_minor": 2, "active": True},
            headers=bearer(Role.SELLER, seller),
        )
        assert rule.status_code == 200, rule.text
        storefront = bearer(Role.STOREFRONT, seller)

        # One order continues the storefront's own trace (its traceparent header) ...
        trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
        continued, started = unique("order"), unique("order")
        response = await client.post(
            f"{stack.orders}/v1/orders",
            json=order_body(continued, seller, status="completed"),
            headers={**storefront, "traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        assert response.status_code == 201, response.text
        # ... the other starts a trace at the POST.
        response = await client.post(
            f"{stack.orders}/v1/orders",
            json=order_body(started, seller, status="completed"),
            headers=storefront,
        )
        assert response.status_code == 201, response.text

        async def totals() -> dict[str, Any]:
            answer = await client.get(f"{stack.charities}/v1/projects/{project_id}/totals")
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

        await eventually(totals, lambda t: t["donation_count"] >= 2, within=60)

    def folded(spans: list[Span]) -> set[str]:
        return {
            s["attributes"].get("messaging.kafka.message.key", "")
            for s in spans
            if s["service"] == "charities" and s["kind"] == "CONSUMER"
        }

    async def spans_now() -> list[Span]:
        return read_spans(stack.traces)

    def complete(spans: list[Span]) -> bool:
        """Both folds exported, and every span of the chains they end: each process
        exports on its own schedule, so a fold's span can come before the donations
        relay's or the orders relay's. Each fold's parents are followed up to the POST
        (whose own parent is the storefront's, or none)."""
        by_id = {s["span_id"]: s for s in spans}
        folds = [
            s
            for s in spans
            if s["service"] == "charities"
            and s["kind"] == "CONSUMER"
            and s["attributes"].get("messaging.kafka.message.key") in (continued, started)
        ]
        if not {continued, started} <= folded(spans):
            return False
        for span in folds:
            for _ in range(4):  # fold <- relay <- process <- publish <- POST
                parent = by_id.get(span["parent_span_id"])
                if parent is None:
                    return False
                span = parent
        return True

    # A span is exported once its work is done (within each process's export delay).
    spans = await eventually(spans_now, complete, within=30)

    mine = [s for s in spans if s["trace_id"] == trace_id]
    post = follow_chain(mine, continued, topics)
    assert post["parent_span_id"] == caller_span

    starts = [
        s
        for s in spans
        if s["service"] == "orders"
        and s["kind"] == "PRODUCER"
        and s["attributes"].get("messaging.kafka.message.key") == started
    ]
    assert len(starts) == 1, starts
    other = [s for s in spans if s["trace_id"] == starts[0]["trace_id"]]
    root = follow_chain(other, started, topics)
    assert root["parent_span_id"] is None
    assert starts[0]["trace_id"] != trace_id

"""Totals past 2^63: a project receiving thousands of entries at the money bound keeps
exact totals (numeric sums), answers them as JSON integers, and dead-letters nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.charities.config import Settings
from shared.kafka import Producer
from shared.money import MAX_MINOR
from tests.integration.charities.helpers import ledger_entry, new_project, produce
from tests.support import eventually

INT64_MAX = 2**63 - 1
# Enough entries at the bound for the sum to pass 2^63 (9,224 would do).
ACCRUALS = 9_300
REVERSALS = 2


async def _json(client: httpx.AsyncClient, url: str, **params: str) -> Any:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    # the stdlib parser keeps integers exact (a float would show up as a float here)
    return json.loads(response.text)


async def _dead_letters_naming(settings: Settings, dlq: str, needle: str) -> list[bytes]:
    """Every record on ``dlq`` up to its current end whose value contains ``needle``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(dlq, p) for p in consumer.partitions_for_topic(dlq) or []]
        assert partitions, f"{dlq} does not exist"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found: list[bytes] = []
        for tp in partitions:
            while await consumer.position(tp) < end[tp]:
                batches = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
                found += [r.value for r in batches.get(tp, []) if needle.encode() in r.value]
        return found
    finally:
        await consumer.stop()


async def test_totals_past_two_to_the_63_stay_exact(
    client: httpx.AsyncClient,
    ledger_producer: Producer,
    ledger_topic: str,
    charities_settings: Settings,
) -> None:
    charity_id, project_id = await new_project(client)
    day = datetime(2031, 4, 1, 12, tzinfo=UTC)
    events = [
        ledger_entry(project_id, MAX_MINOR, seller_id=f"s-{i % 7}", recorded_at=day)
        for i in range(ACCRUALS)
    ] + [
        ledger_entry(project_id, MAX_MINOR, kind="reversal", recorded_at=day)
        for _ in range(REVERSALS)
    ]
    assert ACCRUALS * MAX_MINOR > INT64_MAX
    await produce(ledger_producer, ledger_topic, events)

    donated = ACCRUALS * MAX_MINOR
    reversed_ = REVERSALS * MAX_MINOR
    url = f"/v1/projects/{project_id}/totals"
    totals = await eventually(
        lambda: _json(client, url),
        lambda b: b["donation_count"] == ACCRUALS and b["reversed_minor"] == reversed_,
        within=120,
        interval=0.5,
    )
    assert totals["donated_minor"] == donated
    assert totals["net_minor"] == donated - reversed_
    assert type(totals["donated_minor"]) is int
    assert totals["seller_count"] == 7

    charity = await _json(client, f"/v1/charities/{charity_id}/totals")
    assert [(i["donated_minor"], i["net_minor"]) for i in charity["items"]] == [
        (donated, donated - reversed_)
    ]
    everything = await _json(client, "/v1/totals")
    mine = [i for i in everything["items"] if i["project_id"] == project_id]
    assert [i["donated_minor"] for i in mine] == [donated]
    daily = await _json(
        client,
        f"/v1/projects/{project_id}/totals/daily",
        **{"from": "2031-04-01", "to": "2031-04-01"},
    )
    assert daily == [
        {
            "date": "2031-04-01",
            "donated_minor": donated,
            "reversed_minor": reversed_,
            "matched_minor": 0,
            "donation_count": ACCRUALS,
        }
    ]
    dead = await _dead_letters_naming(charities_settings, ledger_topic + ".dlq", project_id)
    assert dead == [], [orjson.loads(d)["reason"] for d in dead]

"""Dead letters on the real broker: one larger than the broker's limit once encoded is
truncated (the partition moves on), and a lone poison record is dead-lettered too."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from shared.kafka import (
    DLQ_MAX_VALUE_BYTES,
    BatchConsumer,
    DeadLetter,
    Producer,
    Record,
    ensure_topics,
    make_producer,
)
from shared.settings import CommonSettings
from tests.conftest import unique
from tests.support import eventually


async def _dead_letters(settings: CommonSettings, dlq: str, count: int) -> list[tuple[bytes, Any]]:
    consumer = AIOKafkaConsumer(
        dlq,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=unique("g"),
        auto_offset_reset="earliest",
        fetch_max_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        found: list[tuple[bytes, Any]] = []
        while len(found) < count:
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
            found += [(r.value, r) for rs in batches.values() for r in rs]
        return found
    finally:
        await consumer.stop()


async def _consume(
    settings: CommonSettings, topic: str, producer: Producer, handler: Any, done: Any
) -> None:
    consumer = BatchConsumer(
        bootstrap=settings.kafka_bootstrap,
        topic=topic,
        group_id=unique("g"),
        handler=handler,
        producer=producer,
    )
    try:
        await consumer.start()
        runner = asyncio.create_task(consumer.run())
        await eventually(lambda: asyncio.sleep(0, done()), bool)
        await consumer.stop()
        await runner
    finally:
        await consumer.close()


async def test_an_oversize_dead_letter_is_truncated_and_the_partition_moves_on(
    common_settings: CommonSettings,
) -> None:
    topic = common_settings.topic(unique("oversize"))
    await ensure_topics(common_settings.kafka_bootstrap, [topic], partitions=1)
    producer = make_producer(common_settings.kafka_bootstrap)
    await producer.start()
    # Not UTF-8: the dead letter carries it in base64, a third larger than the broker's
    # 1 MiB limit although the record itself fits.
    poison = bytes(range(128, 256)) * 7_800
    assert len(base64.b64encode(poison)) > 1024 * 1024
    handled: list[bytes] = []

    async def handler(records: Sequence[Record]) -> Sequence[DeadLetter]:
        dead = []
        for record in records:
            if record.value.startswith(b"{"):
                handled.append(record.value)
            else:
                dead.append(DeadLetter(record, "not JSON: " + repr(record.value[:50_000])))
        return dead

    try:
        metadata = await (await producer.send(topic, poison, key=b"k"))
        await (await producer.send(topic, b'{"after": 1}', key=b"k"))
        await _consume(common_settings, topic, producer, handler, lambda: handled)
        [(raw, _)] = await _dead_letters(common_settings, topic + ".dlq", 1)
    finally:
        await producer.stop()
    assert handled == [b'{"after": 1}']
    assert len(raw) <= DLQ_MAX_VALUE_BYTES
    letter = orjson.loads(raw)
    assert letter["truncated"] is True
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        topic,
        metadata.partition,
        metadata.offset,
    )
    assert letter["value_bytes"] == len(poison)
    assert letter["value_encoding"] == "base64"
    kept = base64.b64decode(letter["value"])
    assert len(kept) > 600_000
    assert poison.startswith(kept)
    assert letter["reason"].startswith("not JSON: ")
    assert len(letter["reason"]) < 5_000


async def test_a_lone_poison_record_is_dead_lettered(common_settings: CommonSettings) -> None:
    topic = common_settings.topic(unique("lone"))
    await ensure_topics(common_settings.kafka_bootstrap, [topic], partitions=1)
    producer = make_producer(common_settings.kafka_bootstrap)
    await producer.start()
    calls: list[int] = []

    async def handler(records: Sequence[Record]) -> Sequence[DeadLetter]:
        calls.append(len(records))
        raise ValueError("cannot process this one")

    try:
        await (await producer.send(topic, b"only", key=b"k"))
        letters: list[tuple[bytes, Any]] = []

        async def dead_lettered() -> list[tuple[bytes, Any]]:
            letters.extend(await _dead_letters(common_settings, topic + ".dlq", 1))
            return letters

        consume = asyncio.create_task(
            _consume(common_settings, topic, producer, handler, lambda: letters)
        )
        await dead_lettered()
        await consume
    finally:
        await producer.stop()
    [(raw, _)] = letters
    letter = orjson.loads(raw)
    assert letter["value"] == "only"
    assert "ValueError: cannot process this one" in letter["reason"]

"""tools.replay_dlq against the real broker: real dead letters go back to their topic."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka import BatchConsumer, DeadLetter, Record, ensure_topics, make_producer
from shared.settings import CommonSettings
from tests.conftest import unique
from tests.support import eventually
from tools.replay_dlq import replay, topic_partitions

POISON = {b"k1": b'{"n": 1, "poison": true}', b"k3": b"\xff\x00 not utf-8"}


async def _records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) on ``topic`` now, read from the start."""
    parts = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[tuple[bytes | None, bytes | None]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 20)
            out += [(r.key, r.value) for rs in batches.values() for r in rs]
        return out
    finally:
        await consumer.stop()


async def test_replay_republishes_dead_letters_once_bounded_and_dry_run_sends_nothing(
    common_settings: CommonSettings,
) -> None:
    bootstrap = common_settings.kafka_bootstrap
    topic = common_settings.topic(unique("replay"))
    dlq = topic + ".dlq"
    await ensure_topics(bootstrap, [topic], partitions=2)
    producer = make_producer(bootstrap)
    await producer.start()
    handled: list[bytes] = []

    async def handler(records: Sequence[Record]) -> Sequence[DeadLetter]:
        dead = []
        for record in records:
            if record.key in POISON:
                dead.append(DeadLetter(record, "poison for this test"))
            else:
                handled.append(record.key)
        return dead

    consumer = BatchConsumer(
        bootstrap=bootstrap, topic=topic, group_id=unique("g"), handler=handler, producer=producer
    )
    try:
        for key, value in [(b"k1", POISON[b"k1"]), (b"k2", b'{"n": 2}'), (b"k3", POISON[b"k3"])]:
            await (await producer.send(topic, value, key=key))
        # Something on the dead-letter topic that is not a dead letter: skipped, not sent.
        await (await producer.send(dlq, b"not a dead letter", key=b"k9"))
        await consumer.start()
        runner = asyncio.create_task(consumer.run())
        await eventually(lambda: _records(bootstrap, dlq), lambda rs: len(rs) == 3)
        await consumer.stop()
        await runner
    finally:
        await consumer.close()
        await producer.stop()
    assert handled == [b"k2"]

    dry = await replay(bootstrap, dlq, limit=100, dry_run=True)
    assert (dry.replayed, dry.skipped) == (2, 1)
    assert {line["action"] for line in dry.lines} == {"would replay", "skipped"}
    assert len(await _records(bootstrap, topic)) == 3  # nothing sent

    first = await replay(bootstrap, dlq, limit=1, dry_run=False)
    assert len(first.lines) == 1
    rest = await replay(bootstrap, dlq, limit=100, dry_run=False)
    again = await replay(bootstrap, dlq, limit=100, dry_run=False)
    assert first.replayed + rest.replayed == 2
    assert first.skipped + rest.skipped == 1
    assert again.lines == []  # offsets were committed: nothing is replayed twice

    on_topic = await _records(bootstrap, topic)
    assert len(on_topic) == 5
    replayed = [kv for kv in on_topic if kv[0] in POISON]
    assert sorted(replayed) == sorted(list(POISON.items()) * 2)
    letters = [orjson.loads(v or b"") for k, v in await _records(bootstrap, dlq) if k in POISON]
    assert {letter.get("value_encoding") for letter in letters} == {None, "base64"}

"""Replays a dead-letter topic: republishes each message's original key and value.

``python -m tools.replay_dlq orders.lifecycle.dlq [--max 1000] [--dry-run]``

A dead letter (``shared.kafka.dead_letter_value``) holds the original topic, key and value
and the reason it failed. This tool reads ``<topic>.dlq`` from where its consumer group
(``<topic>.dlq.replay``) last stopped, up to the end the topic had when it started and at
most ``--max`` messages, and sends each original value with its original key (the dead
letter's own Kafka key, byte for byte) back to the original topic, where the service's
consumer takes it again. Offsets are committed only after the broker acknowledged the
republished messages, so a replay that dies is repeated, never skipped; the consumers are
idempotent, so a message replayed twice records nothing twice. ``--dry-run`` prints what
it would replay and neither sends nor commits.

Fix the cause first (a consumer bug, a bad producer): a message that is still poison goes
back to the dead-letter topic.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.events import DLQ_SUFFIX
from shared.kafka import make_producer


@dataclass(frozen=True)
class Replay:
    """One dead letter and what to send for it (``target`` None: it cannot be replayed)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    target: str | None
    reason: str


@dataclass
class Summary:
    replayed: int = 0
    skipped: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)


def parse_dead_letter(
    dlq_topic: str, partition: int, offset: int, key: bytes | None, raw: bytes | None
) -> Replay:
    """What to republish for one dead letter; ``target`` is None if it is not one."""
    original = dlq_topic.removesuffix(DLQ_SUFFIX)

    def skip(why: str) -> Replay:
        return Replay(partition, offset, key, b"", None, why)

    try:
        body = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return skip("not a dead letter: not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("value"), str):
        return skip("not a dead letter: no 'value'")
    if body.get("topic") != original:
        return skip(f"dead letter of topic {body.get('topic')!r}, not {original!r}")
    if body.get("truncated"):
        return skip(
            f"truncated dead letter: the original is {original} partition "
            f"{body.get('partition')} offset {body.get('offset')}"
        )
    value: str = body["value"]
    if body.get("value_encoding") == "base64":
        try:
            data = base64.b64decode(value, validate=True)
        except binascii.Error:
            return skip("not a dead letter: 'value' is not base64")
    else:
        data = value.encode()
    return Replay(partition, offset, key, data, original, str(body.get("reason", "")))


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of ``topic`` (empty if it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        p["partition"] for t in described if t["error_code"] == 0 for p in t["partitions"]
    )


async def replay(
    bootstrap: str, dlq_topic: str, *, limit: int, dry_run: bool, poll_ms: int = 1000
) -> Summary:
    """Replays up to ``limit`` dead letters of ``dlq_topic`` (see the module docstring)."""
    if not dlq_topic.endswith(DLQ_SUFFIX):
        raise ValueError(f"{dlq_topic!r} is not a dead-letter topic (no {DLQ_SUFFIX!r})")
    partitions = await topic_partitions(bootstrap, dlq_topic)
    if not partitions:
        raise ValueError(f"topic {dlq_topic!r} does not exist")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=dlq_topic + ".replay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = make_producer(bootstrap)
    summary = Summary()
    await consumer.start()
    try:
        assigned = [TopicPartition(dlq_topic, p) for p in partitions]
        consumer.assign(assigned)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(assigned)
        pending = {tp for tp in assigned if await consumer.position(tp) < ends[tp]}
        todo: list[Replay] = []
        last: dict[TopicPartition, int] = {}
        while pending and len(todo) < limit:
            batches = await consumer.getmany(*pending, timeout_ms=poll_ms)
            if not batches:
                break
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp] or len(todo) >= limit:
                        pending.discard(tp)
                        break
                    todo.append(
                        parse_dead_letter(
                            dlq_topic, tp.partition, record.offset, record.key, record.value
                        )
                    )
                    last[tp] = record.offset
                if last.get(tp, -1) + 1 >= ends[tp]:
                    pending.discard(tp)
        if not dry_run and todo:
            await producer.start()
            sends = [
                await producer.send(r.target, r.value, key=r.key)
                for r in todo
                if r.target is not None
            ]
            await asyncio.gather(*sends)
            await consumer.commit({tp: offset + 1 for tp, offset in last.items()})
        for r in todo:
            if r.target is None:
                summary.skipped += 1
                action = "skipped"
            else:
                summary.replayed += 1
                action = "would replay" if dry_run else "replayed"
            summary.lines.append(
                {
                    "action": action,
                    "partition": r.partition,
                    "offset": r.offset,
                    "key": r.key.decode("utf-8", "replace") if r.key is not None else None,
                    "to": r.target,
                    "reason": r.reason,
                }
            )
    finally:
        await producer.stop()
        await consumer.stop()
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dlq_topic", help="the dead-letter topic, e.g. orders.lifecycle.dlq")
    parser.add_argument("--max", type=int, default=1000, help="replay at most N messages")
    parser.add_argument(
        "--dry-run", action="store_true", help="print only: send nothing, commit nothing"
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("GFG_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="Kafka bootstrap servers (default: $GFG_KAFKA_BOOTSTRAP or 127.0.0.1:9092)",
    )
    args = parser.parse_args(argv)
    if args.max < 1:
        parser.error("--max must be at least 1")
    return args


async def main(args: argparse.Namespace) -> int:
    try:
        summary = await replay(args.bootstrap, args.dlq_topic, limit=args.max, dry_run=args.dry_run)
    except ValueError as exc:
        print(f"replay_dlq: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines:
        print(orjson.dumps(line).decode())
    verb = "would replay" if args.dry_run else "replayed"
    print(f"replay_dlq: {verb} {summary.replayed}, skipped {summary.skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

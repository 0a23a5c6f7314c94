"""A donations consumer (the service's BatchConsumer + LedgerHandler) in a process of its
own, for tests that run several in one group and kill one with SIGKILL:

    python -m tests.integration.donations.consumer_process <topic> <group> <max_records>

Settings (databases, topic prefix) come from the environment, as in the tests. Prints
``applied <records>`` after each batch's transaction, so a test can tell who did what.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from services.donations.config import Settings
from services.donations.consumer import LedgerHandler
from shared.db import create_pool, is_transient
from shared.events import TOPIC_LEDGER
from shared.kafka import BatchConsumer, DeadLetter, Record, make_producer


class Announcing:
    """The LedgerHandler, printing each applied batch's size."""

    def __init__(self, handler: LedgerHandler) -> None:
        self._handler = handler

    def prepare(self, records: Sequence[Record]) -> Any:
        return len(records), self._handler.prepare(records)

    async def apply(self, prepared: Any) -> Sequence[DeadLetter]:
        count, batch = prepared
        dead = await self._handler.apply(batch)
        print(f"applied {count}", flush=True)  # noqa: T201 - the test reads it
        return dead


async def main(topic: str, group: str, max_records: int) -> None:
    settings = Settings()
    pool = await create_pool(settings.dsn(settings.donations_db), min_size=1, max_size=2)
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    consumer = BatchConsumer(
        bootstrap=settings.kafka_bootstrap,
        topic=topic,
        group_id=group,
        handler=Announcing(LedgerHandler(pool, settings.topic(TOPIC_LEDGER))),
        producer=producer,
        max_records=max_records,
        partitions=4,
        handler_is_transient=is_transient,
    )
    await consumer.start()
    try:
        await consumer.run()
    finally:
        await consumer.close()
        await producer.stop()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))

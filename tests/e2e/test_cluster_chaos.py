"""Broker and consumer faults on a three-broker cluster while orders stream.

A private Kafka cluster (three KRaft nodes, replication 3, ``min.insync.replicas`` 2,
unclean leader election off) and a private PostgreSQL cluster (tests/servers.py), one
orders process, two donations and two charities processes (each group shares the
partitions of its topic), every one given all three bootstrap addresses. While the
simulator streams orders at ``RATE``:

1. the broker that leads the most partitions of ``orders.lifecycle`` is killed with
   SIGKILL and kept down for ``DOWN_SECONDS``: the other two stay in sync, so acks=all
   writes go on (the topic grows while it is down);
2. meanwhile one donations and one charities process are killed with SIGKILL: their
   groups shrink to the survivor, which takes over their partitions;
3. the broker comes back; then each broker in turn is stopped and started again (a
   rolling restart), the next only once no partition is under-replicated.

Afterwards the pipeline must drain to the simulator's independently computed totals, the
reconciliation of orders, ledger and totals must be clean (nothing lost, nothing doubled)
and so must the audit of the donations log against its rows and the totals.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.db import connect
from shared.events import TOPIC_ORDERS
from tests.e2e.conftest import ROOT, start_service, wait_ready
from tests.servers import PrivateServers, start_private_servers
from tests.support import eventually, free_port, report
from tools import audit, reconcile, simulate

RATE = 20.0  # orders per second
ORDERS = 2400  # at RATE: about 120 s of traffic, about as long as the faults take
DOWN_SECONDS = 15  # how long the killed leader stays down once it is out of every ISR
START_SECONDS = 180  # each service process, on a machine loaded by the brokers and more
TEST_SECONDS = 900  # the whole run, drain included (a loaded machine is far slower)
NODES = 3
SERVICES = ("orders", "donations", "charities")
# (process name, service): the second of each consumer group is the one killed.
PROCESSES = (
    ("orders", "orders"),
    ("donations-1", "donations"),
    ("donations-2", "donations"),
    ("charities-1", "charities"),
    ("charities-2", "charities"),
)
KILLED = ("donations-2", "charities-2")
CLIENT_ERRORS = (KafkaError, OSError, TimeoutError)
T = TypeVar("T")


async def unless_unreachable(probe: Awaitable[T]) -> T | None:
    """``probe``'s result, or None when the cluster cannot answer it (a broker down or
    restarting, a leader election under way). aiokafka may then also let out a
    CancelledError of its own, which must not end the caller: only a cancellation of the
    caller's task is passed on."""
    try:
        return await probe
    except CLIENT_ERRORS:
        return None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return None


@pytest.fixture
async def cluster_servers() -> AsyncIterator[PrivateServers]:
    databases = [os.environ[f"GFG_{name.upper()}_DB"] for name in SERVICES]
    async with start_private_servers(databases, kafka_nodes=NODES) as private:
        yield private


async def describe(bootstrap: str, topics: list[str] | None = None) -> list[Any] | None:
    """The topics' metadata (partitions with leader, replicas, isr)."""

    async def probe() -> list[Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
        try:
            await admin.start()
            described: list[Any] = await admin.describe_topics(topics)
            return described
        finally:
            await admin.close()

    return await unless_unreachable(probe())


async def under_replicated(bootstrap: str) -> int | None:
    """Partitions (of every topic, internal ones included) without a leader or with
    fewer in-sync replicas than replicas; None while the cluster cannot answer."""
    topics = await describe(bootstrap)
    if topics is None or any(t["error_code"] for t in topics):
        return None
    return sum(
        1
        for t in topics
        for p in t["partitions"]
        if p["leader"] < 0 or len(p["isr"]) < len(p["replicas"])
    )


async def leaders(bootstrap: str, topic: str) -> Counter[int] | None:
    """How many partitions of ``topic`` each broker leads."""
    described = await describe(bootstrap, [topic])
    if described is None or described[0]["error_code"]:
        return None
    return Counter(p["leader"] for p in described[0]["partitions"])


async def isr_sizes(bootstrap: str, topic: str) -> list[tuple[int, list[int]]] | None:
    described = await describe(bootstrap, [topic])
    if described is None or described[0]["error_code"]:
        return None
    return [(p["leader"], sorted(p["isr"])) for p in described[0]["partitions"]]


async def records_on(bootstrap: str, topic: str, partitions: int) -> int | None:
    """The sum of the end offsets of ``topic``'s partitions: it grows with every write."""

    async def probe() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
        try:
            await consumer.start()
            assigned = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(assigned)  # which also fetches the topic's metadata
            ends = await consumer.end_offsets(assigned)
            return int(sum(ends.values()))
        finally:
            await consumer.stop()

    return await unless_unreachable(probe())


async def group_members(bootstrap: str, group: str) -> tuple[str, int] | None:
    """(state, number of members) of a consumer group."""

    async def probe() -> tuple[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
        try:
            await admin.start()
            [response] = await admin.describe_consumer_groups([group])
            # each group: (error, group_id, state, protocol type, protocol, members)
            described = response.groups[0]
            return str(described[2]), len(described[5])
        finally:
            await admin.close()

    return await unless_unreachable(probe())


def kill_broker(servers: PrivateServers, node: int) -> int:
    """SIGKILL to the JVM of private node ``node`` (checked to be that node's) ; its pid."""
    pid = servers.broker_pid(node)
    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert f"{servers.folder}/kafka/node{node}/server.properties" in command, command
    os.kill(pid, signal.SIGKILL)
    return pid


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not yet reaped by init has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def audit_findings(servers: PrivateServers, dbs: dict[str, str]) -> list[str]:
    conn = await connect(servers.settings.dsn(dbs["donations"]))
    charities = await connect(servers.settings.dsn(dbs["charities"]))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            findings, counts = await audit.audit(conn, charities)
    finally:
        await conn.close()
        await charities.close()
    return findings if counts["leaves"] > 0 else ["the donations log is empty", *findings]


@pytest.mark.slow
async def test_the_pipeline_stays_exact_through_broker_and_consumer_faults(
    cluster_servers: PrivateServers,
) -> None:
    servers = cluster_servers
    bootstrap = servers.settings.kafka_bootstrap
    assert len(bootstrap.split(",")) == NODES  # every service is given every broker
    prefix = os.environ["GFG_TOPIC_PREFIX"]
    orders_topic = prefix + TOPIC_ORDERS
    partitions = servers.settings.topic_partitions
    groups = {"donations": prefix + "donations", "charities": prefix + "charities"}
    dbs = {s: os.environ[f"GFG_{s.upper()}_DB"] for s in SERVICES}

    ports = {name: free_port() for name, _ in PROCESSES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = dict(
        servers.env,
        GFG_CHARITIES_URL=urls["charities-1"],
        GFG_DONATIONS_URL=urls["donations-1"],
    )
    assert env["GFG_KAFKA_BOOTSTRAP"] == bootstrap
    log_dir = ROOT / "test-artifacts" / "cluster-chaos-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    faults: list[tuple[float, str]] = []
    started = time.monotonic()
    stream_ended: list[float] = []
    injected: list[bool] = []  # set once every fault has been injected
    takeover: list[asyncio.Task[None]] = []

    sim: simulate.Simulation | None = None

    def fault(what: str) -> None:
        streamed = 0
        if sim is not None:
            streamed = sim.progress()[0]
        faults.append((time.monotonic() - started, f"{what} [{streamed} orders streamed]"))

    async def one_broker_down() -> None:
        counts = await eventually(lambda: leaders(bootstrap, orders_topic), bool, within=30)
        assert counts is not None
        node, led = counts.most_common(1)[0]
        pid = kill_broker(servers, node)
        fault(f"kill -9 broker {node} (leader of {led}/{sum(counts.values())} partitions)")
        await eventually(lambda: asyncio.to_thread(gone, pid), bool, within=10)
        # Out of every in-sync set once the controller has fenced it; two remain in sync.
        isr = await eventually(
            lambda: isr_sizes(bootstrap, orders_topic),
            lambda s: s is not None and all(len(i) == 2 and node not in i for _, i in s),
            within=60,
        )
        assert all(leader != node for leader, _ in isr or [])
        written = await eventually(
            lambda: records_on(bootstrap, orders_topic, partitions), bool, within=30
        )
        await asyncio.sleep(DOWN_SECONDS / 3)
        for name in KILLED:  # mid-stream, with a broker down
            processes[name].send_signal(signal.SIGKILL)
            await asyncio.to_thread(processes[name].wait)
            fault(f"kill -9 {name}")
        takeover.append(asyncio.create_task(survivors_take_over()))
        await asyncio.sleep(2 * DOWN_SECONDS / 3)
        # acks=all writes went on with two replicas in sync
        later = await eventually(
            lambda: records_on(bootstrap, orders_topic, partitions),
            lambda n: n is not None and n > (written or 0),
            within=30,
        )
        fault(f"{(later or 0) - (written or 0)} records written with broker {node} down")
        await servers.kafka("start", node)
        await eventually(lambda: under_replicated(bootstrap), lambda n: n == 0, within=90)
        fault(f"broker {node} back, no partition under-replicated")

    async def survivors_take_over() -> None:
        for service, group in groups.items():
            state = await eventually(
                partial(group_members, bootstrap, group), lambda m: m == ("Stable", 1), within=90
            )
            fault(f"{service} group {state}: the survivor holds every partition")

    async def rolling_restart() -> None:
        for node in range(1, NODES + 1):
            await servers.kafka("stop", node)
            await servers.kafka("start", node)
            await eventually(lambda: under_replicated(bootstrap), lambda n: n == 0, within=90)
            fault(f"rolling restart: broker {node} restarted, no partition under-replicated")

    async def streaming(sim: simulate.Simulation) -> None:
        await sim.stream()
        stream_ended.append(time.monotonic() - started)

    async def inject() -> None:
        for group in groups.values():  # both members hold partitions at first
            await eventually(
                partial(group_members, bootstrap, group), lambda m: m == ("Stable", 2), within=90
            )
        await asyncio.sleep(3)
        await one_broker_down()
        await rolling_restart()
        await takeover[0]
        injected.append(True)

    try:
        async with asyncio.timeout(TEST_SECONDS):
            for batch in (PROCESSES[:1], PROCESSES[1::2], PROCESSES[2::2]):
                # A few at a time: the first of each service migrates its database.
                for name, service in batch:
                    (log_dir / name).mkdir(exist_ok=True)
                    processes[name] = start_service(service, ports[name], env, log_dir / name)
                for name, _ in batch:
                    await wait_ready(urls[name], processes[name], name, within=START_SECONDS)
            args = simulate.parse_args(
                [
                    "--orders", str(ORDERS), "--rate", str(RATE), "--sellers", "30",
                    "--concurrency", "8", "--quiet", "--drain-timeout", "180",
                    "--orders-url", urls["orders"], "--donations-url", urls["donations-1"],
                    "--charities-url", urls["charities-1"],
                ]
            )  # fmt: skip
            sim = simulate.Simulation(args, os.environ["GFG_JWT_SECRET"])
            try:
                await sim.setup()
                started = time.monotonic()
                async with asyncio.TaskGroup() as faults_under_load:  # either fails: both stop
                    faults_under_load.create_task(streaming(sim))
                    faults_under_load.create_task(inject())
                assert injected, "the fault injection ended early (cancelled)"
                totals_ok = await sim.verify()
            finally:
                await sim.client.aclose()
            drained = time.monotonic() - started

            run_prefix = f"sim-{sim.run_id}-"
            result = await eventually(
                lambda: reconcile.reconcile(servers.settings, dbs, run_prefix),
                lambda r: not r.differences,
                within=120,
                interval=1,
            )
            findings = await eventually(
                lambda: audit_findings(servers, dbs), lambda f: f == [], within=60, interval=1
            )
        orders = sim.counts["orders"]
        report(
            f"cluster chaos: {NODES} brokers, {orders} orders in {stream_ended[0]:.0f} s"
            f" ({orders / stream_ended[0]:.1f}/s, target {RATE:.0f}/s), drained at"
            f" {drained:.0f} s, {result.ledger_entries} ledger entries,"
            f" {len(result.differences)} differences, audit {len(findings)} findings;"
            f" client retries: {sim.counts['retries_transport']} transport,"
            f" {sim.counts['retries_5xx']} 5xx"
        )
        assert totals_ok, "charities totals differ from the simulator's independent totals"
        assert result.differences == [], result.differences[:20]
        assert findings == []
        assert result.orders > ORDERS // 2
        # The broker and the consumer processes were killed while orders streamed.
        kills = [at for at, what in faults if what.startswith("kill -9")]
        assert len(kills) == 1 + len(KILLED)
        assert max(kills) < stream_ended[0], (faults, stream_ended)
        assert len(faults) == 3 + len(KILLED) + len(groups) + NODES
    finally:
        for at, what in faults:  # also when the run failed: how far it got
            report(f"cluster chaos: {at:6.1f} s  {what}")
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)

"""Private Kafka brokers and PostgreSQL clusters, for tests that stop and start servers.

Each is started by deploy/kafka/kafka.sh or deploy/postgres/pg.sh on free ports with its
data in a folder under test-artifacts/, and stopped and removed afterwards (logs kept in
test-artifacts/private-logs/). Every script call names the private folder, so no test
can stop the servers the rest of the suite and ``make run`` use.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.settings import CommonSettings
from tests.support import free_port

ROOT = Path(__file__).parents[1]
SCRIPT_SECONDS = 120  # each kafka.sh / pg.sh call (per node); they give up after 60 s themselves
KAFKA_SH = "deploy/kafka/kafka.sh"
PG_SH = "deploy/postgres/pg.sh"


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


async def run_script(folder: Path, env: dict[str, str], *args: str) -> None:
    # The data folder of every call is the private one, so no call can reach a shared server.
    for name in ("GFG_KAFKA_VAR", "GFG_PG_VAR"):
        assert env[name].startswith(str(folder)), f"{name} outside {folder}"
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    nodes = int(env["GFG_KAFKA_NODES"]) if args[0] == KAFKA_SH else 1
    try:  # a cluster's nodes are formatted and started one after the other
        output, _ = await asyncio.wait_for(process.communicate(), SCRIPT_SECONDS * nodes)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"{' '.join(args)} failed: {output.decode()}"


@dataclass(frozen=True)
class PrivateKafka:
    """One broker, or a cluster of ``nodes`` brokers (replication 3, min ISR 2 from three)."""

    folder: Path
    nodes: int
    ports: Sequence[int]
    env: dict[str, str]  # for kafka.sh and for processes that should use these brokers

    @property
    def bootstrap(self) -> str:
        return self.env["GFG_KAFKA_BOOTSTRAP"]

    @property
    def replication_factor(self) -> int:
        return int(self.env["GFG_KAFKA_REPLICATION_FACTOR"])

    @property
    def min_insync(self) -> int:
        return int(self.env["GFG_KAFKA_MIN_INSYNC"])

    async def run(self, action: str, node: int | None = None) -> None:
        """``kafka.sh start|stop|status`` on every node, or on ``node`` (1..nodes) only."""
        await run_script(self.folder, self.env, KAFKA_SH, action, *([str(node)] if node else []))

    async def start(self, node: int | None = None) -> None:
        await self.run("start", node)

    async def stop(self, node: int | None = None) -> None:
        """Stops the node(s) and waits until their JVMs have exited."""
        await self.run("stop", node)


def kafka_env(folder: Path, nodes: int) -> dict[str, str]:
    ports = free_ports(2 * nodes)
    brokers, controllers = ports[:nodes], ports[nodes:]
    replication = min(nodes, 3)
    return dict(
        os.environ,
        GFG_KAFKA_NODES=str(nodes),
        GFG_KAFKA_VAR=str(folder / "kafka"),
        GFG_KAFKA_PORT=str(brokers[0]),
        GFG_KAFKA_CONTROLLER_PORT=str(controllers[0]),
        GFG_KAFKA_PORTS=" ".join(map(str, brokers)),
        GFG_KAFKA_CONTROLLER_PORTS=" ".join(map(str, controllers)),
        GFG_KAFKA_BOOTSTRAP=",".join(f"127.0.0.1:{port}" for port in brokers),
        GFG_KAFKA_REPLICATION_FACTOR=str(replication),
        GFG_KAFKA_MIN_INSYNC=str(max(1, replication - 1)),
        GFG_PG_VAR=str(folder / "pg"),  # unused here; keeps run_script's check uniform
    )


@asynccontextmanager
async def start_private_kafka(nodes: int = 1) -> AsyncIterator[PrivateKafka]:
    """A started private broker (``nodes`` 1) or cluster; stopped and removed at exit."""
    folder = make_folder("kafka")
    env = kafka_env(folder, nodes)
    ports = [int(port) for port in env["GFG_KAFKA_PORTS"].split()]
    kafka = PrivateKafka(folder, nodes, ports, env)
    try:
        await kafka.start()
        yield kafka
    finally:
        try:
            await kafka.stop()
        finally:
            keep_logs_and_remove(folder)


@dataclass(frozen=True)
class PrivateServers:
    """A Kafka broker (or cluster) and a PostgreSQL cluster that only one test uses."""

    folder: Path
    env: dict[str, str]  # for the scripts and the service processes
    settings: CommonSettings

    async def kafka(self, action: str, node: int | None = None) -> None:
        """``kafka.sh start|stop|status`` on every node, or on ``node`` (1..nodes) only."""
        await run_script(self.folder, self.env, KAFKA_SH, action, *([str(node)] if node else []))

    def broker_pid(self, node: int = 1) -> int:
        """The JVM of node ``node``, as kafka.sh recorded it when it started it."""
        cluster = self.env["GFG_KAFKA_NODES"] != "1"
        folder = self.folder / "kafka" / (f"node{node}" if cluster else "")
        return int((folder / "kafka.pid").read_text())

    async def postgres(self, action: str) -> None:
        await run_script(self.folder, self.env, PG_SH, action)


@asynccontextmanager
async def start_private_servers(
    databases: Sequence[str], kafka_nodes: int = 1
) -> AsyncIterator[PrivateServers]:
    """A started private broker (or cluster of ``kafka_nodes``) and PostgreSQL cluster (with
    ``databases``); removed at exit."""
    folder = make_folder("servers")
    (pg_port,) = free_ports(1)
    env = dict(
        kafka_env(folder, kafka_nodes),
        GFG_PG_VAR=str(folder / "pg"),
        GFG_PG_PORT=str(pg_port),
        GFG_PG_DATABASES=" ".join(databases),
    )
    settings = CommonSettings(
        pg_port=pg_port,
        kafka_bootstrap=env["GFG_KAFKA_BOOTSTRAP"],
        kafka_replication_factor=int(env["GFG_KAFKA_REPLICATION_FACTOR"]),
        kafka_min_insync=int(env["GFG_KAFKA_MIN_INSYNC"]),
    )
    servers = PrivateServers(folder, env, settings)
    try:
        await servers.postgres("start")
        await servers.kafka("start")
        yield servers
    finally:
        try:
            await servers.kafka("stop")
        finally:
            try:
                await servers.postgres("stop")
            finally:
                keep_logs_and_remove(folder)


def make_folder(kind: str) -> Path:
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"private-{kind}-", dir=artifacts))
    folder.chmod(0o755)  # a PostgreSQL cluster runs as the OS user gfg, who must enter it
    return folder


def keep_logs_and_remove(folder: Path) -> None:
    logs = folder.parent / "private-logs"
    logs.mkdir(exist_ok=True)
    pg = (folder / "pg").resolve()  # somewhere in /var/tmp if gfg could not enter folder
    kafka_logs = [folder / "kafka" / "kafka.log", *sorted(folder.glob("kafka/node*/kafka.log"))]
    for log in [*kafka_logs, pg / "postgres.log"]:
        if log.exists():
            node = log.parent.name if log.parent.name.startswith("node") else ""
            shutil.copyfile(log, logs / f"{folder.name}-{node}{log.name}")
    if pg != folder / "pg":
        shutil.rmtree(pg, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)

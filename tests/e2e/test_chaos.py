"""Faults while orders stream: kill -9 each service, restart Kafka, restart PostgreSQL.

Bounded: a fixed number of orders at a fixed rate (about 40 s of traffic), five faults,
then the pipeline must drain to totals that equal the independently computed ones and a
clean reconciliation: no donation lost, none doubled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest

from shared.settings import CommonSettings
from tests.e2e.conftest import ROOT, start_service, wait_ready
from tests.support import free_port, report
from tools import reconcile, simulate

ORDERS = 2400
RATE = 60.0  # orders per second


async def run_script(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(*command, cwd=ROOT)
    assert await process.wait() == 0, f"{command} failed"


@pytest.mark.slow
async def test_the_pipeline_stays_exact_through_crashes_and_restarts(
    common_settings: CommonSettings,
) -> None:
    ports = {name: free_port() for name in ("orders", "donations", "charities")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = dict(os.environ, GFG_CHARITIES_URL=urls["charities"])
    log_dir = ROOT / "test-artifacts" / "chaos-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen[bytes]] = {
        name: start_service(name, port, env, log_dir) for name, port in ports.items()
    }
    faults: list[str] = []

    async def restart(name: str) -> None:
        processes[name].send_signal(signal.SIGKILL)
        await asyncio.to_thread(processes[name].wait)
        processes[name] = start_service(name, ports[name], env, log_dir)
        faults.append(f"kill -9 {name}")
        await wait_ready(urls[name], processes[name], name)

    async def inject() -> None:
        await asyncio.sleep(4)
        for name in ("orders", "donations", "charities"):
            await restart(name)
            await asyncio.sleep(4)
        await run_script("deploy/kafka/kafka.sh", "stop")
        await asyncio.sleep(2)
        await run_script("deploy/kafka/kafka.sh", "start")
        faults.append("restart kafka")
        await asyncio.sleep(4)
        await run_script("deploy/postgres/pg.sh", "stop")
        await asyncio.sleep(2)
        await run_script("deploy/postgres/pg.sh", "start")
        faults.append("restart postgres")

    try:
        for name, process in processes.items():
            await wait_ready(urls[name], process, name)
        args = simulate.parse_args(
            [
                "--orders", str(ORDERS), "--rate", str(RATE), "--sellers", "30",
                "--concurrency", "8", "--quiet", "--drain-timeout", "180",
                "--orders-url", urls["orders"], "--donations-url", urls["donations"],
                "--charities-url", urls["charities"],
            ]
        )  # fmt: skip
        sim = simulate.Simulation(args, os.environ["GFG_JWT_SECRET"])
        started = time.monotonic()
        try:
            await sim.setup()
            injector = asyncio.create_task(inject())
            await sim.stream()
            await injector
            totals_ok = await sim.verify()
        finally:
            await sim.client.aclose()

        dbs = {s: os.environ[f"GFG_{s.upper()}_DB"] for s in ("orders", "donations", "charities")}
        prefix = f"sim-{sim.run_id}-"
        deadline = time.monotonic() + 120
        while True:
            result = await reconcile.reconcile(common_settings, dbs, prefix)
            if not result.differences or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        report(
            f"chaos: {sim.counts['orders']} orders, {len(faults)} faults ({', '.join(faults)}),"
            f" {result.ledger_entries} ledger entries, {len(result.differences)} differences,"
            f" {time.monotonic() - started:.0f} s; client retries: "
            f"{sim.counts['retries_transport']} transport, {sim.counts['retries_5xx']} 5xx"
        )
        report(
            "simulation: "
            + ", ".join(f"{k}={v}" for k, v in sorted(sim.counts.items()) if "retries" not in k)
            + f"; totals {'equal' if totals_ok else 'DIFFER from'} the independent totals"
        )
        assert len(faults) == 5
        assert totals_ok, "charities totals differ from the simulator's independent totals"
        assert result.differences == [], result.differences[:20]
        assert result.orders > ORDERS // 2
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
        # whatever happened above, leave the servers running for the rest of the suite
        await run_script("deploy/kafka/kafka.sh", "start")
        await run_script("deploy/postgres/pg.sh", "start")

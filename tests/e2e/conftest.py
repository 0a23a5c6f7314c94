"""The three services as real processes on free ports, sharing the test namespace."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import free_port

ROOT = Path(__file__).parents[2]
# A return window of seconds, so the simulations see their donations posted and disburse
# them. The grace covers the orders outbox relay's delay on a loaded machine (and, in the
# chaos test, the faults' outages), so a refund inside the window is never posted over.
SHORT_WINDOW = {
    "GFG_RETURN_WINDOW_S": "5",
    "GFG_POSTING_GRACE_S": "15",
    "GFG_POSTING_INTERVAL_S": "0.5",
}


@dataclass(frozen=True)
class Stack:
    orders: str
    donations: str
    charities: str
    traces: Path  # each service's spans, as <service>.jsonl (shared/tracing.py)


def start_service(
    name: str, port: int, env: dict[str, str], log_dir: Path
) -> subprocess.Popen[bytes]:
    with (log_dir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", f"services.{name}.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


async def wait_ready(
    url: str, process: subprocess.Popen[bytes], name: str, within: float = 60
) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see test-artifacts")
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{name} not ready within {within:.0f} s")


@pytest.fixture(scope="package")
def stack_processes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, dict[str, subprocess.Popen[bytes]]]]:
    ports = {name: free_port() for name in ("orders", "donations", "charities")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    traces = tmp_path_factory.mktemp("traces")
    env = SHORT_WINDOW | dict(os.environ)
    env |= {
        "GFG_CHARITIES_URL": urls["charities"],
        "GFG_DONATIONS_URL": urls["donations"],
        "GFG_LOG_JSON": "true",
        # Every trace sampled, spans in JSON-lines files, exported within 0.2 s.
        "GFG_TRACES_DIR": str(traces),
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_SAMPLER_ARG",
    ):
        env.pop(name, None)
    log_dir = ROOT / "test-artifacts" / "e2e-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = {name: start_service(name, ports[name], env, log_dir) for name in ports}
    try:
        yield Stack(**urls, traces=traces), processes
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="package")
async def stack(
    stack_processes: tuple[Stack, dict[str, subprocess.Popen[bytes]]],
) -> Stack:
    urls, processes = stack_processes
    for name, process in processes.items():
        await wait_ready(getattr(urls, name), process, name)
    return urls

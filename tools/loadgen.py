"""The simulator's sending engine: storefront calls from several processes at a target rate.

One Python process with a general-purpose client tops out far below what the orders API
takes (httpx spent most of the simulator's CPU on pool bookkeeping), so the parent plans
and the workers only send:

- The parent plans every order as a ``Script``: its calls to the single-order endpoints
  (create, complete, cancel, refunds, duplicate retries), with the request bodies already
  encoded, and the order's position ``n`` in the run.
- ``split`` gives all of one seller's scripts to one worker, in plan order, so the oracle's
  view of a seller (which order came first) is the order in which they were sent.
- Each worker is its own process (``spawn``): an aiohttp session with a bounded pool of
  keep-alive connections and ``concurrency`` orders in flight. An order's calls go one after
  the other; order ``n`` starts no earlier than ``start + n / rate``, so the rate is the
  target across all workers. Transport errors and 5xx are retried with a backoff, as a
  storefront does while a service restarts; any other unexpected status stops the run.
- A worker stamps ``placed_at`` and ``completed_at`` when it sends the order's first call
  (so rule changes made meanwhile land where they really happened) and returns only what
  it did: the timestamps, request and retry counts, and its CPU time. The parent's oracle
  uses those timestamps and nothing else from the workers.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.context
import multiprocessing.sharedctypes
import os
import queue
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from shared.auth import Role, issue_token

# Placeholder in an encoded body, replaced by the send time (an ISO timestamp).
NOW = "@now"
_NOW_JSON = b'"' + NOW.encode() + b'"'
ATTEMPTS = 60


@dataclass(frozen=True, slots=True)
class Call:
    """One request: ``path`` relative to the orders URL, ``body`` encoded JSON or None."""

    method: str
    path: str
    expect: tuple[int, ...]
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Script:
    """One order's calls, sent in sequence; ``n`` is its position in the whole run."""

    n: int
    seller_id: str
    order_id: str
    calls: tuple[Call, ...]


@dataclass(frozen=True)
class Config:
    orders_url: str
    secret: str
    rate: float  # orders/s across all workers; 0 = as fast as possible
    concurrency: int  # orders in flight per worker (and its connection limit)


@dataclass
class WorkerResult:
    placed_at: dict[str, str] = field(default_factory=dict)  # order_id -> ISO timestamp
    counts: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0  # from the common start: the sending, not the imports
    finished_at: float = 0.0  # time.monotonic(), comparable across processes on Linux
    error: str | None = None


@dataclass(frozen=True)
class Achieved:
    """What a run sent, over ``seconds`` of wall time from the common start."""

    orders: int
    requests: int
    seconds: float
    worker_cpu_seconds: float
    workers: int

    @property
    def orders_per_s(self) -> float:
        return self.orders / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.worker_cpu_seconds / self.requests if self.requests else 0.0

    def line(self) -> str:
        return (
            f"sent {self.orders} orders, {self.requests} requests in {self.seconds:.1f} s: "
            f"{self.orders_per_s:.0f} orders/s, {self.requests_per_s:.0f} requests/s achieved "
            f"({self.workers} workers, {self.cpu_ms_per_request:.3f} ms worker CPU per request)"
        )


def split(scripts: Sequence[Script], workers: int) -> list[list[Script]]:
    """The scripts in ``workers`` parts: each seller's in one part, in plan order; sellers
    are placed largest first on the part with the fewest scripts, so parts are balanced."""
    per_seller = Counter(s.seller_id for s in scripts)
    load = [0] * workers
    part_of: dict[str, int] = {}
    for seller, count in sorted(per_seller.items(), key=lambda item: (-item[1], item[0])):
        part = min(range(workers), key=lambda w: (load[w], w))
        part_of[seller] = part
        load[part] += count
    parts: list[list[Script]] = [[] for _ in range(workers)]
    for script in scripts:
        parts[part_of[script.seller_id]].append(script)
    return parts


def default_workers(rate: float) -> int:
    """Enough processes for the rate (one sends about 1,000 orders/s), at most 4."""
    cpus = os.cpu_count() or 1
    if rate <= 0:
        return max(2, min(4, cpus))
    return max(1, min(4, -(-int(rate) // 1000)))


class _Stop(Exception):
    """An unexpected answer: the run stops, and the parent reports it."""


class _Sender:
    def __init__(self, session: aiohttp.ClientSession, config: Config, result: WorkerResult):
        self.session = session
        self.config = config
        self.result = result
        self.tokens: dict[str, dict[str, str]] = {}

    def headers(self, seller_id: str) -> dict[str, str]:
        headers = self.tokens.get(seller_id)
        if headers is None:
            token = issue_token(self.config.secret, Role.STOREFRONT, [seller_id])
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            self.tokens[seller_id] = headers
        return headers

    async def call(self, call: Call, body: bytes | None, headers: dict[str, str]) -> None:
        counts = self.result.counts
        url = self.config.orders_url + call.path
        for attempt in range(ATTEMPTS):
            counts["requests"] += 1
            try:
                async with self.session.request(
                    call.method, url, data=body, headers=headers
                ) as response:
                    status = response.status
                    text = await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                counts["retries_transport"] += 1
                await asyncio.sleep(min(0.1 * (attempt + 1), 2.0))
                continue
            if status >= 500:
                counts["retries_5xx"] += 1
                await asyncio.sleep(min(0.1 * (attempt + 1), 2.0))
                continue
            if status not in call.expect:
                raise _Stop(f"{call.method} {url} -> {status}: {text.decode(errors='replace')}")
            return
        raise _Stop(f"{call.method} {url}: no answer after {ATTEMPTS} attempts")

    async def order(self, script: Script) -> None:
        now = datetime.now(UTC).isoformat()
        stamp = b'"' + now.encode() + b'"'
        headers = self.headers(script.seller_id)
        for call in script.calls:
            body = call.body
            if body is not None and _NOW_JSON in body:
                body = body.replace(_NOW_JSON, stamp)
            await self.call(call, body, headers)
            if not self.result.placed_at.get(script.order_id):
                self.result.placed_at[script.order_id] = now


async def _send(
    part: Sequence[Script],
    config: Config,
    start: float,
    on_order: Callable[[int], None],
    halted: Callable[[], bool],
) -> WorkerResult:
    result = WorkerResult()
    connector = aiohttp.TCPConnector(limit=config.concurrency, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as session:
        sender = _Sender(session, config, result)
        pending: Iterator[Script] = iter(part)
        rate = config.rate

        async def task() -> None:
            for script in pending:
                if halted():
                    return
                if rate > 0:
                    delay = start + script.n / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await sender.order(script)
                on_order(result.counts["requests"])

        tasks = [asyncio.create_task(task()) for _ in range(config.concurrency)]
        try:
            await asyncio.gather(*tasks)
        except _Stop as stop:
            result.error = str(stop)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    result.finished_at = time.monotonic()
    return result


def _worker(
    index: int,
    part: list[Script],
    config: Config,
    progress: Any,  # multiprocessing Array('q'): per worker (orders, requests), then halt
    start: Any,  # multiprocessing Value('d'): the common start, set when all are ready
    go: Any,  # multiprocessing Event
    results: multiprocessing.Queue[tuple[int, WorkerResult]],
) -> None:
    results.put((index, WorkerResult()))  # ready
    go.wait()
    before = resource.getrusage(resource.RUSAGE_SELF)
    done = 0
    halt_slot = len(progress) - 1

    def on_order(requests: int) -> None:
        nonlocal done
        done += 1
        progress[2 * index] = done
        progress[2 * index + 1] = requests

    try:
        import uvloop

        result = uvloop.run(
            _send(part, config, start.value, on_order, lambda: progress[halt_slot] != 0)
        )
    except Exception as error:  # reported to the parent, which exits 1
        result = WorkerResult(error=f"{type(error).__name__}: {error}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    results.put((index, result))


class Engine:
    """Runs the scripts in worker processes; ``progress()`` may be read while it runs."""

    def __init__(self, scripts: Sequence[Script], config: Config, workers: int) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.parts = split(scripts, workers)
        self.config = config
        # Per worker (orders, requests) sent so far; the last slot asks the workers to halt.
        self.progress_array = self.context.Array("q", 2 * workers + 1, lock=False)
        self.started = 0.0

    def progress(self) -> tuple[int, int]:
        """(orders, requests) sent so far, across all workers."""
        values = list(self.progress_array)[:-1]
        return sum(values[0::2]), sum(values[1::2])

    def halt(self) -> None:
        """Workers start no further order; those in flight finish."""
        self.progress_array[len(self.progress_array) - 1] = 1

    async def run(
        self, report: Callable[[int, int, float], Awaitable[None] | None] | None = None
    ) -> tuple[Achieved, list[WorkerResult]]:
        """Sends everything; ``report(orders, requests, seconds)`` about once a second."""
        ctx = self.context
        results: multiprocessing.Queue[tuple[int, WorkerResult]] = ctx.Queue()
        start = ctx.Value("d", 0.0, lock=False)
        go = ctx.Event()
        processes = [
            ctx.Process(
                target=_worker,
                args=(i, part, self.config, self.progress_array, start, go, results),
                name=f"loadgen-{i}",
                daemon=True,
            )
            for i, part in enumerate(self.parts)
        ]
        for process in processes:
            process.start()
        try:
            for _ in processes:  # every worker has imported and is ready
                await self._get(results, processes)
            start.value = self.started = time.monotonic() + 0.05
            go.set()
            done: dict[int, WorkerResult] = {}
            while len(done) < len(processes):
                got = await self._get(results, processes, wait_s=1.0)
                if got is not None:
                    done[got[0]] = got[1]
                elif report is not None:
                    orders, requests = self.progress()
                    maybe = report(orders, requests, time.monotonic() - self.started)
                    if maybe is not None:
                        await maybe
        finally:
            for process in processes:
                await asyncio.to_thread(process.join, 5)
                if process.is_alive():
                    process.kill()
        ordered = [done[i] for i in range(len(processes))]
        finished = max((r.finished_at for r in ordered), default=self.started)
        achieved = Achieved(
            orders=sum(len(r.placed_at) for r in ordered),
            requests=sum(r.counts["requests"] for r in ordered),
            seconds=max(0.0, finished - self.started),
            worker_cpu_seconds=sum(r.cpu_seconds for r in ordered),
            workers=len(processes),
        )
        return achieved, ordered

    @staticmethod
    async def _get(
        results: multiprocessing.Queue[tuple[int, WorkerResult]],
        processes: Sequence[multiprocessing.context.SpawnProcess],
        wait_s: float | None = None,
    ) -> tuple[int, WorkerResult] | None:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            try:
                return await asyncio.to_thread(results.get, True, 0.2)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in processes):
                    raise RuntimeError("a load generator worker died") from None
                if deadline is not None and time.monotonic() >= deadline:
                    return None

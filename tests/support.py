"""Helpers for tests that need a real HTTP server or wait for an asynchronous effect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from tools.bench import free_port as free_port  # one home; tests import it from here

T = TypeVar("T")


@asynccontextmanager
async def serve(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Runs ``app`` (lifespan included) on a real socket; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start in 30 s")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float = 30.0,
    interval: float = 0.1,
) -> T:
    """Polls ``probe`` until ``done(result)``; fails with the last result at the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s; last result: {result!r}")
        await asyncio.sleep(interval)


SUMMARY: list[str] = []


def report(line: str) -> None:
    """Adds a line to the end-of-run summary (counts of fuzz, simulation and fault runs)."""
    SUMMARY.append(line)

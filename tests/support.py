"""Helpers for tests that need a real HTTP server or wait for an asynchronous effect."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
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


def assert_problem(response: httpx.Response, status: int, *fields: str) -> dict[str, Any]:
    """``response`` is a problem+json of ``status`` whose ``errors`` name ``fields``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"]
    assert body["detail"]
    named = {e["field"] for e in body.get("errors", [])}
    assert set(fields) <= named, body
    return body


def ascii_json(body: Any) -> bytes:
    """``body`` as ASCII JSON, so a lone surrogate in a string travels as its escape
    (httpx's and orjson's encoders refuse to write one)."""
    return json.dumps(body).encode()


def forged_cursor(position: Any) -> str:
    """A list cursor holding ``position``, written as ``shared.pagination`` writes one but
    with the stdlib encoder, which also writes integers beyond 64 bits."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")

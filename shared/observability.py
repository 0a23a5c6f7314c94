"""Logging (structlog, JSON lines, with the current span's trace ids), Prometheus metrics
and the health endpoints."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog
from fastapi import APIRouter, Request
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

ReadinessCheck = Callable[[], Awaitable[None]]
Clock = Callable[[], float]


def add_trace_ids(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """``trace_id`` and ``span_id`` (W3C hex) of the current span, if there is one: a log
    line of a request can be found from its trace, and the other way round."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = f"{context.trace_id:032x}"
        event["span_id"] = f"{context.span_id:016x}"
    return event


def setup_logging(level: str = "INFO", json: bool = True) -> None:
    """Routes stdlib and structlog records through one renderer on stderr."""
    shared_processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared_processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared_processors, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # JSON lines carry a logged exception's traceback as text (the console
            # renderer prints it by itself).
            *([structlog.processors.format_exc_info] if json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


_log = get_logger(__name__)


class ReadinessProbe:
    """Runs a service's readiness checks at most once per ``ttl_s``.

    ``/readyz`` is unauthenticated: without the cache every probe (or anyone) would cost
    a database query and a Kafka metadata request. Concurrent calls share one run. The
    answer names the dependencies that failed; why they failed (hosts, exception text) is
    logged, never returned.
    """

    def __init__(
        self, *, ttl_s: float = 1.0, timeout_s: float = 3.0, clock: Clock = time.monotonic
    ) -> None:
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._checked_at: float | None = None
        self._failed: list[str] = []
        self.runs = 0

    async def failed(self, checks: Mapping[str, ReadinessCheck]) -> list[str]:
        """The names of the checks that failed, sorted (empty: ready)."""
        async with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self._ttl:
                self._failed = await self._run(checks)
                self._checked_at = self._clock()
            return list(self._failed)

    async def _run(self, checks: Mapping[str, ReadinessCheck]) -> list[str]:
        self.runs += 1
        names = sorted(checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(checks[name](), self._timeout) for name in names),
            return_exceptions=True,
        )
        failed: list[str] = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(name)
                _log.warning(
                    "readiness check failed",
                    dependency=name,
                    error=f"{type(result).__name__}: {result}",
                )
        return failed


def health_router(probe: ReadinessProbe | None = None) -> APIRouter:
    """``/healthz``, ``/readyz`` (runs ``app.state.readiness`` checks through ``probe``)
    and ``/metrics``."""
    router = APIRouter(include_in_schema=False)
    readiness = probe or ReadinessProbe()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(request: Request) -> Response:
        checks: dict[str, ReadinessCheck] = getattr(request.app.state, "readiness", {})
        failed = await readiness.failed(checks)
        if failed:
            return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503)
        return JSONResponse({"status": "ready", "checks": sorted(checks)})

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router

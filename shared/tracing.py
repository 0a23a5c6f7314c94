"""Distributed tracing (OpenTelemetry): one trace per order, across HTTP, both outboxes and
Kafka.

The W3C ``traceparent`` of a request's span is stored with the outbox rows it writes; the
relay sends it as a Kafka record header (``traceparent``), through a ``publish`` span of
its own when the trace is sampled; a consumer continues it per record (``process``), and
stores its span's context with the outbox rows it writes in turn. So an order posted
complete gives one trace: the orders POST, the orders relay's publish, the donations
consumer's process, the donations relay's publish, the charities fold.

Cost on the batch consumers' hot path: whether a trace is sampled is decided once, where it
starts (the HTTP request, by the ``OTEL_TRACES_SAMPLER``/``_ARG`` sampler; unset: one
order in a hundred, ``DEFAULT_RATIO``), and travels in the traceparent's flags. Per record
a consumer reads one header and looks at one character; only a sampled record gets a span.
An unsampled context is still passed on unchanged, so a downstream service never starts a
trace of its own in the middle of one.

Export: OTLP over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the ``_TRACES_`` one) is
set, otherwise JSON lines in ``<GFG_TRACES_DIR>/<service>.jsonl`` (one object per span),
through a batch span processor that is flushed when the service stops.
``OTEL_SDK_DISABLED=true`` turns spans off entirely; contexts are still passed on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
_TRACEPARENT_BYTES = TRACEPARENT.encode()
_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP: Tracer = trace.NoOpTracer()
_tracer: Tracer = _NOOP
# Hex digits whose lowest bit is set: the traceparent's last digit says "sampled".
_SAMPLED_DIGITS = frozenset("13579bdfBDF")
_OTLP_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The span queue's default size when OTEL_BSP_MAX_QUEUE_SIZE is unset. A consumer batch (up
# to 5,000 records) ends its spans all at once; with the SDK's 2,048 a fully sampled batch
# would lose most of them. A span is about a kilobyte: tens of MB at worst.
_QUEUE_SIZE = 20_000
# The sampler when OTEL_TRACES_SAMPLER is unset: one order in a hundred, decided at the
# request that starts the trace (a caller's sampled traceparent is always followed). Every
# order sampled roughly doubles the donations consumer's CPU (docs/TRACING.md).
DEFAULT_RATIO = 0.01


def tracer() -> Tracer:
    """The running service's tracer (a no-op one outside ``tracing``)."""
    return _tracer


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per span to a file: the local stand-in for a collector.

    Compact on purpose (the SDK's ``to_json`` repeats the resource in every span): the
    service, the ids in W3C hex, kind, times in ns since the epoch, status, attributes.
    Several processes of one service may append to the same file (one write per batch).
    """

    def __init__(self, path: Path, service: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._service = service
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._fd is None:
            return SpanExportResult.FAILURE
        data = b"".join(orjson.dumps(self._row(span)) + b"\n" for span in spans)
        while data:
            data = data[os.write(self._fd, data) :]
        return SpanExportResult.SUCCESS

    def _row(self, span: ReadableSpan) -> dict[str, Any]:
        context = span.context
        parent = span.parent
        assert context is not None
        return {
            "service": self._service,
            "name": span.name,
            "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
            "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
            "kind": span.kind.name,
            "start_ns": span.start_time,
            "end_ns": span.end_time,
            "status": span.status.status_code.name,
            "attributes": dict(span.attributes or {}),
            "events": [
                {"name": event.name, "attributes": dict(event.attributes or {})}
                for event in span.events
            ],
        }

    def shutdown(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _exporter(service: str, traces_dir: Path) -> SpanExporter:
    if any(os.environ.get(name) for name in _OTLP_ENDPOINT_VARS):
        # Imported only when used: it brings protobuf and requests along.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return JsonLinesSpanExporter(traces_dir / f"{service}.jsonl", service)


@contextmanager
def tracing(service: str, traces_dir: Path) -> Iterator[TracerProvider]:
    """The service's tracer provider for the duration of the block (a service's lifespan).

    The sampler comes from the standard ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``;
    unset, it is ``parentbased_traceidratio`` at ``DEFAULT_RATIO``. On exit the spans still
    queued are exported.
    """
    global _tracer
    sampler = None  # the SDK reads the standard variables
    if not os.environ.get("OTEL_TRACES_SAMPLER"):
        sampler = ParentBased(TraceIdRatioBased(DEFAULT_RATIO))
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=sampler,
        shutdown_on_exit=False,
    )
    queue_size = None if os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") else _QUEUE_SIZE
    processor = BatchSpanProcessor(_exporter(service, traces_dir), max_queue_size=queue_size)
    provider.add_span_processor(processor)
    previous, _tracer = _tracer, provider.get_tracer("goods-for-good")
    try:
        yield provider
    finally:
        _tracer = previous
        provider.shutdown()


def traceparent(span: Span) -> str | None:
    """``span``'s W3C traceparent, None for an invalid (absent) span."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def current_traceparent() -> str | None:
    """The traceparent of the current span (the request's, in an endpoint)."""
    return traceparent(trace.get_current_span())


def is_sampled(value: str) -> bool:
    """Whether a traceparent has the sampled flag: a look at its last character."""
    return value[-1:] in _SAMPLED_DIGITS


def parent(value: str | None) -> Context | None:
    """The context a traceparent (from a header or an outbox row) names, as a span's parent.

    Version 00 is read by slicing (a tenth of the propagator's regex and checks, on the
    consumers' hot path); anything else goes through the SDK's propagator. An invalid
    value gives None: the span starts a trace of its own.
    """
    if not value:
        return None
    if len(value) != 55 or not value.startswith("00-") or value[35] != "-" or value[52] != "-":
        context = _PROPAGATOR.extract({TRACEPARENT: value})
        return context if trace.get_current_span(context).get_span_context().is_valid else None
    try:
        trace_id, span_id = int(value[3:35], 16), int(value[36:52], 16)
        flags = int(value[53:], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(remote))


def header_traceparent(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The ``traceparent`` header of a Kafka record, if it has one."""
    for key, value in headers or ():
        if key == TRACEPARENT:
            return value.decode("ascii", "replace")
    return None


def kafka_headers(value: str | None) -> list[tuple[str, bytes]] | None:
    return [(TRACEPARENT, value.encode())] if value else None


class RecordSpans:
    """Spans (``<operation> <topic>``) of one consumed or published batch's sampled records.

    ``follow`` is called per record while the batch is parsed: for a sampled traceparent it
    starts a span (child of it) and returns the span's traceparent, for any other value it
    returns it unchanged, at the cost of one string check. ``end`` closes them all
    when the batch's transaction (or the broker's acknowledgement) is done.
    """

    __slots__ = ("_kind", "_operation", "_spans")

    def __init__(self, operation: str, kind: SpanKind = SpanKind.CONSUMER) -> None:
        self._operation = operation
        self._kind = kind
        self._spans: list[Span] = []

    def follow(
        self,
        value: str | None,
        *,
        topic: str,
        key: str | bytes | None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> str | None:
        if not value or value[-1:] not in _SAMPLED_DIGITS:
            return value
        # Few attributes: each costs a validation on the hot path (the topic is in the name).
        attributes: dict[str, Any] = {}
        if key is not None:
            attributes["messaging.kafka.message.key"] = (
                key.decode("utf-8", "replace") if isinstance(key, bytes) else key
            )
        if partition is not None:
            attributes["messaging.destination.partition.id"] = str(partition)
        if offset is not None:
            attributes["messaging.kafka.offset"] = offset
        span = _tracer.start_span(
            f"{self._operation} {topic}",
            context=parent(value),
            kind=self._kind,
            attributes=attributes,
        )
        self._spans.append(span)
        return traceparent(span) or value

    def __len__(self) -> int:
        return len(self._spans)

    def end(self, error: BaseException | None = None) -> None:
        spans, self._spans = self._spans, []
        for span in spans:
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()


UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def request_parent(headers: Sequence[tuple[bytes, bytes]]) -> Context | None:
    """The context an HTTP request's first ``traceparent`` header names, if any."""
    for name, value in headers:
        if name == _TRACEPARENT_BYTES:
            return parent(value.decode("ascii", "replace"))
    return None

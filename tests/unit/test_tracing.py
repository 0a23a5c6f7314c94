"""shared/tracing.py without servers: the sampled flag, headers, the spans a batch gets,
the JSON-lines export, and trace ids in the logs."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.observability import add_trace_ids, setup_logging

TRACE = "0af7651916cd43dd8448eb211c80319c"
SAMPLED = f"00-{TRACE}-b7ad6b7169203331-01"
UNSAMPLED = f"00-{TRACE}-b7ad6b7169203331-00"


def read(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize(
    ("value", "sampled"),
    [
        (SAMPLED, True),
        (UNSAMPLED, False),
        (SAMPLED[:-2] + "03", True),
        (SAMPLED[:-2] + "0a", False),
    ],
)
def test_the_sampled_flag_is_read_from_the_last_digit(value: str, sampled: bool) -> None:
    assert tracing.is_sampled(value) is sampled


def test_the_traceparent_header_is_found_among_others() -> None:
    headers = [("other", b"x"), ("traceparent", SAMPLED.encode())]
    assert tracing.header_traceparent(headers) == SAMPLED
    assert tracing.header_traceparent([("other", b"x")]) is None
    assert tracing.header_traceparent(None) is None
    assert tracing.kafka_headers(SAMPLED) == [("traceparent", SAMPLED.encode())]
    assert tracing.kafka_headers(None) is None


def test_only_sampled_records_get_spans_and_the_rest_pass_on_unchanged(tmp_path: Path) -> None:
    with tracing.tracing("donations", tmp_path):
        spans = tracing.RecordSpans("process")
        assert spans.follow(None, topic="t", key=b"k") is None
        assert spans.follow(UNSAMPLED, topic="t", key=b"k") == UNSAMPLED
        assert len(spans) == 0
        child = spans.follow(SAMPLED, topic="t", key=b"order-1", partition=3, offset=42)
        assert child is not None
        assert child != SAMPLED
        assert child.startswith(f"00-{TRACE}-")
        assert tracing.is_sampled(child)
        assert len(spans) == 1
        spans.end()
        failed = tracing.RecordSpans("publish", SpanKind.PRODUCER)
        failed.follow(SAMPLED, topic="t2", key="order-2")
        failed.end(RuntimeError("broker gone"))
    rows = read(tmp_path / "donations.jsonl")
    assert [r["name"] for r in rows] == ["process t", "publish t2"]
    ok, bad = rows
    assert ok["trace_id"] == TRACE
    assert ok["parent_span_id"] == "b7ad6b7169203331"
    assert ok["span_id"] == child.split("-")[2]
    assert ok["kind"] == "CONSUMER"
    assert ok["status"] == "UNSET"
    assert ok["attributes"] == {
        "messaging.kafka.message.key": "order-1",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 42,
    }
    assert bad["kind"] == "PRODUCER"
    assert bad["status"] == "ERROR"
    assert [e["name"] for e in bad["events"]] == ["exception"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "value",
    [
        SAMPLED,
        f"01-{TRACE}-b7ad6b7169203331-01-future",  # a later version: the SDK's propagator
    ],
)
def test_a_traceparent_names_its_remote_parent(value: str) -> None:
    context = tracing.parent(value)
    assert context is not None
    span = trace.get_current_span(context).get_span_context()
    assert f"{span.trace_id:032x}" == TRACE
    assert f"{span.span_id:016x}" == "b7ad6b7169203331"
    assert span.is_remote
    assert span.trace_flags.sampled


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"00-{'0' * 32}-b7ad6b7169203331-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-b7ad6b716920333x-01",
        f"00-{TRACE}_b7ad6b7169203331-01",
    ],
)
def test_an_invalid_traceparent_names_no_parent(value: str | None) -> None:
    assert tracing.parent(value) is None


def test_without_a_provider_the_context_still_passes_on() -> None:
    spans = tracing.RecordSpans("process")
    # The no-op tracer's span keeps its parent's context: same traceparent out as in.
    assert spans.follow(SAMPLED, topic="t", key=None) == SAMPLED
    spans.end()


def test_the_sampler_comes_from_the_standard_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    with tracing.tracing("orders", tmp_path):
        with tracing.tracer().start_as_current_span("root"):
            unsampled = tracing.current_traceparent()
        spans = tracing.RecordSpans("process")
        assert spans.follow(SAMPLED, topic="t", key=None) != SAMPLED  # the parent decides
        spans.end()
    assert unsampled is not None
    assert not tracing.is_sampled(unsampled)
    assert [r["name"] for r in read(tmp_path / "orders.jsonl")] == ["process t"]


def test_unset_the_sampler_keeps_one_order_in_a_hundred_and_follows_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    with tracing.tracing("orders", tmp_path) as provider:
        assert provider.sampler.get_description().startswith(
            f"ParentBased{{root:TraceIdRatioBased{{{tracing.DEFAULT_RATIO}}}"
        )
        spans = tracing.RecordSpans("process")
        child = spans.follow(SAMPLED, topic="t", key=None)  # a sampled caller is followed
        spans.end()
    assert child is not None
    assert tracing.is_sampled(child)
    assert [r["name"] for r in read(tmp_path / "orders.jsonl")] == ["process t"]


def test_log_lines_carry_the_current_span_ids(tmp_path: Path) -> None:
    assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}
    with tracing.tracing("orders", tmp_path):
        with tracing.tracer().start_as_current_span("request"):
            current = tracing.current_traceparent()
            event = add_trace_ids(None, "info", {"event": "x"})
    assert current is not None
    _, trace_id, span_id, _ = current.split("-")
    assert event == {"event": "x", "trace_id": trace_id, "span_id": span_id}


def test_setup_logging_includes_the_trace_processor(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json=True)
    try:
        with tracing.tracing("orders", Path("test-artifacts/traces")):
            with tracing.tracer().start_as_current_span("request"):
                structlog.get_logger("t").info("hello")
                current = tracing.current_traceparent()
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
    assert current is not None
    line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["trace_id"] == current.split("-")[1]

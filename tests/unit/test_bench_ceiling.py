"""The parsers that read Kafka's own perf tools (the broker ceiling in make bench)."""

from __future__ import annotations

import pytest

from tools.bench.ceiling import consumer_rate, producer_rate

PRODUCER = """\
250117 records sent, 50013.4 records/sec (14.31 MB/sec), 812.4 ms avg latency, \
1490.0 ms max latency.
500000 records sent, 49980.007997 records/sec (14.30 MB/sec), 905.71 ms avg latency, \
1702.00 ms max latency, 866 ms 50th, 1547 ms 95th, 1650 ms 99th, 1699 ms 99.9th.
"""

CONSUMER = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, \
rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-28 11:55:50:123, 2026-11-28 11:56:03:110, 143.0511, 11.0149, 500000, 38500.0385, 3120, \
9867, 14.4979, 50673.9637
"""


def test_the_producer_rate_is_the_summary_line_not_a_progress_line() -> None:
    assert producer_rate(PRODUCER) == pytest.approx(49980.007997)


def test_the_consumer_rate_is_the_nmsg_sec_column() -> None:
    assert consumer_rate(CONSUMER) == pytest.approx(38500.0385)


@pytest.mark.parametrize("parse", [producer_rate, consumer_rate])
def test_output_without_a_report_is_an_error(parse: object) -> None:
    assert callable(parse)
    with pytest.raises(ValueError, match="no "):
        parse("ERROR something went wrong\n")

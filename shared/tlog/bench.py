"""Micro-benchmark of appending leaves: ``python -m shared.tlog.bench [leaves] [batch]``.

Measures what a log writer does per batch: hash the records (leaf hashes) and compute
every stored hash to write, from the peaks kept between batches. Not a test.
"""

from __future__ import annotations

import sys
import time

from shared.tlog.hashing import append_leaves, leaf_hashes, root_from_peaks, stored_hash_count


def bench_append(total: int, batch: int) -> float:
    """Leaves per second for ``total`` records of ~200 bytes appended ``batch`` at a time."""
    records = [b"%012d" % i + b"x" * 188 for i in range(total)]
    size, written = 0, 0
    peaks: list[bytes] = []
    started = time.perf_counter()
    for start in range(0, total, batch):
        hashes, peaks = append_leaves(size, peaks, leaf_hashes(records[start : start + batch]))
        written += len(hashes)
        size += len(records[start : start + batch])
    elapsed = time.perf_counter() - started
    root_from_peaks(peaks)
    if written != stored_hash_count(total):
        raise AssertionError("wrong number of stored hashes")
    return total / elapsed


def main(argv: list[str]) -> None:
    total = int(argv[1]) if len(argv) > 1 else 200_000
    batch = int(argv[2]) if len(argv) > 2 else 500
    rate = bench_append(total, batch)
    sys.stdout.write(f"append {total} leaves in batches of {batch}: {rate:,.0f} leaves/s\n")


if __name__ == "__main__":
    main(sys.argv)

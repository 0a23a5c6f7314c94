"""RFC 9162 Merkle tree hashing and the stored-hash layout of Go's ``sumdb/tlog``.

A log keeps every hash of every complete subtree once, in one dense sequence
("stored hashes", Crosby and Wallach's ordering as Go's ``tlog`` uses it): appending
record ``n`` writes its leaf hash at ``stored_hash_index(0, n)`` followed by the hash of
each subtree that record completes. A tree of ``n`` records has
``stored_hash_count(n) == 2n - popcount(n)`` stored hashes, and every hash a proof or a
tile needs is one of them, so storage is append-only and a proof is a single read.

``append_leaves`` computes the stored hashes of a whole batch in one pass from the
tree's current peaks (the roots of its complete subtrees, ``tree_hash_indexes``), which
a caller reads once per batch, not once per leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

Hash: TypeAlias = bytes
HashReader: TypeAlias = Callable[[Sequence[int]], Sequence[Hash]]
"""Returns the stored hashes at the given indexes, in the same order (one batched read)."""

HASH_SIZE = 32
EMPTY_ROOT: Hash = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


class HashReadError(ValueError):
    """A reader returned the wrong number of hashes or a hash of the wrong size."""


def leaf_hash(data: bytes) -> Hash:
    """SHA-256(0x00 || data), RFC 9162 section 2.1.1."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: Hash, right: Hash) -> Hash:
    """SHA-256(0x01 || left || right), RFC 9162 section 2.1.1."""
    return _sha256(b"\x01" + left + right).digest()


def leaf_hashes(records: Iterable[bytes]) -> list[Hash]:
    return [_sha256(b"\x00" + data).digest() for data in records]


def root_from_peaks(peaks: Sequence[Hash]) -> Hash:
    """The root of a tree given the hashes of its complete subtrees, largest first."""
    if not peaks:
        return EMPTY_ROOT
    h = peaks[-1]
    for peak in reversed(peaks[:-1]):
        h = _sha256(b"\x01" + peak + h).digest()
    return h


def merkle_root(hashes: Sequence[Hash]) -> Hash:
    """MTH of the records whose leaf hashes are given (RFC 9162 section 2.1.1)."""
    _, peaks = append_leaves(0, (), hashes)
    return root_from_peaks(peaks)


def stored_hash_index(level: int, n: int) -> int:
    """Position of the ``n``-th hash at ``level`` in the stored-hash sequence."""
    if level < 0 or n < 0:
        raise ValueError("level and n must be non-negative")
    # Level L's n-th hash is written right after level 0's hash number (n+1)*2^L - 1,
    # whose index is the sum of m >> i over i (= 2m - popcount(m)).
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of ``stored_hash_index``: ``(level, n)``."""
    if index < 0:
        raise ValueError("index must be non-negative")
    # The record n written just before index is in [index/2, index/2 + log2(index)].
    n = index // 2
    index_n = stored_hash_index(0, n)
    if index_n > index:  # pragma: no cover - impossible, as in Go's "bad math" panic
        raise AssertionError("bad math in split_stored_hash_index")
    while True:
        # Record n+1 starts after record n's leaf hash and one hash per trailing 1 of n.
        x = index_n + 1 + _trailing_ones(n)
        if x > index:
            break
        n += 1
        index_n = x
    level = index - index_n
    return level, n >> level


def stored_hash_count(n: int) -> int:
    """How many stored hashes a tree of ``n`` records has."""
    if n < 0:
        raise ValueError("n must be non-negative")
    return 2 * n - n.bit_count()


def _trailing_ones(n: int) -> int:
    return ((n ^ (n + 1)).bit_length()) - 1


def read_hashes(reader: HashReader, indexes: Sequence[int]) -> Sequence[Hash]:
    if not indexes:
        return ()
    hashes = reader(indexes)
    if len(hashes) != len(indexes):
        raise HashReadError(f"read {len(indexes)} indexes, got {len(hashes)} hashes")
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise HashReadError("reader returned a hash of the wrong size")
    return hashes


def stored_hashes(n: int, record_hash: Hash, reader: HashReader) -> list[Hash]:
    """The hashes to store, from ``stored_hash_index(0, n)`` on, when appending record ``n``.

    Go's ``StoredHashesForRecordHash``: reads at most log2(n) earlier hashes in one call.
    For batches use ``stored_hashes_for_batch`` or ``append_leaves``.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    m = _trailing_ones(n)
    indexes = [stored_hash_index(i, (n >> i) - 1) for i in reversed(range(m))]
    old = read_hashes(reader, indexes)
    hashes = [record_hash]
    h = record_hash
    for i in range(m):
        h = node_hash(old[m - 1 - i], h)
        hashes.append(h)
    return hashes


def tree_hash_indexes(n: int) -> list[int]:
    """Stored indexes of the peaks of a tree of ``n`` records, largest subtree first."""
    return subtree_indexes(0, n, [])


def subtree_indexes(lo: int, hi: int, need: list[int]) -> list[int]:
    # The complete subtrees covering [lo, hi): largest power of two first (Go's subTreeIndex).
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        need.append(stored_hash_index(level, lo >> level))
        lo += 1 << level
    return need


def _subtree_count(lo: int, hi: int) -> int:
    return (hi - lo).bit_count() if lo < hi else 0


def tree_hash_from(n: int, hashes: Sequence[Hash]) -> Hash:
    """The root of a tree of ``n`` records from the hashes at ``tree_hash_indexes(n)``."""
    if len(hashes) != _subtree_count(0, n):
        raise HashReadError("wrong number of hashes for tree_hash_from")
    return root_from_peaks(hashes)


def tree_hash(n: int, reader: HashReader) -> Hash:
    """The root of the tree of ``n`` records (Go's ``TreeHash``): one read, <= log2(n)+1."""
    if n < 0:
        raise ValueError("n must be non-negative")
    return tree_hash_from(n, read_hashes(reader, tree_hash_indexes(n)))


def append_leaves(
    size: int, peaks: Sequence[Hash], new_leaf_hashes: Iterable[Hash]
) -> tuple[list[Hash], list[Hash]]:
    """Append leaf hashes to a tree of ``size`` records whose peaks are ``peaks``.

    Returns the stored hashes to write from ``stored_hash_count(size)`` on, in order,
    and the peaks of the grown tree (pass them to the next call; ``root_from_peaks``
    gives its root). Pure and one pass: no reads.
    """
    if size < 0 or len(peaks) != size.bit_count():
        raise ValueError(f"a tree of {size} records has {size.bit_count()} peaks")
    stack = list(peaks)
    out: list[Hash] = []
    n = size
    sha = _sha256
    for h in new_leaf_hashes:
        out.append(h)
        m = n
        while m & 1:
            h = sha(b"\x01" + stack.pop() + h).digest()
            out.append(h)
            m >>= 1
        stack.append(h)
        n += 1
    return out, stack


def stored_hashes_for_batch(
    size: int, new_leaf_hashes: Iterable[Hash], reader: HashReader
) -> list[Hash]:
    """Like ``append_leaves`` but reads the peaks with one call to ``reader``."""
    peaks = read_hashes(reader, tree_hash_indexes(size))
    out, _ = append_leaves(size, peaks, new_leaf_hashes)
    return out

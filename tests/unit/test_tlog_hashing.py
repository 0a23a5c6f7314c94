from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.tlog.hashing import (
    EMPTY_ROOT,
    HashReadError,
    append_leaves,
    leaf_hash,
    leaf_hashes,
    merkle_root,
    node_hash,
    root_from_peaks,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    stored_hashes,
    stored_hashes_for_batch,
    tree_hash,
    tree_hash_indexes,
)

# Leaf inputs, complete-subtree hashes and roots of the 8-leaf reference tree used by
# Certificate Transparency implementations: github.com/transparency-dev/merkle,
# testonly/constants.go (LeafInputs, NodeHashes, RootHashes).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# Go's sumdb/tlog TestTree appends records "leaf 0" .. "leaf 99"; these roots (and the
# stored-hash indexes below) were printed by golang.org/x/mod v0.24.0's TreeHash and
# StoredHashIndex for those records.
GO_TREE_ROOTS = {
    1: "1bb97dcc21635d47e2663efdfd0a174686d98dd701352dd2cd06e8b43fd3d305",
    2: "fc5f6b88ff8554f75bb2f9e6f39c31b1936d44b69276edf7b1205a955b9761e3",
    3: "d4f92c8fbb89720eb3b55677c7d7efaddfeb10d11a1a84a0ba8f1a23337faa95",
    7: "5a61fc2b54f9cfa71774f2432143dd40c6cb2b11947faf65a7d3da5cb65199c8",
    8: "c5c2c820ed342fdda8ce896b6b9cf5b8c00a21cc4b20714cc6e5d3c05c35240b",
    13: "cf9b4c2a44a7caa722d5d548ee64ff90a119b0c31acac3444dc583000a39d3ca",
    64: "f261e23692d978fdac3fd949db5495940a437ae671b9a6dde9aa6118d003652f",
    99: "7485cca3f6677c48bfd46de76f077f3ec8429bba92754c406d78ce31f075786d",
    100: "13f88915c560dc911a1da0fb209d84a20971051f294ebeb428fb3fc293af2743",
}
GO_STORED_HASH_INDEX = [
    (0, 0, 0),
    (0, 1, 1),
    (1, 0, 2),
    (0, 2, 3),
    (1, 1, 5),
    (2, 0, 6),
    (3, 0, 14),
    (0, 100, 197),
    (5, 7, 507),
    (10, 1_000_000, 2_048_002_039),
    (0, 1 << 40, 2_199_023_255_551),
]


def naive_mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1's recursive definition, over leaf hashes."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(hashes[:k]) + naive_mth(hashes[k:])).digest()


def go_stored_hash_index(level: int, n: int) -> int:
    """Go's StoredHashIndex loop, transcribed, as an oracle for the closed form."""
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


class Storage(list[bytes]):
    """An in-memory stored-hash sequence whose reader insists on increasing indexes."""

    reads: int = 0

    def read(self, indexes: object) -> list[bytes]:
        assert isinstance(indexes, list)
        assert all(a < b for a, b in zip(indexes, indexes[1:], strict=False))
        self.reads += 1
        return [self[i] for i in indexes]


def build(records: list[bytes]) -> Storage:
    storage = Storage()
    for n, record in enumerate(records):
        storage.extend(stored_hashes(n, leaf_hash(record), storage.read))
    return storage


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert merkle_root([]) == EMPTY_ROOT
    assert tree_hash(0, Storage().read) == EMPTY_ROOT


def test_ct_reference_roots_for_every_size() -> None:
    hashes = leaf_hashes(CT_LEAVES)
    storage = build(CT_LEAVES)
    for size, expected in enumerate(CT_ROOTS):
        assert merkle_root(hashes[:size]).hex() == expected
        assert tree_hash(size, storage.read).hex() == expected


def test_ct_reference_node_hashes_are_the_stored_hashes() -> None:
    storage = build(CT_LEAVES)
    assert len(storage) == stored_hash_count(8) == 15
    for level, row in enumerate(CT_NODE_HASHES):
        for n, expected in enumerate(row):
            assert storage[stored_hash_index(level, n)].hex() == expected
    assert node_hash(bytes.fromhex(CT_NODE_HASHES[0][0]), bytes.fromhex(CT_NODE_HASHES[0][1])) == (
        bytes.fromhex(CT_NODE_HASHES[1][0])
    )


def test_go_tree_roots_for_test_tree_records() -> None:
    records = [b"leaf %d" % i for i in range(100)]
    storage = build(records)
    assert len(storage) == 197
    for size, expected in GO_TREE_ROOTS.items():
        assert tree_hash(size, storage.read).hex() == expected
        assert merkle_root(leaf_hashes(records[:size])).hex() == expected


@pytest.mark.parametrize(("level", "n", "index"), GO_STORED_HASH_INDEX)
def test_go_stored_hash_index_table(level: int, n: int, index: int) -> None:
    assert stored_hash_index(level, n) == index
    assert split_stored_hash_index(index) == (level, n)


def test_split_stored_hash_index_inverts_for_go_range() -> None:
    # Go's TestSplitStoredHashIndex: levels 0..9, n 0..99.
    for level in range(10):
        for n in range(100):
            x = stored_hash_index(level, n)
            assert x == go_stored_hash_index(level, n)
            assert split_stored_hash_index(x) == (level, n)


def test_every_index_is_one_stored_hash() -> None:
    seen = [split_stored_hash_index(i) for i in range(5000)]
    assert len(set(seen)) == 5000
    assert all(stored_hash_index(level, n) == i for i, (level, n) in enumerate(seen))


@given(st.integers(0, 30), st.integers(0, 2**40))
def test_stored_hash_index_closed_form_matches_go_loop(level: int, n: int) -> None:
    x = stored_hash_index(level, n)
    assert x == go_stored_hash_index(level, n)
    assert split_stored_hash_index(x) == (level, n)


def test_negative_coordinates_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        stored_hash_index(-1, 0)
    with pytest.raises(ValueError, match="non-negative"):
        split_stored_hash_index(-1)
    with pytest.raises(ValueError, match="non-negative"):
        stored_hash_count(-1)


def test_stored_hash_count_matches_go_definition() -> None:
    for n in range(1, 600):
        expected = stored_hash_index(0, n - 1) + 1
        m = n - 1
        while m & 1:
            expected += 1
            m >>= 1
        assert stored_hash_count(n) == expected
    assert stored_hash_count(0) == 0


@given(st.lists(st.binary(max_size=40), max_size=300), st.data())
def test_batches_equal_one_by_one_and_naive_root(records: list[bytes], data: st.DataObject) -> None:
    one_by_one = build(records)
    assert len(one_by_one) == stored_hash_count(len(records))
    # Cut the records into random batches; each batch reads the peaks once.
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=6)))
    batched = Storage()
    size, peaks = 0, list[bytes]()
    for lo, hi in zip([0, *cuts], [*cuts, len(records)], strict=True):
        batch = leaf_hashes(records[lo:hi])
        reads = batched.reads
        from_reader = stored_hashes_for_batch(size, batch, batched.read)
        assert batched.reads - reads <= 1
        written, peaks = append_leaves(size, peaks, batch)
        assert written == from_reader
        batched.extend(written)
        size += hi - lo
        assert peaks == [batched[i] for i in tree_hash_indexes(size)]
    assert batched == one_by_one
    hashes = leaf_hashes(records)
    assert root_from_peaks(peaks) == naive_mth(hashes) == tree_hash(len(records), batched.read)


def test_append_leaves_refuses_wrong_peaks() -> None:
    with pytest.raises(ValueError, match="peaks"):
        append_leaves(3, [EMPTY_ROOT], [EMPTY_ROOT])


def test_short_reader_is_an_error() -> None:
    storage = build(CT_LEAVES)
    with pytest.raises(HashReadError):
        tree_hash(7, lambda indexes: storage.read(list(indexes))[:-1])
    with pytest.raises(HashReadError):
        tree_hash(7, lambda indexes: [b"short"] * len(indexes))
    with pytest.raises(HashReadError):
        stored_hashes(7, EMPTY_ROOT, lambda indexes: [])

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.tlog.api import BLOCK_LEAVES, block_of, block_start
from shared.tlog.hashing import (
    EMPTY_ROOT,
    leaf_hash,
    leaf_hashes,
    merkle_root,
    root_from_peaks,
    split_stored_hash_index,
    stored_hash_index,
    stored_hashes,
)
from shared.tlog.proofs import (
    ProofError,
    check_record,
    check_tree,
    prove_record,
    prove_tree,
    record_proof_from_hashes,
    record_proof_groups,
    record_proof_indexes,
    root_from_record_proof,
    tree_proof_from_hashes,
    tree_proof_indexes,
)
from tests.unit.test_tlog_hashing import CT_LEAVES, CT_ROOTS, Storage, build

# Known proofs over the CT reference tree, from github.com/transparency-dev/merkle,
# proof/verify_test.go (inclusionProofs: leaf numbers there are 1-based, so index = leaf - 1;
# consistencyProofs).
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# ProveRecord(100, 37) and ProveTree(100, 37) over Go's TestTree records "leaf 0".."leaf 99",
# printed by golang.org/x/mod v0.24.0 sumdb/tlog.
GO_RECORD_PROOF_100_37 = [
    "b34889394564290c00c6cc7d5043d5e3c2199484c301c1182af346758ddf11b4",
    "3859110b621ad9bbcc94faecba692aaf8e5acb7db15d1aa41a6aa4e2698a2069",
    "5be77b8ca4dbee84c59ad0bccb17d56c733750d0a6d1b780de3d8e969dd03162",
    "20543b8da96c920043be4aa8a1a707dfa0724436760fba563c344e2fdc30a885",
    "9c494a6f5b1ef22d42f0509f45936b8a5c05e8ea06bef8b42324f15fd52c97d6",
    "9a5b5a2a29571cad3d81555f34bf3256fda56279691cdec34f57c8f484acb3fa",
    "5b0f079a0616e900406d4765bc00c474b42d19cdcfb3f42cebbf102a7c2407fc",
]
GO_TREE_PROOF_100_37 = [
    GO_RECORD_PROOF_100_37[0],
    "900236987394e2df5f1f854ca103f6dbe60ca7c150f09441412abb9a95d25784",
    *GO_RECORD_PROOF_100_37[1:],
]


def h(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def rfc9162_verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2, step by step (an oracle independent of Go's recursion)."""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def rfc9162_verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2, step by step (equal sizes: empty proof, equal roots)."""
    if first < 1 or first > second:
        return False
    if first == second:
        return not proof and first_hash == second_hash
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


def record_ok(proof: Sequence[bytes], t: int, root: bytes, n: int, leaf: bytes) -> bool:
    try:
        check_record(proof, t, root, n, leaf)
    except ProofError:
        return False
    return True


def tree_ok(proof: Sequence[bytes], t: int, root: bytes, n: int, old: bytes) -> bool:
    try:
        check_tree(proof, t, root, n, old)
    except ProofError:
        return False
    return True


def flip(hash_: bytes, bit: int) -> bytes:
    b = bytearray(hash_)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_ct_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    storage = build(CT_LEAVES)
    root = bytes.fromhex(CT_ROOTS[size])
    leaf = leaf_hash(CT_LEAVES[index])
    assert prove_record(size, index, storage.read) == h(proof)
    check_record(h(proof), size, root, index, leaf)
    assert rfc9162_verify_inclusion(index, size, leaf, h(proof), root)


@pytest.mark.parametrize(("old", "size", "proof"), CT_CONSISTENCY)
def test_ct_consistency_vectors(old: int, size: int, proof: list[str]) -> None:
    storage = build(CT_LEAVES)
    root, old_root = bytes.fromhex(CT_ROOTS[size]), bytes.fromhex(CT_ROOTS[old])
    assert prove_tree(size, old, storage.read) == h(proof)
    check_tree(h(proof), size, root, old, old_root)
    assert rfc9162_verify_consistency(old, size, old_root, root, h(proof))


def test_go_proofs_for_test_tree_records() -> None:
    records = [b"leaf %d" % i for i in range(100)]
    storage = build(records)
    assert prove_record(100, 37, storage.read) == h(GO_RECORD_PROOF_100_37)
    assert prove_tree(100, 37, storage.read) == h(GO_TREE_PROOF_100_37)


def test_go_test_tree_every_proof_and_every_corruption() -> None:
    # Go's TestTree: for every tree size 1..100, every record and every older size, the
    # proof verifies and flipping the low bit of any proof hash makes it fail.
    records = [b"leaf %d" % i for i in range(100)]
    hashes = leaf_hashes(records)
    storage = Storage()
    roots = []
    for i, record in enumerate(records):
        storage.extend(stored_hashes(i, leaf_hash(record), storage.read))
        t = i + 1
        roots.append(merkle_root(hashes[:t]))
        for j in range(t):
            p = prove_record(t, j, storage.read)
            check_record(p, t, roots[i], j, hashes[j])
            for k in range(len(p)):
                bad = [*p[:k], flip(p[k], 0), *p[k + 1 :]]
                assert not record_ok(bad, t, roots[i], j, hashes[j])
            q = prove_tree(t, j + 1, storage.read)
            check_tree(q, t, roots[i], j + 1, roots[j])
            for k in range(len(q)):
                bad = [*q[:k], flip(q[k], 0), *q[k + 1 :]]
                assert not tree_ok(bad, t, roots[i], j + 1, roots[j])


def test_out_of_range_inputs_are_refused() -> None:
    storage = build(CT_LEAVES)
    for t, n in [(0, 0), (3, 3), (3, -1), (-1, 0)]:
        with pytest.raises(ProofError):
            prove_record(t, n, storage.read)
        with pytest.raises(ProofError):
            check_record([], t, EMPTY_ROOT, n, EMPTY_ROOT)
    for t, n in [(3, 0), (3, 4), (0, 0)]:
        with pytest.raises(ProofError):
            prove_tree(t, n, storage.read)
        with pytest.raises(ProofError):
            check_tree([], t, EMPTY_ROOT, n, EMPTY_ROOT)
    with pytest.raises(ProofError, match="size"):
        check_record([b"short"], 2, EMPTY_ROOT, 0, EMPTY_ROOT)
    with pytest.raises(ProofError, match="size"):
        check_tree([], 2, b"", 2, EMPTY_ROOT)


@st.composite
def trees(draw: st.DrawFn, min_size: int = 1) -> tuple[list[bytes], Storage]:
    size = draw(st.integers(min_size, 300))
    salt = draw(st.binary(max_size=8))
    records = [salt + b"%d" % i for i in range(size)]  # distinct records
    return records, build(records)


@given(trees(), st.data())
def test_inclusion_proofs_verify_and_every_corruption_fails(
    tree: tuple[list[bytes], Storage], data: st.DataObject
) -> None:
    records, storage = tree
    t = data.draw(st.integers(1, len(records)), label="tree size")
    n = data.draw(st.integers(0, t - 1), label="index")
    hashes = leaf_hashes(records[:t])
    root, leaf = merkle_root(hashes), hashes[n]
    indexes = record_proof_indexes(t, n)
    proof = record_proof_from_hashes(t, n, storage.read(indexes))
    assert proof == prove_record(t, n, storage.read)
    check_record(proof, t, root, n, leaf)
    assert rfc9162_verify_inclusion(n, t, leaf, proof, root)
    assert root_from_record_proof(proof, t, n, leaf) == root

    bit = data.draw(st.integers(0, 255), label="bit")
    for k in range(len(proof)):
        assert not record_ok([*proof[:k], flip(proof[k], bit), *proof[k + 1 :]], t, root, n, leaf)
    assert not record_ok(proof, t, flip(root, bit), n, leaf)
    assert not record_ok(proof, t, root, n, flip(leaf, bit))
    assert not record_ok([*proof, root], t, root, n, leaf)
    if proof:
        assert not record_ok(proof[:-1], t, root, n, leaf)
        assert not record_ok(proof[1:], t, root, n, leaf)
    other_n = data.draw(st.integers(0, 400), label="other index")
    if other_n != n:
        assert not record_ok(proof, t, root, other_n, leaf)
    # A different size verifies only where RFC 9162's own algorithm says the same proof
    # is a valid path (sizes whose path to n has the same shape), never otherwise.
    other_t = data.draw(st.integers(0, 600), label="other size")
    assert record_ok(proof, other_t, root, n, leaf) == rfc9162_verify_inclusion(
        n, other_t, leaf, proof, root
    )
    for wrong_t in (t * 2, t // 2):
        if wrong_t != t and (t & (t - 1)) == 0:
            assert not record_ok(proof, wrong_t, root, n, leaf)


@given(trees(), st.data())
def test_consistency_proofs_verify_and_every_corruption_fails(
    tree: tuple[list[bytes], Storage], data: st.DataObject
) -> None:
    records, storage = tree
    t = data.draw(st.integers(1, len(records)), label="new size")
    n = data.draw(st.integers(1, t), label="old size")
    hashes = leaf_hashes(records)
    root, old_root = merkle_root(hashes[:t]), merkle_root(hashes[:n])
    proof = tree_proof_from_hashes(t, n, storage.read(tree_proof_indexes(t, n)))
    assert proof == prove_tree(t, n, storage.read)
    check_tree(proof, t, root, n, old_root)
    assert rfc9162_verify_consistency(n, t, old_root, root, proof)

    bit = data.draw(st.integers(0, 255), label="bit")
    for k in range(len(proof)):
        assert not tree_ok([*proof[:k], flip(proof[k], bit), *proof[k + 1 :]], t, root, n, old_root)
    assert not tree_ok(proof, t, flip(root, bit), n, old_root)
    assert not tree_ok(proof, t, root, n, flip(old_root, bit))
    assert not tree_ok([*proof, root], t, root, n, old_root)
    if proof:
        assert not tree_ok(proof[:-1], t, root, n, old_root)
    if n != t:
        assert not tree_ok(proof, t, old_root, n, root)  # swapped roots
    other_n = data.draw(st.integers(1, 600), label="other old size")
    other_t = data.draw(st.integers(1, 600), label="other new size")
    if other_n != n:
        assert not tree_ok(proof, t, root, other_n, old_root)
    assert tree_ok(proof, other_t, root, n, old_root) == rfc9162_verify_consistency(
        n, other_t, old_root, root, proof
    )


@given(st.integers(0, 1 << 40))
def test_blocks_are_the_runs_of_stored_hashes_their_256_leaves_write(index: int) -> None:
    block = block_of(index)
    assert block_start(block) <= index < block_start(block + 1)
    level, n = split_stored_hash_index(index)
    # The leaf whose append wrote this hash (the last of its subtree) is in the block.
    assert (((n + 1) << level) - 1) // BLOCK_LEAVES == block
    assert block_start(block) == stored_hash_index(0, block * BLOCK_LEAVES)


@given(st.integers(1, 1 << 40), st.data())
def test_record_proof_groups_are_the_proofs_indexes(t: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, t - 1), label="index")
    groups = record_proof_groups(t, n)
    assert sorted(i for g in groups for i in g) == sorted(record_proof_indexes(t, n))
    fake = {i: hashlib.sha256(b"%d" % i).digest() for g in groups for i in g}
    assembled = [
        fake[g[0]] if len(g) == 1 else root_from_peaks([fake[i] for i in g]) for g in groups
    ]
    wanted = record_proof_indexes(t, n)
    assert assembled == record_proof_from_hashes(t, n, [fake[i] for i in wanted])

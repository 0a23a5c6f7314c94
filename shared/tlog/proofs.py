"""Inclusion and consistency proofs (RFC 9162 sections 2.1.3 and 2.1.4) from stored hashes.

Each proof is built in two pure steps so the read in between can be anything, including
one ``await``-ed database query: ``*_proof_indexes`` lists the stored hashes it needs
(sorted, increasing) and ``*_proof_from_hashes`` assembles the proof from them.
``prove_record`` and ``prove_tree`` chain the two around a synchronous reader.

The algorithms and proof layout are those of Go's ``sumdb/tlog`` (``ProveRecord``,
``ProveTree``, ``CheckRecord``, ``CheckTree``), which produce and accept the same
proofs as RFC 9162 / Certificate Transparency.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.tlog.hashing import (
    HASH_SIZE,
    Hash,
    HashReader,
    HashReadError,
    node_hash,
    read_hashes,
    root_from_peaks,
    subtree_indexes,
)


class ProofError(ValueError):
    """A proof does not verify, or its inputs are out of range."""


def _maxpow2_below(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2): RFC 9162's split point."""
    return 1 << ((n - 1).bit_length() - 1)


def _take_subtree(lo: int, hi: int, hashes: list[Hash], pos: int) -> tuple[Hash, int]:
    count = (hi - lo).bit_count()
    return root_from_peaks(hashes[pos : pos + count]), pos + count


# -- inclusion ---------------------------------------------------------------------------


def _check_record_inputs(t: int, n: int) -> None:
    if t < 0 or n < 0 or n >= t:
        raise ProofError(f"no record {n} in a tree of size {t}")


def _leaf_proof_indexes(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if lo + 1 == hi:
        return need
    k = _maxpow2_below(hi - lo)
    if n < lo + k:
        _leaf_proof_indexes(lo, lo + k, n, need)
        subtree_indexes(lo + k, hi, need)
    else:
        subtree_indexes(lo, lo + k, need)
        _leaf_proof_indexes(lo + k, hi, n, need)
    return need


def record_proof_indexes(t: int, n: int) -> list[int]:
    """Stored indexes needed to prove record ``n`` is in the tree of size ``t``."""
    _check_record_inputs(t, n)
    return _leaf_proof_indexes(0, t, n, [])


def record_proof_groups(t: int, n: int) -> list[list[int]]:
    """The inclusion proof of record ``n`` in the tree of size ``t`` as stored indexes,
    one group per proof hash, leaf side first: the hash is the stored hash of a
    one-index group, else ``root_from_peaks`` of the group's (a partial subtree at the
    tree's right edge). The same indexes as ``record_proof_indexes``, in one loop."""
    _check_record_inputs(t, n)
    groups: list[list[int]] = []
    lo, hi = 0, t
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if n < lo + k:
            groups.append(subtree_indexes(lo + k, hi, []))
            hi = lo + k
        else:  # [lo, lo + k) is a complete subtree: one stored hash
            level = k.bit_length() - 1
            m = lo + k - 1  # its last record
            groups.append([2 * m - m.bit_count() + level])
            lo += k
    groups.reverse()
    return groups


def _leaf_proof(lo: int, hi: int, n: int, hashes: list[Hash], pos: int) -> tuple[list[Hash], int]:
    if lo + 1 == hi:
        return [], pos
    k = _maxpow2_below(hi - lo)
    if n < lo + k:
        p, pos = _leaf_proof(lo, lo + k, n, hashes, pos)
        th, pos = _take_subtree(lo + k, hi, hashes, pos)
    else:
        th, pos = _take_subtree(lo, lo + k, hashes, pos)
        p, pos = _leaf_proof(lo + k, hi, n, hashes, pos)
    p.append(th)
    return p, pos


def record_proof_from_hashes(t: int, n: int, hashes: Sequence[Hash]) -> list[Hash]:
    """The inclusion proof (audit path, leaf side first) from the hashes at the indexes."""
    _check_record_inputs(t, n)
    hashes = list(hashes)
    if len(hashes) != len(record_proof_indexes(t, n)):
        raise HashReadError("wrong number of hashes for record_proof_from_hashes")
    proof, _ = _leaf_proof(0, t, n, hashes, 0)
    return proof


def prove_record(t: int, n: int, reader: HashReader) -> list[Hash]:
    """Go's ``ProveRecord``: the proof that the tree of size ``t`` contains record ``n``."""
    return record_proof_from_hashes(t, n, read_hashes(reader, record_proof_indexes(t, n)))


def _run_record_proof(p: Sequence[Hash], lo: int, hi: int, n: int, leaf: Hash) -> Hash:
    if lo + 1 == hi:
        if p:
            raise ProofError("inclusion proof has extra hashes")
        return leaf
    if not p:
        raise ProofError("inclusion proof is too short")
    k = _maxpow2_below(hi - lo)
    if n < lo + k:
        return node_hash(_run_record_proof(p[:-1], lo, lo + k, n, leaf), p[-1])
    return node_hash(p[-1], _run_record_proof(p[:-1], lo + k, hi, n, leaf))


def _check_hash_sizes(*hashes: Hash) -> None:
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise ProofError("hash of the wrong size")


def root_from_record_proof(proof: Sequence[Hash], t: int, n: int, leaf: Hash) -> Hash:
    """The root implied by an inclusion proof (RFC 9162 section 2.1.3.2)."""
    _check_record_inputs(t, n)
    _check_hash_sizes(leaf, *proof)
    return _run_record_proof(proof, 0, t, n, leaf)


def check_record(proof: Sequence[Hash], t: int, root: Hash, n: int, leaf: Hash) -> None:
    """Go's ``CheckRecord``: raise ``ProofError`` unless the tree of size ``t`` and hash
    ``root`` has ``leaf`` (a leaf hash) as record ``n``."""
    _check_hash_sizes(root)
    if root_from_record_proof(proof, t, n, leaf) != root:
        raise ProofError("inclusion proof does not match the root")


# -- consistency -------------------------------------------------------------------------


def _check_tree_inputs(t: int, n: int) -> None:
    if t < 1 or n < 1 or n > t:
        raise ProofError(f"no consistency proof from size {n} to size {t}")


def _tree_proof_indexes(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if n == hi:
        return need if lo == 0 else subtree_indexes(lo, hi, need)
    k = _maxpow2_below(hi - lo)
    if n <= lo + k:
        _tree_proof_indexes(lo, lo + k, n, need)
        subtree_indexes(lo + k, hi, need)
    else:
        subtree_indexes(lo, lo + k, need)
        _tree_proof_indexes(lo + k, hi, n, need)
    return need


def tree_proof_indexes(t: int, n: int) -> list[int]:
    """Stored indexes needed to prove the tree of size ``t`` extends the one of size ``n``."""
    _check_tree_inputs(t, n)
    return _tree_proof_indexes(0, t, n, [])


def _tree_proof(lo: int, hi: int, n: int, hashes: list[Hash], pos: int) -> tuple[list[Hash], int]:
    if n == hi:
        if lo == 0:
            return [], pos
        th, pos = _take_subtree(lo, hi, hashes, pos)
        return [th], pos
    k = _maxpow2_below(hi - lo)
    if n <= lo + k:
        p, pos = _tree_proof(lo, lo + k, n, hashes, pos)
        th, pos = _take_subtree(lo + k, hi, hashes, pos)
    else:
        th, pos = _take_subtree(lo, lo + k, hashes, pos)
        p, pos = _tree_proof(lo + k, hi, n, hashes, pos)
    p.append(th)
    return p, pos


def tree_proof_from_hashes(t: int, n: int, hashes: Sequence[Hash]) -> list[Hash]:
    """The consistency proof from the hashes at ``tree_proof_indexes(t, n)``."""
    _check_tree_inputs(t, n)
    hashes = list(hashes)
    if len(hashes) != len(tree_proof_indexes(t, n)):
        raise HashReadError("wrong number of hashes for tree_proof_from_hashes")
    proof, _ = _tree_proof(0, t, n, hashes, 0)
    return proof


def prove_tree(t: int, n: int, reader: HashReader) -> list[Hash]:
    """Go's ``ProveTree``: the proof that the tree of size ``t`` extends that of size ``n``."""
    return tree_proof_from_hashes(t, n, read_hashes(reader, tree_proof_indexes(t, n)))


def _run_tree_proof(p: Sequence[Hash], lo: int, hi: int, n: int, old: Hash) -> tuple[Hash, Hash]:
    if n == hi:
        if lo == 0:
            if p:
                raise ProofError("consistency proof has extra hashes")
            return old, old
        if len(p) != 1:
            raise ProofError("consistency proof has the wrong length")
        return p[0], p[0]
    if not p:
        raise ProofError("consistency proof is too short")
    k = _maxpow2_below(hi - lo)
    if n <= lo + k:
        oh, th = _run_tree_proof(p[:-1], lo, lo + k, n, old)
        return oh, node_hash(th, p[-1])
    oh, th = _run_tree_proof(p[:-1], lo + k, hi, n, old)
    return node_hash(p[-1], oh), node_hash(p[-1], th)


def check_tree(proof: Sequence[Hash], t: int, root: Hash, n: int, old_root: Hash) -> None:
    """Go's ``CheckTree``: raise ``ProofError`` unless the tree of size ``t`` and hash
    ``root`` contains as a prefix the tree of size ``n`` and hash ``old_root``."""
    _check_tree_inputs(t, n)
    _check_hash_sizes(root, old_root, *proof)
    old2, root2 = _run_tree_proof(proof, 0, t, n, old_root)
    if old2 != old_root or root2 != root:
        raise ProofError("consistency proof does not match the roots")

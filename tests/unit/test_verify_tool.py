"""``tools.verify`` stands alone (standard library and ``cryptography`` only) and agrees
with the kit: its inclusion check accepts exactly the kit's proofs, and its note check
accepts exactly what the kit signs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.tlog.checkpoint import Checkpoint, sign_checkpoint
from shared.tlog.hashing import leaf_hashes, merkle_root
from shared.tlog.note import Signer, generate_key
from shared.tlog.proofs import record_proof_from_hashes, record_proof_indexes
from tests.unit.test_tlog_hashing import build
from tools import verify

TOOL = Path(verify.__file__)


def test_the_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(TOOL.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            assert node.module is not None
            modules.add(node.module.split(".")[0])
    assert "cryptography" in modules
    assert modules - {"cryptography"} <= set(sys.stdlib_module_names), modules
    assert len(TOOL.read_text().splitlines()) <= 210  # two kinds of proof, one sitting


@given(st.integers(min_value=1, max_value=70), st.data())
def test_inclusion_check_accepts_the_kits_proofs_and_nothing_else(
    size: int, data: st.DataObject
) -> None:
    leaves = [f"leaf {i}".encode() for i in range(size)]
    storage = build(leaves)
    root = merkle_root(leaf_hashes(leaves))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = record_proof_from_hashes(size, index, storage.read(record_proof_indexes(size, index)))
    verify.check_inclusion(leaves[index], index, size, proof, root)
    with pytest.raises(verify.VerifyError):
        verify.check_inclusion(leaves[index] + b"x", index, size, proof, root)
    with pytest.raises(verify.VerifyError):
        verify.check_inclusion(leaves[index], size, size, proof, root)
    if proof:
        bad = list(proof)
        bad[data.draw(st.integers(min_value=0, max_value=len(bad) - 1))] = bytes(32)
        with pytest.raises(verify.VerifyError):
            verify.check_inclusion(leaves[index], index, size, bad, root)
        with pytest.raises(verify.VerifyError):
            verify.check_inclusion(leaves[index], index, size, proof[:-1], root)
    with pytest.raises(verify.VerifyError):
        verify.check_inclusion(leaves[index], index, size, [*proof, bytes(32)], root)


def test_checkpoint_check_accepts_the_kits_notes_only() -> None:
    skey, vkey = generate_key("goods-for-good/donations")
    root = merkle_root(leaf_hashes([b"a", b"b", b"c"]))
    note = sign_checkpoint(
        Checkpoint("goods-for-good/donations", 3, root), [Signer.from_key(skey)]
    ).decode()
    assert verify.open_checkpoint(note, vkey) == (3, root)
    _, other = generate_key("goods-for-good/donations")
    _, elsewhere = generate_key("another/log")
    forged = note.replace("\n3\n", "\n4\n")
    for text, key in [(note, other), (note, elsewhere), (forged, vkey), ("3\n", vkey)]:
        with pytest.raises(verify.VerifyError):
            verify.open_checkpoint(text, key)
    with pytest.raises(verify.VerifyError):
        verify.parse_key(vkey[:-2] + "AA")

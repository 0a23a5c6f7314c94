"""Writes a signed checkpoint, its records and proofs made by shared.tlog as JSON for
main.go (Go's sumdb/note and sumdb/tlog) to verify: see main.go."""

from __future__ import annotations

import base64
import json
import sys

from shared.tlog.checkpoint import Checkpoint, sign_checkpoint
from shared.tlog.hashing import append_leaves, leaf_hashes, merkle_root, root_from_peaks
from shared.tlog.note import Signer, generate_key
from shared.tlog.proofs import prove_record, prove_tree


def main() -> None:
    origin = "goodsforgood.example/donations"
    skey, vkey = generate_key(origin)
    records = [b"donation %d" % i for i in range(1000)]
    hashes = leaf_hashes(records)
    stored, peaks = append_leaves(0, [], hashes)

    def read(indexes: object) -> list[bytes]:
        assert isinstance(indexes, list)
        return [stored[i] for i in indexes]

    size = len(records)
    root = root_from_peaks(peaks)
    signed = sign_checkpoint(Checkpoint(origin, size, root), [Signer.from_key(skey)])

    def b64(h: bytes) -> str:
        return base64.b64encode(h).decode()

    out = {
        "vkey": vkey,
        "checkpoint": signed.decode(),
        "records": [b64(r) for r in records],
        "inclusion": [
            {"index": n, "proof": [b64(h) for h in prove_record(size, n, read)]}
            for n in (0, 1, 255, 256, 511, 777, 998, 999)
        ],
        "consistency": [
            {
                "old_size": m,
                "old_root": b64(merkle_root(hashes[:m])),
                "proof": [b64(h) for h in prove_tree(size, m, read)],
            }
            for m in (1, 2, 7, 256, 500, 513, 999, 1000)
        ],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

"""Check a donation proof or a disbursement proof offline: ``python -m tools.verify``.

Depends only on the standard library and ``cryptography`` and imports nothing from this
project, so it can be read in one sitting and copied anywhere. Given the log's verifier key
(pin it once: ``GET /v1/log/key``) and a proof (a saved ``/v1/orders/{id}/donation/proof``
or charities ``/v1/disbursements/{id}/proof`` body, or fetched from ``--url``), it checks:

1. the checkpoint is a signed note with a valid Ed25519 signature by that key (C2SP
   ``signed-note``; the key hash is the first 4 bytes of SHA-256(name || "\\n" || 0x01 || key));
2. the checkpoint body is ``<origin = key name>\\n<size>\\n<base64 root>\\n``;
3. every entry's leaf is in the tree of that root and size (RFC 9162 inclusion proof);
4. an order's leaves all carry its commitment SHA-256(order_id || 0x00 || salt) and are
   the entries the proof names (``entry_id``) or, with ``entry_id`` null, its posting; a
   disbursement's first leaf is it, the others its allocations, adding up to its amount.

Then it prints what was proven. Exit 1 with the reason on any failure (docs/LOG.md).

    python -m tools.verify --key 'goods-for-good/donations+1a2b3c4d+AQ...' proof.json
    python -m tools.verify --key-file log.key --url http://127.0.0.1:8002 --order o-1
    python -m tools.verify --key-file c.key --url http://127.0.0.1:8003 --disbursement UUID
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class VerifyError(Exception):
    pass


def b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerifyError(f"not base64: {text!r}") from None


def parse_key(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """``<name>+<8 hex key hash>+<base64(0x01 || public key)>`` -> (name, key hash, key)."""
    name, hash_hex, key_b64 = (vkey.strip().split("+", 2) + ["", ""])[:3]
    raw = b64(key_b64)
    if not name or len(raw) != 33 or raw[0] != 0x01:
        raise VerifyError("the key is not an Ed25519 verifier key <name>+<hash>+<key>")
    key_hash = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_hash.hex() != hash_hex:
        raise VerifyError("the key's hash does not match its name and public key")
    return name, key_hash, Ed25519PublicKey.from_public_bytes(raw[1:])


def open_checkpoint(note: str, vkey: str) -> tuple[int, bytes]:
    """Verifies the signed note and parses its checkpoint body: (tree size, root hash)."""
    name, key_hash, public_key = parse_key(vkey)
    text, sep, signatures = note.rpartition("\n\n")
    if not sep or not text:
        raise VerifyError("the checkpoint is not a signed note")
    text += "\n"
    signed = False
    for line in signatures.removesuffix("\n").split("\n"):
        dash, signer, sig_b64 = (line.split(" ") + ["", ""])[:3]
        sig = b64(sig_b64) if dash == "—" and signer == name else b""
        if sig[:4] != key_hash or len(sig) != 68:
            continue
        try:
            public_key.verify(sig[4:], text.encode())
        except InvalidSignature:
            raise VerifyError(f"the checkpoint's signature by {name} is invalid") from None
        signed = True
    if not signed:
        raise VerifyError(f"the checkpoint has no signature by the key {name}")
    lines = text.split("\n")
    if len(lines) < 4 or lines[0] != name or not lines[1].isdigit():
        raise VerifyError(f"the note is not a checkpoint of the log {name}")
    root = b64(lines[2])
    if len(root) != 32 or lines[1] != str(int(lines[1])):
        raise VerifyError("the checkpoint's size or root hash is malformed")
    return int(lines[1]), root


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def check_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> None:
    """RFC 9162 section 2.1.3.2: the audit path takes the leaf hash to ``root``."""
    if not 0 <= index < size:
        raise VerifyError(f"leaf index {index} is outside the tree of size {size}")
    fn, sn, r = index, size - 1, hashlib.sha256(b"\x00" + leaf).digest()
    for p in path:
        if sn == 0 or len(p) != 32:
            raise VerifyError(f"the inclusion proof of leaf {index} is malformed")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r != root:
        raise VerifyError(f"leaf {index} is not in the tree of size {size} and this root")


def included(proof: dict[str, Any], vkey: str) -> tuple[int, bytes, list[Any]]:
    """Size, root and the (entry, leaf fields) of a proof whose leaves are all in the tree."""
    size, root = open_checkpoint(proof["checkpoint"], vkey)
    entries = proof["entries"]
    if not entries or len({e["leaf_index"] for e in entries}) != len(entries):
        raise VerifyError("the proof has no entries or holds a leaf twice")
    for e in entries:
        path = [b64(h) for h in e["inclusion_proof"]]
        check_inclusion(b64(e["leaf_b64"]), e["leaf_index"], size, path, root)
    return size, root, [(e, json.loads(b64(e["leaf_b64"]))) for e in entries]


def verify(proof: dict[str, Any], order_id: str, vkey: str) -> list[str]:
    """Checks ``proof`` for ``order_id``; returns the lines saying what it proves."""
    size, root, leaves = included(proof, vkey)
    salt = bytes.fromhex(proof["order_salt"])
    commitment = hashlib.sha256(order_id.encode() + b"\x00" + salt).hexdigest()
    out = []
    for e, fields in leaves:
        if fields.get("order_commitment") != commitment:
            raise VerifyError(f"leaf {e['leaf_index']} is not a record of order {order_id}")
        if fields.get("type") == "posting" and e["entry_id"] is None:  # the order's final amount
            out.append(
                f"  leaf {e['leaf_index']}: posted {fields['posted_minor']} {fields['currency']}"
                f" to project {fields['project_id']} at {fields['posted_at']} (final)"
            )
            continue
        if fields.get("type") != "entry" or fields.get("entry_id") != e["entry_id"]:
            raise VerifyError(f"leaf {e['leaf_index']} is not entry {e['entry_id']}")
        out.append(
            f"  leaf {e['leaf_index']}: {fields['kind']} {fields['amount_minor']}"
            f" {fields['currency']} to project {fields['project_id']} (entry {e['entry_id']})"
        )
    return [
        f"OK: order {order_id} has {len(out)} record(s) in the log, tree size {size},"
        f" root {base64.b64encode(root).decode()}",
        *out,
    ]


def verify_disbursement(proof: dict[str, Any], disbursement_id: str, vkey: str) -> list[str]:
    """Checks a disbursement ``proof``; returns the lines saying what it proves."""
    size, root, leaves = included(proof, vkey)
    want = [("allocation", disbursement_id)] * len(leaves)
    want[0] = ("disbursement", disbursement_id)
    if [(f.get("type"), f.get("disbursement_id")) for _, f in leaves] != want:
        raise VerifyError(f"the leaves are not disbursement {disbursement_id} and its allocations")
    head, *allocations = [f for _, f in leaves]
    if sum(a["amount_minor"] for a in allocations) != head["amount_minor"]:
        raise VerifyError("the allocations do not add up to the disbursement's amount")
    return [
        f"OK: disbursement {disbursement_id} is in the log, tree size {size}, root"
        f" {base64.b64encode(root).decode()}: {head['amount_minor']} {head['currency']} from"
        f" project {head['project_id']} to {head['recipient']!r} for {head['purpose']!r}",
        f"  evidence sha256 {head['evidence_sha256']}; allocated from ledger entries:",
        *[f"  {a['entry_id']}: {a['amount_minor']}" for a in allocations],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key", help="the log's verifier key string")
    keys.add_argument("--key-file", help="a file holding the verifier key string")
    parser.add_argument("proof", nargs="?", help="a saved proof JSON file")
    parser.add_argument("--url", help="the donations or charities service, to fetch from")
    parser.add_argument("--order", help="the order id (default: the proof file's order_id)")
    parser.add_argument("--disbursement", help="the disbursement id (default: the file's)")
    args = parser.parse_args(argv)
    try:
        key = Path(args.key_file).read_text("utf-8") if args.key_file else args.key
        if args.proof:
            proof = json.loads(Path(args.proof).read_text("utf-8"))
        elif args.url and (args.order or args.disbursement):
            quoted = urllib.parse.quote(args.order or args.disbursement, safe="")
            path = "orders/{}/donation/proof" if args.order else "disbursements/{}/proof"
            with urllib.request.urlopen(f"{args.url.rstrip('/')}/v1/{path.format(quoted)}") as r:
                proof = json.load(r)
        else:
            parser.error("give a proof file, or --url and --order or --disbursement")
        if "order_salt" in proof:
            lines = verify(proof, args.order or proof["order_id"], key)
        else:
            lines = verify_disbursement(proof, args.disbursement or proof["disbursement_id"], key)
    except (VerifyError, OSError, ValueError, KeyError, TypeError) as e:
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

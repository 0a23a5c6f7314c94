"""A witness of the transparency logs: ``python -m tools.witness --url URL --state FILE``.

One ``--url``/``--state`` pair per log it watches: the donations service's log, the
charities service's, or both in one run (``--url D --state d.json --url C --state
c.json``); it exits 1 if any of them fails, and keeps each log's state apart.

Each run fetches the latest signed checkpoint, verifies its signature with the pinned key,
and checks it extends the last checkpoint this witness accepted: a consistency proof from
``/v1/log/consistency`` is verified here (RFC 9162, ``shared.tlog.proofs``). A smaller
tree, another root at the same size (a fork) or a proof that does not verify means the
log's history was rewritten: the witness says so, exits 1 and keeps its state. Otherwise
it appends the checkpoint to its state file (JSON) and exits 0.

The key is pinned on first use (``--key`` or, failing that, ``/v1/log/key``) and kept in
the state file; later runs refuse another key.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from shared.tlog.checkpoint import Checkpoint, open_checkpoint
from shared.tlog.note import NoteError, Verifier
from shared.tlog.proofs import ProofError, check_tree


class WitnessError(Exception):
    pass


def _get(url: str, path: str, **params: int) -> bytes:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url.rstrip('/')}{path}{query}", timeout=30) as response:
        body: bytes = response.read()
    return body


def load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"key": None, "checkpoints": []}
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    tmp.replace(path)  # atomic: a crash leaves the old state or the new one


def observe(url: str, state: dict[str, Any], key: str | None) -> tuple[Checkpoint, str]:
    """Verifies the log's latest checkpoint against ``state``; returns it and its note.
    Raises ``WitnessError`` naming the inconsistency."""
    pinned: str | None = state.get("key")
    if key is not None and pinned is not None and key.strip() != pinned:
        raise WitnessError("the given key is not the key this witness pinned")
    key = pinned or key or _get(url, "/v1/log/key").decode()
    verifier = Verifier.from_key(key.strip())
    state["key"] = verifier.key
    note = _get(url, "/v1/log/checkpoint")
    try:
        new = open_checkpoint(note, verifier.name, [verifier])
    except (NoteError, ValueError) as e:
        raise WitnessError(f"the checkpoint does not verify: {e}") from None
    if not state["checkpoints"]:
        return new, note.decode()
    last = state["checkpoints"][-1]
    old_size, old_root = int(last["size"]), base64.b64decode(last["root"])
    if new.size < old_size:
        raise WitnessError(f"the log shrank from size {old_size} to {new.size}")
    if new.size == old_size and new.root_hash != old_root:
        raise WitnessError(f"fork: size {new.size} was signed with two roots")
    body = json.loads(_get(url, "/v1/log/consistency", first=old_size, second=new.size))
    proof = [base64.b64decode(h) for h in body["proof"]]
    try:
        check_tree(proof, new.size, new.root_hash, old_size, old_root)
    except ProofError:
        raise WitnessError(
            f"inconsistent: the tree of size {new.size} does not extend the tree of size"
            f" {old_size} this witness saw (root {last['root']})"
        ) from None
    return new, note.decode()


def witness(url: str, state_path: Path, key: str | None) -> int:
    """One log: 0 and the state saved if its new checkpoint is consistent, else 1."""
    state = load_state(state_path)
    try:
        checkpoint, note = observe(url, state, key)
    except (WitnessError, NoteError, OSError, ValueError, KeyError) as e:
        print(f"WITNESS FAILED: {url}: {e}", file=sys.stderr)
        return 1
    root = base64.b64encode(checkpoint.root_hash).decode()
    last = state["checkpoints"][-1] if state["checkpoints"] else None
    if last is None or int(last["size"]) != checkpoint.size:
        state["checkpoints"].append({"size": checkpoint.size, "root": root, "note": note})
    save_state(state_path, state)
    print(f"witness: ok, size {checkpoint.size}, root {root}, log {checkpoint.origin}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", required=True, action="append", help="a service whose log to watch (repeat)"
    )
    parser.add_argument(
        "--state", required=True, type=Path, action="append", help="its JSON state (one per url)"
    )
    parser.add_argument(
        "--key", action="append", help="its verifier key (pinned on first use; one per url)"
    )
    args = parser.parse_args(argv)
    if len(args.state) != len(args.url) or (args.key and len(args.key) != len(args.url)):
        parser.error("give one --state (and, if any, one --key) per --url")
    keys = args.key or [None] * len(args.url)
    codes = [witness(u, s, k) for u, s, k in zip(args.url, args.state, keys, strict=True)]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())

"""Checkpoints (C2SP ``tlog-checkpoint``): a log's origin, tree size and root hash.

The body is exactly ``<origin>\\n<size>\\n<base64 root>\\n`` followed by optional
non-empty extension lines; the size is decimal without leading zeros; the root is the
canonical padded base64 of 32 bytes. Parsing accepts nothing else. A signed checkpoint
is a signed note whose text is the body, signed by a key whose name is the origin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shared.tlog.hashing import HASH_SIZE, Hash
from shared.tlog.note import (
    Signer,
    Verifier,
    b64decode_std,
    b64encode_std,
    is_valid_key_name,
    open_note,
    sign_note,
)

MAX_TREE_SIZE = 2**63 - 1  # Go's int64 tree sizes
_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f]")


class MalformedCheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: Hash
    extensions: tuple[str, ...] = ()


def format_checkpoint(checkpoint: Checkpoint) -> str:
    """The checkpoint body. The origin must be usable as a key name (no spaces, no '+')."""
    if not is_valid_key_name(checkpoint.origin) or _CONTROL.search(checkpoint.origin):
        raise MalformedCheckpointError(f"invalid origin {checkpoint.origin!r}")
    if not 0 <= checkpoint.size <= MAX_TREE_SIZE:
        raise MalformedCheckpointError(f"invalid tree size {checkpoint.size}")
    if len(checkpoint.root_hash) != HASH_SIZE:
        raise MalformedCheckpointError("root hash must be 32 bytes")
    for line in checkpoint.extensions:
        if not line or _CONTROL.search(line):
            raise MalformedCheckpointError("extension lines must be non-empty single lines")
    lines = [checkpoint.origin, str(checkpoint.size), b64encode_std(checkpoint.root_hash)]
    return "".join(f"{line}\n" for line in [*lines, *checkpoint.extensions])


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body, strictly as ``tlog-checkpoint`` says."""
    if not text.endswith("\n"):
        raise MalformedCheckpointError("a checkpoint ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line or _CONTROL.search(line) for line in lines):
        raise MalformedCheckpointError("a checkpoint has at least three non-empty lines")
    origin, size_line, root_line, *extensions = lines
    if _SIZE.fullmatch(size_line) is None or int(size_line) > MAX_TREE_SIZE:
        raise MalformedCheckpointError(f"invalid tree size {size_line!r}")
    try:
        root = b64decode_std(root_line)
    except ValueError:
        raise MalformedCheckpointError("invalid root hash") from None
    if len(root) != HASH_SIZE or b64encode_std(root) != root_line:
        raise MalformedCheckpointError("invalid root hash")
    return Checkpoint(origin, int(size_line), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Iterable[Signer]) -> bytes:
    return sign_note(format_checkpoint(checkpoint), signers)


def open_checkpoint(message: bytes, origin: str, verifiers: Iterable[Verifier]) -> Checkpoint:
    """Verify a signed checkpoint (see ``open_note``) and check it is for ``origin``."""
    checkpoint = parse_checkpoint(open_note(message, verifiers).text)
    if checkpoint.origin != origin:
        raise MalformedCheckpointError(f"checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    return checkpoint

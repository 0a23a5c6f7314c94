"""Where a service's log signing key comes from: a key string, else a key file made once.

The key's name is the log's origin (a checkpoint is signed by a key named after its
origin). The file holds the signer key string (``PRIVATE+KEY+<origin>+...``) and is
created with mode 0600 (never overwritten: ``O_EXCL``), like ``var/jwt-secret``.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.tlog.note import InvalidKeyError, Signer, generate_key


def load_or_create_signer(origin: str, key: str | None, key_file: Path) -> Signer:
    """The signer from ``key`` if given, else from ``key_file`` (generated there first if
    the file does not exist). Raises ``InvalidKeyError`` if the key is not for ``origin``."""
    if key is None:
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            skey, _ = generate_key(origin)
            try:
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first: use theirs
                pass
            else:
                with os.fdopen(fd, "w") as out:
                    out.write(skey + "\n")
        key = key_file.read_text().strip()
    signer = Signer.from_key(key)
    if signer.name != origin:
        raise InvalidKeyError(f"the log key is named {signer.name!r}, the origin is {origin!r}")
    return signer

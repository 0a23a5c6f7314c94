"""Ed25519 signed notes (C2SP ``signed-note``), byte-compatible with Go's ``sumdb/note``.

A signed note is its text (ending in a newline), a blank line, then one line per
signature: ``— <key name> <base64(4-byte key hash || 64-byte signature)>``. The key hash
is the first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key), big-endian.

Key strings are Go's: verifier ``<name>+<8 hex>+<base64(0x01 || public key)>`` and
signer ``PRIVATE+KEY+<name>+<8 hex>+<base64(0x01 || 32-byte seed)>``. A key string
whose hash does not match its name and key is rejected.

``open_note`` follows Go's ``note.Open``: the note must be UTF-8 without control
characters other than newline; signatures by unknown keys are kept but not trusted; a
signature by a known key that does not verify rejects the whole note; a note with no
verified signature is rejected (``UnverifiedNoteError``); more than 100 signatures is
malformed. We also reject notes over 1,000,000 bytes (the bound Go's ``tlog`` puts on
tree notes) before parsing anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1_000_000
_SIG_PREFIX = "— "

# Go's unicode.IsSpace: ASCII spaces, U+0085, U+00A0 and Unicode's White_Space set.
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_STD_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_KEY_HASH = re.compile(r"[0-9a-f]{8}")


class NoteError(ValueError):
    """A note or key that cannot be used."""


class MalformedNoteError(NoteError):
    def __init__(self, detail: str = "malformed note") -> None:
        super().__init__(detail)


class InvalidKeyError(NoteError):
    """A malformed signer or verifier key string."""


class InvalidSignatureError(NoteError):
    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"invalid signature for key {name}+{key_hash:08x}")
        self.name = name
        self.key_hash = key_hash


class AmbiguousKeyError(NoteError):
    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"ambiguous key {name}+{key_hash:08x}")


class UnverifiedNoteError(NoteError):
    """The note parsed but no known key signed it; the parsed note is attached."""

    def __init__(self, note: Note) -> None:
        super().__init__("note has no verifiable signatures")
        self.note = note


def is_valid_key_name(name: str) -> bool:
    """Non-empty, valid UTF-8, no Unicode space and no '+' (as Go's ``isValidName``)."""
    if not name or "+" in name or any(c in _SPACES for c in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def b64decode_std(text: str) -> bytes:
    """Standard padded base64 as Go's ``base64.StdEncoding`` decodes it; ValueError else."""
    if _STD_BASE64.fullmatch(text) is None:
        raise ValueError("not standard base64")
    return base64.b64decode(text)


def b64encode_std(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_hash(name: str, encoded_key: bytes) -> int:
    """First 4 bytes, big-endian, of SHA-256(name || "\\n" || alg byte || public key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + encoded_key).digest()
    return int.from_bytes(digest[:4], "big")


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    name: str
    key_hash: int
    public_key: bytes

    @classmethod
    def from_key(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<hash>+<base64 key>`` (Go's ``NewVerifier``)."""
        name, _, rest = vkey.partition("+")
        hash16, _, key64 = rest.partition("+")
        try:
            key = b64decode_std(key64)
        except ValueError:
            raise InvalidKeyError("malformed verifier id") from None
        if _KEY_HASH.fullmatch(hash16) is None or not is_valid_key_name(name) or not key:
            raise InvalidKeyError("malformed verifier id")
        if int(hash16, 16) != key_hash(name, key):
            raise InvalidKeyError("invalid verifier hash")
        if key[0] != ALG_ED25519:
            raise InvalidKeyError("unknown verifier algorithm")
        if len(key) != 33:
            raise InvalidKeyError("malformed verifier id")
        return cls(name=name, key_hash=int(hash16, 16), public_key=key[1:])

    @property
    def key(self) -> str:
        """The verifier key string."""
        encoded = b64encode_std(bytes([ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_hash:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def verifier_key(name: str, public_key: bytes) -> str:
    """The verifier key string for an Ed25519 public key (Go's ``NewEd25519VerifierKey``)."""
    if len(public_key) != 32:
        raise InvalidKeyError(f"invalid public key size {len(public_key)}, expected 32")
    if not is_valid_key_name(name):
        raise InvalidKeyError(f"invalid key name {name!r}")
    encoded = bytes([ALG_ED25519]) + public_key
    return Verifier(name=name, key_hash=key_hash(name, encoded), public_key=public_key).key


@dataclass(frozen=True)
class Signer:
    name: str
    key_hash: int
    _private: Ed25519PrivateKey = field(repr=False, compare=False)

    @classmethod
    def from_key(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hash>+<base64 seed>`` (Go's ``NewSigner``)."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise InvalidKeyError("malformed signer id")
        _, _, name, hash16, key64 = parts
        try:
            key = b64decode_std(key64)
        except ValueError:
            raise InvalidKeyError("malformed signer id") from None
        if _KEY_HASH.fullmatch(hash16) is None or not is_valid_key_name(name) or not key:
            raise InvalidKeyError("malformed signer id")
        if key[0] != ALG_ED25519:
            raise InvalidKeyError("unknown signer algorithm")
        if len(key) != 33:
            raise InvalidKeyError("malformed signer id")
        private = Ed25519PrivateKey.from_private_bytes(key[1:])
        public = bytes([ALG_ED25519]) + _public_bytes(private.public_key())
        if int(hash16, 16) != key_hash(name, public):
            raise InvalidKeyError("invalid signer hash")
        return cls(name=name, key_hash=int(hash16, 16), _private=private)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_hash, _public_bytes(self._private.public_key()))


def generate_key(name: str) -> tuple[str, str]:
    """A new Ed25519 key pair for ``name``: (signer key, verifier key) as Go formats them."""
    if not is_valid_key_name(name):
        raise InvalidKeyError(f"invalid key name {name!r}")
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = bytes([ALG_ED25519]) + _public_bytes(private.public_key())
    h = key_hash(name, public)
    skey = f"PRIVATE+KEY+{name}+{h:08x}+{b64encode_std(bytes([ALG_ED25519]) + seed)}"
    vkey = f"{name}+{h:08x}+{b64encode_std(public)}"
    return skey, vkey


@dataclass(frozen=True)
class Signature:
    name: str
    key_hash: int
    base64: str


@dataclass(frozen=True)
class Note:
    text: str
    sigs: tuple[Signature, ...] = ()
    unverified_sigs: tuple[Signature, ...] = ()


def _check_text(text: str) -> None:
    if not text.endswith("\n") or _CONTROL.search(text) is not None:
        raise MalformedNoteError()


def sign_note(text: str, signers: Iterable[Signer]) -> bytes:
    """The signed note: ``text`` (ending in a newline), a blank line, one line per signer."""
    _check_text(text)
    message = text.encode("utf-8")
    lines = []
    for signer in signers:
        if not is_valid_key_name(signer.name):
            raise NoteError("invalid signer")
        sig = signer.key_hash.to_bytes(4, "big") + signer.sign(message)
        lines.append(f"{_SIG_PREFIX}{signer.name} {b64encode_std(sig)}\n")
    if not lines:
        raise NoteError("a note needs at least one signer")
    return message + b"\n" + "".join(lines).encode("utf-8")


def open_note(message: bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse ``message`` and check its signatures against ``verifiers`` (Go's ``note.Open``).

    Returns the note with the verified and the unknown-key signatures; raises
    ``MalformedNoteError``, ``InvalidSignatureError``, ``AmbiguousKeyError`` or
    ``UnverifiedNoteError``.
    """
    if len(message) > MAX_NOTE_BYTES:
        raise MalformedNoteError("note too long")
    try:
        decoded = message.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError() from None
    if _CONTROL.search(decoded) is not None:
        raise MalformedNoteError()
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError()
    text, sig_block = decoded[: split + 1], decoded[split + 2 :]
    if not sig_block.endswith("\n"):
        raise MalformedNoteError()

    known: dict[tuple[str, int], list[Verifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_hash), []).append(v)

    text_bytes = text.encode("utf-8")
    sigs: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[str] = set()
    lines = sig_block[:-1].split("\n")
    for count, line in enumerate(lines, start=1):
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError()
        body = line[len(_SIG_PREFIX) :]
        name, _, b64 = body.partition(" ")
        try:
            raw = b64decode_std(b64)
        except (ValueError, binascii.Error):
            raise MalformedNoteError() from None
        if not is_valid_key_name(name) or not b64 or len(raw) < 5:
            raise MalformedNoteError()
        h = int.from_bytes(raw[:4], "big")
        if count > MAX_SIGNATURES:
            raise MalformedNoteError("too many signatures")
        candidates = known.get((name, h))
        if candidates is None:
            if body not in seen_unverified:
                seen_unverified.add(body)
                unverified.append(Signature(name, h, b64))
            continue
        if len(candidates) > 1:
            raise AmbiguousKeyError(name, h)
        if (name, h) in seen:
            continue
        seen.add((name, h))
        if not candidates[0].verify(text_bytes, raw[4:]):
            raise InvalidSignatureError(name, h)
        sigs.append(Signature(name, h, b64))

    note = Note(text=text, sigs=tuple(sigs), unverified_sigs=tuple(unverified))
    if not sigs:
        raise UnverifiedNoteError(note)
    return note

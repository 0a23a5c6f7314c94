from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.tlog.checkpoint import (
    Checkpoint,
    MalformedCheckpointError,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from shared.tlog.hashing import leaf_hash
from shared.tlog.note import (
    AmbiguousKeyError,
    InvalidKeyError,
    InvalidSignatureError,
    MalformedNoteError,
    NoteError,
    Signature,
    Signer,
    UnverifiedNoteError,
    Verifier,
    generate_key,
    open_note,
    sign_note,
    verifier_key,
)

# From golang.org/x/mod sumdb/note/note_test.go (TestNewVerifier, TestNewSigner, TestSign,
# TestOpen, TestVerifierList).
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n"
PETER = Signature("PeterNeumann", 0xC74F20A3, PETER_B64)
ENOCH = Signature("EnochRoot", 0xAF0CFE78, ENOCH_B64)

# From C2SP signed-note.md, "Verifier keys / Example".
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n— example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

# From C2SP tlog-checkpoint.md (the example's body; its key is not published).
C2SP_CHECKPOINT_BODY = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def peter() -> Verifier:
    return Verifier.from_key(PETER_VKEY)


def enoch() -> Verifier:
    return Verifier.from_key(ENOCH_VKEY)


def test_go_sign_vector() -> None:
    signer = Signer.from_key(PETER_SKEY)
    assert (signer.name, signer.key_hash) == ("PeterNeumann", 0xC74F20A3)
    assert sign_note(TEXT, [signer]) == (TEXT + "\n" + PETER_SIG).encode()
    assert signer.verifier() == peter()
    assert peter().key == PETER_VKEY


def test_c2sp_signed_note_example_verifies() -> None:
    note = open_note(C2SP_NOTE.encode(), [Verifier.from_key(C2SP_VKEY)])
    assert note.text == "This is an example message.\n"
    assert [s.name for s in note.sigs] == ["example.com/foo"]


def test_go_open_one_verified_one_unknown() -> None:
    note = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter()])
    assert note.text == TEXT
    assert note.sigs == (PETER,)
    assert note.unverified_sigs == (ENOCH,)
    both = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter(), enoch()])
    assert both.sigs == (PETER, ENOCH)
    assert both.unverified_sigs == ()


def test_go_open_no_known_key_is_unverified() -> None:
    with pytest.raises(UnverifiedNoteError, match="no verifiable signatures") as info:
        open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [])
    assert info.value.note.sigs == ()
    assert info.value.note.unverified_sigs == (PETER, ENOCH)


def test_go_open_ambiguous_verifier() -> None:
    with pytest.raises(AmbiguousKeyError, match="ambiguous key EnochRoot\\+af0cfe78"):
        open_note((TEXT + "\n" + ENOCH_SIG).encode(), [enoch(), peter(), enoch()])
    # An ambiguous key nobody used is harmless.
    open_note((TEXT + "\n" + PETER_SIG).encode(), [enoch(), peter(), enoch()])


def test_go_open_too_many_signatures() -> None:
    for verifiers in ([peter()], []):
        with pytest.raises(MalformedNoteError):
            open_note((TEXT + "\n" + PETER_SIG * 101).encode(), verifiers)
    # 100 is still accepted (duplicates of one key count once).
    assert open_note((TEXT + "\n" + PETER_SIG * 100).encode(), [peter()]).sigs == (PETER,)


def test_over_long_note_is_malformed() -> None:
    long_text = "x" * 1_000_000 + "\n"
    with pytest.raises(MalformedNoteError, match="too long"):
        open_note((long_text + "\n" + PETER_SIG).encode(), [peter()])


def test_go_open_invalid_signature() -> None:
    # Go slices at byte 60 of the UTF-8 line (the em dash is 3 bytes).
    sig = PETER_SIG.encode()
    bad = sig[:60] + b"ABCD" + sig[60:]
    with pytest.raises(InvalidSignatureError, match="PeterNeumann\\+c74f20a3"):
        open_note((TEXT + "\n").encode() + bad, [peter()])


def test_go_open_duplicates_dropped() -> None:
    sig = ENOCH_SIG.encode()
    enoch_abcd = sig[:60] + b"ABCD" + sig[60:]
    msg = (TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG).encode() + enoch_abcd
    note = open_note(msg, [peter()])
    assert note.sigs == (PETER,)
    assert note.unverified_sigs == (
        ENOCH,
        Signature(
            "EnochRoot",
            0xAF0CFE78,
            "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n"
            + "ABCD"
            + "2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=",
        ),
    )


@pytest.mark.parametrize(
    "msg",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + "— Bad Name " + PETER_B64,
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + "— PeterNeumann AAAA\n",  # signature too short
        TEXT + "\n" + "— PeterNeumann " + PETER_B64[:-1] + "\n",  # bad padding
        TEXT + "\n" + "- PeterNeumann " + PETER_B64 + "\n",  # hyphen, not em dash
    ],
)
def test_go_open_malformed(msg: str) -> None:
    with pytest.raises(MalformedNoteError):
        open_note(msg.encode(), [peter()])


def test_open_rejects_invalid_utf8() -> None:
    with pytest.raises(MalformedNoteError):
        open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [peter()])


def test_go_verifier_key_manglings_rejected() -> None:
    # Go's TestNewVerifier: every proper substring and every single-byte increment fails.
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(InvalidKeyError):
                    Verifier.from_key(b[i:j])
    for i in range(len(b)):
        with pytest.raises(InvalidKeyError):
            Verifier.from_key(b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :])
    # Wrong key length and unknown algorithm, each with a key hash adjusted to match.
    with pytest.raises(InvalidKeyError):
        Verifier.from_key(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
    with pytest.raises(InvalidKeyError):
        Verifier.from_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_go_signer_key_manglings_rejected() -> None:
    b = PETER_SKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(InvalidKeyError):
                    Signer.from_key(b[i:j])
    for i in range(len(b)):
        with pytest.raises(InvalidKeyError):
            Signer.from_key(b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :])


def test_generated_keys_are_self_consistent() -> None:
    skey, vkey = generate_key("goodsforgood.example/donations")
    signer, verifier = Signer.from_key(skey), Verifier.from_key(vkey)
    assert signer.verifier() == verifier
    assert verifier_key(verifier.name, verifier.public_key) == vkey
    sig = signer.sign(b"hi")
    assert verifier.verify(b"hi", sig)
    assert not verifier.verify(b"hj", sig)
    assert not verifier.verify(b"hi", bytes([sig[0] ^ 1]) + sig[1:])
    with pytest.raises(InvalidKeyError):
        generate_key("bad name")
    with pytest.raises(InvalidKeyError):
        verifier_key("x", b"\x00" * 31)


@given(
    st.text(st.characters(exclude_categories=["Cs", "Cc"]) | st.just("\n"), max_size=200),
    st.data(),
)
def test_sign_open_roundtrip_and_tampering(body: str, data: st.DataObject) -> None:
    text = body + "\n"
    skey, vkey = generate_key("log.example/x")
    signer, verifier = Signer.from_key(skey), Verifier.from_key(vkey)
    msg = sign_note(text, [signer])
    note = open_note(msg, [verifier])
    assert note.text == text
    assert [(s.name, s.key_hash) for s in note.sigs] == [(signer.name, signer.key_hash)]

    # Any changed byte of the text fails (a tampered note is malformed, unverified or
    # invalid, never accepted).
    text_bytes = text.encode()
    i = data.draw(st.integers(0, len(text_bytes) - 1), label="text byte")
    tampered = bytearray(msg)
    tampered[i] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(NoteError):
        open_note(bytes(tampered), [verifier])

    # A flipped bit of the signature itself (after the 4-byte key hash) fails.
    sig_line = msg[len(text_bytes) + 1 :].decode()
    name, b64 = sig_line[2:-1].split(" ")
    raw = bytearray(base64.b64decode(b64))
    bit = data.draw(st.integers(32, len(raw) * 8 - 1), label="signature bit")
    raw[bit // 8] ^= 1 << (bit % 8)
    forged = text_bytes + b"\n" + f"— {name} {base64.b64encode(raw).decode()}\n".encode()
    with pytest.raises(InvalidSignatureError):
        open_note(forged, [verifier])

    # The right key under another name is an unknown key: the note is unverified.
    renamed = msg.replace(b"log.example/x ", b"log.example/y ")
    with pytest.raises(UnverifiedNoteError):
        open_note(renamed, [verifier])
    # Another key under the same name is unknown too.
    _, other_vkey = generate_key("log.example/x")
    with pytest.raises(UnverifiedNoteError):
        open_note(msg, [Verifier.from_key(other_vkey)])


def test_sign_refuses_bad_text() -> None:
    signer = Signer.from_key(PETER_SKEY)
    with pytest.raises(MalformedNoteError):
        sign_note("abc", [signer])
    with pytest.raises(MalformedNoteError):
        sign_note("a\x01b\n", [signer])
    with pytest.raises(NoteError):
        sign_note(TEXT, [])


# -- checkpoints -------------------------------------------------------------------------


def test_c2sp_checkpoint_example_parses_and_formats_back() -> None:
    cp = parse_checkpoint(C2SP_CHECKPOINT_BODY)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.extensions == ()
    assert format_checkpoint(cp) == C2SP_CHECKPOINT_BODY


def test_checkpoint_with_extensions_roundtrips() -> None:
    cp = Checkpoint("log.example/a", 0, leaf_hash(b""), ("ext one", "ext two"))
    assert parse_checkpoint(format_checkpoint(cp)) == cp


@pytest.mark.parametrize(
    "body",
    [
        C2SP_CHECKPOINT_BODY[:-1],  # no final newline
        "\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # empty origin
        "example.com/a\n020852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/a\n+1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/a\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/a\n 1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/a\n0x10\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/a\n9223372036854775808\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/a\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",  # no padding
        "example.com/a\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n",  # non-canonical
        "example.com/a\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",  # empty extension
        "example.com/a\n1\nAAAA\n",  # not 32 bytes
        "example.com/a\n1\n",
    ],
)
def test_malformed_checkpoints_rejected(body: str) -> None:
    with pytest.raises(MalformedCheckpointError):
        parse_checkpoint(body)


def test_format_refuses_what_parse_would_refuse() -> None:
    root = leaf_hash(b"")
    for bad in [
        Checkpoint("", 1, root),
        Checkpoint("a b", 1, root),
        Checkpoint("a+b", 1, root),
        Checkpoint("a", -1, root),
        Checkpoint("a", 2**63, root),
        Checkpoint("a", 1, root[:31]),
        Checkpoint("a", 1, root, ("",)),
        Checkpoint("a", 1, root, ("x\ny",)),
    ]:
        with pytest.raises(MalformedCheckpointError):
            format_checkpoint(bad)


@given(st.integers(0, 2**63 - 1), st.binary(min_size=32, max_size=32))
def test_signed_checkpoint_roundtrip(size: int, root: bytes) -> None:
    signer = Signer.from_key(PETER_SKEY)
    cp = Checkpoint("PeterNeumann", size, root)
    msg = sign_checkpoint(cp, [signer])
    assert open_checkpoint(msg, "PeterNeumann", [peter()]) == cp
    with pytest.raises(MalformedCheckpointError):
        open_checkpoint(msg, "SomeoneElse", [peter()])
    with pytest.raises(UnverifiedNoteError):
        open_checkpoint(msg, "PeterNeumann", [enoch()])

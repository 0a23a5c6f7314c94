"""Transparency-log kit: RFC 9162 Merkle trees, proofs, tiles, signed checkpoints.

``hashing``, ``proofs``, ``tiles``, ``note`` and ``checkpoint`` are pure functions, no I/O.
``store`` (the log's tables and SQL), ``sequencer`` (the worker that appends and signs),
``api`` (reads and the ``/v1/log`` endpoints) and ``signing`` (the key) run a log in a
service, which adds only its leaf formats (a ``LeafSource`` per record table). What is
guaranteed:

- Hashes are RFC 9162's: leaf SHA-256(0x00 || leaf), node SHA-256(0x01 || left ||
  right), the empty tree's root SHA-256(""). Roots, inclusion and consistency proofs
  agree with Certificate Transparency's published test vectors and with Go's
  ``golang.org/x/mod/sumdb/tlog`` (the tests hold both), so any RFC 9162 verifier
  accepts what we serve.
- Storage is append-only: ``hashing`` lays every complete subtree's hash out once in Go
  ``tlog``'s stored-hash order. Appending a batch (``append_leaves``) needs only the
  tree's peaks, read once per batch, and computes all new hashes in one pass; a tree of
  n records holds exactly 2n - popcount(n) hashes. Nothing stored is ever rewritten.
- Every proof, root and tile is one batched read: ``proofs`` and ``tiles`` first list
  the stored indexes they need, then assemble the answer from those hashes, so a
  database-backed reader is a single query (async callers await it between the steps).
  Verification (``check_record``, ``check_tree``) raises ``ProofError`` on any
  changed hash, index or size, and on proofs too long or too short.
- Checkpoints and signed notes are byte-for-byte C2SP ``tlog-checkpoint`` and
  ``signed-note`` with Ed25519 keys in Go ``sumdb/note``'s key-string format, so
  ``note.Open`` in Go verifies what ``sign_checkpoint`` writes and vice versa. Parsing is
  strict (canonical size and base64 only); a known key's bad signature rejects the note;
  unknown keys are ignored; a note no known key signed is rejected.
"""

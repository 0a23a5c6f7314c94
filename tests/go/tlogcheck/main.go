// Command tlogcheck verifies, with Go's golang.org/x/mod/sumdb/note and sumdb/tlog,
// a signed checkpoint, its records and proofs produced by shared.tlog (emit.py):
//
//	python tests/go/tlogcheck/emit.py | (cd tests/go/tlogcheck && go run .)
//
// It prints "ok" and exits 0 only if every signature, root and proof checks out.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type input struct {
	VKey       string   `json:"vkey"`
	Checkpoint string   `json:"checkpoint"`
	Records    []string `json:"records"`
	Inclusion  []struct {
		Index int64       `json:"index"`
		Proof []tlog.Hash `json:"proof"`
	} `json:"inclusion"`
	Consistency []struct {
		OldSize int64       `json:"old_size"`
		OldRoot tlog.Hash   `json:"old_root"`
		Proof   []tlog.Hash `json:"proof"`
	} `json:"consistency"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tlogcheck: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("decode input: %v", err)
	}
	v, err := note.NewVerifier(in.VKey)
	if err != nil {
		fail("NewVerifier: %v", err)
	}
	n, err := note.Open([]byte(in.Checkpoint), note.VerifierList(v))
	if err != nil {
		fail("note.Open: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) != 4 || lines[3] != "" || lines[0] != v.Name() {
		fail("checkpoint body %q", n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size != int64(len(in.Records)) {
		fail("checkpoint size %q for %d records", lines[1], len(in.Records))
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("checkpoint root: %v", err)
	}

	var storage []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			out[i] = storage[x]
		}
		return out, nil
	})
	var leaves []tlog.Hash
	for i, r := range in.Records {
		data, err := base64.StdEncoding.DecodeString(r)
		if err != nil {
			fail("record %d: %v", i, err)
		}
		hashes, err := tlog.StoredHashes(int64(i), data, reader)
		if err != nil {
			fail("StoredHashes: %v", err)
		}
		storage = append(storage, hashes...)
		leaves = append(leaves, tlog.RecordHash(data))
	}
	th, err := tlog.TreeHash(size, reader)
	if err != nil || th != root {
		fail("TreeHash(%d) = %v, checkpoint says %v", size, th, root)
	}
	for _, p := range in.Inclusion {
		if err := tlog.CheckRecord(p.Proof, size, root, p.Index, leaves[p.Index]); err != nil {
			fail("CheckRecord(%d): %v", p.Index, err)
		}
	}
	for _, p := range in.Consistency {
		if err := tlog.CheckTree(p.Proof, size, root, p.OldSize, p.OldRoot); err != nil {
			fail("CheckTree(%d): %v", p.OldSize, err)
		}
	}
	fmt.Printf("ok: checkpoint of %d records, %d inclusion and %d consistency proofs verified by Go\n",
		size, len(in.Inclusion), len(in.Consistency))
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/gatehouse/gatehouse/internal/audit"
	"golang.org/x/mod/sumdb/note"
)

// auditProve prints the inclusion proof of one record: gatehouse audit
// prove --db F --index N [--size S] [--key K].
func auditProve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("prove", stderr)
	var sf storeFlags
	sf.register(fs)
	index := new(int64)
	*index = -1
	fs.Func("index", "the record's `index` (required)", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return errors.New("want a record index, 0 or more")
		}
		*index = n
		return nil
	})
	size := fs.Int64("size", 0, "prove inclusion in the tree of this `size` (default: the latest signed checkpoint's)")
	key := fs.String("key", "", "check the proof with this verifier `key` before printing it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *index < 0 {
		return fmt.Errorf("%w: --index is required", errUsage)
	}
	db, a, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	p, err := audit.ProveInclusion(ctx, a, a, *index, *size)
	if err != nil {
		return err
	}
	if p.Checkpoint == "" {
		fmt.Fprintf(stderr, "warning: no signed checkpoint of tree size %d is stored; the proof shows the root only\n", p.TreeSize)
	}
	return printProof(stdout, p, *key)
}

// auditConsistency prints the consistency proof between two tree sizes:
// gatehouse audit consistency --db F --old N [--new M] [--key K].
func auditConsistency(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("consistency", stderr)
	var sf storeFlags
	sf.register(fs)
	oldSize := fs.Int64("old", 0, "the older tree `size` (a checkpoint a witness holds)")
	newSize := fs.Int64("new", 0, "the newer tree `size` (default: the latest signed checkpoint's)")
	key := fs.String("key", "", "check the proof with this verifier `key` before printing it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *oldSize < 1 {
		return fmt.Errorf("%w: --old is required (a tree size of at least 1)", errUsage)
	}
	db, a, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	p, err := audit.ProveConsistency(ctx, a, a, *oldSize, *newSize)
	if err != nil {
		return err
	}
	if p.OldCheckpoint == "" || p.NewCheckpoint == "" {
		fmt.Fprintf(stderr, "warning: signed checkpoints of tree sizes %d and %d are not both stored; the proof shows the roots only\n", p.OldSize, p.NewSize)
	}
	return printProof(stdout, p, *key)
}

// printProof prints p as JSON, after checking it with the verifier key when
// one is given.
func printProof(w io.Writer, p interface{ Verify(note.Verifier) error }, key string) error {
	if key != "" {
		v, err := loadVerifier(key)
		if err != nil {
			return err
		}
		if err := p.Verify(v); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// verifyProof checks a proof printed by prove or consistency (verify
// --proof FILE --key K): exit status 1 when it does not hold.
func verifyProof(path, key string, stdout io.Writer) error {
	if key == "" {
		return fmt.Errorf("%w: --key is required to check a proof", errUsage)
	}
	v, err := loadVerifier(key)
	if err != nil {
		return err
	}
	var b []byte
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return err
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("reading proof: %w", err)
	}
	switch head.Type {
	case "inclusion":
		var p audit.InclusionProof
		if err = json.Unmarshal(b, &p); err == nil {
			if err = p.Verify(v); err == nil {
				fmt.Fprintf(stdout, "OK: record %d is in the signed tree of size %d\n", p.Index, p.TreeSize)
			}
		}
	case "consistency":
		var p audit.ConsistencyProof
		if err = json.Unmarshal(b, &p); err == nil {
			if err = p.Verify(v); err == nil {
				fmt.Fprintf(stdout, "OK: the signed tree of size %d is a prefix of the signed tree of size %d\n", p.OldSize, p.NewSize)
			}
		}
	default:
		return fmt.Errorf("reading proof: unknown type %q (want inclusion or consistency)", head.Type)
	}
	if errors.Is(err, audit.ErrProof) {
		fmt.Fprintf(stdout, "FAIL %v\n", err)
		return exitError{code: 1}
	}
	if err != nil {
		return fmt.Errorf("reading proof: %w", err)
	}
	return nil
}

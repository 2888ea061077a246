package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/store"
	"golang.org/x/mod/sumdb/note"
)

func init() {
	commands["audit"] = command{summary: "verify, query and export the audit log (offline)", run: runAudit}
}

const auditUsage = `usage: gatehouse audit <subcommand> [flags]

  verify      check the log (or a range, or a bundle) against its signed checkpoints
  query       list records by agent, tool, verdict, time or correlation id
  export      write a range of the log as a self-verifying bundle
  checkpoint  print the latest signed checkpoint
  prove       print the inclusion proof of one record (RFC 6962) for a witness
  consistency print the consistency proof between two tree sizes (RFC 6962)
  keygen      create a checkpoint signing key and its verifier key

The store is opened directly (--db FILE for SQLite, --dsn URL for PostgreSQL):
these commands work without a running gateway.`

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stdout, auditUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "verify":
		return auditVerify(ctx, args, stdout, stderr)
	case "query":
		return auditQuery(ctx, args, stdout, stderr)
	case "export":
		return auditExport(ctx, args, stdout, stderr)
	case "checkpoint":
		return auditCheckpoint(ctx, args, stdout, stderr)
	case "prove":
		return auditProve(ctx, args, stdout, stderr)
	case "consistency":
		return auditConsistency(ctx, args, stdout, stderr)
	case "keygen":
		return auditKeygen(args, stdout, stderr)
	}
	fmt.Fprintln(stderr, auditUsage)
	return fmt.Errorf("%w: unknown audit subcommand %q", errUsage, sub)
}

// storeFlags are the flags that name the store.
type storeFlags struct{ db, dsn string }

func (s *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.db, "db", "", "SQLite store `file`")
	fs.StringVar(&s.dsn, "dsn", "", "PostgreSQL store `URL` (postgres://…)")
}

func (s *storeFlags) open(ctx context.Context) (*store.DB, *store.AuditLog, error) {
	dsn := s.dsn
	switch {
	case s.db != "" && s.dsn != "":
		return nil, nil, fmt.Errorf("%w: give --db or --dsn, not both", errUsage)
	case s.db != "":
		if _, err := os.Stat(s.db); err != nil {
			return nil, nil, fmt.Errorf("opening audit store: %w", err)
		}
		dsn = s.db
	case s.dsn == "":
		return nil, nil, fmt.Errorf("%w: --db or --dsn is required", errUsage)
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	a, err := store.OpenAuditLog(ctx, db)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, a, nil
}

// configDSN returns the store the configuration's gateway uses: the
// store.dsn_file's DSN, else <data_dir>/gatehouse.db.
func configDSN(cfg *config.File) (string, error) {
	if cfg.Store.DSNFile != "" {
		return cfg.ReadSecret(cfg.Store.DSNFile)
	}
	return filepath.Join(cfg.Path(cfg.DataDir), "gatehouse.db"), nil
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gatehouse audit "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// keyText returns a key given inline or as @file.
func keyText(s string) (string, error) {
	if path, ok := strings.CutPrefix(s, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("reading verifier key: %w", err)
		}
		s = string(b)
	}
	return strings.TrimSpace(s), nil
}

// loadVerifier parses a note verifier key, given inline or as @file.
func loadVerifier(s string) (note.Verifier, error) {
	k, err := keyText(s)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(k)
	if err != nil {
		return nil, fmt.Errorf("parsing verifier key: %w", err)
	}
	return v, nil
}

func auditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", stderr)
	var sf storeFlags
	sf.register(fs)
	from := fs.Int64("from", 0, "first `index` to check")
	to := fs.Int64("to", 0, "check up to this `index` (exclusive; default: the end)")
	bundle := fs.String("bundle", "", "verify an exported bundle `file` instead of a store")
	proof := fs.String("proof", "", "check a proof `file` printed by prove or consistency (- for stdin) instead of a store")
	key := fs.String("key", "", "trusted checkpoint verifier `key` (name+hash+base64, or @file)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *proof != "" {
		return verifyProof(*proof, *key, stdout)
	}
	var rep *audit.Report
	if *bundle != "" {
		f, err := os.Open(*bundle)
		if err != nil {
			return err
		}
		defer f.Close()
		k := *key
		if k == "" {
			if k, err = audit.BundleKey(f); err != nil {
				return err
			}
			if k == "" {
				return fmt.Errorf("%w: --key is required (the bundle names no key)", errUsage)
			}
			fmt.Fprintln(stderr, "warning: using the key recorded in the bundle; pass --key with a key obtained independently to rule out a forged bundle")
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
		}
		v, err := loadVerifier(k)
		if err != nil {
			return err
		}
		if rep, err = audit.VerifyBundle(ctx, f, v, 0); err != nil {
			return err
		}
	} else {
		if *key == "" && sf.db != "" {
			// The gateway's default layout keeps the verifier key next to
			// the store.
			if pub := filepath.Join(filepath.Dir(sf.db), "keys", "audit.key.pub"); fileExists(pub) {
				*key = "@" + pub
				fmt.Fprintf(stderr, "using the verifier key %s from the data directory; pass --key with a key kept elsewhere to rule out a replaced key\n", pub)
			}
		}
		if *key == "" {
			return fmt.Errorf("%w: --key is required", errUsage)
		}
		v, err := loadVerifier(*key)
		if err != nil {
			return err
		}
		db, a, err := sf.open(ctx)
		if err != nil {
			return err
		}
		defer db.Close()
		if rep, err = audit.VerifyBackend(ctx, a, a, audit.VerifyOptions{Verifier: v, From: *from, To: *to}); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	if !rep.OK() {
		return exitError{code: 1}
	}
	return nil
}

func printReport(w io.Writer, rep *audit.Report) {
	fmt.Fprintf(w, "checked entries [%d, %d): %d read\n", rep.From, rep.To, rep.Entries)
	if n := len(rep.Verified); n > 0 {
		fmt.Fprintf(w, "signed checkpoints verified: %d (largest tree size %d)\n", n, rep.Verified[n-1])
	}
	if rep.Unsigned > 0 {
		fmt.Fprintf(w, "entries not yet covered by a signed checkpoint: %d\n", rep.Unsigned)
	}
	for _, s := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
	for _, d := range rep.Discrepancies {
		fmt.Fprintf(w, "FAIL %s\n", d)
	}
	if rep.OK() {
		fmt.Fprintln(w, "OK")
	} else {
		fmt.Fprintf(w, "FAILED: %d discrepancies\n", len(rep.Discrepancies))
	}
}

func auditQuery(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("query", stderr)
	var sf storeFlags
	sf.register(fs)
	var f audit.Filter
	fs.StringVar(&f.Agent, "agent", "", "agent `name`")
	fs.StringVar(&f.Tool, "tool", "", "tool `name`")
	fs.StringVar(&f.Outcome, "verdict", "", "verdict: allow, challenge or block")
	fs.StringVar(&f.Correlation, "correlation", "", "correlation `id`")
	fs.IntVar(&f.Class, "class", 0, "OCSF class_uid (e.g. 6003 API Activity, 3002 Authentication)")
	since := fs.String("since", "", "records from this `time` on: a duration ago (24h) or RFC 3339")
	until := fs.String("until", "", "records before this `time`: a duration ago or RFC 3339")
	fs.Int64Var(&f.From, "from", 0, "first `index`")
	fs.IntVar(&f.Limit, "limit", 100, "maximum `number` of records")
	asJSON := fs.Bool("json", false, "print records as JSON Lines")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var err error
	if f.Since, err = parseWhen(*since); err != nil {
		return err
	}
	if f.Until, err = parseWhen(*until); err != nil {
		return err
	}
	if f.Outcome != "" && f.Outcome != "allow" && f.Outcome != "challenge" && f.Outcome != "block" {
		return fmt.Errorf("%w: --verdict must be allow, challenge or block", errUsage)
	}
	db, a, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	rs, err := audit.Search(ctx, a, f)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		for _, r := range rs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tTIME\tCLASS\tAGENT\tTOOL\tVERDICT\tCORRELATION\tMESSAGE")
	for _, r := range rs {
		e := r.Event
		var agent, tool, v string
		if u := e.Unmapped; u != nil {
			agent, tool = u.Agent, u.Tool
			if u.Verdict != nil {
				v = u.Verdict.Outcome
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Index, time.UnixMilli(e.Time).UTC().Format(time.RFC3339),
			e.ClassName, agent, tool, v, e.Metadata.CorrelationUID, e.Message)
	}
	return tw.Flush()
}

func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %q is neither a duration nor an RFC 3339 time", errUsage, s)
	}
	return t, nil
}

func auditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("export", stderr)
	var sf storeFlags
	sf.register(fs)
	from := fs.Int64("from", 0, "first `index`")
	to := fs.Int64("to", 0, "end `index` (exclusive; default: the latest checkpoint)")
	out := fs.String("out", "", "bundle `file` to write (- for stdout)")
	key := fs.String("key", "", "verifier `key` to record in the bundle (name+hash+base64, or @file)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	k, err := keyText(*key)
	if err != nil {
		return err
	}
	if k != "" {
		if _, err := note.NewVerifier(k); err != nil {
			return fmt.Errorf("parsing verifier key: %w", err)
		}
	}
	db, a, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	var w io.Writer = stdout
	var f *os.File
	if *out != "-" {
		if f, err = os.Create(*out); err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if err := audit.WriteBundle(ctx, w, a, a, audit.BundleOptions{From: *from, To: *to, Key: k}); err != nil {
		return err
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	}
	return nil
}

func auditCheckpoint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("checkpoint", stderr)
	var sf storeFlags
	sf.register(fs)
	key := fs.String("key", "", "verify the checkpoint with this verifier `key` before printing it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	db, a, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	cs, err := a.Checkpoints(ctx)
	if err != nil {
		return err
	}
	if len(cs) == 0 {
		return errors.New("the audit log has no checkpoint yet")
	}
	c := cs[len(cs)-1]
	if *key != "" {
		v, err := loadVerifier(*key)
		if err != nil {
			return err
		}
		if _, err := audit.OpenCheckpoint(c.Note, v); err != nil {
			return err
		}
	}
	_, err = stdout.Write(c.Note)
	return err
}

func auditKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keygen", stderr)
	name := fs.String("name", "", "key name, the log's origin (e.g. gatehouse.example.com/audit)")
	out := fs.String("out", "", "`file` to write the private signing key to (mode 0600)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" || *out == "" {
		return fmt.Errorf("%w: --name and --out are required", errUsage)
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, *name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, skey); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, vkey)
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

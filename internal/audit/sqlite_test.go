package audit_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
)

var appenders = flag.Int("audit.appenders", 256, "concurrent appenders in BenchmarkAppendSQLite")

var long = flag.Bool("audit.long", false, "run the 1,000,000-entry verification test")

var millionSize = flag.Int64("audit.size", 1_000_000, "entries in TestVerifyMillion")

const helperEnv = "GATEHOUSE_AUDIT_CRASH_HELPER"

// TestCrashHelper is the process that TestCrashKill9 kills: it appends
// from many goroutines and prints "ack <index> <correlation>" for each
// record once Append has returned.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for TestCrashKill9")
	}
	ctx := context.Background()
	signer, err := note.NewSigner(os.Getenv(helperEnv + "_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	_, a := audittest.OpenSQLite(t, path, os.Getenv(helperEnv+"_JOURNAL") == "1")
	l, err := audit.Open(ctx, audit.Config{Backend: a, Signer: signer, CheckpointInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	round := os.Getenv(helperEnv + "_ROUND")
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				corr := fmt.Sprintf("r%s-g%d-%d", round, g, i)
				r, err := l.Append(ctx, audittest.Event("agent", "tool", corr, verdict.Allow))
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(out, "ack %d %s\n", r.Index, corr)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrashKill9 kills a process appending under load with SIGKILL, three
// times, and checks after each that every acknowledged record is present
// and the log verifies: with appends committed to SQLite, and with the
// audit journal (records acknowledged from the journal, replayed into
// SQLite at the next open).
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	t.Run("direct", func(t *testing.T) { crashKill9(t, false) })
	t.Run("journal", func(t *testing.T) { crashKill9(t, true) })
}

func crashKill9(t *testing.T, journal bool) {
	ctx := context.Background()
	skey, vkey, err := note.GenerateKey(rand.Reader, "gatehouse.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	verifier, _ := note.NewVerifier(vkey)
	path := filepath.Join(t.TempDir(), "audit.db")
	acked := map[int64]string{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+path, helperEnv+"_KEY="+skey, helperEnv+"_ROUND="+strconv.Itoa(round))
		if journal {
			cmd.Env = append(cmd.Env, helperEnv+"_JOURNAL=1")
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		n := 0
		deadline := time.Now().Add(20 * time.Second)
		killed := false
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ack" {
				continue
			}
			i, _ := strconv.ParseInt(f[1], 10, 64)
			if prev, dup := acked[i]; dup {
				t.Fatalf("index %d acknowledged twice (%s, %s)", i, prev, f[2])
			}
			acked[i] = f[2]
			n++
			if !killed && (n >= 3000+round*1000 || time.Now().After(deadline)) {
				// SIGKILL while the writers are busy: lines already in the
				// pipe are still read below.
				cmd.Process.Kill()
				killed = true
			}
		}
		cmd.Wait()
		if !killed {
			t.Fatalf("round %d: helper exited on its own after %d acks: %s", round, n, stderr.String())
		}
		t.Logf("round %d: %d records acknowledged before SIGKILL", round, n)

		db, a := audittest.OpenSQLite(t, path, journal)
		size, err := a.Size(ctx)
		if err != nil {
			t.Fatal(err)
		}
		es, err := a.Entries(ctx, 0, size)
		if err != nil {
			t.Fatal(err)
		}
		have := map[int64]string{}
		for _, e := range es {
			have[e.Index] = e.Correlation
		}
		missing := 0
		for i, corr := range acked {
			if have[i] != corr {
				missing++
				if missing < 10 {
					t.Errorf("round %d: acknowledged record %d (%s) is %q after the crash", round, i, corr, have[i])
				}
			}
		}
		if missing > 0 {
			t.Fatalf("round %d: %d acknowledged records lost", round, missing)
		}
		rep, err := audit.VerifyBackend(ctx, a, a, audit.VerifyOptions{Verifier: verifier})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || len(rep.Verified) == 0 {
			t.Fatalf("round %d: log does not verify after the crash: %+v", round, rep)
		}
		t.Logf("round %d: size %d, %d checkpoints verified, %d entries unsigned", round, size, len(rep.Verified), rep.Unsigned)
		db.Close()
	}
}

// TestOutageFailsClosed checks that Append fails when the store fails,
// that the alert metrics fire, and that the log resumes consistently.
func TestOutageFailsClosed(t *testing.T) {
	ctx := context.Background()
	signer, verifier, _ := audittest.Keys(t)
	reg := prometheus.NewRegistry()
	m := audit.NewMemory()
	l, err := audit.Open(ctx, audit.Config{Backend: m, Signer: signer, CheckpointInterval: -1, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(ctx, audittest.Event("a", "t", "c", verdict.Allow)); err != nil {
		t.Fatal(err)
	}
	m.Fail(errors.New("disk on fire"))
	for range 3 {
		_, err := l.Append(ctx, audittest.Event("a", "t", "c", verdict.Allow))
		if !errors.Is(err, audit.ErrUnavailable) {
			t.Fatalf("Append during outage: %v, want ErrUnavailable", err)
		}
	}
	if got := metricValue(t, reg, "gatehouse_audit_failures_total"); got != 3 {
		t.Errorf("failures_total = %v, want 3", got)
	}
	if got := metricValue(t, reg, "gatehouse_audit_store_up"); got != 0 {
		t.Errorf("store_up = %v, want 0", got)
	}
	m.Fail(nil)
	r, err := l.Append(ctx, audittest.Event("a", "t", "c", verdict.Allow))
	if err != nil || r.Index != 1 {
		t.Fatalf("Append after outage: %+v, %v; want index 1", r, err)
	}
	if got := metricValue(t, reg, "gatehouse_audit_store_up"); got != 1 {
		t.Errorf("store_up = %v, want 1", got)
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.VerifyBackend(ctx, m, m, audit.VerifyOptions{Verifier: verifier})
	if err != nil || !rep.OK() {
		t.Fatalf("verify after outage: %+v, %v", rep, err)
	}
}

// TestSQLiteOutage closes the database under a running log.
func TestSQLiteOutage(t *testing.T) {
	ctx := context.Background()
	signer, _, _ := audittest.Keys(t)
	db, a := audittest.OpenSQLite(t, filepath.Join(t.TempDir(), "audit.db"), false)
	l, err := audit.Open(ctx, audit.Config{Backend: a, Signer: signer, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(ctx, audittest.Event("a", "t", "c", verdict.Allow)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := l.Append(ctx, audittest.Event("a", "t", "c", verdict.Allow)); !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Append with the database closed: %v, want ErrUnavailable", err)
	}
}

// TestSQLiteWALRestarts checks that the writer lets SQLite's backend
// checkpoint between commits (audit.Tidier), so that later commits rewrite
// the write-ahead log from its start instead of growing it: back-to-back
// commits leave a background checkpoint no moment to finish.
func TestSQLiteWALRestarts(t *testing.T) {
	ctx := context.Background()
	signer, _, _ := audittest.Keys(t)
	path := filepath.Join(t.TempDir(), "audit.db")
	db, a := audittest.OpenSQLite(t, path, false)
	defer db.Close()
	l, err := audit.Open(ctx, audit.Config{Backend: a, Signer: signer, CheckpointInterval: -1, TidyInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const n = 400
	for range n {
		if _, err := l.Append(ctx, audittest.Event("a", "t", "c", verdict.Allow)); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	// Every commit writes at least two 4 KiB pages (the table's and an
	// index's): a WAL that only grew would hold 2n of them at least. Half
	// of that leaves room for stretches in which a loaded machine runs no
	// checkpoint (the file keeps the largest extent it ever reached).
	if limit := int64(n * 4096); fi.Size() > limit {
		t.Errorf("WAL is %d bytes after %d commits, want at most %d: it is not restarted", fi.Size(), n, limit)
	}
}

func metricValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// BenchmarkAppendSQLite measures group-commit throughput and commit wait on
// a SQLite file (WAL, synchronous=FULL) with -audit.appenders concurrent
// appenders, each batch committed to SQLite.
func BenchmarkAppendSQLite(b *testing.B) { benchmarkAppend(b, false) }

// BenchmarkAppendSQLiteJournal is BenchmarkAppendSQLite with the audit
// journal in front of SQLite, as the gateway runs it.
func BenchmarkAppendSQLiteJournal(b *testing.B) { benchmarkAppend(b, true) }

func benchmarkAppend(b *testing.B, journal bool) {
	ctx := context.Background()
	signer, _, _ := audittest.Keys(b)
	db, a := audittest.OpenSQLite(b, filepath.Join(b.TempDir(), "audit.db"), journal)
	defer db.Close()
	l, err := audit.Open(ctx, audit.Config{Backend: a, Signer: signer, CheckpointInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ev := audittest.Event("agent", "tool", "corr", verdict.Allow)
	var mu sync.Mutex
	var waits []time.Duration
	var n atomic.Int64
	b.SetParallelism(*appenders / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			e := *ev
			u := *ev.Unmapped
			e.Unmapped = &u
			e.Metadata.UID = ""
			t0 := time.Now()
			if _, err := l.Append(ctx, &e); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
			n.Add(1)
		}
		mu.Lock()
		waits = append(waits, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(waits)
	if len(waits) > 0 {
		b.ReportMetric(float64(n.Load())/elapsed.Seconds(), "records/s")
		b.ReportMetric(float64(waits[len(waits)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds()), "p99-µs")
	}
}

// TestVerifyMillion builds a 1,000,000-entry SQLite log and times its full
// verification (run with -audit.long).
func TestVerifyMillion(t *testing.T) {
	if !*long {
		t.Skip("run with -audit.long")
	}
	ctx := context.Background()
	signer, verifier, _ := audittest.Keys(t)
	db, a := audittest.OpenSQLite(t, filepath.Join(t.TempDir(), "audit.db"), false)
	defer db.Close()
	l, err := audit.Open(ctx, audit.Config{Backend: a, Signer: signer, CheckpointInterval: -1, MaxBatch: 4096})
	if err != nil {
		t.Fatal(err)
	}
	total := *millionSize
	start := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				if _, err := l.Append(ctx, audittest.Event("agent", "tool", "c", verdict.Allow)); err != nil {
					t.Error(err)
					return
				}
				if n := l.Size(); n%250_000 == 0 {
					l.Checkpoint(ctx)
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("appended %d records in %v (%.0f records/s)", total, time.Since(start), float64(total)/time.Since(start).Seconds())
	start = time.Now()
	rep, err := audit.VerifyBackend(ctx, a, a, audit.VerifyOptions{Verifier: verifier})
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	if !rep.OK() || rep.Entries != total {
		t.Fatalf("verify: %+v", rep)
	}
	t.Logf("verified %d entries and %d checkpoints in %v", rep.Entries, len(rep.Verified), d)
}

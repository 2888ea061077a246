package audit_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// gateBackend holds its first commit until release is closed and records
// the size of every batch it commits.
type gateBackend struct {
	*audit.Memory
	entered chan struct{} // closed when the first commit starts
	release chan struct{}

	mu      sync.Mutex
	batches []int
}

func (g *gateBackend) Append(ctx context.Context, b audit.Batch) error {
	g.mu.Lock()
	first := len(g.batches) == 0
	g.batches = append(g.batches, len(b.Entries))
	g.mu.Unlock()
	if first {
		close(g.entered)
		<-g.release
	}
	return g.Memory.Append(ctx, b)
}

// family returns the single series of the metric family name.
func family(t *testing.T, g prometheus.Gatherer, name string) *dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0]
		}
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}

// TestGroupCommit checks that appends arriving while a commit is in
// progress wait in the queue (gatehouse_audit_queue_depth counts them) and
// are then committed together in one backend transaction, and that the
// commit-latency, batch, append-wait, record and size metrics account for
// every commit and record.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	signer, verifier, _ := audittest.Keys(t)
	reg := prometheus.NewRegistry()
	b := &gateBackend{Memory: audit.NewMemory(), entered: make(chan struct{}), release: make(chan struct{})}
	l, err := audit.Open(ctx, audit.Config{Backend: b, Checkpoints: b.Memory, Signer: signer, CheckpointInterval: -1, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	const waiting = 20
	var wg sync.WaitGroup
	receipts := make([]audit.Receipt, waiting+1)
	errs := make([]error, waiting+1)
	appendAt := func(i int) {
		defer wg.Done()
		receipts[i], errs[i] = l.Append(ctx, audittest.Event("agent", "tool", fmt.Sprint("c", i), verdict.Allow))
	}
	wg.Add(1)
	go appendAt(0)
	<-b.entered // the writer is committing record 0
	for i := 1; i <= waiting; i++ {
		wg.Add(1)
		go appendAt(i)
	}
	// The others queue up behind the commit in progress.
	deadline := time.Now().Add(10 * time.Second)
	for family(t, reg, "gatehouse_audit_queue_depth").GetGauge().GetValue() != waiting {
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %v, want %d", family(t, reg, "gatehouse_audit_queue_depth").GetGauge().GetValue(), waiting)
		}
		time.Sleep(time.Millisecond)
	}
	close(b.release)
	wg.Wait()

	seen := map[int64]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		seen[receipts[i].Index] = true
	}
	if len(seen) != waiting+1 || receipts[0].Index != 0 {
		t.Errorf("receipts %v: want distinct indexes 0..%d with the first append at 0", receipts, waiting)
	}
	b.mu.Lock()
	batches := append([]int(nil), b.batches...)
	b.mu.Unlock()
	if diff := cmp.Diff([]int{1, waiting}, batches); diff != "" {
		t.Errorf("batch sizes (-want +got):\n%s", diff)
	}

	if got := family(t, reg, "gatehouse_audit_queue_depth").GetGauge().GetValue(); got != 0 {
		t.Errorf("queue depth after the commits = %v, want 0", got)
	}
	if got := family(t, reg, "gatehouse_audit_log_size").GetGauge().GetValue(); got != waiting+1 {
		t.Errorf("log size = %v, want %d", got, waiting+1)
	}
	if got := family(t, reg, "gatehouse_audit_records_total").GetCounter().GetValue(); got != waiting+1 {
		t.Errorf("records_total = %v, want %d", got, waiting+1)
	}
	for name, want := range map[string]struct {
		count uint64
		sum   float64 // < 0: not checked
	}{
		"gatehouse_audit_commit_duration_seconds": {2, -1},
		"gatehouse_audit_batch_records":           {2, waiting + 1},
		"gatehouse_audit_append_duration_seconds": {waiting + 1, -1},
	} {
		h := family(t, reg, name).GetHistogram()
		if h.GetSampleCount() != want.count || (want.sum >= 0 && h.GetSampleSum() != want.sum) {
			t.Errorf("%s: count %d sum %v, want count %d sum %v", name, h.GetSampleCount(), h.GetSampleSum(), want.count, want.sum)
		}
	}
	// The held commit took at least as long as the wait for the queue.
	if h := family(t, reg, "gatehouse_audit_commit_duration_seconds").GetHistogram(); h.GetSampleSum() <= 0 {
		t.Errorf("commit duration sum %v, want > 0", h.GetSampleSum())
	}

	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.VerifyBackend(ctx, b, b.Memory, audit.VerifyOptions{Verifier: verifier})
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

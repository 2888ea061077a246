package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/gateway"
	"github.com/gatehouse/gatehouse/internal/store"
)

// metricValue reads an unlabelled sample from a /metrics page.
func metricValue(t *testing.T, page, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("%s is not on the metrics page", name)
	}
	return m[1]
}

// TestAuditOutageFailsClosedSQLite makes the gateway's SQLite audit table
// refuse writes (a trigger) under a running gateway, and checks that a
// side-effecting call is refused without reaching the upstream server,
// that the alert metrics fire (gatehouse_audit_store_up 0,
// gatehouse_audit_failures_total up), and that calls work again once the
// store accepts writes, with a log that still verifies. TestAuditOutageFailsClosed
// does the same on PostgreSQL when GATEHOUSE_TEST_POSTGRES is set.
func TestAuditOutageFailsClosedSQLite(t *testing.T) {
	h := start(t, "")
	cs := h.connect("assistant", nil, "")
	ctx := context.Background()
	send := func(amount float64) error { return sendMoney(cs, amount) }
	if err := send(10); err != nil {
		t.Fatalf("before the outage: %v", err)
	}
	before := h.demo.Bank.Balance("acc-checking")
	if up := metricValue(t, scrapeMetrics(t, h), "gatehouse_audit_store_up"); up != "1" {
		t.Fatalf("gatehouse_audit_store_up = %s before the outage", up)
	}

	db, err := store.Open(ctx, filepath.Join(h.dataDir, "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TRIGGER audit_outage BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END`); err != nil {
		t.Fatal(err)
	}
	// A call whose intent the audit journal took before SQLite's refusal
	// was noticed is durable (it is in the journal) and goes through; from
	// then on side-effecting calls are refused.
	journaled := awaitOutage(t, func() error { return send(20) })
	before -= 20 * float64(journaled)
	if err := send(20); err == nil || !strings.Contains(err.Error(), "audit log is unavailable") {
		t.Errorf("side-effecting call during the outage: %v", err)
	}
	if got := h.demo.Bank.Balance("acc-checking"); got != before {
		t.Errorf("balance %v, want %v: a call went through without its intent on record", got, before)
	}
	// A read has no side effect: it is answered, and its records wait in
	// the queue (retried) until the store is back.
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-savings"}})
	if err != nil || res.IsError {
		t.Errorf("read during the outage: %v %v", res, err)
	}
	if evs := h.events(audit.Filter{Agent: "assistant", Tool: "get_balance"}, 0); len(evs) != 0 {
		t.Errorf("records committed during the outage: %v", evs)
	}
	page := scrapeMetrics(t, h)
	if up := metricValue(t, page, "gatehouse_audit_store_up"); up != "0" {
		t.Errorf("gatehouse_audit_store_up = %s during the outage, want 0", up)
	}
	if n := metricValue(t, page, "gatehouse_audit_failures_total"); n == "0" {
		t.Errorf("gatehouse_audit_failures_total = %s during the outage", n)
	}

	if _, err := db.Exec(`DROP TRIGGER audit_outage`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := send(30)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the outage: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := h.demo.Bank.Balance("acc-checking"); got != before-30 {
		t.Errorf("balance after recovery %v, want %v", got, before-30)
	}
	if up := metricValue(t, scrapeMetrics(t, h), "gatehouse_audit_store_up"); up != "1" {
		t.Errorf("gatehouse_audit_store_up = %s after recovery", up)
	}

	// Nothing was dropped: the read's records were committed once the
	// store was back.
	if evs := h.events(audit.Filter{Agent: "assistant", Tool: "get_balance"}, 1); len(evs) == 0 {
		t.Error("the records of the read made during the outage were lost")
	}
	// The journaled calls' intents reached SQLite once it was back: the
	// 10 before, the journaled 20s and the 30 after.
	sends := 0
	for _, ev := range h.events(audit.Filter{Agent: "assistant", Tool: "send_money"}, 2+journaled) {
		if api, _ := ev["api"].(map[string]any); api != nil {
			sends++
		}
	}
	if sends < 2+journaled {
		t.Errorf("%d send_money records after the outage, want at least %d", sends, 2+journaled)
	}

	// The log resumed consistently: it verifies against a new checkpoint.
	if code := adminDo(t, h, "POST", "/v1/audit/checkpoint", nil, nil); code != http.StatusOK {
		t.Fatalf("checkpoint: HTTP %d", code)
	}
	v := auditVerifier(t, h.dataDir)
	b, err := store.OpenAuditLog(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.VerifyBackend(ctx, b, b, audit.VerifyOptions{Verifier: v})
	if err != nil || !rep.OK() || len(rep.Verified) == 0 {
		t.Errorf("the log does not verify after the outage: %+v, %v", rep, err)
	}
}

// sendMoney calls bank__send_money for amount; a tool error is an error.
func sendMoney(cs *sdk.ClientSession, amount float64) error {
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "bank__send_money", Arguments: map[string]any{
		"from_account": "acc-checking", "to_iban": "DE89 3704 0044 0532 0130 00", "amount": amount}})
	if err == nil && res.IsError {
		err = fmt.Errorf("tool error: %v", res.Content)
	}
	return err
}

// awaitOutage makes side-effecting calls with send until one is refused
// because the audit log is unavailable, and returns how many went through
// before: the audit journal takes records until its applier finds that
// SQLite refuses them (within its apply delay).
func awaitOutage(t *testing.T, send func() error) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; ; n++ {
		err := send()
		if err != nil {
			if !strings.Contains(err.Error(), "audit log is unavailable") {
				t.Fatalf("side-effecting call during the outage: %v", err)
			}
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d side-effecting calls went through during the outage", n+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuditSpillAtShutdown: records still waiting for an unavailable
// store when the gateway stops are kept in <data_dir>/audit-spill, and the
// next start appends them, so the records of answered calls survive; the
// log verifies afterwards.
func TestAuditSpillAtShutdown(t *testing.T) {
	h := start(t, "")
	cs := h.connect("assistant", nil, "")
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(h.dataDir, "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TRIGGER audit_outage BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END`); err != nil {
		t.Fatal(err)
	}
	// Calls the journal took before the outage was noticed are durable
	// there; once it is noticed, records wait in the log's queue.
	awaitOutage(t, func() error { return sendMoney(cs, 1) })
	// A read is answered during the outage; its records wait in the queue.
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-savings"}})
	if err != nil || res.IsError {
		t.Fatalf("read during the outage: %v %v", res, err)
	}
	cs.Close()
	h.stop()
	spill := filepath.Join(h.dataDir, "audit-spill")
	files, err := os.ReadDir(spill)
	if err != nil || len(files) == 0 {
		t.Fatalf("spill directory after a shutdown during the outage: %v, %v", files, err)
	}

	// The store is back; the next start appends the kept records.
	if _, err := db.Exec(`DROP TRIGGER audit_outage`); err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(ctx, h.cfg, gateway.Options{})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(spill); len(left) != 0 {
		t.Errorf("spill files left after the restart: %v", left)
	}
	b, err := store.OpenAuditLog(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := audit.Search(ctx, b, audit.Filter{Agent: "assistant", Tool: "get_balance"})
	if err != nil || len(recs) == 0 {
		t.Fatalf("the read's records after the restart: %v, %v", recs, err)
	}
	v := auditVerifier(t, h.dataDir)
	rep, err := audit.VerifyBackend(ctx, b, b, audit.VerifyOptions{Verifier: v})
	if err != nil || !rep.OK() {
		t.Errorf("the log does not verify after the spilled records: %+v, %v", rep, err)
	}
}

// TestAuditDirectCommit: with audit.journal false there is no journal
// file, every batch is committed to SQLite before it is acknowledged, so
// the first side-effecting call during an outage is refused, and records
// are in the file as soon as the call is answered.
func TestAuditDirectCommit(t *testing.T) {
	h := start(t, "audit: {journal: false}\n")
	cs := h.connect("assistant", nil, "")
	ctx := context.Background()
	send := func() error { return sendMoney(cs, 5) }
	if err := send(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.dataDir, "gatehouse.db-audit-journal")); !os.IsNotExist(err) {
		t.Errorf("audit journal file with journal: false: %v", err)
	}
	db, err := store.Open(ctx, filepath.Join(h.dataDir, "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b, err := store.OpenAuditLog(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	// The intent was committed before the call went upstream.
	if recs, err := audit.Search(ctx, b, audit.Filter{Agent: "assistant", Tool: "send_money"}); err != nil || len(recs) == 0 {
		t.Fatalf("send_money records in the file right after the call: %d, %v", len(recs), err)
	}
	if _, err := db.Exec(`CREATE TRIGGER audit_outage BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END`); err != nil {
		t.Fatal(err)
	}
	before := h.demo.Bank.Balance("acc-checking")
	if err := send(); err == nil || !strings.Contains(err.Error(), "audit log is unavailable") {
		t.Errorf("the first side-effecting call during the outage: %v", err)
	}
	if got := h.demo.Bank.Balance("acc-checking"); got != before {
		t.Errorf("balance %v, want %v", got, before)
	}
	if _, err := db.Exec(`DROP TRIGGER audit_outage`); err != nil {
		t.Fatal(err)
	}
}

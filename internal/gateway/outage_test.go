package gateway_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/store"
)

// TestAuditOutageFailsClosed runs the gateway on PostgreSQL, takes the
// database away from it (the gateway's role may no longer log in and its
// connections are terminated), and checks that side-effecting calls are
// refused while the audit log cannot record them, and work again once the
// store is back.
func TestAuditOutageFailsClosed(t *testing.T) {
	dsn := os.Getenv("GATEHOUSE_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("GATEHOUSE_TEST_POSTGRES is not set")
	}
	ctx := context.Background()
	admin, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	b := make([]byte, 5)
	rand.Read(b)
	role := "gh_outage_" + hex.EncodeToString(b)
	for _, q := range []string{"CREATE ROLE " + role + " LOGIN", "CREATE SCHEMA " + role + " AUTHORIZATION " + role} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		admin.ExecContext(ctx, "ALTER ROLE "+role+" LOGIN")
		admin.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
		admin.ExecContext(ctx, "DROP SCHEMA "+role+" CASCADE")
		admin.ExecContext(ctx, "DROP ROLE "+role)
	})
	// The gateway's DSN: same server, its own role and schema.
	gwDSN := "postgres://" + role + "@" + strings.SplitN(strings.SplitN(dsn, "@", 2)[1], "/", 2)[0] + "/test?sslmode=disable&search_path=" + role
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(gwDSN), 0o600); err != nil {
		t.Fatal(err)
	}
	h := start(t, fmt.Sprintf("store: {dsn_file: %s}\n", dsnFile))
	cs := h.connect("assistant", nil, "")
	send := func(amount float64) error {
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__send_money", Arguments: map[string]any{
			"from_account": "acc-checking", "to_iban": "DE89 3704 0044 0532 0130 00", "amount": amount}})
		if err == nil && res.IsError {
			err = fmt.Errorf("tool error: %v", res.Content)
		}
		return err
	}
	if err := send(10); err != nil {
		t.Fatalf("before the outage: %v", err)
	}

	// Outage.
	if _, err := admin.ExecContext(ctx, "ALTER ROLE "+role+" NOLOGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role); err != nil {
		t.Fatal(err)
	}
	err = send(20)
	if err == nil || !strings.Contains(err.Error(), "audit log is unavailable") {
		t.Errorf("side-effecting call during the outage: %v", err)
	}
	if got := h.demo.Bank.Balance("acc-checking"); got != 12830.55 {
		t.Errorf("balance %v: a call went through without its intent on record", got)
	}
	page := scrapeMetrics(t, h)
	if up := metricValue(t, page, "gatehouse_audit_store_up"); up != "0" {
		t.Errorf("gatehouse_audit_store_up = %s during the outage, want 0", up)
	}
	if n := metricValue(t, page, "gatehouse_audit_failures_total"); n == "0" {
		t.Errorf("gatehouse_audit_failures_total = %s during the outage", n)
	}

	// Recovery.
	if _, err := admin.ExecContext(ctx, "ALTER ROLE "+role+" LOGIN"); err != nil {
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
	if got := h.demo.Bank.Balance("acc-checking"); got != 12800.55 {
		t.Errorf("balance after recovery: %v", got)
	}
}

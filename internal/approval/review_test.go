package approval_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

func TestReviewAgents(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	in := approval.ReviewInput{
		Now: now, Window: 30 * day,
		Agents: []approval.AgentRecord{
			{ID: "payments", Owner: "olivia", Expires: now.Add(90 * day), Permitted: []string{"bank/send_money", "bank/balance", "crm/*"}},
			{ID: "old-bot", Owner: "olivia", Expires: now.Add(-day), Permitted: []string{"bank/balance"}},
			{ID: "stray", Owner: "", Expires: now.Add(90 * day), Permitted: []string{"files/read"}},
			{ID: "leaver", Owner: "lars", Permitted: []string{"files/read"}},
			{ID: "soon", Owner: "olivia", Expires: now.Add(3 * day), Permitted: []string{"files/read"}},
			{ID: "off", Owner: "olivia", Expires: now.Add(90 * day), Disabled: true},
		},
		Uses: []approval.ToolUse{
			{Agent: "payments", Server: "bank", Tool: "send_money", Time: now.Add(-day)},
			{Agent: "payments", Server: "crm", Tool: "lookup", Time: now.Add(-2 * day)},
			{Agent: "payments", Server: "bank", Tool: "balance", Time: now.Add(-60 * day)},
			{Agent: "payments", Server: "mail", Tool: "send", Time: now.Add(-3 * day)},
			{Agent: "soon", Server: "files", Tool: "read", Time: now.Add(-time.Hour)},
		},
		ActiveOwner: func(o string) bool { return o == "olivia" },
	}
	rep := approval.ReviewAgents(in)
	byID := map[string]approval.AgentReview{}
	var order []string
	for _, a := range rep.Agents {
		byID[a.Agent] = a
		order = append(order, a.Agent+":"+a.Status)
	}
	if got := strings.Join(order, " "); got != "old-bot:expired off:disabled leaver:orphaned stray:orphaned soon:expiring payments:active" {
		t.Errorf("order %s", got)
	}
	p := byID["payments"]
	if strings.Join(p.Used, ",") != "bank/send_money,crm/*" || strings.Join(p.Unused, ",") != "bank/balance" || p.Calls != 3 ||
		!p.LastActivity.Equal(now.Add(-day)) || strings.Join(p.Unpermitted, ",") != "mail/send" {
		t.Errorf("payments review %+v", p)
	}
	if f := strings.Join(byID["leaver"].Findings, "; "); !strings.Contains(f, "owner lars is no longer active") || !strings.Contains(f, "no expiry date") {
		t.Errorf("leaver findings %s", f)
	}
	if f := strings.Join(byID["stray"].Findings, "; "); !strings.Contains(f, "no owner") {
		t.Errorf("stray findings %s", f)
	}
	if s := rep.Summary; s.Agents != 6 || s.Expired != 1 || s.Orphaned != 2 || s.Expiring != 1 || s.Disabled != 1 || s.NoExpiry != 1 || s.Inactive != 4 {
		t.Errorf("summary %+v", s)
	}
	var md strings.Builder
	if err := rep.Markdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| payments | active | olivia | 2026-05-30 | 2026-02-28 | 3 | 2 / 3 |") {
		t.Errorf("markdown:\n%s", md.String())
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
}

func TestUsesFromAudit(t *testing.T) {
	subj := audit.Subject{Agent: "payments", Correlation: "c1"}
	intent := audit.APIActivity(subj, audit.Call{Phase: audit.PhaseIntent, Server: "bank", Tool: "send_money"}, verdict.Verdict{})
	outcome := audit.APIActivity(subj, audit.Call{Phase: audit.PhaseOutcome, Server: "bank", Tool: "send_money"}, verdict.Verdict{})
	outcome.Time = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	list := audit.APIActivity(subj, audit.Call{Phase: audit.PhaseList, Server: "bank"}, verdict.Verdict{})
	uses := approval.UsesFromAudit([]audit.Record{{Event: intent}, {Event: outcome}, {Event: list}})
	if len(uses) != 1 || uses[0].Tool != "send_money" || uses[0].Agent != "payments" || uses[0].Time.Day() != 1 {
		t.Errorf("uses %+v", uses)
	}
}

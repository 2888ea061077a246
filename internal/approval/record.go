package approval

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Changes recorded in the audit log (record.Change).
const (
	changeCreated    = "created"
	changeReviewed   = "reviewed" // an approval that did not yet reach quorum
	changeApproved   = "approved"
	changeDenied     = "denied"
	changeExpired    = "expired"
	changeCancelled  = "cancelled"
	changeUsed       = "used"
	changeRevoked    = "revoked"
	changeLapsed     = "lapsed"
	changeRefused    = "refused"    // a decision refused (no state change)
	changeSuperseded = "superseded" // a recorded change lost a race and was not applied
	changeDelivery   = "delivery"
	changeItemOpened = "review_item_opened"
	changeItemClosed = "review_item_closed"
)

// Entity types of approval audit events.
const (
	entityApproval   = "approval"
	entityDelivery   = "approval_notification"
	entityReviewItem = "review_item"
)

// record is the data of an approval audit event (the OCSF entity's data).
// It carries hashes rather than payloads: the arguments go through the audit
// log's privacy mode (Unmapped.Arguments) and free text is also kept as a
// SHA-256, so that an evidence bundle can be checked against it even when
// the log redacted the text.
//
// Every record of a state change has Version and State: the SHA-256 of the
// canonical JSON of the approval after the change (see stateHash). The
// record with the highest Version thus commits to the whole current state.
type record struct {
	Actor         string   `json:"actor,omitempty"`
	ACR           string   `json:"acr,omitempty"`
	Approval      string   `json:"approval"`
	ArgumentsHash string   `json:"arguments_sha256,omitempty"`
	AuthTime      string   `json:"auth_time,omitempty"`
	BreakGlass    bool     `json:"break_glass,omitempty"`
	CallHash      string   `json:"call_hash,omitempty"`
	Change        string   `json:"change"`
	Comment       string   `json:"comment,omitempty"`
	CommentHash   string   `json:"comment_sha256,omitempty"`
	Correlation   string   `json:"correlation,omitempty"`
	Delivery      string   `json:"delivery_sha256,omitempty"`
	Error         string   `json:"error,omitempty"`
	EvidenceHash  string   `json:"evidence_sha256,omitempty"`
	GrantExpires  string   `json:"grant_expires,omitempty"`
	Item          string   `json:"review_item_sha256,omitempty"`
	Kind          Kind     `json:"kind,omitempty"`
	MaxUses       int      `json:"max_uses,omitempty"`
	Method        string   `json:"method,omitempty"`
	Risk          []string `json:"risk,omitempty"`
	Seq           int      `json:"seq,omitempty"`
	State         string   `json:"state_sha256,omitempty"`
	Status        Status   `json:"status,omitempty"`
	Version       int64    `json:"version,omitempty"`
	Vote          Vote     `json:"vote,omitempty"`
}

// canonicalHash returns the SHA-256 of v's canonical JSON.
func canonicalHash(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("approval: encoding for hashing: %v", err))
	}
	c, err := Canonicalize(b)
	if err != nil {
		panic(fmt.Sprintf("approval: canonicalizing for hashing: %v", err))
	}
	return sha256Hex(c)
}

// stateHash commits to every field of the approval (Version excepted).
func stateHash(a *Approval) string { return canonicalHash(a) }

func textHash(s string) string {
	if s == "" {
		return ""
	}
	return sha256Hex([]byte(s))
}

// change describes one state change (or one refused attempt) for the audit
// log and the notifiers.
type change struct {
	kind     string
	actor    *Approver // who decided (nil: the gateway itself)
	review   *Review
	use      *Use
	comment  string
	err      error  // for refused attempts
	notify   string // notification event, "" for none
	by       string // actor name when not an approver (revocations)
	delivery *Delivery
	item     *ReviewItem
}

// event builds the audit event of ch applied to a (the state after it).
func event(a *Approval, ch *change) *audit.Event {
	rec := record{Approval: a.ID, Change: ch.kind, Kind: a.Kind, Risk: a.Risks()}
	s := audit.Subject{Agent: a.Agent(), User: a.User(), Task: a.task(), Correlation: a.ID}
	switch {
	case ch.actor != nil:
		s.User = ch.actor.Subject
		rec.Actor, rec.Method, rec.ACR = ch.actor.Subject, ch.actor.Method, ch.actor.ACR
		if !ch.actor.AuthTime.IsZero() {
			rec.AuthTime = ch.actor.AuthTime.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")
		}
	case ch.by != "":
		s.User = ch.by
		rec.Actor = ch.by
	}
	if ch.comment != "" {
		rec.Comment, rec.CommentHash = ch.comment, textHash(ch.comment)
	}
	if a.Evidence != nil {
		rec.CallHash, rec.ArgumentsHash = a.Evidence.CallHash, a.Evidence.ArgumentsHash
	}
	switch ch.kind {
	case changeRefused, changeSuperseded, changeDelivery, changeItemOpened, changeItemClosed:
	default:
		rec.Version, rec.State, rec.Status = a.Version, stateHash(a), a.Status
	}
	if ch.kind == changeSuperseded {
		// The state hash of the approval as it actually stands.
		rec.Version, rec.State, rec.Status = a.Version, stateHash(a), a.Status
	}
	if ch.kind == changeCreated {
		if a.Evidence != nil {
			rec.EvidenceHash = canonicalHash(a.Evidence)
		} else if a.Elevation != nil {
			rec.EvidenceHash = canonicalHash(a.Elevation)
		}
	}
	if r := ch.review; r != nil {
		rec.Vote, rec.BreakGlass = r.Vote, r.BreakGlass
		if r.Comment != "" {
			rec.Comment, rec.CommentHash = r.Comment, textHash(r.Comment)
		}
	}
	if u := ch.use; u != nil {
		rec.Seq, rec.Correlation = u.Seq, u.Correlation
	}
	if g := a.Grant; g != nil && (ch.kind == changeApproved || ch.kind == changeUsed) {
		rec.GrantExpires = g.Expires.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")
		rec.MaxUses = g.MaxUses
	}
	if ch.err != nil {
		rec.Error = ch.err.Error()
	}
	if d := ch.delivery; d != nil {
		rec.Delivery = canonicalHash(d)
	}
	if it := ch.item; it != nil {
		rec.Item = canonicalHash(it)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		panic(fmt.Sprintf("approval: encoding audit record: %v", err))
	}
	ent := audit.Entity{Type: entityApproval, UID: a.ID, Name: a.Server() + "/" + strings.Join(a.Tools(), ","), Version: strconv.FormatInt(a.Version, 10), Data: data}
	switch {
	case ch.delivery != nil:
		ent.Type, ent.UID, ent.Version = entityDelivery, ch.delivery.ID, ""
	case ch.item != nil:
		ent.Type, ent.UID, ent.Version = entityReviewItem, ch.item.ID, ""
	}
	grant := audit.Grant{Approval: a.ID, Resource: a.Server() + "/" + strings.Join(a.Tools(), ","), Privileges: privileges(a)}
	if a.Grant != nil {
		grant.ExpiresAt = a.Grant.Expires
	}
	var e *audit.Event
	switch ch.kind {
	case changeApproved:
		e = audit.UserAccessManagement(s, audit.AccessAssignPrivileges, grant, verdict.Verdict{Outcome: verdict.Allow, Reasons: []verdict.Reason{{Layer: verdict.Governance, Code: CodeGranted, Outcome: verdict.Allow}}})
	case changeDenied, changeExpired, changeCancelled:
		code := map[string]string{changeDenied: CodeDenied, changeExpired: CodeExpired, changeCancelled: CodeCancelled}[ch.kind]
		e = audit.UserAccessManagement(s, audit.AccessAssignPrivileges, grant, verdict.Deny(verdict.Governance, code, statusMessages[a.Status].msg))
	case changeUsed, changeRevoked, changeLapsed:
		code := map[string]string{changeUsed: CodeUsed, changeRevoked: CodeRevoked, changeLapsed: CodeLapsed}[ch.kind]
		e = audit.UserAccessManagement(s, audit.AccessRevokePrivileges, grant, verdict.Verdict{Outcome: verdict.Allow, Reasons: []verdict.Reason{{Layer: verdict.Governance, Code: code, Outcome: verdict.Allow}}})
	case changeCreated, changeItemOpened:
		e = audit.EntityManagement(s, audit.EntityCreate, ent, "")
	case changeReviewed, changeSuperseded, changeItemClosed:
		e = audit.EntityManagement(s, audit.EntityUpdate, ent, "")
	default: // refused, delivery
		e = audit.EntityManagement(s, audit.ActivityOther, ent, "")
	}
	e.Entity = &audit.ManagedEntity{Data: ent.Data, Name: ent.Name, Type: ent.Type, UID: ent.UID, Version: ent.Version}
	// Free text stays in the entity data, which the log's privacy rules
	// redact; the event's own comment field is not redacted.
	failed := ch.kind == changeRefused || ch.kind == changeSuperseded || (ch.delivery != nil && !ch.delivery.OK)
	if failed {
		e.StatusID, e.Status = audit.StatusFailure, "Failure"
		e.StatusDetail = "approval." + ch.kind
		e.SeverityID, e.Severity = audit.SeverityMedium, "Medium"
	}
	if a.BreakGlass && (ch.kind == changeApproved || ch.kind == changeItemOpened) {
		e.SeverityID, e.Severity = audit.SeverityHigh, "High"
	}
	e.Message = "approval " + a.ID + ": " + ch.kind
	if rec.Actor != "" {
		e.Message += " by " + rec.Actor
	}
	if u := e.Unmapped; u != nil {
		u.Server = a.Server()
		if a.Evidence != nil {
			u.Tool = a.Evidence.Tool
			if ch.kind == changeCreated {
				u.Arguments = a.Evidence.Arguments
				for _, l := range a.Evidence.Labels {
					u.Labels = append(u.Labels, string(l))
				}
				for _, l := range a.Evidence.SessionLabels {
					u.SessionLabels = append(u.SessionLabels, string(l))
				}
				for _, r := range a.Evidence.Reasons {
					for _, p := range r.Policies {
						u.Policies = append(u.Policies, audit.Policy{ID: p, Version: a.Evidence.PolicyVersion})
					}
				}
			}
		}
	}
	return e
}

func privileges(a *Approval) []string {
	switch {
	case a.Evidence != nil:
		return []string{"call:" + a.Evidence.Server + "/" + a.Evidence.Tool + "#" + a.Evidence.CallHash}
	case a.Elevation != nil:
		var out []string
		for _, t := range a.Elevation.Tools {
			out = append(out, "elevate:"+a.Elevation.Server+"/"+t)
		}
		return out
	}
	return nil
}

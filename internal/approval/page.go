package approval

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// PageConfig configures the approval page.
type PageConfig struct {
	// CheckAdmin checks the admin credential entered in the page's form (in
	// constant time) and names its holder. Nil: the page is read-only and
	// shows the CLI command instead of a form.
	CheckAdmin func(credential string) (operator string, ok bool)
	// Directory lists the approvers who may decide with the admin
	// credential (as for the admin API).
	Directory Directory
	// ShowArguments shows the call's arguments to anyone holding the
	// approval's link. Default false: the arguments are shown only after
	// the admin credential is entered (the link travels through chat and
	// agents).
	ShowArguments bool
}

// StatusView is the JSON answer of the approval page to clients that ask
// for application/json (agents polling the status URL). Message is public.
type StatusView struct {
	ID      string    `json:"id"`
	Status  Status    `json:"status"`
	Reason  string    `json:"reason,omitempty"`
	Message string    `json:"message"`
	Expires time.Time `json:"expires"`
	// GrantExpires is when an approved grant ends.
	GrantExpires time.Time `json:"grant_expires,omitzero"`
	URL          string    `json:"url"`
}

// Page serves the approval page, mounted at /approvals/{id} on the
// gateway's public listener (the status URL given to agents):
//
//	GET  /approvals/{id}   HTML: status, evidence snapshot, reviews, grant;
//	                       with Accept: application/json, a StatusView
//	POST /approvals/{id}   form: credential, approver, comment,
//	                       justification, break_glass, action
//	                       (approve, deny or view)
//
// Deciding on the page needs the admin credential, typed into the form
// (never in the URL), and an approver named in the Directory; it is
// recorded with method "admin-token", so it does not count for risk
// classes that demand fresh strong authentication (the web console with
// OIDC will). The page runs no script; its Content-Security-Policy allows
// none, forbids framing and posts only to itself.
func (m *Manager) Page(cfg PageConfig) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /approvals/{id}", func(w http.ResponseWriter, r *http.Request) {
		a, err := m.Get(r.Context(), r.PathValue("id"))
		if strings.Contains(r.Header.Get("Accept"), "application/json") {
			if err != nil {
				m.writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, m.statusView(&a))
			return
		}
		if err != nil {
			status, msg := HTTPStatus(err)
			m.render(w, status, pageData{Error: msg})
			return
		}
		d := m.pageData(&a, cfg, cfg.ShowArguments)
		if r.URL.Query().Get("done") != "" {
			d.Notice = "Your decision was recorded."
		}
		m.render(w, http.StatusOK, d)
	})
	mux.HandleFunc("POST /approvals/{id}", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			m.render(w, http.StatusBadRequest, pageData{Error: "malformed form"})
			return
		}
		id := r.PathValue("id")
		a, err := m.Get(r.Context(), id)
		if err != nil {
			status, msg := HTTPStatus(err)
			m.render(w, status, pageData{Error: msg})
			return
		}
		fail := func(status int, msg string, show bool) {
			d := m.pageData(&a, cfg, show)
			d.Error = msg
			m.render(w, status, d)
		}
		if cfg.CheckAdmin == nil {
			fail(http.StatusForbidden, "deciding on this page is disabled; use the CLI", false)
			return
		}
		operator, ok := cfg.CheckAdmin(r.PostForm.Get("credential"))
		if !ok {
			m.log.Warn("approval page: wrong admin credential", "approval", id, "remote", r.RemoteAddr)
			fail(http.StatusUnauthorized, "the admin credential is not valid", false)
			return
		}
		action := r.PostForm.Get("action")
		if action == "view" {
			m.render(w, http.StatusOK, m.pageData(&a, cfg, true))
			return
		}
		var vote Vote
		switch action {
		case "approve":
			vote = Approve
		case "deny":
			vote = Deny
		default:
			fail(http.StatusBadRequest, "unknown action", true)
			return
		}
		who, err := cfg.Directory.AdminToken(operator)(r, r.PostForm.Get("approver"))
		if err != nil {
			status, msg := HTTPStatus(err)
			fail(status, msg, true)
			return
		}
		d := Decision{Vote: vote, Comment: r.PostForm.Get("comment"), Justification: r.PostForm.Get("justification"), BreakGlass: r.PostForm.Get("break_glass") != ""}
		if _, err := m.Decide(r.Context(), id, who, d); err != nil {
			status, msg := HTTPStatus(err)
			if a2, gerr := m.Get(r.Context(), id); gerr == nil {
				a = a2
			}
			fail(status, msg, true)
			return
		}
		http.Redirect(w, r, "/approvals/"+id+"?done=1", http.StatusSeeOther)
	})
	return mux
}

func (m *Manager) statusView(a *Approval) StatusView {
	v := StatusView{ID: a.ID, Status: a.Status, Reason: a.Reason, Expires: a.Expires, URL: m.StatusURL(a.ID)}
	if sm, ok := statusMessages[a.Status]; ok {
		v.Message = sm.msg
	}
	if a.Grant != nil {
		v.GrantExpires = a.Grant.Expires
	}
	return v
}

type pageData struct {
	Error, Notice string
	A             *Approval
	S             Summary
	Args          string
	ArgsHidden    bool
	CanDecide     bool
	Pending       bool
	CLI           string
	FreshAuth     bool
	BreakGlass    string
}

func (m *Manager) pageData(a *Approval, cfg PageConfig, show bool) pageData {
	d := pageData{A: a, S: Summarize(a, m.StatusURL(a.ID)), Pending: a.Status == Pending, CanDecide: cfg.CheckAdmin != nil,
		CLI: "gatehouse approvals approve " + a.ID + " --as YOUR-NAME --comment '…'", BreakGlass: m.cfg.BreakGlass.Group}
	for _, q := range a.Requirements {
		r := m.rule(q.Risk)
		d.FreshAuth = d.FreshAuth || r.FreshAuth > 0 || len(r.ACR) > 0
	}
	if e := a.Evidence; e != nil {
		if show {
			var buf bytes.Buffer
			if json.Indent(&buf, e.Arguments, "", "  ") == nil {
				d.Args = buf.String()
			} else {
				d.Args = string(e.Arguments)
			}
		} else {
			d.ArgsHidden = true
		}
	}
	return d
}

func (m *Manager) render(w http.ResponseWriter, status int, d pageData) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		m.log.Error("rendering the approval page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"join": func(xs any) string {
		switch v := xs.(type) {
		case []string:
			return strings.Join(v, ", ")
		}
		b, _ := json.Marshal(xs)
		return strings.Trim(string(b), "[]")
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{if .A}}Approval {{.A.ID}} — {{.A.Status}}{{else}}Approval{{end}} · Gatehouse</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:60rem;margin:0 auto;padding:1rem}
h1{font-size:1.3rem;word-break:break-all}
.status{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600;background:#dde3ee}
.pending{background:#fff1c2}.approved,.used{background:#cdeccf}.denied,.revoked,.cancelled,.expired,.lapsed{background:#f7cfcf}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5rem 0 1rem}
th,td{text-align:left;vertical-align:top;padding:.35rem .6rem;border-bottom:1px solid #e3e6ec;overflow-wrap:anywhere}
th{width:12rem;color:#4a5468;font-weight:500}
pre{background:#fff;border:1px solid #e3e6ec;padding:.6rem;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere}
.error{background:#f7cfcf;padding:.6rem;border-radius:.3rem}.notice{background:#cdeccf;padding:.6rem;border-radius:.3rem}
form{background:#fff;border:1px solid #e3e6ec;padding:.8rem;margin:1rem 0}
label{display:block;margin:.4rem 0 .1rem}input[type=text],input[type=password],textarea{width:100%;box-sizing:border-box;padding:.35rem}
button{margin:.6rem .4rem 0 0;padding:.45rem 1rem;font-weight:600}
code{background:#eef1f6;padding:.1rem .3rem;overflow-wrap:anywhere}
.small{color:#4a5468;font-size:.9rem}
</style></head><body><main>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
{{if .Notice}}<p class="notice" role="status">{{.Notice}}</p>{{end}}
{{with .A}}
<h1>Approval {{.ID}} <span class="status {{.Status}}">{{.Status}}</span></h1>
<table>
<tr><th>Agent</th><td>{{$.S.Agent}}</td></tr>
<tr><th>Owner</th><td>{{$.S.Owner}}</td></tr>
<tr><th>On behalf of</th><td>{{$.S.User}}</td></tr>
<tr><th>Task</th><td>{{$.S.Task}}</td></tr>
<tr><th>Server / tool</th><td>{{$.S.Server}} / {{join $.S.Tools}}</td></tr>
<tr><th>Risk</th><td>{{join $.S.Risk}}</td></tr>
<tr><th>Approvers</th><td>{{join $.S.Groups}} (quorum {{$.S.Quorum}})</td></tr>
{{with .Evidence}}
<tr><th>Value</th><td>{{.Value}}</td></tr>
<tr><th>Why held</th><td>{{range .Reasons}}<div>{{.Layer}}: {{.Code}} {{join .Policies}} {{.Message}}</div>{{end}}</td></tr>
<tr><th>Tool labels</th><td>{{join .Labels}}</td></tr>
<tr><th>Session labels</th><td>{{join .SessionLabels}}</td></tr>
<tr><th>Policy version</th><td>{{.PolicyVersion}}</td></tr>
<tr><th>Call hash</th><td><code>{{.CallHash}}</code></td></tr>
<tr><th>Arguments hash</th><td><code>{{.ArgumentsHash}}</code></td></tr>
{{end}}
{{with .Elevation}}
<tr><th>Elevation</th><td>{{.Server}}: {{join .Tools}} for {{.TTL}}{{if .MaxUses}}, {{.MaxUses}} uses{{end}}</td></tr>
<tr><th>Constraints</th><td>{{range .Constraints}}<div><code>{{.Argument}}</code> {{if .Equals}}= {{printf "%s" .Equals}}{{end}}{{if .Prefix}}starts with {{.Prefix}}{{end}}{{if .Max}}≤ {{.Max}}{{end}}{{if .OneOf}}one of {{range .OneOf}}{{printf "%s" .}} {{end}}{{end}}</div>{{end}}</td></tr>
<tr><th>Justification</th><td>{{.Justification}}</td></tr>
{{end}}
<tr><th>Requested</th><td>{{when .Created}}</td></tr>
<tr><th>Decide by</th><td>{{when .Expires}}</td></tr>
{{with .Grant}}<tr><th>Grant</th><td>{{when .Start}} – {{when .Expires}}; used {{.Uses}}{{if .MaxUses}} of {{.MaxUses}}{{end}}{{if .ValueCeiling}}; value ≤ {{.ValueCeiling}}{{end}}{{if .BreakGlass}}; <strong>break-glass</strong>{{end}}</td></tr>{{end}}
</table>
{{if .Evidence}}<h2>Arguments</h2>
{{if $.ArgsHidden}}<p class="small">The arguments are shown to holders of the admin credential.</p>{{else}}<pre>{{$.Args}}</pre>{{end}}{{end}}
{{if .Reviews}}<h2>Reviews</h2><table><tr><th>When</th><th>Who</th><th>How authenticated</th><th>Decision</th></tr>
{{range .Reviews}}<tr><td>{{when .Time}}</td><td>{{.Approver.Subject}}</td><td>{{.Approver.Method}}{{if .Approver.ACR}}, {{.Approver.ACR}}{{end}}{{if not .Approver.AuthTime.IsZero}}, at {{when .Approver.AuthTime}}{{end}}</td><td>{{.Vote}}{{if .BreakGlass}} (break-glass: {{.Justification}}){{end}}{{if .Comment}} — {{.Comment}}{{end}}</td></tr>{{end}}
</table>{{end}}
{{if $.CanDecide}}
{{if $.Pending}}
<form method="post" autocomplete="off">
<label for="credential">Admin credential</label><input type="password" id="credential" name="credential" required>
<label for="approver">Approver (your name in the governance approvers)</label><input type="text" id="approver" name="approver">
<label for="comment">Comment</label><textarea id="comment" name="comment" rows="2"></textarea>
{{if $.BreakGlass}}<label><input type="checkbox" name="break_glass" value="1"> Break-glass (group {{$.BreakGlass}}; alerts at once, opens a review item)</label>
<label for="justification">Justification (required for break-glass)</label><textarea id="justification" name="justification" rows="2"></textarea>{{end}}
<button name="action" value="approve">Approve</button><button name="action" value="deny">Deny</button>{{if $.ArgsHidden}}<button name="action" value="view">Show arguments</button>{{end}}
{{if $.FreshAuth}}<p class="small">This risk class demands fresh strong authentication: approvals made with the admin credential do not count.</p>{{end}}
</form>
{{else if $.ArgsHidden}}
<form method="post" autocomplete="off"><label for="credential">Admin credential</label><input type="password" id="credential" name="credential" required>
<button name="action" value="view">Show arguments</button></form>
{{end}}
{{end}}
{{if $.Pending}}<p class="small">Or from a terminal: <code>{{$.CLI}}</code></p>{{end}}
{{end}}
</main></body></html>
`))

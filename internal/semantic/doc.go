// Package semantic is the semantic layer of the gateway: it screens text
// for prompt injection, jailbreaks and data leakage and says what to do
// about it. It knows nothing of MCP: the MCP pipeline and the LLM proxy
// both hand it plain text with the surface it arrived on.
//
// # Use
//
//	e, err := semantic.New(semantic.Config{})          // defaults: see Config
//	canary := e.NewCanary(sessionID)                    // plant it in the context
//	res, err := e.Screen(ctx, semantic.Input{
//		Surface:   semantic.SurfaceToolOutput,
//		Text:      result,
//		SessionID: sessionID,                            // finds this session's canary
//	})
//	// res.Verdict: allow / challenge / block, reasons, obligations
//	// res.Labels: session labels to raise (untrusted_content, private_data)
//	// res.RedactedText: the text to forward when res.Redacted()
//	// res.Spotlight: datamarked text when Config.Datamark is on
//	// res.Context: the findings summarised for policy
//
// # Detectors
//
// Built in, all offline and initialised once in New:
//
//   - injection: a linear classifier over hashed word and character
//     n-grams plus structural features of instructions addressed to an AI,
//     scored on the whole text and on each sentence-like segment (so one
//     planted instruction in a long document stands out), trained in Go
//     (package injection, `gatehouse semantic train`);
//   - heuristics: instruction override, prompt-leak requests, chat-template
//     role markers, role-play framing, encoded payloads (base64, hex,
//     rot13; decoded and screened again), Unicode tag characters (decoded
//     and screened), bidirectional controls, invisible characters and
//     confusables; text is normalised first (package textnorm);
//   - secrets: gitleaks' default rules (package secret);
//   - pii: cards (Luhn), IBANs (mod 97), US SSNs, e-mail, phone numbers
//     (libphonenumber), IP addresses (package pii), with an action per type;
//   - canary: the session's canary tokens in any output, plain, split,
//     reversed, re-cased, hex, base64 or rot13;
//   - exfil: markdown and HTML images and links to hosts outside an
//     allow-list with data in the URL.
//
// Remote adapters (package guard: Azure Prompt Shields, Bedrock
// Guardrails, Lakera Guard, OpenAI-compatible guard models) run
// concurrently with the built-ins, each with its own timeout, fail mode
// and LRU cache.
//
// # Decision
//
// The injection risk of a text is the highest score among injection-class
// findings (classifier, heuristics, decoded payloads, remote adapters).
// Per-surface Thresholds turn it into an action: label (raise
// untrusted_content), challenge or block. Other findings carry their own
// action: secrets and PII redact (or challenge, per surface and type), a
// canary leak blocks, an exfiltration channel blocks or challenges on
// output surfaces and labels elsewhere. The verdict is the most severe
// action; every finding is listed and summarised in Context for policy.
//
// # Invariants
//
//   - Screen never returns an Allow verdict with an error: on an error
//     (unknown surface, cancelled context) the Result is Block.
//   - A detector that fails (a panic, or a remote error or timeout) becomes
//     a "detector_error" finding whose action its FailMode decides; the
//     default is FailClosed (block). Remote adapters never turn a failure
//     into a clean answer.
//   - Findings' spans index Input.Text; a span is -1 when it cannot be
//     mapped back exactly (normalisation changed the text).
//   - Operational logs carry no payload, secret or token.
//   - An Engine is immutable after New and safe for concurrent use.
package semantic

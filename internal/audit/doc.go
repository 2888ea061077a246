// Package audit is the gateway's tamper-evident audit log: every decision
// and state change is an OCSF 1.3.0 event, appended write-ahead to an
// RFC 6962 Merkle log with Ed25519-signed C2SP checkpoints.
//
// # Model
//
//   - An Event is built with a constructor per OCSF class: APIActivity
//     (tool calls, tool lists, LLM requests; intent and outcome records
//     linked by correlation id and Call.Intent), Authentication,
//     AuthorizeSession, EntityManagement (registry, locks, policies, pins)
//     and UserAccessManagement (approvals).
//   - Log.Append applies the payload privacy Mode (metadata only: salted
//     HMAC of arguments and results; full: canonical payload with secrets
//     replaced by their salted HMAC), encodes the event as canonical JSON
//     and hands it to a single writer goroutine that commits concurrent
//     appends as one backend transaction (group commit). Append returns only
//     when the record is durable; any error means "not recorded" and the
//     caller must not act (fail closed). Failures increment
//     gatehouse_audit_failures_total and set gatehouse_audit_store_up to 0.
//   - Each record's leaf is canonical JSON {"event":…,"index":N,"prev":H,"v":1}
//     where prev is the previous leaf's hash. Leaf hashes and the tlog
//     stored hashes (tlog.StoredHashIndex layout) are kept by the Backend,
//     so inclusion and consistency proofs read O(log n) hashes.
//   - Checkpoints ("<origin>\n<size>\n<base64 root>\n" signed with the
//     note.Signer) are issued every CheckpointInterval when the log grew, on
//     demand (Log.Checkpoint) and at Close, stored in the CheckpointStore
//     and published to CheckpointSinks (FileSink, WebhookSink) for external
//     witnesses or write-once storage.
//   - VerifyBackend and VerifyBundle recompute every leaf hash, follow the
//     index and prev links and recompute the roots of the signed
//     checkpoints. They report each discrepancy with its index and kind:
//     Modified, Deleted, Inserted, Reordered, CheckpointMismatch,
//     BadCheckpoint (see classifier in verify.go for how they are told
//     apart).
//   - WriteBundle exports a range as a self-verifying bundle (JSON Lines:
//     header, checkpoints, subtree hashes, entries); Exporter streams OCSF
//     JSON Lines to a file, stdout or an HTTP endpoint with a persisted
//     cursor and back-pressure.
//
// # Invariants
//
//   - Index i is assigned once, in commit order, with no gaps; a record is
//     acknowledged only after the transaction holding it committed.
//   - The log is never rewritten: the Log only appends; Open refuses a store
//     whose hashes do not match the latest signed checkpoint.
//   - No secret is stored in clear: payload fields go through privacy before
//     hashing.
//   - One Log per store writes at a time; a backend rejects an append that
//     does not start at its size (ErrConflict).
//
// Storage backends: Memory (tests), and store.AuditLog for SQLite and
// PostgreSQL; audittest.Run is the contract suite they all pass.
package audit

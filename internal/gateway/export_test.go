package gateway

import "context"

// SettleAudit waits until the gateway's audit store file holds every
// durable record (see store.AuditLog.Settle), for tests that read the file
// through a connection of their own.
func SettleAudit(ctx context.Context, g *Gateway) error {
	if g.recorder == nil {
		return nil
	}
	return g.recorder.backend.Settle(ctx)
}

package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/gatehouse/gatehouse/internal/audit"
	"golang.org/x/mod/sumdb/tlog"
)

// ReadLeaves implements audit.LeafReader: verification reads each entry's
// leaf, its recorded hash and the leaf hash its tree column holds (the first
// stored hash an append adds is the entry's own leaf hash) in one query,
// instead of reading the filter columns with Entries and the tree's leaf
// hashes with one Hashes query per few hundred entries.
func (a *AuditLog) ReadLeaves(ctx context.Context, from, to int64) ([]audit.LeafRow, error) {
	if err := a.Settle(ctx); err != nil {
		return nil, fmt.Errorf("reading audit leaves: %w", err)
	}
	rows, err := a.db.QueryContext(ctx, `SELECT idx, data, hash, substr(tree, 1, 32) FROM audit_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx`, from, to)
	if err != nil {
		return nil, fmt.Errorf("reading audit leaves: %w", err)
	}
	defer rows.Close()
	out := make([]audit.LeafRow, 0, max(0, min(to-from, 1<<16)))
	var h, tree sql.RawBytes
	for rows.Next() {
		var r audit.LeafRow
		if err := rows.Scan(&r.Index, &r.Data, &h, &tree); err != nil {
			return nil, fmt.Errorf("reading audit leaves: %w", err)
		}
		copy(r.Hash[:], h)
		if len(tree) == tlog.HashSize {
			copy(r.TreeLeaf[:], tree)
			r.HasTreeLeaf = true
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading audit leaves: %w", err)
	}
	return out, nil
}

var _ audit.LeafReader = (*AuditLog)(nil)

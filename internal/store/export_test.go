package store

import "testing"

// SetJournalSize sets the size of audit journals created during t.
func SetJournalSize(t testing.TB, n int64) {
	old := journalSize
	journalSize = n
	t.Cleanup(func() { journalSize = old })
}

//go:build !unix

package store

import "os"

// lockFile does nothing where flock is not available: one gateway per
// SQLite store is then the operator's to ensure.
func lockFile(*os.File) error { return nil }

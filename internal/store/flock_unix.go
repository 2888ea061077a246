//go:build unix

package store

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errLocked means another open file holds the lock.
var errLocked = errors.New("locked by another process")

// lockFile takes an exclusive advisory lock on f (flock), without waiting.
// The lock lasts until f is closed.
func lockFile(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return errLocked
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return err
		}
	}
}

package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync flushes f's data (fdatasync): the journal never changes its
// size, so the inode's metadata need not be written.
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

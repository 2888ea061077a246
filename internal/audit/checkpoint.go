package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// formatCheckpoint returns the body of a C2SP checkpoint.
func formatCheckpoint(origin string, size int64, root tlog.Hash) []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root[:]))
}

// OpenCheckpoint verifies a signed checkpoint note with v and parses it. The
// checkpoint's origin line must equal the verifier's name.
func OpenCheckpoint(msg []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("verifying checkpoint signature: %w", err)
	}
	// note decodes signatures leniently: a signature whose last base64
	// character differs in the bits padding ignores verifies as the
	// original. A checkpoint is evidence; only the canonical encoding is.
	for _, s := range append(slices.Clip(n.Sigs), n.UnverifiedSigs...) {
		if _, err := base64.StdEncoding.Strict().DecodeString(s.Base64); err != nil {
			return Checkpoint{}, fmt.Errorf("checkpoint signature by %q is not canonical base64", s.Name)
		}
	}
	c, err := parseCheckpointText(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if origin := strings.SplitN(n.Text, "\n", 2)[0]; origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("checkpoint origin %q does not match key name %q", origin, v.Name())
	}
	c.Note = msg
	return c, nil
}

func parseCheckpointText(text string) (Checkpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 || lines[0] == "" {
		return Checkpoint{}, errors.New("parsing checkpoint: want origin, size and root lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint size %q", lines[1])
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint root: %w", err)
	}
	return Checkpoint{Size: size, Root: root}, nil
}

// CheckpointSink receives every checkpoint the log issues, so that an
// external witness or write-once storage can hold it. Publish may retry; it
// should return when ctx ends. The log calls each sink from one goroutine,
// in order.
type CheckpointSink interface {
	Publish(ctx context.Context, c Checkpoint) error
}

// FileSink writes each checkpoint to Dir/checkpoint.<size> and replaces
// Dir/checkpoint with the latest, atomically, with fsync.
type FileSink struct {
	Dir string
}

// Publish implements CheckpointSink.
func (s FileSink) Publish(ctx context.Context, c Checkpoint) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("creating checkpoint directory: %w", err)
	}
	if err := WriteFileSync(filepath.Join(s.Dir, "checkpoint."+strconv.FormatInt(c.Size, 10)), c.Note); err != nil {
		return err
	}
	return WriteFileSync(filepath.Join(s.Dir, "checkpoint"), c.Note)
}

// WriteFileSync writes b to path durably: a temporary file in the same
// directory, synced, renamed over path, and the directory synced.
func WriteFileSync(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	// The rename is durable once the directory is synced.
	return SyncDir(filepath.Dir(path))
}

// SyncDir syncs directory dir, which makes the creation, removal or
// renaming of its entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// WebhookSink POSTs each checkpoint note (text/plain) to URL and retries
// with exponential backoff until a 2xx answer or until ctx ends.
type WebhookSink struct {
	URL string
	// Client defaults to a client with a 10 s timeout.
	Client *http.Client
	// Header is added to every request (e.g. Authorization).
	Header http.Header
	// MinBackoff (default 500 ms) and MaxBackoff (default 1 min) bound the
	// delay between attempts.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// Publish implements CheckpointSink.
func (s WebhookSink) Publish(ctx context.Context, c Checkpoint) error {
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	lo, hi := s.MinBackoff, s.MaxBackoff
	if lo <= 0 {
		lo = 500 * time.Millisecond
	}
	if hi <= 0 {
		hi = time.Minute
	}
	logger := s.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return retry(ctx, lo, hi, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(c.Note))
		if err != nil {
			return err
		}
		for k, v := range s.Header {
			req.Header[k] = v
		}
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
		resp, err := client.Do(req)
		if err != nil {
			logger.Warn("publishing checkpoint", "size", c.Size, "err", err)
			return err
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			err := fmt.Errorf("checkpoint webhook answered %s", resp.Status)
			logger.Warn("publishing checkpoint", "size", c.Size, "err", err)
			return err
		}
		return nil
	})
}

// retry calls f until it succeeds or ctx ends, sleeping with jittered
// exponential backoff between lo and hi.
func retry(ctx context.Context, lo, hi time.Duration, f func() error) error {
	d := lo
	for {
		err := f()
		if err == nil {
			return nil
		}
		t := time.NewTimer(d/2 + rand.N(d/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
		d = min(2*d, hi)
	}
}

package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"
)

// Sink receives exported events as OCSF JSON Lines. Write returns nil only
// once the lines are accepted (written and synced, or acknowledged with a
// 2xx); an error makes the exporter retry the same lines.
type Sink interface {
	Write(ctx context.Context, lines [][]byte) error
}

// WriterSink writes lines to W (a file or stdout); a *os.File is synced
// after each write, except for terminals and pipes where Sync fails.
type WriterSink struct{ W io.Writer }

// Write implements Sink.
func (s WriterSink) Write(ctx context.Context, lines [][]byte) error {
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	if _, err := s.W.Write(b.Bytes()); err != nil {
		return err
	}
	if f, ok := s.W.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			return f.Sync()
		}
	}
	return nil
}

// HTTPSink POSTs lines as application/x-ndjson to URL (a SIEM collector).
type HTTPSink struct {
	URL    string
	Client *http.Client // default: 30 s timeout
	Header http.Header
}

// Write implements Sink.
func (s HTTPSink) Write(ctx context.Context, lines [][]byte) error {
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, &b)
	if err != nil {
		return err
	}
	for k, v := range s.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("export endpoint answered %s", resp.Status)
	}
	return nil
}

// Exporter tails the log and streams its events to a Sink, in index order.
// Its position is a cursor in Cursors, advanced only after the sink
// accepted the lines: after a restart it resumes where it stopped, and a
// slow or failing sink makes it lag, never drop (back-pressure).
type Exporter struct {
	Backend Backend     // required
	Cursors CursorStore // required
	Sink    Sink        // required
	// Name names the cursor; default "export".
	Name string
	// Batch is the number of events per write; default 256.
	Batch int
	// Poll is the wait when the exporter has caught up; default 1 s.
	Poll time.Duration
	// MinBackoff and MaxBackoff bound retries of a failing sink; defaults
	// 500 ms and 1 min.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

func (x *Exporter) defaults() {
	if x.Name == "" {
		x.Name = "export"
	}
	if x.Batch <= 0 {
		x.Batch = 256
	}
	if x.Poll <= 0 {
		x.Poll = time.Second
	}
	if x.MinBackoff <= 0 {
		x.MinBackoff = 500 * time.Millisecond
	}
	if x.MaxBackoff <= 0 {
		x.MaxBackoff = time.Minute
	}
	if x.Logger == nil {
		x.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run exports until ctx ends.
func (x *Exporter) Run(ctx context.Context) error {
	x.defaults()
	for {
		n, err := x.Step(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			x.Logger.Error("exporting audit events", "err", err)
		}
		if n == 0 || err != nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(x.Poll):
			}
		}
	}
}

// Step exports the next batch, retrying the sink until it accepts or ctx
// ends, and returns the number of events exported.
func (x *Exporter) Step(ctx context.Context) (int, error) {
	x.defaults()
	cur, err := x.Cursors.Cursor(ctx, x.Name)
	if err != nil {
		return 0, err
	}
	size, err := x.Backend.Size(ctx)
	if err != nil {
		return 0, err
	}
	from := cur + 1
	if from >= size {
		return 0, nil
	}
	es, err := x.Backend.Entries(ctx, from, min(from+int64(x.Batch), size))
	if err != nil {
		return 0, err
	}
	if len(es) == 0 {
		// A gap (deleted entries): skip it; verification reports it.
		return 0, x.Cursors.SetCursor(ctx, x.Name, min(from+int64(x.Batch), size)-1)
	}
	lines := make([][]byte, 0, len(es))
	for _, e := range es {
		lf, err := ParseLeaf(e.Data)
		if err != nil {
			return 0, fmt.Errorf("exporting entry %d: %w", e.Index, err)
		}
		lines = append(lines, lf.Event)
	}
	err = retry(ctx, x.MinBackoff, x.MaxBackoff, func() error {
		err := x.Sink.Write(ctx, lines)
		if err != nil && !errors.Is(err, context.Canceled) {
			x.Logger.Warn("export sink failed; retrying", "from", from, "err", err)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	if err := x.Cursors.SetCursor(ctx, x.Name, es[len(es)-1].Index); err != nil {
		return 0, err
	}
	return len(es), nil
}

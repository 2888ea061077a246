package mcp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	ID    string
	Event string
	Data  []byte
	Retry int // milliseconds; 0 when absent
}

// sseReader parses a text/event-stream body (WHATWG HTML, "Server-sent
// events"), with a bound on the size of one event.
type sseReader struct {
	r       *bufio.Reader
	maxSize int
}

// sseBufferSize is the read buffer of an event stream.
const sseBufferSize = 16 << 10

func newSSEReader(r io.Reader, maxSize int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, sseBufferSize), maxSize: maxSize}
}

// sseBuffers holds the read buffers of response streams, which live for one
// upstream call each: a fresh 16 KiB buffer per call was the largest
// allocation on the tool-call path.
var sseBuffers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, sseBufferSize) }}

// pooledSSEReader returns a reader with a pooled buffer, to be pointed at
// a stream with reset, and the function that returns the buffer to the
// pool. Nothing the reader returned may point into the buffer (Next copies
// every event out of it).
func pooledSSEReader(maxSize int) (*sseReader, func()) {
	br := sseBuffers.Get().(*bufio.Reader)
	return &sseReader{r: br, maxSize: maxSize}, func() {
		br.Reset(nil)
		sseBuffers.Put(br)
	}
}

// reset discards buffered data and reads from r.
func (s *sseReader) reset(r io.Reader) { s.r.Reset(r) }

var errEventTooLarge = errors.New("server-sent event too large")

// Next returns the next event that carries data or an id. It returns io.EOF
// at the end of the stream.
func (s *sseReader) Next() (*sseEvent, error) {
	ev := &sseEvent{}
	var data bytes.Buffer
	hasData, hasField := false, false
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && (hasData || hasField) {
				// A final event without its blank line is incomplete: drop it,
				// as the specification requires.
				return nil, io.EOF
			}
			return nil, err
		}
		if len(line) == 0 {
			if hasData || ev.ID != "" || ev.Retry > 0 {
				ev.Data = data.Bytes()
				return ev, nil
			}
			ev, hasField = &sseEvent{}, false
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		hasField = true
		switch string(field) {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			hasData = true
			if data.Len()+len(value) > s.maxSize {
				return nil, errEventTooLarge
			}
			data.Write(value)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				ev.ID = string(value)
			}
		case "event":
			ev.Event = string(value)
		case "retry":
			if n, err := strconv.Atoi(string(value)); err == nil && n >= 0 {
				ev.Retry = n
			}
		}
	}
}

func (s *sseReader) readLine() ([]byte, error) {
	var line []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		if len(line)+len(frag) > s.maxSize+64 {
			return nil, errEventTooLarge
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(line) > 0 && errors.Is(err, io.EOF) {
			break
		}
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return line, nil
}

// sseWriter writes events to an HTTP response and flushes each one.
type sseWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
	started bool
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	f, _ := w.(http.Flusher)
	return &sseWriter{w: w, flusher: f}
}

// start writes the response headers for an event stream. They reach the
// client with the first flush (every event flushes).
func (s *sseWriter) start(status int) {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(status)
}

// write sends one event with the given id (may be empty) and data.
func (s *sseWriter) write(id string, data []byte) error {
	if err := s.writeLast(id, data); err != nil {
		return err
	}
	s.flush()
	return nil
}

// writeLast writes the stream's last event without flushing it: the
// handler returns right after, and net/http then sends the event together
// with the end of the response in one write (a stream that was not flushed
// before goes out whole, with a Content-Length) instead of two.
func (s *sseWriter) writeLast(id string, data []byte) error {
	s.start(http.StatusOK)
	var buf bytes.Buffer
	buf.Grow(len(data) + 32)
	if id != "" {
		fmt.Fprintf(&buf, "id: %s\n", id)
	}
	buf.WriteString("event: message\n")
	for _, line := range bytes.Split(data, []byte("\n")) {
		buf.WriteString("data: ")
		buf.Write(line)
		buf.WriteByte('\n')
	}
	buf.WriteByte('\n')
	_, err := s.w.Write(buf.Bytes())
	return err
}

// comment writes an SSE comment (a keep-alive).
func (s *sseWriter) comment(text string) error {
	s.start(http.StatusOK)
	if _, err := fmt.Fprintf(s.w, ": %s\n\n", text); err != nil {
		return err
	}
	s.flush()
	return nil
}

func (s *sseWriter) flush() {
	if s.flusher != nil {
		s.flusher.Flush()
	}
}

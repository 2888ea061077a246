package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The load generator speaks MCP's Streamable HTTP transport itself rather
// than through the go-sdk client: one tools/call is one POST whose body is
// built by appending bytes, and whose answer (application/json or an event
// stream) is scanned for the matching response. The go-sdk client runs a
// jsonrpc2 connection with its own goroutines, typed params and schema
// handling per call; on a 2-core machine shared with the processes under test,
// every microsecond the generator spends is taken from them. The generator's
// own CPU per call is measured and reported so that this stays checked.

// target is one MCP endpoint under load.
type target struct {
	Name  string `json:"name"`
	URL   string `json:"url"`
	PID   int    `json:"pid,omitempty"`
	token string

	client   *http.Client
	sessions []*session
	next     atomic.Uint64
	// header is the constant part of a tools/call request's headers.
	auth []string
}

// session is one initialized MCP session.
type session struct {
	id      []string // Mcp-Session-Id header value
	version []string // Mcp-Protocol-Version header value
	seq     atomic.Int64
}

var (
	hdrJSON   = []string{"application/json"}
	hdrAccept = []string{"application/json, text/event-stream"}
)

func newTarget(name, url string, pid int, token string, conns int) *target {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     5 * time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	t := &target{Name: name, URL: url, PID: pid, token: token, client: &http.Client{Transport: tr}}
	if token != "" {
		t.auth = []string{"Bearer " + token}
	}
	return t
}

// rpcError is a JSON-RPC error answer, or a tool result flagged isError.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *rpcError) Error() string { return fmt.Sprintf("JSON-RPC error %d: %s", e.Code, e.Message) }

// response is the part of a JSON-RPC response the generator checks.
type response struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Result *struct {
		IsError         bool              `json:"isError"`
		Content         []json.RawMessage `json:"content"`
		ProtocolVersion string            `json:"protocolVersion"`
	} `json:"result"`
	Error *rpcError `json:"error"`
}

func (t *target) newRequest(ctx context.Context, method string, s *session, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.URL, rd)
	if err != nil {
		return nil, err
	}
	h := req.Header
	if body != nil {
		h["Content-Type"] = hdrJSON
	}
	h["Accept"] = hdrAccept
	if s != nil {
		h["Mcp-Session-Id"] = s.id
		h["Mcp-Protocol-Version"] = s.version
	}
	if t.auth != nil {
		h["Authorization"] = t.auth
	}
	return req, nil
}

// open initializes n sessions with protocol version version.
func (t *target) open(ctx context.Context, n int, version string) error {
	for i := range n {
		s, err := t.initialize(ctx, version, i)
		if err != nil {
			return fmt.Errorf("%s: session %d: %w", t.Name, i, err)
		}
		t.sessions = append(t.sessions, s)
	}
	return nil
}

func (t *target) initialize(ctx context.Context, version string, i int) (*session, error) {
	body := fmt.Appendf(nil, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":%q,"capabilities":{},"clientInfo":{"name":"gatehouse-mcpload","version":"0.1.0"}}}`, version)
	req, err := t.newRequest(ctx, http.MethodPost, nil, body)
	if err != nil {
		return nil, err
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	r, err := readResponse(resp, []byte("0"))
	if err != nil {
		return nil, fmt.Errorf("initialize: %w", err)
	}
	if r.Error != nil {
		return nil, fmt.Errorf("initialize: %w", r.Error)
	}
	if r.Result == nil || r.Result.ProtocolVersion == "" {
		return nil, errors.New("initialize: no protocolVersion in the result")
	}
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		return nil, errors.New("initialize: the server gave no Mcp-Session-Id (is it in stateless mode?)")
	}
	s := &session{id: []string{sid}, version: []string{r.Result.ProtocolVersion}}
	// notifications/initialized: the server answers 202 Accepted.
	req, err = t.newRequest(ctx, http.MethodPost, s, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
	if err != nil {
		return nil, err
	}
	nresp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	drain(nresp.Body)
	if nresp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("notifications/initialized: %w", statusError(nresp))
	}
	return s, nil
}

// close ends every session (DELETE), best effort.
func (t *target) close(ctx context.Context) {
	for _, s := range t.sessions {
		req, err := t.newRequest(ctx, http.MethodDelete, s, nil)
		if err != nil {
			continue
		}
		if resp, err := t.client.Do(req); err == nil {
			drain(resp.Body)
		}
	}
	t.client.CloseIdleConnections()
}

// session returns the next session, round robin.
func (t *target) session() *session {
	return t.sessions[int(t.next.Add(1)%uint64(len(t.sessions)))]
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// call sends one tools/call on s and checks its answer: a result that is
// not flagged isError.
func (t *target) call(ctx context.Context, s *session, tool string, args []byte) error {
	id := s.seq.Add(1)
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"method":"tools/call","params":{"name":`...)
	b = strconv.AppendQuote(b, tool)
	b = append(b, `,"arguments":`...)
	b = append(b, args...)
	b = append(b, "}}"...)
	*bp = b
	defer bufPool.Put(bp)

	req, err := t.newRequest(ctx, http.MethodPost, s, b)
	if err != nil {
		return err
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	var idb [20]byte
	r, err := readResponse(resp, strconv.AppendInt(idb[:0], id, 10))
	if err != nil {
		return err
	}
	switch {
	case r.Error != nil:
		return r.Error
	case r.Result == nil:
		return errors.New("response without result")
	case r.Result.IsError:
		return errors.New("tool result flagged isError")
	case len(r.Result.Content) == 0:
		return errors.New("tool result without content")
	}
	return nil
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// readResponse reads the JSON-RPC response with the given id from an
// application/json body or from a text/event-stream body (skipping other
// messages and priming events).
func readResponse(resp *http.Response, id []byte) (*response, error) {
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if err != nil {
			return nil, err
		}
		var r response
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("decoding response: %w", err)
		}
		if !bytes.Equal(r.ID, id) {
			return nil, fmt.Errorf("response id %s does not match request id %s", r.ID, id)
		}
		return &r, nil
	case "text/event-stream":
		br := readerPool.Get().(*bufio.Reader)
		br.Reset(resp.Body)
		defer func() { br.Reset(nil); readerPool.Put(br) }()
		var data, long []byte
		for {
			line, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				long = append(long, line...)
				continue
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					return nil, errors.New("event stream ended before the response")
				}
				return nil, err
			}
			if len(long) > 0 {
				long = append(long, line...)
				line, long = long, long[:0]
			}
			line = bytes.TrimRight(line, "\r\n")
			if len(line) == 0 {
				// End of an event.
				if len(bytes.TrimSpace(data)) > 0 {
					var r response
					if err := json.Unmarshal(data, &r); err != nil {
						return nil, fmt.Errorf("decoding event: %w", err)
					}
					if r.Method == "" && bytes.Equal(r.ID, id) {
						return &r, nil
					}
				}
				data = data[:0]
				continue
			}
			if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				v = bytes.TrimPrefix(v, []byte(" "))
				if len(data) > 0 {
					data = append(data, '\n')
				}
				data = append(data, v...)
			}
		}
	default:
		return nil, fmt.Errorf("unexpected content type %q", resp.Header.Get("Content-Type"))
	}
}

func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
}

// drain reads what is left of a body so that its connection is reused.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 1<<20))
	body.Close()
}

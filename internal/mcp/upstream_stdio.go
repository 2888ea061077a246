package mcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// stdioServer describes an upstream server that the gateway starts as a
// child process and talks to over stdin/stdout (newline-delimited JSON-RPC).
type stdioServer struct {
	id             string
	argv           []string
	dir            string
	env            []string // the complete environment; nothing is inherited
	timeout        time.Duration
	connectTimeout time.Duration
	logger         *slog.Logger
}

// stdioConn is one child process, which is one MCP session.
type stdioConn struct {
	srv     *stdioServer
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	writeMu sync.Mutex
	initRes *initResult

	mu       sync.Mutex
	pending  map[string]*stdioCall // upstream request id → call
	progress map[string]*stdioCall // upstream progress token → call
	order    []*stdioCall          // in-flight calls, oldest first
	sink     func(*Message)        // listener for unrelated messages
	dead     atomic.Bool
	done     chan struct{}
	exitErr  error
	closing  sync.Once
	tokenSeq atomic.Int64
}

type stdioCall struct {
	resp     chan *Message
	onMsg    func(*Message)
	token    json.RawMessage // the agent's progress token, restored on the way back
	upToken  string
	upstream json.RawMessage
}

// dial starts the process and initializes the session.
func (s *stdioServer) dial(ctx context.Context, initParams json.RawMessage) (*stdioConn, error) {
	if len(s.argv) == 0 {
		return nil, &upstreamError{server: s.id, msg: "no command"}
	}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Dir = s.dir
	cmd.Env = s.env
	if cmd.Env == nil {
		cmd.Env = []string{} // never inherit the gateway's environment
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, &upstreamError{server: s.id, msg: "starting", err: err}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, &upstreamError{server: s.id, msg: "starting", err: err}
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, &upstreamError{server: s.id, msg: "starting", err: err}
	}
	if err := cmd.Start(); err != nil {
		return nil, &upstreamError{server: s.id, msg: "starting", err: err}
	}
	c := &stdioConn{srv: s, cmd: cmd, stdin: stdin, pending: map[string]*stdioCall{}, progress: map[string]*stdioCall{}, done: make(chan struct{})}
	go c.logStderr(stderr)
	go c.readLoop(stdout)

	ictx, cancel := context.WithTimeout(ctx, s.connectTimeout)
	defer cancel()
	res, err := c.call(ictx, &Message{JSONRPC: "2.0", ID: nextID(), Method: "initialize", Params: initParams}, nil)
	if err != nil {
		c.close()
		return nil, err
	}
	if res.Error != nil {
		c.close()
		return nil, &upstreamError{server: s.id, msg: "initialization refused: " + res.Error.Message}
	}
	var ir initResult
	if err := json.Unmarshal(res.Result, &ir); err != nil || !supportedVersion(ir.ProtocolVersion) {
		c.close()
		return nil, &upstreamError{server: s.id, msg: fmt.Sprintf("unsupported or invalid initialize result (version %q)", ir.ProtocolVersion)}
	}
	ir.Raw = res.Result
	c.initRes = &ir
	if err := c.send(ictx, &Message{JSONRPC: "2.0", Method: "notifications/initialized"}); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *stdioConn) logStderr(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		c.srv.logger.Debug("upstream stderr", "server", c.srv.id, "line", sc.Text())
	}
}

func (c *stdioConn) readLoop(r io.Reader) {
	rd := bufio.NewReaderSize(r, 64<<10)
	defer func() {
		c.dead.Store(true)
		c.exitErr = c.cmd.Wait()
		close(c.done)
		c.mu.Lock()
		for _, call := range c.pending {
			close(call.resp)
		}
		c.pending = map[string]*stdioCall{}
		c.mu.Unlock()
	}()
	for {
		line, err := readLimitedLine(rd, maxUpstreamMessage)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.srv.logger.Warn("upstream stdout", "server", c.srv.id, "err", err)
			}
			return
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if err := checkJSON(line); err != nil {
			c.srv.logger.Warn("dropping invalid JSON from upstream", "server", c.srv.id, "err", err)
			continue
		}
		m, werr := decodeMessage(line)
		if werr != nil {
			c.srv.logger.Warn("dropping invalid message from upstream", "server", c.srv.id, "err", werr.Message)
			continue
		}
		c.dispatch(m)
	}
}

func readLimitedLine(rd *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		frag, err := rd.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > limit {
			return nil, errEventTooLarge
		}
		if err == nil {
			return line, nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return line, nil
		}
		return nil, err
	}
}

func (c *stdioConn) dispatch(m *Message) {
	c.mu.Lock()
	if m.IsResponse() {
		call, ok := c.pending[idKey(m.ID)]
		if ok {
			delete(c.pending, idKey(m.ID))
		}
		c.mu.Unlock()
		if ok {
			call.resp <- m
		}
		return
	}
	var target *stdioCall
	if m.Method == "notifications/progress" {
		if p, err := parseParams(m.Params); err == nil {
			if call, ok := c.progress[string(p["progressToken"])]; ok {
				target = call
				p["progressToken"] = call.token
				m.Params = p.raw()
			}
		}
	}
	if target == nil && len(c.order) > 0 {
		// stdio carries no link between a message and the request it belongs
		// to; the newest request in flight is the best guess.
		target = c.order[len(c.order)-1]
	}
	sink := c.sink
	c.mu.Unlock()
	switch {
	case target != nil && target.onMsg != nil:
		target.onMsg(m)
	case sink != nil:
		sink(m)
	case m.IsRequest():
		// Nobody can answer: refuse rather than leave the server waiting.
		_ = c.send(context.Background(), errorResponse(m.ID, CodeMethodNotFound, "the client cannot receive this request now", nil))
	}
}

func (c *stdioConn) write(m *Message) error {
	if c.dead.Load() {
		return &upstreamError{server: c.srv.id, msg: "process exited"}
	}
	b := append(encode(m), '\n')
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if _, err := c.stdin.Write(b); err != nil {
		return &upstreamError{server: c.srv.id, msg: "writing to process", err: err}
	}
	return nil
}

func (c *stdioConn) call(ctx context.Context, req *Message, o *callOpts) (*Message, error) {
	up := *req
	up.ID = nextID()
	var onMsg func(*Message)
	if o != nil {
		onMsg = o.onMsg
	}
	call := &stdioCall{resp: make(chan *Message, 1), onMsg: onMsg, upstream: up.ID}
	// Progress tokens are rewritten so that tokens of different agents
	// sharing one process cannot collide.
	if p, err := parseParams(up.Params); err == nil {
		if metaRaw, ok := p["_meta"]; ok {
			var meta map[string]json.RawMessage
			if json.Unmarshal(metaRaw, &meta) == nil {
				if tok, ok := meta["progressToken"]; ok {
					call.token = tok
					call.upToken = fmt.Sprintf(`"gh-%d"`, c.tokenSeq.Add(1))
					meta["progressToken"] = json.RawMessage(call.upToken)
					mb, _ := json.Marshal(meta)
					p["_meta"] = mb
					up.Params = p.raw()
				}
			}
		}
	}
	c.mu.Lock()
	c.pending[idKey(up.ID)] = call
	if call.upToken != "" {
		c.progress[call.upToken] = call
	}
	c.order = append(c.order, call)
	c.mu.Unlock()
	defer c.forget(call)
	if err := c.write(&up); err != nil {
		return nil, err
	}
	timeout := time.NewTimer(c.srv.timeout)
	defer timeout.Stop()
	select {
	case res, ok := <-call.resp:
		if !ok {
			return nil, &upstreamError{server: c.srv.id, msg: "process exited", err: c.exitErr}
		}
		out := *res
		out.ID = req.ID
		return &out, nil
	case <-ctx.Done():
		_ = c.write(&Message{JSONRPC: "2.0", Method: "notifications/cancelled", Params: cancelledParams(up.ID, "request cancelled")})
		return nil, ctx.Err()
	case <-timeout.C:
		_ = c.write(&Message{JSONRPC: "2.0", Method: "notifications/cancelled", Params: cancelledParams(up.ID, "timed out")})
		return nil, &upstreamError{server: c.srv.id, msg: "timed out"}
	}
}

func (c *stdioConn) forget(call *stdioCall) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, idKey(call.upstream))
	if call.upToken != "" {
		delete(c.progress, call.upToken)
	}
	for i, o := range c.order {
		if o == call {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

func (c *stdioConn) send(_ context.Context, m *Message) error { return c.write(m) }

func (c *stdioConn) listen(ctx context.Context, onMsg func(*Message)) error {
	c.mu.Lock()
	c.sink = onMsg
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.sink = nil
		c.mu.Unlock()
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return nil
	}
}

func (c *stdioConn) init() *initResult { return c.initRes }

func (c *stdioConn) alive() bool { return !c.dead.Load() }

// close ends the process: stdin is closed, then SIGTERM, then SIGKILL to its
// process group.
func (c *stdioConn) close() {
	c.closing.Do(func() {
		c.stdin.Close()
		select {
		case <-c.done:
			return
		case <-time.After(2 * time.Second):
		}
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-c.done:
			return
		case <-time.After(3 * time.Second):
		}
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	})
}

// envList turns a map into a sorted KEY=VALUE list.
func envList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

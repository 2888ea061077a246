package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Servers are the running demo servers.
type Servers struct {
	Bank         *Bank
	Workspace    *Workspace
	BankURL      string
	WorkspaceURL string
	servers      []*http.Server
}

// Start serves both demo servers over Streamable HTTP on loopback ports
// chosen by the system.
func Start(now func() time.Time) (*Servers, error) {
	s := &Servers{Bank: NewBank(now), Workspace: NewWorkspace(now)}
	var err error
	if s.BankURL, err = s.serve(s.Bank.Server()); err != nil {
		return nil, err
	}
	if s.WorkspaceURL, err = s.serve(s.Workspace.Server()); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Servers) serve(srv *sdk.Server) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listening for a demo server: %w", err)
	}
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, hs)
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the demo reports failures through its clients
		}
	}()
	return "http://" + ln.Addr().String() + "/mcp", nil
}

// Close stops the servers.
func (s *Servers) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, hs := range s.servers {
		if err := hs.Shutdown(ctx); err != nil {
			hs.Close()
		}
	}
}

// Command revproxy is the load benchmark's baseline: a bare Go reverse proxy
// (net/http/httputil.ReverseProxy) in front of one upstream MCP server, with
// no authentication, no inspection and no audit. It shows what any HTTP hop
// costs, so that the gateway's figures can be read against it.
//
// FlushInterval is -1 so that event streams (Streamable HTTP responses sent
// as text/event-stream) pass through as they are written. The transport keeps
// enough idle connections per host for the benchmark's concurrency; with
// net/http's default of two, the baseline would pay for new connections and
// flatter the gateway.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "revproxy: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("revproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen `address`")
	upstream := fs.String("upstream", "", "upstream base `URL` (scheme://host:port); the request path is kept")
	idle := fs.Int("max-idle-per-host", 256, "idle upstream connections kept per host")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		return fmt.Errorf("-upstream must be an absolute URL, got %q", *upstream)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 4 * *idle
	tr.MaxIdleConnsPerHost = *idle
	tr.DisableCompression = true
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      log.New(stderr, "revproxy: ", 0),
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "revproxy: listening on %s, forwarding to %s\n", ln.Addr(), target)
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

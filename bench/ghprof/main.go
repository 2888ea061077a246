// Command ghprof runs the gateway exactly as "gatehouse serve --config FILE"
// does, plus a net/http/pprof listener, so that the load benchmark can take
// CPU and allocation profiles of the gateway under load without the gateway
// itself exposing pprof. It is a benchmark tool, never a deployment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gateway"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "ghprof: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("ghprof", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "gateway configuration `file`")
	pprofAddr := fs.String("pprof", "127.0.0.1:6060", "pprof listener `address` (loopback only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !config.IsLoopback(*pprofAddr) {
		return fmt.Errorf("-pprof must be a loopback address, got %q", *pprofAddr)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ln, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		return err
	}
	psrv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := psrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("pprof listener failed", "err", err)
		}
	}()
	defer psrv.Close()
	fmt.Fprintf(stderr, "ghprof: pprof on http://%s/debug/pprof/\n", ln.Addr())

	g, err := gateway.New(ctx, cfg, gateway.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer g.Close()
	return g.Run(ctx)
}

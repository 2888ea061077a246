package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func init() {
	commands["client"] = command{summary: "a small MCP client for trying the gateway (tools, call, prompts, resources, read)", run: runClient}
}

const clientUsage = `usage: gatehouse client --url URL [--token TOKEN] <command>

  tools                 list tools
  call NAME [JSON]      call a tool with JSON arguments
  prompts               list prompts
  resources             list resources and resource templates
  read URI              read a resource

The token defaults to $GATEHOUSE_TOKEN.`

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, clientUsage); fs.PrintDefaults() }
	url := fs.String("url", "http://127.0.0.1:8080/mcp", "MCP endpoint `URL`")
	token := fs.String("token", os.Getenv("GATEHOUSE_TOKEN"), "agent bearer `token`")
	if err := fs.Parse(args); err != nil {
		return usageError(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: client needs a command", errUsage)
	}
	hc := &http.Client{Transport: http.DefaultTransport}
	if *token != "" {
		hc.Transport = bearer{token: strings.TrimSpace(*token), base: http.DefaultTransport}
	}
	c := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-client", Version: "0.1.0"}, nil)
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: *url, HTTPClient: hc}, nil)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *url, err)
	}
	defer cs.Close()
	out := json.NewEncoder(stdout)
	out.SetIndent("", "  ")
	rest := fs.Args()[1:]
	switch fs.Arg(0) {
	case "tools":
		for t, err := range cs.Tools(ctx, nil) {
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%-32s %s\n", t.Name, t.Description)
		}
		return nil
	case "call":
		if len(rest) < 1 || len(rest) > 2 {
			return fmt.Errorf("%w: call NAME [JSON]", errUsage)
		}
		var a map[string]any
		if len(rest) == 2 {
			if err := json.Unmarshal([]byte(rest[1]), &a); err != nil {
				return fmt.Errorf("%w: arguments must be a JSON object: %v", errUsage, err)
			}
		}
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: rest[0], Arguments: a})
		if err != nil {
			return err
		}
		if err := out.Encode(res); err != nil {
			return err
		}
		if res.IsError {
			return exitError{code: 1}
		}
		return nil
	case "prompts":
		for p, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%-32s %s\n", p.Name, p.Description)
		}
		return nil
	case "resources":
		for r, err := range cs.Resources(ctx, nil) {
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%-48s %s\n", r.URI, r.Name)
		}
		for t, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%-48s %s (template)\n", t.URITemplate, t.Name)
		}
		return nil
	case "read":
		if len(rest) != 1 {
			return fmt.Errorf("%w: read URI", errUsage)
		}
		res, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: rest[0]})
		if err != nil {
			return err
		}
		return out.Encode(res)
	}
	fs.Usage()
	return fmt.Errorf("%w: unknown client command %q", errUsage, fs.Arg(0))
}

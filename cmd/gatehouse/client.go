package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func init() {
	commands["client"] = command{summary: "a small MCP client for trying the gateway (tools, call, prompts, resources, read)", run: runClient}
}

const clientUsage = `usage: gatehouse client --url URL [--token TOKEN] <command> [<command> ...]

  tools                 list tools
  call NAME JSON        call a tool with JSON arguments ('{}' for none)
  prompts               list prompts
  resources             list resources and resource templates
  read URI              read a resource

Several commands run in order in one MCP session (session labels such as
private_data and untrusted_content accumulate across them). The token
defaults to $GATEHOUSE_TOKEN.`

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
	failed := false
	for args := fs.Args(); len(args) > 0; {
		cmd := args[0]
		args = args[1:]
		switch cmd {
		case "tools":
			for t, err := range cs.Tools(ctx, nil) {
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "%-32s %s\n", t.Name, t.Description)
			}
		case "call":
			if len(args) < 2 {
				return fmt.Errorf("%w: call NAME JSON", errUsage)
			}
			var a map[string]any
			if err := json.Unmarshal([]byte(args[1]), &a); err != nil {
				return fmt.Errorf("%w: arguments of %s must be a JSON object: %w", errUsage, args[0], err)
			}
			res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: args[0], Arguments: a})
			args = args[2:]
			if err != nil {
				fmt.Fprintf(stderr, "gatehouse: %v\n", err)
				var we *jsonrpc.Error
				if errors.As(err, &we) && len(we.Data) > 0 {
					var d struct {
						ApprovalID string `json:"approvalId"`
						StatusURL  string `json:"statusUrl"`
					}
					if json.Unmarshal(we.Data, &d) == nil && d.ApprovalID != "" {
						fmt.Fprintf(stderr, "gatehouse: approval %s is pending: %s\n", d.ApprovalID, d.StatusURL)
					}
				}
				failed = true
				continue
			}
			if err := out.Encode(res); err != nil {
				return err
			}
			failed = failed || res.IsError
		case "prompts":
			for p, err := range cs.Prompts(ctx, nil) {
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "%-32s %s\n", p.Name, p.Description)
			}
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
		case "read":
			if len(args) < 1 {
				return fmt.Errorf("%w: read URI", errUsage)
			}
			res, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: args[0]})
			args = args[1:]
			if err != nil {
				fmt.Fprintf(stderr, "gatehouse: %v\n", err)
				failed = true
				continue
			}
			if err := out.Encode(res); err != nil {
				return err
			}
		default:
			fs.Usage()
			return fmt.Errorf("%w: unknown client command %q", errUsage, cmd)
		}
	}
	if failed {
		return exitError{code: 1}
	}
	return nil
}

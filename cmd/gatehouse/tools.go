package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
)

func init() {
	commands["tools"] = command{summary: "inspect tool pins and approve changed tool definitions (list, diff, approve)", run: runTools}
}

const toolsUsage = `usage: gatehouse tools <list|diff|approve> [flags]

  list                          pinned tools and their status
  diff SERVER TOOL              the approved definition against the one the server presents now
  approve SERVER TOOL --hash H  approve the presented definition (H is its hash, from diff)`

type toolView struct {
	Server      string          `json:"server"`
	Tool        string          `json:"tool"`
	Status      string          `json:"status"`
	Approved    string          `json:"approved_hash"`
	Seen        string          `json:"seen_hash"`
	ApprovedDef json.RawMessage `json:"approved_definition"`
	SeenDef     json.RawMessage `json:"seen_definition"`
}

func runTools(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, toolsUsage)
		return fmt.Errorf("%w: tools needs a subcommand", errUsage)
	}
	sub := args[0]
	if sub == "-h" || sub == "-help" || sub == "--help" || sub == "help" {
		fmt.Fprintln(stderr, toolsUsage)
		return exitError{code: 0}
	}
	fs := flag.NewFlagSet("tools "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := adminFlags(fs)
	hash := fs.String("hash", "", "hash of the reviewed definition (approve)")
	by := fs.String("by", os.Getenv("USER"), "who approves (recorded in the audit log)")
	// Flags may follow SERVER TOOL, as in "tools approve SERVER TOOL --hash H".
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return usageError(err)
	}
	c, err := admin()
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		var tools []toolView
		if err := c.do(ctx, "GET", "/v1/tools", nil, &tools); err != nil {
			return err
		}
		for _, t := range tools {
			fmt.Fprintf(stdout, "%-12s %-24s %-12s %s\n", t.Server, t.Tool, t.Status, short(t.Seen))
		}
		return nil
	case "diff", "approve":
		if len(pos) != 2 {
			fmt.Fprintln(stderr, toolsUsage)
			return fmt.Errorf("%w: tools %s needs SERVER TOOL", errUsage, sub)
		}
		path := "/v1/tools/" + url.PathEscape(pos[0]) + "/" + url.PathEscape(pos[1])
		if sub == "approve" {
			if *hash == "" {
				return fmt.Errorf("%w: approve needs --hash (see tools diff)", errUsage)
			}
			var t toolView
			if err := c.do(ctx, "POST", path+"/approve", map[string]string{"hash": *hash, "by": *by}, &t); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "approved %s/%s at %s\n", t.Server, t.Tool, short(t.Approved))
			return nil
		}
		var t toolView
		if err := c.do(ctx, "GET", path, nil, &t); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s/%s: %s\n", t.Server, t.Tool, t.Status)
		if t.Status != "quarantined" {
			fmt.Fprintln(stdout, "the presented definition is the approved one")
			return nil
		}
		fmt.Fprintf(stdout, "--- approved %s\n+++ presented %s\n", t.Approved, t.Seen)
		writeLineDiff(stdout, prettyLines(t.ApprovedDef), prettyLines(t.SeenDef))
		fmt.Fprintf(stdout, "\nto approve: gatehouse tools approve %s %s --hash %s\n", t.Server, t.Tool, t.Seen)
		return nil
	}
	fmt.Fprintln(stderr, toolsUsage)
	return fmt.Errorf("%w: unknown tools subcommand %q", errUsage, sub)
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}

func prettyLines(raw json.RawMessage) []string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return []string{string(raw)}
	}
	return strings.Split(buf.String(), "\n")
}

// writeLineDiff writes a minimal line diff of a and b (longest common
// subsequence), prefixing removed lines with "-" and added ones with "+".
func writeLineDiff(w io.Writer, a, b []string) {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			fmt.Fprintf(w, " %s\n", a[i])
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(w, "+%s\n", b[j])
			j++
		default:
			fmt.Fprintf(w, "-%s\n", a[i])
			i++
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
)

// adminClient talks to a running gateway's admin API.
type adminClient struct {
	url   string
	token string
	http  *http.Client
}

// adminFlags registers the flags that locate the admin API: the gateway's
// configuration file, or an explicit URL and token file.
func adminFlags(fs *flag.FlagSet) func() (*adminClient, error) {
	cfgPath := fs.String("config", "gatehouse.yaml", "gateway configuration `file` (locates the admin API and its credential)")
	url := fs.String("admin", "", "admin API `URL` (overrides the configuration)")
	tokenFile := fs.String("admin-token-file", "", "`file` holding the admin credential (overrides the configuration)")
	return func() (*adminClient, error) { return newAdminClient(*cfgPath, *url, *tokenFile) }
}

// newAdminClient locates the admin API: url and tokenFile when both are
// given, else the configuration file's admin listener and credential file,
// each overridden by url or tokenFile when set.
func newAdminClient(cfgPath, url, tokenFile string) (*adminClient, error) {
	c := &adminClient{http: &http.Client{Timeout: 30 * time.Second}}
	if url != "" && tokenFile != "" {
		c.url = strings.TrimSuffix(url, "/")
		tok, err := readTrimmed(tokenFile)
		if err != nil {
			return nil, err
		}
		c.token = tok
		return c, nil
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	c.url = "http://" + cfg.Admin.Listen
	if url != "" {
		c.url = strings.TrimSuffix(url, "/")
	}
	tf := cfg.Path(cfg.Admin.TokenFile)
	if tokenFile != "" {
		tf = tokenFile
	}
	if c.token, err = readTrimmed(tf); err != nil {
		return nil, err
	}
	return c, nil
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reaching the admin API at %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("admin API: %s", e.Error)
		}
		return fmt.Errorf("admin API: HTTP %d", resp.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func readTrimmed(path string) (string, error) {
	b, err := readFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

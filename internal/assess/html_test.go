package assess_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHTMLSelfContained checks the report's HTML statically: a content
// security policy that forbids every fetch, no script, no external
// resource, and descriptor text escaped.
func TestHTMLSelfContained(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := c.run(t).Write(&buf, "html"); err != nil {
				t.Fatal(err)
			}
			html := buf.String()
			if !strings.Contains(html, `content="default-src 'none'; style-src 'unsafe-inline'"`) {
				t.Error("no content security policy forbidding fetches")
			}
			for _, re := range []*regexp.Regexp{
				regexp.MustCompile(`(?i)<script`),
				regexp.MustCompile(`(?i)<(img|iframe|link|object|embed|video|audio|source)\b`),
				regexp.MustCompile(`(?i)<[a-z][^>]*\s(src|srcset|background|poster|action|formaction)\s*=`),
				regexp.MustCompile(`(?i)url\(`),
				regexp.MustCompile(`(?i)@import`),
			} {
				if m := re.FindString(html); m != "" {
					t.Errorf("HTML contains %q", m)
				}
			}
			// The only absolute links are the cited documentation pages.
			for _, m := range regexp.MustCompile(`href="([^"#][^"]*)"`).FindAllStringSubmatch(html, -1) {
				if !strings.HasPrefix(m[1], "https://learn.microsoft.com/") && !strings.HasPrefix(m[1], "https://docs.aws.amazon.com/") && !strings.HasPrefix(m[1], "https://cloud.google.com/") {
					t.Errorf("unexpected link %q", m[1])
				}
			}
		})
	}
}

// chromium returns the browser to render with, or "" when there is none.
func chromium() string {
	if p := os.Getenv("GATEHOUSE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// metricsScript runs in the rendered page and reports what a reader
// gets: the rendered text (innerText honours CSS), the smallest font,
// the lowest text contrast and whether the page scrolls sideways.
const metricsScript = `<script>
(function () {
  function rgb(s) { var m = s.match(/[\d.]+/g) || [0,0,0,0]; return {r:+m[0], g:+m[1], b:+m[2], a: m.length > 3 ? +m[3] : 1}; }
  function lum(c) { return [c.r, c.g, c.b].map(function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
    .reduce(function (s, v, i) { return s + v * [0.2126, 0.7152, 0.0722][i]; }, 0); }
  function bg(el) { for (; el; el = el.parentElement) { var c = rgb(getComputedStyle(el).backgroundColor); if (c.a > 0) return c; } return {r:255,g:255,b:255,a:1}; }
  var minFont = 1e9, minContrast = 1e9, worst = "", broken = "";
  var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (var n; (n = walker.nextNode());) {
    if (!n.nodeValue.trim()) continue;
    var el = n.parentElement, st = getComputedStyle(el);
    if (st.display === "none" || st.visibility === "hidden" || el.closest("#gh-metrics")) continue;
    minFont = Math.min(minFont, parseFloat(st.fontSize));
    var a = lum(rgb(st.color)), b = lum(bg(el)), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < minContrast) { minContrast = ratio; worst = n.nodeValue.trim().slice(0, 60); }
    // Text squeezed into a column a few characters wide: as many lines
    // as pairs of characters.
    var t = n.nodeValue.trim();
    if (t.length >= 6 && !broken) {
      var r = document.createRange(); r.selectNodeContents(n);
      var tops = {}; Array.prototype.forEach.call(r.getClientRects(), function (c) { tops[Math.round(c.top)] = 1; });
      if (Object.keys(tops).length * 2 >= t.length) broken = t.slice(0, 60);
    }
  }
  var out = {
    text: document.body.innerText,
    minFontPx: minFont,
    minContrast: Math.round(minContrast * 100) / 100,
    worst: worst,
    broken: broken,
    overflowX: document.documentElement.scrollWidth > window.innerWidth + 1,
    pwned: typeof window.pwned !== "undefined",
    findings: document.querySelectorAll("li.finding").length
  };
  var pre = document.createElement("pre");
  pre.id = "gh-metrics";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>`

type metrics struct {
	Text        string  `json:"text"`
	MinFontPx   float64 `json:"minFontPx"`
	MinContrast float64 `json:"minContrast"`
	Worst       string  `json:"worst"`
	Broken      string  `json:"broken"`
	OverflowX   bool    `json:"overflowX"`
	Pwned       bool    `json:"pwned"`
	Findings    int     `json:"findings"`
}

// render loads html in headless Chromium at the given width and returns
// the page's metrics. The copy it loads allows the test's own inline
// script in its content security policy; the report itself allows none.
func render(t *testing.T, browser, html string, width int) metrics {
	t.Helper()
	dir := t.TempDir()
	page := strings.Replace(html, "default-src 'none'; style-src 'unsafe-inline'", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'", 1)
	page = strings.Replace(page, "</body>", metricsScript+"\n</body>", 1)
	file := filepath.Join(dir, "report.html")
	if err := os.WriteFile(file, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size="+itoa(width)+",900",
		"--dump-dom", "file://"+file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, tail(stderr.String(), 2000))
	}
	m := regexp.MustCompile(`(?s)<pre id="gh-metrics">(.*?)</pre>`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("the rendered page has no metrics (did the page load?):\n%s", tail(string(out), 2000))
	}
	var got metrics
	// The DOM dump escapes the JSON as HTML text.
	js := strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&quot;", `"`, "&#39;", "'", "&nbsp;", "\u00a0").Replace(string(m[1]))
	if err := json.Unmarshal([]byte(js), &got); err != nil {
		t.Fatalf("decoding metrics: %v\n%s", err, js)
	}
	return got
}

func itoa(i int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + jsonNumber(i)) }

func jsonNumber(i int) string { b, _ := json.Marshal(i); return string(b) }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestHTMLRendersInChromium renders reports in a real browser and asserts
// on what a reader sees.
func TestHTMLRendersInChromium(t *testing.T) {
	browser := chromium()
	if browser == "" {
		if os.Getenv("GATEHOUSE_REQUIRE_BROWSER") != "" {
			t.Fatal("GATEHOUSE_REQUIRE_BROWSER is set but no chromium was found (scripts/lib/chromium.sh installs it)")
		}
		t.Skip("chromium not found: skipping the browser rendering test (install it with scripts/lib/chromium.sh, or set GATEHOUSE_CHROMIUM)")
	}
	cases := map[string]struct {
		want []string
	}{
		"unobservable+weak+policies": {want: []string{
			"Deployment assessment: growth-bot", "Verdict: not ready",
			"Implementation pattern: AWS-first",
			"Agent campaign-runner", "1. Where does the agent run?", "2. Does it perform high-risk actions?",
			"3. Does it access cross-boundary data?", "4. How autonomous is it?", "5. Are preview capabilities acceptable?",
			"6. Can you observe and stop it quickly?",
			"BLOCKER", "high-risk tool crm__delete_segment (destructive change) has no approval workflow",
			"Gateway configuration gaps", "unauthenticated requests act as agent campaign-runner",
			"Where: configs/weak.yaml:5 identity.anonymous_agent",
			"not configured: the gateway configuration has no key for it",
			"The confused deputy problem",
		}},
		"hostile": {want: []string{
			"Deployment assessment: <script>window.pwned=1</script><b>bold</b> & [link](https://attacker.example) | pipe",
			`<a href="https://attacker.example">mallory</a>`,
			"<iframe src=https://attacker.example></iframe>",
		}},
	}
	for _, c := range goldenCases {
		want, ok := cases[c.name]
		if !ok {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			r := c.run(t)
			if err := r.Write(&buf, "html"); err != nil {
				t.Fatal(err)
			}
			for _, width := range []int{1280, 390} {
				m := render(t, browser, buf.String(), width)
				for _, s := range want.want {
					if !strings.Contains(m.Text, s) {
						t.Errorf("width %d: rendered text lacks %q", width, s)
					}
				}
				if m.Pwned {
					t.Errorf("width %d: descriptor text ran as script", width)
				}
				if got, wantN := m.Findings, len(r.Findings()); got != wantN {
					t.Errorf("width %d: %d findings rendered, report has %d", width, got, wantN)
				}
				if m.MinFontPx < 12 {
					t.Errorf("width %d: smallest font is %.1fpx, want at least 12px", width, m.MinFontPx)
				}
				if m.MinContrast < 4.5 {
					t.Errorf("width %d: lowest text contrast %.2f (%q), want at least 4.5:1", width, m.MinContrast, m.Worst)
				}
				if m.Broken != "" {
					t.Errorf("width %d: text %q is squeezed into a column a few characters wide", width, m.Broken)
				}
				if m.OverflowX {
					t.Errorf("width %d: the page scrolls sideways", width)
				}
			}
		})
	}
}

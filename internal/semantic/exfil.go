package semantic

import (
	"net/url"
	"regexp"
	"strings"
)

// Exfiltration channels: an output that makes the client load an image
// (fetched automatically when rendered) or offer a link whose URL carries
// data to a host outside the allow-list.
var (
	mdImageRe = regexp.MustCompile(`!\[[^\]\n]{0,200}\]\(\s*<?([^\s)>]+)`)
	mdLinkRe  = regexp.MustCompile(`(?:^|[^!])\[[^\]\n]{0,200}\]\(\s*<?([^\s)>]+)`)
	mdRefRe   = regexp.MustCompile(`(?m)^\s{0,3}\[[^\]\n]{1,100}\]:\s*<?(\S+?)>?(?:\s|$)`)
	htmlImgRe = regexp.MustCompile(`(?i)<img\b[^>]{0,500}?\bsrc\s*=\s*["']?([^"'\s>]+)`)
	htmlARe   = regexp.MustCompile(`(?i)<a\b[^>]{0,500}?\bhref\s*=\s*["']?([^"'\s>]+)`)
)

// hostAllowed reports whether host matches the allow-list: exact, or a
// subdomain of an entry written ".example.com" or "*.example.com".
func hostAllowed(host string, allowed []string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, a := range allowed {
		a = strings.ToLower(a)
		switch {
		case strings.HasPrefix(a, "*."):
			if strings.HasSuffix(host, a[1:]) {
				return true
			}
		case strings.HasPrefix(a, "."):
			if strings.HasSuffix(host, a) || host == a[1:] {
				return true
			}
		case host == a:
			return true
		}
	}
	return false
}

// carriesData reports whether u can carry data to its host: a query, a
// fragment-free long path segment, or an unexpanded template placeholder.
func carriesData(u *url.URL, raw string) bool {
	if u.RawQuery != "" || strings.ContainsAny(raw, "{}$") {
		return true
	}
	for _, seg := range strings.Split(u.EscapedPath(), "/") {
		if len(seg) >= 24 && !strings.Contains(seg, ".") {
			return true
		}
		if len(seg) >= 40 {
			return true
		}
	}
	return false
}

// exfil reports markdown and HTML images and links to hosts outside the
// allow-list with data in the URL. On output surfaces images take
// ExfilImageAction and links ExfilLinkAction; elsewhere the channel is
// planted content and labels the session.
func (s *screening) exfil() {
	text := s.in.Text
	if !strings.Contains(text, "](") && !strings.Contains(text, "]:") && !strings.Contains(strings.ToLower(text), "<img") && !strings.Contains(strings.ToLower(text), "<a") {
		return
	}
	seen := map[int]bool{}
	check := func(re *regexp.Regexp, kind string) {
		for _, m := range re.FindAllStringSubmatchIndex(text, -1) {
			a, b := m[2], m[3]
			if seen[a] {
				continue
			}
			seen[a] = true
			raw := text[a:b]
			u, err := url.Parse(raw)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				continue
			}
			if hostAllowed(u.Hostname(), s.e.hosts) || !carriesData(u, raw) {
				continue
			}
			act, score := ActionLabel, 0.6
			if s.in.Surface.Output() {
				act, score = s.e.linkAction, 0.7
				if kind == "exfil_image" {
					act, score = s.e.imgAction, 0.9
				}
			}
			s.add(Finding{Detector: string(DetectExfil), Kind: kind, Rule: u.Hostname(), Score: score, Start: a, End: b, Action: act})
		}
	}
	check(mdImageRe, "exfil_image")
	check(htmlImgRe, "exfil_image")
	check(mdLinkRe, "exfil_link")
	check(mdRefRe, "exfil_link")
	check(htmlARe, "exfil_link")
}

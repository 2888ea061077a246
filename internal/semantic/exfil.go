package semantic

import (
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Exfiltration channels: an output that makes the client load an image
// (fetched automatically when rendered) or offer a link whose URL carries
// data to a host outside the allow-list.
//
// Inline markdown images and links are found by markdownTargets, which
// looks for "](" and checks the bracket before it; reference definitions
// and HTML run regular expressions, only when their marker occurs.
var (
	mdRefRe   = regexp.MustCompile(`(?m)^\s{0,3}\[[^\]\n]{1,100}\]:\s*<?(\S+?)>?(?:\s|$)`)
	htmlImgRe = regexp.MustCompile(`(?i)<img\b[^>]{0,500}?\bsrc\s*=\s*["']?([^"'\s>]+)`)
	htmlARe   = regexp.MustCompile(`(?i)<a\b[^>]{0,500}?\bhref\s*=\s*["']?([^"'\s>]+)`)
)

// markdownTargets calls f with the span of the target of every inline
// markdown image (![text](url)) and link ([text](url)): the same targets as
// the expressions !\[[^\]\n]{0,200}\]\(\s*<?([^\s)>]+) and
// (?:^|[^!])\[[^\]\n]{0,200}\]\(\s*<?([^\s)>]+), an image when both
// apply. It costs one substring search for "](" and a bounded look back
// from each, where the expressions cost a backtracking attempt at every
// bracket.
func markdownTargets(text string, f func(start, end int, image bool)) {
	// Each expression matches without overlapping its own earlier
	// matches: a match must start at or after the end of the previous
	// one of its kind.
	imgEnd, linkEnd := 0, 0
	for i := 0; i < len(text); {
		j := strings.Index(text[i:], "](")
		if j < 0 {
			return
		}
		j += i
		i = j + 2
		// the opening bracket: at most 200 runes back, none of them ']'
		// or a line break
		image, link := false, false
		for k, n := j, 0; k > 0 && n <= 200; n++ {
			c, w := utf8.DecodeLastRuneInString(text[:k])
			k -= w
			if c == ']' || c == '\n' {
				break
			}
			if c == '[' {
				if k > 0 && text[k-1] == '!' {
					image = image || k-1 >= imgEnd
				} else if k == 0 {
					link = link || linkEnd == 0
				} else {
					_, w := utf8.DecodeLastRuneInString(text[:k])
					link = link || k-w >= linkEnd
				}
			}
		}
		if !image && !link {
			continue
		}
		// the target: blanks, an optional '<', then no blank, ')' or '>'
		a := j + 2
		for a < len(text) && isSpaceByte(text[a]) {
			a++
		}
		lt := a < len(text) && text[a] == '<'
		if lt {
			a++
		}
		b := a
		for b < len(text) && !isSpaceByte(text[b]) && text[b] != ')' && text[b] != '>' {
			b++
		}
		if b == a && lt {
			a, b = a-1, a // the '<' is the target itself
		}
		if b == a {
			continue
		}
		if image {
			imgEnd = b
		}
		if link {
			linkEnd = b
		}
		f(a, b, image)
	}
}

// isSpaceByte reports the characters \s matches.
func isSpaceByte(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// containsFold reports whether s contains the ASCII string sub, ignoring
// case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := strings.IndexByte(s[i:], sub[0])
		if j < 0 {
			return false
		}
		i += j
		if i+len(sub) <= len(s) && strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

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
	seen := map[int]bool{}
	target := func(a, b int, kind string) {
		if seen[a] {
			return
		}
		seen[a] = true
		raw := text[a:b]
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return
		}
		if hostAllowed(u.Hostname(), s.e.hosts) || !carriesData(u, raw) {
			return
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
	check := func(re *regexp.Regexp, kind string) {
		for _, m := range re.FindAllStringSubmatchIndex(text, -1) {
			target(m[2], m[3], kind)
		}
	}
	// images first: a target that is both is reported as an image
	var links [][2]int
	markdownTargets(text, func(a, b int, image bool) {
		if image {
			target(a, b, "exfil_image")
		} else {
			links = append(links, [2]int{a, b})
		}
	})
	html := containsFold(text, "<img") || containsFold(text, "<a")
	if html {
		check(htmlImgRe, "exfil_image")
	}
	for _, l := range links {
		target(l[0], l[1], "exfil_link")
	}
	if strings.Contains(text, "]:") {
		check(mdRefRe, "exfil_link")
	}
	if html {
		check(htmlARe, "exfil_link")
	}
}

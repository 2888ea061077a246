package policy

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"unicode/utf8"
)

// ErrInvalidPath is returned by NormalizePath for a path that cannot be
// compared safely.
var ErrInvalidPath = errors.New("invalid path")

// maxPathDecodes bounds repeated percent-decoding.
const maxPathDecodes = 4

// NormalizePath returns the canonical form of a path-like argument, for
// comparison against prefixes in policy (context.paths). It is
// deliberately conservative: it may turn a harmless path into one that a
// prefix rule refuses, never an escaping path into one that a prefix rule
// accepts.
//
//   - a "file:" URL is reduced to its path;
//   - percent-encoding is decoded repeatedly until stable (so %2e%2e%2f and
//     %252e%252e%252f are "../"), at most 4 times;
//   - backslashes and Unicode look-alikes of "/" and "." (fullwidth solidus,
//     division slash, fullwidth full stop, one-dot leader, ...) become "/"
//     and ".";
//   - "." and ".." elements and repeated separators are resolved lexically
//     (path.Clean); a rooted path cannot climb above "/";
//   - the result has no trailing "/" (except "/" itself).
//
// It fails with ErrInvalidPath for an empty path, NUL or other control
// characters, invalid UTF-8 (including overlong encodings), encoding that
// is still changing after 4 decodes, and a relative path that climbs above
// its base ("../x", "a/../../x"), whose meaning depends on a working
// directory the gateway does not know.
func NormalizePath(p string) (string, error) {
	if p == "" {
		return "", ErrInvalidPath
	}
	if len(p) > 5 && strings.EqualFold(p[:5], "file:") {
		u, err := url.Parse(p)
		if err != nil {
			return "", ErrInvalidPath
		}
		p = u.EscapedPath()
		if u.Opaque != "" {
			p = u.Opaque
		}
		if p == "" {
			return "", ErrInvalidPath
		}
	}
	for i := 0; ; i++ {
		if !strings.Contains(p, "%") {
			break
		}
		if i == maxPathDecodes {
			return "", ErrInvalidPath
		}
		d, err := url.PathUnescape(p)
		if err != nil {
			return "", ErrInvalidPath
		}
		if d == p {
			break
		}
		p = d
	}
	if !utf8.ValidString(p) {
		return "", ErrInvalidPath
	}
	var b strings.Builder
	b.Grow(len(p))
	for _, r := range p {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return "", ErrInvalidPath
		case r == '\\' || r == '\u2215' || r == '\u2044' || r == '\uff0f' || r == '\u29f8' || r == '\ufe68' || r == '\uff3c':
			b.WriteByte('/')
		case r == '\uff0e' || r == '\u2024' || r == '\ufe52':
			b.WriteByte('.')
		default:
			b.WriteRune(r)
		}
	}
	c := path.Clean(b.String())
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", ErrInvalidPath
	}
	return c, nil
}

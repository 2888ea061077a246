package policy_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/internal/policy"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		in, want string // want "" means ErrInvalidPath
	}{
		{"/srv/shared/a.txt", "/srv/shared/a.txt"},
		{"/srv//shared/./a.txt", "/srv/shared/a.txt"},
		{"/srv/shared/", "/srv/shared"},
		{"/", "/"},
		{"a/b/../c", "a/c"},
		{"./a", "a"},
		{"/srv/shared/../../etc/passwd", "/etc/passwd"},
		{"/../../etc/passwd", "/etc/passwd"},
		{"/srv/shared/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"},
		{"/srv/shared/%2E%2E%2F%2E%2E%2Fetc", "/etc"},
		{"/srv/shared/%252e%252e%252f%252e%252e/etc", "/etc"},
		{"/srv/shared/..%5c..%5cetc", "/etc"},
		{`/srv/shared\..\..\etc\passwd`, "/etc/passwd"},
		{`\srv\shared\a`, "/srv/shared/a"},
		{`C:\Users\..\Windows`, "C:/Windows"},
		{"/srv/shared/\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc", "/etc"},
		{"/srv/shared/..\u2215..\u2215etc", "/etc"},
		{"/srv/shared/\u2024\u2024/x", "/srv/x"},
		{"file:///srv/shared/../../etc/passwd", "/etc/passwd"},
		{"FILE:///srv/a%20b", "/srv/a b"},
		{"/srv/ünïcode/ok", "/srv/ünïcode/ok"},
		{"", ""},
		{"..", ""},
		{"../etc", ""},
		{"a/../../etc", ""},
		{"%2e%2e/etc", ""},
		{"/srv/a\x00b", ""},
		{"/srv/a%00b", ""},
		{"/srv/a\nb", ""},
		{"/srv/%c0%ae%c0%ae/etc", ""}, // overlong UTF-8 dots
		{"/srv/\xff/etc", ""},         // invalid UTF-8
		{"/srv/100%", ""},             // bare percent
		{"/srv/%25252525252e", ""},    // still encoded after 4 decodes
		{"/srv/a\u0085b", ""},         // C1 control
	}
	for _, tt := range tests {
		got, err := policy.NormalizePath(tt.in)
		if tt.want == "" {
			if !errors.Is(err, policy.ErrInvalidPath) {
				t.Errorf("NormalizePath(%q) = %q, %v; want ErrInvalidPath", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/srv/shared/a", "../x", "/a/%2e%2e/b", `a\..\b`, "file:///x/../y", "/\uff0e\uff0e/x", "%252e", "/srv/%c0%ae"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := policy.NormalizePath(in)
		if err != nil {
			if !errors.Is(err, policy.ErrInvalidPath) {
				t.Fatalf("error %v is not ErrInvalidPath", err)
			}
			return
		}
		switch {
		case out == "":
			t.Fatal("empty result")
		case !utf8.ValidString(out):
			t.Fatalf("%q: invalid UTF-8", out)
		case strings.ContainsAny(out, "\\%\x00"):
			t.Fatalf("%q: backslash, percent or NUL left", out)
		case out == ".." || strings.HasPrefix(out, "../"):
			t.Fatalf("%q climbs above its base", out)
		case strings.Contains(out, "/../") || strings.HasSuffix(out, "/..") || strings.Contains(out, "/./") || strings.Contains(out, "//"):
			t.Fatalf("%q is not clean", out)
		case len(out) > 1 && strings.HasSuffix(out, "/"):
			t.Fatalf("%q has a trailing slash", out)
		}
		// Normal form is a fixed point.
		again, err := policy.NormalizePath(out)
		if err != nil || again != out {
			t.Fatalf("NormalizePath(%q) = %q, %v; not idempotent", out, again, err)
		}
		// Under a rooted prefix, nothing the input says can climb out of
		// the prefix unless it really has ".." (in some spelling) in it.
		under, err := policy.NormalizePath("/srv/shared/" + in)
		if err == nil && !strings.HasPrefix(under, "/srv/shared/") && under != "/srv/shared" {
			low := strings.ToLower(in)
			if !strings.Contains(low, "..") && !strings.Contains(low, "%2e") && !strings.Contains(low, "%25") &&
				!strings.ContainsAny(in, "\uff0e\u2024\ufe52") && !strings.HasPrefix(low, "file:") {
				t.Fatalf("%q escaped /srv/shared/ to %q without any dot-dot", in, under)
			}
		}
	})
}

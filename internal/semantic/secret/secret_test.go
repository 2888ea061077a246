package secret_test

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/viper"
	"github.com/zricethezav/gitleaks/v8/config"
	"github.com/zricethezav/gitleaks/v8/detect"

	"github.com/gatehouse/gatehouse/internal/semantic/secret"
)

// Test secrets are assembled at run time so that this file itself does not
// trip secret scanners.
func fake(prefix string, n int, alphabet string, seed uint64) string {
	rng := rand.New(rand.NewPCG(seed, 7))
	var b strings.Builder
	b.WriteString(prefix)
	for range n {
		b.WriteByte(alphabet[rng.IntN(len(alphabet))])
	}
	return b.String()
}

const (
	alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	upnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	hexa  = "0123456789abcdef"
)

func samples() map[string]string {
	gh := fake("gh"+"p_", 36, alnum, 1)
	aws := fake("AK"+"IA", 16, upnum, 2)
	slack := "xo" + "xb-" + fake("", 12, "0123456789", 3) + "-" + fake("", 13, "0123456789", 4) + "-" + fake("", 24, alnum, 5)
	stripe := fake("sk_"+"live_", 32, alnum, 6)
	generic := fake("", 32, alnum, 8)
	jwt := "ey" + fake("J", 30, alnum, 9) + ".ey" + fake("J", 40, alnum, 10) + "." + fake("", 43, alnum, 11)
	pkey := "-----BEGIN " + "RSA PRIVATE KEY-----\n" + fake("MIIE", 64, alnum, 12) + "\n" + fake("", 64, alnum, 13) + "\n-----END RSA PRIVATE KEY-----"
	return map[string]string{
		"github":       "here is my token " + gh + " please keep it safe",
		"aws":          "aws_access_key_id = " + aws + "\nregion = eu-west-1",
		"slack":        `{"slack_token": "` + slack + `"}`,
		"stripe":       "STRIPE_KEY=" + stripe,
		"generic":      `config: {"api_key": "` + generic + `", "timeout": 30}`,
		"jwt":          "Authorization: Bearer " + jwt,
		"private key":  "key file:\n" + pkey + "\nend",
		"prose":        strings.Repeat("The quarterly report shows revenue grew while costs fell; they key in the totals by hand. ", 20),
		"key-dense":    strings.Repeat(`{"api_key_ref": "see vault", "password_hint": "none", "token": "abc"}, `, 30),
		"key prose":    strings.Repeat("The api key, authentication_settings and passwords: rotated-monthly-by-ops. Token=see_the_vault_entry; ", 10),
		"placeholders": strings.Repeat("db_password=${VAULT_DB_PASSWORD}\napi_key: <redacted>\nauth_token = changeme-later-please\n", 10),
		"low entropy":  `password = "aaaaaaaaaaaaaaaaaaaa"`,
		"allow-listed": "aws_access_key_id=" + "AKIAIOSFODNN7" + "EXAMPLE",
		"hex generic":  "secret_token: " + fake("", 40, hexa, 14),
		"long generic": `api_key = "` + fake("", 140, alnum, 15) + `"`,
		"long base64":  "password: " + fake("", 600, alnum+"+/", 16) + "==\n",
		"long jwt":     "auth=" + "ey" + fake("J", 300, alnum, 17) + ".ey" + fake("J", 500, alnum, 18) + "." + fake("", 86, alnum, 19),
	}
}

type hit struct {
	Rule   string
	Secret string
}

var (
	gitleaksOnce sync.Once
	gitleaksDet  *detect.Detector
)

func gitleaksFindings(t *testing.T, text string) []hit {
	t.Helper()
	gitleaksOnce.Do(func() { gitleaksDet = newGitleaks(t) })
	var out []hit
	for _, f := range gitleaksDet.DetectString(text) {
		out = append(out, hit{f.RuleID, f.Secret})
	}
	return out
}

func newGitleaks(t *testing.T) *detect.Detector {
	v := viper.New()
	v.SetConfigType("toml")
	if err := v.ReadConfig(strings.NewReader(config.DefaultConfig)); err != nil {
		t.Fatal(err)
	}
	var vc config.ViperConfig
	if err := v.Unmarshal(&vc); err != nil {
		t.Fatal(err)
	}
	cfg, err := vc.Translate()
	if err != nil {
		t.Fatal(err)
	}
	return detect.NewDetector(cfg)
}

// TestMatchesGitleaks checks that the scanner finds what gitleaks' own
// detector finds on the same texts.
func TestMatchesGitleaks(t *testing.T) {
	s, err := secret.Default()
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range samples() {
		t.Run(name, func(t *testing.T) {
			want := gitleaksFindings(t, text)
			var got []hit
			for _, m := range s.Scan(text) {
				got = append(got, hit{m.RuleID, text[m.Start:m.End]})
			}
			less := func(a, b hit) int { return strings.Compare(a.Rule+a.Secret, b.Rule+b.Secret) }
			slices.SortFunc(want, less)
			slices.SortFunc(got, less)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("findings differ from gitleaks (-gitleaks +scanner):\n%s", diff)
			}
		})
	}
}

func TestSpans(t *testing.T) {
	s, err := secret.Default()
	if err != nil {
		t.Fatal(err)
	}
	gh := fake("gh"+"p_", 36, alnum, 21)
	text := "token: " + gh + " end"
	ms := s.Scan(text)
	if len(ms) == 0 {
		t.Fatal("no match")
	}
	if got := text[ms[0].Start:ms[0].End]; got != gh {
		t.Errorf("span = %q, want %q", got, gh)
	}
	if s.Scan("nothing to see here") != nil {
		t.Error("match in plain text")
	}
}

func BenchmarkScan(b *testing.B) {
	s, err := secret.Default()
	if err != nil {
		b.Fatal(err)
	}
	for name, text := range map[string]string{
		"prose":     strings.Repeat("The quarterly report shows revenue grew by 12 percent while costs fell. Please review the attached summary and reply by Friday. ", 40)[:4096],
		"json":      strings.Repeat(`{"id": 12345, "name": "Alice Smith", "email": "alice@example.com", "status": "active", "created": "2024-01-02"}, `, 40)[:4096],
		"key-dense": strings.Repeat(`{"api_key_ref": "see vault", "password_hint": "none", "auth": "sso"}, `, 60)[:4096],
	} {
		b.Run(name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.SetBytes(int64(len(text)))
			c0 := threadCPU()
			for b.Loop() {
				s.Scan(text)
			}
			// CPU time of this thread, which a loaded machine's
			// scheduling delays do not inflate
			b.ReportMetric(float64(threadCPU()-c0)/float64(b.N), "cpu-ns/op")
		})
	}
}

func FuzzScan(f *testing.F) {
	for _, s := range samples() {
		f.Add(s)
	}
	f.Add("")
	f.Add("key=" + strings.Repeat("A", 600))
	s, err := secret.Default()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		for _, m := range s.Scan(text) {
			if m.Start < 0 || m.End > len(text) || m.Start > m.End || m.RuleID == "" {
				t.Fatalf("bad match %+v in %d bytes", m, len(text))
			}
		}
	})
}

// TestMatchesGitleaksRandomised compares the scanner with gitleaks' own
// detector on seeded random texts made of credential-like assignments,
// rule keywords and filler.
func TestMatchesGitleaksRandomised(t *testing.T) {
	s, err := secret.Default()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(42, 1))
	prefixes := []string{"ghp_", "gho_", "glpat-", "xoxb-", "xoxp-", "sk_live_", "rk_live_", "AKIA", "ASIA", "AIza", "npm_", "pypi-AgEIcHlwaS5vcmc", "SG.", "hf_", "dop_v1_", "shpat_", "sk-ant-api03-", "github_pat_", "ey"}
	names := []string{"api_key", "apiKey", "token", "secret", "password", "auth", "access_key", "client_secret", "credential", "private_token", "AWS_SECRET_ACCESS_KEY", "db_pass"}
	ops := []string{" = ", "=", ": ", ":=", " => ", "\": \"", "='", " "}
	filler := []string{"hello world", "see vault", "the quick brown fox", "\n", "{", "}", ",", "; ", "\t"}
	alphabets := []string{alnum, upnum, hexa, alnum + "-_", alnum + "+/"}
	for i := range 500 {
		var b strings.Builder
		for range 1 + rng.IntN(6) {
			switch rng.IntN(4) {
			case 0:
				b.WriteString(filler[rng.IntN(len(filler))])
			case 1:
				b.WriteString(names[rng.IntN(len(names))] + ops[rng.IntN(len(ops))])
				b.WriteString(fake("", 8+rng.IntN(50), alphabets[rng.IntN(len(alphabets))], rng.Uint64()))
			default:
				b.WriteString(prefixes[rng.IntN(len(prefixes))])
				b.WriteString(fake("", 10+rng.IntN(60), alphabets[rng.IntN(len(alphabets))], rng.Uint64()))
			}
			b.WriteString([]string{" ", "\n", "\"", "'", ""}[rng.IntN(5)])
		}
		text := b.String()
		want := gitleaksFindings(t, text)
		var got []hit
		for _, m := range s.Scan(text) {
			got = append(got, hit{m.RuleID, text[m.Start:m.End]})
		}
		less := func(a, b hit) int { return strings.Compare(a.Rule+a.Secret, b.Rule+b.Secret) }
		slices.SortFunc(want, less)
		slices.SortFunc(got, less)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("text %d %q: findings differ from gitleaks (-gitleaks +scanner):\n%s", i, text, diff)
		}
	}
}

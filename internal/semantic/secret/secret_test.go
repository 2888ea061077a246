package secret_test

import (
	"math/rand/v2"
	"slices"
	"strings"
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
		"low entropy":  `password = "aaaaaaaaaaaaaaaaaaaa"`,
		"allow-listed": "aws_access_key_id=" + "AKIAIOSFODNN7" + "EXAMPLE",
		"hex generic":  "secret_token: " + fake("", 40, hexa, 14),
	}
}

type hit struct {
	Rule   string
	Secret string
}

func gitleaksFindings(t *testing.T, text string) []hit {
	t.Helper()
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
	d := detect.NewDetector(cfg)
	var out []hit
	for _, f := range d.DetectString(text) {
		out = append(out, hit{f.RuleID, f.Secret})
	}
	return out
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
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				s.Scan(text)
			}
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

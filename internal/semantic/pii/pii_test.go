package pii_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/semantic/pii"
)

func TestScan(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string // "type:matched text"
	}{
		{"visa", "card 4111 1111 1111 1111 exp 12/29", []string{"card:4111 1111 1111 1111"}},
		{"card bad luhn", "card 4111 1111 1111 1112", nil},
		{"mastercard dashes", "pay with 5500-0000-0000-0004 now", []string{"card:5500-0000-0000-0004"}},
		{"order number not a card", "order 1234567890123", nil},
		{"iban", "send to DE89 3704 0044 0532 0130 00 today", []string{"iban:DE89 3704 0044 0532 0130 00"}},
		{"iban compact", "IBAN GB33BUKB20201555555555", []string{"iban:GB33BUKB20201555555555"}},
		{"iban bad check", "IBAN GB34BUKB20201555555555", nil},
		{"ssn", "SSN 536-22-1234 on file", []string{"ssn:536-22-1234"}},
		{"ssn area 666", "SSN 666-22-1234", nil},
		{"ssn mixed separators", "536-22 1234", nil},
		{"email", "mail alice.smith@example.co.uk please", []string{"email:alice.smith@example.co.uk"}},
		{"phone intl", "call +44 20 7946 0958 today", []string{"phone:+44 20 7946 0958"}},
		{"phone us", "call (415) 555-2671 now", []string{"phone:(415) 555-2671"}},
		{"date not phone", "on 2024-01-02 we met", nil},
		{"ipv4", "from 203.0.113.7 port 22", []string{"ip:203.0.113.7"}},
		{"bad ipv4", "version 1.2.3.400", nil},
		{"ipv6", "addr 2001:db8::1 up", []string{"ip:2001:db8::1"}},
		{"plain", "nothing personal here", nil},
		{"card in json", `{"pan":"4111111111111111","cvv":"123"}`, []string{"card:4111111111111111"}},
		{"phone plus one", "ring +1 415 555 2671 please", []string{"phone:+1 415 555 2671"}},
		{"ssn then words", "ssn: 536 22 1234, dob 1980", []string{"ssn:536 22 1234"}},
		{"version not ip", "go 1.26.8 and v2.3.0", nil},
		{"identifier digits", "order_4111111111111111 ref", nil},
		{"email trailing dot", "write to bob@example.org.", []string{"email:bob@example.org"}},
		{"not email", "user@localhost", nil},
	}
	s := &pii.Scanner{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, m := range s.Scan(tt.text) {
				got = append(got, string(m.Type)+":"+tt.text[m.Start:m.End])
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Scan(%q) (-want +got):\n%s", tt.text, diff)
			}
		})
	}
}

func TestTypesFilter(t *testing.T) {
	s := &pii.Scanner{Types: []pii.Type{pii.Email}}
	got := s.Scan("a@b.example 4111 1111 1111 1111")
	if len(got) != 1 || got[0].Type != pii.Email {
		t.Errorf("got %v, want only the e-mail", got)
	}
}

// TestPhoneBudget checks that phone numbers past the validation budget are
// dropped by default and reported unvalidated with Scanner.Unvalidated,
// while dates and short numbers still are not. The numbers are used by no
// other test, so none is in the validation cache yet.
func TestPhoneBudget(t *testing.T) {
	nums := []string{"+44 20 7946 0311", "+44 20 7946 0312", "+44 20 7946 0313", "+44 20 7946 0314",
		"+44 20 7946 0315", "+44 20 7946 0316", "(503) 555-2671", "+49 30 9018 2200"}
	text := "Contacts: " + strings.Join(nums, ", ") + "; updated 2026-11-02, room 4471, ticket 12-34."
	phones := func(s *pii.Scanner) (valid, unvalidated []string) {
		for _, m := range s.Scan(text) {
			if m.Type != pii.Phone {
				t.Errorf("%s %q found", m.Type, text[m.Start:m.End])
				continue
			}
			if m.Unvalidated {
				unvalidated = append(unvalidated, text[m.Start:m.End])
			} else {
				valid = append(valid, text[m.Start:m.End])
			}
		}
		return valid, unvalidated
	}
	valid, unvalidated := phones(&pii.Scanner{})
	if diff := cmp.Diff(nums[:4], valid); diff != "" || unvalidated != nil {
		t.Errorf("default scanner: validated (-want +got):\n%s; unvalidated %q", diff, unvalidated)
	}
	// The first four are cached now; a new scan validates the next four
	// and reports nothing unvalidated.
	valid, unvalidated = phones(&pii.Scanner{Unvalidated: true})
	if diff := cmp.Diff(nums, valid); diff != "" || unvalidated != nil {
		t.Errorf("second scan: validated (-want +got):\n%s; unvalidated %q", diff, unvalidated)
	}
	// Numbers past the budget, never seen before: reported unvalidated.
	more := []string{"+44 20 7946 0321", "+44 20 7946 0322", "+44 20 7946 0323", "+44 20 7946 0324", "+44 20 7946 0325", "(503) 555-2672", "503 555 2673"}
	text = strings.Join(more, "; ") + "; on 2026-11-02 in room 4471."
	valid, unvalidated = phones(&pii.Scanner{Unvalidated: true})
	if diff := cmp.Diff(more[:4], valid); diff != "" {
		t.Errorf("validated (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(more[4:], unvalidated); diff != "" {
		t.Errorf("unvalidated (-want +got):\n%s", diff)
	}
}

func BenchmarkScan(b *testing.B) {
	s := &pii.Scanner{}
	text := strings.Repeat(`{"id": 12345, "name": "Alice Smith", "email": "alice@example.com", "phone": "+44 20 7946 0958", "created": "2024-01-02"}, `, 40)[:4096]
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		s.Scan(text)
	}
}

func FuzzScan(f *testing.F) {
	for _, s := range []string{"", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "536-22-1234", "a@b.co", "+44 20 7946 0958", "::1 fe80::1%eth0", "1.2.3.4.5", "((((1", "@@@.", "GB33BUKB2020155555555"} {
		f.Add(s)
	}
	s := &pii.Scanner{}
	f.Fuzz(func(t *testing.T, text string) {
		prevEnd := 0
		for _, m := range s.Scan(text) {
			if m.Start < prevEnd || m.End > len(text) || m.Start >= m.End {
				t.Fatalf("bad span %+v in %d bytes (prev end %d)", m, len(text), prevEnd)
			}
			prevEnd = m.End
		}
	})
}

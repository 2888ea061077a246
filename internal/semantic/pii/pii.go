// Package pii finds personal data in text and validates each candidate
// before reporting it: payment cards by the Luhn checksum and card-number
// length, IBANs by ISO 13616 mod-97 and the country's length, US social
// security numbers by the SSA's allocation rules, phone numbers by
// libphonenumber's metadata (github.com/nyaruka/phonenumbers), IP addresses
// by net/netip, and e-mail addresses by shape.
//
// Spans never overlap: when two candidates overlap, the earlier type in
// the order card, IBAN, SSN, e-mail, IP, phone wins. A Scanner is safe for
// concurrent use.
package pii

import (
	"math/big"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// Type is a kind of personal data.
type Type string

// The types a Scanner finds.
const (
	Card  Type = "card"
	IBAN  Type = "iban"
	SSN   Type = "ssn"
	Email Type = "email"
	Phone Type = "phone"
	IP    Type = "ip"
)

// Types lists every type, in precedence order.
var Types = []Type{Card, IBAN, SSN, Email, IP, Phone}

// Match is one validated item of personal data.
type Match struct {
	Type       Type
	Start, End int // byte offsets in the text
}

// Scanner finds personal data.
type Scanner struct {
	// Region is the ISO 3166 region assumed for phone numbers written
	// without a country code; default "US".
	Region string
	// Types limits the scan to these types; nil means all.
	Types []Type
}

var (
	cardRe  = regexp.MustCompile(`\b\d(?:[ -]?\d){12,18}\b`)
	ibanRe  = regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b`)
	ssnRe   = regexp.MustCompile(`\b(\d{3})([- ])(\d{2})([- ])(\d{4})\b`)
	emailRe = regexp.MustCompile(`\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b`)
	ipv4Re  = regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}\b`)
	ipv6Re  = regexp.MustCompile(`(?i)(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{0,4}(?::[0-9a-f]{1,4})*`)
	phoneRe = regexp.MustCompile(`(?:\+\d|\(\d|\b\d)[\d ().-]{5,18}\d\b`)
)

func (s *Scanner) want(t Type) bool {
	return s.Types == nil || slices.Contains(s.Types, t)
}

// Scan returns the validated personal data in text, ordered by position.
func (s *Scanner) Scan(text string) []Match {
	var out []Match
	taken := func(a, b int) bool {
		for _, m := range out {
			if a < m.End && m.Start < b {
				return true
			}
		}
		return false
	}
	add := func(t Type, a, b int) {
		if !taken(a, b) {
			out = append(out, Match{Type: t, Start: a, End: b})
		}
	}
	hasDigit := strings.ContainsAny(text, "0123456789")
	if hasDigit && s.want(Card) {
		for _, l := range cardRe.FindAllStringIndex(text, -1) {
			if validCard(text[l[0]:l[1]]) {
				add(Card, l[0], l[1])
			}
		}
	}
	if hasDigit && s.want(IBAN) {
		for _, l := range ibanRe.FindAllStringIndex(text, -1) {
			if validIBAN(text[l[0]:l[1]]) {
				add(IBAN, l[0], l[1])
			}
		}
	}
	if hasDigit && s.want(SSN) {
		for _, l := range ssnRe.FindAllStringSubmatchIndex(text, -1) {
			if text[l[4]:l[5]] == text[l[8]:l[9]] && validSSN(text[l[2]:l[3]], text[l[6]:l[7]], text[l[10]:l[11]]) {
				add(SSN, l[0], l[1])
			}
		}
	}
	if s.want(Email) && strings.IndexByte(text, '@') >= 0 {
		for _, l := range emailRe.FindAllStringIndex(text, -1) {
			add(Email, l[0], l[1])
		}
	}
	if s.want(IP) {
		if hasDigit && strings.IndexByte(text, '.') >= 0 {
			for _, l := range ipv4Re.FindAllStringIndex(text, -1) {
				if a, err := netip.ParseAddr(text[l[0]:l[1]]); err == nil && a.Is4() {
					add(IP, l[0], l[1])
				}
			}
		}
		if strings.Count(text, ":") >= 2 {
			for _, l := range ipv6Re.FindAllStringIndex(text, -1) {
				if a, err := netip.ParseAddr(text[l[0]:l[1]]); err == nil && a.Is6() {
					add(IP, l[0], l[1])
				}
			}
		}
	}
	if hasDigit && s.want(Phone) {
		region := s.Region
		if region == "" {
			region = "US"
		}
		for _, l := range phoneRe.FindAllStringIndex(text, -1) {
			if taken(l[0], l[1]) || !validPhone(text[l[0]:l[1]], region) {
				continue
			}
			add(Phone, l[0], l[1])
		}
	}
	slices.SortFunc(out, func(a, b Match) int { return a.Start - b.Start })
	return out
}

func digits(s string) []byte {
	d := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			d = append(d, s[i]-'0')
		}
	}
	return d
}

// Luhn reports whether the digits of s pass the Luhn checksum.
func Luhn(s string) bool {
	d := digits(s)
	if len(d) == 0 {
		return false
	}
	sum := 0
	for i := range d {
		x := int(d[len(d)-1-i])
		if i%2 == 1 {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
	}
	return sum%10 == 0
}

// validCard checks length, issuer prefix, consistent grouping and Luhn.
func validCard(s string) bool {
	d := digits(s)
	if len(d) < 13 || len(d) > 19 {
		return false
	}
	// separators, if any, must be all spaces or all dashes
	if strings.Contains(s, " ") && strings.Contains(s, "-") {
		return false
	}
	allSame := true
	for _, x := range d[1:] {
		if x != d[0] {
			allSame = false
			break
		}
	}
	if allSame {
		return false
	}
	// Issuer identification: 2 (Mastercard 2-series, Mir), 3 (Amex, Diners,
	// JCB), 4 (Visa), 5 (Mastercard), 6 (Discover, UnionPay, Maestro).
	if d[0] < 2 || d[0] > 6 {
		return false
	}
	return Luhn(s)
}

// ibanLengths is the IBAN length per country (ISO 13616 registry).
var ibanLengths = map[string]int{
	"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
	"BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
	"ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
	"HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
	"LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
	"MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
	"RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
	"TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}

// ValidIBAN reports whether s (spaces allowed) is an IBAN of the right
// length for its country with a valid mod-97 check.
func ValidIBAN(s string) bool { return validIBAN(s) }

func validIBAN(s string) bool {
	s = strings.ReplaceAll(s, " ", "")
	if len(s) < 15 || len(s) > 34 {
		return false
	}
	if n, ok := ibanLengths[s[:2]]; !ok || n != len(s) {
		return false
	}
	// move the first four characters to the end, letters to numbers
	r := s[4:] + s[:4]
	var b strings.Builder
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case c >= '0' && c <= '9':
			b.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			n := int(c-'A') + 10
			b.WriteByte(byte('0' + n/10))
			b.WriteByte(byte('0' + n%10))
		default:
			return false
		}
	}
	v, ok := new(big.Int).SetString(b.String(), 10)
	if !ok {
		return false
	}
	return new(big.Int).Mod(v, big.NewInt(97)).Int64() == 1
}

// validSSN applies the SSA's rules: area not 000, 666 or 900–999; group
// not 00; serial not 0000; and not a well-known advertising number.
func validSSN(area, group, serial string) bool {
	if area == "000" || area == "666" || area[0] == '9' || group == "00" || serial == "0000" {
		return false
	}
	switch area + group + serial {
	case "078051120", "219099999", "123456789":
		return false
	}
	return true
}

func validPhone(s string, region string) bool {
	d := digits(s)
	if len(d) < 7 || len(d) > 15 {
		return false
	}
	// dates such as 2024-01-02 or 12.03.2024 are not phone numbers
	if strings.Count(s, "-") == 2 && len(d) == 8 || strings.Count(s, ".") == 2 && len(d) == 8 {
		return false
	}
	n, err := phonenumbers.Parse(s, region)
	if err != nil {
		return false
	}
	return phonenumbers.IsValidNumber(n)
}

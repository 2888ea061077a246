// Package pii finds personal data in text and validates each candidate
// before reporting it: payment cards by the Luhn checksum and card-number
// length, IBANs by ISO 13616 mod-97 and the country's length, US social
// security numbers by the SSA's allocation rules, phone numbers by
// libphonenumber's metadata (github.com/nyaruka/phonenumbers), IP addresses
// by net/netip, and e-mail addresses by shape.
//
// Spans never overlap: IBANs are found first, then each run of digits and
// separators is classified as one of IPv4 address, card, SSN or phone
// number (in that order), then e-mail and IPv6 addresses. A Scanner is
// safe for concurrent use.
package pii

import (
	"math/big"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

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

// Match is one item of personal data.
type Match struct {
	Type       Type
	Start, End int // byte offsets in the text
	// Unvalidated marks a phone-number candidate past the validation
	// budget that was reported without libphonenumber's validation (see
	// Scanner.Unvalidated): its length is possible for its region, but it
	// may be another kind of number.
	Unvalidated bool
}

// Scanner finds personal data.
type Scanner struct {
	// Region is the ISO 3166 region assumed for phone numbers written
	// without a country code; default "US".
	Region string
	// Types limits the scan to these types; nil means all.
	Types []Type
	// Unvalidated reports phone-number candidates past the validation
	// budget (at most maxPhoneChecks libphonenumber validations per text,
	// not counting cached results) whose length libphonenumber's metadata
	// allows for their region, with Match.Unvalidated set. Without it,
	// such candidates are not reported. Set it when phone numbers must be
	// masked: a text with many numbers must not leak those past the
	// budget, at the cost of masking some numbers that are not phones.
	Unvalidated bool
}

func (s *Scanner) want(t Type) bool {
	return s.Types == nil || slices.Contains(s.Types, t)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool {
	return isDigit(c) || isUpper(c) || c >= 'a' && c <= 'z'
}

// Scan returns the validated personal data in text, ordered by position.
// Candidates are found by a single scan for runs of digits and separators,
// "@" signs, IBAN-shaped openings and colons, then validated; no
// backtracking regular expression runs over the whole text.
func (s *Scanner) Scan(text string) []Match {
	var out []Match
	overlaps := func(prior []Match, a, b int) bool {
		for _, m := range prior {
			if a < m.End && m.Start < b {
				return true
			}
		}
		return false
	}
	addMatch := func(m Match) {
		if s.want(m.Type) && !overlaps(out, m.Start, m.End) {
			out = append(out, m)
		}
	}
	add := func(t Type, a, b int) { addMatch(Match{Type: t, Start: a, End: b}) }
	// IBANs first: they contain digit runs that could pass as other types.
	if s.want(IBAN) {
		for i := 0; i+4 <= len(text); i++ {
			if isUpper(text[i]) && isUpper(text[i+1]) && isDigit(text[i+2]) && isDigit(text[i+3]) && (i == 0 || !isAlnum(text[i-1])) {
				if end, ok := ibanAt(text, i); ok {
					add(IBAN, i, end)
					i = end
				}
			}
		}
	}
	// Numeric runs: digits with single separators, optionally opened by
	// "+" or "(".
	budget := maxPhoneChecks
	// Numeric runs do not overlap one another and each gives at most one
	// match, so they are checked against the IBANs only: checking each
	// against every earlier match was quadratic in a text full of phone
	// numbers.
	ibans := len(out)
	addRun := func(m Match) {
		if s.want(m.Type) && !overlaps(out[:ibans], m.Start, m.End) {
			out = append(out, m)
		}
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		if !isDigit(c) || i > 0 && (isAlnum(text[i-1]) || text[i-1] == '.' || text[i-1] == '-' || text[i-1] == '_') {
			continue
		}
		start := i
		if i > 0 && (text[i-1] == '+' || text[i-1] == '(') {
			start = i - 1
		}
		end := numericRunEnd(text, i)
		if end < len(text) && (isAlnum(text[end]) || text[end] == '_') {
			i = end
			continue // part of an identifier
		}
		s.classify(text, start, end, addRun, &budget)
		i = end
	}
	if s.want(Email) {
		for i := 0; i < len(text); i++ {
			if text[i] == '@' {
				if a, b, ok := emailAround(text, i); ok {
					add(Email, a, b)
					i = b
				}
			}
		}
	}
	if s.want(IP) && strings.Count(text, ":") >= 2 {
		for i := 0; i < len(text); i++ {
			if text[i] != ':' || i > 0 && text[i-1] == ':' {
				continue
			}
			// back up to the start of the hex group before the colon
			a := i
			for a > 0 && a > i-5 && isHexByte(text[a-1]) {
				a--
			}
			if a > 0 && (isAlnum(text[a-1]) || text[a-1] == ':') {
				continue
			}
			b := a
			for b < len(text) && b-a < 45 && (isHexByte(text[b]) || text[b] == ':' || text[b] == '.') {
				b++
			}
			if b-a >= 2 {
				cand := strings.TrimRight(text[a:b], ":.")
				if ad, err := netip.ParseAddr(cand); err == nil && ad.Is6() && strings.Count(cand, ":") >= 2 {
					add(IP, a, a+len(cand))
					i = a + len(cand)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Match) int { return a.Start - b.Start })
	return out
}

func isHexByte(c byte) bool {
	return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// numericRunEnd returns the end of the run of digits and single
// separators (space, "-", ".", "(", ")") that starts with the digit at i.
func numericRunEnd(text string, i int) int {
	end := i
	for j := i; j < len(text) && j-i < 40; {
		switch c := text[j]; {
		case isDigit(c):
			j++
			end = j
		case c == ' ' || c == '-' || c == '.' || c == ')' || c == '(':
			// one separator (or ") " / " (") between digits
			k := j + 1
			if k < len(text) && (text[k] == ' ' || text[k] == '(') && c != text[k] {
				k++
			}
			if k < len(text) && isDigit(text[k]) {
				j = k
				continue
			}
			if c == ')' {
				end = j + 1
			}
			return end
		default:
			return end
		}
	}
	return end
}

// classify validates a numeric run as, in order, an IPv4 address, a card,
// an SSN or a phone number; a run may also contain a card or SSN followed
// by other numbers, so those are tried on prefixes too.
func (s *Scanner) classify(text string, start, end int, addMatch func(Match), phoneBudget *int) {
	add := func(t Type, a, b int) { addMatch(Match{Type: t, Start: a, End: b}) }
	run := text[start:end]
	if strings.Count(run, ".") == 3 && !strings.ContainsAny(run, " -()") {
		if a, err := netip.ParseAddr(run); err == nil && a.Is4() {
			add(IP, start, end)
		}
		return
	}
	if strings.Contains(run, ".") {
		return // decimals, versions and dates with dots are not PII here
	}
	if s.want(Card) {
		if a, b, ok := cardIn(text, start, end); ok {
			add(Card, a, b)
			return
		}
	}
	if s.want(SSN) && len(run) >= 11 {
		for k := 0; k+11 <= len(run); k++ {
			if k > 0 && run[k-1] != ' ' {
				continue
			}
			c := run[k : k+11]
			if isSSNShape(c) && (k+11 == len(run) || run[k+11] == ' ') {
				if validSSN(c[0:3], c[4:6], c[7:11]) {
					add(SSN, start+k, start+k+11)
					return
				}
			}
		}
	}
	if s.want(Phone) {
		region := s.Region
		if region == "" {
			region = "US"
		}
		d := countDigits(run)
		if d >= 7 && d <= 15 && !dateShaped(run, d) {
			key := phoneKey{region, run} // looked up without a copy
			phoneCache.Lock()
			valid, ok := phoneCache.m[key]
			phoneCache.Unlock()
			if !ok && *phoneBudget > 0 {
				*phoneBudget--
				valid, ok = validPhone(run, region), true
				phoneCache.Lock()
				if len(phoneCache.m) >= phoneCacheSize {
					clear(phoneCache.m)
				}
				// the stored key is a copy: a substring would keep the
				// whole text alive
				phoneCache.m[phoneKey{region, strings.Clone(run)}] = valid
				phoneCache.Unlock()
			}
			switch {
			case ok && valid:
				add(Phone, start, end)
			case !ok && s.Unvalidated && possiblePhone(run, region):
				addMatch(Match{Type: Phone, Start: start, End: end, Unvalidated: true})
			}
		}
	}
}

// maxPhoneChecks bounds libphonenumber validations per text: each costs
// about 80 µs, so a text full of numbers would blow the latency budget.
// Candidates past the budget are not reported, or reported unvalidated
// (Scanner.Unvalidated); results are cached.
const maxPhoneChecks = 4

// phoneCache remembers validation results by region and candidate; it is
// cleared when full, which bounds its memory.
var phoneCache = struct {
	sync.Mutex
	m map[phoneKey]bool
}{m: map[phoneKey]bool{}}

type phoneKey struct{ region, candidate string }

const phoneCacheSize = 4096

func isSSNShape(c string) bool {
	for i := 0; i < 11; i++ {
		switch i {
		case 3, 6:
			if c[i] != '-' && c[i] != ' ' {
				return false
			}
		default:
			if !isDigit(c[i]) {
				return false
			}
		}
	}
	return c[3] == c[6]
}

// cardIn finds a valid card number in the run: the whole run, or a prefix
// of it ending at a separator.
func cardIn(text string, start, end int) (int, int, bool) {
	if text[start] == '+' || text[start] == '(' {
		return 0, 0, false
	}
	for e := end; e > start; e-- {
		if e < end && text[e] != ' ' && text[e] != '-' {
			continue
		}
		c := strings.TrimRight(text[start:e], " -")
		n := countDigits(c)
		if n < 13 {
			break
		}
		if n <= 19 && validCard(c) {
			return start, start + len(c), true
		}
	}
	return 0, 0, false
}

// ibanAt returns the end of a valid IBAN starting at i, written compact or
// in groups separated by single spaces.
func ibanAt(text string, i int) (int, bool) {
	want, ok := ibanLengths[text[i:i+2]]
	if !ok {
		return 0, false
	}
	var b strings.Builder
	j := i
	for j < len(text) && b.Len() < want {
		c := text[j]
		switch {
		case isDigit(c) || isUpper(c):
			b.WriteByte(c)
			j++
		case c == ' ' && j+1 < len(text) && (isDigit(text[j+1]) || isUpper(text[j+1])):
			j++
		default:
			return 0, false
		}
	}
	if b.Len() != want || j < len(text) && isAlnum(text[j]) {
		return 0, false
	}
	return j, validIBAN(b.String())
}

func isLocal(c byte) bool {
	return isAlnum(c) || strings.IndexByte("._%+-", c) >= 0
}

// emailAround returns the e-mail address around the "@" at i.
func emailAround(text string, at int) (int, int, bool) {
	a := at
	for a > 0 && at-a < 64 && isLocal(text[a-1]) {
		a--
	}
	for a < at && (text[a] == '.' || text[a] == '-') {
		a++
	}
	if a == at {
		return 0, 0, false
	}
	b := at + 1
	lastDot := -1
	for b < len(text) && b-at <= 253 && (isAlnum(text[b]) || text[b] == '-' || text[b] == '.') {
		if text[b] == '.' {
			lastDot = b
		}
		b++
	}
	for b > at+1 && (text[b-1] == '.' || text[b-1] == '-') {
		if text[b-1] == '.' && lastDot == b-1 {
			lastDot = strings.LastIndexByte(text[at:b-1], '.')
			if lastDot >= 0 {
				lastDot += at
			}
		}
		b--
	}
	if lastDot <= at+1 || b-lastDot-1 < 2 {
		return 0, 0, false
	}
	for k := lastDot + 1; k < b; k++ {
		if !(text[k] >= 'a' && text[k] <= 'z' || text[k] >= 'A' && text[k] <= 'Z') {
			return 0, 0, false
		}
	}
	return a, b, true
}

// countDigits counts the ASCII digits of s.
func countDigits(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			n++
		}
	}
	return n
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

// dateShaped reports whether a numeric run s with n digits is written as
// a date (2024-01-02, 12.03.2024), which is not a phone number.
func dateShaped(s string, n int) bool {
	return n == 8 && (strings.Count(s, "-") == 2 || strings.Count(s, ".") == 2)
}

func validPhone(s string, region string) bool {
	d := digits(s)
	if len(d) < 7 || len(d) > 15 || dateShaped(s, len(d)) {
		return false
	}
	n, err := phonenumbers.Parse(s, region)
	if err != nil {
		return false
	}
	return phonenumbers.IsValidNumber(n)
}

// possiblePhone reports, without parsing, whether the numeric run s has a
// length libphonenumber's metadata allows: after its
// country code when it starts with "+", else as a national number of
// region, with or without the region's national prefix. It costs well
// under a microsecond, against tens for validation.
func possiblePhone(s, region string) bool {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			b.WriteByte(s[i])
		}
	}
	d := b.String()
	if len(d) < 7 || len(d) > 15 || dateShaped(s, len(d)) {
		return false
	}
	possible := func(cc int, national string) bool {
		if national == "" || len(national) > 17 {
			return false
		}
		nn, err := strconv.ParseUint(national, 10, 64)
		if err != nil {
			return false
		}
		c, zeros := int32(cc), int32(len(national)-len(strings.TrimLeft(national, "0")))
		n := &phonenumbers.PhoneNumber{CountryCode: &c, NationalNumber: &nn}
		if zeros > 0 {
			lead := true
			n.ItalianLeadingZero, n.NumberOfLeadingZeros = &lead, &zeros
		}
		return phonenumbers.IsPossibleNumber(n)
	}
	if strings.HasPrefix(s, "+") {
		for k := 1; k <= 3 && k < len(d); k++ {
			cc, _ := strconv.Atoi(d[:k])
			if phonenumbers.GetRegionCodeForCountryCode(cc) != "ZZ" {
				return possible(cc, d[k:])
			}
		}
		return false
	}
	cc := phonenumbers.GetCountryCodeForRegion(region)
	if cc == 0 {
		return false
	}
	if p := phonenumbers.GetNddPrefixForRegion(region, true); p != "" && strings.HasPrefix(d, p) && possible(cc, d[len(p):]) {
		return true
	}
	return possible(cc, d)
}

package limits

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Amounts are int64 counts of minor units: with Decimals 2, "12.34" is
// 1234. Fixed point keeps running totals exact; a value with more fractional
// digits than Decimals is rounded up, so a total never under-counts.

// maxAmountText bounds the text of an amount (digits, point, exponent).
const maxAmountText = 64

// maxExponent bounds the exponent of an amount written in e-notation.
const maxExponent = 40

var (
	errNegative = errors.New("the amount is negative")
	errTooLarge = errors.New("the amount is too large")
	errNotANum  = errors.New("the amount is not a number")
)

// ParseAmount parses a non-negative decimal number (JSON number syntax,
// optionally with an exponent) into minor units with decimals fractional
// digits, rounding up.
func ParseAmount(s string, decimals int) (int64, error) {
	if decimals < 0 || decimals > 18 {
		return 0, fmt.Errorf("decimals %d out of range 0..18", decimals)
	}
	if len(s) == 0 || len(s) > maxAmountText {
		return 0, errNotANum
	}
	neg := false
	if s[0] == '-' {
		neg, s = true, s[1:]
	} else if s[0] == '+' {
		s = s[1:]
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e > maxExponent || e < -maxExponent {
			return 0, errNotANum
		}
		exp = e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	if intPart == "" && frac == "" || !digits(intPart) || !digits(frac) {
		return 0, errNotANum
	}
	// value = (intPart frac) × 10^(exp − len(frac)); in minor units the
	// power is k = exp − len(frac) + decimals.
	d, ok := new(big.Int).SetString(intPart+frac, 10)
	if !ok {
		return 0, errNotANum
	}
	if d.Sign() == 0 {
		return 0, nil
	}
	if neg {
		return 0, errNegative
	}
	k := exp - len(frac) + decimals
	ten := big.NewInt(10)
	if k >= 0 {
		d.Mul(d, new(big.Int).Exp(ten, big.NewInt(int64(k)), nil))
	} else {
		q, r := new(big.Int).QuoRem(d, new(big.Int).Exp(ten, big.NewInt(int64(-k)), nil), new(big.Int))
		if r.Sign() != 0 {
			q.Add(q, big.NewInt(1))
		}
		d = q
	}
	if !d.IsInt64() {
		return 0, errTooLarge
	}
	return d.Int64(), nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatAmount writes minor units as a decimal number.
func FormatAmount(v int64, decimals int) string {
	s := strconv.FormatInt(v, 10)
	if decimals <= 0 {
		return s
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	if len(s) <= decimals {
		s = strings.Repeat("0", decimals-len(s)+1) + s
	}
	s = s[:len(s)-decimals] + "." + s[len(s)-decimals:]
	if neg {
		s = "-" + s
	}
	return s
}

// argument returns the raw JSON value at path in the arguments object.
func argument(args json.RawMessage, path []string) (json.RawMessage, bool, error) {
	cur := args
	for _, key := range path {
		cur = bytes.TrimSpace(cur)
		if len(cur) == 0 || cur[0] != '{' {
			return nil, false, nil
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(cur, &obj); err != nil {
			return nil, false, err
		}
		v, ok := obj[key]
		if !ok {
			return nil, false, nil
		}
		cur = v
	}
	cur = bytes.TrimSpace(cur)
	if len(cur) == 0 || string(cur) == "null" {
		return nil, false, nil
	}
	return cur, true, nil
}

// amountText returns the text of a JSON number, or of a JSON string holding
// one (tools often take amounts as strings).
func amountText(raw json.RawMessage) (string, error) {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errNotANum
		}
		return strings.TrimSpace(s), nil
	}
	if !json.Valid(raw) {
		return "", errNotANum
	}
	return string(raw), nil
}

// stringArg returns the string at raw (for a unit argument).
func stringArg(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

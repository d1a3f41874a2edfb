// Package phone turns what people type as a phone number into the form the messenger
// stores and uses as a messaging address: international digits without '+' (E.164).
package phone

import (
	"errors"
	"strings"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

// ErrInvalid means the input is not a valid international phone number.
var ErrInvalid = errors.New("not a valid phone number")

// Number is a normalised phone number.
type Number struct {
	// Digits is the number in international form without '+', e.g. "919812345678".
	Digits string
	// CC is the country calling code, e.g. 91.
	CC int
}

// The lengths of an international number's digits: E.164 allows at most 15; shorter than
// 7 is no subscriber's number.
const (
	minDigits = 7
	maxDigits = 15
)

// IsDigits reports whether s is already a number in this package's form: international
// digits, no leading zero, of a possible length. It does not consult the numbering plan,
// as Lenient does not.
func IsDigits(s string) bool {
	return possibleLength(s) && s[0] != '0' && allDigits(s) == s
}

// possibleLength reports whether digits are as many as an international number has.
func possibleLength(digits string) bool {
	return len(digits) >= minDigits && len(digits) <= maxDigits
}

// Digits strips everything but digits from s, then leading zeros, so "+91 98123-45678",
// "0091 9812345678" and "919812345678" all become "919812345678".
func Digits(s string) string { return strings.TrimLeft(allDigits(s), "0") }

// allDigits keeps the digits of s, leading zeros included.
func allDigits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Parse normalises s, which is read as an international number whatever its prefix
// ('+', "00" or none, as the apps send it), and checks it against the numbering plan of
// its country.
func Parse(s string) (Number, error) {
	digits := Digits(s)
	if !possibleLength(digits) {
		return Number{}, ErrInvalid
	}
	return valid(phonenumbers.Parse("+"+digits, ""))
}

// valid turns a parsed number into a Number if it is valid in its country's plan.
func valid(num *phonenumbers.PhoneNumber, err error) (Number, error) {
	if err != nil || !phonenumbers.IsValidNumber(num) {
		return Number{}, ErrInvalid
	}
	return Number{
		Digits: strings.TrimPrefix(phonenumbers.Format(num, phonenumbers.E164), "+"),
		CC:     int(num.GetCountryCode()),
	}, nil
}

// Lenient normalises s like Parse but accepts numbers outside any numbering plan (such as
// fictional numbers reserved for app-store review); the country code is still derived
// where the digits start with one.
func Lenient(s string) (Number, error) {
	if n, err := Parse(s); err == nil {
		return n, nil
	}
	digits := Digits(s)
	if !possibleLength(digits) {
		return Number{}, ErrInvalid
	}
	n := Number{Digits: digits}
	if num, err := phonenumbers.Parse("+"+digits, ""); err == nil {
		n.CC = int(num.GetCountryCode())
	}
	return n, nil
}

// ParseContact normalises a number from a user's address book. Numbers written with
// '+' or "00" are international; numbers with a single leading 0 are national numbers of
// the uploader's country (cc); other digit strings are read as international digits (the
// apps' own form) and, failing that, as national numbers of the uploader's country.
//
// Results are cached: parsing costs about 30 µs (libphonenumber's regular expressions), and
// the same address books come back on every sync.
func ParseContact(s string, cc int) (Number, error) {
	key := cacheKey{s, cc}
	if r, ok := contactCache.get(key); ok {
		return r.n, r.err
	}
	n, err := parseContact(s, cc)
	contactCache.put(key, cached{n, err})
	return n, err
}

func parseContact(s string, cc int) (Number, error) {
	t := strings.TrimSpace(s)
	digits := allDigits(t)
	if strings.HasPrefix(t, "+") || strings.HasPrefix(digits, "00") {
		return Parse(t)
	}
	if !strings.HasPrefix(digits, "0") {
		if n, err := Parse(t); err == nil {
			return n, nil
		}
	}
	region := phonenumbers.GetRegionCodeForCountryCode(cc)
	if region == "" || region == "ZZ" {
		return Number{}, ErrInvalid
	}
	return valid(phonenumbers.Parse(t, region))
}

type cacheKey struct {
	raw string
	cc  int
}

type cached struct {
	n   Number
	err error
}

// parseCache is a bounded map that forgets everything when full: simple, and the
// working set (the numbers of active address books) refills it quickly.
type parseCache struct {
	mu  sync.RWMutex
	max int
	m   map[cacheKey]cached
}

// contactCache holds about 25 MB at its bound.
var contactCache = &parseCache{max: 1 << 18, m: map[cacheKey]cached{}}

func (c *parseCache) get(k cacheKey) (cached, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.m[k]
	return r, ok
}

func (c *parseCache) put(k cacheKey, r cached) {
	if len(k.raw) > 64 {
		return // not a phone number anyone types; do not let junk fill the cache
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k] = r
}

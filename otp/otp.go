// Package otp issues and checks the one-time codes of phone login. Codes live only as an
// HMAC of phone and code: in Redis (Store), so that every server instance can check a
// code any of them issued and a Redis dump reveals no usable code, or, for a single
// instance without Redis, in process memory (MemoryStore), under the same rules.
package otp

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors returned by Verify.
var (
	// ErrBadCode: wrong, expired, already used, or out of checks.
	ErrBadCode = errors.New("invalid or expired code")
	// ErrLocked: too many consecutive failures for this number.
	ErrLocked = errors.New("too many failed attempts for this number")
)

// LockedError carries how long a locked-out number stays locked.
type LockedError struct{ RetryAfter time.Duration }

func (e *LockedError) Error() string { return ErrLocked.Error() }

// Is makes errors.Is(err, ErrLocked) true for a *LockedError.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Config sets the rules for codes.
type Config struct {
	// Secret keys the HMAC under which codes are stored; instances sharing a Redis
	// must share it.
	Secret []byte
	// TTL is how long a code lives.
	TTL time.Duration
	// MaxChecks is how many times one code may be checked, right or wrong.
	MaxChecks int
	// MaxFailures is how many consecutive failed checks lock a number out.
	MaxFailures int
	// FailureWindow is how long failures are remembered, and so how long a lock-out lasts.
	FailureWindow time.Duration
	// FixedCodes maps phone digits to a code that is issued instead of a random one
	// (numbers for app-store review).
	FixedCodes map[string]string
	// KeyPrefix starts every Redis key (a MemoryStore has no keys to tell apart).
	KeyPrefix string
}

// Codes issues and checks codes: Store in Redis, MemoryStore in one process. Callers
// that must run without Redis take this rather than a *Store.
type Codes interface {
	// Issue creates a code for phone, replacing any earlier one, and returns it for
	// delivery; a locked-out number gets a *LockedError.
	Issue(ctx context.Context, phone string) (string, error)
	// Verify checks code for phone: nil uses the code up, ErrBadCode or a *LockedError
	// refuse it, any other error is the store's.
	Verify(ctx context.Context, phone, code string) error
	// FixedCode reports the review code configured for phone, if any.
	FixedCode(phone string) (string, bool)
}

var (
	_ Codes = (*Store)(nil)
	_ Codes = (*MemoryStore)(nil)
)

// codeState is where codes and failure counts live. Each method is one atomic step (one
// Redis script in Store); issueCode and verifyCode put the steps together once for both
// kinds, so that their rules cannot drift apart.
type codeState interface {
	// putCode stores mac as phone's code with no checks made, replacing any earlier code,
	// and answers -1; a locked-out number is left as it is and the answer is the lock's
	// remaining milliseconds (as Redis PTTL gives them).
	putCode(ctx context.Context, phone, mac string) (lockedMS int64, err error)
	// countCheck counts a check of phone's code before handing out its MAC.
	countCheck(ctx context.Context, phone string) (checkAnswer, error)
	// consumeCode deletes phone's code and failures if the code is still mac.
	consumeCode(ctx context.Context, phone, mac string) (won bool, err error)
	// countFailure counts a failed check; the window starts at the first failure.
	countFailure(ctx context.Context, phone string) error
}

// Answers of countCheck other than a check's number.
const (
	checkLocked = -2 // the number is locked out
	checkNoCode = -1 // no live code: nothing to compare
	checkSpent  = -3 // the code is out of checks
)

// checkAnswer is what countCheck answers.
type checkAnswer struct {
	n        int64  // the check's number from 1, or checkLocked, checkNoCode or checkSpent
	lockedMS int64  // with checkLocked: the lock's remaining milliseconds
	mac      string // with a check's number: the stored MAC
}

// codeMAC is the only form in which a code is stored.
func codeMAC(secret []byte, phone, code string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(phone))
	m.Write([]byte{0})
	m.Write([]byte(code))
	return hex.EncodeToString(m.Sum(nil))
}

// issueCode is Issue for both kinds of store.
func issueCode(ctx context.Context, cfg Config, st codeState, phone string) (string, error) {
	code, ok := fixedCode(cfg, phone)
	if !ok {
		// 100000-999999: no leading zero, so a code sent as a JSON number survives.
		n, err := rand.Int(rand.Reader, big.NewInt(900_000))
		if err != nil {
			return "", fmt.Errorf("otp: random code: %w", err)
		}
		code = fmt.Sprintf("%d", 100_000+n.Int64())
	}
	locked, err := st.putCode(ctx, phone, codeMAC(cfg.Secret, phone, code))
	if err != nil {
		return "", fmt.Errorf("otp: store code: %w", err)
	}
	if locked >= 0 {
		return "", &LockedError{RetryAfter: time.Duration(locked) * time.Millisecond}
	}
	return code, nil
}

// verifyCode is Verify for both kinds of store.
func verifyCode(ctx context.Context, cfg Config, st codeState, phone, code string) error {
	a, err := st.countCheck(ctx, phone)
	if err != nil {
		return fmt.Errorf("otp: check code: %w", err)
	}
	switch a.n {
	case checkLocked:
		return &LockedError{RetryAfter: time.Duration(a.lockedMS) * time.Millisecond}
	case checkNoCode:
		// No live code: nothing was compared, so nothing counts towards the lock-out
		// (otherwise anyone could lock any number out without ever getting a code).
		return ErrBadCode
	}
	want := codeMAC(cfg.Secret, phone, code)
	if a.n != checkSpent && hmac.Equal([]byte(a.mac), []byte(want)) {
		won, err := st.consumeCode(ctx, phone, want)
		if err != nil {
			return fmt.Errorf("otp: use code: %w", err)
		}
		if won {
			return nil
		}
	}
	if err := st.countFailure(ctx, phone); err != nil {
		return fmt.Errorf("otp: count failure: %w", err)
	}
	return ErrBadCode
}

// fixedCode is FixedCode for both kinds of store.
func fixedCode(cfg Config, phone string) (string, bool) {
	code, ok := cfg.FixedCodes[phone]
	return code, ok
}

// Store keeps codes in Redis.
type Store struct {
	rdb redis.UniversalClient
	cfg Config
}

// NewStore returns a Store over rdb.
func NewStore(rdb redis.UniversalClient, cfg Config) *Store { return &Store{rdb: rdb, cfg: cfg} }

// keys of one phone share a hash tag so that the scripts touching both work on Redis Cluster.
func (s *Store) keys(phone string) (code, failures string) {
	base := s.cfg.KeyPrefix + "{" + phone + "}"
	return base + ":otp", base + ":otpfail"
}

// issueScript refuses a locked-out number, else replaces any earlier code and its check count.
var issueScript = redis.NewScript(`
local fails = tonumber(redis.call('GET', KEYS[2]) or '0')
if fails >= tonumber(ARGV[3]) then return redis.call('PTTL', KEYS[2]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'mac', ARGV[1], 'checks', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return -1`)

// Issue creates a code for phone, replacing any earlier one, and returns it for delivery.
func (s *Store) Issue(ctx context.Context, phone string) (string, error) {
	return issueCode(ctx, s.cfg, s, phone)
}

func (s *Store) putCode(ctx context.Context, phone, mac string) (int64, error) {
	codeKey, failKey := s.keys(phone)
	return issueScript.Run(ctx, s.rdb, []string{codeKey, failKey},
		mac, s.cfg.TTL.Milliseconds(), s.cfg.MaxFailures).Int64()
}

// checkScript counts the check before handing out the stored MAC, so that parallel
// guesses can never compare more than MaxChecks times. Answers: {-2, pttl} locked out,
// {-1} no live code, {-3} out of checks, {n, mac} the n-th check.
var checkScript = redis.NewScript(`
local fails = tonumber(redis.call('GET', KEYS[2]) or '0')
if fails >= tonumber(ARGV[2]) then return {-2, redis.call('PTTL', KEYS[2])} end
local mac = redis.call('HGET', KEYS[1], 'mac')
if not mac then return {-1} end
local n = redis.call('HINCRBY', KEYS[1], 'checks', 1)
if n > tonumber(ARGV[1]) then return {-3} end
return {n, mac}`)

func (s *Store) countCheck(ctx context.Context, phone string) (checkAnswer, error) {
	codeKey, failKey := s.keys(phone)
	res, err := checkScript.Run(ctx, s.rdb, []string{codeKey, failKey}, s.cfg.MaxChecks, s.cfg.MaxFailures).Slice()
	if err != nil {
		return checkAnswer{}, err
	}
	var a checkAnswer
	a.n, _ = res[0].(int64)
	if len(res) == 2 {
		if a.n == checkLocked {
			a.lockedMS, _ = res[1].(int64)
		} else {
			a.mac, _ = res[1].(string)
		}
	}
	return a, nil
}

// consumeScript deletes the code only if it is still the one that was checked, so that
// of two parallel right answers one wins, and a code issued meanwhile survives.
var consumeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'mac') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1`)

func (s *Store) consumeCode(ctx context.Context, phone, mac string) (bool, error) {
	codeKey, failKey := s.keys(phone)
	won, err := consumeScript.Run(ctx, s.rdb, []string{codeKey, failKey}, mac).Int64()
	return won == 1, err
}

// failScript counts a failed check; the window starts at the first failure.
var failScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`)

func (s *Store) countFailure(ctx context.Context, phone string) error {
	_, failKey := s.keys(phone)
	return failScript.Run(ctx, s.rdb, []string{failKey}, s.cfg.FailureWindow.Milliseconds()).Err()
}

// Verify checks code for phone. A right code is used up; any failure is counted
// towards the number's lock-out.
func (s *Store) Verify(ctx context.Context, phone, code string) error {
	return verifyCode(ctx, s.cfg, s, phone, code)
}

// Delivery is a code on its way to a person.
type Delivery struct {
	Phone string `json:"phone"`
	Code  string `json:"code"`
	AppID string `json:"appid"`
	// Text is the message that carries the code, from the app's template.
	Text string `json:"text,omitempty"`
	// TTL is how long the code lives: a message still undelivered by then is useless.
	TTL time.Duration `json:"-"`
}

// Sender delivers codes: an SMS gateway, a webhook, or the log in development.
type Sender interface {
	SendOTP(ctx context.Context, d Delivery) error
}

// FixedCode reports the review code configured for phone, if any.
func (s *Store) FixedCode(phone string) (string, bool) { return fixedCode(s.cfg, phone) }

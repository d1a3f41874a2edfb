// Package otp issues and checks the one-time codes of phone login. Codes live in Redis
// only as an HMAC of phone and code, so that every server instance can check a code any
// of them issued, and a Redis dump reveals no usable code.
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
	// KeyPrefix starts every Redis key.
	KeyPrefix string
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

func (s *Store) mac(phone, code string) string {
	m := hmac.New(sha256.New, s.cfg.Secret)
	m.Write([]byte(phone))
	m.Write([]byte{0})
	m.Write([]byte(code))
	return hex.EncodeToString(m.Sum(nil))
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
	code, ok := s.cfg.FixedCodes[phone]
	if !ok {
		// 100000-999999: no leading zero, so a code sent as a JSON number survives.
		n, err := rand.Int(rand.Reader, big.NewInt(900_000))
		if err != nil {
			return "", fmt.Errorf("otp: random code: %w", err)
		}
		code = fmt.Sprintf("%d", 100_000+n.Int64())
	}
	codeKey, failKey := s.keys(phone)
	locked, err := issueScript.Run(ctx, s.rdb, []string{codeKey, failKey},
		s.mac(phone, code), s.cfg.TTL.Milliseconds(), s.cfg.MaxFailures).Int64()
	if err != nil {
		return "", fmt.Errorf("otp: store code: %w", err)
	}
	if locked >= 0 {
		return "", &LockedError{RetryAfter: time.Duration(locked) * time.Millisecond}
	}
	return code, nil
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

// consumeScript deletes the code only if it is still the one that was checked, so that
// of two parallel right answers one wins, and a code issued meanwhile survives.
var consumeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'mac') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1`)

// failScript counts a failed check; the window starts at the first failure.
var failScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`)

// Verify checks code for phone. A right code is used up; any failure is counted
// towards the number's lock-out.
func (s *Store) Verify(ctx context.Context, phone, code string) error {
	codeKey, failKey := s.keys(phone)
	res, err := checkScript.Run(ctx, s.rdb, []string{codeKey, failKey}, s.cfg.MaxChecks, s.cfg.MaxFailures).Slice()
	if err != nil {
		return fmt.Errorf("otp: check code: %w", err)
	}
	if status, _ := res[0].(int64); status == -2 {
		pttl, _ := res[1].(int64)
		return &LockedError{RetryAfter: time.Duration(pttl) * time.Millisecond}
	}
	if status, _ := res[0].(int64); status == -1 {
		// No live code: nothing was compared, so nothing counts towards the lock-out
		// (otherwise anyone could lock any number out without ever getting a code).
		return ErrBadCode
	}
	want := s.mac(phone, code)
	if len(res) == 2 {
		stored, _ := res[1].(string)
		if hmac.Equal([]byte(stored), []byte(want)) {
			won, err := consumeScript.Run(ctx, s.rdb, []string{codeKey, failKey}, want).Int64()
			if err != nil {
				return fmt.Errorf("otp: use code: %w", err)
			}
			if won == 1 {
				return nil
			}
		}
	}
	if err := failScript.Run(ctx, s.rdb, []string{failKey}, s.cfg.FailureWindow.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("otp: count failure: %w", err)
	}
	return ErrBadCode
}

// Delivery is a code on its way to a person.
type Delivery struct {
	Phone string `json:"phone"`
	Code  string `json:"code"`
	AppID string `json:"appid"`
}

// Sender delivers codes: an SMS gateway, a webhook, or the log in development.
type Sender interface {
	SendOTP(ctx context.Context, d Delivery) error
}

// FixedCode reports the review code configured for phone, if any.
func (s *Store) FixedCode(phone string) (string, bool) {
	code, ok := s.cfg.FixedCodes[phone]
	return code, ok
}

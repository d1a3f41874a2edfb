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

// ErrBadCode is Verify's answer to a code that is wrong, expired, already used, or out of
// checks.
var ErrBadCode = errors.New("invalid or expired code")

// Config sets the rules for codes.
//
// A number is never locked out: checks by someone who never saw the code must not stop
// its owner from asking for a fresh one and using it (PROTOCOL.md §5). A guesser's
// chance is bounded per code instead: MaxChecks checks of 900,000 possible codes, for
// each code the send limits let them make the server send.
type Config struct {
	// Secret keys the HMAC under which codes are stored; instances sharing a Redis
	// must share it.
	Secret []byte
	// TTL is how long a code lives.
	TTL time.Duration
	// MaxChecks is how many times one code may be checked, right or wrong.
	MaxChecks int
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
	// delivery.
	Issue(ctx context.Context, phone string) (string, error)
	// Verify checks code for phone: nil uses the code up, ErrBadCode refuses it, any
	// other error is the store's.
	Verify(ctx context.Context, phone, code string) error
	// FixedCode reports the review code configured for phone, if any.
	FixedCode(phone string) (string, bool)
}

var (
	_ Codes = (*Store)(nil)
	_ Codes = (*MemoryStore)(nil)
)

// codeState is where codes live. Each method is one atomic step (one Redis script in
// Store); issueCode and verifyCode put the steps together once for both kinds, so that
// their rules cannot drift apart.
type codeState interface {
	// putCode stores mac as phone's code with no checks made, replacing any earlier code.
	putCode(ctx context.Context, phone, mac string) error
	// countCheck counts a check of phone's code before handing out its MAC.
	countCheck(ctx context.Context, phone string) (checkAnswer, error)
	// consumeCode deletes phone's code if it is still mac.
	consumeCode(ctx context.Context, phone, mac string) (won bool, err error)
}

// Answers of countCheck other than a check's number.
const (
	checkNoCode = -1 // no live code: nothing to compare
	checkSpent  = -3 // the code is out of checks
)

// checkAnswer is what countCheck answers.
type checkAnswer struct {
	n   int64  // the check's number from 1, or checkNoCode or checkSpent
	mac string // with a check's number: the stored MAC
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
	if err := st.putCode(ctx, phone, codeMAC(cfg.Secret, phone, code)); err != nil {
		return "", fmt.Errorf("otp: store code: %w", err)
	}
	return code, nil
}

// verifyCode is Verify for both kinds of store. Only a check of a live code with checks
// left compares anything; the others are refused without a trace.
func verifyCode(ctx context.Context, cfg Config, st codeState, phone, code string) error {
	a, err := st.countCheck(ctx, phone)
	if err != nil {
		return fmt.Errorf("otp: check code: %w", err)
	}
	if a.n == checkNoCode || a.n == checkSpent {
		return ErrBadCode
	}
	want := codeMAC(cfg.Secret, phone, code)
	if !hmac.Equal([]byte(a.mac), []byte(want)) {
		return ErrBadCode
	}
	won, err := st.consumeCode(ctx, phone, want)
	if err != nil {
		return fmt.Errorf("otp: use code: %w", err)
	}
	if !won {
		return ErrBadCode // a parallel check with the same code won
	}
	return nil
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

// codeKey is phone's key. Its hash tag keeps a deployment's keys of one phone on one
// Redis Cluster node whatever else is ever kept beside the code.
func (s *Store) codeKey(phone string) string { return s.cfg.KeyPrefix + "{" + phone + "}:otp" }

// issueScript replaces any earlier code and its check count.
var issueScript = redis.NewScript(`
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'mac', ARGV[1], 'checks', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`)

// Issue creates a code for phone, replacing any earlier one, and returns it for delivery.
func (s *Store) Issue(ctx context.Context, phone string) (string, error) {
	return issueCode(ctx, s.cfg, s, phone)
}

func (s *Store) putCode(ctx context.Context, phone, mac string) error {
	return issueScript.Run(ctx, s.rdb, []string{s.codeKey(phone)}, mac, s.cfg.TTL.Milliseconds()).Err()
}

// checkScript counts the check before handing out the stored MAC, so that parallel
// guesses can never compare more than MaxChecks times. Answers: {-1} no live code, {-3}
// out of checks, {n, mac} the n-th check.
var checkScript = redis.NewScript(`
local mac = redis.call('HGET', KEYS[1], 'mac')
if not mac then return {-1} end
local n = redis.call('HINCRBY', KEYS[1], 'checks', 1)
if n > tonumber(ARGV[1]) then return {-3} end
return {n, mac}`)

func (s *Store) countCheck(ctx context.Context, phone string) (checkAnswer, error) {
	res, err := checkScript.Run(ctx, s.rdb, []string{s.codeKey(phone)}, s.cfg.MaxChecks).Slice()
	if err != nil {
		return checkAnswer{}, err
	}
	var a checkAnswer
	a.n, _ = res[0].(int64)
	if len(res) == 2 {
		a.mac, _ = res[1].(string)
	}
	return a, nil
}

// consumeScript deletes the code only if it is still the one that was checked, so that
// of two parallel right answers one wins, and a code issued meanwhile survives.
var consumeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'mac') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1`)

func (s *Store) consumeCode(ctx context.Context, phone, mac string) (bool, error) {
	won, err := consumeScript.Run(ctx, s.rdb, []string{s.codeKey(phone)}, mac).Int64()
	return won == 1, err
}

// Verify checks code for phone; a right code is used up.
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

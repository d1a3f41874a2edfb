package otp

import (
	"context"
	"sync"
	"time"

	"github.com/caddy-messenger/messenger/internal/sweep"
)

// MemoryStore keeps codes in process memory, for a single instance without Redis. Its
// rules are Store's (the same issueCode and verifyCode run over it, each step under one
// lock as each Redis script is atomic); but nothing is shared with another process, and
// a restart forgets every code and lock-out. It never fails, so it ignores ctx.
type MemoryStore struct {
	cfg Config
	mem *memCodes
}

// NewMemoryStore returns an empty MemoryStore; cfg.KeyPrefix is not used.
func NewMemoryStore(cfg Config) *MemoryStore {
	return &MemoryStore{cfg: cfg, mem: &memCodes{now: time.Now, codes: expiring[memCode]{}}}
}

// WithConfig returns a MemoryStore with cfg's rules over s's codes, as a Store with new
// rules over the same Redis: a config reload keeps them.
func (s *MemoryStore) WithConfig(cfg Config) *MemoryStore { return &MemoryStore{cfg: cfg, mem: s.mem} }

// memCodes is the state of a MemoryStore. It is apart from the Config so that a test can
// put a second store with another secret over the same state, as two instances of Store
// share a Redis.
type memCodes struct {
	now    func() time.Time // time.Now; tests move it by hand
	mu     sync.Mutex
	codes  expiring[memCode] // what a Store keeps under its code keys
	sweeps sweep.Countdown
}

// memCode is a stored code, as the hash under a Store's code key.
type memCode struct {
	mac    string
	checks int
}

// lock takes the state for one step and returns the step's time, first sweeping when
// it is due. The caller unlocks mu.
func (m *memCodes) lock() time.Time {
	m.mu.Lock()
	now := m.now()
	if m.sweeps.Due() {
		m.codes.sweep(now)
		m.sweeps.Swept(len(m.codes))
	}
	return now
}

// Issue creates a code for phone, replacing any earlier one, and returns it for delivery.
func (s *MemoryStore) Issue(ctx context.Context, phone string) (string, error) {
	return issueCode(ctx, s.cfg, s, phone)
}

// putCode is issueScript.
func (s *MemoryStore) putCode(_ context.Context, phone, mac string) error {
	now := s.mem.lock()
	defer s.mem.mu.Unlock()
	s.mem.codes.set(phone, memCode{mac: mac}, s.cfg.TTL, now)
	return nil
}

// countCheck is checkScript.
func (s *MemoryStore) countCheck(_ context.Context, phone string) (checkAnswer, error) {
	now := s.mem.lock()
	defer s.mem.mu.Unlock()
	c, ok := s.mem.codes.get(phone, now)
	if !ok {
		return checkAnswer{n: checkNoCode}, nil
	}
	c.checks++
	s.mem.codes.keep(phone, c)
	if c.checks > s.cfg.MaxChecks {
		return checkAnswer{n: checkSpent}, nil
	}
	return checkAnswer{n: int64(c.checks), mac: c.mac}, nil
}

// consumeCode is consumeScript.
func (s *MemoryStore) consumeCode(_ context.Context, phone, mac string) (bool, error) {
	now := s.mem.lock()
	defer s.mem.mu.Unlock()
	if c, ok := s.mem.codes.get(phone, now); !ok || c.mac != mac {
		return false, nil
	}
	delete(s.mem.codes, phone)
	return true, nil
}

// Verify checks code for phone; a right code is used up.
func (s *MemoryStore) Verify(ctx context.Context, phone, code string) error {
	return verifyCode(ctx, s.cfg, s, phone, code)
}

// FixedCode reports the review code configured for phone, if any.
func (s *MemoryStore) FixedCode(phone string) (string, bool) { return fixedCode(s.cfg, phone) }

// expiring is a map whose entries expire as Redis keys do, so that MemoryStore can
// follow the scripts step by step: an entry lives to the end of its time, and a time
// under a millisecond deletes at once (PEXPIRE of a Duration's Milliseconds).
type expiring[V any] map[string]expiringEntry[V]

// expiringEntry is a value and the end of its life.
type expiringEntry[V any] struct {
	v     V
	until time.Time
}

// get returns key's value if it is live, deleting an expired one on the way.
func (m expiring[V]) get(key string, now time.Time) (V, bool) {
	e, ok := m[key]
	if ok && now.After(e.until) {
		delete(m, key)
		var zero V
		return zero, false
	}
	return e.v, ok
}

// set stores v under key for ttl (SET, then PEXPIRE).
func (m expiring[V]) set(key string, v V, ttl time.Duration, now time.Time) {
	if ttl = ttl.Truncate(time.Millisecond); ttl <= 0 {
		delete(m, key)
		return
	}
	m[key] = expiringEntry[V]{v: v, until: now.Add(ttl)}
}

// keep changes the value of a live key but not its time (HINCRBY, INCR).
func (m expiring[V]) keep(key string, v V) {
	e := m[key]
	e.v = v
	m[key] = e
}

// sweep deletes every expired entry.
func (m expiring[V]) sweep(now time.Time) {
	for k, e := range m {
		if now.After(e.until) {
			delete(m, k)
		}
	}
}

package otp

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/internal/sweep"
)

// handClock is a hand-moved time for a MemoryStore, for tests that make no calls in parallel.
type handClock struct{ t time.Time }

func (c *handClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClockedMemoryStore(mutate func(*Config)) (*MemoryStore, *handClock) {
	s := NewMemoryStore(testConfig("", mutate))
	c := &handClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.mem.now = func() time.Time { return c.t }
	return s, c
}

// size is how many entries the store holds, live or not.
func (s *MemoryStore) size() int {
	s.mem.mu.Lock()
	defer s.mem.mu.Unlock()
	return len(s.mem.codes)
}

// TestMemorySweepsExpired: codes of numbers nobody asks about again are dropped, so the
// store's size follows the live entries, not all there ever were.
func TestMemorySweepsExpired(t *testing.T) {
	s, clock := newClockedMemoryStore(func(c *Config) { c.TTL = time.Second })
	ctx := ctxT(t)
	// Each number gets a code and is never seen again, the first hundred a check too.
	// About 100 codes are live at a time.
	const numbers = 20 * sweep.Every
	largest := 0
	for i := range numbers {
		phone := strconv.Itoa(910000000000 + i)
		code := mustIssue(t, s, phone)
		if i < 100 {
			if err := s.Verify(ctx, phone, wrongCode(code)); !errors.Is(err, ErrBadCode) {
				t.Fatalf("wrong code = %v", err)
			}
		}
		clock.advance(10 * time.Millisecond)
		largest = max(largest, s.size())
	}
	if largest > 2*sweep.Every {
		t.Errorf("the store grew to %d entries for about 100 live ones (%d numbers in all)", largest, numbers)
	}
	// Once everything has expired, the next sweep leaves nothing behind.
	clock.advance(2 * time.Second)
	for range sweep.Every {
		if err := s.Verify(ctx, testPhone, "123456"); !errors.Is(err, ErrBadCode) {
			t.Fatalf("Verify without a code = %v", err)
		}
	}
	if n := s.size(); n != 0 {
		t.Errorf("%d entries left after everything expired and a sweep", n)
	}
}

// TestMemoryCodeLife: a code lives to the end of its TTL, to the millisecond, as Redis
// keys do.
func TestMemoryCodeLife(t *testing.T) {
	s, clock := newClockedMemoryStore(nil)
	ctx := ctxT(t)
	code := mustIssue(t, s, testPhone)
	clock.advance(time.Minute) // the code's TTL, to the end
	if _, ok := s.mem.codes.get(testPhone, clock.t); !ok {
		t.Fatalf("code gone at the end of its TTL")
	}
	clock.advance(time.Millisecond)
	if err := s.Verify(ctx, testPhone, code); !errors.Is(err, ErrBadCode) {
		t.Fatalf("Verify after the TTL = %v, want ErrBadCode", err)
	}
}

package ratelimit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-messenger/messenger/internal/testenv"
)

// newLimiter returns a Limiter on the test Redis, its client, and its key prefix. Keys the
// rate library stores outside the prefix are removed at the end too.
func newLimiter(t *testing.T) (*Limiter, *redis.Client, string) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, "*"+prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	return New(rdb, prefix), rdb, prefix
}

// forEachBackend runs test against a fresh Limiter on Redis and one in memory.
func forEachBackend(t *testing.T, test func(t *testing.T, l *Limiter)) {
	t.Run("redis", func(t *testing.T) {
		l, _, _ := newLimiter(t)
		test(t, l)
	})
	t.Run("memory", func(t *testing.T) { test(t, NewMemory("test:")) })
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustAllow(t *testing.T, l *Limiter, what string, checks ...Check) {
	t.Helper()
	ra, err := l.Allow(ctxT(t), checks...)
	if err != nil {
		t.Fatalf("%s: Allow: %v", what, err)
	}
	if ra != 0 {
		t.Fatalf("%s: refused with retryAfter %v, want allowed", what, ra)
	}
}

func mustRefuse(t *testing.T, l *Limiter, what string, checks ...Check) time.Duration {
	t.Helper()
	ra, err := l.Allow(ctxT(t), checks...)
	if err != nil {
		t.Fatalf("%s: Allow: %v", what, err)
	}
	if ra <= 0 {
		t.Fatalf("%s: allowed (retryAfter %v), want refused", what, ra)
	}
	return ra
}

func TestRuleAndRetryAfter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, l *Limiter) {
		c := Check{Key: "phone:919812345678", Rules: []Rule{{Events: 2, Window: 2 * time.Second}}}
		mustAllow(t, l, "1st", c)
		mustAllow(t, l, "2nd", c)
		ra := mustRefuse(t, l, "3rd", c)
		if ra > 2*time.Second {
			t.Fatalf("retryAfter = %v, want <= 2s", ra)
		}
		// A refused request is not charged: asking again right away gives about the same wait.
		ra2 := mustRefuse(t, l, "4th", c)
		if ra2 > ra {
			t.Errorf("retryAfter grew from %v to %v after a refused request", ra, ra2)
		}
		time.Sleep(ra2 + 20*time.Millisecond)
		mustAllow(t, l, "after waiting retryAfter", c)
		mustRefuse(t, l, "right after that", c)
	})
}

func TestSharedAcrossInstances(t *testing.T) {
	l1, rdb, prefix := newLimiter(t)
	opts := *rdb.Options()
	rdb2 := redis.NewClient(&opts)
	t.Cleanup(func() { rdb2.Close() })
	l2 := New(rdb2, prefix)

	c := Check{Key: "ip:1.2.3.4", Rules: []Rule{{Events: 3, Window: time.Hour}}}
	mustAllow(t, l1, "instance 1, 1st", c)
	mustAllow(t, l1, "instance 1, 2nd", c)
	mustAllow(t, l2, "instance 2, 3rd", c)
	mustRefuse(t, l2, "instance 2, 4th", c)
	mustRefuse(t, l1, "instance 1, 4th", c)

	// A different prefix is a different deployment: it does not see these counts.
	l3 := New(rdb2, prefix+"other:")
	mustAllow(t, l3, "other prefix", c)
}

func TestRefusedByOneCheckChargesNoOther(t *testing.T) {
	forEachBackend(t, func(t *testing.T, l *Limiter) {
		a := Check{Key: "ip:10.0.0.1", Rules: []Rule{{Events: 3, Window: time.Hour}}}
		b := Check{Key: "phone:919812345678", Rules: []Rule{{Events: 1, Window: time.Hour}}}

		mustAllow(t, l, "A+B first", a, b) // A: 1 of 3 used, B: 1 of 1
		for i := 0; i < 5; i++ {
			ra := mustRefuse(t, l, "A+B again", a, b)
			if ra < 30*time.Minute || ra > time.Hour {
				t.Fatalf("retryAfter = %v, want about an hour (B's rule)", ra)
			}
		}
		// B in front of A: refused by B before A is looked at, and still no charge to A.
		mustRefuse(t, l, "B+A", b, a)
		// A still has exactly 2 left.
		mustAllow(t, l, "A alone, 2nd", a)
		mustAllow(t, l, "A alone, 3rd", a)
		mustRefuse(t, l, "A alone, 4th", a)
	})
}

func TestTwoRulesOnOneKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, l *Limiter) {
		// The hour rule is listed first so that a refusal by it shows in retryAfter.
		c := Check{Key: "phone:919812345678", Rules: []Rule{
			{Events: 2, Window: time.Hour},
			{Events: 1, Window: time.Second},
		}}
		mustAllow(t, l, "1st", c)
		ra := mustRefuse(t, l, "2nd right away (1 per 1s)", c)
		if ra > time.Second {
			t.Fatalf("retryAfter = %v, want <= 1s (the per-second rule)", ra)
		}
		time.Sleep(ra + 20*time.Millisecond)
		mustAllow(t, l, "2nd after a second", c)
		ra = mustRefuse(t, l, "3rd (2 per hour used up)", c)
		if ra < 20*time.Minute || ra > time.Hour {
			t.Fatalf("retryAfter = %v, want about 30 min (the per-hour rule)", ra)
		}
	})
}

// Two different rules on one key must each keep their own state, as the comment on key
// promises; windows that are not whole seconds must not collapse into one counter.
func TestRulesWithSubSecondWindowsDoNotShareState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, l *Limiter) {
		c := Check{Key: "k", Rules: []Rule{
			{Events: 1, Window: time.Second},
			{Events: 1, Window: 1500 * time.Millisecond},
		}}
		if k1, k2 := l.key(c.Key, c.Rules[0]), l.key(c.Key, c.Rules[1]); k1 == k2 {
			t.Errorf("rules %v and %v share the Redis key %q", c.Rules[0], c.Rules[1], k1)
		}
		// A fresh key: the first event must be allowed.
		mustAllow(t, l, "first event on a fresh key", c)
	})
}

// New promises that every key starts with prefix (so deployments can be told apart, and
// cleaned up or restricted by ACL key patterns).
// TestKeysStartWithPrefix: every key is "rate:" (redis_rate's own) + the prefix, so an
// operator can scope a Redis ACL to "~rate:PREFIX*" and "~PREFIX*".
func TestKeysStartWithPrefix(t *testing.T) {
	l, rdb, prefix := newLimiter(t)
	mustAllow(t, l, "one event", Check{Key: "ip:1.2.3.4", Rules: []Rule{{Events: 5, Window: time.Minute}}})
	ctx := ctxT(t)
	var all, under []string
	iter := rdb.Scan(ctx, 0, "*"+prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		all = append(all, iter.Val())
		if strings.HasPrefix(iter.Val(), "rate:"+prefix) {
			under = append(under, iter.Val())
		}
	}
	if len(all) == 0 {
		t.Fatal("Allow stored no key containing the prefix")
	}
	if len(under) != len(all) {
		t.Errorf("keys %q do not start with the prefix %q", all, prefix)
	}
}

func TestNoChecksAllowed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, l *Limiter) {
		mustAllow(t, l, "no checks")
	})
}

func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"IPv4", "1.2.3.4", "1.2.3.4"},
		{"IPv4 with three-digit octets", "203.0.113.200", "203.0.113.200"},
		{"IPv4-mapped IPv6 is its IPv4", "::ffff:1.2.3.4", "1.2.3.4"},
		{"not an address, as it is", "not-an-ip", "not-an-ip"},
		{"empty", "", ""},
		{"with a port, as it is", "1.2.3.4:80", "1.2.3.4:80"},
		{"three octets, as it is", "1.2.3", "1.2.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ClientKey(tc.in); got != tc.want {
				t.Errorf("ClientKey(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}

	same := []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:DB8:1:2:0:0:0:42"}
	k := ClientKey(same[0])
	for _, ip := range same[1:] {
		if got := ClientKey(ip); got != k {
			t.Errorf("ClientKey(%q) = %q, want %q (same /64 as %s)", ip, got, k, same[0])
		}
	}
	if k == same[0] {
		t.Errorf("ClientKey(%q) = the address itself, want its /64", same[0])
	}
	if k != "2001:db8:1:2::/64" {
		t.Errorf("ClientKey(%q) = %q, want 2001:db8:1:2::/64", same[0], k)
	}
	for _, ip := range []string{"2001:db8:1:3::1", "2001:db8:2:2::1", "2001:db9:1:2::1"} {
		if got := ClientKey(ip); got == k {
			t.Errorf("ClientKey(%q) = %q, same as another /64", ip, got)
		}
	}
	if ClientKey("1.2.3.4") == ClientKey("1.2.3.5") {
		t.Errorf("two IPv4 addresses share a key")
	}
}

func TestRedisUnreachable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	l := New(rdb, "x:")
	start := time.Now()
	ra, err := l.Allow(ctxT(t), Check{Key: "k", Rules: []Rule{{Events: 1, Window: time.Minute}}})
	if err == nil {
		t.Fatal("Allow with Redis unreachable returned no error")
	}
	if ra != 0 {
		t.Errorf("retryAfter = %v, want 0 with an error", ra)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Allow took %v with Redis unreachable", d)
	}
}

func TestRuleString(t *testing.T) {
	if got := (Rule{Events: 5, Window: time.Hour}).String(); got != "5/1h0m0s" {
		t.Errorf("String = %q", got)
	}
}

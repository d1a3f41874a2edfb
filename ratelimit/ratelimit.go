// Package ratelimit applies sets of GCRA limits kept in Redis, so that every server
// instance sharing the Redis sees the same counts, or, for a single instance without
// Redis, in process memory under the same arithmetic.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Rule allows Events events per Window for one key, with a burst of Burst (default
// Events): a bucket of Burst that refills at Events per Window.
type Rule struct {
	Events int           `json:"events"`
	Window time.Duration `json:"window"`
	Burst  int           `json:"burst,omitempty"`
}

func (r Rule) burst() int {
	if r.Burst > 0 {
		return r.Burst
	}
	return r.Events
}

// String renders the rule as "5/1h0m0s".
func (r Rule) String() string { return fmt.Sprintf("%d/%s", r.Events, r.Window) }

func (r Rule) limit() redis_rate.Limit {
	return redis_rate.Limit{Rate: r.Events, Burst: r.burst(), Period: r.Window}
}

// Check is one key with the rules that apply to it.
type Check struct {
	Key   string
	Rules []Rule
}

// Limiter checks and charges Checks against Redis or process memory.
type Limiter struct {
	limiter gcra
	prefix  string
}

// gcra keeps the GCRA state of each key: redis_rate's Limiter in Redis, memoryGCRA in
// this process. AllowN has redis_rate's meaning, a cost of 0 (a peek) included.
type gcra interface {
	AllowN(ctx context.Context, key string, limit redis_rate.Limit, n int) (*redis_rate.Result, error)
}

var (
	_ gcra = (*redis_rate.Limiter)(nil)
	_ gcra = (*memoryGCRA)(nil)
)

// New returns a Limiter whose keys all start with "rate:" (redis_rate's own prefix)
// followed by prefix.
func New(rdb redis.UniversalClient, prefix string) *Limiter {
	return &Limiter{limiter: redis_rate.NewLimiter(rdb), prefix: prefix}
}

// NewMemory returns a Limiter that keeps its counts in this process, for a single
// instance without Redis: the same limits, but not shared with other instances and
// forgotten on restart.
func NewMemory(prefix string) *Limiter {
	return &Limiter{limiter: newMemoryGCRA(time.Now), prefix: prefix}
}

// Allow charges one event to every check, but only when every rule of every check still
// has room: a request refused by one limit (say, the per-phone one) costs nothing from
// the others, so a person retrying too early does not burn the shared budgets. It
// returns 0 when the event was charged, or how long to wait. The peek and the charge
// are two steps, so under heavy concurrency a few requests may be refused where a
// strictly atomic limiter would have let them through; never the reverse beyond the
// burst, since each charge is itself atomic (in Redis, or under the memory's lock).
func (l *Limiter) Allow(ctx context.Context, checks ...Check) (retryAfter time.Duration, err error) {
	return l.AllowN(ctx, 1, checks...)
}

// ErrOverBurst means a cost larger than a rule's burst: it can never be allowed.
var ErrOverBurst = errors.New("cost exceeds the burst of a rate limit")

// AllowN is Allow for n events at once (say, n phone numbers looked up in one request).
func (l *Limiter) AllowN(ctx context.Context, n int, checks ...Check) (retryAfter time.Duration, err error) {
	for _, c := range checks {
		for _, r := range c.Rules {
			if n > r.burst() {
				return 0, ErrOverBurst
			}
			res, err := l.limiter.AllowN(ctx, l.key(c.Key, r), r.limit(), 0)
			if err != nil {
				return 0, fmt.Errorf("rate limit %s: %w", c.Key, err)
			}
			if res.Remaining < n {
				return waitFor(res, r, n), nil
			}
		}
	}
	for _, c := range checks {
		for _, r := range c.Rules {
			res, err := l.limiter.AllowN(ctx, l.key(c.Key, r), r.limit(), n)
			if err != nil {
				return 0, fmt.Errorf("rate limit %s: %w", c.Key, err)
			}
			if res.Allowed == 0 {
				return waitFor(res, r, n), nil
			}
		}
	}
	return 0, nil
}

// waitFor is how long until n more events fit the rule. A peek (cost 0) reports no
// RetryAfter, so it is derived from the GCRA state: n events fit once the bucket's
// backlog (ResetAfter) is down to (burst - n) emission intervals.
func waitFor(res *redis_rate.Result, r Rule, n int) time.Duration {
	if res.RetryAfter > 0 {
		return res.RetryAfter
	}
	interval := r.Window / time.Duration(r.Events)
	if wait := res.ResetAfter - time.Duration(r.burst()-n)*interval; wait > 0 {
		return wait
	}
	return time.Second
}

// key keeps each rule of a check in its own counter, so "1 per minute" and "5 per hour"
// on one phone do not share a GCRA state.
func (l *Limiter) key(key string, r Rule) string {
	return fmt.Sprintf("%s%s:%d/%d/%d", l.prefix, key, r.Events, r.Window.Milliseconds(), r.burst())
}

// ClientKey is the rate-limit identity of a client address: the address itself for IPv4,
// its /64 network for IPv6 (one subscriber usually holds a whole /64). An address that
// does not parse is used as it is.
func ClientKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	prefix, _ := addr.Prefix(64)
	return prefix.String()
}

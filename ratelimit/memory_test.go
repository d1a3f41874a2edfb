package ratelimit

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/caddy-messenger/messenger/internal/sweep"
)

// newClockedGCRA returns a memoryGCRA on a clock that the returned func moves (for
// tests that make no calls in parallel). The clock starts 1000s after the script's
// epoch, where the figures of TestMemoryGCRAFigures are exact in floating point.
func newClockedGCRA() (*memoryGCRA, func(time.Duration)) {
	now := time.Unix(jan2017+1000, 0)
	m := newMemoryGCRA(func() time.Time { return now })
	return m, func(d time.Duration) { now = now.Add(d) }
}

// size is how many keys the memory holds, reset or not.
func (m *memoryGCRA) size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tats)
}

// TestMemoryGCRAFigures walks the script by hand: 2 per 2s, burst 2, so one event per
// second.
func TestMemoryGCRAFigures(t *testing.T) {
	m, advance := newClockedGCRA()
	limit := redis_rate.Limit{Rate: 2, Period: 2 * time.Second, Burst: 2}
	for _, step := range []struct {
		name    string
		advance time.Duration
		n       int
		want    redis_rate.Result
	}{
		{"first event", 0, 1, redis_rate.Result{Allowed: 1, Remaining: 1, RetryAfter: -1, ResetAfter: time.Second}},
		{"second event fills the burst", 0, 1, redis_rate.Result{Allowed: 1, Remaining: 0, RetryAfter: -1, ResetAfter: 2 * time.Second}},
		{"third event is refused", 0, 1, redis_rate.Result{Allowed: 0, Remaining: 0, RetryAfter: time.Second, ResetAfter: 2 * time.Second}},
		{"a peek at a full bucket is allowed with nothing left", 0, 0, redis_rate.Result{Allowed: 0, Remaining: 0, RetryAfter: -1, ResetAfter: 2 * time.Second}},
		{"half a second on, still refused", 500 * time.Millisecond, 1, redis_rate.Result{Allowed: 0, Remaining: 0, RetryAfter: 500 * time.Millisecond, ResetAfter: 1500 * time.Millisecond}},
		{"a second on, allowed", 500 * time.Millisecond, 1, redis_rate.Result{Allowed: 1, Remaining: 0, RetryAfter: -1, ResetAfter: 2 * time.Second}},
		{"fully reset, a peek sees the whole burst", 3 * time.Second, 0, redis_rate.Result{Allowed: 0, Remaining: 2, RetryAfter: -1, ResetAfter: 0}},
		{"more than the burst never fits and charges nothing", 0, 3, redis_rate.Result{Allowed: 0, Remaining: 0, RetryAfter: time.Second, ResetAfter: 0}},
		{"the whole burst at once", 0, 2, redis_rate.Result{Allowed: 2, Remaining: 0, RetryAfter: -1, ResetAfter: 2 * time.Second}},
		// Remaining is cut to 1, as Redis cuts a Lua number.
		{"1.5 events of room", 1500 * time.Millisecond, 0, redis_rate.Result{Allowed: 0, Remaining: 1, RetryAfter: -1, ResetAfter: 500 * time.Millisecond}},
	} {
		t.Run(step.name, func(t *testing.T) {
			advance(step.advance)
			got, err := m.AllowN(ctxT(t), "k", limit, step.n)
			if err != nil {
				t.Fatal(err)
			}
			step.want.Limit = limit
			if *got != step.want {
				t.Errorf("n=%d: got %+v, want %+v", step.n, *got, step.want)
			}
		})
	}
}

// TestMemoryMatchesRedis runs one sequence of calls through redis_rate and the memory
// port, each call on both right after the other, and compares the answers. The clocks
// differ by the time a call takes, so counts may differ by one where the exact figure
// is a whole number (a float a hair under it truncates to one less) and durations by a
// few milliseconds.
func TestMemoryMatchesRedis(t *testing.T) {
	redisL, _, prefix := newLimiter(t)
	memL := NewMemory(prefix)
	ctx := ctxT(t)
	a := redis_rate.Limit{Rate: 10, Period: 10 * time.Second, Burst: 5}
	b := redis_rate.Limit{Rate: 3, Period: time.Hour, Burst: 3}
	c := redis_rate.Limit{Rate: 100, Period: time.Minute, Burst: 100}
	d := redis_rate.Limit{Rate: 7, Period: 1500 * time.Millisecond, Burst: 7}
	for i, step := range []struct {
		key   string
		limit redis_rate.Limit
		n     int
	}{
		{"a", a, 0}, {"a", a, 1}, {"a", a, 2}, {"a", a, 0}, {"a", a, 2}, {"a", a, 1}, {"a", a, 0}, {"a", a, 3}, {"a", a, 6},
		{"b", b, 2}, {"b", b, 1}, {"b", b, 1}, {"b", b, 0},
		{"c", c, 50}, {"c", c, 0}, {"c", c, 50}, {"c", c, 1}, {"c", c, 0},
		{"d", d, 3}, {"d", d, 3}, {"d", d, 1}, {"d", d, 1}, {"d", d, 0},
	} {
		// Repeated steps get Go's #01 suffix.
		t.Run(step.key+" n="+strconv.Itoa(step.n), func(t *testing.T) {
			key := prefix + step.key
			want, err := redisL.limiter.AllowN(ctx, key, step.limit, step.n)
			if err != nil {
				t.Fatalf("redis: %v", err)
			}
			got, err := memL.limiter.AllowN(ctx, key, step.limit, step.n)
			if err != nil {
				t.Fatalf("memory: %v", err)
			}
			if got.Limit != want.Limit || got.Allowed != want.Allowed || abs(got.Remaining-want.Remaining) > 1 ||
				!near(got.RetryAfter, want.RetryAfter) || !near(got.ResetAfter, want.ResetAfter) {
				t.Errorf("step %d: memory %+v, redis %+v", i, *got, *want)
			}
		})
	}
}

func abs(n int) int { return max(n, -n) }

// near reports whether two durations agree within the time a call takes (and are both
// -1, "allowed", or neither).
func near(a, b time.Duration) bool {
	if a == -1 || b == -1 {
		return a == b
	}
	return abs(int(a-b)) <= int(50*time.Millisecond)
}

// TestMemorySweepsResetKeys: keys nobody charges again are dropped once their state has
// fully reset, so memory follows the live keys, not every key there ever was.
func TestMemorySweepsResetKeys(t *testing.T) {
	m, advance := newClockedGCRA()
	// Burst 2, so that the one event is not the whole burst: with this fake clock's
	// fractions, the script's float figures for a first event of exactly the burst can
	// fall a hair short and refuse it.
	limit := redis_rate.Limit{Rate: 2, Period: 2 * time.Second, Burst: 2}
	// One event on each of many keys, 10ms apart: about 100 keys are live at a time.
	const keys = 20 * sweep.Every
	largest := 0
	for i := range keys {
		if res, err := m.AllowN(ctxT(t), "ip:"+strconv.Itoa(i), limit, 1); err != nil || res.Allowed != 1 {
			t.Fatalf("AllowN = %+v, %v", res, err)
		}
		advance(10 * time.Millisecond)
		largest = max(largest, m.size())
	}
	if largest > 2*sweep.Every {
		t.Errorf("memory grew to %d keys for about 100 live ones (%d keys in all)", largest, keys)
	}
	// Once all have reset, the next sweep leaves nothing; peeks store nothing.
	advance(2 * time.Second)
	for range sweep.Every {
		if _, err := m.AllowN(ctxT(t), "peek", limit, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.size(); n != 0 {
		t.Errorf("%d keys left after all had reset and a sweep", n)
	}
}

// TestParallelNeverOverBurst: many parallel requests on one key get at most the burst,
// each charge being atomic.
func TestParallelNeverOverBurst(t *testing.T) {
	forEachBackend(t, func(t *testing.T, l *Limiter) {
		c := Check{Key: "ip:1.2.3.4", Rules: []Rule{{Events: 10, Window: time.Hour}}}
		var allowed atomic.Int32
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if ra, err := l.Allow(ctxT(t), c); err != nil {
					t.Error(err)
				} else if ra == 0 {
					allowed.Add(1)
				}
			})
		}
		wg.Wait()
		if n := allowed.Load(); n == 0 || n > 10 {
			t.Errorf("%d of 50 parallel requests allowed, want 1 to 10", n)
		}
	})
}

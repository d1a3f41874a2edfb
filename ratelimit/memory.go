package ratelimit

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/caddy-messenger/messenger/internal/sweep"
)

// memoryGCRA is redis_rate v10's AllowN kept in process memory: its Lua script ported
// line by line (float seconds, the same Result), so that a Limiter decides and answers
// alike on either. Safe for concurrent use; one lock makes each call atomic, as the
// script is in Redis.
type memoryGCRA struct {
	now    func() time.Time // time.Now; tests move it by hand
	mu     sync.Mutex
	tats   map[string]float64 // each key's theoretical arrival time, in the script's seconds
	sweeps sweep.Countdown
}

func newMemoryGCRA(now func() time.Time) *memoryGCRA {
	return &memoryGCRA{now: now, tats: map[string]float64{}}
}

// jan2017 is the script's epoch: seconds counted from it keep microseconds in a float64
// until 2048.
const jan2017 = 1483228800

// seconds is t as the script sees Redis TIME: seconds since jan2017, to the microsecond.
func seconds(t time.Time) float64 {
	return float64(t.Unix()-jan2017) + float64(t.Nanosecond()/1000)/1e6
}

// AllowN is the allowN script of redis_rate v10 (lua.go): GET becomes a map lookup, and
// a key whose time has come (tat <= now, where the script's SET ... EX would have let it
// lapse or would treat it as absent anyway) is deleted instead of kept.
func (m *memoryGCRA) AllowN(_ context.Context, key string, limit redis_rate.Limit, n int) (*redis_rate.Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := seconds(m.now())
	if m.sweeps.Due() {
		for k, tat := range m.tats {
			if tat <= now {
				delete(m.tats, k)
			}
		}
		m.sweeps.Swept(len(m.tats))
	}

	// redis_rate passes Period as float seconds; the script divides as Lua does, in floats.
	emissionInterval := limit.Period.Seconds() / float64(limit.Rate)
	increment := emissionInterval * float64(n)
	burstOffset := emissionInterval * float64(limit.Burst)

	tat, ok := m.tats[key]
	if !ok || tat <= now {
		delete(m.tats, key)
		tat = now
	}
	newTat := tat + increment
	allowAt := newTat - burstOffset
	diff := now - allowAt
	remaining := diff / emissionInterval

	if remaining < 0 {
		return &redis_rate.Result{
			Limit:      limit,
			Allowed:    0,
			Remaining:  0,
			RetryAfter: luaSeconds(-diff),
			ResetAfter: luaSeconds(tat - now),
		}, nil
	}
	resetAfter := newTat - now
	if resetAfter > 0 {
		m.tats[key] = newTat
	}
	return &redis_rate.Result{
		Limit:   limit,
		Allowed: n,
		// Redis turns a Lua number into an integer reply by truncation.
		Remaining:  int(remaining),
		RetryAfter: -1,
		ResetAfter: luaSeconds(resetAfter),
	}, nil
}

// luaSeconds is a duration as redis_rate reads it back from the script: Lua's tostring
// keeps 14 significant digits, and the seconds are then cut to whole nanoseconds.
func luaSeconds(s float64) time.Duration {
	s, _ = strconv.ParseFloat(strconv.FormatFloat(s, 'g', 14, 64), 64)
	if s == -1 {
		return -1
	}
	return time.Duration(s * float64(time.Second))
}

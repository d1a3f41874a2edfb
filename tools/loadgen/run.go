package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// result is one measured run.
type result struct {
	mode      string
	conns     int
	elapsed   time.Duration
	okN       int
	failN     int
	lat       []time.Duration // of OK answers, sorted
	failures  map[string]int  // failure text -> count
	exhausted bool            // the generator ran dry before the time was up
	late      int             // open loop: requests started more than 10 ms after they were due
	retried   int             // sent twice (-retry-reused)
}

// stats is what one connection collects.
type stats struct {
	ok, fail  int
	lat       []time.Duration
	failures  map[string]int
	exhausted bool
	late      int
	retried   int
}

func (s *stats) record(a answer, d time.Duration) {
	if a.retried {
		s.retried++
	}
	if a.ok {
		s.ok++
		s.lat = append(s.lat, d)
		return
	}
	s.fail++
	if s.failures == nil {
		s.failures = map[string]int{}
	}
	key := a.body
	if len(key) > 160 {
		key = key[:160]
	}
	s.failures[key]++
}

// load runs gen for dur: closed loop (each connection sends its next request when the
// last is answered) when rate is 0, else open loop at rate requests per second, with
// latency measured from when each request was due.
func (e *env) load(ctx context.Context, gen generator, dur time.Duration, rate float64) result {
	conns := e.o.conns
	all := make([]stats, conns)
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	mode := "closed"
	if rate <= 0 {
		for i := range conns {
			wg.Go(func() {
				s := &all[i]
				for ctx.Err() == nil && time.Now().Before(deadline) {
					body, ok := gen()
					if !ok {
						s.exhausted = true
						return
					}
					t0 := time.Now()
					a := e.post(ctx, body)
					s.record(a, time.Since(t0))
				}
			})
		}
	} else {
		mode = fmt.Sprintf("open@%g/s", rate)
		total := int(rate * dur.Seconds())
		due := make(chan time.Time, min(total+1, 1<<20))
		go func() {
			defer close(due)
			interval := time.Duration(float64(time.Second) / rate)
			for i := range total {
				t := start.Add(time.Duration(i) * interval)
				if wait := time.Until(t); wait > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(wait):
					}
				}
				select {
				case due <- t:
				case <-ctx.Done():
					return
				}
			}
		}()
		for i := range conns {
			wg.Go(func() {
				s := &all[i]
				for t := range due {
					if ctx.Err() != nil {
						return
					}
					body, ok := gen()
					if !ok {
						s.exhausted = true
						continue
					}
					if time.Since(t) > 10*time.Millisecond {
						s.late++
					}
					a := e.post(ctx, body)
					s.record(a, time.Since(t))
				}
			})
		}
	}
	wg.Wait()
	r := result{mode: mode, conns: conns, elapsed: time.Since(start), failures: map[string]int{}}
	for _, s := range all {
		r.okN += s.ok
		r.failN += s.fail
		r.lat = append(r.lat, s.lat...)
		r.exhausted = r.exhausted || s.exhausted
		r.late += s.late
		r.retried += s.retried
		for k, v := range s.failures {
			r.failures[k] += v
		}
	}
	slices.Sort(r.lat)
	return r
}

func (r result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.okN+r.failN) / r.elapsed.Seconds()
}

// pct is the q-quantile of the OK latencies in milliseconds.
func (r result) pct(q float64) float64 {
	if len(r.lat) == 0 {
		return 0
	}
	i := min(len(r.lat)-1, int(float64(len(r.lat))*q))
	return ms(r.lat[i])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// samples lists the commonest failures, most frequent first.
func (r result) samples() string {
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range r.failures {
		all = append(all, kv{k, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	var parts []string
	for i, f := range all {
		if i == 3 {
			break
		}
		parts = append(parts, fmt.Sprintf("%dx %s", f.n, f.k))
	}
	return strings.Join(parts, " | ")
}

// String is the case's report: key=value pairs, one line.
func (r result) String() string {
	var maxMS float64
	if len(r.lat) > 0 {
		maxMS = ms(r.lat[len(r.lat)-1])
	}
	s := fmt.Sprintf(" mode=%s conns=%d secs=%.2f requests=%d ok=%d failures=%d req/s=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f",
		r.mode, r.conns, r.elapsed.Seconds(), r.okN+r.failN, r.okN, r.failN, r.rate(), r.pct(0.50), r.pct(0.99), maxMS)
	if r.exhausted {
		s += " exhausted=true"
	}
	if r.retried > 0 {
		s += fmt.Sprintf(" retried=%d", r.retried)
	}
	if r.late > 0 {
		s += fmt.Sprintf(" late=%d", r.late)
	}
	if r.failN > 0 {
		s += fmt.Sprintf(" failure_samples=%q", r.samples())
	}
	return s
}

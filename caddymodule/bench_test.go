package caddymodule_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchLimits lift the code-sending limits out of the way of a load test.
const benchLimits = "rate_limit otp_phone 1000 1m\n\t\trate_limit otp_ip 1000000 1m\n\t\trate_limit otp_global 1000000 1m"

// latencies collects request durations from parallel goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// report adds req/s, p50 and p99 (milliseconds) to the benchmark's output.
func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	slices.Sort(l.d)
	if len(l.d) == 0 {
		return
	}
	b.ReportMetric(float64(len(l.d))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(l.d[len(l.d)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(l.d[len(l.d)*99/100].Microseconds())/1000, "p99-ms")
}

// randomPhone is a valid Indian mobile number, different on every call (almost surely).
func randomPhone() string { return fmt.Sprintf("9198%08d", rand.IntN(100_000_000)) }

func post(client *http.Client, fields url.Values) error {
	resp, err := client.Post(apiURL, "application/x-www-form-urlencoded", strings.NewReader(fields.Encode()))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var buf [512]byte
	n, _ := resp.Body.Read(buf[:])
	if !strings.Contains(string(buf[:n]), `"result":"OK"`) {
		return fmt.Errorf("answer %s", buf[:n])
	}
	return nil
}

// BenchmarkLoginSendCode measures OTP requests (login without a code) through Caddy:
// rate limits and code issue in Redis, delivery to a webhook. 32 concurrent clients.
func BenchmarkLoginSendCode(b *testing.B) {
	e := startEnv(b, options{extra: benchLimits})
	var lat latencies
	b.SetParallelism(16) // x GOMAXPROCS(2) = 32 clients
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t0 := time.Now()
			if err := post(e.tester.Client, url.Values{"op": {"login"}, "phone": {randomPhone()}, "appid": {"a"}}); err != nil {
				b.Error(err)
				return
			}
			lat.add(time.Since(t0))
		}
	})
	lat.report(b, time.Since(start))
}

// BenchmarkLoginVerify measures code checks that succeed: the code check in Redis, the
// mesibo useradd (to the in-process fake) and the users/tokens transaction. The codes are
// issued before the clock starts. 32 concurrent clients.
func BenchmarkLoginVerify(b *testing.B) {
	e := startEnv(b, options{extra: benchLimits})
	type login struct{ phone, code string }
	logins := make(chan login, b.N)
	for range b.N {
		p := randomPhone()
		if err := post(e.tester.Client, url.Values{"op": {"login"}, "phone": {p}, "appid": {"a"}}); err != nil {
			b.Fatal(err)
		}
		logins <- login{p, e.hook.lastCode(p)}
	}
	close(logins)
	var lat latencies
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l := <-logins
			t0 := time.Now()
			if err := post(e.tester.Client, url.Values{"op": {"login"}, "phone": {l.phone}, "appid": {"a"}, "otp": {l.code}}); err != nil {
				b.Error(err)
				return
			}
			lat.add(time.Since(t0))
		}
	})
	lat.report(b, time.Since(start))
}

package caddymodule_test

import (
	"bytes"
	"fmt"
	"io"
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
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if !bytes.Contains(body, []byte(`"result":"OK"`)) {
		return fmt.Errorf("answer %.300s", body)
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

// seedUsers writes n registered users straight into the database (phones 9197000000xx...)
// and returns the first one's token; every user has every other in its contacts.
func seedUsers(b *testing.B, e *env, n, contacts int) (token string, phones []string) {
	b.Helper()
	for i := range contacts {
		phones = append(phones, fmt.Sprintf("9197%08d", i))
	}
	tx, err := e.db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := tx.Exec("INSERT INTO users (uid, phone, cc, name, status, ts) VALUES (?, ?, 91, ?, 'hi', ?)",
			i+1, phones[i], fmt.Sprint("User ", i), time.Now().Unix()-int64(n-i)); err != nil {
			b.Fatal(err)
		}
	}
	token = strings.Repeat("b", 40)
	tx.Exec("INSERT INTO tokens (uid, token, expirytime) VALUES (1, ?, '2037-01-01')", token)
	for _, p := range phones {
		tx.Exec("INSERT INTO contacts (uid, phone) VALUES (1, ?)", p)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	return token, phones
}

// statements is the server's count of statements so far (all clients).
func statements(b *testing.B, e *env) int {
	var name string
	var n int
	if err := e.db.QueryRow("SHOW GLOBAL STATUS LIKE 'Questions'").Scan(&name, &n); err != nil {
		b.Fatal(err)
	}
	return n
}

// benchAPI runs fields through the API from 32 clients and reports req/s, p50, p99 and
// the SQL statements one request runs (measured over 20 sequential requests first; the
// SHOW STATUS query itself and the outbox worker's polls add about 1).
func benchAPI(b *testing.B, e *env, fields url.Values) {
	before := statements(b, e)
	for range 20 {
		if err := post(e.tester.Client, fields); err != nil {
			b.Fatal(err)
		}
	}
	perRequest := float64(statements(b, e)-before-1) / 20
	var lat latencies
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t0 := time.Now()
			if err := post(e.tester.Client, fields); err != nil {
				b.Error(err)
				return
			}
			lat.add(time.Since(t0))
		}
	})
	lat.report(b, time.Since(start))
	b.ReportMetric(perRequest, "sql/op")
}

// BenchmarkGetContactsDelta: getcontacts without phones (a delta sync from ts 0) for a
// user with 1,000 contacts of whom 50 are registered.
func BenchmarkGetContactsDelta(b *testing.B) {
	e := startEnv(b, options{})
	token, _ := seedUsers(b, e, 51, 1000)
	benchAPI(b, e, url.Values{"op": {"getcontacts"}, "token": {token}, "ts": {"0"}})
}

// BenchmarkGetContacts1000: getcontacts with 1,000 phones (already known, so free of the
// discovery budget), 50 of them registered.
func BenchmarkGetContacts1000(b *testing.B) {
	e := startEnv(b, options{extra: "max_body_size 1MB"})
	token, phones := seedUsers(b, e, 51, 1001)
	benchAPI(b, e, url.Values{"op": {"getcontacts"}, "token": {token}, "phones": {strings.Join(phones[1:], ",")}})
}

// BenchmarkProfile: a profile change of a user whom nobody has as a contact.
func BenchmarkProfile(b *testing.B) {
	e := startEnv(b, options{})
	token, _ := seedUsers(b, e, 1, 1)
	benchAPI(b, e, url.Values{"op": {"profile"}, "token": {token}, "status": {"busy"}})
}

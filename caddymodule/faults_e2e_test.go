package caddymodule_test

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDatabaseOutage: with MariaDB unreachable, ops answer DBERROR quickly, requests do
// not pile up goroutines, and the API recovers by itself when the database is back.
func TestDatabaseOutage(t *testing.T) {
	if !strings.Contains(testenvDSNHost(), "127.0.0.1:3306") {
		t.Skip("the outage proxy assumes MariaDB on 127.0.0.1:3306")
	}
	e := startEnv(t, options{extra: roomy, dbProxy: true})
	token := e.login(form, "+91 98123 58001", "919812358001")
	expectOK(t, e.call(form, map[string]any{"op": "getcontacts", "token": token}), "getcontacts")

	e.dbProxy.cut()
	before := runtime.NumGoroutine()
	start := time.Now()
	var wg sync.WaitGroup
	codes := make(chan string, 40)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := e.call(form, map[string]any{"op": "getcontacts", "token": token})
			codes <- a.str("error")
		}()
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != "DBERROR" {
			t.Fatalf("during the outage: %q, want DBERROR", code)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("40 requests took %s during the outage", took)
	}
	time.Sleep(200 * time.Millisecond)
	if after := runtime.NumGoroutine(); after > before+20 {
		t.Fatalf("goroutines %d -> %d: requests pile up", before, after)
	}

	e.dbProxy.restore()
	waitFor(t, "recovery", func() bool {
		return e.call(form, map[string]any{"op": "getcontacts", "token": token}).str("result") == "OK"
	})
}

// TestMaxDBConnections: max_db_connections bounds the connections an instance has open
// to MySQL at once; requests beyond it wait for a free one and are answered.
func TestMaxDBConnections(t *testing.T) {
	if !strings.Contains(testenvDSNHost(), "127.0.0.1:3306") {
		t.Skip("the counting proxy assumes MariaDB on 127.0.0.1:3306")
	}
	e := startEnv(t, options{extra: roomy + "\n\t\tmax_db_connections 2", dbProxy: true})
	token := e.login(form, "+91 98123 58101", "919812358101")
	e.dbProxy.resetPeak() // the schema migration had a connection of its own
	var wg sync.WaitGroup
	results := make(chan string, 40)
	for range 40 {
		wg.Go(func() {
			results <- e.call(form, map[string]any{"op": "getcontacts", "token": token, "ts": 0}).str("result")
		})
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r != "OK" {
			t.Fatalf("a request beyond the limit answered %q, want OK", r)
		}
	}
	// Without the option the same requests open 32 (seen when this test was written).
	if peak := e.dbProxy.resetPeak(); peak < 1 || peak > 2 {
		t.Fatalf("%d connections open at once to MySQL, want 1 or 2", peak)
	}
}

// TestRedisOutageDiscovery: by default contact look-ups fail closed without Redis;
// contact_discovery { fail_open } lets them through. Ops that need no Redis keep working.
func TestRedisOutageDiscovery(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		extra := roomy
		if failOpen {
			extra += "\n\t\tcontact_discovery {\n\t\t\tfail_open\n\t\t}"
		}
		e := startEnv(t, options{extra: extra, redisURL: "redis://127.0.0.1:1/0"})
		// Redis is down from the start, so the user is seeded directly.
		e.db.Exec("INSERT INTO users (uid, phone, cc, ts) VALUES (1, 919812358002, 91, 1)")
		token := strings.Repeat("c", 40)
		e.db.Exec("INSERT INTO tokens (uid, token, expirytime) VALUES (1, ?, '2037-01-01')", token)
		a := e.call(form, map[string]any{"op": "getcontacts", "token": token, "phones": "+91 98123 58003"})
		if failOpen {
			expectOK(t, a, "getcontacts")
		} else {
			expectFail(t, a, "TEMPFAIL")
		}
		expectOK(t, e.call(form, map[string]any{"op": "profile", "token": token, "name": "Ada"}), "profile")
		expectOK(t, e.call(form, map[string]any{"op": "getcontacts", "token": token, "ts": 0}), "getcontacts")
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// generator returns the body of the next request; false when it has no more work.
// It is called from every connection at once.
type generator func() (string, bool)

// caseDef is one case: how to make its requests.
type caseDef struct {
	otp bool // needs the webhook receiver
	// gen makes the requests of a token case (nil for otp-verify, which prepares codes).
	gen func(e *env) generator
	// users, for the profile cases, are the first uid and the number of users whose
	// tokens the requests pick at random.
	users [2]int
}

var caseOrder = []string{"otp-request", "otp-verify", "getcontacts-0", "getcontacts-delta", "getcontacts-1000", "getgroup", "profile", "profile-50", "body"}

var caseTable = map[string]caseDef{
	"otp-request": {otp: true, gen: func(e *env) generator {
		return func() (string, bool) {
			return form("op", "login", "phone", "+"+randomPhone(), "appid", e.o.appID), true
		}
	}},
	"otp-verify":    {otp: true},
	"getcontacts-0": {gen: constant(form("op", "getcontacts", "token", tokenOf(mainUID), "ts", "0"))},
	// The apps' periodic sync: what changed in the last minute.
	"getcontacts-delta": {gen: func(*env) generator {
		body := form("op", "getcontacts", "token", tokenOf(mainUID), "ts", strconv.FormatInt(time.Now().Unix()-60, 10))
		return func() (string, bool) { return body, true }
	}},
	"getcontacts-1000": {gen: func(e *env) generator {
		body := form("op", "getcontacts", "token", tokenOf(mainUID), "phones", strings.Join(contactPhones()[:e.o.phones], ","))
		return func() (string, bool) { return body, true }
	}},
	"getgroup":   {gen: constant(form("op", "getgroup", "token", tokenOf(mainUID), "gid", strconv.Itoa(groupGID)))},
	"profile":    {gen: profileOf(loneUID, nLone), users: [2]int{loneUID, nLone}},
	"profile-50": {gen: profileOf(2, nRegistered), users: [2]int{2, nRegistered}},
	"body": {gen: func(e *env) generator {
		return func() (string, bool) { return e.o.body, e.o.body != "" }
	}},
}

func constant(body string) func(*env) generator {
	return func(*env) generator { return func() (string, bool) { return body, true } }
}

// profileOf changes the status of a random one of the n users from uid on, so that
// requests do not queue for one row's lock; every request is a real change.
func profileOf(uid, n int) func(*env) generator {
	return func(*env) generator {
		return func() (string, bool) {
			return form("op", "profile", "token", tokenOf(uid+rand.IntN(n)), "status", "load "+strconv.Itoa(rand.IntN(1_000_000))), true
		}
	}
}

// randomPhone is a valid Indian mobile number (digits), 9198 and 8 random digits.
func randomPhone() string { return fmt.Sprintf("9198%08d", rand.IntN(100_000_000)) }

// codes is a pool of prepared otp-verify requests.
type codes chan string

func (c codes) gen() generator {
	return func() (string, bool) {
		select {
		case b := <-c:
			return b, true
		default:
			return "", false
		}
	}
}

// prepareCodes requests codes for n distinct fresh numbers, with every connection, and
// returns the login requests that exchange them.
func (e *env) prepareCodes(ctx context.Context, n int) (codes, error) {
	out := make(codes, n)
	phones := make(chan string, n)
	seen := make(map[string]bool, n)
	for len(seen) < n {
		if p := randomPhone(); !seen[p] {
			seen[p] = true
			phones <- p
		}
	}
	close(phones)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range e.o.conns {
		wg.Go(func() {
			for p := range phones {
				if ctx.Err() != nil {
					return
				}
				a := e.post(ctx, form("op", "login", "phone", "+"+p, "appid", e.o.appID))
				code, got := e.hook.take(p)
				if !a.ok || !got {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("requesting a code for %s: %s (code delivered: %v)", p, a.body, got)
					}
					mu.Unlock()
					continue
				}
				out <- form("op", "login", "phone", "+"+p, "appid", e.o.appID, "otp", code)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(out) < n {
		return nil, fmt.Errorf("%d of %d codes failed, first: %w", n-len(out), n, firstErr)
	}
	return out, nil
}

// runCase probes, warms up, counts SQL statements (-sql), runs the load and returns the
// report line, and false when the case failed.
func (e *env) runCase(ctx context.Context, name string) (string, bool) {
	def := caseTable[name]
	head := "case=" + name
	failLine := func(err error) (string, bool) { return fmt.Sprintf("%s error=%q", head, err.Error()), false }
	if def.otp {
		if err := e.startHook(); err != nil {
			return failLine(err)
		}
	}

	var gen generator
	extra := ""
	if def.gen != nil {
		gen = def.gen(e)
		body, _ := gen()
		if a := e.post(ctx, body); !a.ok {
			if name == "getgroup" && strings.Contains(a.body, `"BADOP"`) {
				return head + " skipped=BADOP", true
			}
			return failLine(fmt.Errorf("probe request failed: %s", a.body))
		}
		e.load(ctx, gen, e.o.warmup, 0) // warm-up: connections, caches, the pool
	} else { // otp-verify: the load needs codes requested beforehand
		n := e.o.codes
		if n == 0 && e.o.rate > 0 {
			n = int(e.o.rate*e.o.duration.Seconds()*1.05) + 100
		}
		if n == 0 {
			// Calibrate (and warm up): how fast do codes go? Then prepare enough for -d.
			pool, err := e.prepareCodes(ctx, 50*e.o.conns)
			if err != nil {
				return failLine(err)
			}
			r := e.load(ctx, pool.gen(), e.o.duration, 0)
			if r.failN > 0 {
				return failLine(fmt.Errorf("calibration: %d failures, e.g. %s", r.failN, r.samples()))
			}
			n = int(r.rate()*e.o.duration.Seconds()*1.3) + 200
			extra += fmt.Sprintf(" calibrated_req/s=%.0f", r.rate())
		}
		if e.o.sqlN > 0 {
			pool, err := e.prepareCodes(ctx, e.o.sqlN)
			if err != nil {
				return failLine(err)
			}
			e.drainOutbox(ctx, time.Minute)
			perReq, err := e.sqlPerRequest(ctx, e.o.sqlN, pool.gen())
			if err != nil {
				return failLine(fmt.Errorf("sql count: %w", err))
			}
			extra += perReq.String()
		}
		t0 := time.Now()
		pool, err := e.prepareCodes(ctx, n)
		if err != nil {
			return failLine(err)
		}
		gen = pool.gen()
		extra += fmt.Sprintf(" codes=%d prepared_in=%.1fs", n, time.Since(t0).Seconds())
	}
	if def.gen != nil && e.o.sqlN > 0 {
		e.drainOutbox(ctx, time.Minute)
		perReq, err := e.sqlPerRequest(ctx, e.o.sqlN, gen)
		if err != nil {
			return failLine(fmt.Errorf("sql count: %w", err))
		}
		extra += perReq.String()
	}

	stopProfile := e.cpuProfile(ctx, name)
	cpu0 := sampleCPU(e.o.watch)
	stmts := e.statementsDuring(ctx)
	r := e.load(ctx, gen, e.o.duration, e.o.rate)
	extra += stmts(r.okN+r.failN) + cpuReport(e.o.watch, cpu0, sampleCPU(e.o.watch))
	if err := stopProfile(); err != nil {
		extra += fmt.Sprintf(" profile_error=%q", err.Error())
	}
	line := head + r.String() + extra
	if e.db != nil {
		if depth := outboxDepth(ctx, e.db); depth > 0 {
			left, took := e.drainOutbox(ctx, time.Minute)
			line += fmt.Sprintf(" outbox_after=%d outbox_drained_in=%.1fs outbox_left=%d", depth, took.Seconds(), left)
		}
	}
	return line, r.failN == 0 && r.okN > 0
}

// drainOutbox waits (at most max) until the outbox is empty and returns what is left and
// how long it took.
func (e *env) drainOutbox(ctx context.Context, limit time.Duration) (int, time.Duration) {
	if e.db == nil {
		return 0, 0
	}
	start := time.Now()
	for {
		d := outboxDepth(ctx, e.db)
		if d <= 0 || time.Since(start) > limit || ctx.Err() != nil {
			return max(d, 0), time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cpuProfile starts fetching a CPU profile of caddy (Go's pprof through Caddy's admin
// endpoint) for the measured run, when -cpuprofile is set; the returned func waits for it.
func (e *env) cpuProfile(ctx context.Context, name string) func() error {
	if e.o.profile == "" {
		return func() error { return nil }
	}
	secs := max(1, int(e.o.duration.Seconds())-1)
	out := strings.TrimSuffix(e.o.profile, ".pprof") + "-" + name + ".pprof"
	errc := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			strings.TrimSuffix(e.o.admin, "/")+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), nil)
		if err != nil {
			errc <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			errc <- err
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("profile: HTTP %d: %.200s", resp.StatusCode, data)
		}
		if err == nil {
			err = os.WriteFile(out, data, 0o644)
		}
		errc <- err
	}()
	return func() error { return <-errc }
}

// statementsDuring counts the server's database user's statements from now until the
// returned func is called with the number of requests sent meanwhile, which reports them
// per request (" sql_load/req=N"; "" when they cannot be counted). Under load the outbox
// worker's rounds are shared by many requests, so this can be lower than -sql's count.
func (e *env) statementsDuring(ctx context.Context) func(requests int) string {
	none := func(int) string { return "" }
	if e.db == nil {
		return none
	}
	conn, err := e.db.Conn(ctx)
	if err != nil {
		return none
	}
	before, err := e.snapshot(ctx, conn)
	if err != nil || before.user < 0 {
		conn.Close()
		return none
	}
	return func(requests int) string {
		defer conn.Close()
		after, err := e.snapshot(ctx, conn)
		if err != nil || after.user < 0 || requests == 0 {
			return ""
		}
		const own = 2 // the SELECT of the first snapshot and the SHOW of the second
		return fmt.Sprintf(" sql_load/req=%.2f", max(0, float64(after.user-before.user-own)/float64(requests)))
	}
}

// wrkScript is a wrk script sending a token case's requests (the otp cases need
// loadgen's own webhook receiver). It checks every answer and reports the ones that are
// not OK as a line "wrk_failures=N".
func wrkScript(name string, e *env) (string, error) {
	c := caseTable[name]
	if c.otp {
		return "", fmt.Errorf("case %s needs loadgen's webhook receiver; wrk cannot run it", name)
	}
	script := `wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local threads = {}
function setup(thread) table.insert(threads, thread); thread:set("id", #threads) end
-- Each thread its own random sequence: unseeded, both would send the same users' changes
-- at the same instants, waiting on each other's row locks.
function init(args) bad = 0; math.randomseed(os.time() * 16 + id) end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"result":"OK"', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("bad") end
  io.write(string.format("wrk_failures=%d\n", n))
end
`
	if c.users[1] > 0 {
		// The same requests as profileOf: a random one of the users, a new status each time.
		return script + fmt.Sprintf(`function request()
  return wrk.format(nil, nil, nil, string.format("op=profile&status=load+%%d&token=loadtoken%%055d", math.random(0, 999999), %d + math.random(0, %d)))
end
`, c.users[0], c.users[1]-1), nil
	}
	body, _ := c.gen(e)()
	return script + "wrk.body = " + strconv.Quote(body) + "\n", nil
}

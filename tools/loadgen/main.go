// Command loadgen is a load generator for the messenger API (PROTOCOL.md), used by
// scripts/load.sh and scripts/reload.sh. Each of -c connections repeats the request of a
// case for -d; one line per case reports req/s, p50, p99, max and failures:
//
//	go run ./internal/cmd/loadgen -url http://127.0.0.1:18080/api.php -case getcontacts-0 -d 10s -c 32
//
// Cases (the request each connection repeats):
//
//	otp-request       login without a code, a fresh random Indian mobile number each time
//	otp-verify        login with the right code; the codes are requested first and caught
//	                  by a webhook receiver inside loadgen (-hook; the server's sender must be
//	                  `sender webhook http://HOOK`)
//	getcontacts-0     getcontacts ts=0 of the seeded user with 1000 contacts, 50 registered
//	                  (a full sync: every contact is looked up in users)
//	getcontacts-delta the same user's sync of what changed in the last minute (the apps'
//	                  periodic sync)
//	getcontacts-1000  getcontacts with those 1000 phones (all already in the list)
//	getgroup          getgroup of the seeded group of 10 members (skipped if BADOP)
//	profile           profile status=... of one of 10,000 users nobody has as a contact
//	profile-50        profile status=... of one of 50 users that 50 others each have as a
//	                  contact (each request queues a notification that the outbox worker
//	                  delivers to mesibo)
//	body              the request body in the file -body, as it is (a form): any op of a
//	                  server set up otherwise (scripts/ref-load.sh's HALF_RATE)
//
// -seed (with -dsn) writes the users, tokens, contacts and group the cases need, and
// 100,000 other users registered days ago (a deployment's users table), straight
// into the server's database. -sql N also counts the SQL statements one request costs:
// the delta of MariaDB's global Questions over N sequential requests, divided by N (the
// outbox worker's background poll, 3 statements per 2 s, is included).
//
// -rate R switches to an open loop: requests are started at R per second whatever the
// answers, and latency is measured from when a request was due, so queueing counts.
//
// -watch name=pid,... reports the CPU each process used during the measured run (and the
// rest of the machine), -cpuprofile saves caddy's CPU profile of it (through the admin
// endpoint's pprof), -redis adds Redis commands per request to -sql's count. -h2c speaks
// HTTP/2 without TLS; -retry-reused resends a request once on a new connection when its
// kept-alive connection died without an answer (what browsers and OkHttp do), counting it
// as retried. LOADGEN_DEBUG=1 prints the raw statement counters.
//
// -wrk-script prints a wrk script sending the requests of a token case, and exits:
// scripts/load.sh also measures each case with wrk (2 threads), the tool of the issue's
// reference figures, which costs the machine far less CPU per request than loadgen.
//
// -stmt FILE, instead of cases, executes the SQL statement in FILE, prepared, with the
// command's arguments bound, from -c connections of -dsn for -d, and reports executions
// per second, rows read or changed per execution, and, with -watch (mariadbd=PID), the
// database's CPU per execution (the database must be on this machine): what one
// statement costs MariaDB without an HTTP server in front of it (docs/performance.md):
//
//	go run ./loadgen -stmt update.sql -dsn 'root@unix(/run/mysqld/mysqld.sock)/messenger_ref' \
//		-c 32 -d 4s -watch mariadbd=$(pidof mariadbd) 'Load Tester' …
//
// Every target must be a loopback address; every loop is bounded by -d and -max.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type options struct {
	url         string
	cases       []string
	duration    time.Duration
	conns       int
	rate        float64
	warmup      time.Duration
	dsn         string
	seed        bool
	sqlN        int
	hook        string
	codes       int
	timeout     time.Duration
	appID       string
	admin       string
	profile     string
	watch       []watched
	h2c         bool
	retryReused bool
	redis       string
	body        string // the body case's request, read from -body
	phones      int
}

func main() {
	var o options
	var cases string
	var maxRun time.Duration
	flag.StringVar(&o.url, "url", "http://127.0.0.1:18080/api.php", "the API's URL (loopback only)")
	flag.StringVar(&cases, "case", "", "case name, or several separated by commas (see the package doc)")
	flag.DurationVar(&o.duration, "d", 10*time.Second, "how long each case runs")
	flag.IntVar(&o.conns, "c", 32, "connections (concurrent clients)")
	flag.Float64Var(&o.rate, "rate", 0, "open loop: start this many requests per second (0 = closed loop)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "closed-loop warm-up before each case, not measured")
	flag.StringVar(&o.dsn, "dsn", "", "MySQL DSN of the server's database, for -seed and -sql")
	flag.BoolVar(&o.seed, "seed", false, "write the data the cases need into the database first (needs -dsn)")
	flag.IntVar(&o.sqlN, "sql", 0, "also count SQL statements (and Redis commands, with -redis) per request over this many sequential requests (needs -dsn)")
	flag.IntVar(&o.phones, "phones", nContacts, "getcontacts-1000: send only the first this many of the 1000 phones")
	flag.StringVar(&o.redis, "redis", "", "host:port of the server's Redis, to count its commands per request with -sql (all clients')")
	flag.StringVar(&o.hook, "hook", "127.0.0.1:18090", "listen address of the OTP webhook receiver (otp cases)")
	flag.IntVar(&o.codes, "codes", 0, "otp-verify: codes to prepare (0 = from a calibration run)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	flag.StringVar(&o.appID, "appid", "com.example.loadgen", "appid of login requests")
	flag.StringVar(&o.admin, "admin", "http://127.0.0.1:12019", "caddy's admin endpoint (loopback), for -cpuprofile")
	flag.StringVar(&o.profile, "cpuprofile", "", "save a CPU profile of caddy during each measured run here (NAME.pprof; the case name is put before .pprof)")
	flag.BoolVar(&o.h2c, "h2c", false, "speak HTTP/2 without TLS (the server needs `protocols h1 h2c`) instead of HTTP/1.1")
	flag.BoolVar(&o.retryReused, "retry-reused", false, "send a request once more when its kept-alive connection died before any answer (as browsers and OkHttp do); counted as retried")
	wrkOnly := flag.Bool("wrk-script", false, "print a wrk script for the -case and exit")
	watch := flag.String("watch", "", "report the CPU use of these processes per run: name=pid,... (pid self = loadgen)")
	flag.DurationVar(&maxRun, "max", 15*time.Minute, "give up after this long in all")
	bodyFile := flag.String("body", "", "the body case's request body: a file holding a form")
	stmtFile := flag.String("stmt", "", "instead of cases: execute the SQL statement in this file (prepared; its arguments are the command's arguments) against -dsn for -d from -c connections")
	flag.Parse()
	if *bodyFile != "" {
		b, err := os.ReadFile(*bodyFile)
		if err != nil {
			log.Fatalf("loadgen: -body: %v", err)
		}
		o.body = strings.TrimSpace(string(b))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, maxRun)
	defer cancel()
	if *stmtFile != "" {
		if o.dsn == "" || o.conns < 1 || o.duration <= 0 || cases != "" {
			log.Fatal("loadgen: -stmt needs -dsn, -c and -d positive, and no -case")
		}
		var err error
		if o.watch, err = parseWatch(*watch); err != nil {
			log.Fatalf("loadgen: %v", err)
		}
		line, err := runStmt(ctx, o, *stmtFile, flag.Args())
		if err != nil {
			log.Fatalf("loadgen: %v", err)
		}
		fmt.Println(line)
		return
	}
	for _, c := range strings.Split(cases, ",") {
		if c = strings.TrimSpace(c); c != "" {
			if _, ok := caseTable[c]; !ok {
				log.Fatalf("loadgen: unknown case %q (known: %s)", c, strings.Join(caseNames(), ", "))
			}
			o.cases = append(o.cases, c)
		}
	}
	if *wrkOnly {
		if len(o.cases) != 1 {
			log.Fatal("loadgen: -wrk-script needs exactly one -case")
		}
		script, err := wrkScript(o.cases[0], &env{o: o})
		if err != nil {
			log.Fatalf("loadgen: %v", err)
		}
		fmt.Print(script)
		return
	}
	if len(o.cases) == 0 && !o.seed {
		log.Fatalf("loadgen: -case is required (known: %s)", strings.Join(caseNames(), ", "))
	}
	if o.phones < 1 || o.phones > nContacts {
		log.Fatalf("loadgen: -phones must be 1..%d", nContacts)
	}
	if o.conns < 1 || o.duration <= 0 || o.rate < 0 {
		log.Fatal("loadgen: -c, -d must be positive and -rate not negative")
	}
	if (o.seed || o.sqlN > 0) && o.dsn == "" {
		log.Fatal("loadgen: -seed and -sql need -dsn")
	}
	if err := loopbackURL(o.url); err != nil {
		log.Fatalf("loadgen: -url: %v", err)
	}
	var err error
	if o.watch, err = parseWatch(*watch); err != nil {
		log.Fatalf("loadgen: %v", err)
	}
	if err := loopbackURL(o.admin); err != nil {
		log.Fatalf("loadgen: -admin: %v", err)
	}
	if o.redis != "" {
		if err := loopbackHostPort(o.redis); err != nil {
			log.Fatalf("loadgen: -redis: %v", err)
		}
	}
	if err := loopbackHostPort(o.hook); err != nil {
		log.Fatalf("loadgen: -hook: %v", err)
	}

	e, err := newEnv(ctx, o)
	if err != nil {
		log.Fatalf("loadgen: %v", err)
	}
	defer e.close()
	if o.seed {
		if err := e.seed(ctx); err != nil {
			log.Fatalf("loadgen: seed: %v", err)
		}
		fmt.Fprintln(os.Stderr, "loadgen: seeded")
	}
	failed := false
	for _, name := range o.cases {
		line, ok := e.runCase(ctx, name)
		fmt.Println(line)
		failed = failed || !ok
		if ctx.Err() != nil {
			log.Fatalf("loadgen: stopped: %v", context.Cause(ctx))
		}
	}
	if failed {
		os.Exit(1)
	}
}

func caseNames() []string {
	var out []string
	for _, n := range caseOrder {
		out = append(out, n)
	}
	return out
}

func loopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an http(s) URL", raw)
	}
	return loopbackHost(u.Hostname())
}

func loopbackHostPort(hp string) error {
	host, _, err := net.SplitHostPort(hp)
	if err != nil {
		return err
	}
	return loopbackHost(host)
}

func loopbackHost(host string) error {
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address", host)
	}
	return nil
}

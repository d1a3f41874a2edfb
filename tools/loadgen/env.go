package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
)

// env is what every case shares: one HTTP transport, the webhook receiver, the database.
type env struct {
	o      options
	client *http.Client
	fresh  *http.Client  // a new connection for every request: for resending (-retry-reused)
	db     *sql.DB       // nil without -dsn
	dbUser string        // the DSN's user
	rdb    *redis.Client // nil without -redis
	hook   *hookReceiver
}

func newEnv(ctx context.Context, o options) (*env, error) {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2 * o.conns,
		MaxIdleConnsPerHost: o.conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	if o.h2c {
		// One HTTP/2 connection carries every client's requests as streams.
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	freshTr := tr.Clone()
	freshTr.DisableKeepAlives = true
	e := &env{o: o, client: &http.Client{Transport: tr, Timeout: o.timeout},
		fresh: &http.Client{Transport: freshTr, Timeout: o.timeout}}
	if o.dsn != "" {
		cfg, err := mysql.ParseDSN(o.dsn)
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		db, err := sql.Open("mysql", o.dsn)
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		e.dbUser = cfg.User
		db.SetMaxOpenConns(4)
		pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := db.PingContext(pingCtx); err != nil {
			db.Close()
			return nil, fmt.Errorf("database: %w", err)
		}
		e.db = db
	}
	if o.redis != "" {
		e.rdb = redis.NewClient(&redis.Options{Addr: o.redis, DialTimeout: 5 * time.Second})
	}
	return e, nil
}

func (e *env) close() {
	if e.rdb != nil {
		e.rdb.Close()
	}
	if e.hook != nil {
		e.hook.close()
	}
	if e.db != nil {
		e.db.Close()
	}
	e.client.CloseIdleConnections()
	e.fresh.CloseIdleConnections()
}

// startHook starts the webhook receiver once; the otp cases need it.
func (e *env) startHook() error {
	if e.hook != nil {
		return nil
	}
	h, err := listenHook(e.o.hook)
	if err != nil {
		return err
	}
	e.hook = h
	return nil
}

// answer is one request's outcome.
type answer struct {
	ok      bool
	body    string // the start of the body, or the error, when not ok
	retried bool   // sent twice: the first try died with its kept-alive connection (-retry-reused)
}

// post sends fields form-encoded, as the apps did up to 2021, and reads the whole answer.
// With -retry-reused, a request that fails with no answer on a kept-alive (reused)
// connection is sent once more on a fresh one, as browsers and OkHttp do: the server
// closed that connection as idle just as the request went out, so it never saw it.
func (e *env) post(ctx context.Context, body string) answer {
	a, reused := e.postOnce(ctx, e.client, body)
	if !a.ok && reused && a.noAnswer && e.o.retryReused && ctx.Err() == nil {
		a, _ = e.postOnce(ctx, e.fresh, body)
		a.retried = true
		if !a.ok {
			a.body = "resent: " + a.body
		}
	} else if !a.ok && a.noAnswer && !reused {
		a.body += " (new connection)"
	}
	return a.answer
}

type attempt struct {
	answer
	noAnswer bool // no response at all, and not a timeout
}

func (e *env) postOnce(ctx context.Context, client *http.Client, body string) (attempt, bool) {
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, e.o.url, strings.NewReader(body))
	if err != nil {
		return attempt{answer: answer{body: err.Error()}}, false
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		return attempt{answer: answer{body: "transport: " + err.Error()}, noAnswer: !timeout}, reused
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return attempt{answer: answer{body: "reading the answer: " + err.Error()}}, reused
	}
	if resp.StatusCode != http.StatusOK {
		return attempt{answer: answer{body: fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, data)}}, reused
	}
	if strings.Contains(string(data), `"result":"OK"`) {
		return attempt{answer: answer{ok: true}}, reused
	}
	return attempt{answer: answer{body: fmt.Sprintf("%.200s", data)}}, reused
}

func form(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v.Encode()
}

// hookReceiver is the OTP webhook: it records the last code sent to each phone.
type hookReceiver struct {
	srv   *http.Server
	mu    sync.Mutex
	codes map[string]string
}

func listenHook(addr string) (*hookReceiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	h := &hookReceiver{codes: map[string]string{}}
	h.srv = &http.Server{Handler: http.HandlerFunc(h.serve), ReadHeaderTimeout: 5 * time.Second}
	go h.srv.Serve(ln)
	return h, nil
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	var d struct{ Phone, Code string }
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&d); err != nil || d.Phone == "" || d.Code == "" {
		http.Error(w, "bad delivery", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.codes[d.Phone] = d.Code
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// take returns and forgets the code last sent to phone (digits only).
func (h *hookReceiver) take(phone string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.codes[phone]
	delete(h.codes, phone)
	return c, ok
}

func (h *hookReceiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h.srv.Shutdown(ctx)
}

// counters are the statement counts sqlPerRequest compares.
type counters struct {
	questions int64 // MariaDB's global Questions: every client's statements
	user      int64 // the DSN user's statements (USER_STATISTICS); -1 if not readable
	userErr   error // why not
}

// snapshot reads the counters on conn: two statements, SHOW STATUS then SELECT. Questions
// counts the SHOW itself; USER_STATISTICS counts the SHOW but not the SELECT reading it.
func (e *env) snapshot(ctx context.Context, conn *sql.Conn) (counters, error) {
	var c counters
	var name string
	if err := conn.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Questions'").Scan(&name, &c.questions); err != nil {
		return c, err
	}
	// Needs MariaDB's userstat=ON and the PROCESS privilege; without them there is no row.
	err := conn.QueryRowContext(ctx, `SELECT SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS
		FROM information_schema.USER_STATISTICS WHERE USER = ?`, e.dbUser).Scan(&c.user)
	if err != nil {
		c.user = -1
		c.userErr = err
	}
	return c, nil
}

// outboxDepth is the number of queued notifications; -1 if it cannot be read.
func outboxDepth(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) int {
	var n int
	if err := q.QueryRowContext(ctx, "SELECT COUNT(*) FROM messenger_outbox").Scan(&n); err != nil {
		return -1
	}
	return n
}

// sqlCount is the statements per request: by every client (Questions, which other
// programs using the same MariaDB inflate) and by the server's database user alone
// (-1 when USER_STATISTICS is not readable).
// redisCalls are Redis commands per request, every client's (-1 without -redis): calls
// are the commands clients sent (the server sends only EVALSHA/EVAL, so these are its
// round trips), cmds also counts the commands the scripts ran inside Redis.
type sqlCount struct{ questions, user, redisCalls, redisCmds float64 }

func (s sqlCount) String() string {
	out := fmt.Sprintf(" sql_questions/req=%.2f", s.questions)
	if s.user >= 0 {
		out += fmt.Sprintf(" sql_user/req=%.2f", s.user)
	}
	if s.redisCalls >= 0 {
		out += fmt.Sprintf(" redis_calls/req=%.2f redis_cmds/req=%.2f", s.redisCalls, s.redisCmds)
	}
	return out
}

// redisCounts is what Redis has run so far (INFO commandstats): script calls (EVAL,
// EVALSHA, FCALL and their _ro forms) and all commands; -1, -1 if unknown. The INFO
// itself is counted after it answers.
func (e *env) redisCounts(ctx context.Context) (calls, cmds int64) {
	if e.rdb == nil {
		return -1, -1
	}
	info, err := e.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return -1, -1
	}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest+",", ',')], 10, 64)
		cmds += n
		switch name {
		case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
			calls += n
		}
	}
	return calls, cmds
}

// sqlPerRequest runs n requests one after the other and returns the statements the
// server ran per request: the counters' delta less loadgen's own statements. It waits
// (at most 15 s) for the outbox to drain first, so that asynchronous notification
// deliveries the requests caused are counted too. The outbox worker's idle poll (3
// statements per 2 s) is included.
func (e *env) sqlPerRequest(ctx context.Context, n int, next func() (string, bool)) (sqlCount, error) {
	conn, err := e.db.Conn(ctx)
	if err != nil {
		return sqlCount{}, err
	}
	defer conn.Close()
	before, err := e.snapshot(ctx, conn)
	if err != nil {
		return sqlCount{}, err
	}
	callsBefore, cmdsBefore := e.redisCounts(ctx)
	done := 0
	for ; done < n && ctx.Err() == nil; done++ {
		body, ok := next()
		if !ok {
			break
		}
		if a := e.post(ctx, body); !a.ok {
			return sqlCount{}, fmt.Errorf("request %d: %s", done+1, a.body)
		}
	}
	if done == 0 {
		return sqlCount{}, errors.New("no requests")
	}
	own := int64(2) // the SELECT of the first snapshot and the SHOW of the second
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		own++
		if d := outboxDepth(ctx, conn); d <= 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	callsAfter, cmdsAfter := e.redisCounts(ctx)
	after, err := e.snapshot(ctx, conn)
	if err != nil {
		return sqlCount{}, err
	}
	// MariaDB adds a statement to USER_STATISTICS a little late at times: the counts are
	// good to one statement per run, so a request that runs none can come out at -1/n.
	c := sqlCount{questions: max(0, float64(after.questions-before.questions-own)/float64(done)), user: -1, redisCalls: -1, redisCmds: -1}
	if callsBefore >= 0 && callsAfter >= 0 {
		c.redisCalls = float64(callsAfter-callsBefore) / float64(done)
		c.redisCmds = float64(cmdsAfter-cmdsBefore-1) / float64(done) // less the first INFO
	}
	if before.userErr != nil || after.userErr != nil {
		fmt.Fprintf(os.Stderr, "loadgen: per-user statement count unavailable (MariaDB userstat and the PROCESS privilege are needed): %v\n",
			errors.Join(before.userErr, after.userErr))
	}
	if os.Getenv("LOADGEN_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "loadgen: sql count: before %+v after %+v own %d requests %d\n", before, after, own, done)
	}
	if before.user >= 0 && after.user >= 0 {
		c.user = max(0, float64(after.user-before.user-own)/float64(done))
	}
	return c, nil
}

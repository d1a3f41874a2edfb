package caddymodule_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddy-messenger/messenger"
	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/media"
	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
	"github.com/caddy-messenger/messenger/migrations"
	"github.com/caddy-messenger/messenger/otp"
	"github.com/caddy-messenger/messenger/otpsender"
	"github.com/caddy-messenger/messenger/store"
)

const (
	appToken    = "app-token-e2e-0123456789abcdef"
	hookSecret  = "hook-secret"
	reviewPhone = "15550100999"
	reviewCode  = "424242"
)

// hook plays the SMS gateway behind the webhook sender: it records every code it is
// asked to deliver, after checking the signature.
type hook struct {
	*httptest.Server
	mu         sync.Mutex
	deliveries []otp.Delivery
	failing    bool
	t          testing.TB
}

func newHook(t testing.TB) *hook {
	h := &hook{t: t}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(hookSecret))
		mac.Write(body)
		if got, want := r.Header.Get(otpsender.SignatureHeader), "sha256="+hex.EncodeToString(mac.Sum(nil)); got != want {
			t.Errorf("webhook signature %q, want %q", got, want)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.failing {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		var d otp.Delivery
		if err := json.Unmarshal(body, &d); err != nil {
			t.Errorf("webhook body %q: %v", body, err)
		}
		h.deliveries = append(h.deliveries, d)
	}))
	t.Cleanup(h.Close)
	return h
}

// lastCode is the code most recently delivered to phone.
func (h *hook) lastCode(phone string) string {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.deliveries) - 1; i >= 0; i-- {
		if h.deliveries[i].Phone == phone {
			return h.deliveries[i].Code
		}
	}
	h.t.Fatalf("no code was delivered to %s", phone)
	return ""
}

func (h *hook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.deliveries)
}

// env is one running Caddy with the messenger module, its fakes and its database.
type env struct {
	t      testing.TB
	tester *caddytest.Tester
	mesibo *mesibotest.Server
	hook   *hook
	db     *sql.DB
	dsn    string
	prefix string
	files  string // holds files/ and thumbs/ of a local storage
	// serve are the lines of the site that serve files/ and thumbs/.
	serve string
	// process is the separate caddy process of options.process.
	process *os.Process
	// dbProxy stands between the module and MariaDB when options.dbProxy is set.
	dbProxy *tcpProxy
	config  string // the Caddyfile
	// logFile holds Caddy's log when options.logFile is set.
	logFile string
}

// options change the Caddyfile of an env.
type options struct {
	extra    string // more subdirectives inside messenger { }
	redisURL string
	otp      string // more subdirectives inside otp { }
	sender   string // replaces the otp block's sender (the webhook to e.hook)
	second   bool   // add a second site on :9081 with its own handler on the same Redis
	process  bool   // also run a separate caddy process on basePort+2 (see startProcess)
	site     string // replaces siteTemplate (same arguments)
	dbProxy  bool   // reach MariaDB through e.dbProxy, which a test can cut
	// servers adds lines to the global servers block (timeouts, say).
	servers string
	// defaults configures neither database nor redis, whatever the run: the embedded
	// store in Caddy's data directory ($XDG_DATA_HOME, a temporary folder) and codes
	// and limits in memory.
	defaults bool
	// storage, when set, is the storage URL, served by messenger_files; by default the
	// storage is a folder of the test's own (e.files), served by file_server.
	storage string
	// logFile writes Caddy's log (error level and above) as JSON lines to e.logFile
	// instead of stderr, for a test that asserts there is none.
	logFile bool
}

// The ports of the in-process Caddy: $MESSENGER_E2E_PORT (default 9080) serves the API,
// the next port the second instance, and the admin API listens 6081 below, so two test
// processes on one machine can use different bases.
var (
	basePort  = envPort()
	siteURL   = fmt.Sprintf("http://localhost:%d", basePort)
	apiURL    = siteURL + "/api.php"
	secondURL = fmt.Sprintf("http://localhost:%d/api.php", basePort+1)
	adminPort = basePort - 6081
)

func envPort() int {
	if p, err := strconv.Atoi(os.Getenv("MESSENGER_E2E_PORT")); err == nil && p > 7000 {
		return p
	}
	return 9080
}

// globalOptions are the Caddyfile's global options; servers adds lines to its servers
// block.
func globalOptions(servers string) string {
	return fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port %d
	https_port %d
	grace_period 1ns
	servers {
		# Tests speak for other client addresses with X-Forwarded-For.
		trusted_proxies static 127.0.0.1/32 ::1/128
		%s
	}
	log {
		level ERROR
	}
}
`, adminPort, basePort, basePort+363, servers)
}

// siteTemplate is one site serving the API and the stored files; %[1]s is its address,
// %[2]s the messenger block, %[3]s the lines that serve files/ and thumbs/ (see
// serveFolder and serveStorage).
const siteTemplate = `%[1]s {
	@api path / /api.php
	messenger @api {
%[2]s
	}
	@static path /files/* /thumbs/*
	handle @static {
%[3]s
	}
	@other not path / /api.php /files/* /thumbs/*
	respond @other "not the api" 404
}
`

// serveFolder serves a local storage with file_server and the headers of
// Caddyfile.example (TestExampleServesFilesSafely checks the example itself).
func serveFolder(dir string) string {
	return `		root * ` + dir + `
		header X-Content-Type-Options nosniff
		header Content-Security-Policy "` + media.ContentSecurityPolicy + `"
		@download not path_regexp (?i)\.(jpe?g|png|gif|webp|heic|heif|avif|mp4|m4v|mov|3gp|webm|mkv|m4a|aac|mp3|ogg|oga|opus|amr|wav|flac)$
		header @download Content-Disposition attachment
		file_server`
}

// serveStorage serves a storage with messenger_files, which sets the headers itself.
func serveStorage(url string) string { return "\t\tmessenger_files " + url }

const messengerTemplate = `%s
%s
		mesibo {
			endpoint %s
			app_token {env.E2E_MESIBO_APP_TOKEN}
			timeout 1s
		}
		otp {
			secret {env.E2E_OTP_SECRET}
			%s
			test_number "+1 555 0100 999" %s
			%s
		}
		download_url {$E2E_SITE}/files/
		upload_url {$E2E_SITE}/api.php
		invite {
			text "Join me"
			subject "Messenger"
			title "Invite via"
		}
		google_maps_key maps-key
		max_body_size 64KB
		storage %s
		%s`

// messengerBlock is the messenger block of o with the lines that set the database and
// Redis, the URLs of the mesibo fake and of the webhook that gets the codes, and the
// storage URL.
func (o options) messengerBlock(dbLine, redisLines, mesiboURL, hookURL, storage string) string {
	sender := o.sender
	if sender == "" {
		sender = fmt.Sprintf("sender webhook %s {\n\t\t\t\tsecret %s\n\t\t\t\ttimeout 2s\n\t\t\t\tretries 1\n\t\t\t}", hookURL, hookSecret)
	}
	return fmt.Sprintf(messengerTemplate, dbLine, redisLines, mesiboURL, sender, reviewCode, o.otp, storage, o.extra)
}

func startEnv(t testing.TB, o options) *env {
	t.Setenv("E2E_MESIBO_APP_TOKEN", appToken)
	t.Setenv("E2E_OTP_SECRET", "otp-secret")
	t.Setenv("E2E_SITE", siteURL)
	if o.redisURL != "" || o.dbProxy || o.second || o.process {
		testenv.SkipIfEmbedded(t, "it is about servers several instances share, or their outages")
	}
	e := &env{t: t, mesibo: mesibotest.NewServer(t, appToken), hook: newHook(t)}
	if o.defaults {
		dataHome := t.TempDir()
		t.Setenv("XDG_DATA_HOME", dataHome)
		e.dsn = store.EmbeddedPrefix + filepath.Join(dataHome, "caddy", "messenger", "messenger.db")
	} else {
		e.dsn = testenv.Database(t)
	}
	// The embedded run configures no Redis: codes and limits live in Caddy's memory, in
	// pools the prefix keeps apart from the previous test's.
	e.prefix = testenv.Prefix()
	redisLines := "\t\tredis_key_prefix " + e.prefix
	if !testenv.Embedded() && !o.defaults {
		_, e.prefix = testenv.Redis(t)
		redisURL := o.redisURL
		if redisURL == "" {
			redisURL = testenv.RedisURL()
		}
		redisLines = fmt.Sprintf("\t\tredis %s\n\t\tredis_key_prefix %s", redisURL, e.prefix)
	}
	e.files = t.TempDir()
	storage := "file://" + e.files
	e.serve = serveFolder(e.files)
	if o.storage != "" {
		storage, e.serve = o.storage, serveStorage(o.storage)
	}
	moduleDSN := e.dsn
	if o.dbProxy {
		e.dbProxy = newTCPProxy(t, "127.0.0.1:3306")
		moduleDSN = strings.Replace(e.dsn, "127.0.0.1:3306", e.dbProxy.addr, 1)
	}
	dbLine := fmt.Sprintf("\t\tdatabase %q", moduleDSN)
	if o.defaults {
		dbLine = ""
	}
	block := o.messengerBlock(dbLine, redisLines, e.mesibo.URL, e.hook.URL, storage)
	site := siteTemplate
	if o.site != "" {
		site = o.site
	}
	global := globalOptions(o.servers)
	if o.logFile {
		e.logFile = filepath.Join(t.TempDir(), "caddy.log")
		global = strings.Replace(global, "\t\tlevel ERROR", fmt.Sprintf("\t\toutput file %s\n\t\tformat json\n\t\tlevel ERROR", e.logFile), 1)
	}
	e.config = global + fmt.Sprintf(site, siteURL, block, e.serve)
	config := e.config
	if o.second {
		// Another database, the same Redis: as a second server of one deployment
		// would be if it had its own database replica.
		config += fmt.Sprintf(siteTemplate, strings.TrimSuffix(secondURL, "/api.php"), strings.Replace(block, moduleDSN, testenv.Database(t), 1), e.serve)
	}
	// caddytest's 5 s client timeout is a safety net, not a bound: under -race on a busy
	// 2-core machine a 5,000-number sync takes about that. Tests that bound a time
	// measure it themselves.
	e.tester = caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort, TestRequestTimeout: 30 * time.Second})
	e.tester.InitServer(config, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	// Opened after Caddy, which creates the default embedded file.
	e.db = testenv.Open(t, e.dsn)
	if !o.dbProxy {
		waitMigrated(t, e.db)
	}
	if o.process {
		e.startProcess(block)
	}
	return e
}

// waitMigrated waits for the schema the module migrates in the background at start, so
// that a test may write rows before its first request.
func waitMigrated(t testing.TB, db *sql.DB) {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "mysql/*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var version int
		if db.QueryRow("SELECT version FROM schema_migrations WHERE dirty = 0").Scan(&version) == nil && version == len(files) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the schema was not migrated to version %d within 20s", len(files))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answer is a decoded API answer with its HTTP response.
type answer struct {
	body map[string]any
	resp *http.Response
	raw  string
}

func (a answer) str(key string) string {
	v, ok := a.body[key]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// encoding is one of the four ways PROTOCOL.md §1 lets fields arrive.
type encoding string

const (
	query      encoding = "query"
	form       encoding = "form"
	multipart_ encoding = "multipart"
	jsonBody   encoding = "json"
)

var encodings = []encoding{query, form, multipart_, jsonBody}

// call sends fields to the API in the given encoding. Values may be strings, numbers
// or []string (a JSON array in the JSON encoding, a comma list elsewhere).
func (e *env) call(enc encoding, fields map[string]any) answer {
	e.t.Helper()
	return e.callURL(apiURL, enc, fields)
}

// callURL is call against another URL.
func (e *env) callURL(apiURL string, enc encoding, fields map[string]any) answer {
	e.t.Helper()
	var req *http.Request
	var err error
	flat := url.Values{}
	for k, v := range fields {
		switch v := v.(type) {
		case []string:
			flat.Set(k, strings.Join(v, ","))
		default:
			flat.Set(k, fmt.Sprint(v))
		}
	}
	switch enc {
	case query:
		req, err = http.NewRequest(http.MethodGet, apiURL+"?"+flat.Encode(), nil)
	case form:
		req, err = http.NewRequest(http.MethodPost, apiURL, strings.NewReader(flat.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case multipart_:
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for k := range flat {
			mw.WriteField(k, flat.Get(k))
		}
		mw.Close()
		req, err = http.NewRequest(http.MethodPost, apiURL, &buf)
		req.Header.Set("Content-Type", mw.FormDataContentType())
	case jsonBody:
		body, _ := json.Marshal(fields)
		req, err = http.NewRequest(http.MethodPost, apiURL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) answer {
	e.t.Helper()
	resp, err := e.tester.Client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{resp: resp, raw: string(raw)}
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("%s %s: HTTP %d %s", req.Method, req.URL, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		e.t.Fatalf("answer is not a JSON object: %q", raw)
	}
	return a
}

// expectOK fails the test unless a is an OK answer for op with a numeric ts.
func expectOK(t testing.TB, a answer, op string) {
	t.Helper()
	if a.str("result") != "OK" || a.str("op") != op {
		t.Fatalf("want OK for %s, got %s", op, a.raw)
	}
	if _, ok := a.body["ts"].(float64); !ok {
		t.Fatalf("ts is not a number: %s", a.raw)
	}
}

// gidOf is the gid of an op answer, which must be a decimal string (PROTOCOL.md §2: the
// 2021 Swift app force-casts it to a string).
func gidOf(t testing.TB, a answer) int64 {
	t.Helper()
	s, ok := a.body["gid"].(string)
	gid, err := strconv.ParseInt(s, 10, 64)
	if !ok || err != nil {
		t.Fatalf("gid is not a decimal string: %s", a.raw)
	}
	return gid
}

// expectFail fails the test unless a is a FAIL answer with code.
func expectFail(t testing.TB, a answer, code string) {
	t.Helper()
	if a.str("result") != "FAIL" || a.str("error") != code {
		t.Fatalf("want FAIL %s, got %s", code, a.raw)
	}
	if _, ok := a.body["ts"].(float64); !ok {
		t.Fatalf("ts is not a number: %s", a.raw)
	}
}

// login runs both steps of phone login and returns the token.
func (e *env) login(enc encoding, phone, digits string) string {
	e.t.Helper()
	expectOK(e.t, e.call(enc, map[string]any{"op": "login", "phone": phone, "appid": "com.example.app"}), "login")
	code := e.hook.lastCode(digits)
	a := e.call(enc, map[string]any{"op": "login", "phone": phone, "appid": "com.example.app", "otp": code})
	expectOK(e.t, a, "login")
	return a.str("token")
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// dump renders every row of query as "a:b:c", rows joined by commas.
func (e *env) dump(query string) string {
	e.t.Helper()
	return testenv.Dump(e.t, e.db, query)
}

func waitFor(t *testing.T, what string, cond func() bool) { waitWithin(t, 5*time.Second, what, cond) }

// waitWithin polls cond until it holds, failing the test after d.
func waitWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

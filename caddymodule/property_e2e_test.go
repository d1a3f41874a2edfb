package caddymodule_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/internal/testenv"
)

// The hostile-input property (hardening issue 14, defect 9): no client input ever
// produces DBERROR, a 5xx or an error-level log line. TestHostileInput sends every op ×
// every field it reads × every encoding × classes of hostile values to a running server
// with a small world in it (users, contacts, groups, pictures), so that requests reach
// the ops' deep paths and not only the token check. It checks every answer, the server's
// log after every subtest, and the rows the requests had no right to change.
//
// Each round has two phases (anonymous, authenticated), each a subtest per op (its
// sweep), chaos (random many-field requests) and, authenticated, hang-ups (clients that
// go away). The requests come from seeded generators, one per subtest: CI runs one
// round of the default seed, and
//
//	go test -run 'TestHostileInput/round0/authenticated/setgroup' ./caddymodule/
//
// sends that subtest's requests again (tokens and gids aside); a failure names its seed,
// subtest and request number. A longer campaign runs more rounds from any seed, on each
// store (-race is not needed to find what the property finds, and is ten times slower):
//
//	MESSENGER_PROPERTY_SEED=$RANDOM MESSENGER_PROPERTY_ROUNDS=20 MESSENGER_PROPERTY_CHAOS=2000 \
//	  MESSENGER_TEST_STORE=mysql go test -count=1 -timeout 3h -run TestHostileInput ./caddymodule/
const (
	propertySeedEnv   = "MESSENGER_PROPERTY_SEED"   // the first round's seed (default 14)
	propertyRoundsEnv = "MESSENGER_PROPERTY_ROUNDS" // rounds, each with the next seed (default 1)
	propertyChaosEnv  = "MESSENGER_PROPERTY_CHAOS"  // random many-field requests per phase and round (default 150)
)

// propertyExtra lifts the limits that would otherwise turn most requests into RATELIMIT
// answers before they reach the code under test; the limits themselves have tests of
// their own. Bodies up to 1 MB let values over 64 KB reach the ops.
const propertyExtra = `rate_limit otp_phone 1000000 1m
		rate_limit otp_ip 1000000 1m
		rate_limit otp_global 1000000 1m
		contact_discovery {
			budget 100000000
			max_phones 5000
		}
		max_body_size 1MB`

// A request head over Caddy's default max_header_size (16 KB) may be refused with 431:
// the one transport-level refusal the property allows, and only to the query encoding.
// Beyond 24 KB it must be: Go's server reads up to 4 KB past the limit into its buffer,
// and on a kept-alive connection up to 4 KB more of the next request while it waits for
// it, before the limit applies. A body over max_body_size is the API's TOOLARGE (HTTP 200).
const (
	headerLimit        = 16 << 10
	headerLimitRefused = headerLimit + 8<<10
)

// TestHostileInput checks the hostile-input property (above) on this run's store.
func TestHostileInput(t *testing.T) {
	seed, rounds, chaos := uint64(14), 1, 150
	if v, err := strconv.ParseUint(os.Getenv(propertySeedEnv), 10, 64); err == nil {
		seed = v
	}
	if v, err := strconv.Atoi(os.Getenv(propertyRoundsEnv)); err == nil && v > 0 {
		rounds = v
	}
	if v, err := strconv.Atoi(os.Getenv(propertyChaosEnv)); err == nil && v >= 0 {
		chaos = v
	}
	store := "embedded"
	if !testenv.Embedded() {
		store = "mysql"
	}
	t.Logf("seed %d, %d round(s), %d chaos requests per phase, %s store", seed, rounds, chaos, store)

	e := startEnv(t, options{extra: propertyExtra, logFile: true})
	w := newWorld(t, e)
	start, sent := time.Now(), 0
	for round := range rounds {
		s := seed + uint64(round)
		// anonymous: no request carries a valid token (nor the right code of a world
		// user), so nothing of the world may change and no token op may succeed.
		// authenticated: the actors' tokens reach every op's deep paths; the bystanders'
		// rows and their group may not change.
		for _, ph := range []phase{anonymous, authenticated} {
			name := fmt.Sprintf("round%d/%s", round, ph)
			t.Run(name, func(t *testing.T) {
				p := &prober{w: w, phase: ph, answers: map[string]int{}}
				p.rebase()
				// Each subtest draws from a generator of its own, so that running one
				// alone (-run) sends the same requests as in the whole run.
				subtest := func(i int, name string, send func()) {
					t.Run(name, func(t *testing.T) {
						defer w.use(t)()
						w.tidy()
						p.t, p.rng, p.label, p.n = t, rand.New(rand.NewPCG(s, uint64(ph)<<8|uint64(i))), fmt.Sprintf("seed %d %s", s, t.Name()), 0
						send()
						p.report()
					})
				}
				for i, o := range propertyOps {
					subtest(i, o.name, func() { p.sweep(o) })
				}
				subtest(len(propertyOps), "chaos", func() {
					for range chaos {
						p.run(p.chaos())
					}
				})
				if ph == authenticated {
					subtest(len(propertyOps)+1, "hang-ups", p.hangUps)
				}
				sent += p.sent
				t.Logf("%d requests; answers by op: %s", p.sent, p.answerCounts())
			})
		}
	}
	t.Logf("%d requests in %s", sent, time.Since(start).Round(time.Millisecond))

	t.Run("no error log", func(t *testing.T) {
		defer w.use(t)()
		// Notifications the requests queued are delivered by the outbox worker, whose
		// failures would be logged too.
		waitWithin(t, 60*time.Second, "the outbox to drain", func() bool {
			return e.count("SELECT COUNT(*) FROM messenger_outbox") == 0
		})
		w.reportLog(t)
	})
}

// phase says whose tokens a phase's requests carry.
type phase int

const (
	anonymous phase = iota
	authenticated
)

func (p phase) String() string { return [...]string{"anonymous", "authenticated"}[p] }

// opFields are the fields each op reads (handlers/*.go, PROTOCOL.md §3), besides op and
// token; "file" is the one file part of a multipart request.
type opFields struct {
	name   string
	token  bool // the op needs a token
	fields []string
}

var propertyOps = []opFields{
	{"login", false, []string{"phone", "appid", "otp", "code", "name", "dt", "device", "aktoken"}},
	{"loginui", false, nil},
	{"logout", true, nil},
	{"getcontacts", true, []string{"ts", "phones", "reset", "hidden"}},
	{"delcontacts", true, []string{"phones"}},
	{"profile", true, []string{"name", "status", "gid", "file"}},
	{"upload", true, []string{"profile", "gid", "mid", "delete", "file"}},
	{"setnotify", true, []string{"notifytoken", "dt", "prod"}},
	{"setgroup", true, []string{"gid", "name", "m", "type", "file"}},
	{"getgroup", true, []string{"gid"}},
	{"editmembers", true, []string{"gid", "m", "delete"}},
	{"setadmin", true, []string{"gid", "m", "admin"}},
	{"delgroup", true, []string{"gid"}},
	{"nosuchop", true, nil},
}

// targets are the fields of o that a sweep makes hostile, one at a time.
func (o opFields) targets() []string {
	targets := append([]string{"op"}, o.fields...)
	if o.token {
		targets = append(targets, "token", "auth") // auth: the Swift app's attachments
	}
	return targets
}

// The world the requests run in. The actors' tokens are used in the authenticated phase;
// the bystanders' never are, and own a group no actor is in.
const (
	actorA          = "919812346101" // owns group g, has a picture, a push token, contacts
	actorB          = "919812346102" // admin of g
	actorC          = "919812346103" // member of g
	bystanderD      = "919812346104" // member of g, owns group g2
	bystanderE      = "919812346105" // member of g2
	neverRegistered = "919812346199" // never registers; a member of g
)

var (
	actors     = []string{actorA, actorB, actorC}
	bystanders = []string{bystanderD, bystanderE}
)

// world is the users, contacts, groups and pictures the requests run against.
type world struct {
	t      *testing.T
	e      *env
	tokens map[string]string
	uids   map[string]int64
	g, g2  int64
	png    []byte
	// bomb is a small PNG whose header claims 65535×65535 pixels.
	bomb []byte
	// logRead is how much of Caddy's log reportLog has read.
	logRead int64
}

func newWorld(t *testing.T, e *env) *world {
	w := &world{t: t, e: e, tokens: map[string]string{}, uids: map[string]int64{}, png: smallPNG(t), bomb: pngClaiming(t, 1<<16-1, 1<<16-1)}
	for i, p := range append(slices.Clone(actors), bystanders...) {
		w.tokens[p] = e.login(form, "+"+p, p)
		expectOK(t, e.call(form, map[string]any{"op": "profile", "token": w.tokens[p], "name": "User " + string(rune('A'+i)), "status": "hi"}), "profile")
		var uid int64
		if err := e.db.QueryRow("SELECT uid FROM users WHERE phone = ?", p).Scan(&uid); err != nil {
			t.Fatal(err)
		}
		w.uids[p] = uid
	}
	for who, phones := range map[string][]string{
		actorA: {actorB, actorC, bystanderD}, actorB: {actorA}, bystanderD: {bystanderE, actorA}, bystanderE: {bystanderD},
	} {
		expectOK(t, e.call(form, map[string]any{"op": "getcontacts", "token": w.tokens[who], "phones": phones}), "getcontacts")
	}
	a := e.callWithFile(map[string]string{"op": "upload", "token": w.tokens[actorA], "profile": "1"}, "photo", "me.png", w.png)
	expectOK(t, a, "upload")
	for _, p := range []string{actorA, bystanderD} {
		expectOK(t, e.call(form, map[string]any{"op": "setnotify", "token": w.tokens[p], "notifytoken": "fcm-" + p, "dt": 1}), "setnotify")
	}
	a = e.call(form, map[string]any{"op": "setgroup", "token": w.tokens[bystanderD], "gid": 0, "name": "Bystanders", "m": bystanderE})
	expectOK(t, a, "setgroup")
	w.g2 = gidOf(t, a)
	w.repair()
	return w
}

// use makes t the test that the world's and the env's helpers fail, until restore.
func (w *world) use(t *testing.T) (restore func()) {
	prev := w.t
	w.t, w.e.t = t, t
	return func() { w.t, w.e.t = prev, prev }
}

// repair puts the world back where requests may legitimately have changed it, so that
// later requests still reach deep paths: actors logged out are logged in again, and
// group g exists with its members and its admin.
func (w *world) repair() {
	e := w.e
	for _, p := range actors {
		if e.count("SELECT COUNT(*) FROM tokens WHERE uid = ? AND token = ?", w.uids[p], w.tokens[p]) != 1 {
			w.tokens[p] = e.login(form, "+"+p, p)
		}
	}
	if w.g == 0 || e.count("SELECT COUNT(*) FROM `groups` WHERE gid = ?", w.g) == 0 {
		a := e.callWithFile(map[string]string{"op": "setgroup", "token": w.tokens[actorA], "gid": "0", "name": "Property",
			"m": strings.Join([]string{actorB, actorC, bystanderD, neverRegistered}, ",")}, "photo", "g.png", w.png)
		expectOK(w.t, a, "setgroup")
		w.g = gidOf(w.t, a)
	}
	roles := e.memberRoles(w.g)
	if _, ok := roles[actorC]; !ok || roles[actorB] != 1 {
		if _, ok := roles[actorB]; !ok {
			expectOK(w.t, e.call(form, map[string]any{"op": "editmembers", "token": w.tokens[actorA], "gid": w.g, "m": []string{actorB, actorC}}), "editmembers")
		} else if _, ok := roles[actorC]; !ok {
			expectOK(w.t, e.call(form, map[string]any{"op": "editmembers", "token": w.tokens[actorA], "gid": w.g, "m": actorC}), "editmembers")
		}
		expectOK(w.t, e.call(form, map[string]any{"op": "setadmin", "token": w.tokens[actorA], "gid": w.g, "m": actorB, "admin": 1}), "setadmin")
	}
}

// tidy deletes the groups the requests made (rows only): an actor in hundreds of groups
// of thousands of members would make every later sync slow.
func (w *world) tidy() {
	for _, table := range []string{"members", "`groups`"} {
		if _, err := w.e.db.Exec("DELETE FROM "+table+" WHERE gid NOT IN (?, ?)", w.g, w.g2); err != nil {
			w.t.Fatal(err)
		}
	}
}

// crowd gives actor A n registered contacts with 4 KB names, written as rows (through
// the API it would take minutes under -race), and returns what removes them.
func (w *world) crowd(n int) (remove func()) {
	const firstUID, firstPhone = 900001, 919900000001
	name := strings.Repeat("x", 4096)
	for start := 0; start < n; start += 100 {
		var users, contacts []string
		var userArgs, contactArgs []any
		for i := start; i < min(start+100, n); i++ {
			users = append(users, "(?, ?, ?, 91, '', '', ?)")
			userArgs = append(userArgs, firstUID+i, name, firstPhone+i, time.Now().Unix())
			contacts = append(contacts, "(?, ?)")
			contactArgs = append(contactArgs, w.uids[actorA], firstPhone+i)
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"INSERT INTO users (uid, name, phone, cc, status, photo, ts) VALUES " + strings.Join(users, ","), userArgs},
			{"INSERT INTO contacts (uid, phone) VALUES " + strings.Join(contacts, ","), contactArgs},
		} {
			if _, err := w.e.db.Exec(q.sql, q.args...); err != nil {
				w.t.Fatal(err)
			}
		}
	}
	return func() {
		for _, q := range []struct {
			sql    string
			lo, hi int
		}{
			{"DELETE FROM users WHERE uid >= ? AND uid < ?", firstUID, firstUID + n},
			{"DELETE FROM contacts WHERE phone >= ? AND phone < ?", firstPhone, firstPhone + n},
		} {
			if _, err := w.e.db.Exec(q.sql, q.lo, q.hi); err != nil {
				w.t.Fatal(err)
			}
		}
	}
}

// protection names the rows a phase's requests must leave as they are.
type protection struct {
	phones []string
	gids   []int64
}

func (w *world) protected(ph phase) protection {
	if ph == anonymous {
		return protection{append(slices.Clone(actors), bystanders...), []int64{w.g, w.g2}}
	}
	return protection{bystanders, []int64{w.g2}}
}

// ids are the protected users' uids and the protected gids, each as an SQL IN (…).
func (w *world) ids(p protection) (uids, gids string) {
	var u, g []string
	for _, phone := range p.phones {
		u = append(u, strconv.FormatInt(w.uids[phone], 10))
	}
	for _, gid := range p.gids {
		g = append(g, strconv.FormatInt(gid, 10))
	}
	return " IN (" + strings.Join(u, ",") + ")", " IN (" + strings.Join(g, ",") + ")"
}

// snapshot renders the rows of the protected users and groups.
func (w *world) snapshot(p protection) map[string]string {
	uids, gids := w.ids(p)
	out := map[string]string{}
	for table, q := range map[string]string{
		"users":        "SELECT uid, name, phone, cc, status, photo, ts FROM users WHERE uid" + uids + " ORDER BY uid",
		"tokens":       "SELECT uid, token, expirytime FROM tokens WHERE uid" + uids + " ORDER BY uid",
		"contacts":     "SELECT uid, phone FROM contacts WHERE uid" + uids + " ORDER BY uid, phone",
		"notifytokens": "SELECT uid, token, device, production FROM notifytokens WHERE uid" + uids + " ORDER BY uid",
		"groups":       "SELECT gid, name, status, photo, type, ts FROM `groups` WHERE gid" + gids + " ORDER BY gid",
		"members":      "SELECT gid, phone, role FROM members WHERE gid" + gids + " ORDER BY gid, phone",
	} {
		out[table] = w.e.dump(q)
	}
	return out
}

// fingerprint sums up the protected rows in one query, cheap enough to take after every
// request, so that a change is pinned on the request that made it.
func (w *world) fingerprint(p protection) string {
	uids, gids := w.ids(p)
	return w.e.dump(`SELECT
		(SELECT COUNT(*) + COALESCE(SUM(LENGTH(token)), 0) FROM tokens WHERE uid` + uids + `),
		(SELECT COUNT(*) + COALESCE(SUM(LENGTH(token) + device + production), 0) FROM notifytokens WHERE uid` + uids + `),
		(SELECT COUNT(*) FROM contacts WHERE uid` + uids + `),
		(SELECT COUNT(*) + COALESCE(SUM(ts + LENGTH(name) + LENGTH(status) + LENGTH(photo)), 0) FROM users WHERE uid` + uids + `),
		(SELECT COUNT(*) + COALESCE(SUM(ts + LENGTH(name) + LENGTH(photo) + type), 0) FROM ` + "`groups`" + ` WHERE gid` + gids + `),
		(SELECT COUNT(*) + COALESCE(SUM(role), 0) FROM members WHERE gid` + gids + `)`)
}

// changes describes how the protected rows differ from before.
func (w *world) changes(p protection, before map[string]string) string {
	var out []string
	after := w.snapshot(p)
	for table, rows := range before {
		if after[table] != rows {
			out = append(out, fmt.Sprintf("%s before %s, after %s", table, clip(rows, 400), clip(after[table], 400)))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// digits are left out of the kind of a log line: ports and ids vary.
var digits = regexp.MustCompile(`[0-9]+`)

// reportLog fails t with the lines at error level or above that Caddy logged since the
// last call, each kind once with a count.
func (w *world) reportLog(t *testing.T) {
	t.Helper()
	f, err := os.Open(w.e.logFile)
	if os.IsNotExist(err) {
		return // nothing was logged at all
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(w.logRead, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	data = data[:bytes.LastIndexByte(data, '\n')+1] // a line being written is read next time
	w.logRead += int64(len(data))
	counts, first := map[string]int{}, map[string]string{}
	var kinds []string
	for line := range strings.Lines(string(data)) {
		var entry struct{ Level, Logger, Msg, Error string }
		if err := json.Unmarshal([]byte(line), &entry); err == nil {
			switch strings.ToLower(entry.Level) {
			case "debug", "info", "warn":
				continue
			}
		}
		kind := digits.ReplaceAllString(entry.Logger+": "+entry.Msg+": "+clip(entry.Error, 60), "#")
		if counts[kind]++; counts[kind] == 1 {
			first[kind] = strings.TrimSpace(line)
			kinds = append(kinds, kind)
		}
	}
	for _, kind := range kinds {
		t.Errorf("error-level log line (%d× like it): %s", counts[kind], clip(first[kind], 800))
	}
}

// wire is one field value as a probe sends it.
type wire struct {
	text string
	// json, when set, is the value's JSON text (a number, an array...) in the JSON
	// encoding; otherwise text is sent as a JSON string.
	json string
	// raw values go into a query string or form body unescaped: percent-encoding garbage.
	raw bool
}

func textValue(s string) wire { return wire{text: s} }

// field is one field of a probe; a probe may carry a name twice.
type field struct {
	name  string
	value wire
}

// filePart is a multipart file part.
type filePart struct {
	field, name string
	data        []byte
}

// probe is one request: its fields in one encoding, and what it is meant to test.
type probe struct {
	enc encoding
	// contentType replaces the encoding's own (JSON sent as the iOS app sends it, or a
	// hostile label); "-" sends none.
	contentType string
	fields      []field
	// inQuery are fields sent in the query string whatever the encoding (a body field
	// wins over a query field of the same name).
	inQuery []field
	files   []filePart
	header  map[string]string
	// method replaces the encoding's (GET for query, else POST).
	method string
	// chunked sends the body without a Content-Length; prefix goes before it.
	chunked bool
	prefix  string
	hangUp  hangUp
	// what the probe tests, for reports: op, field, class.
	op, target, class string
	// anonymous: the probe carries no valid token and no right code of a world user.
	anonymous bool
}

// request builds the HTTP request of p.
func (p *probe) request() (*http.Request, error) {
	inURL := p.inQuery
	var body io.Reader
	var contentType string
	switch p.enc {
	case query:
		inURL = append(slices.Clone(p.fields), inURL...)
	case form:
		body, contentType = strings.NewReader(urlEncode(p.fields)), "application/x-www-form-urlencoded"
	case multipart_:
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for _, f := range p.fields {
			fw, _ := mw.CreateFormField(f.name)
			fw.Write([]byte(f.value.text))
		}
		for _, f := range p.files {
			fw, _ := mw.CreateFormFile(f.field, f.name)
			fw.Write(f.data)
		}
		mw.Close()
		body, contentType = &buf, mw.FormDataContentType()
	case jsonBody:
		var b strings.Builder
		b.WriteByte('{')
		for i, f := range p.fields {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(rawJSONString(f.name) + ":")
			if f.value.json != "" {
				b.WriteString(f.value.json)
			} else {
				b.WriteString(rawJSONString(f.value.text))
			}
		}
		b.WriteByte('}')
		body, contentType = strings.NewReader(b.String()), "application/json"
	}
	target := apiURL
	if len(inURL) > 0 {
		target += "?" + urlEncode(inURL)
	}
	method := http.MethodPost
	switch {
	case p.method != "":
		method = p.method
	case body == nil:
		method = http.MethodGet
	}
	if body != nil {
		body = io.MultiReader(strings.NewReader(p.prefix), body)
		if !p.chunked {
			data, _ := io.ReadAll(body)
			body = bytes.NewReader(data)
		}
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		return nil, err
	}
	switch {
	case p.contentType == "-":
	case p.contentType != "":
		req.Header.Set("Content-Type", p.contentType)
	case contentType != "":
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range p.header {
		req.Header.Set(k, v)
	}
	return req, nil
}

// hangUp says when a probe's client goes away.
type hangUp int

const (
	stays        hangUp = iota
	beforeAnswer        // right after sending: the server's work is cancelled
	midAnswer           // after the first bytes of the answer: the server's writes fail
)

// urlEncode is fields as a query string, in order, duplicates kept, raw values unescaped.
func urlEncode(fields []field) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		v := url.QueryEscape(f.value.text)
		if f.value.raw {
			v = f.value.text
		}
		parts[i] = url.QueryEscape(f.name) + "=" + v
	}
	return strings.Join(parts, "&")
}

// rawJSONString is s as a JSON string, with any bytes that are not UTF-8 left as they are (a
// client may send them; encoding/json would replace them).
func rawJSONString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// describe renders p for a report: short enough to read, exact enough to rebuild.
func (p *probe) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", p.enc)
	if p.method != "" {
		fmt.Fprintf(&b, " %s", p.method)
	}
	if p.chunked {
		b.WriteString(" chunked")
	}
	if p.prefix != "" {
		fmt.Fprintf(&b, " body prefixed %q", p.prefix)
	}
	if p.hangUp != stays {
		fmt.Fprintf(&b, " (hangs up %s)", [...]string{"", "before the answer", "mid-answer"}[p.hangUp])
	}
	if p.contentType != "" {
		fmt.Fprintf(&b, " (Content-Type %q)", p.contentType)
	}
	show := func(fields []field) {
		for _, f := range fields {
			v := f.value.json
			if v == "" {
				v = strconv.Quote(f.value.text)
				if f.value.raw {
					v = "raw " + v
				}
			}
			fmt.Fprintf(&b, " %s=%s", f.name, clip(v, 60))
		}
	}
	show(p.fields)
	if len(p.inQuery) > 0 {
		b.WriteString(" | query:")
		show(p.inQuery)
	}
	for _, f := range p.files {
		fmt.Fprintf(&b, " | file part %q filename %s, %d bytes %s", f.field, clip(strconv.Quote(f.name), 60), len(f.data), clip(strconv.Quote(string(f.data)), 60))
	}
	for k, v := range p.header {
		fmt.Fprintf(&b, " | header %s: %s", k, clip(strconv.Quote(v), 60))
	}
	return b.String()
}

// clip cuts s to n bytes.
func clip(s string, n int) string {
	if len(s) > n {
		return fmt.Sprintf("%s…(%d bytes)", s[:n], len(s))
	}
	return s
}

// prober generates the probes of one phase and checks their answers.
type prober struct {
	t     *testing.T
	w     *world
	phase phase
	rng   *rand.Rand
	label string
	// n counts the requests of the current subtest, sent those of the phase.
	n, sent int
	// prot are the rows this phase's requests must not change; before their snapshot,
	// fp their fingerprint.
	prot   protection
	before map[string]string
	fp     string
	// answers counts the answers by op, result and code: how deep the requests reached.
	answers map[string]int
	// findings are the distinct property violations of the current subtest, by signature.
	findings map[string]*finding
	order    []string
}

type finding struct {
	count   int
	example string
}

// sweep sends, for op o, every target field × encoding × class of hostile value once,
// the other fields plausible; except where the value cannot take the request anywhere
// new, which gets a duplicated field and one class drawn at random per encoding (see
// sampled).
func (p *prober) sweep(o opFields) {
	for _, target := range o.targets() {
		costlyEnc := pick(p.rng, encodings...)
		for _, enc := range encodings {
			if target == "file" && enc != multipart_ {
				continue // only multipart carries a file
			}
			var classes []valueClass
			for _, c := range valueClasses {
				if (!c.jsonOnly || enc == jsonBody) && (!c.sparse || o.name == "profile" && target == "name") &&
					(!c.lists || target == "m" || target == "phones") && (!c.costly || enc == costlyEnc) {
					classes = append(classes, c)
				}
			}
			if target == "file" {
				classes = fileClasses
			}
			if p.sampled(o, target) {
				drawn := pick(p.rng, classes...)
				classes = slices.DeleteFunc(slices.Clone(classes), func(c valueClass) bool { return c.name != "duplicated" && c.name != drawn.name })
			}
			for _, c := range classes {
				pr := p.plausibleProbe(o, enc, target)
				pr.target, pr.class = target, c.name
				if (target == "token" || target == "auth") && c.name != "duplicated" {
					pr.anonymous = true // the one token is not valid, whatever the class
				}
				c.apply(p, pr, target)
				p.run(pr)
			}
		}
	}
}

// sampled reports whether target of o gets only a sample of the classes: a hostile op
// makes an unknown op whatever the row (nosuchop and login have them all); a hostile
// token makes an anonymous request (the anonymous phase has them all); anonymously, the
// other fields of an op that needs a token are only decoded before the refusal.
func (p *prober) sampled(o opFields, target string) bool {
	switch target {
	case "op":
		return o.name != "nosuchop" && o.name != "login"
	case "token", "auth":
		return p.phase == authenticated
	}
	return p.phase == anonymous && o.token
}

// plausibleProbe is a request for o in enc whose fields other than target are plausible
// (present or not), so that a hostile target reaches as deep as it can.
func (p *prober) plausibleProbe(o opFields, enc encoding, target string) *probe {
	pr := &probe{enc: enc, op: o.name, anonymous: p.phase == anonymous}
	if enc == jsonBody && p.rng.IntN(3) == 0 {
		// The current iOS app's JSON: any label, or none.
		pr.contentType = pick(p.rng, "-", "application/x-www-form-urlencoded", "text/plain; charset=utf-8", "application/octet-stream")
	}
	if target != "op" {
		pr.fields = append(pr.fields, field{"op", p.opValue(o.name)})
	}
	if o.token && target != "token" && target != "auth" {
		switch p.rng.IntN(10) {
		case 0: // none
		case 1:
			pr.fields = append(pr.fields, field{"auth", p.token()}) // the Swift app's attachments
		default:
			pr.fields = append(pr.fields, field{"token", p.token()})
		}
	}
	for _, f := range o.fields {
		if f == target || p.rng.IntN(4) == 0 {
			continue
		}
		if f == "file" {
			if enc == multipart_ && p.rng.IntN(2) == 0 {
				pr.files = append(pr.files, filePart{"photo", "p.png", p.w.png})
			}
			continue
		}
		if v, ok := p.plausible(f, enc); ok {
			pr.fields = append(pr.fields, field{f, v})
		}
	}
	p.rng.Shuffle(len(pr.fields), func(i, j int) { pr.fields[i], pr.fields[j] = pr.fields[j], pr.fields[i] })
	return pr
}

// opValue is the op field for op, as the apps spell it.
func (p *prober) opValue(op string) wire {
	switch p.rng.IntN(8) {
	case 0:
		return textValue(strings.ToUpper(op))
	case 1:
		return textValue(" " + op + "\n")
	}
	return textValue(op)
}

// token is a token as this phase sends it: an actor's, or, when anonymous, none that is valid.
func (p *prober) token() wire {
	if p.phase == anonymous {
		return textValue(p.badToken())
	}
	tok := p.w.tokens[pick(p.rng, actors...)]
	switch p.rng.IntN(10) {
	case 0:
		tok = " " + tok + "\t" // trimmed: still valid
	case 1:
		// Still valid: the tokens column compares without case, as the original
		// schema's ascii_general_ci does (and mesibo's tokens are hex).
		tok = strings.ToUpper(tok)
	}
	return textValue(tok)
}

// badToken is a token that is no valid token of anyone, though some look close.
func (p *prober) badToken() string {
	tok := p.w.tokens[pick(p.rng, actors...)]
	switch p.rng.IntN(9) {
	case 0:
		return tok[1:] + tok[:1]
	case 1:
		i := p.rng.IntN(len(tok))
		return tok[:i] + string(rune('g'+p.rng.IntN(10))) + tok[i+1:]
	case 2:
		return tok[:len(tok)-1]
	case 3:
		return tok + "0"
	case 4:
		return tok[:17]
	case 5:
		return tok[:20] + "\x00" + tok[21:]
	case 6:
		return strings.Repeat("é", 10+p.rng.IntN(30))
	case 7:
		return strings.Repeat("a", 16+p.rng.IntN(3))
	}
	return fmt.Sprintf("%064x", p.rng.Uint64())
}

// plausible is a value of the field an app might send, pointing into the world.
func (p *prober) plausible(name string, enc encoding) (wire, bool) {
	r := p.rng
	asNumber := func(n int64) wire {
		v := strconv.FormatInt(n, 10)
		if enc == jsonBody && r.IntN(2) == 0 {
			return wire{text: v, json: v}
		}
		return textValue(v)
	}
	asList := func(items []string) wire {
		if enc == jsonBody && r.IntN(2) == 0 {
			data, _ := json.Marshal(items)
			return wire{text: strings.Join(items, ","), json: string(data)}
		}
		return textValue(strings.Join(items, ","))
	}
	phones := func() []string {
		n := 1 + r.IntN(3)
		out := make([]string, n)
		for i := range out {
			out[i] = pick(r, actorA, actorB, actorC, bystanderD, bystanderE, neverRegistered, "+91 98123 46103", "09812346102", seededPhone(r))
		}
		return out
	}
	switch name {
	case "token", "auth":
		return p.token(), true
	case "phone":
		if p.phase == anonymous && r.IntN(3) == 0 {
			return textValue(reviewPhone), true // its fixed code logs in: not a world user
		}
		return textValue(pick(r, "+"+actorA, actorB, "+91 98123 46103", reviewPhone, "+"+seededPhone(r))), true
	case "appid":
		return textValue(pick(r, "com.example.app", "com.mesibo.messenger")), true
	case "otp", "code":
		return textValue(pick(r, reviewCode, "123456", "000000")), true
	case "name":
		return textValue(pick(r, "Ada", "Café & Friends 😀", "")), true
	case "status":
		return textValue(pick(r, "here", "busy")), true
	case "device":
		return textValue("device-1"), true
	case "aktoken":
		return wire{}, false // an app that still sends it is refused before anything else
	case "notifytoken":
		return textValue(fmt.Sprintf("fcm-%x", r.Uint32())), true
	case "ts":
		return asNumber(pick(r, 0, time.Now().Unix()-3600)), true
	case "mid":
		return asNumber(r.Int64N(1000)), true
	case "gid":
		switch r.IntN(6) {
		case 0:
			return textValue("Optional(0)"), true
		case 1:
			return textValue(fmt.Sprintf("Optional(%d)", p.w.g)), true
		case 2:
			return asNumber(p.w.g2), true
		case 3:
			return asNumber(0), true
		}
		return asNumber(p.w.g), true
	case "m", "phones":
		return asList(phones()), true
	}
	return asNumber(r.Int64N(3)), true // the flags: dt, prod, reset, hidden, type, admin, delete, profile
}

func seededPhone(r *rand.Rand) string { return fmt.Sprintf("9198%08d", r.IntN(1e8)) }

func pick[T any](r *rand.Rand, items ...T) T { return items[r.IntN(len(items))] }

// chaos is a request of random shape: a random op, several hostile fields at once, junk
// fields, duplicates, odd headers.
func (p *prober) chaos() *probe {
	r := p.rng
	o := propertyOps[r.IntN(len(propertyOps))]
	enc := encodings[r.IntN(len(encodings))]
	pr := p.plausibleProbe(o, enc, "")
	pr.target, pr.class = "several", "chaos"
	all := []string{"op", "token", "auth", "phone", "appid", "otp", "code", "name", "status", "dt", "device", "aktoken",
		"notifytoken", "prod", "ts", "phones", "reset", "hidden", "gid", "m", "type", "admin", "delete", "profile", "mid"}
	for range 1 + r.IntN(4) {
		target := pick(r, all...)
		c := pick(r, valueClasses...)
		if c.jsonOnly && enc != jsonBody || c.sparse || c.lists {
			continue
		}
		c.apply(p, pr, target)
		pr.class += "+" + c.name
	}
	if enc == multipart_ && r.IntN(3) == 0 {
		pick(r, fileClasses...).apply(p, pr, "file")
	}
	for range r.IntN(3) {
		pr.fields = append(pr.fields, field{pick(r, simpleClasses...).gen(p).text, pick(r, simpleClasses...).gen(p)})
	}
	switch r.IntN(10) { // the shape of the request itself
	case 0:
		pr.header = map[string]string{"X-Forwarded-For": pick(r, "not-an-ip", "203.0.113.9, ::1", "::ffff:1.2.3.4", strings.Repeat("9", 5000), "1.2.3.4:80", "[::1]")}
	case 1:
		pr.header = map[string]string{"Content-Encoding": pick(r, "gzip", "br", "identity, gzip")}
	case 2:
		pr.method = pick(r, http.MethodPut, http.MethodPatch, http.MethodDelete)
	case 3:
		for i := range 2000 + r.IntN(10000) {
			pr.fields = append(pr.fields, field{"f" + strconv.Itoa(i), textValue("x")})
		}
	}
	if enc != query {
		switch r.IntN(8) {
		case 0:
			pr.contentType = pick(r, "multipart/form-data", "multipart/form-data; boundary=", "application/json; charset=utf-16",
				"text/html", "application/x-www-form-urlencoded; charset=\xff", ";;;", "image/png")
		case 1:
			pr.chunked = true
		case 2:
			pr.prefix = pick(r, "\ufeff", "\r\n\r\n", " \t", "\x00")
		}
	}
	return pr
}

// valueClass is a class of hostile values; apply puts one of them in the target field
// of a probe.
type valueClass struct {
	name string
	// jsonOnly classes are JSON types other than a string.
	jsonOnly bool
	// sparse classes are costly and take the same path in every op (a body over its
	// limit): a sweep sends them only as a profile's name.
	sparse bool
	// lists classes are sent only in the list fields (m, phones).
	lists bool
	// costly classes (large values the server takes long to read under -race) are
	// sent in one encoding per field of an op, drawn at random; a campaign's rounds
	// cover the others.
	costly bool
	gen    func(p *prober) wire
	// place, when set, replaces setting the field to gen's value.
	place func(p *prober, pr *probe, target string)
}

func (c valueClass) apply(p *prober, pr *probe, target string) {
	if c.place != nil {
		c.place(p, pr, target)
		return
	}
	setField(pr, target, c.gen(p))
}

// setField puts v in the probe's field name, replacing what is there.
func setField(pr *probe, name string, v wire) {
	pr.fields = slices.DeleteFunc(pr.fields, func(f field) bool { return f.name == name })
	pr.fields = append(pr.fields, field{name, v})
}

// Numbers out of every range a column or a parser has.
var hostileNumbers = []string{
	"-1", "-0", "0", "00000000000000000001", "+1", "2147483647", "2147483648", "-2147483649", "4294967295", "4294967296",
	"9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616", "99999999999999999999999",
	"1e400", "-1e400", "1e-400", "1e18", "1.9", "-0.5", ".5", "5.", "0x10", "1_000", "NaN", "Inf", "-Infinity", "12abc",
	"  7  ", "1e", "--1", "٣", "１２",
}

// valueClasses are the hostile values for any field; simpleClasses those of them cheap
// enough to be a second value or a junk field's name. (Set in init: the classes refer to
// each other.)
var valueClasses, simpleClasses []valueClass

func init() {
	valueClasses = []valueClass{
		{name: "empty", gen: func(p *prober) wire { return textValue("") }},
		{name: "whitespace", gen: func(p *prober) wire {
			return textValue(strings.Repeat(pick(p.rng, " ", "\t", "\r\n", " \t\n\v\f\r ", "\u00a0", "\u3000", "\u2028", "\ufeff", "\u200b"), 1+p.rng.IntN(4)))
		}},
		{name: "long", gen: func(p *prober) wire {
			// Around the sizes of the columns and limits: char(64) tokens, varchar(128)
			// photos, varchar(256) push tokens, 4 KB names, 16 KB request heads.
			n := pick(p.rng, 16, 17, 63, 64, 65, 127, 128, 129, 255, 256, 257, 4095, 4096, 4097, 8193, 15000)
			return textValue(repeatTo(pick(p.rng, "x", "9", "é", "😀", "9,", "<>"), n))
		}},
		{name: "over 64 KB", costly: true, gen: func(p *prober) wire {
			return textValue(repeatTo(pick(p.rng, "x", "9", "é", "😀", "919812346102,", "\x00"), 64<<10+1+p.rng.IntN(16<<10)))
		}},
		{name: "non-ASCII", gen: func(p *prober) wire {
			return textValue(pick(p.rng, "é", "Ünïcödé", "日本語のテキスト", "😀👍🏽👨‍👩‍👧", "\u202eevil\u202c", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǫ̗", "٩١٩٨١٢٣٤٦١٠٢",
				"９１９８１２３４６１０２", "\U0010FFFF", "\uFFFD", "𝟗𝟏𝟗𝟖𝟏𝟐𝟑𝟒𝟔𝟏𝟎𝟐", "ß", "İ", strings.Repeat("😀", 1024), strings.Repeat("é", 2049)))
		}},
		{name: "invalid UTF-8", gen: func(p *prober) wire {
			return textValue(pick(p.rng, "\xff", "\xfe\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "Ada\xff\xfe",
				"919812346102\x80", string([]byte{byte(0x80 + p.rng.IntN(0x80)), byte(p.rng.IntN(256))})))
		}},
		{name: "control bytes", gen: func(p *prober) wire {
			return textValue(pick(p.rng, "\x00", "a\x00b", "\x01\x02\x1f", "\x7f", "\x1b[2J", "x\r\nX-Injected: 1", "\b\f",
				strings.Repeat("\x00", 100), "919812346102\x00", "\u0085"))
		}},
		{name: "SQL", gen: func(p *prober) wire {
			return textValue(pick(p.rng, "' OR '1'='1", "1 OR 1=1", "1) OR 1=1 --", `"; DROP TABLE users; --`, `\`, `\'`, "%", "_",
				"1; SELECT SLEEP(5)", "`groups`", "0x41", "1' UNION SELECT token FROM tokens --", "NULL", "' COLLATE utf8mb4_bin --",
				"CHAR(0x61)", "/*", "*/", "';", "1e0'"))
		}},
		{name: "shell and templates", gen: func(p *prober) wire {
			return textValue(pick(p.rng, "$(reboot)", "`id`", "; rm -rf /", "| cat /etc/passwd", "&&", "../../../../etc/passwd",
				"{env.E2E_MESIBO_APP_TOKEN}", "{env.E2E_OTP_SECRET}", "{http.request.header.Cookie}", "{{.}}", "${jndi:ldap://x}",
				"%n%s%x", "<script>alert(1)</script>", `"><img src=x onerror=alert(1)>`, "%NAME%", "%GROUP%", "~", "\\\\server\\share"))
		}},
		{name: "number out of range", gen: func(p *prober) wire { return textValue(pick(p.rng, hostileNumbers...)) }},
		{name: "Optional(…)", gen: func(p *prober) wire {
			return textValue(pick(p.rng, "Optional(0)", "Optional(1)", "Optional(-1)", fmt.Sprintf("Optional(%d)", p.w.g2), "Optional(",
				"Optional()", "Optional(99999999999999999999)", "Optional(Optional(0))", "optional(0)", "Optional(nil)",
				`Optional("5001")`, " Optional( 7 ) ", "Optional(1e400)", "Optional(0x1)"))
		}},
		{name: "percent garbage", gen: func(p *prober) wire {
			v := pick(p.rng, "%", "%zz", "%C3%28", "%00", "%25", "%%%", "%2", "%u00e9", "%2C%2C", "919812346102%2C919812346103",
				"+%2B91+98123", "%E2%80%AE", "%FF%FE")
			return wire{text: v, raw: p.rng.IntN(2) == 0} // raw: the garbage is the encoding itself
		}},
		{name: "thousands of items", costly: true, gen: func(p *prober) wire {
			items := make([]string, pick(p.rng, 1000, 3000, 5001, 8000))
			for i := range items {
				items[i] = pick(p.rng, seededPhone(p.rng), strconv.Itoa(p.rng.IntN(1000)), "", " ", "+", actorB, "x")
			}
			return textValue(strings.Join(items, ","))
		}},
		{name: "thousands of phone numbers", lists: true, costly: true, place: func(p *prober, pr *probe, target string) {
			// Valid numbers, two registered: lists that pass every check and reach the
			// store and mesibo whole (members, contacts), or are one over max_phones.
			n := pick(p.rng, 1000, 2000)
			if target == "phones" && p.rng.IntN(3) == 0 {
				n = 5001
			}
			items := make([]string, n)
			for i := range items {
				items[i] = seededPhone(p.rng)
			}
			items[0], items[n-1] = actorB, bystanderD
			setField(pr, target, textValue(strings.Join(items, ",")))
		}},
		{name: "duplicated", place: func(p *prober, pr *probe, target string) {
			// The field twice, one of the copies hostile; or once in the query and once in
			// the body.
			good, ok := p.plausible(target, pr.enc)
			if !ok || target == "op" {
				good = textValue(pr.op)
			}
			bad := pick(p.rng, simpleClasses...).gen(p)
			first, second := good, bad
			if p.rng.IntN(2) == 0 {
				first, second = bad, good
			}
			pr.fields = slices.DeleteFunc(pr.fields, func(f field) bool { return f.name == target })
			if pr.enc != query && p.rng.IntN(2) == 0 {
				pr.fields = append(pr.fields, field{target, first})
				pr.inQuery = append(pr.inQuery, field{target, second})
				return
			}
			pr.fields = append(pr.fields, field{target, first}, field{target, second})
		}},
		{name: "phone-like", gen: func(p *prober) wire {
			return textValue(pick(p.rng, "+", "00", "0", "+91", "+91 98123 4610X", actorB+"000000000000000000", "-"+actorB, "+1 (555) 010-0999",
				"00"+actorB, "+00"+actorB, actorB+","+actorC, "tel:+"+actorB, "919812346102;ext=1", "+"+strings.Repeat("9", 40), "1"))
		}},
		{name: "token-like", gen: func(p *prober) wire { return textValue(p.badToken()) }},
		{name: "over 1 MB", sparse: true, gen: func(p *prober) wire { return textValue(strings.Repeat("x", 1<<20+1)) }},
		// JSON values other than strings.
		{name: "JSON number", jsonOnly: true, gen: func(p *prober) wire {
			v := pick(p.rng, "0", "1", "-1", "2147483648", "4294967296", "9223372036854775808", "-9223372036854775809", strconv.FormatInt(p.w.g, 10))
			return wire{text: v, json: v}
		}},
		{name: "JSON huge number", jsonOnly: true, gen: func(p *prober) wire {
			v := pick(p.rng, "1e400", "-1e400", "1e-400", "99999999999999999999999", "123456789012345678901234567890.5e10", strings.Repeat("9", 5000))
			return wire{text: v, json: v}
		}},
		{name: "JSON float", jsonOnly: true, gen: func(p *prober) wire {
			v := pick(p.rng, "1.5", "-0.5", "0.0", "3.14e2", "1E3", "-0", "5001.9")
			return wire{text: v, json: v}
		}},
		{name: "JSON bool", jsonOnly: true, gen: func(p *prober) wire {
			v := pick(p.rng, "true", "false")
			return wire{text: v, json: v}
		}},
		{name: "JSON null", jsonOnly: true, gen: func(p *prober) wire { return wire{text: "null", json: "null"} }},
		{name: "JSON object", jsonOnly: true, gen: func(p *prober) wire {
			v := pick(p.rng, "{}", `{"a":1}`, `{"op":"login"}`, `{"":[]}`, `{"gid":{"gid":{}}}`)
			return wire{text: v, json: v}
		}},
		{name: "JSON array", jsonOnly: true, gen: func(p *prober) wire {
			v := pick(p.rng, "[]", `["a"]`, "[1,2]", `[null,true,"x",1.5]`, `[" ",""]`, `["`+actorB+`","`+actorC+`"]`, "[1e400]", `["\u0000"]`)
			return wire{text: v, json: v}
		}},
		{name: "JSON nested array", jsonOnly: true, gen: func(p *prober) wire {
			depth := pick(p.rng, 2, 3, 100, 10001) // encoding/json refuses nesting over 10000
			v := strings.Repeat("[", depth) + `"` + actorB + `"` + strings.Repeat("]", depth)
			if p.rng.IntN(3) == 0 {
				v = pick(p.rng, "[{}]", "[[]]", `[[1],{"a":[2]}]`)
			}
			return wire{text: "nested", json: v}
		}},
		{name: "JSON array of thousands", jsonOnly: true, gen: func(p *prober) wire {
			items := make([]string, pick(p.rng, 1000, 6000))
			for i := range items {
				items[i] = pick(p.rng, strconv.Quote(seededPhone(p.rng)), strconv.Itoa(p.rng.IntN(1e6)), "null", `""`, "[]")
			}
			return wire{text: "thousands", json: "[" + strings.Join(items, ",") + "]"}
		}},
	}
	for _, c := range valueClasses {
		if c.gen != nil && !c.jsonOnly && !c.sparse && c.name != "over 64 KB" && c.name != "thousands of items" {
			simpleClasses = append(simpleClasses, c)
		}
	}
}

// fileClasses are hostile file parts, for the ops that read one.
var fileClasses = []valueClass{
	{name: "picture", place: func(p *prober, pr *probe, _ string) { setFile(pr, filePart{"photo", "p.png", p.w.png}) }},
	{name: "empty file", place: func(p *prober, pr *probe, _ string) { setFile(pr, filePart{"photo", "p.png", nil}) }},
	{name: "garbage", place: func(p *prober, pr *probe, _ string) {
		data := make([]byte, 1+p.rng.IntN(20<<10))
		for i := range data {
			data[i] = byte(p.rng.Uint32())
		}
		setFile(pr, filePart{"photo", "p.jpg", data})
	}},
	{name: "truncated picture", place: func(p *prober, pr *probe, _ string) {
		setFile(pr, filePart{"photo", "p.png", p.w.png[:1+p.rng.IntN(len(p.w.png)-1)]})
	}},
	{name: "not a picture", place: func(p *prober, pr *probe, _ string) {
		setFile(pr, filePart{"photo", pick(p.rng, "x.html", "x.svg", "x.gif", "x.jpg"), []byte(pick(p.rng,
			"<html><script>alert(1)</script></html>", `<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>`,
			"GIF89a", "\xff\xd8\xff\xe0garbage", "RIFF\x00\x00\x00\x00WEBPVP8 "))})
	}},
	{name: "picture bomb header", place: func(p *prober, pr *probe, _ string) {
		setFile(pr, filePart{"photo", "bomb.png", p.w.bomb})
	}},
	{name: "hostile file name", place: func(p *prober, pr *probe, _ string) {
		setFile(pr, filePart{pick(p.rng, "photo", "", "file", strings.Repeat("p", 300), "é\x00"),
			pick(p.rng, "../../../x.png", "a\x00.png", strings.Repeat("n", 300)+".png", "é.png", ".png", "x.php", "\xff.png"), p.w.png})
	}},
	{name: "two files", place: func(p *prober, pr *probe, _ string) {
		setFile(pr, filePart{"photo", "a.png", p.w.png})
		pr.files = append(pr.files, filePart{"photo2", "b.png", p.w.png})
	}},
	{name: "file over 1 MB", place: func(p *prober, pr *probe, _ string) {
		setFile(pr, filePart{"photo", "big.png", append(slices.Clone(p.w.png), make([]byte, 1<<20)...)})
	}},
}

func setFile(pr *probe, f filePart) { pr.files = []filePart{f} }

// repeatTo repeats s up to n bytes.
func repeatTo(s string, n int) string { return strings.Repeat(s, n/len(s)+1)[:n] }

// pngClaiming is a small PNG whose header claims width × height pixels.
func pngClaiming(t *testing.T, width, height uint32) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// The IHDR chunk: length at 8, type at 12, width and height at 16, CRC at 29.
	binary.BigEndian.PutUint32(b[16:], width)
	binary.BigEndian.PutUint32(b[20:], height)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

// errorCodes are the codes PROTOCOL.md §2 names, and the project's additions.
var errorCodes = map[string]bool{
	"NOOP": true, "AUTHFAIL": true, "BADOP": true, "MISSINGAPPID": true, "BADPHONE": true, "BADCODE": true, "BADAKTOKEN": true,
	"BADUSER": true, "BADAPP": true, "MISSINGPARA": true, "MISSINGFILE": true, "BADIMAGE": true, "BADGROUP": true,
	"NOTMEMBER": true, "RATELIMIT": true, "BADREQUEST": true, "TOOLARGE": true, "TEMPFAIL": true,
}

// secrets must never appear in an answer, whatever placeholder a client sends.
var secrets = []string{appToken, hookSecret, "otp-secret"}

var propertyClient = &http.Client{Timeout: 30 * time.Second}

// run sends pr, checks the property on its answer, and that it left the protected rows
// alone.
func (p *prober) run(pr *probe) {
	p.sent++
	p.n++
	n := p.n
	if pr.hangUp != stays {
		p.sendAndHangUp(pr, n)
		p.guard(pr, n, p.phase == authenticated) // a logout, say, may have gone through
		return
	}
	op, result, settled := p.check(pr, n)
	if result == "OK" || !settled {
		p.guard(pr, n, p.phase == authenticated && result == "OK" && slices.Contains([]string{"logout", "delgroup", "setgroup", "editmembers", "setadmin"}, op))
	}
}

// sendAndHangUp sends pr, request n, and hangs up as it says, with a reset, as a client
// killed mid-way does. There is no answer to check; the log and the rows are checked.
func (p *prober) sendAndHangUp(pr *probe, n int) {
	req, err := pr.request()
	if err != nil {
		p.t.Fatalf("request %d: %v", n, err)
	}
	conn, err := net.Dial("tcp", fmt.Sprintf("localhost:%d", basePort))
	if err != nil {
		p.found(pr, n, "no connection", err.Error())
		return
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	conn.(*net.TCPConn).SetReadBuffer(4 << 10) // a small window: the server cannot write all ahead
	if req.Write(conn) == nil && pr.hangUp == midAnswer {
		conn.Read(make([]byte, 64))
	}
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
	if pr.hangUp == beforeAnswer {
		time.Sleep(100 * time.Millisecond) // let the server give up its work before the rows are read
	}
}

// hangUps sends requests whose answer is large (a sync of 1,000 contacts with long
// names, about 4 MB) and hangs up after its first bytes, while the server still writes;
// and requests of every op, plausible and with a hostile field, on which it hangs up
// before the answer, while the server still works.
func (p *prober) hangUps() {
	r := p.rng
	remove := p.w.crowd(1000)
	defer remove()
	for range 5 {
		pr := &probe{enc: pick(r, encodings...), op: "getcontacts", hangUp: midAnswer, target: "a 4 MB answer", class: "hang-up mid-answer"}
		pr.fields = []field{{"op", textValue(pr.op)}, {"token", textValue(p.w.tokens[actorA])}, {"ts", textValue("0")}}
		p.run(pr)
	}
	for _, o := range propertyOps {
		for _, target := range []string{"", pick(r, o.targets()...)} {
			pr := p.plausibleProbe(o, pick(r, encodings...), target)
			pr.hangUp, pr.target, pr.class = beforeAnswer, "plausible", "hang-up before the answer"
			if c := pick(r, simpleClasses...); target != "" {
				c.apply(p, pr, target)
				pr.target, pr.class = target, c.name+", hang-up before the answer"
			}
			p.run(pr)
		}
	}
}

// check sends pr, request n, checks the property on its answer, and returns its op and
// result; settled is false for an answer that broke the property or is no API answer.
// A refusal changes nothing (the subtest's last snapshot would show it if it did), so
// only after the others is it worth taking a fingerprint of the protected rows.
func (p *prober) check(pr *probe, n int) (op, result string, settled bool) {
	found := p.count()
	defer func() { settled = settled && p.count() == found }()
	req, err := pr.request()
	if err != nil {
		p.t.Fatalf("request %d: %v", n, err)
	}
	head := headSize(req)
	resp, err := propertyClient.Do(req)
	if err != nil {
		p.found(pr, n, "no answer: "+errorKind(err), err.Error())
		return
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		p.found(pr, n, "answer cut off", err.Error())
		return
	}
	answer := fmt.Sprintf("HTTP %d %s", resp.StatusCode, clip(string(raw), 300))
	switch {
	case resp.StatusCode == http.StatusRequestHeaderFieldsTooLarge && head > headerLimit:
		return "", "", true // the documented transport-level refusal
	case resp.StatusCode == http.StatusOK && head > headerLimitRefused+headSlack:
		p.found(pr, n, "a request head over the header limit was not refused", answer)
		return
	case resp.StatusCode != http.StatusOK:
		p.found(pr, n, fmt.Sprintf("HTTP %d", resp.StatusCode), answer)
		return
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		p.found(pr, n, "Content-Type "+ct, answer)
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil || body == nil {
		p.found(pr, n, "answer is not a JSON object", answer)
		return
	}
	for _, s := range secrets {
		if strings.Contains(string(raw), s) {
			p.found(pr, n, "a secret in the answer", answer)
		}
	}
	result, _ = body["result"].(string)
	code, _ := body["error"].(string)
	op, _ = body["op"].(string)
	if c, _ := body["code"].(string); code == "" && c != "" {
		p.answers[pr.op+" "+result+" "+c]++
	} else {
		p.answers[pr.op+" "+result+" "+code]++
	}
	switch {
	case result != "OK" && result != "FAIL":
		p.found(pr, n, "result is neither OK nor FAIL", answer)
	case body["code"] == "NOOP":
		if result != "FAIL" {
			p.found(pr, n, "NOOP not a FAIL", answer)
		}
		return op, result, true // the one answer without ts
	case result == "FAIL" && code == "":
		p.found(pr, n, "FAIL without an error code", answer)
	case code == "DBERROR":
		p.found(pr, n, "DBERROR", answer)
	case result == "FAIL" && !errorCodes[code]:
		p.found(pr, n, "unknown error code "+clip(code, 40), answer)
	}
	if ts, ok := body["ts"].(float64); !ok || ts < 1e9 {
		p.found(pr, n, "no numeric ts", answer)
	}
	if pr.anonymous && result == "OK" && op != "login" && op != "loginui" && op != "logout" {
		p.found(pr, n, "OK without a valid token", answer)
	}
	return op, result, true
}

// answerCounts renders the answers counted so far, sorted.
func (p *prober) answerCounts() string {
	var out []string
	for k, n := range p.answers {
		out = append(out, fmt.Sprintf("%s %d", strings.TrimSpace(k), n))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// count is how many violations the prober has seen.
func (p *prober) count() int {
	n := 0
	for _, f := range p.findings {
		n += f.count
	}
	return n
}

// guard checks that request n left the protected rows alone and, if it changed them or
// may have changed the world (repair), puts the world back.
func (p *prober) guard(pr *probe, n int, repair bool) {
	if fp := p.w.fingerprint(p.prot); fp != p.fp {
		p.found(pr, n, "changed rows it had no right to change", p.w.changes(p.prot, p.before))
		repair = true
	}
	if repair {
		p.w.repair()
		p.rebase()
	}
}

// rebase takes the protected rows as they are now as the reference.
func (p *prober) rebase() {
	p.prot = p.w.protected(p.phase)
	p.before = p.w.snapshot(p.prot)
	p.fp = p.w.fingerprint(p.prot)
}

// headSize is about the size of req's head on the wire: its request line and headers,
// give or take the few headers the client adds (headSlack).
func headSize(req *http.Request) int {
	n := len(req.Method) + 1 + len(req.URL.RequestURI()) + len(" HTTP/1.1\r\n") + len("Host: \r\n") + len(req.URL.Host)
	for k, vs := range req.Header {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// headSlack bounds what the client adds to a head: User-Agent, Content-Length,
// Accept-Encoding, the final CRLF.
const headSlack = 256

// errorKind is the kind of a transport error, without the addresses that vary.
func errorKind(err error) string {
	switch s := err.Error(); {
	case strings.Contains(s, "EOF"):
		return "connection closed (a panic?)"
	case strings.Contains(s, "timeout"), strings.Contains(s, "deadline"):
		return "timeout"
	default:
		return "transport error"
	}
}

// found records a violation; reports show each distinct one once, with a count.
func (p *prober) found(pr *probe, n int, problem, answer string) {
	sig := fmt.Sprintf("%s: %s=%s in %s", problem, pr.target, pr.class, pr.enc)
	if p.findings == nil {
		p.findings = map[string]*finding{}
	}
	f := p.findings[sig]
	if f == nil {
		f = &finding{example: fmt.Sprintf("%s request %d: %s\n\tanswer: %s", p.label, n, pr.describe(), answer)}
		p.findings[sig] = f
		p.order = append(p.order, sig)
	}
	f.count++
}

// report fails the current subtest with each distinct violation, and the error lines
// logged meanwhile (those of notifications, which the outbox sends later, may come a
// subtest late), and starts afresh.
func (p *prober) report() {
	p.w.reportLog(p.t)
	if c := p.w.changes(p.prot, p.before); c != "" {
		p.t.Errorf("these requests changed rows they had no right to change: %s", c)
		p.w.repair()
		p.rebase()
	}
	for _, sig := range p.order {
		f := p.findings[sig]
		p.t.Errorf("%s (%d×), e.g. %s", sig, f.count, f.example)
	}
	p.findings, p.order = nil, nil
}

// Package mesibotest is an in-process fake of the mesibo backend API for tests. It speaks both
// the JSON and the older form encoding, keeps users, groups and messages in memory, records
// every request, and can be told to fail in the ways the real service fails.
package mesibotest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a running fake. Use URL as mesiboclient.Config.Endpoint.
type Server struct {
	// URL is the endpoint to call; the fake answers on any path.
	URL string

	appToken string
	done     chan struct{} // closed at cleanup so delayed answers stop waiting

	mu       sync.Mutex
	calls    []Call
	messages []Call
	failNext []pending
	failAll  map[string]Failure
	users    map[string]FakeUser
	groups   map[int64]FakeGroup
	nextUID  int64
	nextGID  int64
	nextMID  int64
	// groupSetAdds: groupset adds its members rather than replacing the list.
	groupSetAdds bool
}

// Call is one request as the fake received it.
type Call struct {
	Op string
	// Fields holds the decoded request. For JSON it is the whole object as encoding/json
	// decodes it into map[string]any (nested objects as map[string]any, numbers as float64);
	// for the form encoding each field is a string (the first value).
	Fields map[string]any
}

// Failure says how a call fails. Delay applies first; then Garbage, a non-2xx Status or Refuse
// answers instead of the normal processing, in that order. A Failure with only Delay set slows
// the call down and then processes it normally.
type Failure struct {
	Refuse  string        // answer result:false with this error code
	Status  int           // answer this HTTP status (with Garbage: the status of the garbage)
	Delay   time.Duration // wait this long first; gives up if the client goes away
	Garbage bool          // answer a body that is not JSON
}

// FakeUser is a user the fake knows. Token is "" after the token was removed.
type FakeUser struct {
	UID   int64
	Token string
	AppID string
	Name  string
}

// FakeGroup is a group the fake knows.
type FakeGroup struct {
	Name    string
	Flag    int
	Members []string
}

type pending struct {
	op string
	n  int
	f  Failure
}

// NewServer starts a fake that accepts appToken; it is shut down when the test ends.
func NewServer(t testing.TB, appToken string) *Server {
	t.Helper()
	s, stop := Start(appToken)
	t.Cleanup(stop)
	return s
}

// New returns a fake that accepts appToken but is not serving yet: serve Handler on a
// listener of your own (and set URL if anything reads it). For tools such as a load test,
// which run the fake outside of a test; tests use NewServer.
func New(appToken string) *Server {
	return &Server{
		appToken: appToken,
		done:     make(chan struct{}),
		failAll:  map[string]Failure{},
		users:    map[string]FakeUser{},
		groups:   map[int64]FakeGroup{},
		nextUID:  1001,
		nextGID:  5001,
		nextMID:  1,
	}
}

// Handler is the fake's HTTP handler; it answers on any path.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// Start starts a fake that accepts appToken on a loopback port, without a testing.TB.
// stop releases delayed answers and shuts the server down; call it once.
func Start(appToken string) (s *Server, stop func()) {
	s = New(appToken)
	hs := httptest.NewServer(s.Handler())
	s.URL = hs.URL + "/backend/"
	return s, func() {
		close(s.done) // httptest's Close waits for handlers, so release delayed ones first
		hs.Close()
	}
}

// Calls returns every request received so far, in order, failed ones included.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// CallsOf returns the requests received for op, in order.
func (s *Server) CallsOf(op string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

// Messages returns the message calls that succeeded, in order.
func (s *Server) Messages() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.messages)
}

// FailNext makes the next n calls of op fail as f; op "" matches any op. Queued failures are
// used in the order they were added.
func (s *Server) FailNext(op string, n int, f Failure) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = append(s.failNext, pending{op: op, n: n, f: f})
}

// FailAll makes every call of op (any op for "") fail as f until Reset. FailNext takes
// precedence, and a FailAll for the op itself over one for "".
func (s *Server) FailAll(op string, f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAll[op] = f
}

// Reset clears all failures; recorded calls and state stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = nil
	s.failAll = map[string]Failure{}
}

// GroupSetAdds makes groupset add the members it lists to the group's members (adds
// set) instead of replacing them with the list (the default). Mesibo's documentation
// does not say which it does, so clients are tested against both.
func (s *Server) GroupSetAdds(adds bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groupSetAdds = adds
}

// ForgetUsers loses every user and starts uids again from the first, as a messaging
// service that lost its state would: it hands out uids that are already stored.
func (s *Server) ForgetUsers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users = map[string]FakeUser{}
	s.nextUID = 1001
}

// Users returns a snapshot of the users by address.
func (s *Server) Users() map[string]FakeUser {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]FakeUser, len(s.users))
	for a, u := range s.users {
		out[a] = u
	}
	return out
}

// Groups returns a snapshot of the groups by gid.
func (s *Server) Groups() map[int64]FakeGroup {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int64]FakeGroup, len(s.groups))
	for gid, g := range s.groups {
		g.Members = slices.Clone(g.Members)
		out[gid] = g
	}
	return out
}

// request is a decoded call plus how to read its fields in either encoding.
type request struct {
	Call
	json bool
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	q, decodeErr := decode(w, r)
	s.mu.Lock()
	s.calls = append(s.calls, q.Call)
	f, failing := s.failureFor(q.Op)
	s.mu.Unlock()

	if failing && s.fail(w, r, q.Op, f) {
		return
	}
	var a map[string]any
	switch {
	case decodeErr != nil:
		a = refuse(q.Op, "BADREQUEST")
	case q.get("token", "token") != s.appToken:
		a = refuse(q.Op, "AUTHFAIL")
	default:
		s.mu.Lock()
		a = s.handle(q)
		s.mu.Unlock()
	}
	writeJSON(w, http.StatusOK, a)
}

// decode reads a JSON or form request; anything not declared JSON is parsed as a form, which
// also covers GET with a query string.
func decode(w http.ResponseWriter, r *http.Request) (request, error) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" {
		var obj map[string]any
		if err := json.NewDecoder(r.Body).Decode(&obj); err != nil {
			return request{json: true}, err
		}
		op, _ := obj["op"].(string)
		return request{Call: Call{Op: op, Fields: obj}, json: true}, nil
	}
	if err := r.ParseForm(); err != nil {
		return request{}, err
	}
	fields := make(map[string]any, len(r.Form))
	for k, v := range r.Form {
		fields[k] = v[0]
	}
	return request{Call: Call{Op: r.Form.Get("op"), Fields: fields}}, nil
}

// lookup returns a field as a string: at the dotted jsonPath for JSON, at formKey for forms.
// The bool reports whether the field was present.
func (q request) lookup(jsonPath, formKey string) (string, bool) {
	if !q.json {
		v, ok := q.Fields[formKey].(string)
		return v, ok
	}
	var v any = q.Fields
	for _, k := range strings.Split(jsonPath, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[k]; !ok {
			return "", false
		}
	}
	switch v := v.(type) {
	case string:
		return v, true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	case nil:
		return "", true
	default:
		b, _ := json.Marshal(v)
		return string(b), true
	}
}

// get is lookup for callers that treat a missing field as empty.
func (q request) get(jsonPath, formKey string) string {
	v, _ := q.lookup(jsonPath, formKey)
	return v
}

func (q request) int(jsonPath, formKey string) int64 {
	v, _ := strconv.ParseInt(q.get(jsonPath, formKey), 10, 64)
	return v
}

func (q request) isTrue(jsonPath, formKey string) bool {
	v := q.get(jsonPath, formKey)
	return v == "true" || v == "1"
}

// id answers ids as numbers to JSON requests and as numeric strings to form requests, as the
// real service variously does, so clients are exercised with both.
func (q request) id(v int64) any {
	if q.json {
		return v
	}
	return strconv.FormatInt(v, 10)
}

// members parses a comma-separated member list, dropping blanks.
func members(m string) []string {
	var out []string
	for _, a := range strings.Split(m, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// failureFor picks the failure for a call of op, consuming a FailNext slot. Caller holds s.mu.
func (s *Server) failureFor(op string) (Failure, bool) {
	for i := range s.failNext {
		if p := &s.failNext[i]; p.op == "" || p.op == op {
			f := p.f
			if p.n--; p.n == 0 {
				s.failNext = slices.Delete(s.failNext, i, i+1)
			}
			return f, true
		}
	}
	if f, ok := s.failAll[op]; ok {
		return f, true
	}
	f, ok := s.failAll[""]
	return f, ok
}

// fail applies f and reports whether it answered (or gave up on) the call.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, op string, f Failure) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return true
		case <-s.done:
			return true
		}
	}
	switch {
	case f.Garbage:
		status := f.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		io.WriteString(w, "<html><body>502 Bad Gateway</body></html>{")
	case f.Status != 0 && (f.Status < 200 || f.Status > 299):
		http.Error(w, http.StatusText(f.Status), f.Status)
	case f.Refuse != "":
		writeJSON(w, http.StatusOK, refuse(op, f.Refuse))
	default:
		return false
	}
	return true
}

// handle performs an authenticated call and returns the answer. Caller holds s.mu.
func (s *Server) handle(q request) map[string]any {
	ok := map[string]any{"op": q.Op, "result": true}
	switch q.Op {
	case "useradd":
		addr := q.get("user.address", "addr")
		if addr == "" {
			return refuse(q.Op, "BADADDR")
		}
		u, known := s.users[addr]
		if !known {
			u.UID = s.nextUID
			s.nextUID++
		}
		u.Token = randomToken()
		u.AppID = q.get("user.token.appid", "appid")
		if name := q.get("user.name", "name"); name != "" {
			u.Name = name
		}
		s.users[addr] = u
		ok["user"] = map[string]any{"uid": q.id(u.UID), "token": u.Token}
	case "userset":
		addr := q.get("user.address", "addr")
		if u, known := s.users[addr]; known && q.isTrue("user.token.remove", "remove") {
			u.Token = ""
			s.users[addr] = u
		}
	case "message":
		s.messages = append(s.messages, q.Call)
		ok["mid"] = q.id(s.nextMID)
		s.nextMID++
	case "groupadd":
		gid := s.nextGID
		s.nextGID++
		g := FakeGroup{Name: q.get("name", "name"), Flag: int(q.int("flag", "flag")), Members: members(q.get("m", "m"))}
		s.groups[gid] = g
		ok["group"] = map[string]any{"gid": q.id(gid)}
	case "groupset", "groupdel", "groupeditmembers":
		gid := q.int("gid", "gid")
		g, known := s.groups[gid]
		if !known {
			return refuse(q.Op, "BADGROUP")
		}
		switch q.Op {
		case "groupdel":
			delete(s.groups, gid)
			return ok
		case "groupset":
			if name, has := q.lookup("name", "name"); has {
				g.Name = name
			}
			if _, has := q.lookup("flag", "flag"); has {
				g.Flag = int(q.int("flag", "flag"))
			}
			if m, has := q.lookup("m", "m"); has && s.groupSetAdds {
				g.Members = addMembers(g.Members, members(m))
			} else if has {
				g.Members = members(m)
			}
		case "groupeditmembers":
			edit := members(q.get("m", "m"))
			if q.isTrue("delete", "delete") {
				gone := setOf(edit)
				g.Members = slices.DeleteFunc(g.Members, func(a string) bool { return gone[a] })
			} else {
				g.Members = addMembers(g.Members, edit)
			}
		}
		s.groups[gid] = g
	default:
		return refuse(q.Op, "BADOP")
	}
	return ok
}

// addMembers is list with the addresses of add that it lacks appended.
func addMembers(list, add []string) []string {
	has := setOf(list)
	for _, a := range add {
		if !has[a] {
			has[a] = true
			list = append(list, a)
		}
	}
	return list
}

// setOf is the set of the addresses in list. Sets, not list look-ups: a client may send
// a group of tens of thousands of members, which the fake must keep up with.
func setOf(list []string) map[string]bool {
	set := make(map[string]bool, len(list))
	for _, a := range list {
		set[a] = true
	}
	return set
}

func refuse(op, code string) map[string]any {
	return map[string]any{"op": op, "result": false, "error": code}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// randomToken mints a user token like mesibo's: long, random, hex.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

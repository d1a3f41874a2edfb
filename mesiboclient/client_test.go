package mesiboclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
)

const appToken = "APPSECRET-4f1c2d9e8b7a"

func newClient(t *testing.T, endpoint string, edit ...func(*mesiboclient.Config)) *mesiboclient.Client {
	t.Helper()
	cfg := mesiboclient.Config{Endpoint: endpoint, AppToken: appToken, Timeout: 2 * time.Second}
	for _, e := range edit {
		e(&cfg)
	}
	c, err := mesiboclient.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// fixedServer answers every request with status and body, counting the requests.
func fixedServer(t *testing.T, status int, body string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(hs.Close)
	return hs, &n
}

func onlyCall(t *testing.T, s *mesibotest.Server, op string) mesibotest.Call {
	t.Helper()
	calls := s.CallsOf(op)
	if len(calls) != 1 {
		t.Fatalf("fake saw %d %s calls, want 1", len(calls), op)
	}
	return calls[0]
}

// object in wantFields stands for a nested object that the test checks separately.
var object = struct{ nested bool }{true}

// wantFields checks that got holds exactly the keys of want with the same values (compared
// as printed, so 7 matches both float64(7) from JSON and "7" from a form).
func wantFields(t *testing.T, got map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		if _, isMap := got[k].(map[string]any); w == object && isMap {
			continue
		}
		if g, ok := got[k]; !ok || fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("field %q = %#v (present %v), want %#v", k, g, ok, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected field %q = %#v", k, got[k])
		}
	}
}

func sub(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("field %q = %#v, want an object", key, m[key])
	}
	return v
}

func TestUserAdd(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	ctx := context.Background()

	u, err := c.UserAdd(ctx, mesiboclient.UserAddRequest{Address: "alice@example.com", Name: "Alice", AppID: "com.example.app", ExpiryMinutes: 525600})
	if err != nil {
		t.Fatal(err)
	}
	fake := s.Users()["alice@example.com"]
	if u.UID != 1001 || u.Token != fake.Token || len(u.Token) < 32 {
		t.Fatalf("UserAdd = %+v, fake has %+v", u, fake)
	}
	if fake.AppID != "com.example.app" || fake.Name != "Alice" {
		t.Errorf("fake user = %+v", fake)
	}
	call := onlyCall(t, s, "useradd")
	wantFields(t, call.Fields, map[string]any{"op": "useradd", "token": appToken, "user": object})
	user := sub(t, call.Fields, "user")
	wantFields(t, user, map[string]any{"address": "alice@example.com", "name": "Alice", "token": object})
	wantFields(t, sub(t, user, "token"), map[string]any{"appid": "com.example.app", "expiry": 525600})

	// Same address: same uid, new token. Empty name and zero expiry are left out.
	again, err := c.UserAdd(ctx, mesiboclient.UserAddRequest{Address: "alice@example.com", AppID: "com.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	if again.UID != u.UID || again.Token == u.Token {
		t.Errorf("second UserAdd = %+v, first %+v", again, u)
	}
	user = sub(t, s.CallsOf("useradd")[1].Fields, "user")
	wantFields(t, user, map[string]any{"address": "alice@example.com", "token": object})
	wantFields(t, sub(t, user, "token"), map[string]any{"appid": "com.example.app"})

	bob, err := c.UserAdd(ctx, mesiboclient.UserAddRequest{Address: "bob@example.com", AppID: "a"})
	if err != nil || bob.UID != 1002 {
		t.Errorf("UserAdd(bob) = %+v, %v; want uid 1002", bob, err)
	}
}

func TestRemoveUserToken(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	ctx := context.Background()
	if _, err := c.UserAdd(ctx, mesiboclient.UserAddRequest{Address: "alice", AppID: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveUserToken(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if tok := s.Users()["alice"].Token; tok != "" {
		t.Errorf("token still %q after removal", tok)
	}
	call := onlyCall(t, s, "userset")
	wantFields(t, call.Fields, map[string]any{"op": "userset", "token": appToken, "user": object})
	user := sub(t, call.Fields, "user")
	wantFields(t, user, map[string]any{"address": "alice", "token": object})
	wantFields(t, sub(t, user, "token"), map[string]any{"remove": true})
}

func TestSendMessage(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	m := mesiboclient.Message{From: "system", To: "alice,bob", Type: 7, ExpirySeconds: 3600, Flags: mesiboclient.FlagTransient, Forced: true, Body: `{"profile":"changed"}`}
	mid, err := c.SendMessage(context.Background(), m)
	if err != nil || mid != 1 {
		t.Fatalf("SendMessage = %d, %v; want 1", mid, err)
	}
	call := onlyCall(t, s, "message")
	wantFields(t, call.Fields, map[string]any{"op": "message", "token": appToken, "message": object})
	wantFields(t, sub(t, call.Fields, "message"), map[string]any{
		"from": "system", "to": "alice,bob", "gid": 0, "type": 7, "expiry": 3600,
		"flags": 4, "forced": true, "message": `{"profile":"changed"}`,
	})
	if len(s.Messages()) != 1 {
		t.Errorf("fake stored %d messages, want 1", len(s.Messages()))
	}
	mid, err = c.SendMessage(context.Background(), mesiboclient.Message{From: "system", GID: 5001, Body: "hi"})
	if err != nil || mid != 2 {
		t.Errorf("second SendMessage = %d, %v; want 2", mid, err)
	}
}

func TestGroups(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	ctx := context.Background()

	// The fake answers form requests with the gid as a numeric string.
	gid, err := c.GroupAdd(ctx, mesiboclient.GroupRequest{GID: 99, Name: "team", Flag: 0, Members: []string{"a", "b"}})
	if err != nil || gid != 5001 {
		t.Fatalf("GroupAdd = %d, %v; want 5001", gid, err)
	}
	wantFields(t, onlyCall(t, s, "groupadd").Fields, map[string]any{"op": "groupadd", "token": appToken, "name": "team", "flag": "0", "m": "a,b"})

	if err := c.GroupSet(ctx, mesiboclient.GroupRequest{GID: gid, Name: "crew", Flag: 1, Members: []string{"a", "c"}}); err != nil {
		t.Fatal(err)
	}
	wantFields(t, onlyCall(t, s, "groupset").Fields, map[string]any{"op": "groupset", "token": appToken, "gid": "5001", "name": "crew", "flag": "1", "m": "a,c"})
	if g := s.Groups()[gid]; g.Name != "crew" || g.Flag != 1 || fmt.Sprint(g.Members) != "[a c]" {
		t.Errorf("after GroupSet group = %+v", g)
	}

	if err := c.GroupEditMembers(ctx, gid, []string{"d", "e"}, false); err != nil {
		t.Fatal(err)
	}
	if err := c.GroupEditMembers(ctx, gid, []string{"a", "e"}, true); err != nil {
		t.Fatal(err)
	}
	edits := s.CallsOf("groupeditmembers")
	wantFields(t, edits[0].Fields, map[string]any{"op": "groupeditmembers", "token": appToken, "gid": "5001", "m": "d,e", "delete": "0"})
	wantFields(t, edits[1].Fields, map[string]any{"op": "groupeditmembers", "token": appToken, "gid": "5001", "m": "a,e", "delete": "1"})
	if g := s.Groups()[gid]; fmt.Sprint(g.Members) != "[c d]" {
		t.Errorf("after edits members = %v, want [c d]", g.Members)
	}

	if err := c.GroupDelete(ctx, gid); err != nil {
		t.Fatal(err)
	}
	wantFields(t, onlyCall(t, s, "groupdel").Fields, map[string]any{"op": "groupdel", "token": appToken, "gid": "5001"})
	if _, ok := s.Groups()[gid]; ok {
		t.Error("group still exists after GroupDelete")
	}

	err = c.GroupSet(ctx, mesiboclient.GroupRequest{GID: gid, Flag: 0})
	var refused *mesiboclient.RefusedError
	if !errors.As(err, &refused) || refused.Code != "BADGROUP" || refused.Op != "groupset" {
		t.Errorf("GroupSet on deleted group: %v, want refused BADGROUP", err)
	}
	// Only the flag is sent when name and members are empty, so they are not wiped.
	wantFields(t, s.CallsOf("groupset")[1].Fields, map[string]any{"op": "groupset", "token": appToken, "gid": "5001", "flag": "0"})
}

func TestTolerantAnswers(t *testing.T) {
	for _, body := range []string{
		`{"op":"useradd","result":true,"user":{"uid":42,"token":"tok"}}`,
		`{"op":"useradd","result":true,"user":{"uid":"42","token":"tok"}}`,
		`{"op":"useradd","result":1,"user":{"uid":"42","token":"tok"}}`,
		`{"op":"useradd","result":"true","user":{"uid":42,"token":"tok"}}`,
		`{"result":"1","user":{"uid":" 42 ","token":"tok"},"extra":[1,2]}`,
	} {
		hs, _ := fixedServer(t, http.StatusOK, body)
		u, err := newClient(t, hs.URL).UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a"})
		if err != nil || u.UID != 42 || u.Token != "tok" {
			t.Errorf("answer %s: got %+v, %v", body, u, err)
		}
	}
	for body, code := range map[string]string{
		`{"op":"message","result":false,"error":"BADOP"}`: "BADOP",
		`{"result":0,"error":"TOKENBREACH"}`:              "TOKENBREACH",
		`{"result":"false","error":"X"}`:                  "X",
		`{"result":false}`:                                "",
		`{"error":"NORESULT"}`:                            "NORESULT",
	} {
		t.Run(body, func(t *testing.T) {
			hs, _ := fixedServer(t, http.StatusOK, body)
			_, err := newClient(t, hs.URL).SendMessage(context.Background(), mesiboclient.Message{From: "a", To: "b"})
			var refused *mesiboclient.RefusedError
			if !errors.As(err, &refused) || refused.Code != code || refused.Op != "message" {
				t.Errorf("got %v, want refusal %q", err, code)
			}
		})
	}
	hs, _ := fixedServer(t, http.StatusOK, `{"result":true,"mid":"77"}`)
	if mid, err := newClient(t, hs.URL).SendMessage(context.Background(), mesiboclient.Message{}); err != nil || mid != 77 {
		t.Errorf("string mid: got %d, %v", mid, err)
	}
}

func TestRefusalNotRetried(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	s.FailNext("useradd", 1, mesibotest.Failure{Refuse: "BADAPPID"})
	_, err := c.UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a", AppID: "x"})
	var refused *mesiboclient.RefusedError
	if !errors.As(err, &refused) || refused.Code != "BADAPPID" || refused.Op != "useradd" {
		t.Fatalf("got %v, want refused BADAPPID", err)
	}
	if !mesiboclient.IsRefused(err) || mesiboclient.IsTransport(err) {
		t.Error("IsRefused/IsTransport disagree with the error type")
	}
	if got, want := err.Error(), "mesibo useradd refused: BADAPPID"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if n := len(s.CallsOf("useradd")); n != 1 {
		t.Errorf("fake saw %d calls, want 1 (refusals are not retried)", n)
	}

	wrong := newClient(t, s.URL, func(c *mesiboclient.Config) { c.AppToken = "not-the-token" })
	_, err = wrong.UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a", AppID: "x"})
	if !errors.As(err, &refused) || refused.Code != "AUTHFAIL" {
		t.Errorf("wrong token: got %v, want refused AUTHFAIL", err)
	}
}

func TestHTTPStatusIsTransportError(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	s.FailNext("message", 1, mesibotest.Failure{Status: http.StatusInternalServerError})
	_, err := c.SendMessage(context.Background(), mesiboclient.Message{From: "a", To: "b"})
	var te *mesiboclient.TransportError
	if !errors.As(err, &te) || te.Status != 500 || te.Op != "message" || mesiboclient.IsRefused(err) {
		t.Fatalf("got %v, want transport error with status 500", err)
	}
	if n := len(s.CallsOf("message")); n != 1 {
		t.Errorf("SendMessage made %d calls, want 1 (not retried)", n)
	}

	s.FailAll("useradd", mesibotest.Failure{Status: http.StatusBadGateway})
	_, err = c.UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a"})
	if !errors.As(err, &te) || te.Status != 502 {
		t.Errorf("got %v, want transport error with status 502", err)
	}
	if n := len(s.CallsOf("useradd")); n != 3 {
		t.Errorf("UserAdd made %d attempts, want 3", n)
	}
}

func TestUserAddRetried(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	s.FailNext("useradd", 2, mesibotest.Failure{Status: http.StatusInternalServerError})
	start := time.Now()
	u, err := c.UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "alice", AppID: "x"})
	if err != nil || u.UID != 1001 || u.Token != s.Users()["alice"].Token {
		t.Fatalf("UserAdd = %+v, %v", u, err)
	}
	if n := len(s.CallsOf("useradd")); n != 3 {
		t.Errorf("fake saw %d calls, want 3", n)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("retries took %v, want the 100ms+200ms backoff", d)
	}
}

func TestUserAddRetryStopsAtContext(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	s.FailAll("useradd", mesibotest.Failure{Status: http.StatusServiceUnavailable})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.UserAdd(ctx, mesiboclient.UserAddRequest{Address: "a"})
	if !mesiboclient.IsTransport(err) {
		t.Fatalf("got %v, want transport error", err)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("UserAdd took %v, beyond its 150ms context", d)
	}
	if n := len(s.CallsOf("useradd")); n != 2 {
		t.Errorf("fake saw %d calls, want 2 (no attempt once the context cannot cover the backoff)", n)
	}
}

func TestTimeout(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL, func(c *mesiboclient.Config) { c.Timeout = 100 * time.Millisecond })

	s.FailNext("message", 1, mesibotest.Failure{Delay: time.Minute})
	start := time.Now()
	_, err := c.SendMessage(context.Background(), mesiboclient.Message{From: "a", To: "b"})
	if !mesiboclient.IsTransport(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want transport error wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("SendMessage took %v with a 100ms timeout", d)
	}

	// Each UserAdd attempt is bounded: 3 × 100ms + 300ms backoff.
	s.FailAll("useradd", mesibotest.Failure{Delay: time.Minute})
	start = time.Now()
	_, err = c.UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a"})
	if !mesiboclient.IsTransport(err) {
		t.Fatalf("got %v, want transport error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("UserAdd took %v", d)
	}
	if n := len(s.CallsOf("useradd")); n != 3 {
		t.Errorf("fake saw %d calls, want 3", n)
	}
}

func TestBadAnswers(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	s.FailNext("groupadd", 1, mesibotest.Failure{Garbage: true})
	_, err := c.GroupAdd(context.Background(), mesiboclient.GroupRequest{Name: "g"})
	var te *mesiboclient.TransportError
	if !errors.As(err, &te) || te.Status != 0 || te.Err == nil {
		t.Errorf("garbage: got %v, want transport error with a cause", err)
	}

	for name, body := range map[string]string{
		"missing uid":   `{"result":true,"user":{"token":"tok"}}`,
		"missing token": `{"result":true,"user":{"uid":1}}`,
		"missing user":  `{"result":true}`,
		"bad uid":       `{"result":true,"user":{"uid":"x1","token":"tok"}}`,
		"bad result":    `{"result":"maybe","user":{"uid":1,"token":"tok"}}`,
		"no result":     `{"op":"useradd"}`,
		"not an object": `[1,2,3]`,
		"null":          `null`,
		"empty":         ``,
		"too large":     `{"result":true,"pad":"` + strings.Repeat("x", 1<<20) + `","user":{"uid":1,"token":"tok"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each case waits out the retry backoff
			hs, n := fixedServer(t, http.StatusOK, body)
			_, err := newClient(t, hs.URL).UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a"})
			var te *mesiboclient.TransportError
			if !errors.As(err, &te) || te.Op != "useradd" {
				t.Errorf("got %v, want transport error", err)
			}
			if n.Load() != 3 {
				t.Errorf("%d attempts, want 3 (bad answers are transport errors, so retried)", n.Load())
			}
		})
	}

	hs, _ := fixedServer(t, http.StatusOK, `{"result":true,"group":{}}`)
	if _, err := newClient(t, hs.URL).GroupAdd(context.Background(), mesiboclient.GroupRequest{}); !mesiboclient.IsTransport(err) {
		t.Errorf("missing gid: got %v, want transport error", err)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var leaked atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { leaked.Add(1) }))
	defer elsewhere.Close()
	redirect := httptest.NewServer(http.RedirectHandler(elsewhere.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()

	_, err := newClient(t, redirect.URL).SendMessage(context.Background(), mesiboclient.Message{From: "a"})
	var te *mesiboclient.TransportError
	if !errors.As(err, &te) || te.Status != http.StatusTemporaryRedirect {
		t.Errorf("got %v, want transport error with status 307", err)
	}
	if leaked.Load() != 0 {
		t.Error("the request, app token included, followed the redirect")
	}
}

// leakyTransport fails with an error quoting the request body, as a careless custom
// transport might.
type leakyTransport struct{}

func (leakyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	defer r.Body.Close()
	buf := make([]byte, 200)
	n, _ := r.Body.Read(buf)
	return nil, fmt.Errorf("cannot send %s", buf[:n])
}

func TestNoSecretsInErrors(t *testing.T) {
	const userToken = "USERSECRET-9a8b7c6d5e4f3a2b1c0d"
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL, func(c *mesiboclient.Config) { c.Timeout = 100 * time.Millisecond })
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	answer := func(body string) string {
		hs, _ := fixedServer(t, http.StatusOK, body)
		return hs.URL
	}
	withUserinfo := strings.Replace(closed.URL, "http://", "http://admin:"+appToken+"@", 1) + "/backend/?token=" + appToken

	cases := map[string]func() error{
		"refused": func() error {
			s.FailNext("", 1, mesibotest.Failure{Refuse: "TOKENBREACH"})
			_, err := c.UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a"})
			return err
		},
		"status": func() error {
			s.FailNext("", 1, mesibotest.Failure{Status: 500})
			return c.RemoveUserToken(context.Background(), "a")
		},
		"garbage": func() error {
			s.FailNext("", 1, mesibotest.Failure{Garbage: true})
			_, err := c.SendMessage(context.Background(), mesiboclient.Message{From: "a"})
			return err
		},
		"timeout": func() error {
			s.FailNext("", 1, mesibotest.Failure{Delay: time.Minute})
			return c.GroupDelete(context.Background(), 1)
		},
		"unreachable": func() error {
			_, err := newClient(t, closed.URL).GroupAdd(context.Background(), mesiboclient.GroupRequest{})
			return err
		},
		"unreachable with credentials in URL": func() error {
			_, err := newClient(t, withUserinfo).UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a"})
			return err
		},
		"cancelled": func() error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := c.UserAdd(ctx, mesiboclient.UserAddRequest{Address: "a"})
			return err
		},
		"missing uid": func() error {
			_, err := newClient(t, answer(`{"result":true,"user":{"token":"`+userToken+`"}}`)).UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a"})
			return err
		},
		"bad uid": func() error {
			_, err := newClient(t, answer(`{"result":true,"user":{"uid":"`+userToken+`","token":"`+userToken+`"}}`)).UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a"})
			return err
		},
		"truncated": func() error {
			_, err := newClient(t, answer(`{"result":true,"user":{"uid":1,"token":"`+userToken)).UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: "a"})
			return err
		},
		"leaky custom transport": func() error {
			hc := &http.Client{Transport: leakyTransport{}}
			_, err := newClient(t, s.URL, func(c *mesiboclient.Config) { c.HTTPClient = hc }).SendMessage(context.Background(), mesiboclient.Message{From: "a"})
			return err
		},
	}
	for name, call := range cases {
		t.Run(name, func(t *testing.T) {
			err := call()
			if err == nil {
				t.Fatal("no error")
			}
			for _, text := range []string{err.Error(), fmt.Sprintf("%v|%+v|%#v|%s", err, err, err, err)} {
				if strings.Contains(text, appToken) || strings.Contains(text, userToken) {
					t.Errorf("error reveals a secret: %s", text)
				}
			}
			t.Log(err)
		})
	}
}

func TestConfigAndClientFormattingHideToken(t *testing.T) {
	cfg := mesiboclient.Config{Endpoint: "https://u:" + appToken + "@mesibo.example/backend/?t=" + appToken, AppToken: appToken, Timeout: time.Second}
	c, err := mesiboclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, v := range []any{cfg, &cfg, c} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x"} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, appToken) || strings.Contains(out, fmt.Sprintf("%x", appToken)) {
				t.Errorf("%s of %T reveals the token: %s", verb, v, out)
			}
		}
	}
	if s := cfg.String(); !strings.Contains(s, "[REDACTED]") || !strings.Contains(s, "mesibo.example") {
		t.Errorf("Config.String() = %s", s)
	}
}

func TestNewValidates(t *testing.T) {
	for _, endpoint := range []string{"ftp://mesibo.example/", "/backend/", "http://", "mesibo.example", "http://[::1"} {
		if _, err := mesiboclient.New(mesiboclient.Config{Endpoint: endpoint, AppToken: appToken}); err == nil {
			t.Errorf("New accepted endpoint %q", endpoint)
		}
	}
	if _, err := mesiboclient.New(mesiboclient.Config{}); err == nil {
		t.Error("New accepted an empty AppToken")
	}
	if _, err := mesiboclient.New(mesiboclient.Config{AppToken: appToken, Timeout: -time.Second}); err == nil {
		t.Error("New accepted a negative Timeout")
	}
	c, err := mesiboclient.New(mesiboclient.Config{AppToken: appToken})
	if err != nil {
		t.Fatal(err)
	}
	if s := c.String(); !strings.Contains(s, mesiboclient.DefaultEndpoint) || !strings.Contains(s, "10s") {
		t.Errorf("defaults not applied: %s", s)
	}
	c.Close()
	c.Close() // harmless twice
	custom, err := mesiboclient.New(mesiboclient.Config{AppToken: appToken, HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	custom.Close() // leaves the caller's client alone
}

func TestConcurrentUse(t *testing.T) {
	s := mesibotest.NewServer(t, appToken)
	c := newClient(t, s.URL)
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			_, err := c.UserAdd(context.Background(), mesiboclient.UserAddRequest{Address: fmt.Sprint("u", i%5), AppID: "x"})
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := len(s.Users()); n != 5 {
		t.Errorf("fake has %d users, want 5", n)
	}
}

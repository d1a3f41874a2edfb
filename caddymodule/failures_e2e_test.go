package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
)

// TestBadInputChangesNothing: each bad request gets its code, no code is sent, no row
// is written.
func TestBadInputChangesNothing(t *testing.T) {
	e := startEnv(t, options{})
	for _, tc := range []struct {
		name   string
		fields map[string]any
		code   string
	}{
		{"no appid", map[string]any{"op": "login", "phone": "+919812345678"}, "MISSINGAPPID"},
		{"no phone", map[string]any{"op": "login", "appid": "a"}, "BADPHONE"},
		{"short phone", map[string]any{"op": "login", "appid": "a", "phone": "12345"}, "BADPHONE"},
		{"not a number", map[string]any{"op": "login", "appid": "a", "phone": "+1 000 000 0000"}, "BADPHONE"},
		{"injection", map[string]any{"op": "login", "appid": "a", "phone": "1) OR 1=1 --"}, "BADPHONE"},
		{"accountkit", map[string]any{"op": "login", "appid": "a", "phone": "+919812345678", "aktoken": "x"}, "BADAKTOKEN"},
		{"wrong code", map[string]any{"op": "login", "appid": "a", "phone": "+919812345678", "otp": "000000"}, "BADCODE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, enc := range encodings {
				a := e.call(enc, tc.fields)
				expectFail(t, a, tc.code)
				if a.str("op") != "login" {
					t.Errorf("%s: op not echoed: %s", enc, a.raw)
				}
			}
		})
	}
	if e.hook.count() != 0 || len(e.mesibo.Calls()) != 0 {
		t.Fatalf("bad input reached the outside: %d codes sent, %d mesibo calls", e.hook.count(), len(e.mesibo.Calls()))
	}
	if n := e.count("SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM tokens)"); n != 0 {
		t.Fatalf("bad input wrote %d rows", n)
	}
	// An invalid code says so in a way the apps show.
	a := e.call(form, map[string]any{"op": "login", "appid": "a", "phone": "+919812345678", "otp": "1"})
	if a.str("errmsg") != "Invalid OTP" {
		t.Fatalf("BADCODE errmsg: %s", a.raw)
	}
}

func TestMalformedBodies(t *testing.T) {
	e := startEnv(t, options{})
	post := func(contentType, body string) answer {
		req, _ := http.NewRequest(http.MethodPost, apiURL+"?op=login", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		return e.do(req)
	}
	expectFail(t, post("application/json", `{"op": "login", `), "BADREQUEST")
	expectFail(t, post("application/json", `["op"]`), "BADREQUEST")
	expectFail(t, post("multipart/form-data; boundary=xyz", "--xyz\r\nbroken"), "BADREQUEST")
	a := post("application/x-www-form-urlencoded", "op=login&phone="+strings.Repeat("9", 70<<10))
	expectFail(t, a, "TOOLARGE")
	if a.str("op") != "login" {
		t.Fatalf("op from the query not echoed: %s", a.raw)
	}
	if e.hook.count() != 0 {
		t.Fatal("a malformed request sent a code")
	}
}

func TestOpIsCaseInsensitiveAndBodyWinsOverQuery(t *testing.T) {
	e := startEnv(t, options{})
	req, _ := http.NewRequest(http.MethodPost, apiURL+"?op=logout&phone=1", strings.NewReader(`{"op":"LOGIN","phone":"+91 98123 45678","appid":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	expectOK(t, e.do(req), "login")
	if e.hook.lastCode("919812345678") == "" {
		t.Fatal("no code")
	}
	a := e.call(form, map[string]any{"op": "LoginUI"})
	expectOK(t, a, "loginui")
	if a.str("ui") != "0" {
		t.Fatalf("loginui: %s", a.raw)
	}
}

func TestMesiboFailuresStoreNothing(t *testing.T) {
	e := startEnv(t, options{extra: "rate_limit otp_phone 100 1m"})
	for _, tc := range []struct {
		name    string
		failure mesibotest.Failure
		code    string
	}{
		{"refused", mesibotest.Failure{Refuse: "BADADDR"}, "BADUSER"},
		{"app token refused", mesibotest.Failure{Refuse: "AUTHFAIL"}, "BADAPP"},
		{"500", mesibotest.Failure{Status: 500}, "BADAPP"},
		{"garbage", mesibotest.Failure{Garbage: true}, "BADAPP"},
		{"timeout", mesibotest.Failure{Delay: 3 * time.Second}, "BADAPP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.mesibo.FailAll("useradd", tc.failure)
			defer e.mesibo.Reset()
			expectOK(t, e.call(form, map[string]any{"op": "login", "phone": reviewPhone, "appid": "a"}), "login")
			start := time.Now()
			a := e.call(form, map[string]any{"op": "login", "phone": reviewPhone, "appid": "a", "otp": reviewCode})
			expectFail(t, a, tc.code)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the failure took %s; mesibo calls must be bounded", took)
			}
			if n := e.count("SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM tokens)"); n != 0 {
				t.Fatalf("%d rows stored after a mesibo failure", n)
			}
			if strings.Contains(a.raw, appToken) {
				t.Fatal("the app token leaked into an answer")
			}
		})
	}
	// A refusal is not retried; a transport failure is (useradd is idempotent).
	e.mesibo.Reset()
	before := len(e.mesibo.CallsOf("useradd"))
	e.mesibo.FailNext("useradd", 1, mesibotest.Failure{Status: 502})
	expectOK(t, e.call(form, map[string]any{"op": "login", "phone": reviewPhone, "appid": "a"}), "login")
	expectOK(t, e.call(form, map[string]any{"op": "login", "phone": reviewPhone, "appid": "a", "otp": reviewCode}), "login")
	if got := len(e.mesibo.CallsOf("useradd")) - before; got != 2 {
		t.Fatalf("useradd calls %d, want 2 (one failed, one retried)", got)
	}
}

// TestReviewNumber: a configured test number gets its fixed code, even though it is not
// a valid number anywhere, and logs in like any other.
func TestReviewNumber(t *testing.T) {
	e := startEnv(t, options{})
	expectOK(t, e.call(jsonBody, map[string]any{"op": "login", "phone": "+1 555 0100 999", "appid": "a"}), "login")
	if code := e.hook.lastCode(reviewPhone); code != reviewCode {
		t.Fatalf("review number got code %q", code)
	}
	a := e.call(jsonBody, map[string]any{"op": "login", "phone": reviewPhone, "appid": "a", "otp": reviewCode})
	expectOK(t, a, "login")
	if a.str("phone") != reviewPhone || a.str("cc") != "1" {
		t.Fatalf("review login: %s", a.raw)
	}
}

// TestStrangerCannotLockOwnerOut: hardening defect 1. A stranger asks for a code for
// someone's number and checks 100 wrong codes from one address; the owner then asks for
// a fresh code (within the number's send limit) and logs in with it.
func TestStrangerCannotLockOwnerOut(t *testing.T) {
	e := startEnv(t, options{extra: "rate_limit otp_phone 10 1m"})
	fields := map[string]any{"op": "login", "phone": "+919812345673", "appid": "x"}
	expectOK(t, e.call(form, fields), "login")
	for i := range 100 {
		fields["otp"] = strconv.Itoa(100000 + i)
		if a := e.call(form, fields); a.str("error") != "BADCODE" {
			if a.str("error") == "RATELIMIT" {
				break // the address's check budget: the stranger is stopped, not the owner
			}
			t.Fatalf("check %d: %s", i, a.raw)
		}
	}
	// The owner, on their own phone's address.
	owner := func(fields map[string]any) answer {
		body, _ := json.Marshal(fields)
		req, _ := http.NewRequest(http.MethodPost, apiURL, bytes.NewReader(body))
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		return e.do(req)
	}
	delete(fields, "otp")
	expectOK(t, owner(fields), "login")
	fields["otp"] = e.hook.lastCode("919812345673")
	a := owner(fields)
	expectOK(t, a, "login")
	if a.str("phone") != "919812345673" || a.str("token") == "" {
		t.Fatalf("the owner's login: %s", a.raw)
	}
}

func TestOTPRateLimits(t *testing.T) {
	e := startEnv(t, options{extra: "rate_limit otp_phone 1 2s\n\t\trate_limit otp_ip 3 1h"})
	phoneA, phoneB := "+919812345670", "+919812345671"
	expectOK(t, e.call(form, map[string]any{"op": "login", "phone": phoneA, "appid": "a"}), "login")
	a := e.call(form, map[string]any{"op": "login", "phone": phoneA, "appid": "a"})
	expectFail(t, a, "RATELIMIT")
	retry, err := strconv.Atoi(a.resp.Header.Get("Retry-After"))
	if err != nil || retry < 1 || retry > 2 {
		t.Fatalf("Retry-After %q", a.resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(a.str("errmsg"), "try again in") {
		t.Fatalf("errmsg %q does not say when to retry", a.str("errmsg"))
	}
	if e.hook.count() != 1 {
		t.Fatalf("a limited request sent a code")
	}
	// The window passes; the phone may ask again. That is the IP's second send.
	time.Sleep(time.Duration(retry) * time.Second)
	expectOK(t, e.call(form, map[string]any{"op": "login", "phone": phoneA, "appid": "a"}), "login")
	// The refused request above cost the IP nothing: one more send fits, then the IP is done.
	expectOK(t, e.call(form, map[string]any{"op": "login", "phone": phoneB, "appid": "a"}), "login")
	expectFail(t, e.call(form, map[string]any{"op": "login", "phone": "+919812345672", "appid": "a"}), "RATELIMIT")
	if e.hook.count() != 3 {
		t.Fatalf("deliveries %d, want 3", e.hook.count())
	}
}

// TestTwoInstancesShareLimits: two messenger handlers (two sites, as two servers would
// be) on one Redis see the same counts, and a code issued by one verifies on the other.
func TestTwoInstancesShareLimits(t *testing.T) {
	e := startEnv(t, options{extra: "rate_limit otp_phone 1 1h", second: true})
	fields := map[string]any{"op": "login", "phone": "+919812345673", "appid": "a"}
	expectOK(t, e.call(form, fields), "login")
	expectFail(t, e.callURL(secondURL, form, fields), "RATELIMIT")
	fields["otp"] = e.hook.lastCode("919812345673")
	expectOK(t, e.callURL(secondURL, form, fields), "login")
	// Used up on the second: gone on the first too.
	expectFail(t, e.call(form, fields), "BADCODE")
}

// TestRedisDownFailsClosed: without Redis no code is sent and the answer says to retry.
func TestRedisDownFailsClosed(t *testing.T) {
	e := startEnv(t, options{redisURL: "redis://127.0.0.1:1/0"})
	start := time.Now()
	a := e.call(form, map[string]any{"op": "login", "phone": "+919812345674", "appid": "a"})
	expectFail(t, a, "TEMPFAIL")
	if a.str("errmsg") == "" {
		t.Fatal("TEMPFAIL without errmsg")
	}
	expectFail(t, e.call(form, map[string]any{"op": "login", "phone": "+919812345674", "appid": "a", "otp": "123456"}), "TEMPFAIL")
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("failing closed took %s", took)
	}
	if e.hook.count() != 0 {
		t.Fatal("a code was sent without rate limiting")
	}
}

// TestCodeDeliveryFailure: a webhook that keeps failing gives TEMPFAIL.
func TestCodeDeliveryFailure(t *testing.T) {
	e := startEnv(t, options{})
	e.hook.mu.Lock()
	e.hook.failing = true
	e.hook.mu.Unlock()
	expectFail(t, e.call(form, map[string]any{"op": "login", "phone": "+919812345675", "appid": "a"}), "TEMPFAIL")
}

// TestTwoProcesses: two caddy processes of one deployment (one database, one Redis, one
// mesibo): a code requested on one verifies on the other, the limits are shared, and the
// notifications queued through both are delivered at most once each, in order, the last
// one surely (older silent updates that a newer one replaces may be dropped).
func TestTwoProcesses(t *testing.T) {
	e := startEnv(t, options{extra: "rate_limit otp_phone 1 1h\n\t\trate_limit otp_ip 1000 1m", process: true})
	login := func(url, raw, digits string) string {
		fields := map[string]any{"op": "login", "phone": raw, "appid": "a"}
		expectOK(t, e.call(form, fields), "login")
		expectFail(t, e.callURL(processURL, form, fields), "RATELIMIT") // one code per hour, whichever server
		fields["otp"] = e.hook.lastCode(digits)
		a := e.callURL(url, form, fields)
		expectOK(t, a, "login")
		return a.str("token")
	}
	ada := login(processURL, "+91 98123 54001", "919812354001") // requested here, verified there
	bob := login(apiURL, "+91 98123 54002", "919812354002")
	contactsOf(t, e.callURL(processURL, form, map[string]any{"op": "getcontacts", "token": bob, "phones": "919812354001"}))

	for i := range 10 {
		url := []string{apiURL, processURL}[i%2]
		expectOK(t, e.callURL(url, form, map[string]any{"op": "profile", "token": ada, "status": fmt.Sprint("status ", i)}), "profile")
	}
	statuses := func() []string {
		var out []string
		for _, n := range e.notifications() {
			out = append(out, fmt.Sprint(n.body["status"]))
		}
		return out
	}
	waitFor(t, "the last notification", func() bool { return slices.Contains(statuses(), "status 9") })
	time.Sleep(2500 * time.Millisecond) // a poll round of both workers
	got := statuses()
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) || got[len(got)-1] != "status 9" ||
		e.count("SELECT COUNT(*) FROM messenger_outbox") != 0 {
		t.Fatalf("notifications %q (want each at most once, in order, ending on the last), outbox %d", got,
			e.count("SELECT COUNT(*) FROM messenger_outbox"))
	}
}

// TestStalledBodyIsCut: hardening defect 10. A client that announces a body and then
// goes silent holds its connection only as long as the server's read_body timeout (set in
// Caddyfile.example): here 1s, so the answer, or the end of the connection, comes within
// a few seconds rather than never.
func TestStalledBodyIsCut(t *testing.T) {
	startEnv(t, options{servers: "timeouts {\n\t\t\tread_body 1s\n\t\t\tread_header 1s\n\t\t}"})
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", basePort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprint(conn, "POST /api.php HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"+
		"Content-Length: 100\r\n\r\nop=loginui")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(conn) // an answer and the close, or just the close
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the stalled request was cut after %s (%v), want about 1s", took, err)
	}
}

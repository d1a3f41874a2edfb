package caddymodule_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// loginRequest is a login without a code, as an app behind an auth handler sends it.
func loginRequest(header ...string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, apiURL, strings.NewReader(url.Values{"op": {"login"}, "appid": {"com.example.app"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return req
}

func status(t *testing.T, e *env, req *http.Request) int {
	t.Helper()
	resp, err := e.tester.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestBasicAuthIdentity: with basic_auth before messenger, a user whose user name is a
// phone number logs in without a code; without credentials Caddy refuses.
func TestBasicAuthIdentity(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	site := `%[1]s {
	@api path / /api.php
	basic_auth @api {
		919812355001 ` + string(hash) + `
		notaphone ` + string(hash) + `
	}
	messenger @api {
%[2]s
	}
}
`
	e := startEnv(t, options{site: site, extra: "authenticator caddy_identity {http.auth.user.id}"})
	req := loginRequest()
	req.SetBasicAuth("919812355001", "s3cret")
	a := e.do(req)
	expectOK(t, a, "login")
	if a.str("phone") != "919812355001" || a.str("token") == "" || a.str("token") != e.mesibo.Users()["919812355001"].Token {
		t.Fatalf("login: %s", a.raw)
	}
	if e.hook.count() != 0 {
		t.Fatal("a code was sent")
	}
	if n := e.count("SELECT COUNT(*) FROM tokens t JOIN users u ON u.uid = t.uid WHERE u.phone = '919812355001'"); n != 1 {
		t.Fatalf("tokens %d", n)
	}
	// The token works for the other ops, which also pass basic_auth here.
	req, _ = http.NewRequest(http.MethodGet, apiURL+"?op=getcontacts&token="+a.str("token"), nil)
	req.SetBasicAuth("919812355001", "s3cret")
	expectOK(t, e.do(req), "getcontacts")

	if got := status(t, e, loginRequest()); got != http.StatusUnauthorized {
		t.Fatalf("no credentials: HTTP %d", got)
	}
	req = loginRequest()
	req.SetBasicAuth("919812355001", "wrong")
	if got := status(t, e, req); got != http.StatusUnauthorized {
		t.Fatalf("wrong password: HTTP %d", got)
	}
	req = loginRequest()
	req.SetBasicAuth("notaphone", "s3cret")
	expectFail(t, e.do(req), "BADPHONE")
	if n := e.count("SELECT COUNT(*) FROM users"); n != 1 {
		t.Fatalf("users %d", n)
	}
}

// TestForwardAuthIdentity: forward_auth asks an SSO proxy (here a test server) and
// copies the phone it answers into a header; messenger trusts that header.
func TestForwardAuthIdentity(t *testing.T) {
	sso := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Authorization") {
		case "Bearer ada":
			w.Header().Set("X-Auth-Phone", "+91 98123 55002")
		case "Bearer nophone":
		case "Bearer badphone":
			w.Header().Set("X-Auth-Phone", "12")
		default:
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer sso.Close()
	site := `%[1]s {
	@api path / /api.php
	forward_auth @api ` + strings.TrimPrefix(sso.URL, "http://") + ` {
		uri /check
		copy_headers X-Auth-Phone
	}
	messenger @api {
%[2]s
	}
}
`
	e := startEnv(t, options{site: site, extra: roomy + "\n\t\tauthenticator caddy_identity {http.request.header.X-Auth-Phone}"})

	a := e.do(loginRequest("Authorization", "Bearer ada"))
	expectOK(t, a, "login")
	if a.str("phone") != "919812355002" || a.str("cc") != "91" {
		t.Fatalf("login: %s", a.raw)
	}
	// A forged header is replaced by the SSO's answer...
	a = e.do(loginRequest("Authorization", "Bearer ada", "X-Auth-Phone", "+44 20 7946 0958"))
	if a.str("phone") != "919812355002" {
		t.Fatalf("the forged header won: %s", a.raw)
	}
	// ...or, without valid credentials, never reaches messenger.
	if got := status(t, e, loginRequest("X-Auth-Phone", "+44 20 7946 0958")); got != http.StatusUnauthorized {
		t.Fatalf("forged header without credentials: HTTP %d", got)
	}
	expectFail(t, e.do(loginRequest("Authorization", "Bearer nophone")), "AUTHFAIL")
	expectFail(t, e.do(loginRequest("Authorization", "Bearer badphone")), "BADPHONE")
	if n := e.count("SELECT COUNT(*) FROM users"); n != 1 {
		t.Fatalf("users %d, want only Ada", n)
	}
	if _, ok := e.mesibo.Users()["442079460958"]; ok {
		t.Fatal("the forged number reached mesibo")
	}
}

// TestIdentityLoginRateLimited: logins by identity count per identity like code requests.
func TestIdentityLoginRateLimited(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	site := fmt.Sprintf(`%%[1]s {
	basic_auth {
		919812355003 %s
	}
	messenger {
%%[2]s
	}
}
`, hash)
	e := startEnv(t, options{site: site, extra: "authenticator caddy_identity {http.auth.user.id}\n\t\trate_limit otp_phone 2 1h"})
	for i := range 3 {
		req := loginRequest()
		req.SetBasicAuth("919812355003", "pw")
		a := e.do(req)
		if i < 2 {
			expectOK(t, a, "login")
		} else {
			expectFail(t, a, "RATELIMIT")
		}
	}
}

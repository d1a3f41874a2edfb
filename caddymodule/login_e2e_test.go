package caddymodule_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNoopAndEnvelopeHeaders(t *testing.T) {
	e := startEnv(t, options{})
	req, _ := http.NewRequest(http.MethodGet, apiURL, nil)
	a := e.do(req)
	if a.raw != `{"code":"NOOP","result":"FAIL"}`+"\n" {
		t.Fatalf("NOOP answer %q", a.raw)
	}
	for header, want := range map[string]string{
		"Content-Type":                "application/json",
		"Cache-Control":               "no-cache, no-store, must-revalidate",
		"Pragma":                      "no-cache",
		"Access-Control-Allow-Origin": "*",
	} {
		if got := a.resp.Header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	if exp, err := http.ParseTime(a.resp.Header.Get("Expires")); err != nil || exp.After(time.Now()) {
		t.Errorf("Expires %q is not in the past", a.resp.Header.Get("Expires"))
	}

	// The site root is the API too, as newer apps post there.
	req, _ = http.NewRequest(http.MethodPost, siteURL+"/", strings.NewReader("op="))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if a := e.do(req); a.str("code") != "NOOP" || a.str("result") != "FAIL" {
		t.Fatalf("root with empty op: %s", a.raw)
	}
}

func TestCORSPreflight(t *testing.T) {
	e := startEnv(t, options{})
	req, _ := http.NewRequest(http.MethodOptions, apiURL, nil)
	req.Header.Set("Origin", "https://web.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type, x-custom")
	resp, err := e.tester.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("preflight status %d", resp.StatusCode)
	}
	for header, want := range map[string]string{
		"Access-Control-Allow-Origin":  "*",
		"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
		"Access-Control-Allow-Headers": "content-type, x-custom",
	} {
		if got := resp.Header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
}

// TestLoginLifecycle is the user's path of the issue, in every encoding: request a code,
// exchange it for a token, use the token, log out.
func TestLoginLifecycle(t *testing.T) {
	e := startEnv(t, options{})
	phones := map[encoding][2]string{
		query:      {"+91 98123 45678", "919812345678"},
		form:       {"0091-98123-45679", "919812345679"},
		multipart_: {"+44 20 7946 0958", "442079460958"},
		jsonBody:   {"+1 650 253 0000", "16502530000"},
	}
	for _, enc := range encodings {
		t.Run(string(enc), func(t *testing.T) {
			raw, digits := phones[enc][0], phones[enc][1]
			before := e.hook.count()
			a := e.call(enc, map[string]any{"op": "login", "phone": raw, "appid": "com.example.app"})
			expectOK(t, a, "login")
			if _, leaked := a.body["code"]; leaked || strings.Contains(a.raw, e.hook.lastCode(digits)) {
				t.Fatalf("the code leaked into the answer: %s", a.raw)
			}
			if e.hook.count() != before+1 {
				t.Fatalf("deliveries %d, want %d", e.hook.count(), before+1)
			}
			code := e.hook.lastCode(digits)
			if len(code) != 6 {
				t.Fatalf("code %q is not 6 digits", code)
			}
			fields := map[string]any{"op": "login", "phone": raw, "appid": "com.example.app", "name": "Ada", "dt": 1}
			switch enc {
			case jsonBody:
				n, _ := strconv.Atoi(code)
				fields["otp"] = n // a JSON number is the same value as its string
			case form:
				fields["code"] = code // the field name of older apps
			default:
				fields["otp"] = code
			}
			a = e.call(enc, fields)
			expectOK(t, a, "login")
			token := a.str("token")
			user := e.mesibo.Users()[digits]
			if token == "" || token != user.Token {
				t.Fatalf("token %q, mesibo minted %q", token, user.Token)
			}
			if user.AppID != "com.example.app" {
				t.Errorf("mesibo appid %q", user.AppID)
			}
			add := e.mesibo.CallsOf("useradd")
			u := add[len(add)-1].Fields["user"].(map[string]any)
			if exp := u["token"].(map[string]any)["expiry"]; exp != float64(525600) {
				t.Errorf("useradd expiry %v, want 525600 minutes", exp)
			}
			cc := map[string]string{"919812345678": "91", "919812345679": "91", "442079460958": "44", "16502530000": "1"}[digits]
			for key, want := range map[string]string{
				"phone": digits, "cc": cc, "name": "Ada", "status": "", "photo": "", "google": "maps-key",
				"invite": "Join me", "fileurl": siteURL + "/files/", "downloadurl": siteURL + "/files/",
				"uploadurl": apiURL,
			} {
				if got := a.str(key); got != want {
					t.Errorf("%s = %q, want %q", key, got, want)
				}
			}
			if _, isString := a.body["cc"].(string); !isString {
				t.Errorf("cc must be a string: %s", a.raw)
			}
			share, _ := a.body["share"].(map[string]any)
			if share["text"] != "Join me" || share["subject"] != "Messenger" || share["title"] != "Invite via" {
				t.Errorf("share %v", a.body["share"])
			}
			urls, _ := a.body["urls"].(map[string]any)
			if urls["download"] != siteURL+"/files/" || urls["upload"] != apiURL {
				t.Errorf("urls %v", a.body["urls"])
			}

			// Rows: one user keyed by mesibo's uid, one token.
			var uid int64
			var storedName, storedCC string
			if err := e.db.QueryRow("SELECT uid, name, cc FROM users WHERE phone = ?", digits).Scan(&uid, &storedName, &storedCC); err != nil {
				t.Fatal(err)
			}
			if uid != user.UID || storedName != "Ada" || storedCC != cc {
				t.Fatalf("users row uid=%d name=%q cc=%s; mesibo uid %d", uid, storedName, storedCC, user.UID)
			}
			if n := e.count("SELECT COUNT(*) FROM tokens WHERE uid = ? AND token = ?", uid, token); n != 1 {
				t.Fatalf("tokens rows %d", n)
			}

			// The code is single use.
			expectFail(t, e.call(enc, fields), "BADCODE")

			// An unknown op with the token is BADOP, with a wrong token AUTHFAIL.
			a = e.call(enc, map[string]any{"op": "nosuchop", "token": token})
			if a.str("op") != "nosuchop" {
				t.Fatalf("op not echoed: %s", a.raw)
			}
			expectFail(t, a, "BADOP")
			// logout with an unknown token answers OK (the token may be gone already)
			// and touches nothing.
			// It carries ts, as every answer but NOOP: the 2021 Swift app reads ts first.
			// So does a token no database column could hold (non-ASCII, too long).
			for _, other := range []string{token[:63] + "x", token + "x", strings.Repeat("é", 20)} {
				expectOK(t, e.call(enc, map[string]any{"op": "logout", "token": other}), "logout")
				expectFail(t, e.call(enc, map[string]any{"op": "getgroup", "gid": 1, "token": other}), "AUTHFAIL")
			}
			if n := e.count("SELECT COUNT(*) FROM tokens WHERE uid = ?", uid); n != 1 {
				t.Fatalf("logout with another token deleted this one")
			}
			expectFail(t, e.call(enc, map[string]any{"op": "nosuchop", "token": strings.Repeat("f", 40)}), "AUTHFAIL")
			expectFail(t, e.call(enc, map[string]any{"op": "nosuchop", "token": "short"}), "AUTHFAIL")

			// Logout deletes the token; afterwards the token is refused.
			expectOK(t, e.call(enc, map[string]any{"op": "logout", "token": token}), "logout")
			if n := e.count("SELECT COUNT(*) FROM tokens WHERE uid = ?", uid); n != 0 {
				t.Fatalf("token row survived logout")
			}
			expectFail(t, e.call(enc, map[string]any{"op": "nosuchop", "token": token}), "AUTHFAIL")
		})
	}
}

// TestLoginRefusesAnotherUsersUID: hardening defect 3. The messaging service lost its
// state and hands a new number the uid an existing user has; that login is refused
// (BADUSER) and stores nothing, and the existing user keeps account and token.
func TestLoginRefusesAnotherUsersUID(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98000 00001", "919800000001")
	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": ada, "name": "Ada"}), "profile")
	before := e.dump("SELECT uid, phone, name FROM users")
	tokens := e.dump("SELECT uid, token FROM tokens")

	e.mesibo.ForgetUsers()
	expectOK(t, e.call(form, map[string]any{"op": "login", "phone": "+91 98555 55555", "appid": "com.example.app"}), "login")
	a := e.call(form, map[string]any{"op": "login", "phone": "+91 98555 55555", "appid": "com.example.app", "otp": e.hook.lastCode("919855555555")})
	expectFail(t, a, "BADUSER")
	if a.str("token") != "" || a.str("phone") != "" {
		t.Fatalf("the refused login answered an account: %s", a.raw)
	}
	if got := e.dump("SELECT uid, phone, name FROM users"); got != before {
		t.Fatalf("users %q, want %q", got, before)
	}
	if got := e.dump("SELECT uid, token FROM tokens"); got != tokens {
		t.Fatalf("tokens %q, want %q", got, tokens)
	}
	a = e.call(form, map[string]any{"op": "getcontacts", "token": ada, "ts": 0})
	expectOK(t, a, "getcontacts")
	if u := a.body["u"].(map[string]any); u["phone"] != "919800000001" || u["name"] != "Ada" {
		t.Fatalf("Ada's own profile after the refused login: %v", u)
	}
}

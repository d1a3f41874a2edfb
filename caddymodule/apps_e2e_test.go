package caddymodule_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestJSONUnderAnyContentType: the current iOS Swift app posts JSON without setting a
// content type, so its HTTP library labels it as it likes; a body that is a JSON object
// is JSON under any label but multipart (PROTOCOL.md §1), and the app logs in.
func TestJSONUnderAnyContentType(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	post := func(contentType, body string) answer {
		req, _ := http.NewRequest(http.MethodPost, apiURL, strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		return e.do(req)
	}
	for i, contentType := range []string{"application/x-www-form-urlencoded", "application/octet-stream", "", "text/plain; charset=utf-8"} {
		t.Run(contentType, func(t *testing.T) {
			phone := "91980000000" + string(rune('4'+i))
			expectOK(t, post(contentType, `{"op":"login","phone":"`+phone+`","appid":"x"}`), "login")
			a := post(contentType, "\n"+`{"op":"login","phone":"`+phone+`","appid":"x","otp":"`+e.hook.lastCode(phone)+`"}`)
			expectOK(t, a, "login")
			if a.str("phone") != phone || len(a.str("token")) < 17 {
				t.Fatalf("login answer %s", a.raw)
			}
			a = post(contentType, `{"op":"getcontacts","token":"`+a.str("token")+`","ts":0}`)
			expectOK(t, a, "getcontacts")
		})
	}
}

// TestValuesThatDoNotFit: values no column could hold are refused before SQL with the
// same answer on both stores, and change nothing: over 4 KB of name, status or group name,
// a push token over 256 bytes, text that is not UTF-8.
func TestValuesThatDoNotFit(t *testing.T) {
	e := startEnv(t, options{extra: roomy + "\n\t\tmax_body_size 1MB"})
	ada := e.login(form, "+91 98123 47001", "919812347001")
	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": ada, "name": "Ada", "status": "here"}), "profile")
	expectOK(t, e.call(form, map[string]any{"op": "setnotify", "token": ada, "notifytoken": "fcm-1"}), "setnotify")
	huge := strings.Repeat("é", 40<<10) // 80 KB: over a blob column's 64 KB too
	notUTF8 := "Ada\xff\xfe"
	for _, tc := range []struct {
		name   string
		fields map[string]any
		code   string
	}{
		{"long name", map[string]any{"op": "profile", "name": huge}, "TOOLARGE"},
		{"long status", map[string]any{"op": "profile", "status": strings.Repeat("x", 4097)}, "TOOLARGE"},
		{"name not UTF-8", map[string]any{"op": "profile", "name": notUTF8}, "MISSINGPARA"},
		{"group name", map[string]any{"op": "setgroup", "name": huge, "m": "919812347002"}, "TOOLARGE"},
		{"group name not UTF-8", map[string]any{"op": "setgroup", "name": notUTF8, "m": "919812347002"}, "MISSINGPARA"},
		{"long push token", map[string]any{"op": "setnotify", "notifytoken": strings.Repeat("f", 257)}, "TOOLARGE"},
		{"push token not UTF-8", map[string]any{"op": "setnotify", "notifytoken": "fcm\xff"}, "MISSINGPARA"},
		{"login name", map[string]any{"op": "login", "phone": "+91 98123 47003", "appid": "x", "name": huge}, "TOOLARGE"},
	} {
		for _, enc := range encodings {
			if enc == query && strings.Contains(fmt.Sprint(tc.fields), huge) {
				continue // over the server's header limit (HTTP 431), before the API
			}
			if enc == jsonBody && strings.Contains(tc.name, "UTF-8") {
				continue // JSON strings carry only UTF-8: a stray byte decodes as U+FFFD
			}
			t.Run(tc.name+"/"+string(enc), func(t *testing.T) {
				tc.fields["token"] = ada
				expectFail(t, e.call(enc, tc.fields), tc.code)
			})
		}
	}
	if got := e.dump("SELECT name, status FROM users"); got != "Ada:here" {
		t.Errorf("users %q: a refused change was written", got)
	}
	if got := e.dump("SELECT token FROM notifytokens"); got != "fcm-1" {
		t.Errorf("push tokens %q", got)
	}
	if n := e.count("SELECT COUNT(*) FROM `groups`"); n != 0 || len(e.mesibo.CallsOf("groupadd")) != 0 {
		t.Errorf("%d groups, %d groupadd calls after refused setgroups", n, len(e.mesibo.CallsOf("groupadd")))
	}
	if e.hook.count() != 1 {
		t.Errorf("%d codes sent; the refused login must not send one", e.hook.count())
	}
	// Right at the limits is fine.
	expectOK(t, e.call(jsonBody, map[string]any{"op": "profile", "token": ada, "status": strings.Repeat("x", 4096)}), "profile")
	expectOK(t, e.call(jsonBody, map[string]any{"op": "setnotify", "token": ada, "notifytoken": strings.Repeat("f", 256)}), "setnotify")
}

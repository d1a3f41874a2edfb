package caddymodule_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
)

// metric reads one sample from the admin endpoint's /metrics; -1 when absent.
func metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/metrics", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ([0-9.e+-]+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestMetrics: requests by op and code, OTP events and mesibo calls are counted in Caddy's
// registry, and keep counting after a config reload.
func TestMetrics(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	e.login(form, "+91 98123 57001", "919812357001")
	expectFail(t, e.call(form, map[string]any{"op": "login", "phone": "12", "appid": "a"}), "BADPHONE")
	expectFail(t, e.call(form, map[string]any{"op": "login", "phone": "+91 98123 57001", "appid": "a", "otp": "1"}), "BADCODE")
	e.mesibo.FailNext("useradd", 3, mesibotest.Failure{Status: 500})
	e.call(form, map[string]any{"op": "login", "phone": reviewPhone, "appid": "a"})
	e.call(form, map[string]any{"op": "login", "phone": reviewPhone, "appid": "a", "otp": reviewCode})

	for name, want := range map[string]float64{
		`caddy_messenger_requests_total{code="OK",op="login"}`:             3,
		`caddy_messenger_requests_total{code="BADPHONE",op="login"}`:       1,
		`caddy_messenger_requests_total{code="BADAPP",op="login"}`:         1,
		`caddy_messenger_otp_total{event="sent"}`:                          2,
		`caddy_messenger_otp_total{event="verified"}`:                      2,
		`caddy_messenger_otp_total{event="failed"}`:                        1,
		`caddy_messenger_mesibo_calls_total{op="useradd",outcome="ok"}`:    1,
		`caddy_messenger_mesibo_calls_total{op="useradd",outcome="error"}`: 3,
		`caddy_messenger_mesibo_call_duration_seconds_count{op="useradd"}`: 4,
	} {
		if got := metric(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	waitFor(t, "the outbox gauge", func() bool { return metric(t, "caddy_messenger_outbox_depth") == 0 })

	// A reload (a new config) gets a new registry; the counters must count there.
	e2 := startEnv(t, options{extra: roomy + "\n\t\tinvite {\n\t\t\ttext reloaded\n\t\t}"})
	e2.login(form, "+91 98123 57002", "919812357002")
	if got := metric(t, `caddy_messenger_requests_total{code="OK",op="login"}`); got != 2 {
		t.Fatalf("after reload login OK = %v, want 2 (counted in the new config)", got)
	}
	if !strings.Contains(e2.call(form, map[string]any{"op": "nosuch", "token": strings.Repeat("x", 20)}).raw, "AUTHFAIL") {
		t.Fatal("reloaded config does not answer")
	}
}

package otpsender

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/otp"
)

func TestWebhookSignsAndRetries(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write(body)
		if r.Header.Get(SignatureHeader) != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("bad signature %q", r.Header.Get(SignatureHeader))
		}
		var d otp.Delivery
		if err := json.Unmarshal(body, &d); err != nil || d != (otp.Delivery{Phone: "919812345678", Code: "123456", AppID: "app"}) {
			t.Errorf("body %s", body)
		}
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	t.Setenv("HOOK_SECRET", "s3cret")
	w := &Webhook{URL: srv.URL, Secret: "{env.HOOK_SECRET}"}
	reg := provisioned(t, w)
	if err := w.SendOTP(context.Background(), otp.Delivery{Phone: "919812345678", Code: "123456", AppID: "app"}); err != nil {
		t.Fatalf("delivered on the third try, got %v", err)
	}
	if calls.Load() != 3 {
		t.Fatalf("calls %d, want 3", calls.Load())
	}
	if got := deliveries(reg, "webhook"); got != "error=2 ok=1" {
		t.Fatalf("deliveries %s", got)
	}
}

func TestWebhookFailures(t *testing.T) {
	var calls atomic.Int32
	status := http.StatusBadRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(status)
	}))
	defer srv.Close()
	none := 0
	w := &Webhook{URL: srv.URL, Timeout: caddy.Duration(time.Second)}
	provisioned(t, w)
	err := w.SendOTP(context.Background(), otp.Delivery{Phone: "1", Code: "987654"})
	if err == nil || calls.Load() != 1 {
		t.Fatalf("a 4xx is final: err %v after %d calls", err, calls.Load())
	}
	if strings.Contains(err.Error(), "987654") {
		t.Fatal("the code leaked into an error")
	}
	status = http.StatusInternalServerError
	calls.Store(0)
	w = &Webhook{URL: srv.URL, Retries: &none}
	provisioned(t, w)
	if err := w.SendOTP(context.Background(), otp.Delivery{}); err == nil || calls.Load() != 1 {
		t.Fatalf("retries 0: err %v after %d calls", err, calls.Load())
	}
	if err := (&Webhook{url: "ftp://x"}).Validate(); err == nil {
		t.Fatal("ftp URL accepted")
	}
}

func TestWebhookCaddyfile(t *testing.T) {
	var w Webhook
	err := w.UnmarshalCaddyfile(caddyfile.NewTestDispenser("webhook https://sms.example/send {\n secret abc\n timeout 3s\n retries 4\n}"))
	if err != nil || w.URL != "https://sms.example/send" || w.Secret != "abc" || time.Duration(w.Timeout) != 3*time.Second || *w.Retries != 4 {
		t.Fatalf("%+v %v", w, err)
	}
	var l Log
	if err := l.UnmarshalCaddyfile(caddyfile.NewTestDispenser("log extra")); err == nil {
		t.Fatal("log with an argument accepted")
	}
}

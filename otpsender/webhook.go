package otpsender

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/otp"
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the request body under the
// webhook secret, so the receiver can tell our requests from forged ones.
const SignatureHeader = "X-Messenger-Signature"

// Webhook POSTs each code as JSON {"phone","code","appid"} to a URL, for an SMS gateway
// or any service that delivers it. A 2xx answer means delivered.
type Webhook struct {
	// URL receives the POST. Placeholders such as {env.SMS_HOOK} are replaced at load.
	URL string `json:"url,omitempty"`
	// Secret keys the HMAC signature header; placeholders are replaced at load.
	Secret string `json:"secret,omitempty"`
	// Timeout bounds each attempt. Default 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Retries is how many more attempts follow a failed one (network error or 5xx).
	// Default 2.
	Retries *int `json:"retries,omitempty"`

	url     string
	secret  []byte
	retries int
	client  *http.Client
}

// CaddyModule returns the Caddy module information.
func (Webhook) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.otp_senders.webhook",
		New: func() caddy.Module { return new(Webhook) },
	}
}

// Provision resolves placeholders and sets defaults.
func (w *Webhook) Provision(_ caddy.Context) error {
	repl := caddy.NewReplacer()
	w.url = repl.ReplaceKnown(w.URL, "")
	w.secret = []byte(repl.ReplaceKnown(w.Secret, ""))
	if w.Timeout <= 0 {
		w.Timeout = caddy.Duration(5 * time.Second)
	}
	w.retries = 2
	if w.Retries != nil {
		w.retries = *w.Retries
	}
	w.client = &http.Client{
		// Enough idle connections that a burst of codes reuses them instead of dialling
		// (and, for https, handshaking) for most deliveries.
		Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 32, IdleConnTimeout: 90 * time.Second},
		Timeout:   time.Duration(w.Timeout),
		// A redirect would re-post the code somewhere else: never follow one.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return nil
}

// Validate checks the URL.
func (w *Webhook) Validate() error {
	u, err := url.Parse(w.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("otp webhook: url must be an absolute http(s) URL")
	}
	if w.retries < 0 {
		return fmt.Errorf("otp webhook: retries must not be negative")
	}
	return nil
}

// SendOTP posts the code, retrying failed attempts with a short backoff.
func (w *Webhook) SendOTP(ctx context.Context, d otp.Delivery) error {
	body, err := json.Marshal(d)
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, w.secret)
	mac.Write(body)
	signature := "sha256=" + hex.EncodeToString(mac.Sum(nil))

	backoff := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err = w.post(ctx, body, signature)
		if err == nil || attempt >= w.retries || errors.Is(err, errPermanent) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

var errPermanent = errors.New("refused")

func (w *Webhook) post(ctx context.Context, body []byte, signature string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("otp webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, signature)
	resp, err := w.client.Do(req)
	if err != nil {
		// Without the URL (it may carry an API key) and never the body (it holds the code).
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("otp webhook: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 500:
		return fmt.Errorf("otp webhook: status %d", resp.StatusCode)
	}
	return fmt.Errorf("otp webhook: status %d: %w", resp.StatusCode, errPermanent)
}

// UnmarshalCaddyfile sets up the sender from Caddyfile tokens. Syntax:
//
//	sender webhook <url> {
//		secret  <secret>
//		timeout <duration>
//		retries <n>
//	}
func (w *Webhook) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the sender name
	if !d.AllArgs(&w.URL) {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "secret":
			if !d.AllArgs(&w.Secret) {
				return d.ArgErr()
			}
		case "timeout":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("timeout: %v", err)
			}
			w.Timeout = caddy.Duration(dur)
		case "retries":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return d.Errf("retries: want a number >= 0, got %q", s)
			}
			w.Retries = &n
		default:
			return d.Errf("unknown subdirective %q", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ otp.Sender            = (*Webhook)(nil)
	_ caddy.Provisioner     = (*Webhook)(nil)
	_ caddy.Validator       = (*Webhook)(nil)
	_ caddyfile.Unmarshaler = (*Webhook)(nil)
)

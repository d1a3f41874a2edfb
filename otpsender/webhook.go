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
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/otp"
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the request body under the
// webhook secret, so the receiver can tell our requests from forged ones.
const SignatureHeader = "X-Messenger-Signature"

// Webhook POSTs each code as JSON {"phone","code","appid","text"} to a URL, for an SMS gateway
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

	url    string
	secret []byte
	deliverer
}

// CaddyModule returns the Caddy module information.
func (Webhook) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.otp_senders.webhook",
		New: func() caddy.Module { return new(Webhook) },
	}
}

// Provision resolves placeholders and sets defaults.
func (w *Webhook) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	w.url = repl.ReplaceKnown(w.URL, "")
	w.secret = []byte(repl.ReplaceKnown(w.Secret, ""))
	w.deliverer = newDeliverer(ctx, "webhook", w.Timeout, w.Retries)
	return nil
}

// Validate checks the URL and the retries.
func (w *Webhook) Validate() error {
	if err := w.checkURL(w.url); err != nil {
		return err
	}
	return w.checkRetries()
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
	return w.deliver(ctx, func(ctx context.Context) error { return w.attempt(ctx, body, signature) })
}

// attempt makes one attempt. Unlike the gateways, the webhook retries every failure but a
// 4xx: the receiver is the operator's own, which can tell a repeated code by its body.
func (w *Webhook) attempt(ctx context.Context, body []byte, signature string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("otp webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, signature)
	status, _, err := w.deliverer.post(req)
	var f *failure
	switch {
	case errors.As(err, &f):
		f.retry = true
		return f
	case status >= 200 && status < 300:
		return nil
	}
	f = w.statusFailure(status, "")
	f.retry, f.refused = status >= 500, status < 500
	return f
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
		default:
			ok, err := unmarshalAttempts(d, &w.Timeout, &w.Retries)
			if err != nil {
				return err
			}
			if !ok {
				return d.Errf("unknown subdirective %q", d.Val())
			}
		}
	}
	return nil
}

// Interface guards
var (
	_ otp.Sender            = (*Webhook)(nil)
	_ caddy.Provisioner     = (*Webhook)(nil)
	_ caddy.Validator       = (*Webhook)(nil)
	_ caddy.CleanerUpper    = (*Webhook)(nil)
	_ caddyfile.Unmarshaler = (*Webhook)(nil)
)

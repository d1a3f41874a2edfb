package otpsender

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/otp"
)

func init() {
	caddy.RegisterModule(Vonage{})
}

// Vonage sends codes as SMS through Vonage's SMS API (formerly Nexmo): a form POST with the
// account's API key and secret.
type Vonage struct {
	// APIKey is the account's API key. Placeholders.
	APIKey string `json:"api_key,omitempty"`
	// APISecret is the account's API secret. Placeholders.
	APISecret string `json:"api_secret,omitempty"`
	// From is the sender: a Vonage number in E.164 form, or an alphanumeric sender ID
	// where the destination country allows one. Placeholders.
	From string `json:"from,omitempty"`
	Gateway

	apiKey, apiSecret, from string
}

const vonageEndpoint = "https://rest.nexmo.com"

// Vonage's bounds of the ttl parameter.
const (
	vonageMinTTL = 20 * time.Second
	vonageMaxTTL = 7 * 24 * time.Hour
)

// CaddyModule returns the Caddy module information.
func (Vonage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.otp_senders.vonage",
		New: func() caddy.Module { return new(Vonage) },
	}
}

// Provision resolves placeholders and sets defaults.
func (v *Vonage) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	v.apiKey = repl.ReplaceKnown(v.APIKey, "")
	v.apiSecret = repl.ReplaceKnown(v.APISecret, "")
	// Vonage takes numbers without '+'.
	v.from = strings.TrimPrefix(repl.ReplaceKnown(v.From, ""), "+")
	v.provision(ctx, "vonage", vonageEndpoint)
	return nil
}

// Validate checks that the credentials and the sender are set.
func (v *Vonage) Validate() error {
	if v.apiKey == "" || v.apiSecret == "" {
		return errors.New("otp vonage: api_key and api_secret are required")
	}
	if v.from == "" {
		return errors.New("otp vonage: from is required (a number or a sender ID)")
	}
	return v.validate()
}

// vonageAnswer is the SMS API's answer: one status per message part; "0" is accepted.
type vonageAnswer struct {
	Messages []struct {
		Status string `json:"status"`
	} `json:"messages"`
}

// Statuses of the SMS API other than "0" (accepted) that tell more than that Vonage took
// nothing: after throttled and too many binds it asks to come back; an internal error is
// its own failure, not a refusal.
const (
	vonageThrottled     = "1"
	vonageInternalError = "5"
	vonageTooManyBinds  = "10"
)

// SendOTP posts d to the SMS API.
func (v *Vonage) SendOTP(ctx context.Context, d otp.Delivery) error {
	text := smsText(d)
	form := url.Values{
		"api_key": {v.apiKey}, "api_secret": {v.apiSecret},
		"from": {v.from}, "to": {d.Phone}, "text": {text},
	}
	if strings.IndexFunc(text, func(r rune) bool { return r >= utf8.RuneSelf }) >= 0 {
		form.Set("type", "unicode")
	}
	if d.TTL > 0 {
		// A code is useless once expired: Vonage stops trying to deliver it then.
		form.Set("ttl", strconv.FormatInt(min(max(d.TTL, vonageMinTTL), vonageMaxTTL).Milliseconds(), 10))
	}
	return v.send(ctx, "/sms/json", vonageHeader, []byte(form.Encode()), v.judge)
}

// vonageHeader is every request's (send sends a copy).
var vonageHeader = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Accept": {"application/json"}}

// judge tells from an answer of the SMS API whether the message was taken: a 2xx answer
// holds a status per part of the message, and only "0" means taken.
func (v *Vonage) judge(status int, answer []byte) error {
	if status < 200 || status >= 300 {
		return v.statusFailure(status, "")
	}
	var a vonageAnswer
	if err := json.Unmarshal(answer, &a); err != nil || len(a.Messages) == 0 {
		return &failure{sender: v.sender, reason: "an answer without a message status: it may have been sent"}
	}
	// A long text goes in parts: once one is taken, sending again would repeat it.
	accepted, refusal := 0, ""
	for _, m := range a.Messages {
		switch {
		case m.Status == "0":
			accepted++
		case refusal == "":
			refusal = m.Status
		}
	}
	if refusal == "" {
		return nil
	}
	retry := accepted == 0 && (refusal == vonageThrottled || refusal == vonageTooManyBinds)
	return &failure{sender: v.sender, reason: "message status " + refusal, retry: retry,
		refused: !retry && refusal != vonageInternalError}
}

// UnmarshalCaddyfile sets up the sender from Caddyfile tokens. Syntax:
//
//	sender vonage {
//		api_key    <key>
//		api_secret <secret>
//		from       <number>|<sender ID>
//		endpoint   <url>
//		timeout    <duration>
//		retries    <n>
//	}
func (v *Vonage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalGateway(d, &v.Gateway, map[string]*string{
		"api_key": &v.APIKey, "api_secret": &v.APISecret, "from": &v.From,
	})
}

// Interface guards
var (
	_ otp.Sender            = (*Vonage)(nil)
	_ caddy.Provisioner     = (*Vonage)(nil)
	_ caddy.Validator       = (*Vonage)(nil)
	_ caddy.CleanerUpper    = (*Vonage)(nil)
	_ caddyfile.Unmarshaler = (*Vonage)(nil)
)

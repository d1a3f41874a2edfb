package otpsender

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/otp"
)

func init() {
	caddy.RegisterModule(Twilio{})
}

// Twilio sends codes as SMS through Twilio's Programmable Messaging API: a form POST to
// the account's Messages resource, with basic auth.
type Twilio struct {
	// AccountSID is the account (AC...) whose Messages resource sends. Placeholders.
	AccountSID string `json:"account_sid,omitempty"`
	// AuthToken is the account's auth token. Placeholders. Required unless APIKey and
	// APISecret are set.
	AuthToken string `json:"auth_token,omitempty"`
	// APIKey is the SID (SK...) of an API key of the account, which Twilio recommends over
	// the auth token in production. Placeholders.
	APIKey string `json:"api_key,omitempty"`
	// APISecret is the API key's secret. Placeholders.
	APISecret string `json:"api_secret,omitempty"`
	// From is the sender: a Twilio phone number in E.164 form (+15017122661), an
	// alphanumeric sender ID, or the SID of a Messaging Service (MG...), which is then sent
	// as MessagingServiceSid. Placeholders.
	From string `json:"from,omitempty"`
	Gateway

	accountSID, user, password, from string
	// fromField is "MessagingServiceSid" when from is a Messaging Service, else "From";
	// path and header are every request's.
	fromField, path string
	header          http.Header
}

const twilioEndpoint = "https://api.twilio.com"

// twilioMaxValidity is the longest ValidityPeriod Twilio takes, in seconds.
const twilioMaxValidity = 36000

var messagingServiceSID = regexp.MustCompile(`^MG[0-9a-fA-F]{32}$`)

// CaddyModule returns the Caddy module information.
func (Twilio) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.otp_senders.twilio",
		New: func() caddy.Module { return new(Twilio) },
	}
}

// Provision resolves placeholders and sets defaults.
func (t *Twilio) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	t.accountSID = repl.ReplaceKnown(t.AccountSID, "")
	t.from = repl.ReplaceKnown(t.From, "")
	t.user, t.password = t.accountSID, repl.ReplaceKnown(t.AuthToken, "")
	if t.APIKey != "" {
		t.user, t.password = repl.ReplaceKnown(t.APIKey, ""), repl.ReplaceKnown(t.APISecret, "")
	}
	t.fromField = "From"
	if messagingServiceSID.MatchString(t.from) {
		t.fromField = "MessagingServiceSid"
	}
	t.path = "/2010-04-01/Accounts/" + url.PathEscape(t.accountSID) + "/Messages.json"
	t.header = http.Header{
		"Content-Type":  {"application/x-www-form-urlencoded"},
		"Accept":        {"application/json"},
		"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(t.user+":"+t.password))},
	}
	t.provision(ctx, "twilio", twilioEndpoint)
	return nil
}

// Validate checks that the account, its credentials and the sender are set.
func (t *Twilio) Validate() error {
	switch {
	case t.accountSID == "":
		return errors.New("otp twilio: account_sid is required")
	case t.user == "" || t.password == "":
		return errors.New("otp twilio: auth_token, or api_key and api_secret, are required")
	case t.from == "":
		return errors.New("otp twilio: from is required (a number, a sender ID or a Messaging Service SID)")
	}
	return t.validate()
}

// SendOTP creates a Message resource for d.
func (t *Twilio) SendOTP(ctx context.Context, d otp.Delivery) error {
	form := url.Values{"To": {e164(d)}, "Body": {smsText(d)}, t.fromField: {t.from}}
	if secs := int(d.TTL.Seconds()); secs > 0 {
		// A code is useless once expired: Twilio drops the message if it is still queued.
		form.Set("ValidityPeriod", strconv.Itoa(min(secs, twilioMaxValidity)))
	}
	return t.send(ctx, t.path, t.header, []byte(form.Encode()), t.byStatus(twilioErrorCodes))
}

// twilioErrorCodes reads the error code of a Twilio error answer.
func twilioErrorCodes(answer []byte) []int {
	var e struct {
		Code int `json:"code"`
	}
	if json.Unmarshal(answer, &e) != nil || e.Code == 0 {
		return nil
	}
	return []int{e.Code}
}

// UnmarshalCaddyfile sets up the sender from Caddyfile tokens. Syntax:
//
//	sender twilio {
//		account_sid <AC...>
//		auth_token  <token>
//		api_key     <SK...>     (instead of auth_token, with api_secret)
//		api_secret  <secret>
//		from        <+number>|<sender ID>|<MG...>
//		endpoint    <url>
//		timeout     <duration>
//		retries     <n>
//	}
func (t *Twilio) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalGateway(d, &t.Gateway, map[string]*string{
		"account_sid": &t.AccountSID, "auth_token": &t.AuthToken, "api_key": &t.APIKey,
		"api_secret": &t.APISecret, "from": &t.From,
	})
}

// Interface guards
var (
	_ otp.Sender            = (*Twilio)(nil)
	_ caddy.Provisioner     = (*Twilio)(nil)
	_ caddy.Validator       = (*Twilio)(nil)
	_ caddy.CleanerUpper    = (*Twilio)(nil)
	_ caddyfile.Unmarshaler = (*Twilio)(nil)
)

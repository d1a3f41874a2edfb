package otpsender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/otp"
)

func init() {
	caddy.RegisterModule(MessageBird{})
}

// MessageBird sends codes as SMS through the SMS API of MessageBird (now Bird): a JSON POST
// to its messages resource, authorised by an access key.
type MessageBird struct {
	// AccessKey is a live access key of the account. Placeholders.
	AccessKey string `json:"access_key,omitempty"`
	// From is the originator: a number with its country code, or an alphanumeric sender
	// ID of at most 11 characters. Placeholders.
	From string `json:"from,omitempty"`
	Gateway

	accessKey, from string
	header          http.Header // every request's
}

const messageBirdEndpoint = "https://rest.messagebird.com"

// CaddyModule returns the Caddy module information.
func (MessageBird) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.otp_senders.messagebird",
		New: func() caddy.Module { return new(MessageBird) },
	}
}

// Provision resolves placeholders and sets defaults.
func (m *MessageBird) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	m.accessKey = repl.ReplaceKnown(m.AccessKey, "")
	m.from = repl.ReplaceKnown(m.From, "")
	m.header = http.Header{
		"Content-Type":  {"application/json"},
		"Accept":        {"application/json"},
		"Authorization": {"AccessKey " + m.accessKey},
	}
	m.provision(ctx, "messagebird", messageBirdEndpoint)
	return nil
}

// Validate checks that the access key and the originator are set.
func (m *MessageBird) Validate() error {
	if m.accessKey == "" {
		return errors.New("otp messagebird: access_key is required")
	}
	if m.from == "" {
		return errors.New("otp messagebird: from is required (a number or a sender ID)")
	}
	return m.validate()
}

// messageBirdMessage is the body of a new message.
type messageBirdMessage struct {
	Recipients []string `json:"recipients"`
	Originator string   `json:"originator"`
	Body       string   `json:"body"`
	// DataCoding "auto" sends the text as Unicode only when plain GSM cannot carry it.
	DataCoding string `json:"datacoding"`
	// Validity is how many seconds MessageBird may try to deliver it.
	Validity int `json:"validity,omitempty"`
}

// SendOTP creates a message for d.
func (m *MessageBird) SendOTP(ctx context.Context, d otp.Delivery) error {
	body, err := json.Marshal(messageBirdMessage{
		Recipients: []string{e164(d)}, Originator: m.from, Body: smsText(d), DataCoding: "auto",
		// A code is useless once expired.
		Validity: int(d.TTL.Seconds()),
	})
	if err != nil {
		return fmt.Errorf("otp messagebird: %w", err)
	}
	return m.send(ctx, "/messages", m.header, body, m.byStatus(messageBirdErrorCodes))
}

// messageBirdErrorCodes reads the error codes of a MessageBird error answer.
func messageBirdErrorCodes(answer []byte) []int {
	var e struct {
		Errors []struct {
			Code int `json:"code"`
		} `json:"errors"`
	}
	json.Unmarshal(answer, &e)
	var codes []int
	for _, x := range e.Errors {
		codes = append(codes, x.Code)
	}
	return codes
}

// UnmarshalCaddyfile sets up the sender from Caddyfile tokens. Syntax:
//
//	sender messagebird {
//		access_key <key>
//		from       <number>|<sender ID>
//		endpoint   <url>
//		timeout    <duration>
//		retries    <n>
//	}
func (m *MessageBird) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalGateway(d, &m.Gateway, map[string]*string{"access_key": &m.AccessKey, "from": &m.From})
}

// Interface guards
var (
	_ otp.Sender            = (*MessageBird)(nil)
	_ caddy.Provisioner     = (*MessageBird)(nil)
	_ caddy.Validator       = (*MessageBird)(nil)
	_ caddy.CleanerUpper    = (*MessageBird)(nil)
	_ caddyfile.Unmarshaler = (*MessageBird)(nil)
)

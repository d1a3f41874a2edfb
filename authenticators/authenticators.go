// Package authenticators holds the Caddy guest modules that decide how a user logs in
// (namespace messenger.authenticators): `phone_otp`, the default, sends a one-time code
// to the phone; `caddy_identity` trusts the identity an auth handler earlier in the same
// route established (basic_auth, forward_auth to an SSO proxy, an auth plugin).
package authenticators

import (
	"errors"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/handlers"
)

func init() {
	caddy.RegisterModule(PhoneOTP{})
	caddy.RegisterModule(CaddyIdentity{})
}

// PhoneOTP is phone login with a one-time code, configured by the handler's `otp` block.
type PhoneOTP struct{}

// CaddyModule returns the Caddy module information.
func (PhoneOTP) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.authenticators.phone_otp",
		New: func() caddy.Module { return new(PhoneOTP) },
	}
}

// UnmarshalCaddyfile sets up the module from Caddyfile tokens. Syntax:
//
//	authenticator phone_otp
func (*PhoneOTP) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() || d.NextBlock(0) {
		return d.Err("phone_otp takes no options; codes are configured in the otp block")
	}
	return nil
}

// CaddyIdentity logs in the user whose phone number a placeholder holds: the placeholder
// is filled by an auth handler that ran earlier in the same route. It must only be used
// where every request to the API passes that handler first; otherwise a client could
// supply the value itself (a request header, say) and log in as anyone.
type CaddyIdentity struct {
	// Phone is the placeholder holding the user's phone number, e.g.
	// "{http.auth.user.id}" (basic_auth, when user names are phone numbers) or
	// "{http.request.header.X-Auth-Phone}" (a header forward_auth copies from the SSO
	// proxy's answer with copy_headers). Required.
	Phone string `json:"phone,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (CaddyIdentity) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.authenticators.caddy_identity",
		New: func() caddy.Module { return new(CaddyIdentity) },
	}
}

// Validate checks that a placeholder is configured.
func (c *CaddyIdentity) Validate() error {
	if !strings.HasPrefix(c.Phone, "{") || !strings.HasSuffix(c.Phone, "}") {
		return errPlaceholder
	}
	return nil
}

var errPlaceholder = errors.New("caddy_identity: phone must be a placeholder such as {http.auth.user.id}")

// Identity returns the phone number the placeholder holds for this request.
func (c *CaddyIdentity) Identity(req *handlers.Request) string {
	if req.Expand == nil {
		return ""
	}
	v := strings.TrimSpace(req.Expand(c.Phone))
	if strings.Contains(v, "{") {
		return "" // the placeholder was not filled: no auth handler ran
	}
	return v
}

// UnmarshalCaddyfile sets up the module from Caddyfile tokens. Syntax:
//
//	authenticator caddy_identity <placeholder>
func (c *CaddyIdentity) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if !d.AllArgs(&c.Phone) {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("unknown subdirective %q", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ handlers.IdentitySource = (*CaddyIdentity)(nil)
	_ caddy.Validator         = (*CaddyIdentity)(nil)
	_ caddyfile.Unmarshaler   = (*CaddyIdentity)(nil)
	_ caddyfile.Unmarshaler   = (*PhoneOTP)(nil)
)

package otpsender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/otp"
)

func init() {
	caddy.RegisterModule(Failover{})
}

// Failover delivers each code through the first of its senders that can: when one fails
// (after its own retries), the next is tried, so that an outage of one provider does not
// stop logins. A sender that timed out may still have delivered, so the person may then
// get the same code twice: the price of getting it at all.
type Failover struct {
	// SendersRaw are the senders (modules of messenger.otp_senders), in the order they
	// are tried.
	SendersRaw []json.RawMessage `json:"senders,omitempty" caddy:"namespace=messenger.otp_senders inline_key=sender"`

	senders []otp.Sender
	names   []string
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Failover) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.otp_senders.failover",
		New: func() caddy.Module { return new(Failover) },
	}
}

// Provision loads the senders.
func (f *Failover) Provision(ctx caddy.Context) error {
	f.logger = ctx.Logger()
	if len(f.SendersRaw) == 0 {
		return errors.New("otp failover: no senders")
	}
	mods, err := ctx.LoadModule(f, "SendersRaw")
	if err != nil {
		return fmt.Errorf("otp failover: loading senders: %w", err)
	}
	for _, mod := range mods.([]any) {
		sender, ok := mod.(otp.Sender)
		if !ok {
			return fmt.Errorf("otp failover: module %T is not an otp sender", mod)
		}
		f.senders = append(f.senders, sender)
		f.names = append(f.names, mod.(caddy.Module).CaddyModule().ID.Name())
	}
	return nil
}

// SendOTP tries the senders in order until one delivers d.
func (f *Failover) SendOTP(ctx context.Context, d otp.Delivery) error {
	var errs []error
	for i, sender := range f.senders {
		err := sender.SendOTP(ctx, d)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break // the request is over: no time for another sender
		}
		if i+1 < len(f.senders) {
			f.logger.Warn("otp sender failed; trying the next", zap.String("failed", f.names[i]),
				zap.String("next", f.names[i+1]), zap.Error(err))
		}
	}
	return fmt.Errorf("otp failover: no sender delivered: %w", errors.Join(errs...))
}

// UnmarshalCaddyfile sets up the sender from Caddyfile tokens: a block of senders, one
// per line, each as after `sender`. Syntax:
//
//	sender failover {
//		<sender> [<args...>] [{ ... }]
//		<sender> [<args...>] [{ ... }]
//	}
func (f *Failover) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the sender name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		sender, err := UnmarshalSender(d)
		if err != nil {
			return err
		}
		f.SendersRaw = append(f.SendersRaw, sender)
	}
	if len(f.SendersRaw) == 0 {
		return d.Err("failover needs at least one sender")
	}
	return nil
}

// UnmarshalSender reads the sender at d, as written after `sender`: its module's name,
// arguments and block. It returns the sender's JSON, the name under "sender".
func UnmarshalSender(d *caddyfile.Dispenser) (json.RawMessage, error) {
	name := d.Val()
	mod, err := caddyfile.UnmarshalModule(d, "messenger.otp_senders."+name)
	if err != nil {
		return nil, err
	}
	if _, ok := mod.(otp.Sender); !ok {
		return nil, d.Errf("sender %q is not an otp sender", name)
	}
	return caddyconfig.JSONModuleObject(mod, "sender", name, nil), nil
}

// Interface guards
var (
	_ otp.Sender            = (*Failover)(nil)
	_ caddy.Provisioner     = (*Failover)(nil)
	_ caddyfile.Unmarshaler = (*Failover)(nil)
)

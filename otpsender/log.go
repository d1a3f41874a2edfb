// Package otpsender holds the Caddy guest modules that deliver login codes (namespace
// messenger.otp_senders): the development `log` sender, the `webhook` sender, the SMS
// gateways `twilio`, `vonage`, `messagebird` and `aws_sns`, and `failover`, which tries
// senders in order. The text of each SMS comes from Messages.
package otpsender

import (
	"context"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/metrics"
	"github.com/caddy-messenger/messenger/otp"
)

func init() {
	caddy.RegisterModule(Log{})
	caddy.RegisterModule(Webhook{})
}

// Log writes each code to Caddy's log. For development only: it is the one place a
// code is ever logged, and anyone who reads the log can log in as anyone.
type Log struct {
	logger  *zap.Logger
	metrics *metrics.Metrics
}

// CaddyModule returns the Caddy module information.
func (Log) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.otp_senders.log",
		New: func() caddy.Module { return new(Log) },
	}
}

// Provision sets up the logger.
func (l *Log) Provision(ctx caddy.Context) error {
	l.logger = ctx.Logger()
	l.metrics = metrics.New(ctx.GetMetricsRegistry())
	l.logger.Warn("login codes are written to the log: for development only")
	return nil
}

// SendOTP logs the code and its text.
func (l *Log) SendOTP(_ context.Context, d otp.Delivery) error {
	start := time.Now()
	l.logger.Info("login code", zap.String("phone", d.Phone), zap.String("appid", d.AppID), zap.String("code", d.Code),
		zap.String("text", smsText(d)))
	l.metrics.OTPDelivery("log", metrics.DeliveryOK, time.Since(start))
	return nil
}

// UnmarshalCaddyfile sets up the sender from Caddyfile tokens. Syntax:
//
//	sender log
func (l *Log) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the sender name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("unknown subdirective %q", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ otp.Sender            = (*Log)(nil)
	_ caddy.Provisioner     = (*Log)(nil)
	_ caddyfile.Unmarshaler = (*Log)(nil)
)

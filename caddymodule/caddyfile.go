package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/caddy-messenger/messenger/otpsender"
)

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	messenger [<matcher>] {
//		database        <dsn>|sqlite:<file>   (none: the embedded store in Caddy's data dir)
//		max_db_connections <n>                (MySQL pool size, default 32)
//		redis           <url>                 (none: codes and limits in memory)
//		redis_mode      single|sentinel|cluster
//		redis_key_prefix <prefix>
//		mesibo {
//			endpoint    <url>
//			app_token   <token>
//			timeout     <duration>
//		}
//		authenticator   phone_otp | caddy_identity <placeholder>
//		otp {
//			secret          <secret>
//			ttl             <duration>
//			max_checks      <n>
//			test_number     <phone> <code>
//			sender          <module> [<args...>] [{ ... }]
//			message         [<appid>|*] <template>
//		}
//		rate_limit      otp_phone|otp_ip|otp_global <events> <window>
//		contact_discovery {
//			budget      <n>
//			refill      <n> <window>
//			max_phones  <n>
//			fail_open
//		}
//		storage         <url>                 (file:///dir or s3://bucket?…, default file://./data; see docs/storage.md)
//		files_dir       <dir>                 (with thumbs_dir: two local folders instead of storage)
//		thumbs_dir      <dir>
//		thumbnail_cache <size>                (thumbnails kept in memory, default 32MiB)
//		max_picture_size   <size>
//		max_picture_pixels <n>
//		max_decode_memory  <size>             (pictures decoded at once, default 96MiB)
//		max_attachment_size <size>            (a chat attachment, default 128MiB)
//		upload_temp_dir <dir>                 (where uploads are spooled, default $TMPDIR)
//		upload_budget   <size> <window>       (per user, default 512MiB 1h)
//		notifications {
//			new_user         <text>
//			new_user_message <text>
//			added_to_group   <text>
//		}
//		outbox {
//			concurrency <n>                   (notifications in flight, default 128)
//			max_backoff <duration>            (default 5m)
//			lease       <duration>            (claims of a lost instance wait this long, default 2m)
//			profile_interval <duration>       (spacing of a user's profile updates, default 1s)
//		}
//		max_body_size   <size>
//		download_url    <url>
//		upload_url      <url>
//		invite {
//			text        <text>
//			subject     <text>
//			title       <text>
//		}
//		google_maps_key <key>
//		op_timeout      <duration>
//		token_expiry    <duration>
//		revoke_on_logout
//		ops             <op...>
//		pass_unknown_ops
//	}
//
// ops lists the ops this handler answers (all when absent); the others go to the next
// handler of the route, so an old backend behind it keeps serving them.
// authenticator chooses how users log in: phone_otp (default; the otp block) or
// caddy_identity, which trusts a placeholder filled by an auth handler that runs earlier
// in the same route (basic_auth's {http.auth.user.id}, or a header that forward_auth
// copies from an SSO proxy). Secrets should be given as {env.NAME} placeholders. rate_limit may repeat; the rules
// given for a scope replace that scope's defaults. sender names a module of the
// messenger.otp_senders namespace: "log" (development: codes go to the log),
// "webhook <url> { secret <s>; timeout <d>; retries <n> }", an SMS gateway (twilio,
// vonage, messagebird, aws_sns) or "failover { <sender>... }" (docs/sms.md). message sets
// the SMS text, per app id or for every app (no appid, or *): {code}, {minutes}, {app}.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	subdirectives := h.subdirectives()
	for d.NextBlock(0) {
		unmarshal, ok := subdirectives[d.Val()]
		if !ok {
			return d.Errf("unknown subdirective %q", d.Val())
		}
		if err := unmarshal(d); err != nil {
			return err
		}
	}
	return nil
}

// subdirectives maps each subdirective of the messenger block to what reads it into h.
func (h *Handler) subdirectives() map[string]func(*caddyfile.Dispenser) error {
	str := func(dst *string) func(*caddyfile.Dispenser) error {
		return func(d *caddyfile.Dispenser) error { return oneArg(d, dst) }
	}
	size := func(dst *int64) func(*caddyfile.Dispenser) error {
		return func(d *caddyfile.Dispenser) error { return sizeArg(d, dst) }
	}
	duration := func(dst *caddy.Duration) func(*caddyfile.Dispenser) error {
		return func(d *caddyfile.Dispenser) error { return durationArg(d, dst) }
	}
	flag := func(dst *bool) func(*caddyfile.Dispenser) error {
		return func(d *caddyfile.Dispenser) error {
			if d.NextArg() {
				return d.ArgErr()
			}
			*dst = true
			return nil
		}
	}
	return map[string]func(*caddyfile.Dispenser) error{
		"database":            str(&h.Database),
		"max_db_connections":  func(d *caddyfile.Dispenser) error { return intArg(d, &h.MaxDBConnections) },
		"redis":               str(&h.Redis),
		"redis_mode":          str(&h.RedisMode),
		"redis_key_prefix":    str(&h.RedisKeyPrefix),
		"mesibo":              h.unmarshalMesibo,
		"otp":                 h.unmarshalOTP,
		"authenticator":       h.unmarshalAuthenticator,
		"rate_limit":          h.unmarshalRateLimit,
		"max_body_size":       size(&h.MaxBodySize),
		"storage":             str(&h.Storage),
		"files_dir":           str(&h.FilesDir),
		"thumbs_dir":          str(&h.ThumbsDir),
		"thumbnail_cache":     size(&h.ThumbnailCache),
		"max_picture_size":    size(&h.MaxPictureSize),
		"max_decode_memory":   size(&h.MaxDecodeMemory),
		"max_attachment_size": size(&h.MaxAttachmentSize),
		"upload_temp_dir":     str(&h.UploadTempDir),
		"upload_budget":       h.unmarshalUploadBudget,
		"max_picture_pixels": func(d *caddyfile.Dispenser) error {
			var n int
			err := intArg(d, &n)
			h.MaxPicturePixels = int64(n)
			return err
		},
		"contact_discovery": h.unmarshalDiscovery,
		"notifications": func(d *caddyfile.Dispenser) error {
			return block(d, map[string]*string{"new_user": &h.Notifications.NewUser,
				"new_user_message": &h.Notifications.NewUserMessage, "added_to_group": &h.Notifications.AddedToGroup})
		},
		"outbox":       h.unmarshalOutbox,
		"download_url": str(&h.DownloadURL),
		"upload_url":   str(&h.UploadURL),
		"invite": func(d *caddyfile.Dispenser) error {
			return block(d, map[string]*string{"text": &h.Invite.Text, "subject": &h.Invite.Subject, "title": &h.Invite.Title})
		},
		"google_maps_key": str(&h.GoogleMapsKey),
		"op_timeout":      duration(&h.OpTimeout),
		"token_expiry":    duration(&h.TokenExpiry),
		"ops": func(d *caddyfile.Dispenser) error {
			h.Ops = append(h.Ops, d.RemainingArgs()...)
			if len(h.Ops) == 0 {
				return d.ArgErr()
			}
			return nil
		},
		"pass_unknown_ops": flag(&h.PassUnknownOps),
		"revoke_on_logout": flag(&h.RevokeOnLogout),
	}
}

// unmarshalAuthenticator reads "authenticator <name> [{ ... }]", a module of the
// messenger.authenticators namespace.
func (h *Handler) unmarshalAuthenticator(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	name := d.Val()
	mod, err := caddyfile.UnmarshalModule(d, "messenger.authenticators."+name)
	if err != nil {
		return err
	}
	h.AuthenticatorRaw = caddyconfig.JSONModuleObject(mod, "method", name, nil)
	return nil
}

func (h *Handler) unmarshalMesibo(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "endpoint":
			err = oneArg(d, &h.Mesibo.Endpoint)
		case "app_token":
			err = oneArg(d, &h.Mesibo.AppToken)
		case "timeout":
			err = durationArg(d, &h.Mesibo.Timeout)
		default:
			return d.Errf("mesibo: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalOTP(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	o := &h.OTP
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "secret":
			err = oneArg(d, &o.Secret)
		case "ttl":
			err = durationArg(d, &o.TTL)
		case "max_checks":
			err = intArg(d, &o.MaxChecks)
		case "max_failures":
			err = intArg(d, &o.MaxFailures)
		case "failure_window":
			err = durationArg(d, &o.FailureWindow)
		case "test_number":
			var number, code string
			if !d.AllArgs(&number, &code) {
				return d.ArgErr()
			}
			if o.TestNumbers == nil {
				o.TestNumbers = map[string]string{}
			}
			o.TestNumbers[number] = code
		case "sender":
			if !d.NextArg() {
				return d.ArgErr()
			}
			o.SenderRaw, err = otpsender.UnmarshalSender(d)
		case "message":
			args := d.RemainingArgs()
			if len(args) == 1 {
				args = []string{otpsender.AnyApp, args[0]}
			}
			if len(args) != 2 {
				return d.ArgErr()
			}
			if o.Message == nil {
				o.Message = otpsender.Messages{}
			}
			o.Message[args[0]] = args[1]
		default:
			return d.Errf("otp: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalRateLimit(d *caddyfile.Dispenser) error {
	var scope, events, window string
	if !d.AllArgs(&scope, &events, &window) {
		return d.ArgErr()
	}
	n, err := strconv.Atoi(events)
	if err != nil || n <= 0 {
		return d.Errf("rate_limit: events must be a positive number, got %q", events)
	}
	dur, err := caddy.ParseDuration(window)
	if err != nil || dur <= 0 {
		return d.Errf("rate_limit: invalid window %q", window)
	}
	rule := Rule{Events: n, Window: caddy.Duration(dur)}
	rl := &h.RateLimit
	switch scope {
	case "otp_phone":
		rl.OTPPhone = append(rl.OTPPhone, rule)
	case "otp_ip":
		rl.OTPIP = append(rl.OTPIP, rule)
	case "otp_global":
		rl.OTPGlobal = append(rl.OTPGlobal, rule)
	default:
		return d.Errf("rate_limit: unknown scope %q (want otp_phone, otp_ip or otp_global)", scope)
	}
	return nil
}

func (h *Handler) unmarshalOutbox(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "concurrency":
			err = intArg(d, &h.Outbox.Concurrency)
		case "max_backoff":
			err = durationArg(d, &h.Outbox.MaxBackoff)
		case "lease":
			err = durationArg(d, &h.Outbox.Lease)
		case "profile_interval":
			err = durationArg(d, &h.Outbox.ProfileInterval)
		default:
			return d.Errf("outbox: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalUploadBudget(d *caddyfile.Dispenser) error {
	var size, window string
	if !d.AllArgs(&size, &window) {
		return d.ArgErr()
	}
	bytes, err := humanize.ParseBytes(size)
	if err != nil || bytes == 0 {
		return d.Errf("upload_budget: invalid size %q", size)
	}
	dur, err := caddy.ParseDuration(window)
	if err != nil || dur <= 0 {
		return d.Errf("upload_budget: invalid window %q", window)
	}
	h.UploadBudget = UploadBudget{Bytes: int64(bytes), Window: caddy.Duration(dur)}
	return nil
}

func (h *Handler) unmarshalDiscovery(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	cd := &h.ContactDiscovery
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "budget":
			err = intArg(d, &cd.Budget)
		case "refill":
			var events, window string
			if !d.AllArgs(&events, &window) {
				return d.ArgErr()
			}
			n, nerr := strconv.Atoi(events)
			dur, derr := caddy.ParseDuration(window)
			if nerr != nil || derr != nil || n <= 0 || dur <= 0 {
				return d.Errf("refill: want <events> <window>, got %q %q", events, window)
			}
			cd.Refill = Rule{n, caddy.Duration(dur)}
		case "max_phones":
			err = intArg(d, &cd.MaxPhones)
		case "fail_open":
			if d.NextArg() {
				return d.ArgErr()
			}
			cd.FailOpen = true
		default:
			return d.Errf("contact_discovery: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func sizeArg(d *caddyfile.Dispenser, dst *int64) error {
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	size, err := humanize.ParseBytes(s)
	if err != nil || size == 0 {
		return d.Errf("invalid size %q", s)
	}
	*dst = int64(size)
	return nil
}

// block reads a block of "key value" lines into the named strings.
func block(d *caddyfile.Dispenser, fields map[string]*string) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dst, ok := fields[d.Val()]
		if !ok {
			return d.Errf("unknown subdirective %q", d.Val())
		}
		if err := oneArg(d, dst); err != nil {
			return err
		}
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.AllArgs(dst) {
		return d.ArgErr()
	}
	return nil
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: %v", s, err)
	}
	*dst = caddy.Duration(dur)
	return nil
}

func intArg(d *caddyfile.Dispenser, dst *int) error {
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return d.Errf("want a positive number, got %q", s)
	}
	*dst = n
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)

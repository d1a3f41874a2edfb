// Package handlers implements the ops of the messenger's private API (PROTOCOL.md §3):
// request decoding, the response envelope, and one file per family of ops. It holds no
// SQL and no HTTP client code: those live in store and mesiboclient.
package handlers

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/groups"
	"github.com/caddy-messenger/messenger/media"
	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/metrics"
	"github.com/caddy-messenger/messenger/otp"
	"github.com/caddy-messenger/messenger/ratelimit"
	"github.com/caddy-messenger/messenger/store"
)

// Config is what the ops need to know about the deployment.
type Config struct {
	// DownloadURL is the base URL under which pictures are served.
	DownloadURL string
	// UploadURL is the URL the apps upload to (the API's own URL).
	UploadURL string
	// Invite is the text the apps offer for inviting friends.
	Invite Invite
	// GoogleMapsKey is handed to the apps at login.
	GoogleMapsKey string
	// TokenExpiry is how long a new access token lives.
	TokenExpiry time.Duration
	// OpTimeout bounds one request's work (database, Redis, mesibo), so a service that
	// hangs cannot pile up waiting requests.
	OpTimeout time.Duration
	// RevokeOnLogout also removes the token at mesibo when a user logs out.
	RevokeOnLogout bool
	// OTPLimits are the rate limits on sending codes.
	OTPLimits OTPLimits
	// CodeText renders the text of the SMS that carries a code to a user of an app; nil
	// leaves it to the sender.
	CodeText func(appID, code string) string
	// CodeTTL is how long a code lives, told to senders so that a provider can drop an
	// SMS it could not deliver in time.
	CodeTTL time.Duration
	// Discovery limits contact look-ups (PROTOCOL.md §5).
	Discovery Discovery
	// UploadBudget is how many KiB one user may upload per window, pictures and
	// attachments together.
	UploadBudget ratelimit.Rule
	// Notifications are the texts of notifications to other users.
	Notifications Notifications
	// ProfileInterval spaces the profile updates of one user sent to its watchers
	// (store.UpdateProfile); <= 0: not at all.
	ProfileInterval time.Duration
}

// Discovery limits how many phone numbers a user may look up: every number not yet in
// the user's contact list costs one from a bucket that refills slowly, so the API cannot
// be used to find out which numbers are registered.
type Discovery struct {
	// Budget is the bucket: its size and how fast it refills.
	Budget ratelimit.Rule
	// MaxPhones is the most phones one getcontacts may carry.
	MaxPhones int
	// FailOpen allows look-ups when Redis, which keeps the budgets, is unreachable;
	// by default they are refused (TEMPFAIL).
	FailOpen bool
}

// Invite is the invitation text block of the app configuration.
type Invite struct {
	// Text is the invitation itself, e.g. where to get the app.
	Text string `json:"text,omitempty"`
	// Subject is its subject, where the app shares it by mail.
	Subject string `json:"subject,omitempty"`
	// Title heads the app's sharing dialog.
	Title string `json:"title,omitempty"`
}

// OTPLimits are the rate limits on sending codes, each a list of rules that all apply.
type OTPLimits struct {
	PerPhone []ratelimit.Rule
	PerIP    []ratelimit.Rule
	Global   []ratelimit.Rule
	// ChecksPerIP limits code checks per client address: checksPerSend times PerIP.
	ChecksPerIP []ratelimit.Rule
}

// checksPerSend is how many code checks per client address each allowed code request buys.
const checksPerSend = 5

// NewOTPLimits returns the limits for these sending rules, with the check rules derived.
func NewOTPLimits(perPhone, perIP, global []ratelimit.Rule) OTPLimits {
	checks := make([]ratelimit.Rule, len(perIP))
	for i, r := range perIP {
		checks[i] = ratelimit.Rule{Events: r.Events * checksPerSend, Window: r.Window, Burst: r.Burst * checksPerSend}
	}
	return OTPLimits{PerPhone: perPhone, PerIP: perIP, Global: global, ChecksPerIP: checks}
}

// API answers requests. Its dependencies are shared pools; one API serves concurrently.
type API struct {
	Config  Config
	Store   *store.Store
	Mesibo  *mesiboclient.Client
	Groups  *groups.Groups
	Codes   otp.Codes
	Limiter *ratelimit.Limiter
	Sender  otp.Sender
	// Identity, when set, replaces code login: the user is who an auth handler earlier in
	// the route says.
	Identity IdentitySource
	Media    *media.Store
	Metrics  *metrics.Metrics
	// Outbox, when set, is called after a notification was queued, with when it is due
	// (zero: now), to wake the worker then.
	Outbox func(due time.Time)
	Logger *zap.Logger
	// Now is the clock; tests set it.
	Now func() time.Time
}

// IdentitySource tells who is logging in from what the server already established (an
// auth handler that ran earlier in the same route), instead of a one-time code.
type IdentitySource interface {
	// Identity returns the phone number of the authenticated user, "" if there is none.
	Identity(req *Request) string
}

// call is one request on its way through an op.
type call struct {
	req   *Request
	now   time.Time
	token string
	// caller is the user of token, once authenticate has looked it up.
	caller store.Caller
}

// auth is how an op learns who is calling.
type auth int

const (
	// noToken: the op needs no token (login, loginui).
	noToken auth = iota
	// lookUp: the caller is looked up by token before the op runs.
	lookUp
	// inOp: the op proves the token itself, in the statement that does its common case
	// (one round trip instead of a look-up and then the work), and calls authenticate
	// where it needs the caller first. Its store methods answer store.ErrNotFound for a
	// token that is not valid.
	inOp
)

// op is one entry of the dispatch table.
type op struct {
	auth auth
	run  func(a *API, ctx context.Context, c *call) *Response
}

// ops is the dispatch table; every op is matched lower-cased.
var ops = map[string]op{
	"login":   {noToken, (*API).login},
	"loginui": {noToken, (*API).loginUI},
	"logout":  {lookUp, (*API).logout},

	"getcontacts": {inOp, (*API).getContacts},
	"delcontacts": {lookUp, (*API).delContacts},
	"profile":     {inOp, (*API).profile},
	"upload":      {lookUp, (*API).upload},
	"setnotify":   {lookUp, (*API).setNotify},

	"setgroup":    {lookUp, (*API).setGroup},
	"getgroup":    {lookUp, (*API).getGroup},
	"editmembers": {lookUp, (*API).editMembers},
	"setadmin":    {lookUp, (*API).setAdmin},
	"delgroup":    {lookUp, (*API).delGroup},
}

// unknownOp answers an op the table does not have, to a caller with a valid token; one
// without gets AUTHFAIL, so the table cannot be probed anonymously.
var unknownOp = op{lookUp, func(_ *API, _ context.Context, c *call) *Response {
	return fail(c.req.Op, c.now, CodeBadOp, "")
}}

// KnownOp reports whether op (lower-cased) is an op of the protocol this package answers.
func KnownOp(op string) bool {
	_, ok := ops[op]
	return ok
}

// Handle runs the op req asks for and returns its answer. Every answer is counted, and
// every failure logged with its code (never with a token or a code).
func (a *API) Handle(ctx context.Context, req *Request) *Response {
	if a.Config.OpTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.Config.OpTimeout)
		defer cancel()
	}
	resp := a.handle(ctx, req)
	code, _ := resp.Body["error"].(string)
	op := req.Op
	if !KnownOp(op) {
		op = "unknown" // client text must not make new label values or long log lines
	}
	switch {
	case req.Op == "":
		code = CodeNoOp
		a.Logger.Debug("no op", zap.String("client_ip", req.ClientIP)) // a bare GET: load balancers' health checks
	case code == "":
		code = "OK"
	default:
		a.Logger.Info("op failed", zap.String("op", op), zap.String("code", code), zap.String("client_ip", req.ClientIP))
	}
	a.Metrics.Request(op, code)
	return resp
}

// handle is the pipeline of one request: the token's form, the caller, the op, and the
// app configuration on the answer of every op that carried a token (PROTOCOL.md §2).
func (a *API) handle(ctx context.Context, req *Request) *Response {
	if req.Op == "" {
		return noop()
	}
	o, known := ops[req.Op]
	if !known {
		o = unknownOp
	}
	c := &call{req: req, now: a.Now(), token: req.Get("token")}
	if c.token == "" {
		c.token = req.Get("auth") // the current Swift app's chat attachments
	}
	if o.auth != noToken && !wellFormedToken(c.token) {
		return refusal(c)
	}
	if resp := a.ready(ctx, req); resp != nil {
		return resp
	}
	if o.auth == noToken {
		return o.run(a, ctx, c)
	}
	if o.auth == lookUp {
		if resp := a.authenticate(ctx, c); resp != nil {
			return resp
		}
	}
	return a.withAppConfig(o.run(a, ctx, c))
}

// Tokens are what mesibo mints: printable ASCII, at most the tokens column's 64
// characters. Shorter ones than 17 are refused without a look-up, as the original did.
const (
	minTokenLength = 17
	maxTokenLength = 64
)

// wellFormedToken reports whether token can be a token at all; any other text is refused
// without asking the database (which could not even compare it with its ASCII column).
func wellFormedToken(token string) bool {
	if len(token) < minTokenLength || len(token) > maxTokenLength {
		return false
	}
	for i := 0; i < len(token); i++ {
		if token[i] <= ' ' || token[i] > '~' {
			return false
		}
	}
	return true
}

// refusal answers a request whose token is missing, malformed or unknown: AUTHFAIL,
// except that logout answers OK (the token may be gone already).
func refusal(c *call) *Response {
	if c.req.Op == "logout" {
		return ok("logout", c.now)
	}
	return fail(c.req.Op, c.now, CodeAuthFail, "")
}

// authenticate looks the caller up by c's token; a nil Response means it passed.
func (a *API) authenticate(ctx context.Context, c *call) *Response {
	caller, err := a.Store.CallerByToken(ctx, c.token)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return refusal(c)
	case err != nil:
		a.logError(ctx, "token look-up failed", zap.String("op", c.req.Op), zap.Error(err))
		return fail(c.req.Op, c.now, CodeDBError, "")
	}
	c.caller = caller
	return nil
}

// ready makes sure the schema is migrated; a database that is not there is DBERROR.
func (a *API) ready(ctx context.Context, req *Request) *Response {
	if err := a.Store.Ready(ctx); err != nil {
		a.logError(ctx, "database not ready", zap.String("op", req.Op), zap.Error(err))
		return fail(req.Op, a.Now(), CodeDBError, "")
	}
	return nil
}

// withAppConfig adds the app-configuration block (PROTOCOL.md §2) to resp if it is a
// success, and returns it.
func (a *API) withAppConfig(resp *Response) *Response {
	if resp.Body["result"] != "OK" {
		return resp
	}
	body, cfg := resp.Body, a.Config
	body["share"] = cfg.Invite
	body["invite"] = cfg.Invite.Text
	body["urls"] = map[string]string{"upload": cfg.UploadURL, "download": cfg.DownloadURL}
	body["fileurl"] = cfg.DownloadURL
	body["downloadurl"] = cfg.DownloadURL
	body["uploadurl"] = cfg.UploadURL
	return resp
}

// logError logs a failed step of an op, unless the client had gone away: a request
// abandoned mid-way (a closed app, a load generator stopping) fails its database calls
// with the cancelled context, which is no fault of the server.
func (a *API) logError(ctx context.Context, msg string, fields ...zap.Field) {
	if errors.Is(ctx.Err(), context.Canceled) {
		a.Logger.Debug(msg+" (client went away)", fields...)
		return
	}
	a.Logger.Error(msg, fields...)
}

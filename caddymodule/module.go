// Package caddymodule is the Caddy glue of the messenger API: the `messenger` HTTP
// handler module, its JSON config and Caddyfile directive, and the connection pools it
// shares across config reloads. The ops themselves live in package handlers.
package caddymodule

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	_ "github.com/caddy-messenger/messenger/authenticators" // the login methods
	"github.com/caddy-messenger/messenger/groups"
	"github.com/caddy-messenger/messenger/handlers"
	"github.com/caddy-messenger/messenger/media"
	"github.com/caddy-messenger/messenger/metrics"
	"github.com/caddy-messenger/messenger/otp"
	"github.com/caddy-messenger/messenger/otpsender"
	"github.com/caddy-messenger/messenger/outbox"
	"github.com/caddy-messenger/messenger/phone"
	"github.com/caddy-messenger/messenger/ratelimit"
	"github.com/caddy-messenger/messenger/store"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("messenger", parseCaddyfile)
	// Before file_server, so that one site serves the API and the pictures.
	httpcaddyfile.RegisterDirectiveOrder("messenger", httpcaddyfile.Before, "file_server")
}

// Handler serves the private API of the mesibo messenger apps (PROTOCOL.md): phone login
// with one-time codes, and the ops that need a logged-in user. Values of the string
// fields marked "placeholders" may be {env.*} placeholders, replaced when the config loads,
// which is how secrets stay out of config files.
type Handler struct {
	// Database is the MySQL/MariaDB DSN in go-sql-driver/mysql form, e.g.
	// "messenger:secret@tcp(127.0.0.1:3306)/messenger", or "sqlite:" and a file path for
	// the embedded store. Placeholders. Default: the embedded store in the file
	// messenger/messenger.db of Caddy's data directory, for a single instance.
	Database string `json:"database,omitempty"`
	// MaxDBConnections is the most connections this instance's pool opens to MySQL.
	// Default 32. Instances sharing one MySQL open up to their sum; keep it under the
	// server's max_connections (151 by default in MariaDB). A reload that changes it opens
	// a new pool, and the old one closes when the old config is gone. The embedded store
	// keeps its own 8.
	MaxDBConnections int `json:"max_db_connections,omitempty"`
	// Redis is the URL of the Redis that holds codes and rate-limit counters, e.g.
	// "redis://127.0.0.1:6379/0". Placeholders. Default: none, and codes and counters
	// live in this process's memory (a single instance; a restart forgets them).
	Redis string `json:"redis,omitempty"`
	// RedisMode is "single" (default), "sentinel" (Redis names the sentinels, with
	// ?master_name=NAME and more sentinels as &addr=HOST:PORT) or "cluster" (Redis names
	// cluster nodes, more as &addr=HOST:PORT). Keys that one script touches share a hash
	// tag, so the module works on a Cluster.
	RedisMode string `json:"redis_mode,omitempty"`
	// RedisKeyPrefix starts every Redis key the module writes, so that deployments can
	// share one Redis. Default "messenger:".
	RedisKeyPrefix string `json:"redis_key_prefix,omitempty"`
	// Mesibo is how to reach the mesibo backend API.
	Mesibo MesiboConfig `json:"mesibo,omitzero"`
	// AuthenticatorRaw is how users log in (namespace messenger.authenticators):
	// "phone_otp" (the default: a one-time code to the phone, see OTP) or
	// "caddy_identity" (the identity an auth handler earlier in the route established).
	AuthenticatorRaw json.RawMessage `json:"authenticator,omitempty" caddy:"namespace=messenger.authenticators inline_key=method"`
	// OTP sets the rules for login codes and how they are delivered.
	OTP OTPConfig `json:"otp,omitzero"`
	// RateLimit limits code sending per phone number, per client IP (IPv6 by /64) and
	// overall. Each list replaces the default of its scope; an empty list keeps it.
	RateLimit RateLimits `json:"rate_limit,omitzero"`
	// ContactDiscovery limits how many new phone numbers a user may look up
	// (getcontacts), so the API cannot be used to find out which numbers are registered.
	ContactDiscovery ContactDiscovery `json:"contact_discovery,omitzero"`
	// Storage is the URL of the bucket that holds pictures, their thumbnails and chat
	// attachments, under files/ and thumbs/: "file:///var/lib/messenger" (a local or
	// shared folder), "s3://BUCKET?region=R" (AWS, or any S3-compatible store with
	// &endpoint=https://HOST&use_path_style=true), and with the packages media/gs and
	// media/azblob built in, "gs://BUCKET" and "azblob://CONTAINER". Credentials come
	// from the environment, as each SDK reads them (AWS_ACCESS_KEY_ID…). Every instance
	// behind one load balancer needs the same.
	// Placeholders. Default "file://./data" (./data/files and ./data/thumbs), unless
	// files_dir or thumbs_dir is set. See docs/storage.md.
	Storage string `json:"storage,omitempty"`
	// FilesDir, with ThumbsDir, is the short form of a local storage whose two folders
	// need not be side by side, e.g. the original backend's files/ and files/tn/. Not
	// with Storage. Default (when only ThumbsDir is set) "./data/files".
	FilesDir string `json:"files_dir,omitempty"`
	// ThumbsDir is where 100x100 thumbnails are stored; see FilesDir. Default (when only
	// FilesDir is set) "./data/thumbs".
	ThumbsDir string `json:"thumbs_dir,omitempty"`
	// ThumbnailCache is how many bytes of thumbnails are kept in memory for answers
	// that list many users. Default 32 MiB.
	ThumbnailCache int64 `json:"thumbnail_cache,omitempty"`
	// MaxPictureSize is the largest picture accepted, in bytes. Default 5 MiB.
	MaxPictureSize int64 `json:"max_picture_size,omitempty"`
	// MaxPicturePixels is the largest width*height accepted, checked before decoding.
	// Default 40 million.
	MaxPicturePixels int64 `json:"max_picture_pixels,omitempty"`
	// MaxDecodeMemory is the memory pictures being decoded may take at once in this
	// process, from the size and bytes per pixel their headers announce; a picture that
	// alone would take more is refused (BADIMAGE). Decodes also wait for a free
	// processor, all but one of them. Default 96 MiB.
	MaxDecodeMemory int64 `json:"max_decode_memory,omitempty"`
	// MaxAttachmentSize is the largest file attached to a chat message (upload with
	// neither profile nor gid), in bytes. It is spooled to UploadTempDir as it arrives,
	// never held in memory. Default 128 MiB.
	MaxAttachmentSize int64 `json:"max_attachment_size,omitempty"`
	// UploadTempDir is where uploaded files are spooled until stored. Default the
	// system's temp folder ($TMPDIR); on a system whose /tmp is in memory (tmpfs), name
	// a folder on disk.
	UploadTempDir string `json:"upload_temp_dir,omitempty"`
	// UploadBudget is how many bytes one user may upload per window, pictures and
	// attachments together; over it, uploads answer RATELIMIT. Default 512 MiB per hour.
	UploadBudget UploadBudget `json:"upload_budget,omitzero"`
	// Notifications are the texts of notifications to other users.
	Notifications handlers.Notifications `json:"notifications,omitzero"`
	// Outbox sets how this instance delivers the queued notifications.
	Outbox OutboxConfig `json:"outbox,omitzero"`
	// Ops, when set, are the only ops this handler answers; requests for the other ops
	// go on to the next handler of the route untouched (body included), so the module can
	// take over an existing backend op by op (php_fastcgi or reverse_proxy after it).
	Ops []string `json:"ops,omitempty"`
	// PassUnknownOps also hands ops this module does not know to the next handler
	// (only with Ops), instead of answering BADOP.
	PassUnknownOps bool `json:"pass_unknown_ops,omitempty"`
	// MaxBodySize is the largest request body read, in bytes, but for a multipart
	// body's file part (see MaxAttachmentSize). Default 10 MiB.
	MaxBodySize int64 `json:"max_body_size,omitempty"`
	// DownloadURL is the base URL under which files/ of the storage is served (the apps'
	// "download" URL): by this Caddy (file_server, or messenger_files for an object
	// store), e.g. "https://chat.example.com/files/", or by the bucket or a CDN in
	// front of it.
	DownloadURL string `json:"download_url,omitempty"`
	// UploadURL is the URL the apps upload pictures to: this API's own URL, e.g.
	// "https://chat.example.com/api.php".
	UploadURL string `json:"upload_url,omitempty"`
	// Invite is the invitation text the apps offer for inviting friends.
	Invite handlers.Invite `json:"invite,omitzero"`
	// GoogleMapsKey is handed to the apps at login. Placeholders.
	GoogleMapsKey string `json:"google_maps_key,omitempty"`
	// OpTimeout bounds the work of one request (database, Redis and mesibo calls
	// together). Default 30s.
	OpTimeout caddy.Duration `json:"op_timeout,omitempty"`
	// TokenExpiry is how long an access token lives. Default one year.
	TokenExpiry caddy.Duration `json:"token_expiry,omitempty"`
	// RevokeOnLogout also removes the user's token at mesibo on logout.
	RevokeOnLogout bool `json:"revoke_on_logout,omitempty"`

	api *handlers.API
	// stopWorker ends the outbox worker and waits for it (Cleanup, before the pools go).
	stopWorker func()
	answers    map[string]bool // Ops as a set; nil answers every op
	limits     handlers.Limits // of every request's body
	poolKey    []string
	logger     *zap.Logger
}

// MesiboConfig is how to reach the mesibo backend API.
type MesiboConfig struct {
	// Endpoint of the backend API. Default "https://api.mesibo.com/backend/".
	// Placeholders.
	Endpoint string `json:"endpoint,omitempty"`
	// AppToken is the secret app token. Placeholders; use {env.MESIBO_APP_TOKEN}.
	// Required.
	AppToken string `json:"app_token,omitempty"`
	// Timeout bounds one call. Default 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// OutboxConfig sets how this instance delivers the notifications that wait in the
// outbox. Notifications about one user's profile or one group go one after another, in
// the order of the changes; different users and groups go in parallel.
type OutboxConfig struct {
	// Concurrency is how many notifications this instance has on their way to mesibo at
	// once, each about another user or group, so at most this many a round trip to
	// mesibo (docs/performance.md has the rates measured). Default 128, at most 512.
	Concurrency int `json:"concurrency,omitempty"`
	// MaxBackoff caps the wait between two attempts of one notification while mesibo
	// fails. Default 5m.
	MaxBackoff caddy.Duration `json:"max_backoff,omitempty"`
	// Lease is how long notifications this instance claimed stay its own: if it dies
	// while delivering them, the other instances deliver them once the lease is over. A
	// claim hands out no delivery after half of it, so it must be at least twice the
	// mesibo timeout. Default 2m.
	Lease caddy.Duration `json:"lease,omitempty"`
	// ProfileInterval spaces the profile updates of one user sent to the users who have
	// it among their contacts: a change made within it after the user's last update
	// went out (or while that one is on its way) is sent when it is over, together with
	// any other made meanwhile, in one message with the last state. A change after a
	// quiet spell goes at once. Default 1s; negative: every change goes as soon as it
	// can.
	ProfileInterval caddy.Duration `json:"profile_interval,omitempty"`
}

// OTPConfig sets the rules for login codes.
type OTPConfig struct {
	// Secret keys the HMAC under which codes are kept in Redis; every instance sharing a
	// Redis must have the same. Placeholders. When empty, a random secret is made at
	// start, so codes verify only on the instance that issued them.
	Secret string `json:"secret,omitempty"`
	// TTL is how long a code lives. Default 5m, at most 10m.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// MaxChecks is how many times one code may be checked, right or wrong. Default 5.
	MaxChecks int `json:"max_checks,omitempty"`
	// MaxFailures is no longer used: a number is never locked out, since a stranger's
	// wrong checks would lock its owner out. Accepted, with a warning, so that configs
	// written for earlier versions still load.
	MaxFailures int `json:"max_failures,omitempty"`
	// FailureWindow is no longer used (see MaxFailures).
	FailureWindow caddy.Duration `json:"failure_window,omitempty"`
	// TestNumbers maps phone numbers to fixed codes, for app-store review. These
	// numbers need not be valid in any numbering plan; all other rules apply.
	TestNumbers map[string]string `json:"test_number,omitempty"`
	// SenderRaw is the module that delivers codes (namespace messenger.otp_senders:
	// "log" for development, "webhook", "twilio", "vonage", "messagebird", "aws_sns",
	// "failover"; see docs/sms.md). Required for phone_otp login.
	SenderRaw json.RawMessage `json:"sender,omitempty" caddy:"namespace=messenger.otp_senders inline_key=sender"`
	// Message maps app ids to the template of the SMS text that carries a code, "*" to
	// the template of every other app: {code} is the code, {minutes} its validity, {app}
	// the app id (only in an app's own template). Default for "*":
	// otpsender.DefaultMessage.
	Message otpsender.Messages `json:"message,omitempty"`
}

// RateLimits are the code-sending limits; every rule of every scope must pass.
type RateLimits struct {
	// OTPPhone limits the codes sent to one number. Default: 1 per 60s and 5 per hour.
	OTPPhone []Rule `json:"otp_phone,omitempty"`
	// OTPIP limits the codes one client address (IPv6 by /64) has sent. Default: 20
	// per hour.
	OTPIP []Rule `json:"otp_ip,omitempty"`
	// OTPGlobal limits all codes sent. Default: 1000 per hour.
	OTPGlobal []Rule `json:"otp_global,omitempty"`
}

// UploadBudget allows Bytes bytes of uploads per Window to one user.
type UploadBudget struct {
	// Bytes is the size of the budget.
	Bytes int64 `json:"bytes,omitempty"`
	// Window is how long it takes to refill.
	Window caddy.Duration `json:"window,omitempty"`
}

// Rule allows Events events per Window.
type Rule struct {
	// Events is how many.
	Events int `json:"events"`
	// Window is per how long.
	Window caddy.Duration `json:"window"`
}

// ContactDiscovery is a per-user bucket of phone numbers never looked up before: numbers
// already in the user's contact list cost nothing.
type ContactDiscovery struct {
	// Budget is the bucket's size. Default 5000.
	Budget int `json:"budget,omitempty"`
	// Refill is how fast numbers come back to the budget. Default 10 per hour.
	Refill Rule `json:"refill,omitzero"`
	// MaxPhones is the most phones one request may carry. Default 5000.
	MaxPhones int `json:"max_phones,omitempty"`
	// FailOpen allows look-ups without a budget while Redis is unreachable (availability
	// over enumeration protection). Default: refuse them with TEMPFAIL.
	FailOpen bool `json:"fail_open,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.messenger",
		New: func() caddy.Module { return new(Handler) },
	}
}

const (
	defaultMaxBody       = 10 << 20
	defaultStorage       = "file://./data"
	defaultMaxAttachment = 128 << 20
	defaultUploadBudget  = 512 << 20
	defaultTokenExpiry   = 365 * 24 * time.Hour
	defaultEndpoint      = "https://api.mesibo.com/backend/"
	maxOTPTTL            = 10 * time.Minute
	// maxOutboxConcurrency bounds the deliveries in flight: each holds a connection to
	// mesibo, and one claim locks as many rows and names as many queues in one IN list.
	maxOutboxConcurrency = 512
)

// Provision resolves placeholders, sets defaults, loads the code sender and takes the
// shared pools. It does not need the database to be up: the schema is migrated by the
// outbox worker's first round or the first request that finds the database.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	store.UseLogger(h.logger.Named("mysql"))
	repl := caddy.NewReplacer()
	for _, s := range []*string{&h.Database, &h.Redis, &h.Mesibo.Endpoint, &h.Mesibo.AppToken, &h.OTP.Secret, &h.GoogleMapsKey, &h.Storage} {
		*s = repl.ReplaceKnown(*s, "")
	}
	h.setDefaults()
	if err := h.Validate(); err != nil {
		return err
	}
	if h.OTP.MaxFailures != 0 || h.OTP.FailureWindow != 0 {
		h.logger.Warn("otp max_failures and failure_window are no longer used: a number is never locked out (codes allow max_checks checks each); remove them")
	}

	if len(h.Ops) > 0 {
		h.answers = map[string]bool{}
		for _, op := range h.Ops {
			h.answers[strings.ToLower(op)] = true
		}
	}
	h.limits = handlers.Limits{
		MaxBody: h.MaxBodySize, MaxFile: max(h.MaxAttachmentSize, h.MaxPictureSize), TempDir: h.UploadTempDir,
		KeepBody: h.answers != nil, // only then may a later handler need it
	}
	identity, sender, err := h.loadLogin(ctx)
	if err != nil {
		return err
	}

	deps, err := h.takePools(ctx)
	if err != nil {
		h.releasePools()
		return err
	}
	h.logBackends(deps.store)

	h.api = &handlers.API{
		Config:   h.apiConfig(),
		Store:    deps.store,
		Mesibo:   deps.mesibo,
		Groups:   groups.New(deps.store, deps.mesibo),
		Codes:    deps.codes,
		Limiter:  deps.limiter,
		Sender:   sender,
		Identity: identity,
		Media: &media.Store{Storage: deps.storage, Cache: deps.thumbnails, Gate: deps.decodeGate,
			MaxBytes: h.MaxPictureSize, MaxPixels: h.MaxPicturePixels, Logger: h.logger},
		Logger: h.logger,
		Now:    time.Now,
	}
	// Metrics live in this config's registry; the pooled mesibo client reports to the
	// newest config's.
	m := metrics.New(ctx.GetMetricsRegistry())
	h.api.Metrics = m
	deps.mesibo.SetObserver(m.MesiboCall)
	h.startBackground(ctx, deps, m)
	return nil
}

// apiConfig is the op settings of this config.
func (h *Handler) apiConfig() handlers.Config {
	return handlers.Config{
		DownloadURL:    h.DownloadURL,
		UploadURL:      h.UploadURL,
		Invite:         h.Invite,
		GoogleMapsKey:  h.GoogleMapsKey,
		TokenExpiry:    time.Duration(h.TokenExpiry),
		RevokeOnLogout: h.RevokeOnLogout,
		OTPLimits: handlers.NewOTPLimits(rules(h.RateLimit.OTPPhone), rules(h.RateLimit.OTPIP),
			rules(h.RateLimit.OTPGlobal)),
		CodeText: func(appID, code string) string {
			return h.OTP.Message.Render(appID, code, time.Duration(h.OTP.TTL))
		},
		CodeTTL: time.Duration(h.OTP.TTL),
		Discovery: handlers.Discovery{
			Budget: ratelimit.Rule{Events: h.ContactDiscovery.Refill.Events, Window: time.Duration(h.ContactDiscovery.Refill.Window),
				Burst: h.ContactDiscovery.Budget},
			MaxPhones: h.ContactDiscovery.MaxPhones,
			FailOpen:  h.ContactDiscovery.FailOpen,
		},
		UploadBudget:    ratelimit.Rule{Events: int(h.UploadBudget.Bytes >> 10), Window: time.Duration(h.UploadBudget.Window)},
		OpTimeout:       time.Duration(h.OpTimeout),
		Notifications:   h.Notifications,
		ProfileInterval: time.Duration(h.Outbox.ProfileInterval),
	}
}

// startBackground starts this config's outbox worker, which stops with the config's
// context on reload, and checks the storage beside it. The worker's first round migrates
// the schema: Provision never waits on either, so a config loads (and `caddy validate`
// answers) while they are down.
func (h *Handler) startBackground(ctx caddy.Context, deps deps, m *metrics.Metrics) {
	worker := outbox.New(deps.store, deps.mesibo, h.logger.Named("outbox"))
	worker.Metrics = m
	worker.ProfileBody = h.api.ProfileUpdate
	worker.Concurrency, worker.MaxBackoff = h.Outbox.Concurrency, time.Duration(h.Outbox.MaxBackoff)
	worker.Lease = time.Duration(h.Outbox.Lease)
	h.api.Outbox = worker.WakeAt
	workerCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); worker.Run(workerCtx) }()
	h.stopWorker = func() { cancel(); <-done }
	go func() {
		checkCtx, cancel := context.WithTimeout(workerCtx, 5*time.Second)
		defer cancel()
		if err := deps.storage.Check(checkCtx); err != nil && workerCtx.Err() == nil {
			h.logger.Warn("storage not reachable; uploads fail and thumbnails are missing until it is", zap.Error(err))
		}
	}()
}

// logBackends says, once per config load, where state lives when any of it is embedded:
// such a server must not be scaled out behind a load balancer.
func (h *Handler) logBackends(s *store.Store) {
	if !s.Embedded() && h.Redis != "" {
		return
	}
	database, redis := "MySQL", "Redis"
	if s.Embedded() {
		path, _ := store.CutEmbedded(h.Database)
		database = "embedded SQLite at " + path
	}
	if h.Redis == "" {
		redis = "this process's memory"
	}
	h.logger.Info("messenger backends: the embedded ones serve a single instance; configure database and redis to run several",
		zap.String("database", database), zap.String("codes_and_rate_limits", redis))
}

// loadLogin loads the authenticator and, for code login, the code sender.
func (h *Handler) loadLogin(ctx caddy.Context) (handlers.IdentitySource, otp.Sender, error) {
	if h.AuthenticatorRaw != nil {
		mod, err := ctx.LoadModule(h, "AuthenticatorRaw")
		if err != nil {
			return nil, nil, fmt.Errorf("loading authenticator: %w", err)
		}
		if identity, ok := mod.(handlers.IdentitySource); ok {
			h.logger.Info("login by the identity of an earlier auth handler; codes are not used")
			return identity, nil, nil
		}
	}
	if h.OTP.SenderRaw == nil {
		return nil, nil, errors.New("otp sender is required for phone_otp login (log for development, or webhook)")
	}
	mod, err := ctx.LoadModule(&h.OTP, "SenderRaw")
	if err != nil {
		return nil, nil, fmt.Errorf("loading otp sender: %w", err)
	}
	sender, ok := mod.(otp.Sender)
	if !ok {
		return nil, nil, fmt.Errorf("module %T is not an otp sender", mod)
	}
	return nil, sender, nil
}

// setDefaults fills in what the config leaves unset.
func (h *Handler) setDefaults() {
	if h.Database == "" {
		h.Database = defaultDatabase()
	}
	if h.RedisKeyPrefix == "" {
		h.RedisKeyPrefix = "messenger:"
	}
	if h.Mesibo.Endpoint == "" {
		h.Mesibo.Endpoint = defaultEndpoint
	}
	if h.Mesibo.Timeout <= 0 {
		h.Mesibo.Timeout = caddy.Duration(10 * time.Second)
	}
	if h.MaxBodySize <= 0 {
		h.MaxBodySize = defaultMaxBody
	}
	switch {
	case h.FilesDir != "" || h.ThumbsDir != "":
		h.FilesDir = cmp.Or(h.FilesDir, "./data/files")
		h.ThumbsDir = cmp.Or(h.ThumbsDir, "./data/thumbs")
	case h.Storage == "":
		h.Storage = defaultStorage
	}
	if h.MaxAttachmentSize <= 0 {
		h.MaxAttachmentSize = defaultMaxAttachment
	}
	if h.UploadBudget.Bytes <= 0 {
		h.UploadBudget.Bytes = defaultUploadBudget
	}
	if h.UploadBudget.Window <= 0 {
		h.UploadBudget.Window = caddy.Duration(time.Hour)
	}
	cd := &h.ContactDiscovery
	if cd.Budget <= 0 {
		cd.Budget = 5000
	}
	if cd.Refill.Events <= 0 || cd.Refill.Window <= 0 {
		cd.Refill = Rule{10, caddy.Duration(time.Hour)}
	}
	if cd.MaxPhones <= 0 {
		cd.MaxPhones = min(5000, cd.Budget)
	}
	n := &h.Notifications
	if n.NewUser == "" {
		n.NewUser = "%NAME% is on the messenger now"
	}
	if n.NewUserMessage == "" {
		n.NewUserMessage = "Your contact %NAME% has just joined. Say hi!"
	}
	if n.AddedToGroup == "" {
		n.AddedToGroup = "You have been added to the group %GROUP%"
	}
	if h.Outbox.Concurrency <= 0 {
		h.Outbox.Concurrency = outbox.DefaultConcurrency
	}
	if h.Outbox.MaxBackoff <= 0 {
		h.Outbox.MaxBackoff = caddy.Duration(outbox.DefaultMaxBackoff)
	}
	if h.Outbox.Lease <= 0 {
		h.Outbox.Lease = caddy.Duration(store.DefaultOutboxLease)
	}
	if h.Outbox.ProfileInterval == 0 {
		h.Outbox.ProfileInterval = caddy.Duration(store.DefaultProfileInterval)
	}
	if h.OpTimeout <= 0 {
		h.OpTimeout = caddy.Duration(30 * time.Second)
	}
	if h.TokenExpiry <= 0 {
		h.TokenExpiry = caddy.Duration(defaultTokenExpiry)
	}
	o := &h.OTP
	if o.TTL <= 0 {
		o.TTL = caddy.Duration(5 * time.Minute)
	}
	if o.MaxChecks <= 0 {
		o.MaxChecks = 5
	}
	rl := &h.RateLimit
	if len(rl.OTPPhone) == 0 {
		rl.OTPPhone = []Rule{{1, caddy.Duration(time.Minute)}, {5, caddy.Duration(time.Hour)}}
	}
	if len(rl.OTPIP) == 0 {
		rl.OTPIP = []Rule{{20, caddy.Duration(time.Hour)}}
	}
	if len(rl.OTPGlobal) == 0 {
		rl.OTPGlobal = []Rule{{1000, caddy.Duration(time.Hour)}}
	}
}

// Validate checks the configuration after defaults are set.
func (h *Handler) Validate() error {
	var errs []error
	switch h.RedisMode {
	case "", "single", "sentinel", "cluster":
	default:
		errs = append(errs, fmt.Errorf("redis_mode %q: want single, sentinel or cluster", h.RedisMode))
	}
	if h.MaxDBConnections < 0 {
		errs = append(errs, fmt.Errorf("max_db_connections %d: want 1 or more (0 or absent: %d)", h.MaxDBConnections, store.DefaultMaxConns))
	}
	if h.Mesibo.AppToken == "" {
		errs = append(errs, errors.New("mesibo app_token is required (e.g. {env.MESIBO_APP_TOKEN}); it is empty"))
	}
	if h.Outbox.Concurrency > maxOutboxConcurrency {
		errs = append(errs, fmt.Errorf("outbox concurrency %d: at most %d", h.Outbox.Concurrency, maxOutboxConcurrency))
	}
	if most := store.MaxDeliveryTime(time.Duration(h.Outbox.Lease)); time.Duration(h.Mesibo.Timeout) > most {
		// An outbox worker's claim must outlast one delivery.
		errs = append(errs, fmt.Errorf("mesibo timeout %s: at most %s, half the outbox lease %s", time.Duration(h.Mesibo.Timeout),
			most, time.Duration(h.Outbox.Lease)))
	}
	for _, op := range h.Ops {
		if !handlers.KnownOp(strings.ToLower(op)) {
			errs = append(errs, fmt.Errorf("ops: %q is not an op of the protocol", op))
		}
	}
	if h.PassUnknownOps && len(h.Ops) == 0 {
		errs = append(errs, errors.New("pass_unknown_ops needs ops: without it every op is answered here"))
	}
	if time.Duration(h.OTP.TTL) > maxOTPTTL {
		errs = append(errs, fmt.Errorf("otp ttl %s is over the maximum of %s", time.Duration(h.OTP.TTL), maxOTPTTL))
	}
	if err := h.OTP.Message.Validate(); err != nil {
		errs = append(errs, err)
	}
	for number, code := range h.OTP.TestNumbers {
		if _, err := phone.Lenient(number); err != nil {
			errs = append(errs, fmt.Errorf("otp test number %q: %w", number, err))
		}
		if len(code) < 4 || len(phone.Digits("1"+code)) != len(code)+1 {
			errs = append(errs, fmt.Errorf("otp test number %q: code must be 4 or more digits", number))
		}
	}
	if h.Storage != "" && (h.FilesDir != "" || h.ThumbsDir != "") {
		errs = append(errs, errors.New("storage and files_dir/thumbs_dir both set: files_dir and thumbs_dir are the short form of a local storage"))
	}
	if largest := max(h.MaxAttachmentSize, h.MaxPictureSize); largest > h.UploadBudget.Bytes {
		errs = append(errs, fmt.Errorf("upload_budget %d bytes is less than one upload of %d bytes (max_attachment_size, max_picture_size)", h.UploadBudget.Bytes, largest))
	}
	if cd := h.ContactDiscovery; cd.MaxPhones > cd.Budget {
		errs = append(errs, fmt.Errorf("contact_discovery: max_phones %d is over the budget %d, so a full request could never pass", cd.MaxPhones, cd.Budget))
	}
	rl := h.RateLimit
	for _, r := range append(append(append([]Rule{}, rl.OTPPhone...), rl.OTPIP...), rl.OTPGlobal...) {
		if r.Events <= 0 || r.Window <= 0 {
			errs = append(errs, fmt.Errorf("rate limit %d per %s: events and window must be positive", r.Events, time.Duration(r.Window)))
		}
	}
	return errors.Join(errs...)
}

func rules(rs []Rule) []ratelimit.Rule {
	out := make([]ratelimit.Rule, len(rs))
	for i, r := range rs {
		out[i] = ratelimit.Rule{Events: r.Events, Window: time.Duration(r.Window)}
	}
	return out
}

// Cleanup releases the shared pools; the last config using a pool closes it.
func (h *Handler) Cleanup() error {
	if h.stopWorker != nil {
		h.stopWorker() // a delivery in flight ends with its context
	}
	h.releasePools()
	return nil
}

// ServeHTTP decodes the request, lets the API answer it and writes the answer, or hands
// the request on when another backend owns its op.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if handlers.IsPreflight(r) {
		handlers.WritePreflight(w, r)
		return nil
	}
	req, err := handlers.Decode(r, h.limits)
	defer req.Close() // the request's temp files
	if h.passes(req, err) {
		return next.ServeHTTP(w, r)
	}
	var resp *handlers.Response
	if err != nil {
		resp = h.api.Rejected(req, err)
	} else {
		req.ClientIP, _ = caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
		if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
			req.Expand = func(s string) string { return repl.ReplaceKnown(s, "") }
		}
		resp = h.api.Handle(r.Context(), req)
	}
	// An answer that cannot be written has a client that went away: no server error, and
	// not returned to Caddy, whose error log would carry the request's URI, token and all.
	if err := handlers.Write(w, resp); err != nil {
		h.logger.Debug("the client went away before its answer was written", zap.String("op", req.Op), zap.Error(err))
	}
	return nil
}

// passes reports whether the next handler owns this request: with Ops set, an op not
// in it (an unknown op only with PassUnknownOps), or a request this module cannot read.
func (h *Handler) passes(req *handlers.Request, decodeErr error) bool {
	if h.answers == nil {
		return false
	}
	if decodeErr != nil {
		return true
	}
	if req.Op == "" || h.answers[req.Op] {
		return false
	}
	return handlers.KnownOp(req.Op) || h.PassUnknownOps
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

// Package mesiboclient calls the mesibo backend API: it creates messaging users and mints their
// access tokens, revokes tokens, sends server-side messages and manages groups.
//
// Every request carries the secret app token in its body, never in the URL, and the token is
// kept out of every error and every formatted form of Config and Client, because errors and
// configs end up in logs. Failures come in two kinds: *RefusedError (mesibo answered
// result:false; retrying will not help) and *TransportError (unreachable, timed out, non-2xx or
// an answer that cannot be understood; retrying may help if the op is idempotent).
//
// Operators: mesibo disables an app (error TOKENBREACH) when it sees its app token used from
// more than five IP addresses, so a fleet of servers must reach mesibo through at most five
// egress addresses (for instance a NAT gateway or an HTTPS proxy, which the default transport
// honours through the usual HTTPS_PROXY environment variables).
package mesiboclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const (
	// DefaultEndpoint is mesibo's hosted backend API, used when Config.Endpoint is empty.
	DefaultEndpoint = "https://api.mesibo.com/backend/"
	// DefaultTimeout bounds one attempt of a call when Config.Timeout is zero.
	DefaultTimeout = 10 * time.Second
	// FlagTransient marks a message that mesibo delivers only to online users and never stores;
	// meant for notifications that are worthless once stale.
	FlagTransient = 0x4

	// maxAnswerBytes caps how much of an answer is read, so a misbehaving endpoint cannot
	// exhaust memory; real answers are a few hundred bytes.
	maxAnswerBytes = 1 << 20
	redacted       = "[REDACTED]"
)

// userAddBackoff holds the pauses between UserAdd attempts; its length is the number of retries.
var userAddBackoff = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}

// Config configures a Client.
type Config struct {
	// Endpoint is the backend API URL; on-premise deployments set their own. Default DefaultEndpoint.
	Endpoint string
	// AppToken is mesibo's secret app token. It is sent in request bodies only and never
	// appears in errors or in the formatted Config.
	AppToken string
	// Timeout bounds each attempt (connect, send, wait and read). Default DefaultTimeout.
	Timeout time.Duration
	// HTTPClient, if set, is used as is (its redirect policy and pool included) and is not
	// closed by Client.Close. By default the Client owns a small pool that does not follow
	// redirects.
	HTTPClient *http.Client
}

// String describes the Config with the app token and any endpoint credentials redacted, so a
// Config can be logged safely.
func (c Config) String() string {
	token := ""
	if c.AppToken != "" {
		token = redacted
	}
	return fmt.Sprintf("mesiboclient.Config{Endpoint:%q AppToken:%q Timeout:%s HTTPClient:%t}",
		safeEndpoint(c.Endpoint), token, c.Timeout, c.HTTPClient != nil)
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %d, ...) print String, because the default
// struct formatting would print the app token.
func (c Config) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// Client calls the mesibo backend API. It is safe for concurrent use and is meant to be kept
// for the life of the process (and across config reloads) so its connections are reused.
type Client struct {
	endpoint string // where requests go
	safeURL  string // endpoint without credentials or query, for errors
	appToken string
	timeout  time.Duration
	hc       *http.Client
	own      *http.Transport // nil when the caller supplied the HTTP client
	observer atomic.Pointer[Observer]
}

// Observer is told of every attempt: the op, how long it took and its outcome: "ok",
// "refused" (mesibo said no) or "error" (unreachable, timed out, a bad answer).
type Observer func(op string, took time.Duration, outcome string)

// outcome classifies an attempt's error for an Observer.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case IsRefused(err):
		return "refused"
	}
	return "error"
}

// SetObserver replaces the observer (nil for none). The client outlives config reloads;
// each new config sets the observer that feeds its own metrics.
func (c *Client) SetObserver(o Observer) {
	if o == nil {
		c.observer.Store(nil)
		return
	}
	c.observer.Store(&o)
}

// New checks cfg and returns a Client. Errors never quote the endpoint or the token, since
// either may hold secrets.
func New(cfg Config) (*Client, error) {
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("mesiboclient: Endpoint must be an absolute http or https URL")
	}
	if cfg.AppToken == "" {
		return nil, errors.New("mesiboclient: AppToken is required")
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("mesiboclient: Timeout must not be negative")
	}
	c := &Client{
		endpoint: endpoint,
		safeURL:  safeEndpoint(endpoint),
		appToken: cfg.AppToken,
		timeout:  cfg.Timeout,
		hc:       cfg.HTTPClient,
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.hc == nil {
		// As many idle connections are kept as calls may be in flight (the outbox
		// worker's up to 512 notifications and the requests' calls): a connection
		// closed after its call would cost a new TLS handshake for the next.
		c.own = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			MaxIdleConnsPerHost:   maxIdleConns,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
			ExpectContinueTimeout: time.Second,
		}
		c.hc = &http.Client{
			Transport: c.own,
			// A 307/308 would re-send the body, app token included, to wherever the redirect
			// points; mesibo does not redirect API calls, so a redirect is an error.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return c, nil
}

// maxIdleConns is the most idle connections to mesibo a Client keeps.
const maxIdleConns = 1024

// Close releases the idle connections of the Client's own transport. A caller-supplied
// HTTPClient is left alone because others may share it.
func (c *Client) Close() {
	if c.own != nil {
		c.own.CloseIdleConnections()
	}
}

// String describes the Client without its app token, so it can be logged safely.
func (c *Client) String() string {
	return fmt.Sprintf("mesiboclient.Client{Endpoint:%q Timeout:%s}", c.safeURL, c.timeout)
}

// Format makes every fmt verb print String, because the default struct formatting would print
// the app token.
func (c *Client) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// UserAddRequest asks for a messaging user and a fresh access token for it.
type UserAddRequest struct {
	Address string // the user's address (mesibo's user identity)
	Name    string // display name; omitted from the request when empty
	AppID   string // the app (bundle / package id) the token is valid for
	// ExpiryMinutes is the token lifetime in minutes (one year = 525600); 0 omits it so mesibo
	// applies its default instead of minting an already-expired token.
	ExpiryMinutes int
}

// User is what UserAdd answers. Token is secret: it lets anyone act as the user.
type User struct {
	UID   int64
	Token string
}

// UserAdd creates the user if needed and returns a new access token for it (calling it again
// for the same address regenerates the token). Because that makes it idempotent, transport
// failures are retried: at most 3 attempts, 100ms then 200ms apart, never beyond ctx.
func (c *Client) UserAdd(ctx context.Context, r UserAddRequest) (User, error) {
	user := wireUser{Address: r.Address, Name: r.Name, Token: wireToken{AppID: r.AppID, Expiry: r.ExpiryMinutes}}
	for attempt := 0; ; attempt++ {
		u, err := c.userAddOnce(ctx, user)
		if err == nil || !IsTransport(err) || attempt == len(userAddBackoff) || !sleep(ctx, userAddBackoff[attempt]) {
			return u, err
		}
	}
}

func (c *Client) userAddOnce(ctx context.Context, user wireUser) (User, error) {
	a, err := c.callJSON(ctx, "useradd", "user", user)
	if err != nil {
		return User{}, err
	}
	if a.User == nil || a.User.UID.v <= 0 || a.User.Token == "" {
		return User{}, c.badAnswer("useradd", "no user.uid or user.token")
	}
	return User{UID: a.User.UID.v, Token: a.User.Token}, nil
}

// RemoveUserToken revokes the access token of the user at address (logout). It is not retried:
// the caller decides whether a failed revocation matters.
func (c *Client) RemoveUserToken(ctx context.Context, address string) error {
	_, err := c.callJSON(ctx, "userset", "user", wireUser{Address: address, Token: wireToken{Remove: true}})
	return err
}

// Message is a message sent by the server on behalf of From, to the addresses in To or to the
// group GID.
type Message struct {
	From          string
	To            string // comma-separated addresses
	GID           int64  // group id; 0 when sending to To
	Type          int    // app-defined message type
	ExpirySeconds int    // how long mesibo keeps trying to deliver it
	Flags         int    // mesibo message flags, e.g. FlagTransient
	Forced        bool   // deliver even to users who blocked From
	Body          string
}

// SendMessage sends m and returns mesibo's message id (0 if mesibo did not report one). It is
// not retried here: a retry could duplicate the message, so retrying belongs to the caller's
// durable outbox, which knows that duplicates are acceptable.
func (c *Client) SendMessage(ctx context.Context, m Message) (mid int64, err error) {
	a, err := c.callJSON(ctx, "message", "message", wireMessage(m))
	if err != nil {
		return 0, err
	}
	return a.MID.v, nil
}

// GroupRequest describes a group for GroupAdd and GroupSet. Empty Name and Members are left out
// of the request so that a GroupSet changing only the flag does not wipe them.
type GroupRequest struct {
	GID     int64 // ignored by GroupAdd
	Name    string
	Flag    int // mesibo group flags; 0 = only members may send
	Members []string
}

// GroupAdd creates a group and returns its id. Not retried: a retry could create a second group.
func (c *Client) GroupAdd(ctx context.Context, r GroupRequest) (gid int64, err error) {
	a, err := c.callForm(ctx, "groupadd", r.form(false))
	if err != nil {
		return 0, err
	}
	if a.Group == nil || a.Group.GID.v <= 0 {
		return 0, c.badAnswer("groupadd", "no group.gid")
	}
	return a.Group.GID.v, nil
}

// GroupSet changes the name, flag and (if given) members of group r.GID.
func (c *Client) GroupSet(ctx context.Context, r GroupRequest) error {
	_, err := c.callForm(ctx, "groupset", r.form(true))
	return err
}

// GroupDelete deletes group gid.
func (c *Client) GroupDelete(ctx context.Context, gid int64) error {
	_, err := c.callForm(ctx, "groupdel", url.Values{"gid": {strconv.FormatInt(gid, 10)}})
	return err
}

// GroupEditMembers adds members to group gid, or removes them when remove is true.
func (c *Client) GroupEditMembers(ctx context.Context, gid int64, members []string, remove bool) error {
	del := "0"
	if remove {
		del = "1"
	}
	_, err := c.callForm(ctx, "groupeditmembers", url.Values{
		"gid":    {strconv.FormatInt(gid, 10)},
		"m":      {strings.Join(members, ",")},
		"delete": {del},
	})
	return err
}

// form encodes r the way mesibo's documented group ops expect.
func (r GroupRequest) form(withGID bool) url.Values {
	f := url.Values{"flag": {strconv.Itoa(r.Flag)}}
	if withGID {
		f.Set("gid", strconv.FormatInt(r.GID, 10))
	}
	if r.Name != "" {
		f.Set("name", r.Name)
	}
	if len(r.Members) > 0 {
		f.Set("m", strings.Join(r.Members, ","))
	}
	return f
}

// wireUser, wireToken and wireMessage are the JSON shapes of mesibo's current API.
type wireUser struct {
	Address string    `json:"address"`
	Name    string    `json:"name,omitempty"`
	Token   wireToken `json:"token"`
}

type wireToken struct {
	AppID  string `json:"appid,omitempty"`
	Expiry int    `json:"expiry,omitempty"`
	Remove bool   `json:"remove,omitempty"`
}

// wireMessage mirrors Message field for field so that a plain conversion maps one onto the other.
type wireMessage struct {
	From          string `json:"from"`
	To            string `json:"to"`
	GID           int64  `json:"gid"`
	Type          int    `json:"type"`
	ExpirySeconds int    `json:"expiry"`
	Flags         int    `json:"flags"`
	Forced        bool   `json:"forced"`
	Body          string `json:"message"`
}

// callJSON sends {"op":op,"token":...,key:v}; every JSON op the project uses has one such object.
func (c *Client) callJSON(ctx context.Context, op, key string, v any) (*answer, error) {
	body, err := json.Marshal(map[string]any{"op": op, "token": c.appToken, key: v})
	if err != nil {
		return nil, fmt.Errorf("mesiboclient: encode %s: %w", op, err)
	}
	return c.do(ctx, op, body, "application/json")
}

// callForm sends the older form encoding, the only documented one for group ops.
func (c *Client) callForm(ctx context.Context, op string, f url.Values) (*answer, error) {
	f.Set("op", op)
	f.Set("token", c.appToken)
	return c.do(ctx, op, []byte(f.Encode()), "application/x-www-form-urlencoded")
}

// do makes one bounded attempt and decodes the answer; it returns an answer only if mesibo
// reported success.
func (c *Client) do(ctx context.Context, op string, body []byte, contentType string) (a *answer, err error) {
	if o := c.observer.Load(); o != nil {
		start := time.Now()
		defer func() { (*o)(op, time.Since(start), outcome(err)) }()
	}
	return c.attempt(ctx, op, body, contentType)
}

func (c *Client) attempt(ctx context.Context, op string, body []byte, contentType string) (*answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, c.transportError(op, 0, err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(op, 0, err)
	}
	defer resp.Body.Close()
	// Read even error bodies (bounded) so the connection can go back to the pool.
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return nil, c.transportError(op, resp.StatusCode, nil)
	case err != nil:
		return nil, c.transportError(op, 0, err)
	case len(data) > maxAnswerBytes:
		return nil, c.badAnswer(op, "larger than 1 MiB")
	}
	var a answer
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, c.transportError(op, 0, fmt.Errorf("%w: %w", errBadAnswer, err))
	}
	switch {
	case a.Result.set && a.Result.v:
		return &a, nil
	case a.Result.set || a.Error != "":
		return nil, &RefusedError{Op: op, Code: a.Error}
	default:
		return nil, c.badAnswer(op, "no result")
	}
}

// answer is the union of the answer fields the project uses.
type answer struct {
	Result flexBool `json:"result"`
	Error  string   `json:"error"`
	User   *struct {
		UID   flexInt `json:"uid"`
		Token string  `json:"token"`
	} `json:"user"`
	Group *struct {
		GID flexInt `json:"gid"`
	} `json:"group"`
	MID flexInt `json:"mid"`
}

// flexBool decodes mesibo's result, which is true/false, 1/0 or "true"/"false" depending on
// the backend version; set tells a missing result from false.
type flexBool struct{ v, set bool }

// UnmarshalJSON accepts booleans, 1/0 and their string forms.
func (b *flexBool) UnmarshalJSON(data []byte) error {
	switch strings.ToLower(strings.Trim(string(data), `"`)) {
	case "null":
		return nil
	case "true", "1":
		*b = flexBool{v: true, set: true}
	case "false", "0":
		*b = flexBool{v: false, set: true}
	default:
		return errors.New("result is not a boolean")
	}
	return nil
}

// flexInt decodes an id that newer answers send as a number and older ones as a string.
type flexInt struct{ v int64 }

// UnmarshalJSON accepts an integer or a numeric string; its error does not quote the value
// because answers can carry secrets.
func (n *flexInt) UnmarshalJSON(data []byte) error {
	s := string(data)
	if s == "null" {
		return nil
	}
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(data, &s); err != nil {
			return errors.New("id is not a string")
		}
		if s = strings.TrimSpace(s); s == "" {
			return nil
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("id is not an integer")
	}
	n.v = v
	return nil
}

// errBadAnswer marks answers that arrived but could not be understood.
var errBadAnswer = errors.New("bad answer")

// RefusedError reports that mesibo answered result:false. Retrying the same call will not help.
type RefusedError struct {
	Op   string // the mesibo op, e.g. "useradd"
	Code string // mesibo's error code, e.g. "BADOP" or "TOKENBREACH"; may be empty
}

// Error reads like "mesibo useradd refused: BADAPPID".
func (e *RefusedError) Error() string {
	if e.Code == "" {
		return "mesibo " + e.Op + " refused"
	}
	return "mesibo " + e.Op + " refused: " + e.Code
}

// TransportError reports that no usable answer arrived: mesibo was unreachable, the attempt
// timed out, the HTTP status was not 2xx, or the answer could not be decoded. Retrying an
// idempotent call may help.
type TransportError struct {
	Op     string // the mesibo op, e.g. "useradd"
	Status int    // the HTTP status when it was not 2xx, else 0
	Err    error  // the cause; nil when Status tells it all
}

// Error names the op and the cause, never the app token.
func (e *TransportError) Error() string {
	msg := "mesibo " + e.Op + " failed"
	if e.Status != 0 {
		msg += ": HTTP " + strconv.Itoa(e.Status)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap exposes the cause, e.g. for errors.Is(err, context.DeadlineExceeded).
func (e *TransportError) Unwrap() error { return e.Err }

// IsRefused reports whether err is, or wraps, a *RefusedError.
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// IsTransport reports whether err is, or wraps, a *TransportError.
func IsTransport(err error) bool {
	var t *TransportError
	return errors.As(err, &t)
}

func (c *Client) badAnswer(op, why string) error {
	return c.transportError(op, 0, fmt.Errorf("%w: %s", errBadAnswer, why))
}

// transportError builds a *TransportError whose message cannot reveal secrets.
func (c *Client) transportError(op string, status int, err error) error {
	// net/http quotes the request URL in its errors; show the credential-free form.
	if ue, ok := err.(*url.Error); ok {
		cp := *ue
		cp.URL = c.safeURL
		err = &cp
	}
	// Belt and braces for caller-supplied HTTP clients: should the token ever surface, give up
	// the error chain rather than leak it.
	if err != nil && strings.Contains(err.Error(), c.appToken) {
		err = errors.New(strings.ReplaceAll(err.Error(), c.appToken, redacted))
	}
	return &TransportError{Op: op, Status: status, Err: err}
}

// safeEndpoint returns endpoint without userinfo, query or fragment, which may hold secrets.
func safeEndpoint(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "(invalid URL)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// sleep waits d and reports true, or reports false at once if ctx ends first or would end
// before d is over (waiting would only delay the inevitable failure).
func sleep(ctx context.Context, d time.Duration) bool {
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

package otpsender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/metrics"
	"github.com/caddy-messenger/messenger/otp"
)

// Gateway is what the SMS gateway senders share: where the provider's API is, how long an
// attempt may take, and how often an attempt that the provider surely did not take is
// repeated.
type Gateway struct {
	// Endpoint is the base URL of the provider's API. Default: the provider's public one;
	// set it for a regional endpoint or a proxy. Placeholders.
	Endpoint string `json:"endpoint,omitempty"`
	// Timeout bounds each attempt. Default 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Retries is how many more attempts follow one that the provider surely did not take:
	// it could not be reached, or it answered that it is throttling or unavailable. An
	// attempt that may have reached it (no answer in time, a server error) is never
	// repeated, so that no code is sent twice. Default 2.
	Retries *int `json:"retries,omitempty"`

	endpoint string
	deliverer
}

// provision resolves the endpoint (defaultEndpoint when unset) and sets up the attempts.
func (g *Gateway) provision(ctx caddy.Context, sender, defaultEndpoint string) {
	g.endpoint = caddy.NewReplacer().ReplaceKnown(g.Endpoint, "")
	if g.endpoint == "" {
		g.endpoint = defaultEndpoint
	}
	g.endpoint = strings.TrimSuffix(g.endpoint, "/")
	g.deliverer = newDeliverer(ctx, sender, g.Timeout, g.Retries)
}

// validate checks the endpoint, if any, and the retries.
func (g *Gateway) validate() error {
	if g.endpoint != "" {
		if err := g.checkURL(g.endpoint); err != nil {
			return err
		}
	}
	return g.checkRetries()
}

// send posts body to path under the endpoint with header, attempt by attempt, and has
// judge tell from each answer whether the message was taken.
func (g *Gateway) send(ctx context.Context, path string, header http.Header, body []byte, judge func(status int, answer []byte) error) error {
	return g.deliver(ctx, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.endpoint+path, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("otp %s: %w", g.sender, err)
		}
		req.Header = header.Clone()
		status, answer, err := g.post(req)
		if err != nil {
			return err
		}
		return judge(status, answer)
	})
}

// byStatus judges an answer by its status: any 2xx means taken. For the others,
// errorCodes picks the provider's error codes from the answer, which go into the error,
// unlike the provider's error messages, which may quote the number.
func (g *Gateway) byStatus(errorCodes func(answer []byte) []int) func(int, []byte) error {
	return func(status int, answer []byte) error {
		if status >= 200 && status < 300 {
			return nil
		}
		var detail []string
		for _, code := range errorCodes(answer) {
			detail = append(detail, strconv.Itoa(code))
		}
		if len(detail) == 0 {
			return g.statusFailure(status, "")
		}
		return g.statusFailure(status, g.sender+" error "+strings.Join(detail, ", "))
	}
}

// unmarshalGateway reads the block of a gateway sender: its own settings, one argument
// each, and the Gateway's:
//
//	endpoint <url>
//	timeout  <duration>
//	retries  <n>
func unmarshalGateway(d *caddyfile.Dispenser, g *Gateway, settings map[string]*string) error {
	d.Next() // the sender name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		if dst, ok := settings[d.Val()]; ok {
			if !d.AllArgs(dst) {
				return d.ArgErr()
			}
			continue
		}
		if d.Val() == "endpoint" {
			if !d.AllArgs(&g.Endpoint) {
				return d.ArgErr()
			}
			continue
		}
		ok, err := unmarshalAttempts(d, &g.Timeout, &g.Retries)
		if err != nil {
			return err
		}
		if !ok {
			return d.Errf("unknown subdirective %q", d.Val())
		}
	}
	return nil
}

// unmarshalAttempts reads the subdirective at d if it is one of those that every HTTP
// sender has:
//
//	timeout <duration>
//	retries <n>
func unmarshalAttempts(d *caddyfile.Dispenser, timeout *caddy.Duration, retries **int) (bool, error) {
	var s string
	switch d.Val() {
	case "timeout":
		if !d.AllArgs(&s) {
			return true, d.ArgErr()
		}
		dur, err := caddy.ParseDuration(s)
		if err != nil || dur <= 0 {
			return true, d.Errf("timeout: want a positive duration, got %q", s)
		}
		*timeout = caddy.Duration(dur)
	case "retries":
		if !d.AllArgs(&s) {
			return true, d.ArgErr()
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return true, d.Errf("retries: want a number >= 0, got %q", s)
		}
		*retries = &n
	default:
		return false, nil
	}
	return true, nil
}

// deliverer makes the attempts of one sender: its HTTP client, its retry budget, and the
// metrics that count every attempt.
type deliverer struct {
	sender  string // the module's name: the metrics label and the start of its errors
	client  *http.Client
	retries int
	metrics *metrics.Metrics
}

const defaultTimeout = 5 * time.Second

func newDeliverer(ctx caddy.Context, sender string, timeout caddy.Duration, retries *int) deliverer {
	if timeout <= 0 {
		timeout = caddy.Duration(defaultTimeout)
	}
	n := 2
	if retries != nil {
		n = *retries
	}
	return deliverer{
		sender: sender,
		client: &http.Client{
			// Enough idle connections that a burst of codes reuses them instead of dialling
			// (and handshaking) for most deliveries.
			Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 32, IdleConnTimeout: 90 * time.Second},
			Timeout:   time.Duration(timeout),
			// A redirect would re-post the code somewhere else: never follow one.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		retries: n,
		metrics: metrics.New(ctx.GetMetricsRegistry()),
	}
}

// Cleanup closes the idle connections of the sender's client once its config is gone.
func (d deliverer) Cleanup() error {
	d.client.CloseIdleConnections()
	return nil
}

// checkURL checks that u is an absolute http(s) URL.
func (d deliverer) checkURL(u string) error {
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		return fmt.Errorf("otp %s: the URL must be an absolute http(s) URL", d.sender)
	}
	return nil
}

func (d deliverer) checkRetries() error {
	if d.retries < 0 {
		return fmt.Errorf("otp %s: retries must not be negative", d.sender)
	}
	return nil
}

// deliver makes attempts until one succeeds, one fails in a way that forbids another (see
// failure.retry), the retries are used up or ctx ends. Every attempt is counted.
func (d deliverer) deliver(ctx context.Context, attempt func(context.Context) error) error {
	backoff := 200 * time.Millisecond
	for n := 0; ; n++ {
		start := time.Now()
		err := attempt(ctx)
		d.metrics.OTPDelivery(d.sender, outcome(err), time.Since(start))
		var f *failure
		if err == nil || n >= d.retries || !errors.As(err, &f) || !f.retry {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// outcome is the metrics outcome of an attempt that ended with err.
func outcome(err error) string {
	var f *failure
	switch {
	case err == nil:
		return metrics.DeliveryOK
	case errors.As(err, &f) && f.refused:
		return metrics.DeliveryRefused
	}
	return metrics.DeliveryError
}

// failure is a failed attempt. Its text names the sender and what went wrong, never the
// code nor a secret.
type failure struct {
	sender string
	reason string
	// retry: the provider surely did not take the message, so that another attempt
	// cannot send the code twice.
	retry bool
	// refused: the provider answered no, and would answer the same request so again.
	refused bool
	err     error
}

func (f *failure) Error() string {
	if f.err != nil {
		return fmt.Sprintf("otp %s: %s: %v", f.sender, f.reason, f.err)
	}
	return fmt.Sprintf("otp %s: %s", f.sender, f.reason)
}

func (f *failure) Unwrap() error { return f.err }

// maxAnswer is the most of an answer that is read.
const maxAnswer = 64 << 10

// do sends req. connected reports whether a connection to the provider was had: until
// then nothing can have been sent.
func (d deliverer) do(req *http.Request) (resp *http.Response, connected bool, err error) {
	var got atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { got.Store(true) }}
	resp, err = d.client.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err != nil {
		// Without the URL: it may hold a key.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
	}
	return resp, got.Load(), err
}

// post sends req and reads the answer. An error means there is no status; it is a
// *failure that says whether the request may have reached the provider (then it is not
// to be repeated), and carries neither the URL nor the body (it holds the code).
func (d deliverer) post(req *http.Request) (status int, body []byte, err error) {
	resp, connected, err := d.do(req)
	if err != nil {
		if !connected {
			return 0, nil, &failure{sender: d.sender, reason: "unreachable", retry: true, err: err}
		}
		return 0, nil, &failure{sender: d.sender, reason: "no answer, and the request may have reached it", err: err}
	}
	defer resp.Body.Close()
	// A body cut short is no failure of its own: the status may tell enough.
	body, _ = io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	return resp.StatusCode, body, nil
}

// statusFailure is the failure of an answer with a status other than 2xx. Throttled (429)
// and unavailable (503) mean the provider did not take the message and asks to come back:
// those are retried. Another 4xx is a refusal. Another 5xx may come after the provider
// took the message (a gateway's timeout, an error after queueing), so it is not retried.
func (d deliverer) statusFailure(status int, detail string) *failure {
	reason := "status " + strconv.Itoa(status)
	if detail != "" {
		reason += ", " + detail
	}
	return &failure{
		sender:  d.sender,
		reason:  reason,
		retry:   status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable,
		refused: status >= 400 && status < 500 && status != http.StatusTooManyRequests,
	}
}

// e164 is d's phone number in E.164 form, with '+'.
func e164(d otp.Delivery) string { return "+" + d.Phone }

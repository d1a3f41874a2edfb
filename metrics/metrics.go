// Package metrics holds the messenger's Prometheus metrics. They are registered in
// Caddy's registry of each loaded config (so they keep counting after a reload, when the
// old registry is dropped), once per registry however many handlers the config has.
package metrics

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the messenger's collectors. A nil *Metrics records nothing.
type Metrics struct {
	requests      *prometheus.CounterVec
	otp           *prometheus.CounterVec
	mesiboCalls   *prometheus.CounterVec
	mesiboLatency *prometheus.HistogramVec
	outboxDepth   prometheus.Gauge
	outboxLag     prometheus.Gauge
	deliveries    *prometheus.CounterVec
	deliveryTime  *prometheus.HistogramVec
}

// OTP events.
const (
	OTPSent        = "sent"
	OTPVerified    = "verified"
	OTPFailed      = "failed"
	OTPRateLimited = "rate_limited"
)

// Outcomes of one attempt to deliver a code.
const (
	DeliveryOK      = "ok"
	DeliveryRefused = "refused" // the provider said no; the same request would be refused again
	DeliveryError   = "error"   // no answer, a server error, or throttled
)

// New registers the collectors in reg, or reuses those another handler of the same
// config registered.
func New(reg prometheus.Registerer) *Metrics {
	const ns = "caddy_messenger"
	return &Metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total", Help: "API requests by op and result code (OK or the error code).",
		}, []string{"op", "code"})),
		otp: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "otp_total", Help: "One-time codes by event: sent, verified, failed, rate_limited.",
		}, []string{"event"})),
		mesiboCalls: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "mesibo_calls_total", Help: "Calls to the mesibo backend API by op and outcome (ok, refused, error).",
		}, []string{"op", "outcome"})),
		mesiboLatency: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "mesibo_call_duration_seconds", Help: "Latency of calls to the mesibo backend API by op.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"op"})),
		outboxDepth: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "outbox_depth", Help: "Notifications waiting in the outbox.",
		})),
		outboxLag: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "outbox_lag_seconds", Help: "Age of the oldest notification waiting in the outbox.",
		})),
		deliveries: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "otp_deliveries_total", Help: "Attempts to deliver a code, retries included, by sender and outcome (ok, refused, error).",
		}, []string{"sender", "outcome"})),
		deliveryTime: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "otp_delivery_duration_seconds", Help: "Latency of attempts to deliver a code, by sender.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}, []string{"sender"})),
	}
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			return already.ExistingCollector.(C)
		}
		panic(err) // only a programming error (a bad name) gets here
	}
	return c
}

// Request counts an answered request.
func (m *Metrics) Request(op, code string) {
	if m != nil {
		m.requests.WithLabelValues(op, code).Inc()
	}
}

// OTP counts a one-time-code event.
func (m *Metrics) OTP(event string) {
	if m != nil {
		m.otp.WithLabelValues(event).Inc()
	}
}

// MesiboCall records one call to mesibo: ok, refused (mesibo said no) or error
// (unreachable, timed out, a bad answer). It fits mesiboclient.Observer.
func (m *Metrics) MesiboCall(op string, took time.Duration, outcome string) {
	if m == nil {
		return
	}
	m.mesiboCalls.WithLabelValues(op, outcome).Inc()
	m.mesiboLatency.WithLabelValues(op).Observe(took.Seconds())
}

// OTPDelivery records one attempt of a code sender (the module's name) and its outcome
// (DeliveryOK, DeliveryRefused or DeliveryError).
func (m *Metrics) OTPDelivery(sender, outcome string, took time.Duration) {
	if m != nil {
		m.deliveries.WithLabelValues(sender, outcome).Inc()
		m.deliveryTime.WithLabelValues(sender).Observe(took.Seconds())
	}
}

// Outbox sets the outbox gauges.
func (m *Metrics) Outbox(depth int, lag time.Duration) {
	if m != nil {
		m.outboxDepth.Set(float64(depth))
		m.outboxLag.Set(lag.Seconds())
	}
}

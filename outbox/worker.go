// Package outbox delivers the queued notifications of the messenger (PROTOCOL.md §4)
// to mesibo: a worker per server instance polls the outbox table, sends what is due and
// reschedules what failed with exponential backoff. Rows are claimed with
// SELECT ... FOR UPDATE SKIP LOCKED and a lease (store.DeliverDue), so workers on many
// instances never send one row twice while its lease runs.
package outbox

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/metrics"
	"github.com/caddy-messenger/messenger/store"
)

// MessageExpiry is how long mesibo keeps a notification for an offline user: they are
// transient updates, and the apps' full sync catches up after that.
const MessageExpiry = time.Hour

// Worker sends due notifications.
type Worker struct {
	Store  *store.Store
	Mesibo *mesiboclient.Client
	Logger *zap.Logger
	// Metrics, when set, get the outbox depth and lag after every round.
	Metrics *metrics.Metrics
	// Poll is how often the worker looks for due rows without being woken. Default 2s.
	Poll time.Duration
	// Batch is how many rows one claim takes. Default 50.
	Batch int
	// MaxBackoff caps the wait between attempts of one row. Default 5m.
	MaxBackoff time.Duration

	wake     chan struct{}
	observed time.Time // when the gauges were last updated
}

// New returns a worker with defaults filled in.
func New(s *store.Store, m *mesiboclient.Client, logger *zap.Logger) *Worker {
	return &Worker{Store: s, Mesibo: m, Logger: logger, Poll: 2 * time.Second, Batch: 50, MaxBackoff: 5 * time.Minute,
		wake: make(chan struct{}, 1)}
}

// Wake makes the worker look for due rows now; it never blocks.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-w.wake:
		}
		for ctx.Err() == nil {
			n, err := w.RunOnce(ctx)
			if err != nil {
				if ctx.Err() == nil {
					w.Logger.Warn("outbox: delivery round failed", zap.Error(err))
				}
				break
			}
			if n < w.Batch {
				break // drained, or stopped at a failure: wait for the next round
			}
		}
		w.observe(ctx)
		timer.Reset(w.Poll)
	}
}

// observe updates the outbox gauges.
func (w *Worker) observe(ctx context.Context) {
	// The stats query scans the outbox: at most once per 10 s, not on every wake.
	if w.Metrics == nil || ctx.Err() != nil || time.Since(w.observed) < 10*time.Second {
		return
	}
	w.observed = time.Now()
	depth, lag, err := w.Store.OutboxStats(ctx, time.Now())
	if err == nil {
		w.Metrics.Outbox(depth, lag)
	}
}

// RunOnce delivers one batch of due rows and reports how many were delivered. A
// database that is not ready yet is left alone until the next round.
func (w *Worker) RunOnce(ctx context.Context) (int, error) {
	if err := w.Store.Ready(ctx); err != nil {
		return 0, err
	}
	return w.Store.DeliverDue(ctx, w.Batch, time.Now(), func(m store.OutboxMessage) error { return w.send(ctx, m) }, w.backoff)
}

// send delivers one message. A message past its expiry, or one mesibo refuses (which
// retrying cannot change), is dropped with a warning rather than retried forever.
func (w *Worker) send(ctx context.Context, m store.OutboxMessage) error {
	if age := time.Since(m.Created); age > MessageExpiry {
		w.Logger.Warn("outbox: dropping an expired notification", zap.Int64("id", m.ID), zap.Duration("age", age))
		return nil
	}
	_, err := w.Mesibo.SendMessage(ctx, mesiboclient.Message{
		From: m.From, To: m.To, Type: 1, ExpirySeconds: int(MessageExpiry / time.Second),
		Flags: mesiboclient.FlagTransient, Body: string(m.Body),
	})
	switch {
	case mesiboclient.IsRefused(err):
		w.Logger.Warn("outbox: mesibo refused a notification; dropping it", zap.Int64("id", m.ID), zap.Error(err))
		return nil
	case err != nil:
		w.Logger.Warn("outbox: delivery failed; will retry", zap.Int64("id", m.ID), zap.Int("attempts", m.Attempts+1), zap.Error(err))
	}
	return err
}

// backoff is 1s, 2s, 4s, ... up to MaxBackoff.
func (w *Worker) backoff(attempts int) time.Duration {
	d := time.Second << min(attempts-1, 20)
	return min(d, w.MaxBackoff)
}

// Package outbox delivers the queued notifications of the messenger (PROTOCOL.md §4)
// to mesibo: a worker per server instance claims due rows of the outbox table, sends
// them and reschedules what failed with exponential backoff.
//
// Notifications of one queue (one user's profile, one group) are sent one after another
// in the order they were queued, and different queues in parallel, up to Concurrency
// at once. Rows are claimed a queue at a time, with SELECT ... FOR UPDATE SKIP LOCKED
// and a lease (store.ClaimOutbox), so workers on many instances never send one row
// twice while its lease runs, and never two rows of one queue at once.
package outbox

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/metrics"
	"github.com/caddy-messenger/messenger/store"
)

// MessageExpiry is how long mesibo keeps a notification for an offline user: they are
// transient updates, and the apps' full sync catches up after that.
const MessageExpiry = time.Hour

// DefaultConcurrency is how many deliveries a worker keeps in flight unless told
// otherwise (docs/performance.md has the rates it reaches).
const DefaultConcurrency = 128

// DefaultMaxBackoff caps the wait between attempts of one row unless told otherwise.
const DefaultMaxBackoff = 5 * time.Minute

// claimGap is the least time between two claims while deliveries finish: the slots
// freed meanwhile are filled by one claim rather than one claim each.
const claimGap = 10 * time.Millisecond

// Worker sends due notifications.
type Worker struct {
	Store  *store.Store
	Mesibo *mesiboclient.Client
	Logger *zap.Logger
	// Metrics, when set, get the outbox depth and lag every StatsEvery.
	Metrics *metrics.Metrics
	// Concurrency is how many deliveries are in flight at once, each of another queue.
	// Default DefaultConcurrency.
	Concurrency int
	// RunLength is the most rows of one queue that one claim takes; they are sent one
	// after another. Default 20.
	RunLength int
	// Poll is how often the worker looks for due rows without being woken. Default 2s.
	Poll time.Duration
	// MaxBackoff caps the wait between attempts of one row. Default DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Lease is how long claimed rows stay with this worker; a run hands out no delivery
	// after half of it, so one delivery must take at most that. Default
	// store.DefaultOutboxLease.
	Lease time.Duration
	// ProfileBody composes the body of a profile update (store.ToContactsOfSender) from
	// the user's profile as it is when the update is sent.
	ProfileBody func(context.Context, store.User) []byte
	// StatsEvery is how often the gauges are updated (the query counts the outbox).
	// Default 10s.
	StatsEvery time.Duration

	wake chan struct{}
}

// New returns a worker with defaults filled in.
func New(s *store.Store, m *mesiboclient.Client, logger *zap.Logger) *Worker {
	return &Worker{Store: s, Mesibo: m, Logger: logger, Concurrency: DefaultConcurrency, RunLength: 20,
		Poll: 2 * time.Second, MaxBackoff: DefaultMaxBackoff, Lease: store.DefaultOutboxLease, StatsEvery: 10 * time.Second,
		wake: make(chan struct{}, 1)}
}

// Wake makes the worker look for due rows now; it never blocks.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// WakeAt makes the worker look for due rows at due, a row's due time (now when it is
// past), so that a row queued to go later goes then rather than at the next poll; it
// never blocks.
func (w *Worker) WakeAt(due time.Time) {
	if wait := time.Until(due); wait > 0 {
		time.AfterFunc(wait, w.Wake)
		return
	}
	w.Wake()
}

// dispatch is the state of Run's loop.
type dispatch struct {
	free     int       // deliveries that may start
	due      bool      // rows may be waiting: claim when a delivery may start
	next     time.Time // no claim before
	failures int       // runs in a row that stopped at a failed delivery
}

// Run delivers until ctx ends, and then waits for the deliveries in flight, which hand
// their rows back.
//
// While deliveries fail (mesibo down), the worker delivers one queue at a time, the next
// one a backoff step (at most Poll) after the last failure, until one gets through: rows
// wait in the outbox rather than each being tried and backing off on its own, and the
// first success after an outage resumes full speed.
func (w *Worker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	finished := make(chan bool, w.Concurrency) // a run ended; true if it stopped at a failure
	d := dispatch{free: w.Concurrency, due: true}
	poll := time.NewTicker(w.Poll)
	defer poll.Stop()
	stats := time.NewTicker(w.StatsEvery)
	defer stats.Stop()
	soon := time.NewTimer(0)
	defer soon.Stop()
	for ctx.Err() == nil {
		if d.due && d.free > 0 && (d.failures == 0 || d.free == w.Concurrency) {
			wait := time.Until(d.next)
			if wait <= 0 {
				w.claim(ctx, &d, &wg, finished)
				continue
			}
			soon.Reset(wait)
		}
		select {
		case <-ctx.Done():
		case <-poll.C:
			d.due = true
		case <-w.wake:
			d.due = true
		case failed := <-finished:
			d.free++
			d.due = true // the queue may have more rows, and they are due now
			if !failed {
				d.failures = 0
				break
			}
			d.failures++
			d.next = time.Now().Add(min(w.backoff(d.failures), w.Poll))
		case <-soon.C:
		case <-stats.C:
			w.observe(ctx)
		}
	}
}

// claim starts the deliveries of the queues it can claim for d's free slots.
func (w *Worker) claim(ctx context.Context, d *dispatch, wg *sync.WaitGroup, finished chan<- bool) {
	n := d.free
	if d.failures > 0 {
		n = 1 // mesibo is failing: try one queue at a time until one gets through
	}
	d.next = time.Now().Add(claimGap)
	runs, err := w.claimRuns(ctx, n)
	if err != nil {
		if ctx.Err() == nil {
			w.Logger.Warn("outbox: claiming notifications failed", zap.Error(err))
		}
		d.due = false // the next poll tries again
		return
	}
	d.due = len(runs) == n // all taken: more may be due
	for _, run := range runs {
		d.free--
		wg.Go(func() { finished <- w.deliver(ctx, run) })
	}
}

// claimRuns claims up to n queues' runs. A database that is not ready yet is left alone
// until the next round.
func (w *Worker) claimRuns(ctx context.Context, n int) ([]store.OutboxRun, error) {
	if err := w.Store.Ready(ctx); err != nil {
		return nil, err
	}
	return w.Store.ClaimOutbox(ctx, n, w.RunLength, w.Lease, time.Now())
}

// deliver sends one run and reports whether it stopped at a failed delivery.
func (w *Worker) deliver(ctx context.Context, run store.OutboxRun) (failed bool) {
	if run.Superseded > 0 {
		w.Logger.Debug("outbox: dropped notifications that newer ones replace", zap.String("queue", run.Queue),
			zap.Int("superseded", run.Superseded))
	}
	_, err := w.Store.DeliverRun(ctx, run, func(m store.OutboxMessage) error {
		err := w.send(ctx, m)
		failed = err != nil && ctx.Err() == nil
		return err
	}, w.backoff)
	if err != nil && ctx.Err() == nil {
		w.Logger.Warn("outbox: recording deliveries failed; they may be sent again", zap.String("queue", run.Queue), zap.Error(err))
	}
	return failed
}

// observe updates the outbox gauges.
func (w *Worker) observe(ctx context.Context) {
	if w.Metrics == nil {
		return
	}
	depth, lag, err := w.Store.OutboxStats(ctx, time.Now())
	if err == nil {
		w.Metrics.Outbox(depth, lag)
	}
}

// send delivers one message. A message past its expiry (but a profile update), or one
// mesibo refuses (which retrying cannot change), is dropped with a warning rather than
// retried forever.
func (w *Worker) send(ctx context.Context, m store.OutboxMessage) error {
	if m.To == store.ToContactsOfSender {
		// Composed when it is sent, and its row stands for every change since it was
		// queued: it never expires.
		return w.sendProfile(ctx, m)
	}
	if age := time.Since(m.Created); age > MessageExpiry {
		w.Logger.Warn("outbox: dropping an expired notification", zap.Int64("id", m.ID), zap.Duration("age", age))
		return nil
	}
	return w.sendTo(ctx, m, m.To, m.Body)
}

// sendProfile delivers a profile update, unless a later one is due: the sender's
// profile as it is now, to the users who have the sender among their contacts now, in
// messages of up to store.MaxRecipientsPerMessage recipients; not when it is the message
// the user's last update carried. A failure sends them all again at the next attempt
// (they carry a state, so the second copy changes nothing).
func (w *Worker) sendProfile(ctx context.Context, m store.OutboxMessage) error {
	p, err := w.Store.ProfileAudience(ctx, m.From, m.ID, time.Now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil // the user is gone: nothing to tell
	case err != nil:
		w.Logger.Warn("outbox: reading a profile update failed; will retry", zap.Int64("id", m.ID), zap.Error(err))
		return err
	case p.Later:
		return nil // the later one sends this state or a newer one
	}
	body := w.ProfileBody(ctx, p.User)
	if p.SentAlready(body) {
		return nil
	}
	for to := range slices.Chunk(p.Watchers, store.MaxRecipientsPerMessage) {
		if err := w.sendTo(ctx, m, strings.Join(to, ","), body); err != nil {
			return err
		}
	}
	if err := w.Store.ProfileSent(ctx, p.User.Phone, body, time.Now()); err != nil {
		// Sent all the same: at worst the next update sends this message again.
		w.Logger.Warn("outbox: recording a sent profile update failed", zap.Int64("id", m.ID), zap.Error(err))
	}
	return nil
}

// sendTo sends m's message with body to the comma-separated phones to.
func (w *Worker) sendTo(ctx context.Context, m store.OutboxMessage, to string, body []byte) error {
	_, err := w.Mesibo.SendMessage(ctx, mesiboclient.Message{
		From: m.From, To: to, Type: 1, ExpirySeconds: int(MessageExpiry / time.Second),
		Flags: mesiboclient.FlagTransient, Body: string(body),
	})
	switch {
	case mesiboclient.IsRefused(err):
		w.Logger.Warn("outbox: mesibo refused a notification; dropping it", zap.Int64("id", m.ID), zap.Error(err))
		return nil
	case err != nil && ctx.Err() == nil:
		w.Logger.Warn("outbox: delivery failed; will retry", zap.Int64("id", m.ID), zap.Int("attempts", m.Attempts+1), zap.Error(err))
	}
	return err
}

// backoff is 1s, 2s, 4s, ... up to MaxBackoff.
func (w *Worker) backoff(attempts int) time.Duration {
	d := time.Second << min(attempts-1, 20)
	return min(d, w.MaxBackoff)
}

package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Notification is a message to other users, queued in the outbox (PROTOCOL.md §4).
type Notification struct {
	// From is the sending address: the acting user's phone, or "100" for the system.
	From string
	// To are the recipients' phones. The store fills it where it knows them.
	To []string
	// Body is the message: a JSON object the apps parse.
	Body []byte
	// Queue names the changes whose notifications must arrive in the order they were
	// made (PROTOCOL.md §4): "user:" and the phone for a user's profile, "group:" and the
	// gid for a group.
	Queue string
	// Replaceable marks a notification that only carries a state, as a silent profile
	// update does: a newer replaceable notification of the same queue to the same
	// recipients supersedes it, and it is dropped unsent if it is still waiting when the
	// newer one is queued. One the recipients see as a message (a subject) is not.
	Replaceable bool
}

// UserQueue is the queue (Notification.Queue) of the notifications about the profile of
// the user with phone.
func UserQueue(phone string) string { return "user:" + phone }

// MaxRecipientsPerMessage keeps one mesibo call to a sane size; a notification to more
// phones becomes several outbox rows.
const MaxRecipientsPerMessage = 200

// enqueue queues n in tx, so it is sent if and only if the change that caused it commits.
//
// A queue's rows are delivered in id order, and a worker takes a queue's first row as
// soon as it sees it. So the caller must hold the lock that orders the queue's changes
// (the user's or the group's row, which the change writes first) until it commits: a
// later change's row then gets a larger id, and no row of a queue commits behind a
// larger one that a worker may already have sent.
func enqueue(ctx context.Context, tx *sql.Tx, n Notification, now time.Time) error {
	to := make([]string, 0, len(n.To))
	for _, phone := range n.To {
		if phone != "" && phone != n.From {
			to = append(to, phone)
		}
	}
	for len(to) > 0 {
		chunk := to[:min(len(to), MaxRecipientsPerMessage)]
		to = to[len(chunk):]
		if _, err := tx.ExecContext(ctx, `INSERT INTO messenger_outbox (queue, replaceable, from_addr, to_addrs, body, created, next_attempt)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, n.Queue, n.Replaceable, n.From, strings.Join(chunk, ","), n.Body, now.Unix(), now.UnixMilli()); err != nil {
			return fmt.Errorf("store: queue notification: %w", err)
		}
	}
	return nil
}

// OutboxMessage is a queued notification on its way out.
type OutboxMessage struct {
	ID       int64
	From     string
	To       string // comma-separated phones
	Body     []byte
	Created  time.Time
	Attempts int

	replaceable bool
}

// OutboxRun is the first rows of one queue, claimed together, to be delivered one after
// another (DeliverRun).
type OutboxRun struct {
	Queue    string
	Messages []OutboxMessage
	// Superseded counts the replaceable rows of the queue that the claim dropped unsent
	// because a newer one in the run replaces them.
	Superseded int

	now     time.Time // the claim's clock
	claimed time.Time // when it was claimed, by this process's monotonic clock
	lease   int64     // the claimed rows' next_attempt, which proves the claim
	maxTime time.Duration
}

// DefaultOutboxLease is how long claimed rows stay invisible to other workers while they
// are delivered: a worker that dies mid-run delays its rows by at most this.
const DefaultOutboxLease = 2 * time.Minute

// DefaultProfileInterval spaces the profile updates of one user unless told otherwise
// (UpdateProfile): the changes a person makes in one sitting (name, status, picture)
// after the first, which goes at once, reach the watchers as one message.
const DefaultProfileInterval = time.Second

// MaxDeliveryTime is the longest one delivery may take for a lease to hold: a run stops
// handing out messages once half its lease is gone.
func MaxDeliveryTime(lease time.Duration) time.Duration { return lease / 2 }

// ClaimOutbox claims up to runs queues whose first row is due, with up to runLength of
// each queue's first rows, for lease. Only a queue's first row (the lowest id) can be
// claimed, and it is claimed with the rows behind it, so a row is never sent while an
// earlier row of its queue waits, is being sent or backs off, however many workers
// deliver. Replaceable rows that a newer replaceable row of the run supersedes (same
// recipients) are deleted unsent here.
//
// The claim is one short transaction at READ COMMITTED: the queues' first rows are
// locked with SELECT ... FOR UPDATE SKIP LOCKED, so concurrent workers on any instance
// never get the same queue, and moving the runs' next attempt a lease ahead keeps them
// from other workers until the lease runs out; no transaction or connection is held
// while mesibo answers. (At REPEATABLE READ the claim would also lock the gap at the end
// of the table, and every request queueing a notification would wait for it.)
//
// At READ COMMITTED the locking read sees the rows committed while it runs, but its
// NOT EXISTS sees the table as it was when it began: a row queued meanwhile may look
// first of its queue though an earlier one, queued with it or just before, exists. So
// the runs are read by a second statement, which sees those, and a queue whose first
// row is not the one locked is left alone (its locks go with the commit, unchanged).
func (s *Store) ClaimOutbox(ctx context.Context, runs, runLength int, lease time.Duration, now time.Time) (out []OutboxRun, err error) {
	err = retryDeadlocks(func() error {
		out, err = s.claimOutbox(ctx, runs, runLength, lease, now)
		return err
	})
	return out, err
}

// retryDeadlocks runs fn, which must be one transaction, again (three times in all)
// while MySQL rolls it back as a deadlock's victim. Claims and settlements can deadlock
// with each other in InnoDB's index locks, where the rows they lock never overlap: a
// claim's scan of the due rows locks the index entry after the last one, which may be
// the first of a run that is being settled.
func retryDeadlocks(fn func() error) error {
	var err error
	for range 3 {
		if err = fn(); !isDeadlock(err) {
			return err
		}
	}
	return err
}

// claimOutbox is one attempt of ClaimOutbox.
func (s *Store) claimOutbox(ctx context.Context, runs, runLength int, lease time.Duration, now time.Time) ([]OutboxRun, error) {
	claimed := time.Now()
	tx, err := s.db.BeginTx(ctx, s.d.readCommitted)
	if err != nil {
		return nil, fmt.Errorf("store: outbox claim: %w", err)
	}
	defer tx.Rollback()
	heads, err := s.claimHeads(ctx, tx, runs, now)
	if err != nil || len(heads) == 0 {
		return nil, err
	}
	out, err := s.lockRuns(ctx, tx, heads, runLength, now)
	if err != nil || len(out) == 0 {
		return nil, err
	}
	leaseValue := now.Add(lease).UnixMilli()
	var keep, drop []int64
	for i := range out {
		r := &out[i]
		r.now, r.claimed, r.lease, r.maxTime = now, claimed, leaseValue, MaxDeliveryTime(lease)
		var dropped []int64
		r.Messages, dropped = coalesce(r.Messages)
		r.Superseded = len(dropped)
		drop = append(drop, dropped...)
		for _, m := range r.Messages {
			keep = append(keep, m.ID)
		}
	}
	if err := chunks(drop, func(ids []int64) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM messenger_outbox WHERE id IN ("+placeholders(len(ids), "?")+")", anys(ids)...)
		return err
	}); err != nil {
		return nil, fmt.Errorf("store: outbox claim: drop superseded: %w", err)
	}
	// A claimed profile update no longer waits: the next change queues one behind it.
	if err := chunks(keep, func(ids []int64) error {
		_, err := tx.ExecContext(ctx, "UPDATE messenger_outbox SET next_attempt = ?, waiting = NULL WHERE id IN ("+placeholders(len(ids), "?")+")",
			append([]any{leaseValue}, anys(ids)...)...)
		return err
	}); err != nil {
		return nil, fmt.Errorf("store: outbox claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: outbox claim: %w", err)
	}
	return out, nil
}

// head is the first row of a queue, as a claim locked it.
type head struct {
	queue string
	id    int64
}

// claimHeads locks the first rows of up to limit queues that are due, oldest due
// first, skipping rows other workers are claiming.
func (s *Store) claimHeads(ctx context.Context, tx *sql.Tx, limit int, now time.Time) ([]head, error) {
	rows, err := tx.QueryContext(ctx, `SELECT o.queue, o.id FROM messenger_outbox o
		WHERE o.next_attempt <= ? AND NOT EXISTS (SELECT 1 FROM messenger_outbox e WHERE e.queue = o.queue AND e.id < o.id)
		ORDER BY o.next_attempt, o.id LIMIT ?`+s.d.skipLocked, now.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("store: outbox claim: %w", err)
	}
	defer rows.Close()
	var heads []head
	for rows.Next() {
		var h head
		if err := rows.Scan(&h.queue, &h.id); err != nil {
			return nil, fmt.Errorf("store: outbox claim: %w", err)
		}
		heads = append(heads, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: outbox claim: %w", err)
	}
	return heads, nil
}

// lockRuns locks and reads the first runLength rows of the heads' queues, in id order,
// and returns the runs of the queues whose first row is still the head locked. The rows
// are numbered within their queue on the (queue, id) index alone, and only those wanted
// are read whole (a temporary table of whole rows, text and blob columns, would go to
// disk). A row another claim holds (it took it for a head, and will let it go) is
// skipped, and the run ends before it: a claim never waits for a row another holds. So
// does a row not yet due.
func (s *Store) lockRuns(ctx context.Context, tx *sql.Tx, heads []head, runLength int, now time.Time) ([]OutboxRun, error) {
	args := make([]any, 0, len(heads)+1)
	for _, h := range heads {
		args = append(args, h.queue)
	}
	rows, err := tx.QueryContext(ctx, `SELECT r.n, o.id, o.queue, o.replaceable, o.from_addr, o.to_addrs, o.body, o.created, o.attempts
		FROM messenger_outbox o JOIN (SELECT id, ROW_NUMBER() OVER (PARTITION BY queue ORDER BY id) AS n
			FROM messenger_outbox WHERE queue IN (`+placeholders(len(heads), "?")+`)) AS r ON r.id = o.id
		WHERE r.n <= ? AND o.next_attempt <= ? ORDER BY o.queue, r.n`+s.d.skipLocked, append(args, runLength, now.UnixMilli())...)
	if err != nil {
		return nil, fmt.Errorf("store: outbox claim: read runs: %w", err)
	}
	defer rows.Close()
	byQueue := make(map[string][]OutboxMessage, len(heads))
	for rows.Next() {
		var m OutboxMessage
		var n int
		var queue string
		var created int64
		if err := rows.Scan(&n, &m.ID, &queue, &m.replaceable, &m.From, &m.To, &m.Body, &created, &m.Attempts); err != nil {
			return nil, fmt.Errorf("store: outbox claim: read runs: %w", err)
		}
		if run := byQueue[queue]; n == len(run)+1 { // the run so far has no gap
			m.Created = time.Unix(created, 0)
			byQueue[queue] = append(run, m)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: outbox claim: read runs: %w", err)
	}
	out := make([]OutboxRun, 0, len(heads))
	for _, h := range heads {
		if msgs := byQueue[h.queue]; len(msgs) > 0 && msgs[0].ID == h.id {
			out = append(out, OutboxRun{Queue: h.queue, Messages: msgs})
		}
	}
	return out, nil
}

// coalesce splits a run into the messages to send and the ids of the replaceable ones a
// later replaceable message to the same recipients supersedes.
func coalesce(run []OutboxMessage) (send []OutboxMessage, superseded []int64) {
	later := map[string]bool{} // recipient sets of the replaceable messages after the one at hand
	keep := make([]bool, len(run))
	for i := len(run) - 1; i >= 0; i-- {
		m := run[i]
		if !m.replaceable {
			keep[i] = true
			continue
		}
		to := strings.Split(m.To, ",")
		slices.Sort(to)
		key := strings.Join(to, ",")
		keep[i] = !later[key]
		later[key] = true
	}
	for i, m := range run {
		if keep[i] {
			send = append(send, m)
		} else {
			superseded = append(superseded, m.ID)
		}
	}
	return send, superseded
}

// DeliverRun hands the run's messages to deliver one after another. A delivered message
// is deleted; the first failure stops the run: the failed message is rescheduled by
// backoff(attempts) and the rest of the run waits behind it. A run also stops, handing
// the rest back due at once, when ctx ends (a config reload) or half its lease is gone
// (so that no delivery outlasts the lease). Every row update is conditional on this
// claim's lease, so a worker that outlived its lease cannot undo another's claim. It
// returns how many were delivered.
func (s *Store) DeliverRun(ctx context.Context, run OutboxRun, deliver func(OutboxMessage) error,
	backoff func(attempts int) time.Duration) (int, error) {
	// The bookkeeping must happen even when ctx ends mid-run, else the rows would wait
	// out the lease.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var done []int64
	for i, m := range run.Messages {
		if ctx.Err() != nil || time.Since(run.claimed) > run.maxTime {
			return len(done), s.settle(bctx, run, done, run.Messages[i:], nil, run.now.UnixMilli())
		}
		err := deliver(m)
		switch {
		case err == nil:
			done = append(done, m.ID)
		case ctx.Err() != nil: // stopped, not failed: no attempt counts
			return len(done), s.settle(bctx, run, done, run.Messages[i:], nil, run.now.UnixMilli())
		default:
			next := run.now.Add(time.Since(run.claimed) + backoff(m.Attempts+1)).UnixMilli()
			return len(done), s.settle(bctx, run, done, run.Messages[i:], err, next)
		}
	}
	return len(done), s.settle(bctx, run, done, nil, nil, 0)
}

// settle ends a run: it deletes the delivered rows, counts a failed attempt on the first
// of rest when failure is set, and makes rest due at next. One transaction at READ
// COMMITTED, like the claims: at REPEATABLE READ the DELETE would also lock gaps of the
// due index that claims move rows into.
func (s *Store) settle(ctx context.Context, run OutboxRun, delivered []int64, rest []OutboxMessage, failure error, next int64) error {
	return retryDeadlocks(func() error { return s.settleOnce(ctx, run, delivered, rest, failure, next) })
}

// settleOnce is one attempt of settle.
func (s *Store) settleOnce(ctx context.Context, run OutboxRun, delivered []int64, rest []OutboxMessage, failure error, next int64) error {
	tx, err := s.db.BeginTx(ctx, s.d.readCommitted)
	if err != nil {
		return fmt.Errorf("store: outbox settle: %w", err)
	}
	defer tx.Rollback()
	if err := chunks(delivered, func(ids []int64) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM messenger_outbox WHERE id IN ("+placeholders(len(ids), "?")+") AND next_attempt = ?",
			append(anys(ids), run.lease)...)
		return err
	}); err != nil {
		return fmt.Errorf("store: outbox delete: %w", err)
	}
	if failure != nil {
		msg := failure.Error()
		if len(msg) > 250 {
			msg = msg[:250]
		}
		if _, err := tx.ExecContext(ctx, `UPDATE messenger_outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?
			WHERE id = ? AND next_attempt = ?`, next, msg, rest[0].ID, run.lease); err != nil {
			return fmt.Errorf("store: outbox reschedule: %w", err)
		}
		rest = rest[1:]
	}
	ids := make([]int64, len(rest))
	for i, m := range rest {
		ids[i] = m.ID
	}
	if err := setNextAttempt(ctx, tx, ids, next, run.lease); err != nil {
		return fmt.Errorf("store: outbox release: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: outbox settle: %w", err)
	}
	return nil
}

// setNextAttempt sets the next attempt of the rows ids to at (Unix ms), only of those
// whose next attempt is still lease (the claim's).
func setNextAttempt(ctx context.Context, q querier, ids []int64, at, lease int64) error {
	return chunks(ids, func(ids []int64) error {
		_, err := q.ExecContext(ctx, "UPDATE messenger_outbox SET next_attempt = ? WHERE id IN ("+placeholders(len(ids), "?")+") AND next_attempt = ?",
			append(append([]any{at}, anys(ids)...), lease)...)
		return err
	})
}

// OutboxStats is the outbox's depth and the age of its oldest message.
func (s *Store) OutboxStats(ctx context.Context, now time.Time) (depth int, oldest time.Duration, err error) {
	var created sql.NullInt64
	err = s.db.QueryRowContext(ctx, "SELECT COUNT(*), MIN(created) FROM messenger_outbox").Scan(&depth, &created)
	if err != nil {
		return 0, 0, fmt.Errorf("store: outbox stats: %w", err)
	}
	if created.Valid {
		oldest = now.Sub(time.Unix(created.Int64, 0))
	}
	return depth, oldest, nil
}

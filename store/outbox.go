package store

import (
	"context"
	"database/sql"
	"fmt"
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
}

// maxRecipientsPerMessage keeps one mesibo call to a sane size; a notification to more
// phones becomes several outbox rows.
const maxRecipientsPerMessage = 200

// enqueue queues n in tx, so it is sent if and only if the change that caused it commits.
func enqueue(ctx context.Context, tx *sql.Tx, n Notification, now time.Time) error {
	to := make([]string, 0, len(n.To))
	for _, phone := range n.To {
		if phone != "" && phone != n.From {
			to = append(to, phone)
		}
	}
	for len(to) > 0 {
		chunk := to[:min(len(to), maxRecipientsPerMessage)]
		to = to[len(chunk):]
		if _, err := tx.ExecContext(ctx, `INSERT INTO messenger_outbox (from_addr, to_addrs, body, created, next_attempt)
			VALUES (?, ?, ?, ?, ?)`, n.From, strings.Join(chunk, ","), n.Body, now.Unix(), now.UnixMilli()); err != nil {
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
}

// outboxLease is how long a claimed message stays invisible to other workers while it is
// being delivered. A worker that dies mid-batch delays its messages by at most this.
const outboxLease = 2 * time.Minute

// MaxDeliveryTime is the longest one delivery may take for the lease to hold: a batch
// stops handing out messages once half the lease is gone.
const MaxDeliveryTime = outboxLease / 2

// DeliverDue claims up to limit due messages and hands each to deliver. The claim is a
// short transaction (SELECT ... FOR UPDATE SKIP LOCKED, then moving the rows' next
// attempt a lease ahead), so concurrent workers on any instance never get the same row
// while its lease runs, and no transaction or connection is held while mesibo answers.
// A delivered message is deleted; a failed one is rescheduled by backoff(attempts). The
// first failure ends the batch (when mesibo is down there is no point in trying the rest
// now) and hands the rest back, as does ctx ending (a config reload). Every row update is
// conditional on the lease this claim wrote, so a worker that outlived its lease cannot
// undo another's claim. It returns how many were delivered.
func (s *Store) DeliverDue(ctx context.Context, limit int, now time.Time,
	deliver func(OutboxMessage) error, backoff func(attempts int) time.Duration) (int, error) {
	claimed := time.Now()
	batch, lease, err := s.claimDue(ctx, limit, now)
	if err != nil || len(batch) == 0 {
		return 0, err
	}
	// The bookkeeping must happen even when ctx ends mid-batch, else the rows would
	// wait out the lease.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	delivered := 0
	for i, m := range batch {
		if ctx.Err() != nil || time.Since(claimed) > MaxDeliveryTime {
			return delivered, s.release(bctx, batch[i:], lease, now)
		}
		derr := deliver(m)
		if derr != nil && ctx.Err() != nil {
			return delivered, s.release(bctx, batch[i:], lease, now) // stopped, not failed
		}
		if derr != nil {
			msg := derr.Error()
			if len(msg) > 250 {
				msg = msg[:250]
			}
			next := now.Add(time.Since(claimed) + backoff(m.Attempts+1)).UnixMilli()
			if _, err := s.fixed.ExecContext(bctx, `UPDATE messenger_outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?
				WHERE id = ? AND next_attempt = ?`, next, msg, m.ID, lease); err != nil {
				return delivered, fmt.Errorf("store: outbox reschedule: %w", err)
			}
			return delivered, s.release(bctx, batch[i+1:], lease, now)
		}
		if _, err := s.fixed.ExecContext(bctx, "DELETE FROM messenger_outbox WHERE id = ? AND next_attempt = ?", m.ID, lease); err != nil {
			return delivered, fmt.Errorf("store: outbox delete: %w", err)
		}
		delivered++
	}
	return delivered, nil
}

// claimDue takes up to limit due messages for this worker by moving their next attempt
// a lease ahead, and returns that lease value.
func (s *Store) claimDue(ctx context.Context, limit int, now time.Time) ([]OutboxMessage, int64, error) {
	// READ COMMITTED: at REPEATABLE READ the claim would also lock the gap at the end of
	// the table, and every request queueing a notification would wait for the claim.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, 0, fmt.Errorf("store: outbox claim: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, from_addr, to_addrs, body, created, attempts FROM messenger_outbox
		WHERE next_attempt <= ? ORDER BY next_attempt, id LIMIT ? FOR UPDATE SKIP LOCKED`, now.UnixMilli(), limit)
	if err != nil {
		return nil, 0, fmt.Errorf("store: outbox claim: %w", err)
	}
	var batch []OutboxMessage
	for rows.Next() {
		var m OutboxMessage
		var created int64
		if err := rows.Scan(&m.ID, &m.From, &m.To, &m.Body, &created, &m.Attempts); err != nil {
			rows.Close()
			return nil, 0, fmt.Errorf("store: outbox claim: %w", err)
		}
		m.Created = time.Unix(created, 0)
		batch = append(batch, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("store: outbox claim: %w", err)
	}
	if len(batch) == 0 {
		return nil, 0, nil
	}
	lease := now.Add(outboxLease).UnixMilli()
	if err := setNextAttempt(ctx, tx, batch, lease, -1); err != nil {
		return nil, 0, fmt.Errorf("store: outbox claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, 0, fmt.Errorf("store: outbox claim: %w", err)
	}
	return batch, lease, nil
}

// release makes claimed but unattempted messages due again at now, where the lease is
// still this claim's.
func (s *Store) release(ctx context.Context, batch []OutboxMessage, lease int64, now time.Time) error {
	if err := setNextAttempt(ctx, s.db, batch, now.UnixMilli(), lease); err != nil {
		return fmt.Errorf("store: outbox release: %w", err)
	}
	return nil
}

// setNextAttempt sets the next attempt of batch's rows to at (Unix ms), only of those
// whose next attempt is still ifLease unless ifLease is -1.
func setNextAttempt(ctx context.Context, q querier, batch []OutboxMessage, at, ifLease int64) error {
	if len(batch) == 0 {
		return nil
	}
	args := make([]any, 0, len(batch)+2)
	args = append(args, at)
	for _, m := range batch {
		args = append(args, m.ID)
	}
	query := "UPDATE messenger_outbox SET next_attempt = ? WHERE id IN (" + placeholders(len(batch), "?") + ")"
	if ifLease != -1 {
		query += " AND next_attempt = ?"
		args = append(args, ifLease)
	}
	_, err := q.ExecContext(ctx, query, args...)
	return err
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

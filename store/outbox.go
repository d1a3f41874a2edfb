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

// DeliverDue claims up to limit due messages and hands each to deliver. Claims use
// SELECT ... FOR UPDATE SKIP LOCKED in one transaction, so concurrent workers (on any
// instance) never get the same row. A delivered message is deleted; a failed one is
// rescheduled by backoff(attempts). The first failure ends the batch: when mesibo is down
// there is no point in trying the rest now. It returns how many were delivered.
func (s *Store) DeliverDue(ctx context.Context, limit int, now time.Time,
	deliver func(OutboxMessage) error, backoff func(attempts int) time.Duration) (int, error) {
	// READ COMMITTED: at REPEATABLE READ the claim would also lock the gap at the end of
	// the table, and every request queueing a notification would wait for the batch.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, fmt.Errorf("store: outbox: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, from_addr, to_addrs, body, created, attempts FROM messenger_outbox
		WHERE next_attempt <= ? ORDER BY next_attempt, id LIMIT ? FOR UPDATE SKIP LOCKED`, now.UnixMilli(), limit)
	if err != nil {
		return 0, fmt.Errorf("store: outbox claim: %w", err)
	}
	var batch []OutboxMessage
	for rows.Next() {
		var m OutboxMessage
		var created int64
		if err := rows.Scan(&m.ID, &m.From, &m.To, &m.Body, &created, &m.Attempts); err != nil {
			rows.Close()
			return 0, fmt.Errorf("store: outbox claim: %w", err)
		}
		m.Created = time.Unix(created, 0)
		batch = append(batch, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("store: outbox claim: %w", err)
	}

	delivered := 0
	for _, m := range batch {
		if derr := deliver(m); derr != nil {
			msg := derr.Error()
			if len(msg) > 250 {
				msg = msg[:250]
			}
			next := now.Add(backoff(m.Attempts + 1)).UnixMilli()
			if _, err := tx.ExecContext(ctx, `UPDATE messenger_outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE id = ?`,
				next, msg, m.ID); err != nil {
				return delivered, fmt.Errorf("store: outbox reschedule: %w", err)
			}
			break
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM messenger_outbox WHERE id = ?", m.ID); err != nil {
			return delivered, fmt.Errorf("store: outbox delete: %w", err)
		}
		delivered++
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("store: outbox: %w", err)
	}
	return delivered, nil
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

package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ProfileChange is what a profile op sets; nil fields stay as they are.
type ProfileChange struct {
	Name   *string
	Status *string
	Photo  *string
}

// UpdateProfile applies change to the user uid, sets its ts, and, in the same transaction,
// queues the notification that compose builds from the updated user for every user who
// has this one among their contacts.
//
// Those users are found first, outside the transaction: most users are watched by nobody,
// and their change is then a single statement with no transaction around it. A contact
// added meanwhile misses the notification but sees the change at its next sync, as it
// would if the list were read inside the transaction after it began.
func (s *Store) UpdateProfile(ctx context.Context, uid int64, change ProfileChange, now time.Time,
	compose func(User) Notification) (User, error) {
	var watchers []string
	if compose != nil {
		var err error
		if watchers, err = queryPhones(ctx, s.fixed, `SELECT u.phone FROM users me JOIN contacts c ON c.phone = me.phone
			JOIN users u ON u.uid = c.uid WHERE me.uid = ? AND u.uid != me.uid`, uid); err != nil {
			return User{}, fmt.Errorf("store: update profile: %w", err)
		}
	}
	q := querier(s.fixed)
	var tx *sql.Tx
	if len(watchers) > 0 {
		var err error
		if tx, err = s.db.BeginTx(ctx, nil); err != nil {
			return User{}, fmt.Errorf("store: update profile: %w", err)
		}
		defer tx.Rollback()
		q = tx
	}
	// COALESCE keeps a column whose new value is NULL (not sent).
	if _, err := q.ExecContext(ctx, `UPDATE users SET name = COALESCE(?, name), status = COALESCE(?, status),
		photo = COALESCE(?, photo), ts = ? WHERE uid = ?`, change.Name, change.Status, change.Photo, now.Unix(), uid); err != nil {
		return User{}, fmt.Errorf("store: update profile: %w", err)
	}
	u, err := scanUser(q.QueryRowContext(ctx, "SELECT "+userColumns+" FROM users u WHERE u.uid = ?", uid))
	if err != nil {
		return User{}, fmt.Errorf("store: update profile: %w", err)
	}
	if tx == nil {
		return u, nil
	}
	n := compose(u)
	n.To = watchers
	if err := enqueue(ctx, tx, n, now); err != nil {
		return User{}, err
	}
	if err := tx.Commit(); err != nil {
		return User{}, fmt.Errorf("store: update profile: %w", err)
	}
	return u, nil
}

// notifyContactsOf queues compose(u) for the users who have u among their contacts.
func notifyContactsOf(ctx context.Context, tx *sql.Tx, u User, now time.Time, compose func(User) Notification) error {
	if compose == nil {
		return nil
	}
	to, err := contactsOf(ctx, tx, u.Phone)
	if err != nil || len(to) == 0 {
		return err
	}
	n := compose(u)
	n.To = to
	return enqueue(ctx, tx, n, now)
}

// SetNotifyToken stores the user's push token (one per user).
func (s *Store) SetNotifyToken(ctx context.Context, uid int64, token string, device int, production bool) error {
	prod := 0
	if production {
		prod = 1
	}
	_, err := s.fixed.ExecContext(ctx, `INSERT INTO notifytokens (uid, token, device, production) VALUES (?, ?, ?, ?)
		ON DUPLICATE KEY UPDATE token = VALUES(token), device = VALUES(device), production = VALUES(production)`,
		uid, token, device, prod)
	if err != nil {
		return fmt.Errorf("store: set notify token: %w", err)
	}
	return nil
}

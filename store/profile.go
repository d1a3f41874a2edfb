package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

// ProfileChange is what a profile op sets; nil fields stay as they are.
type ProfileChange struct {
	Name   *string
	Status *string
	Photo  *string
}

// UpdateProfile applies change to the caller's row, sets its ts, and, in the same
// transaction, queues the notification that compose builds from the updated user for every
// user who has this one among their contacts.
//
// A caller with nobody to notify is changed by a single statement with no transaction
// around it, and
// answered with the change applied to the user as read (a change of the same user's other
// fields made in between by another of its devices shows at the next sync). The watchers
// of the others are found outside the transaction. Either way a contact added meanwhile
// misses the notification but sees the change at its next sync, as it would if the list
// were read inside the transaction after it began. Watchers get the row as committed.
// (A user deleted since its token was read is answered as if changed; nothing is written.)
func (s *Store) UpdateProfile(ctx context.Context, caller Caller, change ProfileChange, now time.Time,
	compose func(User) Notification) (User, error) {
	var watchers []string
	if compose != nil {
		var err error
		if watchers, err = contactsOf(ctx, s.fixed, caller.Phone); err != nil {
			return User{}, fmt.Errorf("store: update profile: %w", err)
		}
	}
	if len(watchers) == 0 {
		if err := updateProfile(ctx, s.fixed, caller.UID, change, now); err != nil {
			return User{}, err
		}
		return change.appliedTo(caller.User, now), nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return User{}, fmt.Errorf("store: update profile: %w", err)
	}
	defer tx.Rollback()
	if err := updateProfile(ctx, tx, caller.UID, change, now); err != nil {
		return User{}, err
	}
	u, err := scanUser(tx.QueryRowContext(ctx, "SELECT "+userColumns+" FROM users u WHERE u.uid = ?", caller.UID))
	if err != nil {
		return User{}, fmt.Errorf("store: update profile: %w", err)
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

// setProfile is the SET clause of a profile change; its arguments are setProfileArgs'.
// COALESCE keeps a column whose new value is NULL (not sent). ts is nextUserTS.
const setProfile = `SET name = COALESCE(?, name), status = COALESCE(?, status), photo = COALESCE(?, photo), ` + nextUserTS

// nextUserTS sets a user's ts for a change at the bound time: that second, but always
// past the stored ts, so that every change of a user, however many in one second, has
// a ts of its own, growing with the order of the changes (PROTOCOL.md §4). It is
// computed in the statement that writes the row, so concurrent changes of one user
// never share one. It binds the time twice (nextUserTSArgs): the larger of two values is
// a CASE here, where MySQL and SQLite name the function differently.
const nextUserTS = `ts = CASE WHEN COALESCE(ts, 0) < ? THEN ? ELSE COALESCE(ts, 0) + 1 END`

// nextUserTSArgs are nextUserTS's arguments for a change at unix.
func nextUserTSArgs(unix int64) []any { return []any{unix, unix} }

func setProfileArgs(change ProfileChange, now time.Time, more ...any) []any {
	args := append([]any{change.Name, change.Status, change.Photo}, nextUserTSArgs(now.Unix())...)
	return append(args, more...)
}

// updateProfile writes change and ts to the user's row.
func updateProfile(ctx context.Context, q querier, uid int64, change ProfileChange, now time.Time) error {
	if _, err := q.ExecContext(ctx, "UPDATE users "+setProfile+" WHERE uid = ?", setProfileArgs(change, now, uid)...); err != nil {
		return fmt.Errorf("store: update profile: %w", err)
	}
	return nil
}

// UpdateUnwatchedProfile writes change to the profile of the user that token belongs to,
// in one statement that also proves the token, if nobody has that user among their
// contacts (so there is nobody to notify). That is a profile change's common case with
// one round trip instead of a token look-up and then an UPDATE: MariaDB spends about a
// third less on it and the server saves a round trip.
//
// It reports whether it wrote. false means nothing was written, and the request takes
// the general way (CallerByToken, UpdateProfile), which tells the reasons apart: an
// unknown or expired token, a watched user, a change that leaves the row as it was
// (MySQL counts changed rows, not matched ones), or a deadlock. The last can happen
// because, at MySQL's REPEATABLE READ, the statement's subqueries lock what they read
// (the token row, and the contacts index around the user's phone) until it commits: a
// new login of the same user (users row, then tokens) can close a cycle with it. InnoDB
// then rolls back the lighter transaction, normally this statement, which has written
// nothing while it waits; retrying it the general way (no such locks) is safe. A
// contacts upload that inserted a phone next to the user's only delays it until commit.
// On SQLite the statement takes the write lock even when it writes nothing, so such a
// request waits for a concurrent writer as every change does.
func (s *Store) UpdateUnwatchedProfile(ctx context.Context, token string, change ProfileChange, now time.Time) (bool, error) {
	res, err := s.fixed.ExecContext(ctx, "UPDATE users AS u "+setProfile+
		" WHERE u.uid = (SELECT t.uid FROM tokens t WHERE "+validToken+") AND "+nobodyWatches,
		setProfileArgs(change, now, validTokenArgs(token)...)...)
	if isDeadlock(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: update unwatched profile: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: update unwatched profile: %w", err)
	}
	return n > 0, nil
}

// mysqlDeadlock is MySQL's ER_LOCK_DEADLOCK: the statement's transaction was rolled back.
const mysqlDeadlock = 1213

// isDeadlock reports whether err is MySQL rolling back a deadlock's victim.
func isDeadlock(err error) bool {
	myErr := (*mysql.MySQLError)(nil)
	return errors.As(err, &myErr) && myErr.Number == mysqlDeadlock
}

// appliedTo is u after change at now.
func (change ProfileChange) appliedTo(u User, now time.Time) User {
	if change.Name != nil {
		u.Name = *change.Name
	}
	if change.Status != nil {
		u.Status = *change.Status
	}
	if change.Photo != nil {
		u.Photo = *change.Photo
	}
	u.TS = nextTS(u.TS, now) // as nextUserTS computes it from the row as read
	return u
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
	_, err := s.fixed.ExecContext(ctx, "INSERT INTO notifytokens (uid, token, device, production) VALUES (?, ?, ?, ?) "+
		s.d.onConflictUpdate+" token = ?, device = ?, production = ?",
		uid, token, device, prod, token, device, prod)
	if err != nil {
		return fmt.Errorf("store: set notify token: %w", err)
	}
	return nil
}

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

// UpdateProfile applies change to the caller's row and sets its ts; when anybody has
// the caller among their contacts, it queues a profile update (ToContactsOfSender). It
// answers with the change applied to the user as read (a change of the same user's
// other fields made in between by another of its devices shows at the next sync), and
// reports whether it queued.
//
// Concurrent changes of one user wait for each other on the user's row; so the row is
// locked by one statement alone, the UPDATE, and the outbox row is written around it in
// statements of their own that do not touch the user's row: first parked (due only
// ProfileUpdatePark later), then made due once the UPDATE is done. A profile update
// holds no state, so the row may be queued before the change, and a row whose change
// never came (a crash, a failed UPDATE) only sends the profile as it is when its park
// ends, once more. A contact added meanwhile sees the change at its next sync.
func (s *Store) UpdateProfile(ctx context.Context, caller Caller, change ProfileChange, now time.Time) (User, bool, error) {
	// A parked row holds its queue back until it is due, so the three statements are
	// finished even when the client hangs up (a statement cut off by its context may
	// still have been written).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), profileWriteTimeout)
	defer cancel()
	parked, err := s.parkProfileUpdate(ctx, caller.User, now)
	if err != nil {
		return User{}, false, fmt.Errorf("store: update profile: %w", err)
	}
	if err := updateProfile(ctx, s.fixed, caller.UID, change, now); err != nil {
		return User{}, false, err
	}
	if parked != 0 {
		// A claim deleting the queue's waiting updates can pick this one-row statement as
		// its deadlock's victim: it is tried again (and, failing, its row goes when its
		// park ends).
		if err := retryDeadlocks(func() error {
			_, err := s.fixed.ExecContext(ctx, "UPDATE messenger_outbox SET next_attempt = ? WHERE id = ?", now.UnixMilli(), parked)
			return err
		}); err != nil {
			return User{}, false, fmt.Errorf("store: update profile: queue: %w", err)
		}
	}
	return change.appliedTo(caller.User, now), parked != 0, nil
}

// profileWriteTimeout bounds a profile change's statements, which do not end with the
// request's context.
const profileWriteTimeout = 10 * time.Second

// ProfileUpdatePark is how long a profile update stays parked unless the change it is
// queued for makes it due: longer than any request runs (op_timeout, 30 s by default),
// so that it is never sent before its change is written.
const ProfileUpdatePark = 2 * time.Minute

// ToContactsOfSender, as an outbox row's recipients, makes it a profile update: a silent
// update of the sender's profile (from_addr) to the users who have the sender among their
// contacts, both read when it is sent, its body composed then from the profile as it is
// then. Such a row holds no state, so any number of them, in any order, end with the
// watchers holding the profile's last state.
const ToContactsOfSender = "*"

// parkProfileUpdate queues a parked profile update of u if anybody has u among their
// contacts, in one INSERT … SELECT that finds out on the contacts index (it reads no
// users row, so it never waits for a change of u), and returns its id, 0 if none.
func (s *Store) parkProfileUpdate(ctx context.Context, u User, now time.Time) (int64, error) {
	res, err := s.fixed.ExecContext(ctx, `INSERT INTO messenger_outbox (queue, replaceable, from_addr, to_addrs, body, created, next_attempt)
		SELECT ?, 1, ?, ?, '', ?, ? FROM contacts c WHERE c.phone = ? AND c.uid != ? LIMIT 1`,
		"user:"+u.Phone, u.Phone, ToContactsOfSender, now.Unix(), now.Add(ProfileUpdatePark).UnixMilli(), u.Phone, u.UID)
	if err != nil {
		return 0, fmt.Errorf("queue profile update: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return 0, err
	}
	return res.LastInsertId()
}

// ProfileAudience reads the user with phone and the phones of the users who have it
// among their contacts, as they are now: what the profile update id is composed of when
// it is sent. later reports that a later profile update of the user is queued: it will
// send this state or a newer one, so this one need not go (two would send the same
// state twice). ErrNotFound: no such user.
func (s *Store) ProfileAudience(ctx context.Context, phone string, id int64) (u User, watchers []string, later bool, err error) {
	rows, err := s.fixed.QueryContext(ctx, "SELECT "+userColumns+`, COALESCE(w.phone, ''),
		(SELECT COUNT(*) FROM messenger_outbox o WHERE o.queue = ? AND o.id > ? AND o.to_addrs = ?)
		FROM users u LEFT JOIN contacts c ON c.phone = u.phone AND c.uid != u.uid LEFT JOIN users w ON w.uid = c.uid
		WHERE u.phone = ?`, "user:"+phone, id, ToContactsOfSender, phone)
	if err != nil {
		return User{}, nil, false, fmt.Errorf("store: profile audience: %w", err)
	}
	defer rows.Close()
	found := false
	for rows.Next() {
		var w string
		var newer int
		if err := rows.Scan(append(u.fields(), &w, &newer)...); err != nil {
			return User{}, nil, false, fmt.Errorf("store: profile audience: %w", err)
		}
		found, later = true, newer > 0
		if w != "" && w != u.Phone {
			watchers = append(watchers, w)
		}
	}
	if err := rows.Err(); err != nil {
		return User{}, nil, false, fmt.Errorf("store: profile audience: %w", err)
	}
	if !found {
		return User{}, nil, false, ErrNotFound
	}
	return u, watchers, later, nil
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
func isDeadlock(err error) bool { return isMySQLError(err, mysqlDeadlock) }

// isMySQLError reports whether err is MySQL's error number.
func isMySQLError(err error, number uint16) bool {
	myErr := (*mysql.MySQLError)(nil)
	return errors.As(err, &myErr) && myErr.Number == number
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

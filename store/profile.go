package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// ProfileChange is what a profile op sets; nil fields stay as they are.
type ProfileChange struct {
	Name   *string
	Status *string
	Photo  *string
}

// UpdateProfile applies change to the caller's row and sets its ts, then announces it
// (announceProfile). It answers with the change applied to the user as read (a change of
// the same user's other fields made in between by another of its devices shows at the
// next sync), and reports whether it queued a profile update.
func (s *Store) UpdateProfile(ctx context.Context, caller Caller, change ProfileChange, now time.Time) (User, bool, error) {
	// The change is announced even when the client hangs up once it is written.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), profileWriteTimeout)
	defer cancel()
	if _, err := s.fixed.ExecContext(ctx, "UPDATE users "+setProfile+" WHERE uid = ?", setProfileArgs(change, now, caller.UID)...); err != nil {
		return User{}, false, fmt.Errorf("store: update profile: %w", err)
	}
	queued, err := s.announceProfile(ctx, "users u", "u.uid = ?", []any{caller.UID}, now)
	if err != nil {
		return User{}, false, fmt.Errorf("store: update profile: %w", err)
	}
	return change.appliedTo(caller.User, now), queued, nil
}

// UpdateOwnProfile applies change to the row of the user token belongs to, in one
// statement that also proves the token, and announces it (announceProfile): a profile
// op's common case in two round trips, with no token look-up before. The changes of one
// user that come at once in this process share their announcement: one look, after all
// of them are written (rounds), tells whether a profile update waits for them all. It
// reports whether this or a change sharing its announcement queued one. ErrNotFound: the
// token is not valid, and nothing was written.
//
// At MySQL's REPEATABLE READ the UPDATE's subquery locks the token row it reads until it
// commits, so a new login of the same user (users row, then tokens) can close a deadlock
// with it; InnoDB then rolls back the UPDATE, which has written nothing, and it is tried
// again.
func (s *Store) UpdateOwnProfile(ctx context.Context, token string, change ProfileChange, now time.Time) (queued bool, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), profileWriteTimeout)
	defer cancel()
	var n int64
	err = retryDeadlocks(func() error {
		res, err := s.fixed.ExecContext(ctx, "UPDATE users AS u "+setProfile+" WHERE u.uid = (SELECT t.uid FROM tokens t WHERE "+validToken+")",
			setProfileArgs(change, now, validTokenArgs(token)...)...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected() // ts always changes, so MySQL's changed rows are the matched ones
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: update own profile: %w", err)
	}
	if n == 0 {
		return false, ErrNotFound
	}
	// A token gone since (a logout, a new login replacing it, its expiry) leaves the change
	// written and unannounced: the watchers see it at their next sync. The shared look has
	// its own time: the opener's may be spent waiting for the round before.
	queued, err = s.ownProfileAnnouncements.join(token, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), profileWriteTimeout)
		defer cancel()
		return s.announceProfile(ctx, callerTables, validToken, validTokenArgs(token), now)
	})
	if err != nil {
		return false, fmt.Errorf("store: update own profile: %w", err)
	}
	return queued, nil
}

// profileWriteTimeout bounds a profile change's statements, which do not end with the
// request's context.
const profileWriteTimeout = 10 * time.Second

// ToContactsOfSender, as an outbox row's recipients, makes it a profile update: a silent
// update of the sender's profile (from_addr) to the users who have the sender among their
// contacts, both read when it is sent, its body composed then from the profile as it is
// then. Such a row holds no state, so any number of them, in any order, end with the
// watchers holding the profile's last state.
const ToContactsOfSender = "*"

// announceProfile queues a profile update, due now, of the user (users u) that who and
// which (a FROM list and a WHERE condition) select with args, if anybody has that user
// among their contacts and no profile update of the user is waiting, and reports whether
// it did. It
// runs after the change is written: a profile update waiting then is claimed later, and
// reads the change.
//
// Under a stream of changes a waiting row is the common case, which costs one read.
// Concurrent changes of one user would all find no waiting row right after a worker
// claims it, and race to insert one; InnoDB settles such a race on a unique key with
// deadlocks. So one process queues a user's updates one at a time, each asking again
// (the later ones find the row), and a race with another process is tried again.
// Watchers gone in between make the row send nothing.
func (s *Store) announceProfile(ctx context.Context, who, which string, args []any, now time.Time) (queued bool, err error) {
	var u User
	var watched, waiting bool
	err = s.fixed.QueryRowContext(ctx, `SELECT u.uid, u.phone, c.uid IS NOT NULL, o.id IS NOT NULL FROM `+who+`
		LEFT JOIN contacts c ON c.phone = u.phone AND c.uid != u.uid LEFT JOIN messenger_outbox o ON o.waiting = u.phone
		WHERE `+which+" LIMIT 1", args...).Scan(&u.UID, &u.Phone, &watched, &waiting)
	if errors.Is(err, sql.ErrNoRows) || err == nil && (!watched || waiting) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("announce profile: %w", err)
	}
	defer s.profileQueues.lock(u.Phone)()
	err = retryDeadlocks(func() error {
		if err := s.fixed.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM messenger_outbox WHERE waiting = ?)", u.Phone).Scan(&waiting); err != nil || waiting {
			return err
		}
		res, err := s.fixed.ExecContext(ctx, s.d.insertIgnore+` INTO messenger_outbox (queue, waiting, replaceable, from_addr, to_addrs, body, created, next_attempt)
			VALUES (?, ?, 1, ?, ?, '', ?, ?)`, "user:"+u.Phone, u.Phone, u.Phone, ToContactsOfSender, now.Unix(), now.UnixMilli())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		queued = n > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("announce profile: %w", err)
	}
	return queued, nil
}

// stripedLocks serialise work on one key within this process: a key is hashed to one of
// its mutexes, and unrelated keys that share one only wait for each other briefly.
type stripedLocks [64]sync.Mutex

// stripeSeed hashes keys to stripedLocks.
var stripeSeed = maphash.MakeSeed()

// lock locks key's mutex and returns its unlock.
func (l *stripedLocks) lock(key string) func() {
	mu := &l[maphash.String(stripeSeed, key)%uint64(len(l))]
	mu.Lock()
	return mu.Unlock
}

// ProfileAudience reads the user with phone and the phones of the users who have it
// among their contacts, as they are now: what the profile update id is composed of when
// it is sent. stale reports that the update need not go: a later profile update of the
// user is queued (it is sent after this one and reads the profile then), or the profile
// as it is now was sent already (ProfileSent). ErrNotFound: no such user.
//
// A profile state is sent twice without the second check: a change's update is queued
// after the change is written, so a worker may claim the update before it, read the
// change and send it before the change's own update is there to make it stale.
func (s *Store) ProfileAudience(ctx context.Context, phone string, id int64) (u User, watchers []string, stale bool, err error) {
	rows, err := s.fixed.QueryContext(ctx, "SELECT "+userColumns+`, COALESCE(w.phone, ''), COALESCE(p.ts = u.ts, 0),
		(SELECT COUNT(*) FROM messenger_outbox o WHERE o.queue = ? AND o.id > ? AND o.to_addrs = ?)
		FROM users u LEFT JOIN messenger_profile_sent p ON p.phone = u.phone
		LEFT JOIN contacts c ON c.phone = u.phone AND c.uid != u.uid LEFT JOIN users w ON w.uid = c.uid
		WHERE u.phone = ?`, "user:"+phone, id, ToContactsOfSender, phone)
	if err != nil {
		return User{}, nil, false, fmt.Errorf("store: profile audience: %w", err)
	}
	defer rows.Close()
	found := false
	for rows.Next() {
		var w string
		var sent bool
		var later int
		if err := rows.Scan(append(u.fields(), &w, &sent, &later)...); err != nil {
			return User{}, nil, false, fmt.Errorf("store: profile audience: %w", err)
		}
		found, stale = true, sent || later > 0
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
	return u, watchers, stale, nil
}

// ProfileSent records that the profile of the user with phone, at ts, reached its
// watchers: a profile update that finds the profile still at ts is stale
// (ProfileAudience). The rows of a user's queue go one after another, so the record is
// there before the next one is claimed.
func (s *Store) ProfileSent(ctx context.Context, phone string, ts int64) error {
	if _, err := s.fixed.ExecContext(ctx, "INSERT INTO messenger_profile_sent (phone, ts) VALUES (?, ?) "+s.d.onConflictUpdate+" ts = ?",
		phone, ts, ts); err != nil {
		return fmt.Errorf("store: record profile sent: %w", err)
	}
	return nil
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

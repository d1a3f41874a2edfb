package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
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
// (announceProfile, with interval). It answers with the change applied to the user as
// read (a change of the same user's other fields made in between by another of its
// devices shows at the next sync), and when the profile update it queued is due (zero
// when it queued none).
func (s *Store) UpdateProfile(ctx context.Context, caller Caller, change ProfileChange, now time.Time, interval time.Duration) (User, time.Time, error) {
	ctx, cancel := profileWriteContext(ctx)
	defer cancel()
	if _, err := s.fixed.ExecContext(ctx, "UPDATE users "+setProfile+" WHERE uid = ?", setProfileArgs(change, now, caller.UID)...); err != nil {
		return User{}, time.Time{}, fmt.Errorf("store: update profile: %w", err)
	}
	due, err := s.announceProfile(caller.Phone, now, interval)
	if err != nil {
		return User{}, time.Time{}, fmt.Errorf("store: update profile: %w", err)
	}
	return change.appliedTo(caller.User, now), due, nil
}

// UpdateOwnProfile applies change to the row of the user token belongs to, in one
// statement that also proves the token and tells whose row it wrote, and announces it
// (announceProfile, with interval): a profile op's common case in two round trips, with
// no token look-up before. It reports when the profile update that this change, or one
// sharing its announcement, queued is due (zero when none was). ErrNotFound: the token is
// not valid, and nothing was written.
//
// At MySQL's REPEATABLE READ the UPDATE's subquery locks the token row it reads until it
// commits, so a new login of the same user (users row, then tokens) can close a deadlock
// with it; InnoDB then rolls back the UPDATE, which has written nothing, and it is tried
// again.
func (s *Store) UpdateOwnProfile(ctx context.Context, token string, change ProfileChange, now time.Time, interval time.Duration) (due time.Time, err error) {
	ctx, cancel := profileWriteContext(ctx)
	defer cancel()
	var phone string
	err = retryDeadlocks(func() (err error) {
		phone, err = s.writeOwnProfile(ctx, token, change, now)
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("store: update own profile: %w", err)
	}
	if due, err = s.announceProfile(phone, now, interval); err != nil {
		return time.Time{}, fmt.Errorf("store: update own profile: %w", err)
	}
	return due, nil
}

// writeOwnProfile is UpdateOwnProfile's UPDATE: it returns the phone of the user whose
// row it wrote, or ErrNotFound.
func (s *Store) writeOwnProfile(ctx context.Context, token string, change ProfileChange, now time.Time) (phone string, err error) {
	query := "UPDATE users AS u " + setProfile + s.d.keepPhone + " WHERE u.uid = (SELECT t.uid FROM tokens t WHERE " + validToken + ")" + s.d.returningPhone
	args := setProfileArgs(change, now, validTokenArgs(token)...)
	if s.d.returningPhone != "" {
		err = s.fixed.QueryRowContext(ctx, query, args...).Scan(&phone)
		if errors.Is(err, sql.ErrNoRows) {
			return "", ErrNotFound
		}
		return phone, err
	}
	res, err := s.fixed.ExecContext(ctx, query, args...)
	if err != nil {
		return "", err
	}
	// ts always changes, so MySQL's changed rows are the matched ones.
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return "", cmp.Or(err, ErrNotFound)
	}
	// MySQL reports the value of LAST_INSERT_ID(expr) as an UPDATE's last insert id (its
	// manual, LAST_INSERT_ID()); a server that does not would leave changes unannounced.
	id, err := res.LastInsertId()
	if err == nil && id == 0 {
		err = errors.New("the database did not report the phone of the row written (LAST_INSERT_ID)")
	}
	return strconv.FormatUint(uint64(id), 10), err
}

// profileWriteContext is the context of a profile change's statements, or of the record
// of a profile update sent: what they write must be written, and announced, even when
// the client hangs up (or a config reload stops the worker) once it is done, so they do
// not end with ctx; they take at most 10 s.
func profileWriteContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// ToContactsOfSender, as an outbox row's recipients, makes it a profile update: a silent
// update of the sender's profile (from_addr) to the users who have the sender among their
// contacts, both read when it is sent, its body composed then from the profile as it is
// then. Such a row holds no state, so any number of them, in any order, end with the
// watchers holding the profile's last state.
const ToContactsOfSender = "*"

// announceProfile queues a profile update of the user with phone, whose change is
// written, if anybody has that user among their contacts and no profile update of the
// user is waiting, and reports when it is due (zero when it queued none). A profile
// update waiting then is claimed later, and reads the change. The update is due now,
// unless the user's last update went out less than interval ago, or is on its way: then
// it is due interval after that (interval after now at most), so a user's changes made
// meanwhile reach the watchers together, in one message with the last state (interval
// <= 0: each as soon as it can). The changes of one user that come at once in this
// process share one look (rounds), after all of them are written, with its own time: a
// caller's may be spent waiting for the round before.
func (s *Store) announceProfile(phone string, now time.Time, interval time.Duration) (time.Time, error) {
	return s.profileAnnouncements.join(phone, func() (time.Time, error) {
		ctx, cancel := profileWriteContext(context.Background())
		defer cancel()
		return s.queueProfileUpdate(ctx, phone, now, interval)
	})
}

// queueProfileUpdate is one look of announceProfile.
//
// Under a stream of changes a waiting row is the common case, which costs one read.
// Concurrent changes of one user would all find no waiting row right after a worker
// claims it, and race to insert one; InnoDB settles such a race on a unique key with
// deadlocks. So one process queues a user's updates one at a time, each asking again
// (the later ones find the row), and a race with another process is tried again.
// Watchers gone in between make the row send nothing.
func (s *Store) queueProfileUpdate(ctx context.Context, phone string, now time.Time, interval time.Duration) (due time.Time, err error) {
	var watched, waiting, sending bool
	var lastSent int64
	// f: a profile update of the user that is no longer waiting, so claimed (on its way)
	// or backing off. Its test of waiting is written so that no database answers it from
	// the waiting key (SQLite would, walking every row that does not wait).
	err = s.fixed.QueryRowContext(ctx, `SELECT c.uid IS NOT NULL, o.id IS NOT NULL, f.id IS NOT NULL, COALESCE(p.sent_ms, 0) FROM users u
		LEFT JOIN contacts c ON c.phone = u.phone AND c.uid != u.uid LEFT JOIN messenger_outbox o ON o.waiting = u.phone
		LEFT JOIN messenger_outbox f ON f.queue = ? AND f.to_addrs = ? AND COALESCE(f.waiting, 0) = 0
		LEFT JOIN messenger_profile_sent p ON p.phone = u.phone
		WHERE u.phone = ? LIMIT 1`, UserQueue(phone), ToContactsOfSender, phone).Scan(&watched, &waiting, &sending, &lastSent)
	if errors.Is(err, sql.ErrNoRows) || err == nil && (!watched || waiting) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("announce profile: %w", err)
	}
	due = now
	if interval > 0 {
		switch next, latest := time.UnixMilli(lastSent).Add(interval), now.Add(interval); {
		case sending || next.After(latest): // latest: the last one goes now, or a clock runs ahead
			due = latest
		case next.After(now):
			due = next
		}
	}
	defer s.profileQueues.lock(phone)()
	queued := false
	err = retryDeadlocks(func() error {
		if err := s.fixed.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM messenger_outbox WHERE waiting = ?)", phone).Scan(&waiting); err != nil || waiting {
			return err
		}
		res, err := s.fixed.ExecContext(ctx, s.d.insertIgnore+` INTO messenger_outbox (queue, waiting, replaceable, from_addr, to_addrs, body, created, next_attempt)
			VALUES (?, ?, 1, ?, ?, '', ?, ?)`, UserQueue(phone), phone, phone, ToContactsOfSender, now.Unix(), due.UnixMilli())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		queued = n > 0
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("announce profile: %w", err)
	}
	if !queued {
		return time.Time{}, nil
	}
	return due, nil
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

// ProfileUpdate is what a profile update (ToContactsOfSender) is made of when it is
// sent: the user and its watchers as they are then (ProfileAudience).
type ProfileUpdate struct {
	// User is the user whose profile changed, as stored now.
	User User
	// Watchers are the phones of the users who have User among their contacts now.
	Watchers []string
	// Later reports that a later profile update of the user is queued and due: it is sent
	// right after this one and reads the profile then, so this one need not go. (One held
	// back by the interval of announceProfile does not count: this one goes now.)
	Later bool

	lastSent sql.NullInt64 // the fingerprint of the user's last update sent (ProfileSent)
}

// SentAlready reports whether message is the one the user's last profile update
// carried (ProfileSent): sending it again changes nothing. Without this check a state
// would often go twice: a change's update is queued after the change is written, so a
// worker may claim the update before it, read the change and send it before the
// change's own update is there to make it Later.
func (p ProfileUpdate) SentAlready(message []byte) bool {
	return p.lastSent.Valid && p.lastSent.Int64 == fingerprint(message)
}

// fingerprint stands for a message in messenger_profile_sent: the first 8 bytes of its
// SHA-256.
func fingerprint(message []byte) int64 {
	sum := sha256.Sum256(message)
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// ProfileAudience reads what the profile update id of the user with phone is made of
// at now. ErrNotFound: no such user.
func (s *Store) ProfileAudience(ctx context.Context, phone string, id int64, now time.Time) (ProfileUpdate, error) {
	rows, err := s.fixed.QueryContext(ctx, "SELECT "+userColumns+`, COALESCE(w.phone, ''), p.fingerprint,
		EXISTS (SELECT 1 FROM messenger_outbox o WHERE o.queue = ? AND o.id > ? AND o.to_addrs = ? AND o.next_attempt <= ?)
		FROM users u LEFT JOIN messenger_profile_sent p ON p.phone = u.phone
		LEFT JOIN contacts c ON c.phone = u.phone AND c.uid != u.uid LEFT JOIN users w ON w.uid = c.uid
		WHERE u.phone = ?`, UserQueue(phone), id, ToContactsOfSender, now.UnixMilli(), phone)
	if err != nil {
		return ProfileUpdate{}, fmt.Errorf("store: profile audience: %w", err)
	}
	defer rows.Close()
	var p ProfileUpdate
	found := false
	for rows.Next() {
		var w string
		if err := rows.Scan(append(p.User.fields(), &w, &p.lastSent, &p.Later)...); err != nil {
			return ProfileUpdate{}, fmt.Errorf("store: profile audience: %w", err)
		}
		found = true
		if w != "" && w != p.User.Phone {
			p.Watchers = append(p.Watchers, w)
		}
	}
	if err := rows.Err(); err != nil {
		return ProfileUpdate{}, fmt.Errorf("store: profile audience: %w", err)
	}
	if !found {
		return ProfileUpdate{}, ErrNotFound
	}
	return p, nil
}

// ProfileSent records that message, a profile update of the user with phone, reached
// its watchers at now (ProfileUpdate.SentAlready, and the interval of announceProfile).
// The rows of a user's queue go one after another, so the record is there before the
// next one is claimed.
func (s *Store) ProfileSent(ctx context.Context, phone string, message []byte, now time.Time) error {
	ctx, cancel := profileWriteContext(ctx)
	defer cancel()
	fp, sent := fingerprint(message), now.UnixMilli()
	err := retryDeadlocks(func() error {
		_, err := s.fixed.ExecContext(ctx, "INSERT INTO messenger_profile_sent (phone, fingerprint, sent_ms) VALUES (?, ?, ?) "+
			s.d.onConflictUpdate+" fingerprint = ?, sent_ms = ?", phone, fp, sent, fp, sent)
		return err
	})
	if err != nil {
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

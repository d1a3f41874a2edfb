package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// User is a row of `users`, as the API shows it.
type User struct {
	UID    int64
	Phone  string
	CC     int
	Name   string
	Status string
	Photo  string
	TS     int64
}

// Login is what a successful login stores.
type Login struct {
	UID   int64
	Phone string // international digits
	CC    int
	Name  string // optional; kept only where the user has no name yet
	Token string
	// Expiry of the token; the tokens row carries it.
	Expiry time.Time
	// IPv4 address as the original's int column holds it; 0 for IPv6.
	IPv4   uint32
	Device int // device type
	TS     int64
}

// timeLayout is how times are bound: a form both MySQL's TIMESTAMP and SQLite's TEXT
// columns take, which in UTC sorts as it compares.
const timeLayout = "2006-01-02 15:04:05"

// userColumns are the columns of a User in field order, from users aliased u;
// userDetailColumns the ones after uid and phone.
const (
	userDetailColumns = "COALESCE(u.cc, 0), COALESCE(u.name, ''), COALESCE(u.status, ''), COALESCE(u.photo, ''), COALESCE(u.ts, 0)"
	userColumns       = "u.uid, u.phone, " + userDetailColumns
)

// fields are u's fields in the order of userColumns, to scan into.
func (u *User) fields() []any {
	return []any{&u.UID, &u.Phone, &u.CC, &u.Name, &u.Status, &u.Photo, &u.TS}
}

func scanUser(row *sql.Row) (User, error) {
	var u User
	err := row.Scan(u.fields()...)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	return u, err
}

// UIDTakenError refuses a login for which the messaging service handed back a uid that
// another number's user already has (the service lost its state, or a bug): storing it
// would give the new login the other user's account.
type UIDTakenError struct {
	// UID is the uid the service gave.
	UID int64
	// PhoneUID is the uid the logging-in number had before, 0 for a number without one.
	PhoneUID int64
}

func (e *UIDTakenError) Error() string {
	return fmt.Sprintf("store: uid %d belongs to another number's user (this number's uid: %d)", e.UID, e.PhoneUID)
}

// SaveLogin stores the user (created, or its cc and ts refreshed) and replaces the user's
// token, in one transaction. It reports whether the user is new. An existing user's
// number never changes here: a uid that belongs to another number is a *UIDTakenError and
// nothing is stored. A number the service gave a new uid keeps its row, profile, contact
// list and push token under the new uid.
// For a new user, compose (when not nil) builds the notification queued in the same
// transaction for every user who has the new user's phone among their contacts.
func (s *Store) SaveLogin(ctx context.Context, l Login, compose func(User) Notification) (u User, isNew bool, err error) {
	u, isNew, err = s.saveLogin(ctx, l, compose)
	if isMySQLError(err, mysqlDuplicateKey) {
		// A parallel first login of the same number inserted it first: now it exists.
		u, isNew, err = s.saveLogin(ctx, l, compose)
	}
	return u, isNew, err
}

// mysqlDuplicateKey is MySQL's ER_DUP_ENTRY.
const mysqlDuplicateKey = 1062

func (s *Store) saveLogin(ctx context.Context, l Login, compose func(User) Notification) (u User, isNew bool, err error) {
	// READ COMMITTED: no gap locks for new users' logins to collide on.
	tx, err := s.db.BeginTx(ctx, s.d.readCommitted)
	if err != nil {
		return User{}, false, fmt.Errorf("store: save login: %w", err)
	}
	defer tx.Rollback()

	isNew, err = s.saveUser(ctx, tx, l)
	if err != nil {
		return User{}, false, err
	}
	expiry := l.Expiry.UTC().Format(timeLayout)
	if _, err := tx.ExecContext(ctx, "INSERT INTO tokens (uid, token, expirytime, ipaddr, device) VALUES (?, ?, ?, ?, ?) "+
		s.d.onConflictUpdate+" token = ?, expirytime = ?, ipaddr = ?, device = ?",
		l.UID, l.Token, expiry, l.IPv4, l.Device, l.Token, expiry, l.IPv4, l.Device); err != nil {
		return User{}, false, fmt.Errorf("store: save token: %w", err)
	}
	u, err = scanUser(tx.QueryRowContext(ctx, "SELECT "+userColumns+" FROM users u WHERE u.uid = ?", l.UID))
	if err != nil {
		return User{}, false, fmt.Errorf("store: read user: %w", err)
	}
	if isNew {
		if err := notifyContactsOf(ctx, tx, u, time.Unix(l.TS, 0), compose); err != nil {
			return User{}, false, err
		}
	}
	if err := tx.Commit(); err != nil {
		return User{}, false, fmt.Errorf("store: save login: %w", err)
	}
	return u, isNew, nil
}

// saveUser stores l's user in tx and reports whether it is new. The rows of the uid and
// of the number are read locked first, so the case is known before anything is written.
func (s *Store) saveUser(ctx context.Context, tx *sql.Tx, l Login) (isNew bool, err error) {
	rows, err := tx.QueryContext(ctx, "SELECT uid, phone FROM users WHERE uid = ? OR phone = ?"+s.d.forUpdate, l.UID, l.Phone)
	if err != nil {
		return false, fmt.Errorf("store: save user: %w", err)
	}
	var uidTaken bool
	var phoneUID int64
	for rows.Next() {
		var uid int64
		var phone string
		if err := rows.Scan(&uid, &phone); err != nil {
			rows.Close()
			return false, fmt.Errorf("store: save user: %w", err)
		}
		if phone == l.Phone {
			phoneUID = uid
		} else {
			uidTaken = true // uid == l.UID, another number's user
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("store: save user: %w", err)
	}
	switch {
	case uidTaken:
		return false, &UIDTakenError{UID: l.UID, PhoneUID: phoneUID}
	case phoneUID == 0:
		_, err = tx.ExecContext(ctx, "INSERT INTO users (uid, phone, cc, ts, name) VALUES (?, ?, ?, ?, NULLIF(?, ''))",
			l.UID, l.Phone, l.CC, l.TS, l.Name)
		if err != nil {
			return false, fmt.Errorf("store: save user: %w", err)
		}
		return true, nil
	case phoneUID != l.UID:
		// The service gave the number a new uid: what was kept under the old one moves.
		for _, q := range []string{"UPDATE contacts SET uid = ? WHERE uid = ?", "UPDATE notifytokens SET uid = ? WHERE uid = ?"} {
			if _, err := tx.ExecContext(ctx, q, l.UID, phoneUID); err != nil {
				return false, fmt.Errorf("store: save user: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM tokens WHERE uid = ?", phoneUID); err != nil {
			return false, fmt.Errorf("store: save user: %w", err)
		}
	}
	// A known user's ts grows with every change, never back.
	_, err = tx.ExecContext(ctx, "UPDATE users SET uid = ?, cc = ?, "+nextUserTS+
		", name = CASE WHEN name IS NULL OR name = '' THEN NULLIF(?, '') ELSE name END WHERE phone = ?",
		append(append([]any{l.UID, l.CC}, nextUserTSArgs(l.TS)...), l.Name, l.Phone)...)
	if err != nil {
		return false, fmt.Errorf("store: save user: %w", err)
	}
	return false, nil
}

// Caller is the user a request's access token belongs to, as read for that request.
type Caller struct {
	User
}

// validToken is the condition on a token row (tokens t) that it is the one asked for and
// has not expired; its arguments are validTokenArgs'. Tokens written by the original
// backend carry no expiry (a zero date).
const validToken = `t.token = ? AND (t.expirytime < '1970-01-02' OR t.expirytime > ?)`

// validTokenArgs are validToken's arguments: the token and the time now, in UTC as the
// expiry times are written.
func validTokenArgs(token string) []any {
	return []any{token, time.Now().UTC().Format(timeLayout)}
}

// callerFrom is the part of a token look-up after its columns: the user (users u) of a
// valid token (tokens t).
const callerFrom = ` FROM tokens t JOIN users u ON u.uid = t.uid WHERE ` + validToken

// CallerByToken finds the user an access token belongs to. Tokens written by the
// original backend carry no expiry (a zero date) and stay valid, as they did there.
func (s *Store) CallerByToken(ctx context.Context, token string) (Caller, error) {
	var c Caller
	err := s.fixed.QueryRowContext(ctx, "SELECT "+userColumns+callerFrom, validTokenArgs(token)...).Scan(c.fields()...)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Caller{}, ErrNotFound
	case err != nil:
		return Caller{}, fmt.Errorf("store: caller by token: %w", err)
	}
	return c, nil
}

// Logout deletes the user's access token and push token.
func (s *Store) Logout(ctx context.Context, uid int64) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: logout: %w", err)
	}
	defer tx.Rollback()
	for _, q := range []string{"DELETE FROM tokens WHERE uid = ?", "DELETE FROM notifytokens WHERE uid = ?"} {
		if _, err := tx.ExecContext(ctx, q, uid); err != nil {
			return fmt.Errorf("store: logout: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: logout: %w", err)
	}
	return nil
}

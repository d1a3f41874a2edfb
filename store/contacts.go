package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// chunkSize bounds the values of one multi-row INSERT or IN list: a request costs one
// round trip per chunk, not one per phone. It stays under MariaDB's
// in_predicate_conversion_threshold (1000), past which an IN list becomes a subquery and
// the users look-up can turn into a full scan.
const chunkSize = 500

// chunks calls fn with successive slices of at most chunkSize items.
func chunks[T any](items []T, fn func([]T) error) error {
	for len(items) > 0 {
		n := min(len(items), chunkSize)
		if err := fn(items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// placeholders is "?,?,?" for n values, with each group wrapped as given (e.g. "(?,?)").
func placeholders(n int, group string) string {
	return strings.TrimSuffix(strings.Repeat(group+",", n), ",")
}

func anys[T any](items []T) []any {
	out := make([]any, len(items))
	for i, v := range items {
		out[i] = v
	}
	return out
}

// KnownContacts returns which of phones are already in uid's contact list, and the
// registered users among those (except uid itself). One statement: it reads the part of
// the list between the lowest and the highest of phones in one index range scan and looks
// each number up in users; a few hundred sequential index entries cost MariaDB a fraction
// of as many look-ups through an IN list, and a list's size is bounded by the discovery
// budget.
func (s *Store) KnownContacts(ctx context.Context, uid int64, phones []string) (map[string]bool, []User, error) {
	known := map[string]bool{}
	if len(phones) == 0 {
		return known, nil, nil
	}
	lo, hi := phones[0], phones[0]
	for _, p := range phones[1:] {
		if comparePhones(p, lo) < 0 {
			lo = p
		}
		if comparePhones(p, hi) > 0 {
			hi = p
		}
	}
	wanted := make(map[string]bool, len(phones))
	for _, p := range phones {
		wanted[p] = true
	}
	rows, err := s.fixed.QueryContext(ctx, "SELECT c.phone, u.uid, "+userDetailColumns+
		" FROM contacts c LEFT JOIN users u ON u.phone = c.phone AND u.uid != ?"+
		" WHERE c.uid = ? AND c.phone BETWEEN ? AND ?", uid, uid, lo, hi)
	if err != nil {
		return nil, nil, fmt.Errorf("store: known contacts: %w", err)
	}
	defer rows.Close()
	var users []User
	for rows.Next() {
		var u User
		var registered sql.NullInt64 // the user's uid; NULL for a number nobody registered
		if err := rows.Scan(&u.Phone, &registered, &u.CC, &u.Name, &u.Status, &u.Photo, &u.TS); err != nil {
			return nil, nil, fmt.Errorf("store: known contacts: %w", err)
		}
		if !wanted[u.Phone] {
			continue
		}
		known[u.Phone] = true
		if registered.Valid {
			u.UID = registered.Int64
			users = append(users, u)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("store: known contacts: %w", err)
	}
	return known, users, nil
}

// comparePhones orders phone digit strings by their numeric value.
func comparePhones(a, b string) int {
	return cmp.Or(cmp.Compare(len(a), len(b)), strings.Compare(a, b))
}

// SaveContacts adds phones to uid's contact list (after emptying it when reset is set),
// in one transaction.
func (s *Store) SaveContacts(ctx context.Context, uid int64, phones []string, reset bool) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: save contacts: %w", err)
	}
	defer tx.Rollback()
	if reset {
		if _, err := tx.ExecContext(ctx, "DELETE FROM contacts WHERE uid = ?", uid); err != nil {
			return fmt.Errorf("store: reset contacts: %w", err)
		}
	}
	err = chunks(phones, func(chunk []string) error {
		args := make([]any, 0, 2*len(chunk))
		for _, p := range chunk {
			args = append(args, uid, p)
		}
		_, err := tx.ExecContext(ctx, s.d.insertIgnore+" INTO contacts (uid, phone) VALUES "+placeholders(len(chunk), "(?,?)"), args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: save contacts: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: save contacts: %w", err)
	}
	return nil
}

// DeleteContacts removes phones from uid's contact list.
func (s *Store) DeleteContacts(ctx context.Context, uid int64, phones []string) error {
	err := chunks(phones, func(chunk []string) error {
		_, err := s.db.ExecContext(ctx, "DELETE FROM contacts WHERE uid = ? AND phone IN ("+placeholders(len(chunk), "?")+")",
			append([]any{uid}, anys(chunk)...)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: delete contacts: %w", err)
	}
	return nil
}

// UsersByPhones returns the registered users among phones, except excludeUID, in no
// particular order (FirstByTS orders and cuts a list once it is complete: an ORDER BY
// would cost MariaDB a sort per chunk).
func (s *Store) UsersByPhones(ctx context.Context, phones []string, excludeUID int64) ([]User, error) {
	var users []User
	err := chunks(phones, func(chunk []string) error {
		found, err := queryUsers(ctx, s.db, "SELECT "+userColumns+" FROM users u WHERE u.phone IN ("+placeholders(len(chunk), "?")+
			") AND u.uid != ?", append(anys(chunk), excludeUID)...)
		users = append(users, found...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: users by phones: %w", err)
	}
	return users, nil
}

// SyncSince answers a sync from since of the user that token belongs to: that user
// (ErrNotFound for an unknown or expired token), the registered users in its contact list
// changed after since, at most userLimit, and the groups it is a member of changed after
// since, at most groupLimit, with their member lists; each list in ascending ts (then
// id). With a full page of users there are no groups: they wait for the next page, since
// the app resumes from the highest ts it saw and a group with a later ts would make it
// skip users.
//
// The caller, users, and groups with their members come from one statement (each branch
// finds the caller by its token, an index look-up MariaDB does in microseconds, where a
// statement of its own would cost a round trip; a changed group is a row per member), so
// a sync is one round trip. The statement neither
// sorts nor cuts (done here): per-branch ORDER BY … LIMIT needs a parenthesised UNION,
// which SQLite does not parse, or derived tables, which MariaDB materialises (on disk,
// for the blob columns) at five times the cost. So a page reads every changed row, not
// only the first limit: a full sync of a list of N registered users paged by 1000 reads
// about N²/2000 rows; lists stay in the low thousands (the discovery budget lets a user
// add 5000 numbers and 10 an hour).
func (s *Store) SyncSince(ctx context.Context, token string, since int64, userLimit, groupLimit int) (caller User, users []User, groups []Group, err error) {
	// The first column tells the rows apart: 2 the caller, 0 a user, 1 a group member
	// (a row per member of each changed group; the last two columns are its phone and role).
	rows, err := s.fixed.QueryContext(ctx, "SELECT 2, "+userColumns+", 0, 0, 0"+callerFrom+`
		UNION ALL
		SELECT 0, `+userColumns+`, 0, 0, 0
		FROM tokens t JOIN contacts c ON c.uid = t.uid JOIN users u ON u.phone = c.phone
		WHERE `+validToken+` AND u.ts > ? AND u.uid != t.uid
		UNION ALL
		SELECT 1, g.gid, 0, 0, COALESCE(g.name, ''), '', COALESCE(g.photo, ''), COALESCE(g.ts, 0), g.type, o.phone, COALESCE(o.role, 0)
		FROM tokens t JOIN users me ON me.uid = t.uid JOIN members m ON m.phone = me.phone
		JOIN `+"`groups`"+` g ON g.gid = m.gid JOIN members o ON o.gid = g.gid WHERE `+validToken+` AND g.ts > ?`,
		slices.Concat(validTokenArgs(token), validTokenArgs(token), []any{since}, validTokenArgs(token), []any{since})...)
	if err != nil {
		return User{}, nil, nil, fmt.Errorf("store: sync: %w", err)
	}
	defer rows.Close()
	found := false
	members := map[int64]*memberList{}
	// One set of scan targets for all rows: each row's strings are new values, so u is
	// copied out as it is.
	var kind, groupType, role int
	var u User
	var member string
	dest := slices.Concat([]any{&kind}, u.fields(), []any{&groupType, &member, &role})
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return User{}, nil, nil, fmt.Errorf("store: sync: %w", err)
		}
		switch kind {
		case 2:
			caller, found = u, true
		case 1:
			if members[u.UID] == nil {
				members[u.UID] = &memberList{}
				groups = append(groups, Group{GID: u.UID, Name: u.Name, Photo: u.Photo, Type: groupType, TS: u.TS})
			}
			members[u.UID].add(member, role)
		default:
			users = append(users, u)
		}
	}
	if err := rows.Err(); err != nil {
		return User{}, nil, nil, fmt.Errorf("store: sync: %w", err)
	}
	if !found {
		return User{}, nil, nil, ErrNotFound
	}
	users = FirstByTS(users, userLimit)
	if len(users) == userLimit {
		return caller, users, nil, nil
	}
	slices.SortFunc(groups, func(a, b Group) int { return cmp.Or(cmp.Compare(a.TS, b.TS), cmp.Compare(a.GID, b.GID)) })
	groups = groups[:min(len(groups), groupLimit)]
	for i := range groups {
		l := members[groups[i].GID]
		l.sort()
		groups[i].Members, groups[i].Phones = l.String(), l.phones()
	}
	return caller, users, groups, nil
}

func queryUsers(ctx context.Context, q querier, query string, args ...any) ([]User, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var users []User
	var u User
	dest := u.fields()
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	return users, rows.Err()
}

// FirstByTS puts users in ascending ts (then uid), the order of every user list the
// protocol answers, and keeps the first limit: lists gathered from several statements
// end in the order one query would have given.
func FirstByTS(users []User, limit int) []User {
	slices.SortFunc(users, func(a, b User) int {
		return cmp.Or(cmp.Compare(a.TS, b.TS), cmp.Compare(a.UID, b.UID))
	})
	return users[:min(len(users), limit)]
}

// contactsOf returns the phones of the users who have phone in their contact list,
// except the user with that phone.
func contactsOf(ctx context.Context, q querier, phone string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT u.phone FROM contacts c JOIN users u ON u.uid = c.uid
		WHERE c.phone = ? AND u.phone != ?`, phone, phone)
	if err != nil {
		return nil, fmt.Errorf("store: contacts of: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

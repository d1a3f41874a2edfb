package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The group rows: a new group is inserted whole; an existing one is read and changed under
// its GroupLock (grouplock.go), each change one short transaction with the notification
// about it. Who may change what, and the messaging service's copy, are the groups
// package's.

// GroupChange is what a change sets on a group's row; nil fields stay.
type GroupChange struct {
	Name  *string
	Photo *string
	// Type is the app-defined group type (0-255).
	Type *int
}

// GroupEdit is one change of a group's rows.
type GroupEdit struct {
	GroupChange
	// Add are phones that join with role RoleMember.
	Add []string
	// Remove are member phones that leave.
	Remove []string
	// SetRole are member phones whose role becomes Role.
	SetRole []string
	Role    int
}

// NewGroup is a group to insert.
type NewGroup struct {
	// GID is the messaging service's id of the group.
	GID   int64
	Name  string
	Photo string
	Type  int
	// Owner joins with role RoleOwner, Members with role RoleMember.
	Owner   string
	Members []string
}

// InsertGroup stores a new group with its members, and queues notify's notification
// about it, in one transaction. A group of that gid already here is an error: the create
// fails rather than take over someone else's group.
func (s *Store) InsertGroup(ctx context.Context, ng NewGroup, now time.Time, notify func(Group) Notification) (Group, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "INSERT INTO `groups` (gid, name, status, photo, type, ts) VALUES (?, ?, '', ?, ?, ?)",
		ng.GID, ng.Name, ng.Photo, ng.Type, now.Unix()); err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	// Member rows of a group that no longer exists would join the new one: drop them.
	var orphans int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM members WHERE gid = ?", ng.GID).Scan(&orphans); err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	if orphans > 0 {
		if _, err := tx.ExecContext(ctx, "DELETE FROM members WHERE gid = ?", ng.GID); err != nil {
			return Group{}, fmt.Errorf("store: create group: %w", err)
		}
	}
	if err := insertMembers(ctx, tx, ng.GID, []string{ng.Owner}, RoleOwner); err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	if err := insertMembers(ctx, tx, ng.GID, ng.Members, RoleMember); err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	return commitGroup(ctx, tx, ng.GID, now, notify)
}

// commitGroup reads group gid back in tx, queues notify's notification about it and
// commits.
func commitGroup(ctx context.Context, tx *sql.Tx, gid int64, now time.Time, notify func(Group) Notification) (Group, error) {
	g, err := groupFor(ctx, tx, gid)
	if err != nil {
		return Group{}, err
	}
	if notify != nil {
		if err := enqueue(ctx, tx, notify(g), now); err != nil {
			return Group{}, err
		}
	}
	if err := tx.Commit(); err != nil {
		return Group{}, fmt.Errorf("store: group %d: commit: %w", gid, err)
	}
	return g, nil
}

// Group reads the locked group with its members and their roles. A missing group is
// ErrNotFound.
func (l *GroupLock) Group(ctx context.Context) (Group, error) {
	return groupFor(ctx, l.q, l.gid)
}

// Edit writes e, bumps the group's ts and queues notify's notification about the group
// as it is then, in one transaction; it returns that group. A missing group is
// ErrNotFound.
func (l *GroupLock) Edit(ctx context.Context, e GroupEdit, now time.Time, notify func(Group) Notification) (Group, error) {
	tx, err := l.q.BeginTx(ctx, nil)
	if err != nil {
		return Group{}, fmt.Errorf("store: edit group: %w", err)
	}
	defer tx.Rollback()
	// The row lock keeps out writers that do not take the group lock (an older
	// backend on the same database).
	var ts int64
	err = tx.QueryRowContext(ctx, "SELECT COALESCE(ts, 0) FROM `groups` WHERE gid = ?"+l.s.d.forUpdate, l.gid).Scan(&ts)
	if errors.Is(err, sql.ErrNoRows) {
		return Group{}, ErrNotFound
	}
	if err != nil {
		return Group{}, fmt.Errorf("store: edit group: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE `groups` SET name = COALESCE(?, name), type = COALESCE(?, type), photo = COALESCE(?, photo), ts = ? WHERE gid = ?",
		e.Name, e.Type, e.Photo, nextTS(ts, now), l.gid); err != nil {
		return Group{}, fmt.Errorf("store: edit group: %w", err)
	}
	if err := deleteMembers(ctx, tx, l.gid, e.Remove); err != nil {
		return Group{}, fmt.Errorf("store: edit group: %w", err)
	}
	if err := insertMembers(ctx, tx, l.gid, e.Add, RoleMember); err != nil {
		return Group{}, fmt.Errorf("store: edit group: %w", err)
	}
	if err := setRole(ctx, tx, l.gid, e.SetRole, e.Role); err != nil {
		return Group{}, fmt.Errorf("store: edit group: %w", err)
	}
	return commitGroup(ctx, tx, l.gid, now, notify)
}

// Delete deletes the group and its members, and queues notify's notification about the
// group as it goes (no members, "0:", ts bumped), in one transaction; it returns that
// last state. A missing group is ErrNotFound.
func (l *GroupLock) Delete(ctx context.Context, now time.Time, notify func(Group) Notification) (Group, error) {
	tx, err := l.q.BeginTx(ctx, nil)
	if err != nil {
		return Group{}, fmt.Errorf("store: delete group: %w", err)
	}
	defer tx.Rollback()
	last, err := groupFor(ctx, tx, l.gid)
	if err != nil {
		return Group{}, err
	}
	if err := deleteMembers(ctx, tx, l.gid, last.Phones); err != nil {
		return Group{}, fmt.Errorf("store: delete group: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM `groups` WHERE gid = ?", l.gid); err != nil {
		return Group{}, fmt.Errorf("store: delete group: %w", err)
	}
	last.TS = nextTS(last.TS, now)
	last.Members, last.Phones, last.Roles = memberList{}.String(), nil, nil
	if notify != nil {
		if err := enqueue(ctx, tx, notify(last), now); err != nil {
			return Group{}, err
		}
	}
	if err := tx.Commit(); err != nil {
		return Group{}, fmt.Errorf("store: delete group: commit: %w", err)
	}
	return last, nil
}

// nextTS is the ts of a change: now, but always past the group's current ts, so a delta
// sync from the ts an app saw last sees every later change, even within one second.
func nextTS(current int64, now time.Time) int64 {
	return max(now.Unix(), current+1)
}

// phoneValue is a phone in international digits as the bigint the phone columns hold.
func phoneValue(p string) uint64 {
	v, _ := strconv.ParseUint(p, 10, 64)
	return v
}

// insertMembers adds phones to group gid with role.
func insertMembers(ctx context.Context, tx *sql.Tx, gid int64, phones []string, role int) error {
	return chunks(phones, func(chunk []string) error {
		args := make([]any, 0, 3*len(chunk))
		for _, p := range chunk {
			args = append(args, gid, phoneValue(p), role)
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO members (gid, phone, role) VALUES "+placeholders(len(chunk), "(?,?,?)"), args...)
		return err
	})
}

// deleteMembers removes phones from group gid. Each row is named by its whole unique key,
// so only those rows are locked, not the gaps between them.
func deleteMembers(ctx context.Context, tx *sql.Tx, gid int64, phones []string) error {
	return chunks(phones, func(chunk []string) error {
		args := make([]any, 0, 1+len(chunk))
		args = append(args, gid)
		for _, p := range chunk {
			args = append(args, phoneValue(p))
		}
		_, err := tx.ExecContext(ctx, "DELETE FROM members WHERE gid = ? AND phone IN ("+placeholders(len(chunk), "?")+")", args...)
		return err
	})
}

// setRole sets the role of phones in group gid.
func setRole(ctx context.Context, tx *sql.Tx, gid int64, phones []string, role int) error {
	return chunks(phones, func(chunk []string) error {
		args := make([]any, 0, 2+len(chunk))
		args = append(args, role, gid)
		for _, p := range chunk {
			args = append(args, phoneValue(p))
		}
		_, err := tx.ExecContext(ctx, "UPDATE members SET role = ? WHERE gid = ? AND phone IN ("+placeholders(len(chunk), "?")+")", args...)
		return err
	})
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// The group changes (setgroup, editmembers, setadmin, delgroup; PROTOCOL.md §3) keep two
// copies in step: the local tables and the messaging service's (mesibo's) groups. Each
// change runs in one transaction, in this order:
//
//  1. lock the group row (SELECT ... FOR UPDATE), which serialises every change to one
//     group, and check the actor's role;
//  2. write the local rows and queue the notification;
//  3. ask the messaging service (GroupService);
//  4. commit.
//
// A refusal or an outage of the service at step 3 rolls everything back, so the two copies
// never disagree after a failed call. A local failure at step 2 happens before the service
// is asked. Only a failed commit after the service said yes leaves them apart; the change
// is then undone at the service (best effort). A new group is the exception: its id comes
// from the service, so the service creates it first, and a failed local insert deletes it
// there again.
//
// Once started, a change runs to its end (bounded by groupOpTimeout) even if the request
// that asked for it goes away: stopping between the service call and the commit would
// leave the copies apart.

// ErrNotGroupMember means the acting phone is not a member of the group.
var ErrNotGroupMember = errors.New("not a group member")

// ErrBadPhone means a member phone is not a phone number in international digits.
var ErrBadPhone = errors.New("not a phone number")

// groupOpTimeout bounds one group change, service call and lock waits included.
const groupOpTimeout = 30 * time.Second

// maxPhoneDigits is the longest international number (E.164).
const maxPhoneDigits = 15

// GroupService is the messaging service's copy of the groups. Members are phones in
// international digits.
type GroupService interface {
	// CreateGroup creates a group and returns its id, which becomes the local gid.
	CreateGroup(ctx context.Context, name string, members []string) (gid int64, err error)
	// SetGroup sets the name and the whole member list of group gid.
	SetGroup(ctx context.Context, gid int64, name string, members []string) error
	// EditMembers adds members to group gid, or removes them when remove is set.
	EditMembers(ctx context.Context, gid int64, members []string, remove bool) error
	// DeleteGroup deletes group gid.
	DeleteGroup(ctx context.Context, gid int64) error
}

// ServiceError is a failure of the GroupService (refused or unreachable); nothing was
// changed locally. Err is the service's error.
type ServiceError struct {
	Op  string // "groupadd", "groupset", "groupeditmembers" or "groupdel"
	Err error
}

func (e *ServiceError) Error() string {
	return "store: messaging service " + e.Op + ": " + e.Err.Error()
}

// Unwrap exposes the service's error.
func (e *ServiceError) Unwrap() error { return e.Err }

// GroupSetup is what setgroup asks for.
type GroupSetup struct {
	// Name of the group; "" keeps the stored name of an existing group.
	Name string
	// Type is the app-defined group type (0-255); nil keeps it (0 for a new group).
	Type *int
	// Photo is the stored picture name; nil keeps it ("" for a new group).
	Photo *string
	// Members are the member phones besides the actor; the actor and the owner are
	// always members. Members of an existing group not listed here are removed.
	Members []string
	// KeepMembers leaves an existing group's member list as it is (Members is ignored).
	KeepMembers bool
}

// lockedGroup is a group read with its row locked: the state a change starts from.
type lockedGroup struct {
	Group
	roles  map[string]int
	owners []string // members with the owner role; normally one
}

// lockGroup reads group gid and its members in tx, with the group row locked until tx
// ends. A missing group is ErrNotFound.
func lockGroup(ctx context.Context, tx *sql.Tx, gid int64) (lockedGroup, error) {
	lg := lockedGroup{Group: Group{GID: gid}, roles: map[string]int{}}
	err := tx.QueryRowContext(ctx, "SELECT COALESCE(name, ''), COALESCE(photo, ''), type, COALESCE(ts, 0) FROM `groups` WHERE gid = ? FOR UPDATE", gid).
		Scan(&lg.Name, &lg.Photo, &lg.Type, &lg.TS)
	if errors.Is(err, sql.ErrNoRows) {
		return lockedGroup{}, ErrNotFound
	}
	if err != nil {
		return lockedGroup{}, fmt.Errorf("store: lock group: %w", err)
	}
	// A plain read: the row lock above serialises every writer of this group's members,
	// and the transaction's snapshot is taken now, after the lock was granted.
	// (Not joined to the locking read: that would lock member rows and the index gaps
	// next to them, which other groups' changes share.)
	lists, err := memberLists(ctx, tx, []int64{gid})
	if err != nil {
		return lockedGroup{}, fmt.Errorf("store: lock group: %w", err)
	}
	list := lists[gid]
	if list == nil {
		list = &memberList{}
	}
	for _, m := range list.members {
		if m.role == RoleOwner {
			lg.owners = append(lg.owners, m.phone)
		}
		lg.roles[m.phone] = m.role
	}
	lg.Members, lg.Phones = list.String(), list.phones()
	return lg, nil
}

// role is the role of phone in the group, NotMember if none.
func (lg lockedGroup) role(phone string) int {
	if r, ok := lg.roles[phone]; ok {
		return r
	}
	return NotMember
}

// nextTS is the ts of a change: now, but always past the group's current ts, so a delta
// sync from the ts an app saw last sees every later change, even within one second.
func nextTS(current int64, now time.Time) int64 {
	return max(now.Unix(), current+1)
}

// cleanPhones checks that every phone is international digits and drops duplicates,
// keeping the first occurrence.
func cleanPhones(phones []string) ([]string, error) {
	out := make([]string, 0, len(phones))
	seen := make(map[string]bool, len(phones))
	for _, p := range phones {
		if !validPhone(p) {
			return nil, fmt.Errorf("%w: %q", ErrBadPhone, truncate(p, 32))
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

func validPhone(p string) bool {
	if p == "" || len(p) > maxPhoneDigits || p[0] == '0' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// phoneValue is a checked phone as the bigint the phone columns hold.
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

// notifyGroup queues compose(g) for g's members and also for the phones in also (members
// that were just removed, so their apps learn it).
func notifyGroup(ctx context.Context, tx *sql.Tx, g Group, also []string, now time.Time, compose func(Group) Notification) error {
	if compose == nil {
		return nil
	}
	n := compose(g)
	n.To = append(slices.Clone(g.Phones), also...)
	return enqueue(ctx, tx, n, now)
}

// minus is the phones of a that are not in b, in a's order.
func minus(a, b []string) []string {
	var out []string
	for _, p := range a {
		if !slices.Contains(b, p) {
			out = append(out, p)
		}
	}
	return out
}

// opContext detaches a change from its request (see the comment at the top of the file).
func opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), groupOpTimeout)
}

// commitOrUndo commits tx; if that fails, undo puts the service back (best effort) and
// the error says whether it could.
func commitOrUndo(tx *sql.Tx, what string, undo func() error) error {
	err := tx.Commit()
	if err == nil {
		return nil
	}
	err = fmt.Errorf("store: %s: commit: %w", what, err)
	if uerr := undo(); uerr != nil {
		// Not wrapped: the caller must see a local failure, not a service failure.
		return fmt.Errorf("%w (undoing the change at the messaging service failed too: %v)", err, uerr)
	}
	return err
}

// CreateGroup creates a group owned by creator, with the members of setup: the service
// creates it first and gives its gid; then the group, the creator as owner (role 2), the
// members (role 0) and compose's notification to the members are stored in one
// transaction. If that fails, the group is deleted at the service again (best effort).
// A bad phone is ErrBadPhone; a failure of the service is a *ServiceError.
func (s *Store) CreateGroup(ctx context.Context, creator string, setup GroupSetup, now time.Time, svc GroupService,
	compose func(Group) Notification) (Group, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	list, err := cleanPhones(append([]string{creator}, setup.Members...))
	if err != nil {
		return Group{}, err
	}
	gid, err := svc.CreateGroup(ctx, setup.Name, list)
	if err != nil {
		return Group{}, &ServiceError{Op: "groupadd", Err: err}
	}
	g, err := s.insertGroup(ctx, gid, creator, setup, list, now, compose)
	if err != nil {
		if uerr := svc.DeleteGroup(ctx, gid); uerr != nil {
			return Group{}, fmt.Errorf("%w (deleting group %d at the messaging service failed too: %v)", err, gid, uerr)
		}
		return Group{}, err
	}
	return g, nil
}

func (s *Store) insertGroup(ctx context.Context, gid int64, creator string, setup GroupSetup, list []string, now time.Time,
	compose func(Group) Notification) (Group, error) {
	typ, photo := 0, ""
	if setup.Type != nil {
		typ = *setup.Type
	}
	if setup.Photo != nil {
		photo = *setup.Photo
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	defer tx.Rollback()
	// A row with this gid already (the service reused an id) is a duplicate key: the
	// create fails rather than take over someone else's group.
	if _, err := tx.ExecContext(ctx, "INSERT INTO `groups` (gid, name, status, photo, type, ts) VALUES (?, ?, '', ?, ?, ?)",
		gid, setup.Name, photo, typ, now.Unix()); err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	// Member rows of a group that no longer exists would join the new one: drop them.
	var orphans int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM members WHERE gid = ?", gid).Scan(&orphans); err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	if orphans > 0 {
		if _, err := tx.ExecContext(ctx, "DELETE FROM members WHERE gid = ?", gid); err != nil {
			return Group{}, fmt.Errorf("store: create group: %w", err)
		}
	}
	if err := insertMembers(ctx, tx, gid, list[:1], RoleOwner); err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	if err := insertMembers(ctx, tx, gid, list[1:], RoleMember); err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	g, _, err := groupFor(ctx, tx, gid, creator)
	if err != nil {
		return Group{}, err
	}
	if err := notifyGroup(ctx, tx, g, nil, now, compose); err != nil {
		return Group{}, err
	}
	if err := tx.Commit(); err != nil {
		return Group{}, fmt.Errorf("store: create group: %w", err)
	}
	return g, nil
}

// ChangeGroup is setgroup on an existing group: actor must be an admin or its owner
// (ErrNotAdmin; a missing group is ErrNotFound). The member list becomes actor,
// setup.Members and the owner (unless setup.KeepMembers); members not in it are removed,
// new ones join with role 0, and the roles of the others stay. The name (when not empty),
// type and photo (when set) are stored, ts is bumped, and the service gets the new name
// and member list (groupset). compose's notification goes to the members and to the
// removed members.
func (s *Store) ChangeGroup(ctx context.Context, gid int64, actor string, setup GroupSetup, now time.Time, svc GroupService,
	compose func(Group) Notification) (Group, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	tx, lg, err := s.beginAdminChange(ctx, gid, actor, "change group")
	if err != nil {
		return Group{}, err
	}
	defer tx.Rollback()
	list := lg.Phones
	if !setup.KeepMembers {
		given := append(append([]string{actor}, setup.Members...), lg.owners...)
		if list, err = cleanPhones(given); err != nil {
			return Group{}, err
		}
	}
	added, removed := minus(list, lg.Phones), minus(lg.Phones, list)
	name := setup.Name
	if name == "" {
		name = lg.Name
	}
	if _, err := tx.ExecContext(ctx, "UPDATE `groups` SET name = ?, type = COALESCE(?, type), photo = COALESCE(?, photo), ts = ? WHERE gid = ?",
		name, setup.Type, setup.Photo, nextTS(lg.TS, now), gid); err != nil {
		return Group{}, fmt.Errorf("store: change group: %w", err)
	}
	if err := deleteMembers(ctx, tx, gid, removed); err != nil {
		return Group{}, fmt.Errorf("store: change group: %w", err)
	}
	if err := insertMembers(ctx, tx, gid, added, RoleMember); err != nil {
		return Group{}, fmt.Errorf("store: change group: %w", err)
	}
	g, _, err := groupFor(ctx, tx, gid, actor)
	if err != nil {
		return Group{}, err
	}
	if err := notifyGroup(ctx, tx, g, removed, now, compose); err != nil {
		return Group{}, err
	}
	if err := svc.SetGroup(ctx, gid, name, list); err != nil {
		return Group{}, &ServiceError{Op: "groupset", Err: err}
	}
	if err := commitOrUndo(tx, "change group", func() error { return svc.SetGroup(ctx, gid, lg.Name, lg.Phones) }); err != nil {
		return Group{}, err
	}
	return g, nil
}

// EditMembers adds phones to group gid (role 0), or removes them when remove is set,
// if actor is an admin or its owner (ErrNotAdmin; a missing group is ErrNotFound). The
// owner is never removed this way, phones already in (add) or not in (remove) the group
// are skipped, and when nothing is left to change, nothing happens: the group is
// returned as it is. Otherwise the service is told (groupeditmembers with the phones that
// change), ts is bumped and compose's notification goes to the members and the removed.
func (s *Store) EditMembers(ctx context.Context, gid int64, actor string, phones []string, remove bool, now time.Time,
	svc GroupService, compose func(Group) Notification) (Group, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	phones, err := cleanPhones(phones)
	if err != nil {
		return Group{}, err
	}
	tx, lg, err := s.beginAdminChange(ctx, gid, actor, "edit members")
	if err != nil {
		return Group{}, err
	}
	defer tx.Rollback()
	var change []string
	for _, p := range phones {
		role := lg.role(p)
		if (remove && role != NotMember && role != RoleOwner) || (!remove && role == NotMember) {
			change = append(change, p)
		}
	}
	if len(change) == 0 {
		return lg.Group, nil
	}
	var removed []string
	if remove {
		removed = change
		err = deleteMembers(ctx, tx, gid, change)
	} else {
		err = insertMembers(ctx, tx, gid, change, RoleMember)
	}
	if err != nil {
		return Group{}, fmt.Errorf("store: edit members: %w", err)
	}
	g, err := bumpAndNotify(ctx, tx, lg, actor, removed, now, compose)
	if err != nil {
		return Group{}, err
	}
	if err := svc.EditMembers(ctx, gid, change, remove); err != nil {
		return Group{}, &ServiceError{Op: "groupeditmembers", Err: err}
	}
	if err := commitOrUndo(tx, "edit members", func() error { return svc.EditMembers(ctx, gid, change, !remove) }); err != nil {
		return Group{}, err
	}
	return g, nil
}

// beginAdminChange starts a change of group gid by actor: a transaction with the group
// row locked, refused (ErrNotAdmin, ErrNotFound) unless actor is an admin or the owner.
// The caller rolls back or commits tx.
func (s *Store) beginAdminChange(ctx context.Context, gid int64, actor, what string) (*sql.Tx, lockedGroup, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, lockedGroup{}, fmt.Errorf("store: %s: %w", what, err)
	}
	lg, err := lockGroup(ctx, tx, gid)
	if err == nil && lg.role(actor) < RoleAdmin {
		err = ErrNotAdmin
	}
	if err != nil {
		tx.Rollback()
		return nil, lockedGroup{}, err
	}
	return tx, lg, nil
}

// bumpAndNotify sets the group's ts, reads it back and queues compose's notification to
// its members and to the phones in removed.
func bumpAndNotify(ctx context.Context, tx *sql.Tx, lg lockedGroup, actor string, removed []string, now time.Time,
	compose func(Group) Notification) (Group, error) {
	if _, err := tx.ExecContext(ctx, "UPDATE `groups` SET ts = ? WHERE gid = ?", nextTS(lg.TS, now), lg.GID); err != nil {
		return Group{}, fmt.Errorf("store: group ts: %w", err)
	}
	g, _, err := groupFor(ctx, tx, lg.GID, actor)
	if err != nil {
		return Group{}, err
	}
	if err := notifyGroup(ctx, tx, g, removed, now, compose); err != nil {
		return Group{}, err
	}
	return g, nil
}

// SetAdmin makes phones admins of group gid (admin set) or plain members, if actor is an
// admin or its owner (ErrNotAdmin; a missing group is ErrNotFound). The owner's role never
// changes, and phones not in the group are skipped; when nothing is left to change,
// nothing happens. Otherwise ts is bumped and compose's notification goes to the members.
// The service keeps no roles, so it is not asked.
func (s *Store) SetAdmin(ctx context.Context, gid int64, actor string, phones []string, admin bool, now time.Time,
	compose func(Group) Notification) (Group, error) {
	phones, err := cleanPhones(phones)
	if err != nil {
		return Group{}, err
	}
	role := RoleMember
	if admin {
		role = RoleAdmin
	}
	tx, lg, err := s.beginAdminChange(ctx, gid, actor, "set admin")
	if err != nil {
		return Group{}, err
	}
	defer tx.Rollback()
	var change []string
	for _, p := range phones {
		if r := lg.role(p); r != NotMember && r != RoleOwner && r != role {
			change = append(change, p)
		}
	}
	if len(change) == 0 {
		return lg.Group, nil
	}
	if err := setRole(ctx, tx, gid, change, role); err != nil {
		return Group{}, fmt.Errorf("store: set admin: %w", err)
	}
	g, err := bumpAndNotify(ctx, tx, lg, actor, nil, now, compose)
	if err != nil {
		return Group{}, err
	}
	if err := tx.Commit(); err != nil {
		return Group{}, fmt.Errorf("store: set admin: %w", err)
	}
	return g, nil
}

// DeleteOrLeave is delgroup. A missing group is ErrNotFound, an actor not in it
// ErrNotGroupMember. The owner deletes the group: compose's notification about the group
// as it goes (no members, "0:") is queued for its members, the rows are deleted, and the
// service deletes it (groupdel); deleted is true and g is that last state. Anyone else
// leaves: the service removes them (groupeditmembers), their row goes, ts is bumped and
// compose's notification goes to the remaining members; g is the group after.
func (s *Store) DeleteOrLeave(ctx context.Context, gid int64, actor string, now time.Time, svc GroupService,
	compose func(Group) Notification) (g Group, deleted bool, err error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Group{}, false, fmt.Errorf("store: delete group: %w", err)
	}
	defer tx.Rollback()
	lg, err := lockGroup(ctx, tx, gid)
	if err != nil {
		return Group{}, false, err
	}
	switch lg.role(actor) {
	case NotMember:
		return Group{}, false, ErrNotGroupMember
	case RoleOwner:
	default:
		if err := deleteMembers(ctx, tx, gid, []string{actor}); err != nil {
			return Group{}, false, fmt.Errorf("store: leave group: %w", err)
		}
		g, err := bumpAndNotify(ctx, tx, lg, actor, nil, now, compose)
		if err != nil {
			return Group{}, false, err
		}
		leaver := []string{actor}
		if err := svc.EditMembers(ctx, gid, leaver, true); err != nil {
			return Group{}, false, &ServiceError{Op: "groupeditmembers", Err: err}
		}
		if err := commitOrUndo(tx, "leave group", func() error { return svc.EditMembers(ctx, gid, leaver, false) }); err != nil {
			return Group{}, false, err
		}
		return g, false, nil
	}

	gone := lg.Group
	gone.TS = nextTS(lg.TS, now)
	gone.Members, gone.Phones = memberList{}.String(), nil
	if compose != nil {
		n := compose(gone)
		n.To = lg.Phones
		if err := enqueue(ctx, tx, n, now); err != nil {
			return Group{}, false, err
		}
	}
	if err := deleteMembers(ctx, tx, gid, lg.Phones); err != nil {
		return Group{}, false, fmt.Errorf("store: delete group: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM `groups` WHERE gid = ?", gid); err != nil {
		return Group{}, false, fmt.Errorf("store: delete group: %w", err)
	}
	if err := svc.DeleteGroup(ctx, gid); err != nil {
		return Group{}, false, &ServiceError{Op: "groupdel", Err: err}
	}
	// A deleted group cannot be brought back at the service: nothing to undo with.
	if err := tx.Commit(); err != nil {
		return Group{}, false, fmt.Errorf("store: delete group: commit after the messaging service deleted it: %w", err)
	}
	return gone, true, nil
}

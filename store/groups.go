package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Member roles (PROTOCOL.md §3).
const (
	RoleMember = 0
	RoleAdmin  = 1
	RoleOwner  = 2
)

// NotMember is the role of a phone that is not in the group.
const NotMember = -1

// Group is a row of `groups` with its member list.
type Group struct {
	GID   int64
	Name  string
	Photo string
	Type  int
	TS    int64
	// Members is "ADMINCOUNT:PHONE,..." with the owner first, then admins, then the rest.
	Members string
	// Phones are the member phones in the same order.
	Phones []string
}

// GroupsOf returns the groups phone is a member of changed after since, in ascending ts,
// at most limit, with their member lists: two queries whatever the number of groups.
func (s *Store) GroupsOf(ctx context.Context, phone string, since int64, limit int) ([]Group, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT g.gid, COALESCE(g.name, ''), COALESCE(g.photo, ''), g.type, COALESCE(g.ts, 0)
		FROM `+"`groups`"+` g JOIN members m ON m.gid = g.gid
		WHERE m.phone = ? AND g.ts > ? ORDER BY g.ts, g.gid LIMIT ?`, phone, since, limit)
	if err != nil {
		return nil, fmt.Errorf("store: groups of: %w", err)
	}
	var groups []Group
	var gids []int64
	for rows.Next() {
		var g Group
		if err := rows.Scan(&g.GID, &g.Name, &g.Photo, &g.Type, &g.TS); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: groups of: %w", err)
		}
		groups = append(groups, g)
		gids = append(gids, g.GID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: groups of: %w", err)
	}
	members, err := memberLists(ctx, s.db, gids)
	if err != nil {
		return nil, err
	}
	for i := range groups {
		groups[i].Members, groups[i].Phones = members[groups[i].GID].String(), members[groups[i].GID].phones
	}
	return groups, nil
}

// memberList is a group's members, ordered owner, admins, rest.
type memberList struct {
	admins int
	phones []string
	roles  []int // roles[i] is the role of phones[i]
}

// role is phone's role, or NotMember.
func (m memberList) role(phone string) int {
	for i, p := range m.phones {
		if p == phone {
			return m.roles[i]
		}
	}
	return NotMember
}

// String is the protocol's "ADMINCOUNT:PHONE,..." form; "0:" for no members.
func (m memberList) String() string {
	s := strconv.Itoa(m.admins) + ":"
	for i, p := range m.phones {
		if i > 0 {
			s += ","
		}
		s += p
	}
	return s
}

// memberLists reads the member lists of gids in one query.
func memberLists(ctx context.Context, q querier, gids []int64) (map[int64]memberList, error) {
	lists := map[int64]memberList{}
	err := chunks(gids, func(chunk []int64) error {
		rows, err := q.QueryContext(ctx, "SELECT gid, phone, COALESCE(role, 0) FROM members WHERE gid IN ("+placeholders(len(chunk), "?")+
			") ORDER BY gid, role DESC, phone", anys(chunk)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var gid int64
			var phone string
			var role int
			if err := rows.Scan(&gid, &phone, &role); err != nil {
				return err
			}
			l := lists[gid]
			if role > 0 {
				l.admins++
			}
			l.phones = append(l.phones, phone)
			l.roles = append(l.roles, role)
			lists[gid] = l
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: member lists: %w", err)
	}
	return lists, nil
}

// GroupFor returns group gid with its members, and the role phone has in it (NotMember
// if none). A missing group is ErrNotFound.
func (s *Store) GroupFor(ctx context.Context, gid int64, phone string) (Group, int, error) {
	return groupFor(ctx, s.db, gid, phone, "")
}

// groupFor reads a group inside q; lock is "" or " FOR UPDATE" (to serialise changes to
// one group).
func groupFor(ctx context.Context, q querier, gid int64, phone, lock string) (Group, int, error) {
	g := Group{GID: gid}
	err := q.QueryRowContext(ctx, "SELECT COALESCE(name, ''), COALESCE(photo, ''), type, COALESCE(ts, 0) FROM `groups` WHERE gid = ?"+lock, gid).
		Scan(&g.Name, &g.Photo, &g.Type, &g.TS)
	if errors.Is(err, sql.ErrNoRows) {
		return Group{}, NotMember, ErrNotFound
	}
	if err != nil {
		return Group{}, NotMember, fmt.Errorf("store: group: %w", err)
	}
	lists, err := memberLists(ctx, q, []int64{gid})
	if err != nil {
		return Group{}, NotMember, err
	}
	g.Members, g.Phones = lists[gid].String(), lists[gid].phones
	return g, lists[gid].role(phone), nil
}

// GroupChange is what a profile or upload op sets on a group; nil fields stay.
type GroupChange struct {
	Name  *string
	Photo *string
}

// ErrNotAdmin means the acting phone is neither an admin nor the owner of the group (or
// not in it at all).
var ErrNotAdmin = errors.New("not a group admin")

// UpdateGroupInfo applies change to group gid if actor is an admin or its owner, bumps
// its ts and queues compose's notification to the members, in one transaction with the
// group row locked. A missing group is ErrNotFound; a plain member or stranger ErrNotAdmin.
func (s *Store) UpdateGroupInfo(ctx context.Context, gid int64, actor string, change GroupChange, now time.Time,
	compose func(Group) Notification) (Group, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Group{}, fmt.Errorf("store: update group: %w", err)
	}
	defer tx.Rollback()
	current, role, err := groupFor(ctx, tx, gid, actor, " FOR UPDATE")
	if err != nil {
		return Group{}, err
	}
	if role < RoleAdmin {
		return Group{}, ErrNotAdmin
	}
	if _, err := tx.ExecContext(ctx, "UPDATE `groups` SET name = COALESCE(?, name), photo = COALESCE(?, photo), ts = ? WHERE gid = ?",
		change.Name, change.Photo, nextTS(current.TS, now), gid); err != nil {
		return Group{}, fmt.Errorf("store: update group: %w", err)
	}
	g, _, err := groupFor(ctx, tx, gid, actor, "")
	if err != nil {
		return Group{}, err
	}
	if compose != nil {
		if err := enqueue(ctx, tx, compose(g), now); err != nil {
			return Group{}, err
		}
	}
	if err := tx.Commit(); err != nil {
		return Group{}, fmt.Errorf("store: update group: %w", err)
	}
	return g, nil
}

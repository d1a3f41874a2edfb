package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
	// Roles maps each member phone to its role. Only a read of the one group fills it
	// (Store.Group, GroupLock), not the records of a sync.
	Roles map[string]int
}

// Role is phone's role in g, NotMember if none. g must come from a read that fills Roles.
func (g Group) Role(phone string) int {
	if r, ok := g.Roles[phone]; ok {
		return r
	}
	return NotMember
}

// memberList is a group's members.
type memberList struct {
	admins  int
	members []member
}

// member is one phone of a group and its role.
type member struct {
	phone string
	role  int
}

func (m *memberList) add(phone string, role int) {
	if role > 0 {
		m.admins++
	}
	m.members = append(m.members, member{phone, role})
}

// sort puts the owner first, then the admins, then the rest, each by number. Sorting
// here rather than in SQL spares MariaDB a temporary table per query.
func (m *memberList) sort() {
	slices.SortFunc(m.members, func(a, b member) int {
		return cmp.Or(cmp.Compare(b.role, a.role), comparePhones(a.phone, b.phone))
	})
}

// phones are the member phones in order.
func (m memberList) phones() []string {
	out := make([]string, len(m.members))
	for i, x := range m.members {
		out[i] = x.phone
	}
	return out
}

// String is the protocol's "ADMINCOUNT:PHONE,..." form; "0:" for no members.
func (m memberList) String() string {
	return strconv.Itoa(m.admins) + ":" + strings.Join(m.phones(), ",")
}

// Group returns group gid with its members and their roles. A missing group is
// ErrNotFound.
func (s *Store) Group(ctx context.Context, gid int64) (Group, error) {
	return groupFor(ctx, s.fixed, gid)
}

// groupFor reads a group and its members inside q, in one query.
func groupFor(ctx context.Context, q querier, gid int64) (Group, error) {
	rows, err := q.QueryContext(ctx, "SELECT COALESCE(g.name, ''), COALESCE(g.photo, ''), g.type, COALESCE(g.ts, 0), m.phone, COALESCE(m.role, 0)"+
		" FROM `groups` g LEFT JOIN members m ON m.gid = g.gid WHERE g.gid = ?", gid)
	if err != nil {
		return Group{}, fmt.Errorf("store: group: %w", err)
	}
	defer rows.Close()
	g := Group{GID: gid}
	var list memberList
	found := false
	for rows.Next() {
		var phone sql.NullString // NULL: a group without members
		var role int
		if err := rows.Scan(&g.Name, &g.Photo, &g.Type, &g.TS, &phone, &role); err != nil {
			return Group{}, fmt.Errorf("store: group: %w", err)
		}
		found = true
		if phone.Valid {
			list.add(phone.String, role)
		}
	}
	if err := rows.Err(); err != nil {
		return Group{}, fmt.Errorf("store: group: %w", err)
	}
	if !found {
		return Group{}, ErrNotFound
	}
	list.sort()
	g.Members, g.Phones = list.String(), list.phones()
	g.Roles = make(map[string]int, len(list.members))
	for _, m := range list.members {
		g.Roles[m.phone] = m.role
	}
	return g, nil
}

package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/store"
)

// fakeGroups is the messaging service for the store's group changes: it keeps groups in
// memory, records every call and fails on demand.
type fakeGroups struct {
	mu      sync.Mutex
	nextGID int64
	groups  map[int64][]string
	calls   []string
	fail    map[string]error // by op: "create", "set", "edit", "delete"
	// forceGID, when set, is the gid CreateGroup answers.
	forceGID int64
}

func newFakeGroups() *fakeGroups {
	return &fakeGroups{nextGID: 7001, groups: map[int64][]string{}, fail: map[string]error{}}
}

var errRefused = errors.New("refused by the fake")

func (f *fakeGroups) record(op string, args ...any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op+fmt.Sprint(args...))
	return f.fail[op]
}

func (f *fakeGroups) callCount(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeGroups) members(gid int64) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := slices.Clone(f.groups[gid])
	slices.Sort(m)
	return m
}

func (f *fakeGroups) CreateGroup(_ context.Context, name string, members []string) (int64, error) {
	if err := f.record("create", name, members); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	gid := f.forceGID
	if gid == 0 {
		gid = f.nextGID
		f.nextGID++
	}
	f.groups[gid] = slices.Clone(members)
	return gid, nil
}

func (f *fakeGroups) SetGroup(_ context.Context, gid int64, name string, members []string) error {
	if err := f.record("set", gid, name, members); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.groups[gid] = slices.Clone(members)
	return nil
}

func (f *fakeGroups) EditMembers(_ context.Context, gid int64, members []string, remove bool) error {
	if err := f.record("edit", gid, members, remove); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.groups[gid]
	if remove {
		g = slices.DeleteFunc(g, func(p string) bool { return slices.Contains(members, p) })
	} else {
		for _, p := range members {
			if !slices.Contains(g, p) {
				g = append(g, p)
			}
		}
	}
	f.groups[gid] = g
	return nil
}

func (f *fakeGroups) DeleteGroup(_ context.Context, gid int64) error {
	if err := f.record("delete", gid); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.groups, gid)
	return nil
}

// Phones of the test users.
const (
	owner   = "919800000001"
	adminB  = "919800000002"
	memberC = "919800000003"
	memberD = "919800000004"
	memberE = "919800000005"
	nobody  = "919800000099"
)

var groupNow = time.Unix(1_700_000_000, 0)

// compose is the notification the handlers would build, reduced to what the tests check.
func compose(subject string) func(store.Group) store.Notification {
	return func(g store.Group) store.Notification {
		return store.Notification{From: "ignored", To: g.Phones, Body: []byte(subject + "|" + g.Members)}
	}
}

// composeFrom is compose with the acting phone as sender.
func composeFrom(actor, subject string) func(store.Group) store.Notification {
	return func(g store.Group) store.Notification {
		n := compose(subject)(g)
		n.From = actor
		return n
	}
}

type outboxRow struct {
	from, to, body string
}

func outboxRows(t *testing.T, db *sql.DB) []outboxRow {
	t.Helper()
	rows, err := db.QueryContext(ctxT(t), "SELECT from_addr, to_addrs, body FROM messenger_outbox ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.from, &r.to, &r.body); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// roles returns phone → role of group gid.
func roles(t *testing.T, db *sql.DB, gid int64) map[string]int {
	t.Helper()
	rows, err := db.QueryContext(ctxT(t), "SELECT phone, role FROM members WHERE gid = ?", gid)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var p string
		var r int
		if err := rows.Scan(&p, &r); err != nil {
			t.Fatal(err)
		}
		out[p] = r
	}
	return out
}

// snapshot renders the group tables and the outbox, for before/after comparisons.
func snapshot(t *testing.T, db *sql.DB) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		"SELECT CONCAT_WS('|', gid, HEX(name), status, photo, flag, type, ts) FROM `groups` ORDER BY gid",
		"SELECT CONCAT_WS('|', gid, phone, role) FROM members ORDER BY gid, phone",
		"SELECT CONCAT_WS('|', id, from_addr, to_addrs, HEX(body)) FROM messenger_outbox ORDER BY id",
	} {
		rows, err := db.QueryContext(ctxT(t), q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			b.WriteString(s + "\n")
		}
		rows.Close()
		b.WriteString("--\n")
	}
	return b.String()
}

// newGroup creates the standard test group: owner, admin B, members C and D.
func newGroup(t *testing.T, s *store.Store, svc *fakeGroups) store.Group {
	t.Helper()
	ctx := ctxT(t)
	g, err := s.CreateGroup(ctx, owner, store.GroupSetup{Name: "Team", Members: []string{adminB, memberC, memberD}}, groupNow, svc, nil)
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	if _, err := s.SetAdmin(ctx, g.GID, owner, []string{adminB}, true, groupNow, nil); err != nil {
		t.Fatalf("SetAdmin: %v", err)
	}
	g, _, err = s.GroupFor(ctx, g.GID, owner)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestCreateGroup(t *testing.T) {
	s, db := readyStore(t)
	svc := newFakeGroups()
	typ, photo := 3, "1700000000-0123456789abcdef.png"
	g, err := s.CreateGroup(ctxT(t), owner, store.GroupSetup{Name: "Friends 😀", Type: &typ, Photo: &photo,
		Members: []string{memberD, memberC, owner, memberC}}, groupNow, svc, composeFrom(owner, "added"))
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	if g.GID != 7001 || g.Name != "Friends 😀" || g.Photo != photo || g.Type != 3 || g.TS != groupNow.Unix() {
		t.Errorf("group = %+v", g)
	}
	// Owner first, then the rest by phone; the admin count counts the owner.
	if want := "1:" + owner + "," + memberC + "," + memberD; g.Members != want {
		t.Errorf("members = %q, want %q", g.Members, want)
	}
	if got := roles(t, db, g.GID); len(got) != 3 || got[owner] != store.RoleOwner || got[memberC] != 0 || got[memberD] != 0 {
		t.Errorf("roles = %v", got)
	}
	// The service got the creator and the members, each once.
	if got := svc.members(g.GID); strings.Join(got, ",") != owner+","+memberC+","+memberD {
		t.Errorf("service members = %v", got)
	}
	var name []byte
	var ts, gtype int64
	if err := db.QueryRow("SELECT name, type, ts FROM `groups` WHERE gid = ?", g.GID).Scan(&name, &gtype, &ts); err != nil {
		t.Fatal(err)
	}
	if string(name) != "Friends 😀" || gtype != 3 || ts != groupNow.Unix() {
		t.Errorf("groups row = (%q, %d, %d)", name, gtype, ts)
	}
	// The members are told; the creator is not.
	out := outboxRows(t, db)
	if len(out) != 1 || out[0].from != owner || out[0].to != memberC+","+memberD || out[0].body != "added|"+g.Members {
		t.Errorf("outbox = %+v", out)
	}
}

func TestGroupRoleRules(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	svc := newFakeGroups()
	g := newGroup(t, s, svc)
	if want := "2:" + owner + "," + adminB + "," + memberC + "," + memberD; g.Members != want {
		t.Fatalf("members = %q, want %q", g.Members, want)
	}
	gid := g.GID
	before := snapshot(t, db)

	// A plain member and a stranger change nothing.
	for _, actor := range []string{memberC, nobody} {
		if _, err := s.EditMembers(ctx, gid, actor, []string{memberE}, false, groupNow, svc, nil); !errors.Is(err, store.ErrNotAdmin) {
			t.Errorf("EditMembers by %s: %v, want ErrNotAdmin", actor, err)
		}
		if _, err := s.EditMembers(ctx, gid, actor, []string{memberD}, true, groupNow, svc, nil); !errors.Is(err, store.ErrNotAdmin) {
			t.Errorf("EditMembers remove by %s: %v, want ErrNotAdmin", actor, err)
		}
		if _, err := s.SetAdmin(ctx, gid, actor, []string{actor}, true, groupNow, nil); !errors.Is(err, store.ErrNotAdmin) {
			t.Errorf("SetAdmin by %s: %v, want ErrNotAdmin", actor, err)
		}
		if _, err := s.ChangeGroup(ctx, gid, actor, store.GroupSetup{Name: "mine"}, groupNow, svc, nil); !errors.Is(err, store.ErrNotAdmin) {
			t.Errorf("ChangeGroup by %s: %v, want ErrNotAdmin", actor, err)
		}
	}
	if _, _, err := s.DeleteOrLeave(ctx, gid, nobody, groupNow, svc, nil); !errors.Is(err, store.ErrNotGroupMember) {
		t.Errorf("DeleteOrLeave by a stranger: %v, want ErrNotGroupMember", err)
	}
	// A missing group.
	if _, err := s.EditMembers(ctx, 999, owner, []string{memberE}, false, groupNow, svc, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("EditMembers of a missing group: %v", err)
	}
	if _, err := s.SetAdmin(ctx, 999, owner, []string{memberC}, true, groupNow, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetAdmin of a missing group: %v", err)
	}
	if _, err := s.ChangeGroup(ctx, 999, owner, store.GroupSetup{}, groupNow, svc, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ChangeGroup of a missing group: %v", err)
	}
	if _, _, err := s.DeleteOrLeave(ctx, 999, owner, groupNow, svc, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteOrLeave of a missing group: %v", err)
	}

	// The admin can neither remove nor demote the owner: a no-op, nothing written.
	calls := svc.callCount("")
	if g2, err := s.EditMembers(ctx, gid, adminB, []string{owner}, true, groupNow, svc, compose("")); err != nil || g2.Members != g.Members {
		t.Errorf("admin removing the owner = %q, %v; want no change", g2.Members, err)
	}
	if g2, err := s.SetAdmin(ctx, gid, adminB, []string{owner}, false, groupNow, compose("")); err != nil || g2.Members != g.Members {
		t.Errorf("admin demoting the owner = %q, %v; want no change", g2.Members, err)
	}
	// Nor can the owner itself through these ops.
	if _, err := s.SetAdmin(ctx, gid, owner, []string{owner}, false, groupNow, nil); err != nil {
		t.Error(err)
	}
	if after := snapshot(t, db); after != before {
		t.Errorf("refused or no-op changes wrote rows:\nbefore %s\nafter %s", before, after)
	}
	if svc.callCount("") != calls {
		t.Errorf("a no-op called the service")
	}

	// The admin adds E and makes C an admin; the owner stays first, admins next.
	g2, err := s.EditMembers(ctx, gid, adminB, []string{memberE, memberC}, false, groupNow, svc, compose("added"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "2:" + owner + "," + adminB + "," + memberC + "," + memberD + "," + memberE; g2.Members != want {
		t.Errorf("after adding E: %q, want %q", g2.Members, want)
	}
	if c := svc.calls[len(svc.calls)-1]; c != fmt.Sprint("edit", gid, []string{memberE}, false) {
		t.Errorf("service call %q: only the new member is sent", c)
	}
	g3, err := s.SetAdmin(ctx, gid, adminB, []string{memberC, owner, nobody}, true, groupNow, compose(""))
	if err != nil {
		t.Fatal(err)
	}
	if want := "3:" + owner + "," + adminB + "," + memberC + "," + memberD + "," + memberE; g3.Members != want {
		t.Errorf("after promoting C: %q, want %q", g3.Members, want)
	}
	if r := roles(t, db, gid); r[owner] != 2 || r[adminB] != 1 || r[memberC] != 1 || r[memberD] != 0 || r[memberE] != 0 || len(r) != 5 {
		t.Errorf("roles = %v (a non-member must not be added by setadmin)", r)
	}
	// Every change bumps ts, even within one second.
	if !(g.TS < g2.TS && g2.TS < g3.TS) {
		t.Errorf("ts %d, %d, %d: not increasing", g.TS, g2.TS, g3.TS)
	}

	// Admin C revokes admin B; B can then no longer change the group.
	if _, err := s.SetAdmin(ctx, gid, memberC, []string{adminB}, false, groupNow, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EditMembers(ctx, gid, adminB, []string{nobody}, false, groupNow, svc, nil); !errors.Is(err, store.ErrNotAdmin) {
		t.Errorf("demoted admin: %v, want ErrNotAdmin", err)
	}

	// C removes D and E (and, silently, the owner): the removed are told too.
	db.Exec("DELETE FROM messenger_outbox")
	g4, err := s.EditMembers(ctx, gid, memberC, []string{memberD, owner, memberE}, true, groupNow, svc, composeFrom(memberC, "rm"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "2:" + owner + "," + memberC + "," + adminB; g4.Members != want {
		t.Errorf("after removing D, E: %q, want %q", g4.Members, want)
	}
	out := outboxRows(t, db)
	if len(out) != 1 || out[0].to != owner+","+adminB+","+memberD+","+memberE {
		t.Errorf("outbox after removal = %+v; want the members and the removed, not the actor", out)
	}
	if got := svc.members(gid); strings.Join(got, ",") != owner+","+adminB+","+memberC {
		t.Errorf("service members %v", got)
	}

	// B leaves; then the owner deletes the group.
	db.Exec("DELETE FROM messenger_outbox")
	g5, deleted, err := s.DeleteOrLeave(ctx, gid, adminB, groupNow, svc, composeFrom(adminB, "left"))
	if err != nil || deleted {
		t.Fatalf("leave: deleted %v, %v", deleted, err)
	}
	if want := "2:" + owner + "," + memberC; g5.Members != want {
		t.Errorf("after B left: %q", g5.Members)
	}
	if got := svc.members(gid); strings.Join(got, ",") != owner+","+memberC {
		t.Errorf("service members after leave %v", got)
	}
	if out := outboxRows(t, db); len(out) != 1 || out[0].to != owner+","+memberC {
		t.Errorf("outbox after leave %+v", out)
	}
	// The owner can't leave, only delete.
	db.Exec("DELETE FROM messenger_outbox")
	gone, deleted, err := s.DeleteOrLeave(ctx, gid, owner, groupNow, svc, composeFrom(owner, "gone"))
	if err != nil || !deleted {
		t.Fatalf("delete: deleted %v, %v", deleted, err)
	}
	if gone.Members != "0:" || gone.Name != "Team" {
		t.Errorf("deleted group notified as %+v", gone)
	}
	if n := count(t, db, "SELECT (SELECT COUNT(*) FROM `groups`) + (SELECT COUNT(*) FROM members)"); n != 0 {
		t.Errorf("%d rows left after delete", n)
	}
	if out := outboxRows(t, db); len(out) != 1 || out[0].to != memberC || out[0].body != "gone|0:" {
		t.Errorf("outbox after delete %+v", out)
	}
	if _, ok := svc.groups[gid]; ok {
		t.Errorf("the service still has the group")
	}
}

func TestChangeGroupKeepsRoles(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	svc := newFakeGroups()
	g := newGroup(t, s, svc)
	if _, err := s.EditMembers(ctx, g.GID, owner, []string{memberE}, false, groupNow, svc, nil); err != nil {
		t.Fatal(err)
	}
	// Admin B re-sets the group with C and a new member 9198..06, leaving out D and E;
	// the name is empty (kept), the type and photo change.
	const memberF = "919800000006"
	typ, photo := 2, "new.jpg"
	g2, err := s.ChangeGroup(ctx, g.GID, adminB, store.GroupSetup{Type: &typ, Photo: &photo, Members: []string{memberC, memberF}},
		groupNow, svc, composeFrom(adminB, "added"))
	if err != nil {
		t.Fatalf("ChangeGroup: %v", err)
	}
	if g2.Name != "Team" || g2.Type != 2 || g2.Photo != "new.jpg" || g2.TS <= g.TS {
		t.Errorf("changed group %+v", g2)
	}
	r := roles(t, db, g.GID)
	if len(r) != 4 || r[owner] != 2 || r[adminB] != 1 || r[memberC] != 0 || r[memberF] != 0 {
		t.Errorf("roles after setgroup %v: the owner must stay, the admin keep its role", r)
	}
	if want := "2:" + owner + "," + adminB + "," + memberC + "," + memberF; g2.Members != want {
		t.Errorf("members %q, want %q", g2.Members, want)
	}
	if got := svc.members(g.GID); strings.Join(got, ",") != strings.Join([]string{owner, adminB, memberC, memberF}, ",") {
		t.Errorf("service members %v", got)
	}
	out := outboxRows(t, db)
	last := out[len(out)-1]
	if last.to != owner+","+memberC+","+memberF+","+memberD+","+memberE {
		t.Errorf("notified %q: want the members and the removed D and E", last.to)
	}

	// Promote C; a setgroup naming C again keeps C an admin. KeepMembers leaves the list.
	if _, err := s.SetAdmin(ctx, g.GID, owner, []string{memberC}, true, groupNow, nil); err != nil {
		t.Fatal(err)
	}
	g3, err := s.ChangeGroup(ctx, g.GID, owner, store.GroupSetup{Name: "Renamed", KeepMembers: true}, groupNow, svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g3.Name != "Renamed" || g3.Type != 2 || g3.Photo != "new.jpg" {
		t.Errorf("after rename: %+v (type and photo must stay)", g3)
	}
	if r := roles(t, db, g.GID); len(r) != 4 || r[memberC] != 1 || r[adminB] != 1 || r[owner] != 2 {
		t.Errorf("roles after KeepMembers setgroup %v", r)
	}
}

func TestGroupServiceFailureChangesNothing(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	svc := newFakeGroups()
	g := newGroup(t, s, svc)
	gid := g.GID
	before := snapshot(t, db)
	svcBefore := svc.members(gid)

	for _, tc := range []struct {
		fail string // the service op that fails
		name string
		run  func() error
	}{
		{"set", "setgroup", func() error {
			_, err := s.ChangeGroup(ctx, gid, owner, store.GroupSetup{Name: "X", Members: []string{memberE}}, groupNow, svc, compose("x"))
			return err
		}},
		{"edit", "add", func() error {
			_, err := s.EditMembers(ctx, gid, adminB, []string{memberE}, false, groupNow, svc, compose("x"))
			return err
		}},
		{"edit", "remove", func() error {
			_, err := s.EditMembers(ctx, gid, adminB, []string{memberD}, true, groupNow, svc, compose("x"))
			return err
		}},
		{"edit", "leave", func() error {
			_, _, err := s.DeleteOrLeave(ctx, gid, memberC, groupNow, svc, compose("x"))
			return err
		}},
		{"delete", "delete", func() error {
			_, _, err := s.DeleteOrLeave(ctx, gid, owner, groupNow, svc, compose("x"))
			return err
		}},
	} {
		svc.fail = map[string]error{tc.fail: errRefused}
		err := tc.run()
		svc.fail = map[string]error{}
		var se *store.ServiceError
		if !errors.As(err, &se) || !errors.Is(err, errRefused) {
			t.Errorf("%s with the service failing: error %v, want a ServiceError", tc.name, err)
		}
		if after := snapshot(t, db); after != before {
			t.Fatalf("%s with the service failing changed rows:\nbefore %s\nafter %s", tc.name, before, after)
		}
	}
	if got := svc.members(gid); !slices.Equal(got, svcBefore) {
		t.Errorf("service members %v, want %v", got, svcBefore)
	}

	// A refused create stores nothing.
	svc.fail = map[string]error{"create": errRefused}
	if _, err := s.CreateGroup(ctx, owner, store.GroupSetup{Name: "Y", Members: []string{memberC}}, groupNow, svc, compose("x")); !errors.Is(err, errRefused) {
		t.Errorf("refused create: %v", err)
	}
	svc.fail = map[string]error{}
	if after := snapshot(t, db); after != before {
		t.Fatalf("refused create changed rows:\nbefore %s\nafter %s", before, after)
	}

	// The service hands out a gid that exists here already: the local insert fails and
	// the group is deleted at the service again.
	svc.forceGID = gid
	deletes := svc.callCount("delete")
	_, err := s.CreateGroup(ctx, nobody, store.GroupSetup{Name: "Z"}, groupNow, svc, compose("x"))
	var se *store.ServiceError
	if err == nil || errors.As(err, &se) {
		t.Errorf("create over an existing gid: %v, want a local error", err)
	}
	if svc.callCount("delete") != deletes+1 {
		t.Errorf("the group created at the service was not deleted again")
	}
	if after := snapshot(t, db); after != before {
		t.Fatalf("failed create changed rows:\nbefore %s\nafter %s", before, after)
	}
}

func TestGroupInjectionPayloads(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	svc := newFakeGroups()
	names := []string{
		"x'); DROP TABLE members; --",
		"Robert'); DELETE FROM `groups`; --",
		`\'; UPDATE members SET role = 2; -- \`,
		"nul\x00byte `tick` \"quote\"",
	}
	var gids []int64
	for _, name := range names {
		g, err := s.CreateGroup(ctx, owner, store.GroupSetup{Name: name, Members: []string{memberC}}, groupNow, svc, compose(name))
		if err != nil {
			t.Fatalf("CreateGroup(%q): %v", name, err)
		}
		if g.Name != name {
			t.Errorf("name %q came back as %q", name, g.Name)
		}
		gids = append(gids, g.GID)
	}
	// Renaming with a payload too.
	if _, err := s.ChangeGroup(ctx, gids[0], owner, store.GroupSetup{Name: names[1] + "2", KeepMembers: true}, groupNow, svc, nil); err != nil {
		t.Fatal(err)
	}
	for i, gid := range gids {
		want := names[i]
		if i == 0 {
			want = names[1] + "2"
		}
		var raw []byte
		if err := db.QueryRow("SELECT name FROM `groups` WHERE gid = ?", gid).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if string(raw) != want {
			t.Errorf("stored name %q, want %q", raw, want)
		}
		if r := roles(t, db, gid); len(r) != 2 || r[owner] != 2 || r[memberC] != 0 {
			t.Errorf("roles of group %d = %v", gid, r)
		}
	}

	// Member lists with payloads are refused before anything happens.
	before := snapshot(t, db)
	calls := svc.callCount("")
	for _, bad := range [][]string{
		{memberC, "1) OR 1=1 --"},
		{"919800000007'); DROP TABLE members; --"},
		{"1,2"}, {""}, {"0919800000007"}, {"-919800000007"}, {"9198000000071234567"},
	} {
		if _, err := s.CreateGroup(ctx, owner, store.GroupSetup{Name: "x", Members: bad}, groupNow, svc, nil); !errors.Is(err, store.ErrBadPhone) {
			t.Errorf("CreateGroup members %q: %v, want ErrBadPhone", bad, err)
		}
		if _, err := s.EditMembers(ctx, gids[0], owner, bad, false, groupNow, svc, nil); !errors.Is(err, store.ErrBadPhone) {
			t.Errorf("EditMembers %q: %v, want ErrBadPhone", bad, err)
		}
		if _, err := s.EditMembers(ctx, gids[0], owner, bad, true, groupNow, svc, nil); !errors.Is(err, store.ErrBadPhone) {
			t.Errorf("EditMembers remove %q: %v, want ErrBadPhone", bad, err)
		}
		if _, err := s.SetAdmin(ctx, gids[0], owner, bad, true, groupNow, nil); !errors.Is(err, store.ErrBadPhone) {
			t.Errorf("SetAdmin %q: %v, want ErrBadPhone", bad, err)
		}
		if _, err := s.ChangeGroup(ctx, gids[0], owner, store.GroupSetup{Members: bad}, groupNow, svc, nil); !errors.Is(err, store.ErrBadPhone) {
			t.Errorf("ChangeGroup %q: %v, want ErrBadPhone", bad, err)
		}
	}
	if after := snapshot(t, db); after != before {
		t.Errorf("refused member lists changed rows")
	}
	if svc.callCount("") != calls {
		t.Errorf("refused member lists reached the service")
	}
	if got := tables(t, db); strings.Join(got, ",") != strings.Join(wantTables, ",") {
		t.Errorf("tables after injection payloads = %v", got)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM `groups`"); n != len(names) {
		t.Errorf("groups rows %d, want %d", n, len(names))
	}
}

// TestParallelEditMembers: two admins each add 20 members, one request per member, all
// at once. The group row lock serialises them: the member list is the union, every change
// has its notification, and the service saw every member.
func TestParallelEditMembers(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	svc := newFakeGroups()
	g := newGroup(t, s, svc)
	db.Exec("DELETE FROM messenger_outbox")
	const perAdmin = 20
	want := slices.Clone(g.Phones)
	var wg sync.WaitGroup
	errs := make(chan error, 2*perAdmin)
	for a, actor := range []string{owner, adminB} {
		for i := 0; i < perAdmin; i++ {
			p := fmt.Sprintf("91990%d%06d", a, i)
			want = append(want, p)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.EditMembers(ctx, g.GID, actor, []string{p}, false, groupNow, svc, composeFrom(actor, "added"))
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("EditMembers: %v", err)
		}
	}
	slices.Sort(want)
	got := make([]string, 0, len(want))
	for p := range roles(t, db, g.GID) {
		got = append(got, p)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("members after parallel adds: %d %v\nwant %d %v", len(got), got, len(want), want)
	}
	if svcGot := svc.members(g.GID); !slices.Equal(svcGot, want) {
		t.Errorf("service members: %d, want %d", len(svcGot), len(want))
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); n != 2*perAdmin {
		t.Errorf("outbox rows %d, want %d", n, 2*perAdmin)
	}
	// Each change bumped ts past the previous one.
	if n := count(t, db, "SELECT ts FROM `groups` WHERE gid = ?", g.GID); int64(n) < g.TS+2*perAdmin {
		t.Errorf("ts %d after %d changes from %d", n, 2*perAdmin, g.TS)
	}
	// The last notification lists everyone.
	var body string
	if err := db.QueryRow("SELECT body FROM messenger_outbox ORDER BY id DESC LIMIT 1").Scan(&body); err != nil {
		t.Fatal(err)
	}
	if strings.Count(body, ",") != len(want)-1 {
		t.Errorf("last notification %q does not list all %d members", body, len(want))
	}
}

// TestGroupServiceCalledUnderLock: a change waits for the one before it, including its
// service call, so the service sees the changes of one group one at a time.
func TestGroupServiceCalledUnderLock(t *testing.T) {
	s, _ := readyStore(t)
	ctx := ctxT(t)
	svc := newFakeGroups()
	g := newGroup(t, s, svc)
	slow := &slowGroups{fakeGroups: svc, delay: 200 * time.Millisecond}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.EditMembers(ctx, g.GID, owner, []string{fmt.Sprintf("9199100000%02d", i)}, false, groupNow, slow, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if slow.maxInFlight != 1 {
		t.Errorf("%d service calls for one group ran at once, want 1", slow.maxInFlight)
	}
}

type slowGroups struct {
	*fakeGroups
	delay                 time.Duration
	mu                    sync.Mutex
	inFlight, maxInFlight int
}

func (s *slowGroups) EditMembers(ctx context.Context, gid int64, members []string, remove bool) error {
	s.mu.Lock()
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.mu.Unlock()
	time.Sleep(s.delay)
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
	return s.fakeGroups.EditMembers(ctx, gid, members, remove)
}

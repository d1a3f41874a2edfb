package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/store"
)

// Phones of the group tests: the owner, and B to E.
const owner, adminB, memberC, memberD, memberE = "919800000001", "919800000002", "919800000003", "919800000004", "919800000005"

var groupNow = time.Unix(1_700_000_000, 0)

// notice is a notification from "100" to the group's members, naming subject and the
// members string.
func notice(subject string) func(store.Group) store.Notification {
	return func(g store.Group) store.Notification {
		return store.Notification{From: "100", To: g.Phones, Body: []byte(subject + "|" + g.Members)}
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

// groupRows renders the group tables, for before/after comparisons.
func groupRows(t *testing.T, db *sql.DB) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		"SELECT CONCAT_WS('|', gid, HEX(name), status, photo, flag, type, ts) FROM `groups` ORDER BY gid",
		"SELECT CONCAT_WS('|', gid, phone, role) FROM members ORDER BY gid, phone",
		"SELECT COUNT(*) FROM messenger_outbox",
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

// expectRows fails the test if the group tables are no longer as before.
func expectRows(t *testing.T, db *sql.DB, before, what string) {
	t.Helper()
	if after := groupRows(t, db); after != before {
		t.Errorf("%s changed rows:\n%s\nwas\n%s", what, after, before)
	}
}

// insertTeam stores group 7001: the owner, members C and D.
func insertTeam(t *testing.T, s *store.Store) store.Group {
	t.Helper()
	g, err := s.InsertGroup(ctxT(t), store.NewGroup{GID: 7001, Name: "Team", Owner: owner, Members: []string{memberD, memberC}}, groupNow, nil)
	if err != nil {
		t.Fatalf("InsertGroup: %v", err)
	}
	return g
}

// lockGroup locks gid for the rest of the test, or until released.
func lockGroup(t *testing.T, s *store.Store, gid int64) *store.GroupLock {
	t.Helper()
	lock, err := s.LockGroup(ctxT(t), gid)
	if err != nil {
		t.Fatalf("LockGroup: %v", err)
	}
	return lock
}

func TestInsertGroup(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	// Member rows of a group that no longer exists do not join a new group of its gid.
	if _, err := db.Exec("INSERT INTO members (gid, phone, role) VALUES (7001, 919800000099, 2)"); err != nil {
		t.Fatal(err)
	}
	g, err := s.InsertGroup(ctx, store.NewGroup{GID: 7001, Name: "Friends 😀", Photo: "p.png", Type: 3, Owner: owner,
		Members: []string{memberD, memberC}}, groupNow, notice("added"))
	if err != nil {
		t.Fatalf("InsertGroup: %v", err)
	}
	// Owner first, then the rest by phone; the admin count counts the owner.
	want := "1:" + owner + "," + memberC + "," + memberD
	if g.GID != 7001 || g.Name != "Friends 😀" || g.Photo != "p.png" || g.Type != 3 || g.TS != groupNow.Unix() || g.Members != want {
		t.Errorf("group = %+v, want members %q", g, want)
	}
	if g.Role(owner) != store.RoleOwner || g.Role(memberC) != store.RoleMember || g.Role(memberE) != store.NotMember {
		t.Errorf("roles %v", g.Roles)
	}
	if r := testenv.MemberRoles(t, db, 7001); len(r) != 3 || r[owner] != store.RoleOwner || r[memberC] != 0 || r[memberD] != 0 {
		t.Errorf("rows %v", r)
	}
	if out := outboxRows(t, db); len(out) != 1 || out[0].to != strings.Join(g.Phones, ",") || out[0].body != "added|"+want {
		t.Errorf("outbox %+v", out)
	}
	read, err := s.Group(ctx, 7001)
	if err != nil || read.Members != g.Members || read.Role(owner) != store.RoleOwner {
		t.Errorf("Group = %+v, %v", read, err)
	}
	if _, err := s.Group(ctx, 7002); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Group of a missing gid: %v", err)
	}

	// A second group of the gid is refused, and changes nothing.
	before := groupRows(t, db)
	if _, err := s.InsertGroup(ctx, store.NewGroup{GID: 7001, Name: "Other", Owner: memberE}, groupNow, notice("x")); err == nil {
		t.Error("a second group 7001 was stored")
	}
	expectRows(t, db, before, "a refused insert")
}

func TestGroupLockEdit(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	g := insertTeam(t, s)
	lock := lockGroup(t, s, g.GID)
	defer lock.Release()

	read, err := lock.Group(ctx)
	if err != nil || read.Members != g.Members {
		t.Fatalf("locked read %+v, %v", read, err)
	}
	g2, err := lock.Edit(ctx, store.GroupEdit{Add: []string{memberE, adminB}, Remove: []string{memberD}}, groupNow, notice("edit"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "1:" + owner + "," + adminB + "," + memberC + "," + memberE; g2.Members != want || g2.Name != "Team" {
		t.Errorf("after edit %+v, want members %q", g2, want)
	}
	g3, err := lock.Edit(ctx, store.GroupEdit{SetRole: []string{adminB}, Role: store.RoleAdmin}, groupNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "2:" + owner + "," + adminB + "," + memberC + "," + memberE; g3.Members != want {
		t.Errorf("after promoting B %q, want %q", g3.Members, want)
	}
	name, typ := "Renamed", 2
	g4, err := lock.Edit(ctx, store.GroupEdit{GroupChange: store.GroupChange{Name: &name, Type: &typ}}, groupNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	photo := "new.jpg"
	g5, err := lock.Edit(ctx, store.GroupEdit{GroupChange: store.GroupChange{Photo: &photo}}, groupNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g5.Name != "Renamed" || g5.Type != 2 || g5.Photo != "new.jpg" {
		t.Errorf("unset fields did not stay: %+v", g5)
	}
	// Every change bumps ts, even within one second.
	if !(g.TS < g2.TS && g2.TS < g3.TS && g3.TS < g4.TS && g4.TS < g5.TS) {
		t.Errorf("ts %d, %d, %d, %d, %d: not increasing", g.TS, g2.TS, g3.TS, g4.TS, g5.TS)
	}
	if r := testenv.MemberRoles(t, db, g.GID); len(r) != 4 || r[adminB] != store.RoleAdmin || r[memberE] != 0 {
		t.Errorf("rows %v", r)
	}
	if out := outboxRows(t, db); len(out) != 1 || out[0].body != "edit|"+g2.Members {
		t.Errorf("outbox %+v", out)
	}

	// Delete: the rows go, and the notification names the group as it goes.
	db.Exec("DELETE FROM messenger_outbox")
	last, err := lock.Delete(ctx, groupNow, func(last store.Group) store.Notification {
		return store.Notification{From: "100", To: g5.Phones, Body: []byte("gone|" + last.Members)}
	})
	if err != nil {
		t.Fatal(err)
	}
	if last.Members != "0:" || len(last.Phones) != 0 || last.Name != "Renamed" || last.TS <= g5.TS {
		t.Errorf("last state %+v", last)
	}
	if n := count(t, db, "SELECT (SELECT COUNT(*) FROM `groups`) + (SELECT COUNT(*) FROM members)"); n != 0 {
		t.Errorf("%d rows left after delete", n)
	}
	if out := outboxRows(t, db); len(out) != 1 || out[0].body != "gone|0:" || out[0].to != strings.Join(g5.Phones, ",") {
		t.Errorf("outbox after delete %+v", out)
	}
	if _, err := lock.Edit(ctx, store.GroupEdit{Add: []string{memberD}}, groupNow, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Edit of a deleted group: %v", err)
	}
	if _, err := lock.Group(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Group of a deleted group: %v", err)
	}
}

// TestGroupLockEditFailsWhole: an edit that fails half-way (a member added that another
// writer added meanwhile) writes nothing.
func TestGroupLockEditFailsWhole(t *testing.T) {
	s, db := readyStore(t)
	g := insertTeam(t, s)
	before := groupRows(t, db)
	lock := lockGroup(t, s, g.GID)
	defer lock.Release()
	if _, err := lock.Edit(ctxT(t), store.GroupEdit{Remove: []string{memberD}, Add: []string{memberC}}, groupNow, notice("x")); err == nil {
		t.Fatal("adding a member twice succeeded")
	}
	expectRows(t, db, before, "a failed edit")
}

func TestGroupNamePayloads(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	names := []string{
		"x'); DROP TABLE members; --",
		"Robert'); DELETE FROM `groups`; --",
		`\'; UPDATE members SET role = 2; -- \`,
		"nul\x00byte `tick` \"quote\"",
	}
	for i, name := range names {
		gid := int64(7001 + i)
		if _, err := s.InsertGroup(ctx, store.NewGroup{GID: gid, Name: name, Owner: owner, Members: []string{memberC}}, groupNow, notice(name)); err != nil {
			t.Fatalf("InsertGroup(%q): %v", name, err)
		}
		lock := lockGroup(t, s, gid)
		renamed := name + "2"
		g, err := lock.Edit(ctx, store.GroupEdit{GroupChange: store.GroupChange{Name: &renamed}}, groupNow, nil)
		lock.Release()
		if err != nil || g.Name != renamed {
			t.Fatalf("rename to %q: %+v, %v", renamed, g, err)
		}
		var raw []byte
		if err := db.QueryRow("SELECT name FROM `groups` WHERE gid = ?", gid).Scan(&raw); err != nil || string(raw) != renamed {
			t.Errorf("stored name %q (%v), want %q", raw, err, renamed)
		}
		if r := testenv.MemberRoles(t, db, gid); len(r) != 2 || r[owner] != 2 || r[memberC] != 0 {
			t.Errorf("roles of group %d = %v", gid, r)
		}
	}
	if got := tables(t, db); strings.Join(got, ",") != strings.Join(wantTables, ",") {
		t.Errorf("tables after payloads = %v", got)
	}
}

// TestGroupLockQueues: the changes of one group take turns, in the order they came; a
// change whose context ends while it waits gets ErrGroupBusy; other groups do not wait.
func TestGroupLockQueues(t *testing.T) {
	s, _ := readyStore(t)
	first := lockGroup(t, s, 7001)

	short, cancel := context.WithTimeout(ctxT(t), 200*time.Millisecond)
	defer cancel()
	if _, err := s.LockGroup(short, 7001); !errors.Is(err, store.ErrGroupBusy) {
		t.Fatalf("a second lock of a locked group: %v, want ErrGroupBusy", err)
	}
	other := lockGroup(t, s, 7002)
	other.Release()

	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	ctx := ctxT(t)
	for i := range 5 {
		wg.Go(func() {
			lock, err := s.LockGroup(ctx, 7001)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			lock.Release()
		})
		time.Sleep(50 * time.Millisecond) // let each take its place in the queue
	}
	first.Release()
	wg.Wait()
	if fmt.Sprint(order) != "[0 1 2 3 4]" {
		t.Errorf("turns taken in the order %v", order)
	}
}

// TestGroupLockWaitersHoldNoConnections: changes queued for a group hold no pooled
// connection and no write lock, so that everyone else's reads and writes go on.
func TestGroupLockWaitersHoldNoConnections(t *testing.T) {
	s, _ := readyStore(t)
	s.LimitConnections(2) // MySQL: one for group changes, one for everyone else
	g := insertTeam(t, s)
	held := lockGroup(t, s, g.GID)
	var wg sync.WaitGroup
	wait := ctxT(t)
	for range 10 {
		wg.Go(func() {
			lock, err := s.LockGroup(wait, g.GID)
			if err != nil {
				t.Error(err)
				return
			}
			lock.Release()
		})
	}
	time.Sleep(100 * time.Millisecond) // the waiters are queued
	ctx, cancel := context.WithTimeout(ctxT(t), 2*time.Second)
	defer cancel()
	if err := s.SaveContacts(ctx, 1, []string{memberC}, false); err != nil {
		t.Errorf("a write while a group's changes queue: %v", err)
	}
	if _, err := s.Group(ctx, g.GID); err != nil {
		t.Errorf("a read while a group's changes queue: %v", err)
	}
	held.Release()
	wg.Wait()
}

// TestGroupLockAcrossInstances: two stores on one MySQL database, as two instances would
// have, take turns with a group too.
func TestGroupLockAcrossInstances(t *testing.T) {
	testenv.SkipIfEmbedded(t, "the embedded store serves a single instance")
	dsn := testenv.Database(t)
	a, b := openStore(t, dsn), openStore(t, dsn)
	if err := a.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	held := lockGroup(t, a, 7001)
	short, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := b.LockGroup(short, 7001); !errors.Is(err, store.ErrGroupBusy) {
		t.Fatalf("the other instance's lock of a locked group: %v, want ErrGroupBusy", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("gave up after %s, want about the context's 300ms", waited)
	}
	other := lockGroup(t, b, 7002)
	other.Release()
	got := make(chan error, 1)
	go func() {
		lock, err := b.LockGroup(ctxT(t), 7001)
		if err == nil {
			lock.Release()
		}
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	held.Release()
	if err := <-got; err != nil {
		t.Errorf("the other instance's lock after the release: %v", err)
	}
}

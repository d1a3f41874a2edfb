package groups_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/groups"
	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
	"github.com/caddy-messenger/messenger/store"
)

// Phones of the test users.
const (
	owner   = "919800000001"
	adminB  = "919800000002"
	memberC = "919800000003"
	memberD = "919800000004"
	memberE = "919800000005"
	memberF = "919800000006"
	nobody  = "919800000099"
)

const appToken = "app-token-groups-test"

var now = time.Unix(1_700_000_000, 0)

// env is a store on a fresh database, mesibo's fake, and the Groups of both.
type env struct {
	t      *testing.T
	dsn    string
	store  *store.Store
	db     *sql.DB
	mesibo *mesibotest.Server
	client *mesiboclient.Client
	groups *groups.Groups
	// mesiboCalls counts the calls in flight at the fake, and the most at once.
	inFlight, mostInFlight atomic.Int32
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dsn: testenv.Database(t)}
	e.store = e.openStore()
	e.db = testenv.Open(t, e.dsn)
	e.mesibo = mesibotest.New(appToken)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := e.inFlight.Add(1)
		defer e.inFlight.Add(-1)
		for m := e.mostInFlight.Load(); n > m && !e.mostInFlight.CompareAndSwap(m, n); m = e.mostInFlight.Load() {
		}
		e.mesibo.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.mesibo.URL = srv.URL
	client, err := mesiboclient.New(mesiboclient.Config{Endpoint: srv.URL, AppToken: appToken, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	e.client = client
	e.groups = groups.New(e.store, client)
	return e
}

// openStore opens another store on the env's database, as another instance would.
func (e *env) openStore() *store.Store {
	e.t.Helper()
	s, err := store.Open(e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.Close() })
	if err := s.Ready(ctxT(e.t)); err != nil {
		e.t.Fatal(err)
	}
	return s
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// notify is the notification the handlers would compose, reduced to what the tests check.
func notify(from, subject string) groups.Notify {
	return func(g store.Group) store.Notification {
		return store.Notification{From: from, Body: []byte(subject + "|" + g.Members)}
	}
}

// team creates the standard group: the owner, admin B, members C and D.
func (e *env) team() store.Group {
	e.t.Helper()
	ctx := ctxT(e.t)
	g, err := e.groups.Create(ctx, owner, groups.Setup{Name: "Team", Members: []string{adminB, memberC, memberD}}, now, nil)
	if err != nil {
		e.t.Fatalf("Create: %v", err)
	}
	if g, err = e.groups.SetAdmin(ctx, g.GID, owner, []string{adminB}, true, now, nil); err != nil {
		e.t.Fatalf("SetAdmin: %v", err)
	}
	return g
}

// remote is the sorted member list of group gid at mesibo.
func (e *env) remote(gid int64) []string {
	return slices.Sorted(slices.Values(e.mesibo.Groups()[gid].Members))
}

// local is the sorted member list of group gid here.
func (e *env) local(gid int64) []string {
	var out []string
	for p := range e.roles(gid) {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// roles returns phone → role of group gid, read from the rows.
func (e *env) roles(gid int64) map[string]int { return testenv.MemberRoles(e.t, e.db, gid) }

type outboxRow struct{ from, to, body string }

func (e *env) outbox() []outboxRow {
	e.t.Helper()
	rows, err := e.db.Query("SELECT from_addr, to_addrs, body FROM messenger_outbox ORDER BY id")
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.from, &r.to, &r.body); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// rows renders the group tables and the outbox, for before/after comparisons.
func (e *env) rows() string {
	e.t.Helper()
	var b strings.Builder
	for _, q := range []string{
		"SELECT CONCAT_WS('|', gid, HEX(name), photo, type, ts) FROM `groups` ORDER BY gid",
		"SELECT CONCAT_WS('|', gid, phone, role) FROM members ORDER BY gid, phone",
		"SELECT CONCAT_WS('|', id, from_addr, to_addrs, HEX(body)) FROM messenger_outbox ORDER BY id",
	} {
		rows, err := e.db.Query(q)
		if err != nil {
			e.t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				e.t.Fatal(err)
			}
			b.WriteString(s + "\n")
		}
		rows.Close()
		b.WriteString("--\n")
	}
	return b.String()
}

func sorted(phones ...string) []string { return slices.Sorted(slices.Values(phones)) }

func TestCreate(t *testing.T) {
	e := newEnv(t)
	typ, photo := 3, "1700000000-0123456789abcdef.png"
	g, err := e.groups.Create(ctxT(t), owner, groups.Setup{Name: "Friends 😀", Type: &typ, Photo: &photo,
		Members: []string{memberD, memberC, owner, memberC}}, now, notify(owner, "added"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	// The gid is mesibo's; mesibo got the creator first and each member once.
	add := e.mesibo.CallsOf("groupadd")
	if g.GID != 5001 || len(add) != 1 || add[0].Fields["m"] != owner+","+memberD+","+memberC || add[0].Fields["name"] != "Friends 😀" {
		t.Errorf("gid %d, groupadd calls %v", g.GID, add)
	}
	if g.Name != "Friends 😀" || g.Photo != photo || g.Type != 3 || g.TS != now.Unix() {
		t.Errorf("group = %+v", g)
	}
	if want := "1:" + owner + "," + memberC + "," + memberD; g.Members != want {
		t.Errorf("members = %q, want %q", g.Members, want)
	}
	if r := e.roles(g.GID); len(r) != 3 || r[owner] != store.RoleOwner || r[memberC] != 0 || r[memberD] != 0 {
		t.Errorf("roles = %v", r)
	}
	// The members are told; the creator is not.
	if out := e.outbox(); len(out) != 1 || out[0].from != owner || out[0].to != memberC+","+memberD || out[0].body != "added|"+g.Members {
		t.Errorf("outbox = %+v", out)
	}
}

func TestGet(t *testing.T) {
	e := newEnv(t)
	g := e.team()
	ctx := ctxT(t)
	if got, err := e.groups.Get(ctx, g.GID, memberC); err != nil || got.Members != g.Members {
		t.Errorf("Get by a member: %+v, %v", got, err)
	}
	if _, err := e.groups.Get(ctx, g.GID, nobody); !errors.Is(err, groups.ErrNotMember) {
		t.Errorf("Get by a stranger: %v, want ErrNotMember", err)
	}
	if _, err := e.groups.Get(ctx, g.GID+1, memberC); !errors.Is(err, groups.ErrNoGroup) {
		t.Errorf("Get of a missing group: %v, want ErrNoGroup", err)
	}
}

func TestRoleRules(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	g := e.team()
	if want := "2:" + owner + "," + adminB + "," + memberC + "," + memberD; g.Members != want {
		t.Fatalf("members = %q, want %q", g.Members, want)
	}
	gid := g.GID
	before, calls := e.rows(), len(e.mesibo.Calls())
	name := "mine"

	// A plain member and a stranger change nothing.
	for _, actor := range []string{memberC, nobody} {
		for what, err := range map[string]error{
			"add":      second(e.groups.EditMembers(ctx, gid, actor, []string{memberE}, false, now, nil)),
			"remove":   second(e.groups.EditMembers(ctx, gid, actor, []string{memberD}, true, now, nil)),
			"setadmin": second(e.groups.SetAdmin(ctx, gid, actor, []string{actor}, true, now, nil)),
			"setgroup": second(e.groups.Change(ctx, gid, actor, groups.Setup{Name: "mine"}, now, nil)),
			"rename":   second(e.groups.SetInfo(ctx, gid, actor, store.GroupChange{Name: &name}, now, nil)),
		} {
			if !errors.Is(err, groups.ErrNotAdmin) {
				t.Errorf("%s by %s: %v, want ErrNotAdmin", what, actor, err)
			}
		}
	}
	if _, _, err := e.groups.DeleteOrLeave(ctx, gid, nobody, now, nil); !errors.Is(err, groups.ErrNotMember) {
		t.Errorf("DeleteOrLeave by a stranger: %v, want ErrNotMember", err)
	}
	// A missing group.
	for what, err := range map[string]error{
		"add":      second(e.groups.EditMembers(ctx, 999, owner, []string{memberE}, false, now, nil)),
		"setadmin": second(e.groups.SetAdmin(ctx, 999, owner, []string{memberC}, true, now, nil)),
		"setgroup": second(e.groups.Change(ctx, 999, owner, groups.Setup{}, now, nil)),
		"rename":   second(e.groups.SetInfo(ctx, 999, owner, store.GroupChange{Name: &name}, now, nil)),
	} {
		if !errors.Is(err, groups.ErrNoGroup) {
			t.Errorf("%s of a missing group: %v, want ErrNoGroup", what, err)
		}
	}
	if _, _, err := e.groups.DeleteOrLeave(ctx, 999, owner, now, nil); !errors.Is(err, groups.ErrNoGroup) {
		t.Errorf("DeleteOrLeave of a missing group: %v", err)
	}

	// The admin can neither remove nor demote the owner: a no-op, nothing written.
	if g2, err := e.groups.EditMembers(ctx, gid, adminB, []string{owner}, true, now, notify(adminB, "")); err != nil || g2.Members != g.Members {
		t.Errorf("admin removing the owner = %q, %v; want no change", g2.Members, err)
	}
	if g2, err := e.groups.SetAdmin(ctx, gid, adminB, []string{owner}, false, now, notify(adminB, "")); err != nil || g2.Members != g.Members {
		t.Errorf("admin demoting the owner = %q, %v; want no change", g2.Members, err)
	}
	// Nor can the owner itself through these ops.
	if _, err := e.groups.SetAdmin(ctx, gid, owner, []string{owner}, false, now, nil); err != nil {
		t.Error(err)
	}
	if after := e.rows(); after != before {
		t.Errorf("refused or no-op changes wrote rows:\nbefore %s\nafter %s", before, after)
	}
	if n := len(e.mesibo.Calls()); n != calls {
		t.Errorf("refused or no-op changes made %d mesibo calls", n-calls)
	}

	// The admin adds E (C is in already) and makes C an admin; the owner stays first.
	g2, err := e.groups.EditMembers(ctx, gid, adminB, []string{memberE, memberC}, false, now, notify(adminB, "added"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "2:" + owner + "," + adminB + "," + memberC + "," + memberD + "," + memberE; g2.Members != want {
		t.Errorf("after adding E: %q, want %q", g2.Members, want)
	}
	if edits := e.mesibo.CallsOf("groupeditmembers"); len(edits) != 1 || edits[0].Fields["m"] != memberE || edits[0].Fields["delete"] != "0" {
		t.Errorf("groupeditmembers %v: only the new member is sent", edits)
	}
	g3, err := e.groups.SetAdmin(ctx, gid, adminB, []string{memberC, owner, nobody}, true, now, notify(adminB, ""))
	if err != nil {
		t.Fatal(err)
	}
	if want := "3:" + owner + "," + adminB + "," + memberC + "," + memberD + "," + memberE; g3.Members != want {
		t.Errorf("after promoting C: %q, want %q", g3.Members, want)
	}
	if r := e.roles(gid); r[owner] != 2 || r[adminB] != 1 || r[memberC] != 1 || r[memberD] != 0 || r[memberE] != 0 || len(r) != 5 {
		t.Errorf("roles = %v (a non-member must not be added by setadmin)", r)
	}
	if !(g.TS < g2.TS && g2.TS < g3.TS) {
		t.Errorf("ts %d, %d, %d: not increasing", g.TS, g2.TS, g3.TS)
	}

	// Admin C revokes admin B; B can then no longer change the group.
	if _, err := e.groups.SetAdmin(ctx, gid, memberC, []string{adminB}, false, now, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.groups.EditMembers(ctx, gid, adminB, []string{nobody}, false, now, nil); !errors.Is(err, groups.ErrNotAdmin) {
		t.Errorf("demoted admin: %v, want ErrNotAdmin", err)
	}

	// C renames the group through profile: the members are told, mesibo is not asked.
	e.db.Exec("DELETE FROM messenger_outbox")
	calls = len(e.mesibo.Calls())
	renamed := "Renamed"
	g4, err := e.groups.SetInfo(ctx, gid, memberC, store.GroupChange{Name: &renamed}, now, notify(memberC, "renamed"))
	if err != nil || g4.Name != "Renamed" || g4.TS <= g3.TS {
		t.Fatalf("SetInfo: %+v, %v", g4, err)
	}
	if out := e.outbox(); len(out) != 1 || out[0].to != owner+","+adminB+","+memberD+","+memberE || out[0].body != "renamed|"+g4.Members {
		t.Errorf("outbox after rename %+v", out)
	}
	if len(e.mesibo.Calls()) != calls {
		t.Error("a rename through profile called mesibo")
	}

	// C removes D and E (and, silently, the owner): the removed are told too.
	e.db.Exec("DELETE FROM messenger_outbox")
	g5, err := e.groups.EditMembers(ctx, gid, memberC, []string{memberD, owner, memberE}, true, now, notify(memberC, "rm"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "2:" + owner + "," + memberC + "," + adminB; g5.Members != want {
		t.Errorf("after removing D, E: %q, want %q", g5.Members, want)
	}
	if out := e.outbox(); len(out) != 1 || out[0].to != owner+","+adminB+","+memberD+","+memberE {
		t.Errorf("outbox after removal = %+v; want the members and the removed, not the actor", out)
	}
	if got := e.remote(gid); !slices.Equal(got, sorted(owner, adminB, memberC)) {
		t.Errorf("mesibo members %v", got)
	}

	// B leaves; then the owner deletes the group.
	e.db.Exec("DELETE FROM messenger_outbox")
	g6, deleted, err := e.groups.DeleteOrLeave(ctx, gid, adminB, now, notify(adminB, "left"))
	if err != nil || deleted {
		t.Fatalf("leave: deleted %v, %v", deleted, err)
	}
	if want := "2:" + owner + "," + memberC; g6.Members != want {
		t.Errorf("after B left: %q", g6.Members)
	}
	if got := e.remote(gid); !slices.Equal(got, sorted(owner, memberC)) {
		t.Errorf("mesibo members after leave %v", got)
	}
	if out := e.outbox(); len(out) != 1 || out[0].to != owner+","+memberC {
		t.Errorf("outbox after leave %+v", out)
	}
	e.db.Exec("DELETE FROM messenger_outbox")
	gone, deleted, err := e.groups.DeleteOrLeave(ctx, gid, owner, now, notify(owner, "gone"))
	if err != nil || !deleted {
		t.Fatalf("delete: deleted %v, %v", deleted, err)
	}
	if gone.Members != "0:" || gone.Name != "Renamed" || gone.TS <= g6.TS {
		t.Errorf("deleted group notified as %+v", gone)
	}
	var left int
	if err := e.db.QueryRow("SELECT (SELECT COUNT(*) FROM `groups`) + (SELECT COUNT(*) FROM members)").Scan(&left); err != nil || left != 0 {
		t.Errorf("%d rows left after delete (%v)", left, err)
	}
	if out := e.outbox(); len(out) != 1 || out[0].to != memberC || out[0].body != "gone|0:" {
		t.Errorf("outbox after delete %+v", out)
	}
	if _, ok := e.mesibo.Groups()[gid]; ok {
		t.Errorf("mesibo still has the group")
	}
}

// second is the error of a two-valued call.
func second[T any](_ T, err error) error { return err }

func TestChangeKeepsRoles(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	g := e.team()
	if _, err := e.groups.EditMembers(ctx, g.GID, owner, []string{memberE}, false, now, nil); err != nil {
		t.Fatal(err)
	}
	// Admin B re-sets the group with C and a new member F, leaving out D and E; the
	// name is empty (kept), the type and photo change.
	typ, photo := 2, "new.jpg"
	g2, err := e.groups.Change(ctx, g.GID, adminB, groups.Setup{Type: &typ, Photo: &photo, Members: []string{memberC, memberF}},
		now, notify(adminB, "added"))
	if err != nil {
		t.Fatalf("Change: %v", err)
	}
	if g2.Name != "Team" || g2.Type != 2 || g2.Photo != "new.jpg" || g2.TS <= g.TS {
		t.Errorf("changed group %+v", g2)
	}
	r := e.roles(g.GID)
	if len(r) != 4 || r[owner] != 2 || r[adminB] != 1 || r[memberC] != 0 || r[memberF] != 0 {
		t.Errorf("roles after setgroup %v: the owner must stay, the admin keep its role", r)
	}
	if want := "2:" + owner + "," + adminB + "," + memberC + "," + memberF; g2.Members != want {
		t.Errorf("members %q, want %q", g2.Members, want)
	}
	if got := e.remote(g.GID); !slices.Equal(got, sorted(owner, adminB, memberC, memberF)) {
		t.Errorf("mesibo members %v", got)
	}
	out := e.outbox()
	if last := out[len(out)-1]; last.to != owner+","+memberC+","+memberF+","+memberD+","+memberE {
		t.Errorf("notified %q: want the members and the removed D and E", last.to)
	}

	// Promote C; a setgroup without members keeps them, and C an admin.
	if _, err := e.groups.SetAdmin(ctx, g.GID, owner, []string{memberC}, true, now, nil); err != nil {
		t.Fatal(err)
	}
	g3, err := e.groups.Change(ctx, g.GID, owner, groups.Setup{Name: "Renamed", KeepMembers: true}, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g3.Name != "Renamed" || g3.Type != 2 || g3.Photo != "new.jpg" {
		t.Errorf("after rename: %+v (type and photo must stay)", g3)
	}
	if r := e.roles(g.GID); len(r) != 4 || r[memberC] != 1 || r[adminB] != 1 || r[owner] != 2 {
		t.Errorf("roles after KeepMembers setgroup %v", r)
	}
	set := e.mesibo.CallsOf("groupset")
	if last := set[len(set)-1]; last.Fields["name"] != "Renamed" || last.Fields["m"] != strings.Join(g2.Phones, ",") {
		t.Errorf("groupset %v", last.Fields)
	}
}

// TestSetGroupRemovesDroppedMembersAtMesibo (issue 14, defect 6): setgroup with a
// shorter member list removes the dropped members at mesibo with groupeditmembers and
// delete=1, whether mesibo's groupset replaces the member list or adds to it.
func TestSetGroupRemovesDroppedMembersAtMesibo(t *testing.T) {
	for _, mode := range []struct {
		name string
		adds bool
	}{{"groupset replaces", false}, {"groupset adds", true}} {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t)
			e.mesibo.GroupSetAdds(mode.adds)
			ctx := ctxT(t)
			g, err := e.groups.Create(ctx, owner, groups.Setup{Name: "G", Members: []string{adminB, memberC}}, now, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.groups.Change(ctx, g.GID, owner, groups.Setup{Members: []string{adminB}}, now, nil); err != nil {
				t.Fatal(err)
			}
			want := sorted(owner, adminB)
			if local, remote := e.local(g.GID), e.remote(g.GID); !slices.Equal(local, want) || !slices.Equal(remote, want) {
				t.Errorf("members here %v, at mesibo %v; want %v in both", local, remote, want)
			}
			edits := e.mesibo.CallsOf("groupeditmembers")
			if len(edits) != 1 || edits[0].Fields["m"] != memberC || edits[0].Fields["delete"] != "1" {
				t.Errorf("groupeditmembers calls %v, want one removing C", edits)
			}
			// A change that drops nobody needs no removal.
			if _, err := e.groups.Change(ctx, g.GID, owner, groups.Setup{Members: []string{adminB, memberD}}, now, nil); err != nil {
				t.Fatal(err)
			}
			if n := len(e.mesibo.CallsOf("groupeditmembers")); n != 1 {
				t.Errorf("%d groupeditmembers calls after a setgroup that removed nobody, want still 1", n)
			}
			want = sorted(owner, adminB, memberD)
			if local, remote := e.local(g.GID), e.remote(g.GID); !slices.Equal(local, want) || !slices.Equal(remote, want) {
				t.Errorf("members here %v, at mesibo %v; want %v in both", local, remote, want)
			}
		})
	}
}

// TestMesiboFailureChangesNothing: when mesibo refuses or fails a change, it is a
// MesiboError and nothing changed, here or at mesibo.
func TestMesiboFailureChangesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	g := e.team()
	gid := g.GID
	before, remoteBefore := e.rows(), e.remote(gid)

	for _, tc := range []struct {
		name, op string // the change, and the mesibo op that fails
		run      func() error
	}{
		{"setgroup", "groupset", func() error {
			return second(e.groups.Change(ctx, gid, owner, groups.Setup{Name: "X", Members: []string{memberE}}, now, notify(owner, "x")))
		}},
		// groupset said yes, the removal no: groupset is undone.
		{"setgroup removing", "groupeditmembers", func() error {
			return second(e.groups.Change(ctx, gid, owner, groups.Setup{Name: "X", Members: []string{memberE}}, now, notify(owner, "x")))
		}},
		{"add", "groupeditmembers", func() error {
			return second(e.groups.EditMembers(ctx, gid, adminB, []string{memberE}, false, now, notify(adminB, "x")))
		}},
		{"remove", "groupeditmembers", func() error {
			return second(e.groups.EditMembers(ctx, gid, adminB, []string{memberD}, true, now, notify(adminB, "x")))
		}},
		{"leave", "groupeditmembers", func() error {
			_, _, err := e.groups.DeleteOrLeave(ctx, gid, memberC, now, notify(memberC, "x"))
			return err
		}},
		{"delete", "groupdel", func() error {
			_, _, err := e.groups.DeleteOrLeave(ctx, gid, owner, now, notify(owner, "x"))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.mesibo.FailNext(tc.op, 1, mesibotest.Failure{Refuse: "NOPE"})
			err := tc.run()
			e.mesibo.Reset()
			var me *groups.MesiboError
			if !errors.As(err, &me) || !mesiboclient.IsRefused(err) {
				t.Errorf("error %v, want a MesiboError", err)
			}
			if after := e.rows(); after != before {
				t.Errorf("rows changed:\nbefore %s\nafter %s", before, after)
			}
			if got := e.remote(gid); !slices.Equal(got, remoteBefore) {
				t.Errorf("mesibo members %v, want %v", got, remoteBefore)
			}
		})
	}

	// A refused create stores nothing.
	e.mesibo.FailNext("groupadd", 1, mesibotest.Failure{Status: http.StatusBadGateway})
	if _, err := e.groups.Create(ctx, owner, groups.Setup{Name: "Y", Members: []string{memberC}}, now, notify(owner, "x")); !mesiboclient.IsTransport(err) {
		t.Errorf("create with mesibo down: %v", err)
	}
	if after := e.rows(); after != before {
		t.Fatalf("a failed create changed rows:\nbefore %s\nafter %s", before, after)
	}
}

// TestMesiboLostGroupCanBeDeleted: a group mesibo no longer has (BADGROUP) is deleted
// here all the same.
func TestMesiboLostGroupCanBeDeleted(t *testing.T) {
	e := newEnv(t)
	g := e.team()
	e.mesibo.FailNext("groupdel", 1, mesibotest.Failure{Refuse: "BADGROUP"})
	if _, deleted, err := e.groups.DeleteOrLeave(ctxT(t), g.GID, owner, now, nil); err != nil || !deleted {
		t.Fatalf("delete of a group mesibo lost: %v, %v", deleted, err)
	}
	if n := len(e.roles(g.GID)); n != 0 {
		t.Errorf("%d members left", n)
	}
}

// TestLocalFailureUndoneAtMesibo: when the local write fails after mesibo said yes,
// the change is undone at mesibo. Here the local write fails because a member row
// appears, written past the group's lock, while mesibo answers.
func TestLocalFailureUndoneAtMesibo(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)

	// Mesibo hands out a gid this database has already: the group is deleted there again.
	if _, err := e.db.Exec("INSERT INTO `groups` (gid, name, status, photo, type, ts) VALUES (5001, 'old', '', '', 0, 1)"); err != nil {
		t.Fatal(err)
	}
	before := e.rows()
	_, err := e.groups.Create(ctx, nobody, groups.Setup{Name: "Z", Members: []string{memberC}}, now, notify(nobody, "x"))
	var me *groups.MesiboError
	if err == nil || errors.As(err, &me) {
		t.Errorf("create over an existing gid: %v, want a local error", err)
	}
	if del := e.mesibo.CallsOf("groupdel"); len(del) != 1 || del[0].Fields["gid"] != "5001" {
		t.Errorf("groupdel calls %v: the group created at mesibo was not deleted again", del)
	}
	if after := e.rows(); after != before {
		t.Fatalf("a failed create changed rows:\nbefore %s\nafter %s", before, after)
	}

	for _, mode := range []bool{false, true} {
		e.mesibo.GroupSetAdds(mode)
		g := e.team()
		for _, tc := range []struct {
			name, op string
			run      func() error
		}{
			{"add", "groupeditmembers", func() error {
				return second(e.groups.EditMembers(ctx, g.GID, owner, []string{memberE}, false, now, notify(owner, "x")))
			}},
			{"setgroup", "groupset", func() error {
				return second(e.groups.Change(ctx, g.GID, owner, groups.Setup{Members: []string{adminB, memberE}}, now, notify(owner, "x")))
			}},
		} {
			t.Run(fmt.Sprintf("%s, groupset adds %v", tc.name, mode), func(t *testing.T) {
				remoteBefore := e.remote(g.GID)
				e.mesibo.FailNext(tc.op, 1, mesibotest.Failure{Delay: 300 * time.Millisecond})
				intruder := make(chan error, 1)
				go func() {
					time.Sleep(100 * time.Millisecond)
					_, err := e.db.Exec("INSERT INTO members (gid, phone, role) VALUES (?, ?, 0)", g.GID, memberE)
					intruder <- err
				}()
				err := tc.run()
				if ierr := <-intruder; ierr != nil {
					t.Fatalf("the write past the lock: %v", ierr)
				}
				e.db.Exec("DELETE FROM members WHERE gid = ? AND phone = ?", g.GID, memberE)
				if err == nil || errors.As(err, &me) {
					t.Errorf("error %v, want a local one", err)
				}
				if got := e.remote(g.GID); !slices.Equal(got, remoteBefore) {
					t.Errorf("mesibo members %v after the undo, want %v", got, remoteBefore)
				}
				if local := e.local(g.GID); !slices.Equal(local, remoteBefore) {
					t.Errorf("members here %v, want %v", local, remoteBefore)
				}
			})
		}
	}
}

func TestBadPhones(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	g := e.team()
	before, calls := e.rows(), len(e.mesibo.Calls())
	for _, bad := range [][]string{
		{memberC, "1) OR 1=1 --"},
		{"919800000007'); DROP TABLE members; --"},
		{"1,2"}, {""}, {"0919800000007"}, {"-919800000007"}, {"9198000000071234567"}, {"12345"}, {"+919800000007"},
	} {
		for what, err := range map[string]error{
			"create":   second(e.groups.Create(ctx, owner, groups.Setup{Name: "x", Members: bad}, now, nil)),
			"add":      second(e.groups.EditMembers(ctx, g.GID, owner, bad, false, now, nil)),
			"remove":   second(e.groups.EditMembers(ctx, g.GID, owner, bad, true, now, nil)),
			"setadmin": second(e.groups.SetAdmin(ctx, g.GID, owner, bad, true, now, nil)),
			"setgroup": second(e.groups.Change(ctx, g.GID, owner, groups.Setup{Members: bad}, now, nil)),
		} {
			if !errors.Is(err, groups.ErrBadPhone) {
				t.Errorf("%s with members %q: %v, want ErrBadPhone", what, bad, err)
			}
		}
	}
	if after := e.rows(); after != before {
		t.Errorf("refused member lists changed rows")
	}
	if len(e.mesibo.Calls()) != calls {
		t.Errorf("refused member lists reached mesibo")
	}
}

// TestParallelChanges: two admins each add 20 members, one change per member, all at
// once, through two instances on MySQL (one on the embedded store). The changes of the
// group take turns: mesibo never has two of them at once, the member lists here and at
// mesibo are the union, every change has its notification, and ts grows with each.
func TestParallelChanges(t *testing.T) {
	e := newEnv(t)
	g := e.team()
	e.db.Exec("DELETE FROM messenger_outbox")
	instances := []*groups.Groups{e.groups, e.groups}
	if !testenv.Embedded() {
		instances[1] = groups.New(e.openStore(), e.client)
	}
	e.mesibo.FailAll("groupeditmembers", mesibotest.Failure{Delay: 20 * time.Millisecond})
	e.mostInFlight.Store(0)
	const perAdmin = 20
	want := slices.Clone(g.Phones)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for a, actor := range []string{owner, adminB} {
		for i := range perAdmin {
			p := fmt.Sprintf("91990%d%06d", a, i)
			want = append(want, p)
			wg.Go(func() {
				if _, err := instances[i%2].EditMembers(ctx, g.GID, actor, []string{p}, false, now, notify(actor, "added")); err != nil {
					t.Errorf("EditMembers: %v", err)
				}
			})
		}
	}
	wg.Wait()
	slices.Sort(want)
	if local, remote := e.local(g.GID), e.remote(g.GID); !slices.Equal(local, want) || !slices.Equal(remote, want) {
		t.Errorf("members after parallel adds: here %d, at mesibo %d, want %d", len(local), len(remote), len(want))
	}
	if n := e.mostInFlight.Load(); n != 1 {
		t.Errorf("%d changes of one group were at mesibo at once, want 1", n)
	}
	out := e.outbox()
	if len(out) != 2*perAdmin {
		t.Fatalf("outbox rows %d, want %d", len(out), 2*perAdmin)
	}
	// The notifications are queued in the order of the changes: each lists one more member.
	for i, r := range out {
		if n := strings.Count(r.body, ","); n != len(g.Phones)+i {
			t.Errorf("notification %d lists %d members, want %d", i, n+1, len(g.Phones)+i+1)
		}
	}
	latest, err := e.store.Group(ctx, g.GID)
	if err != nil || latest.TS < g.TS+2*perAdmin {
		t.Errorf("ts %d after %d changes from %d (%v)", latest.TS, 2*perAdmin, g.TS, err)
	}
}

// TestBusy: a change queued behind a slow one gives up when its context ends, and
// changes nothing.
func TestBusy(t *testing.T) {
	e := newEnv(t)
	g := e.team()
	e.mesibo.FailNext("groupeditmembers", 1, mesibotest.Failure{Delay: time.Second})
	slow := make(chan error, 1)
	go func() {
		slow <- second(e.groups.EditMembers(ctxT(t), g.GID, owner, []string{memberE}, false, now, nil))
	}()
	time.Sleep(200 * time.Millisecond) // the slow change has the group
	short, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := e.groups.EditMembers(short, g.GID, owner, []string{memberF}, false, now, nil); !errors.Is(err, groups.ErrBusy) {
		t.Errorf("a change queued past its time: %v, want ErrBusy", err)
	}
	if waited := time.Since(start); waited > 700*time.Millisecond {
		t.Errorf("gave up after %s, want about the context's 300ms", waited)
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	want := sorted(owner, adminB, memberC, memberD, memberE)
	if local, remote := e.local(g.GID), e.remote(g.GID); !slices.Equal(local, want) || !slices.Equal(remote, want) {
		t.Errorf("members here %v, at mesibo %v; want %v", local, remote, want)
	}
}

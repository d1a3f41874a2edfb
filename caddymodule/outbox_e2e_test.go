package caddymodule_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
)

// TestNotificationsInOrderAfterMesiboOutage (issue 14, defect 5): ten renames of a user
// and ten of a group while mesibo is down arrive, once it is back, in the order of the
// changes with a growing ts: the group's every one, the user's at least the last (older
// silent updates may be dropped), so an app applying them in arrival order ends on the
// final state.
func TestNotificationsInOrderAfterMesiboOutage(t *testing.T) {
	e := startEnv(t, options{extra: roomy + "\n\t\toutbox {\n\t\t\tmax_backoff 300ms\n\t\t}"})
	const ada, bob, cyd = "919812354001", "919812354002", "919812354003"
	tokAda := e.login(form, "+"+ada, ada)
	for _, p := range []string{bob, cyd} {
		tok := e.login(form, "+"+p, p)
		contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": tok, "phones": ada}))
	}
	a := e.call(form, map[string]any{"op": "setgroup", "token": tokAda, "gid": "0", "name": "Team", "m": bob + "," + cyd})
	expectOK(t, a, "setgroup")
	gid := gidOf(t, a)
	waitFor(t, "the group's creation to go out", func() bool { return e.count("SELECT COUNT(*) FROM messenger_outbox") == 0 })

	e.mesibo.FailAll("message", mesibotest.Failure{Status: http.StatusServiceUnavailable})
	for i := range 10 {
		expectOK(t, e.call(form, map[string]any{"op": "profile", "token": tokAda, "name": fmt.Sprint("Ada ", i)}), "profile")
		expectOK(t, e.call(form, map[string]any{"op": "profile", "token": tokAda, "gid": gid, "name": fmt.Sprint("Team ", i)}), "profile")
	}
	waitFor(t, "failed delivery attempts", func() bool { return len(e.mesibo.CallsOf("message")) >= 2 })
	time.Sleep(500 * time.Millisecond) // a few rounds of the outage
	e.mesibo.Reset()
	waitWithin(t, 10*time.Second, "the outbox to drain", func() bool { return e.count("SELECT COUNT(*) FROM messenger_outbox") == 0 })

	var userNames, groupNames []string
	var userTS, groupTS []float64
	for _, n := range e.notifications() {
		name, _ := n.body["name"].(string)
		switch {
		case n.body["gid"] == float64(gid) && name != "Team":
			groupNames = append(groupNames, name)
			groupTS = append(groupTS, n.body["ts"].(float64))
		case n.body["phone"] == ada:
			if n.from != ada || !slices.Equal(sorted(n.to), []string{bob, cyd}) {
				t.Errorf("a notification of Ada's from %s to %v", n.from, n.to)
			}
			userNames = append(userNames, name)
			userTS = append(userTS, n.body["ts"].(float64))
		}
	}
	var wantGroup []string
	for i := range 10 {
		wantGroup = append(wantGroup, fmt.Sprint("Team ", i))
	}
	if !slices.Equal(groupNames, wantGroup) || !growing(groupTS) {
		t.Errorf("the group's notifications arrived as %q with ts %v; want %q with a growing ts", groupNames, groupTS, wantGroup)
	}
	if len(userNames) == 0 || userNames[len(userNames)-1] != "Ada 9" || !slices.IsSorted(userNames) || !growing(userTS) {
		t.Errorf("Ada's notifications arrived as %q with ts %v; want them in order with a growing ts, ending on \"Ada 9\"", userNames, userTS)
	}
}

// sorted is a sorted copy of s.
func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// growing reports whether every value is greater than the one before.
func growing(values []float64) bool {
	for i := 1; i < len(values); i++ {
		if values[i] <= values[i-1] {
			return false
		}
	}
	return true
}

// TestProfileChangesOfOneSittingGoTogether: a user's first change after a quiet spell
// reaches the watcher at once; the changes made within the outbox's profile_interval
// after it went out (name, then status) reach it together, in one message with the last
// state, once the interval is over, and not before. The interval is long, so that "at
// once" and "held" stay apart on a slow machine.
func TestProfileChangesOfOneSittingGoTogether(t *testing.T) {
	const interval = 5 * time.Second
	e := startEnv(t, options{extra: roomy + "\n\t\toutbox {\n\t\t\tprofile_interval 5s\n\t\t}"})
	const ada, bob = "919812354011", "919812354012"
	tokAda := e.login(form, "+"+ada, ada)
	tokBob := e.login(form, "+"+bob, bob)
	contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": tokBob, "phones": ada}))
	ofAda := func() []notification {
		var out []notification
		for _, n := range e.notifications() {
			if n.from == ada && n.body["phone"] == ada && n.body["subject"] == "" {
				out = append(out, n)
			}
		}
		return out
	}

	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": tokAda, "status": "first"}), "profile")
	waitWithin(t, interval/2, "the first change to go out at once", func() bool { return len(ofAda()) == 1 })
	waitFor(t, "the first update to be settled", func() bool { return e.count("SELECT COUNT(*) FROM messenger_outbox") == 0 })
	sent := time.UnixMilli(int64(e.count("SELECT sent_ms FROM messenger_profile_sent WHERE phone = ?", ada)))

	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": tokAda, "name": "Ada Two"}), "profile")
	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": tokAda, "status": "second"}), "profile")
	if due := e.count("SELECT next_attempt FROM messenger_outbox WHERE waiting = ?", ada); int64(due) != sent.Add(interval).UnixMilli() {
		t.Fatalf("the two changes' update is due at %d, want %d: the interval after the first went out", due, sent.Add(interval).UnixMilli())
	}
	if n := e.count("SELECT COUNT(*) FROM messenger_outbox"); n != 1 {
		t.Fatalf("%d rows queued for the two changes, want one update", n)
	}
	looked := 0
	for ; time.Until(sent.Add(interval)) > 100*time.Millisecond; looked++ {
		if n := len(ofAda()); n != 1 {
			t.Fatalf("%d updates of Ada %v after the first went out, want 1 within the interval", n, time.Since(sent))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if looked == 0 {
		t.Fatal("the interval was over before the changes were made: too slow to tell")
	}
	waitWithin(t, 5*time.Second, "the held update to go out", func() bool { return len(ofAda()) == 2 })
	waitFor(t, "the outbox to drain", func() bool { return e.count("SELECT COUNT(*) FROM messenger_outbox") == 0 })
	got := ofAda()
	if len(got) != 2 {
		t.Fatalf("%d updates of Ada, want 2", len(got))
	}
	for i, want := range []struct{ name, status string }{{"", "first"}, {"Ada Two", "second"}} {
		b := got[i].body
		if !slices.Equal(got[i].to, []string{bob}) || b["status"] != want.status || b["name"] != want.name {
			t.Errorf("update %d: to %v, name %q, status %q; want to Bob, name %q, status %q", i, got[i].to, b["name"], b["status"], want.name, want.status)
		}
	}
	if ts0, ts1 := got[0].body["ts"].(float64), got[1].body["ts"].(float64); ts1 <= ts0 {
		t.Errorf("ts %v then %v, want growing", ts0, ts1)
	}
}

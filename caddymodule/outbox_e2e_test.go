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

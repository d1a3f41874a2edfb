package mesibotest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
)

func post(t *testing.T, s *mesibotest.Server, contentType, body string) map[string]any {
	t.Helper()
	// Errorf, not Fatalf: TestConcurrent calls this from other goroutines.
	resp, err := http.Post(s.URL, contentType, strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return nil
	}
	defer resp.Body.Close()
	var a map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Errorf("answer to %s: %v", body, err)
	}
	return a
}

func form(t *testing.T, s *mesibotest.Server, v url.Values) map[string]any {
	t.Helper()
	return post(t, s, "application/x-www-form-urlencoded", v.Encode())
}

func TestFormEncoding(t *testing.T) {
	s := mesibotest.NewServer(t, "app")
	a := form(t, s, url.Values{"op": {"useradd"}, "token": {"app"}, "addr": {"alice"}, "appid": {"x"}, "name": {"Alice"}, "expiry": {"60"}})
	user, _ := a["user"].(map[string]any)
	if a["result"] != true || user["uid"] != "1001" || len(fmt.Sprint(user["token"])) < 32 {
		t.Errorf("form useradd answered %v, want uid as the string \"1001\"", a)
	}
	if u := s.Users()["alice"]; u.UID != 1001 || u.AppID != "x" || u.Name != "Alice" || u.Token != user["token"] {
		t.Errorf("fake user = %+v", u)
	}
	a = post(t, s, "application/json", `{"op":"useradd","token":"app","user":{"address":"alice","token":{"appid":"x"}}}`)
	if again, _ := a["user"].(map[string]any); again["uid"] != float64(1001) || again["token"] == user["token"] {
		t.Errorf("JSON useradd answered %v, want uid as the number 1001 and a new token", a)
	}

	a = form(t, s, url.Values{"op": {"message"}, "token": {"app"}, "from": {"a"}, "to": {"b"}, "msg": {"hi"}, "flag": {"4"}})
	if a["result"] != true || a["mid"] != "1" || len(s.Messages()) != 1 || s.Messages()[0].Fields["msg"] != "hi" {
		t.Errorf("form message answered %v; messages %v", a, s.Messages())
	}
}

func TestRefusals(t *testing.T) {
	s := mesibotest.NewServer(t, "app")
	for body, code := range map[string]string{
		`{"op":"useradd","token":"wrong","user":{"address":"a"}}`: "AUTHFAIL",
		`{"op":"nosuchop","token":"app"}`:                         "BADOP",
		`{"op":"groupdel","token":"app","gid":5001}`:              "BADGROUP",
	} {
		t.Run(body, func(t *testing.T) {
			if a := post(t, s, "application/json", body); a["result"] != false || a["error"] != code {
				t.Errorf("answered %v, want error %s", a, code)
			}
		})
	}
	if n := len(s.Calls()); n != 3 {
		t.Errorf("recorded %d calls, want 3", n)
	}
}

func TestFailures(t *testing.T) {
	s := mesibotest.NewServer(t, "app")
	s.FailNext("message", 1, mesibotest.Failure{Refuse: "LATER"})
	s.FailAll("", mesibotest.Failure{Status: http.StatusTeapot})
	msg := url.Values{"op": {"message"}, "token": {"app"}}
	if a := form(t, s, msg); a["error"] != "LATER" {
		t.Errorf("FailNext: %v", a)
	}
	resp, err := http.PostForm(s.URL, msg)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("FailAll: status %d", resp.StatusCode)
	}
	s.Reset()
	if a := form(t, s, msg); a["result"] != true {
		t.Errorf("after Reset: %v", a)
	}
	if n := len(s.CallsOf("message")); n != 3 {
		t.Errorf("CallsOf(message) = %d, want 3", n)
	}
}

func TestConcurrent(t *testing.T) {
	s := mesibotest.NewServer(t, "app")
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			a := form(t, s, url.Values{"op": {"groupadd"}, "token": {"app"}, "name": {fmt.Sprint("g", i)}, "m": {"a,b"}})
			gid, _ := a["group"].(map[string]any)["gid"].(string)
			form(t, s, url.Values{"op": {"groupeditmembers"}, "token": {"app"}, "gid": {gid}, "m": {"c"}, "delete": {"0"}})
			_ = s.Groups()
			_ = s.Calls()
		})
	}
	wg.Wait()
	groups := s.Groups()
	if len(groups) != 10 {
		t.Fatalf("%d groups, want 10", len(groups))
	}
	for gid, g := range groups {
		if gid < 5001 || gid > 5010 || fmt.Sprint(g.Members) != "[a b c]" {
			t.Errorf("group %d = %+v", gid, g)
		}
	}
}

// TestGroupSetModes: groupset replaces the member list, or with GroupSetAdds adds to it;
// groupeditmembers with delete removes either way.
func TestGroupSetModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		adds     bool
		afterSet string
	}{
		{"replaces", false, "[b]"},
		{"adds", true, "[a c b]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mesibotest.NewServer(t, "app")
			s.GroupSetAdds(tc.adds)
			form(t, s, url.Values{"op": {"groupadd"}, "token": {"app"}, "name": {"g"}, "m": {"a,c"}})
			form(t, s, url.Values{"op": {"groupset"}, "token": {"app"}, "gid": {"5001"}, "m": {"b"}})
			if got := fmt.Sprint(s.Groups()[5001].Members); got != tc.afterSet {
				t.Errorf("after groupset: %s, want %s", got, tc.afterSet)
			}
			form(t, s, url.Values{"op": {"groupeditmembers"}, "token": {"app"}, "gid": {"5001"}, "m": {"a,c"}, "delete": {"1"}})
			if got := fmt.Sprint(s.Groups()[5001].Members); got != "[b]" {
				t.Errorf("after groupeditmembers delete: %s, want [b]", got)
			}
		})
	}
}

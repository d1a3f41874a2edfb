package caddymodule_test

import (
	"database/sql"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/pflag"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/caddy-messenger/messenger/caddymodule"
	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/store"
)

// embeddedWorld logs three users in on a server configured with neither database nor
// redis, gives them contacts, a profile and a group, and returns their tokens and the
// group's id.
func embeddedWorld(t *testing.T, e *env) (tokens []string, gid string) {
	t.Helper()
	if _, err := os.Stat(strings.TrimPrefix(e.dsn, store.EmbeddedPrefix)); err != nil {
		t.Fatalf("the embedded store is not in Caddy's data directory: %v", err)
	}
	phones := []string{"919812345001", "919812345002", "919812345003"}
	for _, p := range phones {
		tokens = append(tokens, e.login(form, "+"+p, p))
	}
	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": tokens[1], "name": "Bob", "status": "on a train"}), "profile")
	got := contactsOf(t, e.call(jsonBody, map[string]any{"op": "getcontacts", "token": tokens[0], "phones": phones[1:]}))
	if !slices.Equal(keys(got), phones[1:]) || got[phones[1]]["name"] != "Bob" {
		t.Fatalf("contacts on the embedded store: %v", got)
	}
	a := e.call(form, map[string]any{"op": "setgroup", "token": tokens[0], "name": "Trip", "m": phones[1] + "," + phones[2]})
	expectOK(t, a, "setgroup")
	return tokens, a.str("gid")
}

// checkWorld asserts what embeddedWorld made is all still there.
func checkWorld(t *testing.T, e *env, tokens []string, gid string) {
	t.Helper()
	got := contactsOf(t, e.call(query, map[string]any{"op": "getcontacts", "token": tokens[0], "ts": 0}))
	if got["919812345002"]["status"] != "on a train" || got["919812345003"] == nil {
		t.Errorf("contacts after the move: %v", got)
	}
	group := got["group:"+gid]
	if group == nil || group["name"] != "Trip" || !strings.Contains(group["members"].(string), "919812345003") {
		t.Errorf("group after the move: %v", group)
	}
	a := e.call(form, map[string]any{"op": "getgroup", "token": tokens[2], "gid": gid})
	expectOK(t, a, "getgroup")
}

// TestEmbeddedRestartKeepsData: with nothing configured, the store is a file in Caddy's
// data directory that outlives the process's state: after a stop and start, tokens,
// contacts and groups are there, and logins work again.
func TestEmbeddedRestartKeepsData(t *testing.T) {
	e := startEnv(t, options{extra: roomy, defaults: true})
	tokens, gid := embeddedWorld(t, e)

	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	e.tester.InitServer(e.config, "caddyfile")
	checkWorld(t, e, tokens, gid)
	// Codes lived in memory and are gone; a new login works.
	e.login(jsonBody, "+919812345004", "919812345004")
	if n := e.count("SELECT COUNT(*) FROM users"); n != 4 {
		t.Errorf("users after restart and a new login = %d, want 4", n)
	}
}

// TestMoveEmbeddedToMySQL: the migration path of a growing deployment. Data made on the
// embedded store is copied by `caddy messenger-copy` into MySQL, and a server configured
// with that database answers with the same users, tokens, contacts and groups.
func TestMoveEmbeddedToMySQL(t *testing.T) {
	e := startEnv(t, options{extra: roomy, defaults: true})
	tokens, gid := embeddedWorld(t, e)
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}

	mysqlDSN := testenv.MySQLDatabase(t)
	flags := copyFlags(t, "--from", e.dsn, "--to", mysqlDSN)
	if code, err := caddymodule.CmdCopy(flags); code != 0 || err != nil {
		t.Fatalf("messenger-copy: exit %d, %v", code, err)
	}
	embedded := e.db
	e.db = testenv.Open(t, mysqlDSN)
	for _, table := range []string{"users", "tokens", "contacts", "groups", "members", "messenger_outbox"} {
		if a, b := countIn(t, embedded, table), e.count("SELECT COUNT(*) FROM `"+table+"`"); a != b {
			t.Errorf("%s: %d rows embedded, %d in MySQL", table, a, b)
		}
	}

	e.config = strings.Replace(e.config, "messenger @api {", "messenger @api {\n\t\tdatabase \""+mysqlDSN+"\"", 1)
	e.tester.InitServer(e.config, "caddyfile")
	checkWorld(t, e, tokens, gid)

	// A second copy would merge into live data: refused.
	if code, err := caddymodule.CmdCopy(flags); code == 0 || err == nil {
		t.Errorf("a copy into a populated database succeeded")
	}
}

// copyFlags are the flags of `caddy messenger-copy args...`.
func copyFlags(t *testing.T, args ...string) caddycmd.Flags {
	t.Helper()
	flags := pflag.NewFlagSet("messenger-copy", pflag.ContinueOnError)
	for _, name := range []string{"from", "to", "files-from", "files-to"} {
		flags.String(name, "", "")
	}
	if err := flags.Parse(args); err != nil {
		t.Fatal(err)
	}
	return caddycmd.Flags{FlagSet: flags}
}

func countIn(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM `" + table + "`").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEmbeddedReloadKeepsCodes: codes and counters in memory outlive a config reload,
// even one that changes the code rules: a code requested before verifies after.
func TestEmbeddedReloadKeepsCodes(t *testing.T) {
	e := startEnv(t, options{extra: roomy, defaults: true})
	expectOK(t, e.call(form, map[string]any{"op": "login", "phone": "+919812345001", "appid": "com.example.app"}), "login")
	code := e.hook.lastCode("919812345001")

	e.config = strings.Replace(e.config, "otp {", "otp {\n\t\t\tttl 6m", 1)
	e.tester.InitServer(e.config, "caddyfile")
	a := e.call(form, map[string]any{"op": "login", "phone": "+919812345001", "appid": "com.example.app", "otp": code})
	expectOK(t, a, "login")
	if a.str("token") == "" {
		t.Fatalf("no token after the reload: %s", a.raw)
	}
}

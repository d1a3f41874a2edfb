// Package testenv gives tests a database and a Redis key space of their own.
//
// By default (MESSENGER_TEST_STORE unset or "embedded") the database is an SQLite file of
// the test's own and nothing else needs to run: `go test ./...` passes on a fresh clone.
// With MESSENGER_TEST_STORE=mysql the database is a MariaDB database of the test's own on
// the server that scripts/test.sh starts, and the tests of what only MySQL and Redis have
// run too; the others skip with a line saying why. scripts/test.sh runs the suite each way.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/caddy-messenger/messenger/store"
)

// ServerDSN is the DSN (without a database) of a user that may create and drop
// databases named messenger_test_*: $MESSENGER_TEST_DSN, or the user scripts/test.sh makes.
func ServerDSN() string {
	if dsn := os.Getenv("MESSENGER_TEST_DSN"); dsn != "" {
		return dsn
	}
	return "messenger_test:messenger_test@tcp(127.0.0.1:3306)/"
}

// RedisURL is the Redis the tests use: $MESSENGER_TEST_REDIS or the local default.
func RedisURL() string {
	if u := os.Getenv("MESSENGER_TEST_REDIS"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Embedded reports whether this run tests the embedded store (SQLite, no Redis): every
// run but MESSENGER_TEST_STORE=mysql.
func Embedded() bool { return os.Getenv("MESSENGER_TEST_STORE") != "mysql" }

// SkipIfEmbedded skips a test of something only MySQL and Redis have (several instances,
// outages of a server), saying why.
func SkipIfEmbedded(t testing.TB, why string) {
	t.Helper()
	if Embedded() {
		t.Skip("needs MySQL and Redis (MESSENGER_TEST_STORE=mysql): " + why)
	}
}

// Prefix is a key prefix of the test's own, for the Redis keys or in-memory pools of a
// server under test.
func Prefix() string { return "test:" + randomHex(6) + ":" }

// Database creates an empty database for the test, dropped when it ends, and returns
// its DSN: a MariaDB database, or on the embedded run a "sqlite:" file in a temporary
// folder.
func Database(t testing.TB) string {
	t.Helper()
	if Embedded() {
		return store.EmbeddedPrefix + filepath.Join(t.TempDir(), "messenger.db")
	}
	return MySQLDatabase(t)
}

// MySQLDatabase is Database on MariaDB (for tests of moving data there); it skips the
// test on an embedded run.
func MySQLDatabase(t testing.TB) string {
	t.Helper()
	SkipIfEmbedded(t, "it moves data to MySQL")
	cfg, err := mysql.ParseDSN(ServerDSN())
	if err != nil {
		t.Fatalf("testenv: MESSENGER_TEST_DSN: %v", err)
	}
	server, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { server.Close() })
	name := "messenger_test_" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := server.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4"); err != nil {
		t.Fatalf("testenv: create database (did scripts/test.sh set up the test user?): %v", err)
	}
	t.Cleanup(func() { server.Exec("DROP DATABASE IF EXISTS " + name) })
	cfg.DBName = name
	return cfg.FormatDSN()
}

// Open opens dsn (as Database returns it) for direct checks on rows, closed when the
// test ends. On SQLite, checks should be written in SQL both databases take.
func Open(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	driver := "mysql"
	if path, ok := store.CutEmbedded(dsn); ok {
		driver, dsn = "sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_time_format=sqlite"
	}
	if driver == "mysql" {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		cfg.Params["time_zone"] = "'+00:00'" // times read back in UTC, as the store writes them
		dsn = cfg.FormatDSN()
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Redis returns a client of the test Redis and a key prefix of the test's own; keys
// under it are deleted when the test ends. It skips the test on an embedded run.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	SkipIfEmbedded(t, "it is about Redis")
	opts, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatalf("testenv: MESSENGER_TEST_REDIS: %v", err)
	}
	rdb := redis.NewClient(opts)
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("testenv: redis at %s: %v", RedisURL(), err)
	}
	prefix := Prefix()
	t.Cleanup(func() {
		ctx := context.Background()
		// redis_rate puts its own "rate:" before the limiter's prefix.
		for _, pattern := range []string{prefix + "*", "rate:" + prefix + "*"} {
			iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
			for iter.Next(ctx) {
				rdb.Del(ctx, iter.Val())
			}
		}
		rdb.Close()
	})
	return rdb, prefix
}

// Dump renders every row of query as "a:b:c", rows joined by commas: a snapshot of
// tables for comparing before and after, in SQL that both databases take.
func Dump(t testing.TB, db *sql.DB, query string) string {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		values := make([]sql.NullString, len(cols))
		dests := make([]any, len(cols))
		for i := range values {
			dests[i] = &values[i]
		}
		if err := rows.Scan(dests...); err != nil {
			t.Fatal(err)
		}
		fields := make([]string, len(cols))
		for i, v := range values {
			fields[i] = v.String
		}
		out = append(out, strings.Join(fields, ":"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, ",")
}

// MemberRoles reads the members rows of group gid: phone → role.
func MemberRoles(t testing.TB, db *sql.DB, gid int64) map[string]int {
	t.Helper()
	rows, err := db.Query("SELECT phone, role FROM members WHERE gid = ?", gid)
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
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

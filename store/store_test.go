package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/store"
)

var wantTables = []string{"contacts", "groups", "members", "messenger_outbox", "messenger_profile_sent", "names", "notifytokens", "schema_migrations", "tokens", "users"}

// latestVersion is the number of the newest migration.
const latestVersion = 7

// Columns of the original tables (PROTOCOL.md §6), in the original's order.
var wantColumns = map[string]string{
	"users":        "uid,name,phone,cc,status,photo,credits,flag,ts,n",
	"tokens":       "uid,token,updatetime,expirytime,ipaddr,device,createdby",
	"contacts":     "uid,phone,subscribed",
	"groups":       "gid,name,status,photo,flag,type,ts",
	"members":      "gid,phone,role",
	"notifytokens": "uid,device,token,production",
	"names":        "name,status",
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openStore(t *testing.T, dsn string) *store.Store {
	t.Helper()
	s, err := store.Open(dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readyStore returns a migrated Store on a fresh database and a pool for checking rows.
func readyStore(t *testing.T) (*store.Store, *sql.DB) {
	t.Helper()
	dsn := testenv.Database(t)
	s := openStore(t, dsn)
	if err := s.Ready(ctxT(t)); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	return s, testenv.Open(t, dsn)
}

// The schema checks read the catalogue of whichever database the run tests.
var (
	tablesQuery = map[bool]string{
		false: "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()",
		true:  "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
	}[testenv.Embedded()]
	columnsQuery = map[bool]string{
		false: `SELECT GROUP_CONCAT(column_name ORDER BY ordinal_position)
			FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?`,
		true: "SELECT group_concat(name) FROM (SELECT name FROM pragma_table_info(?) ORDER BY cid)",
	}[testenv.Embedded()]
	// uniqueQuery counts the unique keys made of the one column given.
	uniqueQuery = map[bool]string{
		false: `SELECT COUNT(*) FROM information_schema.statistics s WHERE s.table_schema = DATABASE() AND s.table_name = ?
			AND s.column_name = ? AND s.non_unique = 0 AND (SELECT COUNT(*) FROM information_schema.statistics o
			WHERE o.table_schema = s.table_schema AND o.table_name = s.table_name AND o.index_name = s.index_name) = 1`,
		true: `SELECT COUNT(*) FROM pragma_index_list(?1) l WHERE l."unique" = 1
			AND (SELECT group_concat(name) FROM pragma_index_info(l.name)) = ?2`,
	}[testenv.Embedded()]
)

func tables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(ctxT(t), tablesQuery)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func columns(t *testing.T, db *sql.DB, table string) string {
	t.Helper()
	var cols string
	err := db.QueryRowContext(ctxT(t), columnsQuery, table).Scan(&cols)
	if err != nil {
		t.Fatal(err)
	}
	return cols
}

func checkMigrationVersion(t *testing.T, db *sql.DB) {
	t.Helper()
	rows, err := db.QueryContext(ctxT(t), "SELECT version, dirty FROM schema_migrations")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
		var version int64
		var dirty bool
		if err := rows.Scan(&version, &dirty); err != nil {
			t.Fatal(err)
		}
		if version != latestVersion || dirty {
			t.Errorf("schema_migrations = (version %d, dirty %v), want (%d, false)", version, dirty, latestVersion)
		}
	}
	if n != 1 {
		t.Errorf("schema_migrations has %d rows, want 1", n)
	}
}

func count(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(ctxT(t), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestReadyOnANewerSchema: a database that a newer build migrated past this build's last
// migration (a rolling upgrade) is used as it is, not refused; one left dirty is refused.
func TestReadyOnANewerSchema(t *testing.T) {
	dsn := testenv.Database(t)
	if err := openStore(t, dsn).Ready(ctxT(t)); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	db := testenv.Open(t, dsn)
	if _, err := db.Exec("UPDATE schema_migrations SET version = ?", latestVersion+1); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dsn)
	if err := s.Ready(ctxT(t)); err != nil {
		t.Fatalf("Ready on a newer schema: %v", err)
	}
	if _, err := s.CallerByToken(ctxT(t), tokenA); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CallerByToken on a newer schema = %v, want ErrNotFound", err)
	}
	if n := count(t, db, "SELECT version FROM schema_migrations"); n != latestVersion+1 {
		t.Errorf("schema version %d, want %d left as it was", n, latestVersion+1)
	}
	// A newer build's migration that failed halfway (dirty) is not run on.
	if _, err := db.Exec("UPDATE schema_migrations SET dirty = 1"); err != nil {
		t.Fatal(err)
	}
	if err := openStore(t, dsn).Ready(ctxT(t)); err == nil {
		t.Error("Ready on a dirty newer schema succeeded, want an error")
	}
}

func TestReadyCreatesSchema(t *testing.T) {
	dsn := testenv.Database(t)
	db := testenv.Open(t, dsn)
	if got := tables(t, db); len(got) != 0 {
		t.Fatalf("fresh database has tables %v", got)
	}
	s := openStore(t, dsn)
	if err := s.Ready(ctxT(t)); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if got := tables(t, db); strings.Join(got, ",") != strings.Join(wantTables, ",") {
		t.Fatalf("tables = %v, want %v", got, wantTables)
	}
	for table, want := range wantColumns {
		if got := columns(t, db, table); got != want {
			t.Errorf("columns of %s = %s, want %s", table, got, want)
		}
	}
	// Keys the protocol relies on: unique phone, one token row per user.
	if n := count(t, db, uniqueQuery, "users", "phone"); n != 1 {
		t.Errorf("users.phone is not unique")
	}
	if n := count(t, db, uniqueQuery, "tokens", "uid"); n != 1 {
		t.Errorf("tokens.uid is not unique")
	}
	checkMigrationVersion(t, db)

	// Again on the same Store, and on a new Store: no change, no error, rows kept.
	if _, err := db.Exec("INSERT INTO users (uid, phone, name) VALUES (7, 919800000007, 'kept')"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctxT(t)); err != nil {
		t.Fatalf("second Ready: %v", err)
	}
	s2 := openStore(t, dsn)
	if err := s2.Ready(ctxT(t)); err != nil {
		t.Fatalf("Ready of a second Store on a migrated database: %v", err)
	}
	if got := tables(t, db); strings.Join(got, ",") != strings.Join(wantTables, ",") {
		t.Fatalf("tables after second Ready = %v", got)
	}
	checkMigrationVersion(t, db)
	if n := count(t, db, "SELECT COUNT(*) FROM users WHERE uid = 7 AND name = 'kept'"); n != 1 {
		t.Errorf("row lost by a second Ready")
	}
}

// The original backend's DDL, as it created the tables (zero-date default included).
const originalSchema = "CREATE TABLE `users` (\n" +
	"  `uid` int(10) unsigned NOT NULL DEFAULT '0',\n" +
	"  `name` blob,\n" +
	"  `phone` bigint(20) unsigned NOT NULL DEFAULT '0',\n" +
	"  `cc` int(10) unsigned DEFAULT '0',\n" +
	"  `status` blob,\n" +
	"  `photo` varchar(128) COLLATE utf8mb4_unicode_ci DEFAULT '',\n" +
	"  `credits` float(9,4) NOT NULL DEFAULT '0.0000',\n" +
	"  `flag` int(11) unsigned DEFAULT '0',\n" +
	"  `ts` int(10) unsigned DEFAULT '0',\n" +
	"  `n` blob,\n" +
	"  PRIMARY KEY (`uid`),\n" +
	"  UNIQUE KEY `phone` (`phone`),\n" +
	"  KEY `ts` (`ts`)\n" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;\n" +
	"CREATE TABLE `tokens` (\n" +
	"  `uid` int(10) unsigned DEFAULT NULL,\n" +
	"  `token` char(64) NOT NULL DEFAULT '0',\n" +
	"  `updatetime` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,\n" +
	"  `expirytime` timestamp NOT NULL DEFAULT '0000-00-00 00:00:00',\n" +
	"  `ipaddr` int(11) unsigned NOT NULL DEFAULT '0',\n" +
	"  `device` int(10) unsigned DEFAULT '0',\n" +
	"  `createdby` int(10) unsigned DEFAULT '0',\n" +
	"  PRIMARY KEY (`token`),\n" +
	"  UNIQUE KEY `uid_index` (`uid`),\n" +
	"  KEY `ip_index` (`ipaddr`)\n" +
	") ENGINE=InnoDB DEFAULT CHARSET=ascii;\n" +
	"CREATE TABLE `contacts` (\n" +
	"  `uid` int(10) unsigned NOT NULL DEFAULT '0',\n" +
	"  `phone` bigint(20) unsigned NOT NULL DEFAULT '0',\n" +
	"  `subscribed` tinyint(4) DEFAULT '0',\n" +
	"  UNIQUE KEY `uphone` (`uid`,`phone`)\n" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;\n" +
	"CREATE TABLE `groups` (\n" +
	"  `gid` int(10) unsigned NOT NULL DEFAULT '0',\n" +
	"  `name` blob,\n" +
	"  `status` char(2) COLLATE utf8mb4_unicode_ci DEFAULT '',\n" +
	"  `photo` varchar(128) COLLATE utf8mb4_unicode_ci DEFAULT '',\n" +
	"  `flag` int(11) unsigned DEFAULT '0',\n" +
	"  `type` tinyint(3) unsigned NOT NULL DEFAULT '0',\n" +
	"  `ts` int(10) unsigned DEFAULT '0',\n" +
	"  PRIMARY KEY (`gid`),\n" +
	"  KEY `ts` (`ts`)\n" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;\n" +
	"CREATE TABLE `members` (\n" +
	"  `gid` int(10) unsigned NOT NULL DEFAULT '0',\n" +
	"  `phone` bigint(20) unsigned NOT NULL DEFAULT '0',\n" +
	"  `role` tinyint(4) DEFAULT '0',\n" +
	"  UNIQUE KEY `gid_2` (`gid`,`phone`),\n" +
	"  KEY `gid` (`gid`)\n" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8;\n" +
	"CREATE TABLE `notifytokens` (\n" +
	"  `uid` int(10) unsigned NOT NULL DEFAULT '0',\n" +
	"  `device` tinyint(3) unsigned DEFAULT '0',\n" +
	"  `token` varchar(256) COLLATE utf8mb4_unicode_ci DEFAULT '',\n" +
	"  `production` tinyint(3) unsigned DEFAULT '0',\n" +
	"  PRIMARY KEY (`uid`)\n" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;\n" +
	"CREATE TABLE `names` (\n" +
	"  `name` varchar(128) COLLATE utf8mb4_unicode_ci DEFAULT '',\n" +
	"  `status` varchar(128) COLLATE utf8mb4_unicode_ci DEFAULT ''\n" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;\n"

// rowDump renders every row of a table as text, for before/after comparisons.
func rowDump(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	cols := strings.Split(wantColumns[table], ",")
	exprs := make([]string, len(cols))
	for i, c := range cols {
		exprs[i] = "COALESCE(HEX(CAST(`" + c + "` AS CHAR)), 'NULL')"
	}
	q := "SELECT CONCAT_WS('|', " + strings.Join(exprs, ", ") + ") FROM `" + table + "` ORDER BY 1"
	rows, err := db.QueryContext(ctxT(t), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAdoptOriginalDatabase(t *testing.T) {
	testenv.SkipIfEmbedded(t, "the original backend's database is MySQL")
	dsn := testenv.Database(t)
	db := testenv.Open(t, dsn)
	ctx := ctxT(t)

	// The original ran without strict mode, which its zero-date default needs.
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "SET SESSION sql_mode = ''"); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range strings.Split(originalSchema, ";\n") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("original DDL: %v\n%s", err, stmt)
		}
	}
	// Rows as the PHP backend wrote them: the token row carries no expirytime.
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, stmt := range []string{
		"INSERT INTO users (uid, phone, cc, name, status, photo, ts) VALUES (4242, 919812345678, 91, 'Ada', 'hello', '1592891231-0011223344556677.jpg', 1592891231)",
		"INSERT INTO tokens (uid, token, ipaddr, device) VALUES (4242, '" + token + "', 16909060, 1)",
		"INSERT INTO contacts (uid, phone, subscribed) VALUES (4242, 919800000001, 0)",
		"INSERT INTO `groups` (gid, name, ts) VALUES (77, 'Friends', 1592891231)",
		"INSERT INTO members (gid, phone, role) VALUES (77, 919812345678, 2)",
		"INSERT INTO notifytokens (uid, device, token, production) VALUES (4242, 1, 'push', 1)",
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	conn.Close()
	var zero int
	if err := db.QueryRow("SELECT COUNT(*) FROM tokens WHERE CAST(expirytime AS CHAR) = '0000-00-00 00:00:00'").Scan(&zero); err != nil || zero != 1 {
		t.Fatalf("setup: the token row has no zero expirytime (%d, %v)", zero, err)
	}
	before := map[string][]string{}
	for table := range wantColumns {
		before[table] = rowDump(t, db, table)
	}

	s := openStore(t, dsn)
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready on the original's database: %v", err)
	}
	if got := tables(t, db); strings.Join(got, ",") != strings.Join(wantTables, ",") {
		t.Fatalf("tables = %v, want %v", got, wantTables)
	}
	checkMigrationVersion(t, db)
	for table, rows := range before {
		after := rowDump(t, db, table)
		if strings.Join(after, "\n") != strings.Join(rows, "\n") {
			t.Errorf("rows of %s changed by Ready:\nbefore %q\nafter  %q", table, rows, after)
		}
	}

	caller, err := s.CallerByToken(ctx, token)
	if err != nil {
		t.Fatalf("CallerByToken with the original's zero-date token: %v", err)
	}
	want := store.User{UID: 4242, Phone: "919812345678", CC: 91, Name: "Ada", Status: "hello", Photo: "1592891231-0011223344556677.jpg", TS: 1592891231}
	if caller.User != want {
		t.Errorf("CallerByToken = %+v, want %+v", caller, want)
	}

	// A new login of that user replaces the original token row under strict mode.
	const newToken = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	u, isNew, err := s.SaveLogin(ctx, store.Login{UID: 4242, Phone: "919812345678", CC: 91, Token: newToken,
		Expiry: time.Now().Add(time.Hour), TS: 1700000000}, nil)
	if err != nil {
		t.Fatalf("SaveLogin on the adopted database: %v", err)
	}
	if isNew || u.Name != "Ada" || u.TS != 1700000000 {
		t.Errorf("SaveLogin = %+v isNew %v", u, isNew)
	}
	if _, err := s.CallerByToken(ctx, token); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old token after a new login: %v, want ErrNotFound", err)
	}
	if _, err := s.CallerByToken(ctx, newToken); err != nil {
		t.Errorf("new token: %v", err)
	}
}

func TestConcurrentReady(t *testing.T) {
	dsn := testenv.Database(t)
	stores := []*store.Store{openStore(t, dsn), openStore(t, dsn)}
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, s := range stores {
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func(s *store.Store) {
				defer wg.Done()
				errs <- s.Ready(ctx)
			}(s)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Ready: %v", err)
		}
	}
	db := testenv.Open(t, dsn)
	if got := tables(t, db); strings.Join(got, ",") != strings.Join(wantTables, ",") {
		t.Fatalf("tables = %v, want %v", got, wantTables)
	}
	checkMigrationVersion(t, db)
}

// Ready must not leave connections behind: Caddy provisions a new Store on every config
// reload, so a connection kept per Ready would pile up on the server.
func TestReadyLeavesNoConnection(t *testing.T) {
	testenv.SkipIfEmbedded(t, "counts connections on the MySQL server")
	dsn := testenv.Database(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := testenv.Open(t, dsn)
	db.SetMaxOpenConns(1)
	conns := func() int {
		return count(t, db, "SELECT COUNT(*) FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()", cfg.DBName)
	}
	if n := conns(); n != 0 {
		t.Fatalf("setup: %d connections before Ready", n)
	}
	for i := 0; i < 3; i++ {
		s, err := store.Open(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Ready(ctxT(t)); err != nil {
			t.Fatalf("Ready: %v", err)
		}
		s.Close()
	}
	// Give the server a moment to notice closed sockets.
	deadline := time.Now().Add(2 * time.Second)
	n := conns()
	for n != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		n = conns()
	}
	if n != 0 {
		t.Errorf("%d connections to the database are still open after 3 Stores ran Ready and were closed", n)
	}
}

const tokenA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const tokenB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

func TestSaveLogin(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	expiry := time.Now().Add(365 * 24 * time.Hour).Truncate(time.Second)

	u, isNew, err := s.SaveLogin(ctx, store.Login{UID: 1001, Phone: "919812345678", CC: 91, Name: "Ada",
		Token: tokenA, Expiry: expiry, IPv4: 0x01020304, Device: 1, TS: 1700000000}, nil)
	if err != nil {
		t.Fatalf("SaveLogin: %v", err)
	}
	if !isNew {
		t.Errorf("first login: isNew = false")
	}
	want := store.User{UID: 1001, Phone: "919812345678", CC: 91, Name: "Ada", TS: 1700000000}
	if u != want {
		t.Errorf("SaveLogin user = %+v, want %+v", u, want)
	}
	var (
		uid, cc, ts int64
		phone, name string
	)
	if err := db.QueryRow("SELECT uid, phone, cc, ts, name FROM users").Scan(&uid, &phone, &cc, &ts, &name); err != nil {
		t.Fatal(err)
	}
	if uid != 1001 || phone != "919812345678" || cc != 91 || ts != 1700000000 || name != "Ada" {
		t.Errorf("users row = (%d, %s, %d, %d, %q)", uid, phone, cc, ts, name)
	}
	var (
		tok             string
		exp, ip, dev    int64
		tokUID, nTokens int64
	)
	var expText string
	if err := db.QueryRow("SELECT uid, token, expirytime, ipaddr, device FROM tokens").Scan(&tokUID, &tok, &expText, &ip, &dev); err != nil {
		t.Fatal(err)
	}
	if e, err := time.Parse("2006-01-02 15:04:05", expText); err != nil {
		t.Errorf("expirytime %q: %v", expText, err)
	} else {
		exp = e.Unix()
	}
	if tokUID != 1001 || tok != tokenA || exp != expiry.Unix() || ip != 0x01020304 || dev != 1 {
		t.Errorf("tokens row = (%d, %s, %d, %d, %d), want (1001, %s, %d, %d, 1)", tokUID, tok, exp, ip, dev, tokenA, expiry.Unix(), 0x01020304)
	}
	if got, err := s.CallerByToken(ctx, tokenA); err != nil || got.User != want {
		t.Errorf("CallerByToken = %+v, %v; want %+v", got, err, want)
	}

	// Second login, same phone and uid, new token, another name: name kept, token replaced.
	u, isNew, err = s.SaveLogin(ctx, store.Login{UID: 1001, Phone: "919812345678", CC: 91, Name: "Mallory",
		Token: tokenB, Expiry: expiry, Device: 2, TS: 1700000100}, nil)
	if err != nil {
		t.Fatalf("second SaveLogin: %v", err)
	}
	if isNew {
		t.Errorf("second login: isNew = true")
	}
	if u.Name != "Ada" || u.TS != 1700000100 || u.UID != 1001 {
		t.Errorf("second SaveLogin user = %+v, want name Ada kept, ts 1700000100", u)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM tokens WHERE uid = 1001").Scan(&nTokens); err != nil || nTokens != 1 {
		t.Fatalf("tokens rows for uid 1001 = %d (%v), want 1", nTokens, err)
	}
	if err := db.QueryRow("SELECT token, device FROM tokens WHERE uid = 1001").Scan(&tok, &dev); err != nil || tok != tokenB || dev != 2 {
		t.Errorf("token row = (%s, %d, %v), want the new token, device 2", tok, dev, err)
	}
	if _, err := s.CallerByToken(ctx, tokenA); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CallerByToken(old token) = %v, want ErrNotFound", err)
	}
	if got, err := s.CallerByToken(ctx, tokenB); err != nil || got.UID != 1001 || got.Name != "Ada" {
		t.Errorf("CallerByToken(new token) = %+v, %v", got, err)
	}

	// A repeat login that changes nothing in the users row is not new either.
	if _, isNew, err = s.SaveLogin(ctx, store.Login{UID: 1001, Phone: "919812345678", CC: 91,
		Token: tokenB, Expiry: expiry, Device: 2, TS: 1700000100}, nil); err != nil || isNew {
		t.Errorf("unchanged repeat login: isNew %v, err %v", isNew, err)
	}

	// The messaging service handed the same phone a new uid: the row is kept and re-keyed,
	// and so are the user's contact list and push token.
	const tokenC = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	if err := s.SaveContacts(ctx, 1001, []string{"919800000007"}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetNotifyToken(ctx, 1001, "fcm-ada", 1, true); err != nil {
		t.Fatal(err)
	}
	u, isNew, err = s.SaveLogin(ctx, store.Login{UID: 2002, Phone: "919812345678", CC: 91,
		Token: tokenC, Expiry: expiry, TS: 1700000200}, nil)
	if err != nil {
		t.Fatalf("SaveLogin with a new uid: %v", err)
	}
	if isNew || u.UID != 2002 || u.Name != "Ada" {
		t.Errorf("new-uid login = %+v isNew %v, want uid 2002, name Ada, not new", u, isNew)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM users"); n != 1 {
		t.Errorf("users rows = %d, want 1", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM users WHERE uid = 2002 AND phone = 919812345678 AND ts = 1700000200"); n != 1 {
		t.Errorf("users row not re-keyed to uid 2002")
	}
	if got, err := s.CallerByToken(ctx, tokenC); err != nil || got.UID != 2002 {
		t.Errorf("CallerByToken(token of new uid) = %+v, %v", got, err)
	}
	if _, err := s.CallerByToken(ctx, tokenB); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CallerByToken(token of the old uid) = %v, want ErrNotFound", err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM contacts WHERE uid = 2002 AND phone = 919800000007"); n != 1 {
		t.Errorf("the contact list did not move to the new uid")
	}
	if n := count(t, db, "SELECT COUNT(*) FROM notifytokens WHERE uid = 2002 AND token = 'fcm-ada'"); n != 1 {
		t.Errorf("the push token did not move to the new uid")
	}
	if n := count(t, db, "SELECT COUNT(*) FROM tokens WHERE uid = 1001"); n != 0 {
		t.Errorf("the old uid's token row stayed")
	}

	// A user without a name gets one at a later login.
	if _, _, err := s.SaveLogin(ctx, store.Login{UID: 3003, Phone: "15550001111", CC: 1, Token: "d" + tokenA[1:], Expiry: expiry, TS: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if u, _, err := s.SaveLogin(ctx, store.Login{UID: 3003, Phone: "15550001111", CC: 1, Name: "Bob", Token: "e" + tokenA[1:], Expiry: expiry, TS: 2}, nil); err != nil || u.Name != "Bob" {
		t.Errorf("name given to a user without one = %+v, %v", u, err)
	}
}

// TestSaveLoginRefusesAnotherNumbersUID: hardening defect 3. A uid that another number's
// user has is refused, for a new number and for a known one, and nothing is written.
func TestSaveLoginRefusesAnotherNumbersUID(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	expiry := time.Now().Add(time.Hour)
	for _, l := range []store.Login{
		{UID: 1001, Phone: "919800000001", Name: "Ada", Token: tokenA, Expiry: expiry, TS: 1},
		{UID: 1002, Phone: "919800000002", Name: "Bob", Token: tokenB, Expiry: expiry, TS: 1},
	} {
		if _, _, err := s.SaveLogin(ctx, l, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := testenv.Dump(t, db, "SELECT uid, phone, name, ts FROM users ORDER BY uid")
	tokens := testenv.Dump(t, db, "SELECT uid, token FROM tokens ORDER BY uid")
	for _, tc := range []struct {
		name     string
		phone    string
		phoneUID int64
	}{{"a new number", "919855555555", 0}, {"another user's number", "919800000002", 1002}} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.SaveLogin(ctx, store.Login{UID: 1001, Phone: tc.phone, Name: "Mallory",
				Token: strings.Repeat("e", 64), Expiry: expiry, TS: 2}, nil)
			var taken *store.UIDTakenError
			if !errors.As(err, &taken) || taken.UID != 1001 || taken.PhoneUID != tc.phoneUID {
				t.Fatalf("SaveLogin(uid 1001, %s) = %v, want UIDTakenError{1001, %d}", tc.phone, err, tc.phoneUID)
			}
		})
	}
	if got := testenv.Dump(t, db, "SELECT uid, phone, name, ts FROM users ORDER BY uid"); got != before {
		t.Errorf("users %q, want %q", got, before)
	}
	if got := testenv.Dump(t, db, "SELECT uid, token FROM tokens ORDER BY uid"); got != tokens {
		t.Errorf("tokens %q, want %q", got, tokens)
	}
}

func TestCallerByTokenNotFound(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	if _, err := s.CallerByToken(ctx, tokenA); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v, want ErrNotFound", err)
	}
	if _, _, err := s.SaveLogin(ctx, store.Login{UID: 1, Phone: "919812345678", CC: 91, Token: tokenA,
		Expiry: time.Now().Add(2 * time.Minute), TS: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CallerByToken(ctx, tokenA); err != nil {
		t.Fatalf("token expiring in 2 minutes: %v", err)
	}
	if _, err := s.CallerByToken(ctx, tokenA[:63]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("prefix of a token: %v, want ErrNotFound", err)
	}
	if _, err := db.Exec("UPDATE tokens SET expirytime = '2000-01-01 00:00:00' WHERE uid = 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CallerByToken(ctx, tokenA); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired token: %v, want ErrNotFound", err)
	}

	// Expired through SaveLogin too: two minutes ago (checks the UTC handling of expiry).
	if _, _, err := s.SaveLogin(ctx, store.Login{UID: 1, Phone: "919812345678", CC: 91, Token: tokenB,
		Expiry: time.Now().Add(-2 * time.Minute), TS: 2}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CallerByToken(ctx, tokenB); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token expired 2 minutes ago: %v, want ErrNotFound", err)
	}
}

func TestLogout(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	expiry := time.Now().Add(time.Hour)
	for _, l := range []store.Login{
		{UID: 1, Phone: "919800000001", CC: 91, Token: tokenA, Expiry: expiry, TS: 1},
		{UID: 2, Phone: "919800000002", CC: 91, Token: tokenB, Expiry: expiry, TS: 1},
	} {
		if _, _, err := s.SaveLogin(ctx, l, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec("INSERT INTO notifytokens (uid, device, token, production) VALUES (1, 1, 'push-1', 1), (2, 2, 'push-2', 0)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Logout(ctx, 1); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM tokens WHERE uid = 1"); n != 0 {
		t.Errorf("tokens rows of uid 1 after logout = %d", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM notifytokens WHERE uid = 1"); n != 0 {
		t.Errorf("notifytokens rows of uid 1 after logout = %d", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM tokens WHERE uid = 2 AND token = ?", tokenB); n != 1 {
		t.Errorf("tokens row of uid 2 gone")
	}
	if n := count(t, db, "SELECT COUNT(*) FROM notifytokens WHERE uid = 2 AND token = 'push-2'"); n != 1 {
		t.Errorf("notifytokens row of uid 2 gone")
	}
	if n := count(t, db, "SELECT COUNT(*) FROM users"); n != 2 {
		t.Errorf("users rows after logout = %d, want 2 (logout keeps the user)", n)
	}
	if _, err := s.CallerByToken(ctx, tokenA); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("token after logout: %v, want ErrNotFound", err)
	}
	if _, err := s.CallerByToken(ctx, tokenB); err != nil {
		t.Errorf("other user's token after logout: %v", err)
	}
	// Logging out again is fine.
	if err := s.Logout(ctx, 1); err != nil {
		t.Errorf("second Logout: %v", err)
	}
}

func TestOddValuesStoredVerbatim(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	names := []string{
		"x'); DROP TABLE users; --",
		"nul\x00byte",
		"😀 Ada",
		`back\slash "quote" ` + "`tick`",
		"\\'; SELECT 1; -- \\",
	}
	for i, name := range names {
		token := fmt.Sprintf("%064d", i+1)
		l := store.Login{UID: int64(100 + i), Phone: fmt.Sprintf("9198000000%02d", i), CC: 91, Name: name,
			Token: token, Expiry: time.Now().Add(time.Hour), TS: 1}
		u, _, err := s.SaveLogin(ctx, l, nil)
		if err != nil {
			t.Fatalf("SaveLogin(name %q): %v", name, err)
		}
		if u.Name != name {
			t.Errorf("SaveLogin returned name %q, want %q", u.Name, name)
		}
		got, err := s.CallerByToken(ctx, token)
		if err != nil {
			t.Fatalf("CallerByToken for name %q: %v", name, err)
		}
		if got.Name != name {
			t.Errorf("round trip name = %q, want %q", got.Name, name)
		}
		var raw []byte
		if err := db.QueryRow("SELECT name FROM users WHERE uid = ?", l.UID).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if string(raw) != name {
			t.Errorf("stored name bytes = %q, want %q", raw, name)
		}
	}
	if got := tables(t, db); strings.Join(got, ",") != strings.Join(wantTables, ",") {
		t.Errorf("tables after odd names = %v", got)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM users"); n != len(names) {
		t.Errorf("users rows = %d, want %d", n, len(names))
	}
	// An injection attempt as the token itself finds nothing.
	if _, err := s.CallerByToken(ctx, "' OR '1'='1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CallerByToken(injection) = %v, want ErrNotFound", err)
	}
}

func TestReadyUnreachableThenGood(t *testing.T) {
	testenv.SkipIfEmbedded(t, "a file cannot be unreachable the way a server can")
	bad := openStore(t, "messenger_test:messenger_test@tcp(127.0.0.1:1)/messenger_test_none")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := bad.Ready(ctx); err == nil {
		t.Fatal("Ready against an unreachable server returned nil")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Ready against an unreachable server took %v", d)
	}
	// It keeps trying on later calls rather than caching the failure or a false success.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if err := bad.Ready(ctx2); err == nil {
		t.Fatal("second Ready against an unreachable server returned nil")
	}

	s, db := readyStore(t)
	if got := tables(t, db); strings.Join(got, ",") != strings.Join(wantTables, ",") {
		t.Fatalf("tables = %v", got)
	}
	if err := s.Ready(ctxT(t)); err != nil {
		t.Fatalf("Ready again: %v", err)
	}
}

func TestOpenBadDSN(t *testing.T) {
	if _, err := store.Open("not a dsn"); err == nil {
		t.Error("Open of a malformed DSN returned no error")
	}
}

// TestParallelLoginsOfOneNumber: logins of one number at once (two devices, a retried
// request) never fail on each other: one of them creates the user, the rest update it,
// and one user row is left, first for a new number and then for an existing one.
func TestParallelLoginsOfOneNumber(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	for round := range 2 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for i := range 16 {
			wg.Go(func() {
				_, isNew, err := s.SaveLogin(ctx, store.Login{UID: 5005, Phone: "919812345005", CC: 91, Name: fmt.Sprint("device ", i),
					Token: fmt.Sprintf("%064d", round*100+i), Expiry: time.Now().Add(time.Hour), TS: time.Now().Unix()}, nil)
				if err != nil {
					t.Errorf("round %d login %d: %v", round, i, err)
				}
				mu.Lock()
				defer mu.Unlock()
				if isNew {
					created++
				}
			})
		}
		wg.Wait()
		if want := 1 - round; created != want {
			t.Errorf("round %d: %d logins reported a new user, want %d", round, created, want)
		}
		if n := count(t, db, "SELECT COUNT(*) FROM users WHERE phone = 919812345005"); n != 1 {
			t.Errorf("round %d: %d user rows", round, n)
		}
		if n := count(t, db, "SELECT COUNT(*) FROM tokens WHERE uid = 5005"); n != 1 {
			t.Errorf("round %d: %d token rows", round, n)
		}
	}
}

// TestParallelLoginsOfNewNumbers: new users whose numbers sit next to each other in the
// phone index log in at once; none fails on another's locks.
func TestParallelLoginsOfNewNumbers(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			_, isNew, err := s.SaveLogin(ctx, store.Login{UID: int64(6000 + i), Phone: fmt.Sprint(919812346000 + i), CC: 91,
				Token: fmt.Sprintf("%064d", 6000+i), Expiry: time.Now().Add(time.Hour), TS: time.Now().Unix()}, nil)
			if err != nil || !isNew {
				t.Errorf("login %d: new %v, %v", i, isNew, err)
			}
		})
	}
	wg.Wait()
	if n := count(t, db, "SELECT COUNT(*) FROM users"); n != 24 {
		t.Errorf("%d users, want 24", n)
	}
}

// TestKnownContacts: which of a request's numbers are already in the list, for numbers
// of every length (the range read must compare them as numbers, not as text), with the
// list's other numbers inside and outside the requested range left out; and the
// registered users among the known ones, the caller excepted.
func TestKnownContacts(t *testing.T) {
	s, _ := readyStore(t)
	ctx := ctxT(t)
	list := []string{"4930123456", "919812345001", "919812345003", "12025550100", "861012345678901", "35312345"}
	if err := s.SaveContacts(ctx, 1, list, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveContacts(ctx, 2, []string{"919812345002"}, false); err != nil { // another user's
		t.Fatal(err)
	}
	for uid, phone := range map[int64]string{11: "919812345003", 12: "919812345001", 1: "35312345", 13: "919812345002"} {
		if _, _, err := s.SaveLogin(ctx, store.Login{UID: uid, Phone: phone, Token: fmt.Sprintf("%064d", uid),
			Expiry: time.Now().Add(time.Hour), TS: 100 + uid}, nil); err != nil {
			t.Fatal(err)
		}
	}
	asked := []string{"919812345002", "35312345", "919812345003", "12025550100", "99999999", "861012345678901"}
	known, users, err := s.KnownContacts(ctx, 1, asked)
	if err != nil {
		t.Fatal(err)
	}
	// 919812345002 is registered but not in the list (it is fresh, looked up apart);
	// 919812345001 is in the list and registered but not asked; 35312345 is the caller.
	if len(users) != 1 || users[0].UID != 11 || users[0].Phone != "919812345003" || users[0].TS != 111 {
		t.Errorf("registered among the known = %+v, want only uid 11", users)
	}
	var got []string
	for p := range known {
		got = append(got, p)
	}
	sort.Strings(got)
	if want := []string{"12025550100", "35312345", "861012345678901", "919812345003"}; !slices.Equal(got, want) {
		t.Errorf("known = %v, want %v", got, want)
	}
	if known, _, err := s.KnownContacts(ctx, 1, nil); err != nil || len(known) != 0 {
		t.Errorf("no numbers: %v, %v", known, err)
	}
}

// TestUpdateOwnProfile: the token's way writes the profile of a valid token's user,
// watched or not, queueing a profile update only for a watched one, and writes nothing
// for an unknown or expired token (ErrNotFound); values are stored as sent.
func TestUpdateOwnProfile(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	tokenOf := func(uid int64) string { return fmt.Sprintf("%064d", uid) }
	for uid, expiry := range map[int64]time.Time{31: time.Now().Add(time.Hour), 32: time.Now().Add(time.Hour),
		33: time.Now().Add(time.Hour), 34: time.Now().Add(-time.Minute)} {
		if _, _, err := s.SaveLogin(ctx, store.Login{UID: uid, Phone: fmt.Sprintf("9198123400%d", uid), Name: fmt.Sprintf("N%d", uid),
			Token: tokenOf(uid), Expiry: expiry, TS: 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveContacts(ctx, 32, []string{"919812340031"}, false); err != nil { // 32 watches 31
		t.Fatal(err)
	}
	if err := s.SaveContacts(ctx, 33, []string{"919812340033"}, false); err != nil { // 33 only itself
		t.Fatal(err)
	}
	row := func(uid int64) string {
		var name, status, photo string
		var ts int64
		if err := db.QueryRow("SELECT name, COALESCE(status, ''), photo, ts FROM users WHERE uid = ?", uid).Scan(&name, &status, &photo, &ts); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s|%s|%s|%d", name, status, photo, ts)
	}
	status := "it's \x00 me'; DROP TABLE users; -- 🙂"
	at := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		name   string
		token  string
		uid    int64
		queued bool
		err    error
	}{
		{"watching another user", tokenOf(32), 32, false, nil},
		{"in only its own book", tokenOf(33), 33, false, nil},
		{"watched by another user", tokenOf(31), 31, true, nil},
		{"expired token", tokenOf(34), 34, false, store.ErrNotFound},
		{"unknown token", tokenOf(35), 35, false, store.ErrNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before string
			if c.uid != 35 {
				before = row(c.uid)
			}
			due, err := s.UpdateOwnProfile(ctx, c.token, store.ProfileChange{Status: &status}, at, 0)
			if queued := !due.IsZero(); !errors.Is(err, c.err) || queued != c.queued {
				t.Fatalf("UpdateOwnProfile(user %d) = %v, %v; want %v, %v", c.uid, queued, err, c.queued, c.err)
			}
			switch {
			case c.uid == 35:
			case c.err == nil:
				if got, want := row(c.uid), fmt.Sprintf("N%d|%s||1800000000", c.uid, status); got != want {
					t.Errorf("user %d stored as %q, want %q", c.uid, got, want)
				}
			default:
				if got := row(c.uid); got != before {
					t.Errorf("user %d changed to %q with a token that is not valid (was %q)", c.uid, got, before)
				}
			}
		})
	}
	// Only the fields sent change: a name (even empty) and a picture, the status stays.
	empty, photo := "", "1800000060-0123456789abcdef.jpg"
	if _, err := s.UpdateOwnProfile(ctx, tokenOf(32), store.ProfileChange{Name: &empty, Photo: &photo}, at.Add(time.Minute), 0); err != nil {
		t.Fatalf("UpdateOwnProfile(32, name and photo) = %v", err)
	}
	if got, want := row(32), "|"+status+"|"+photo+"|1800000060"; got != want {
		t.Errorf("user 32 stored as %q, want %q", got, want)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox WHERE from_addr = '919812340031'"); n != 1 {
		t.Errorf("%d profile updates of the watched user, want 1", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); n != 1 {
		t.Errorf("%d notifications queued, want only the watched user's", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM users"); n != 4 {
		t.Errorf("%d users after the changes, want 4", n)
	}
}

// TestOwnProfileChangeAnnouncedWhenItsTokenGoes: a change written through a token that
// is gone before its update is looked for (a logout in between) is still announced: the
// look goes by the phone of the row the UPDATE wrote, not by the token.
func TestOwnProfileChangeAnnouncedWhenItsTokenGoes(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	for _, uid := range []int64{36, 37} {
		if _, _, err := s.SaveLogin(ctx, store.Login{UID: uid, Phone: fmt.Sprintf("9198123400%d", uid), Token: fmt.Sprintf("%064d", uid),
			Expiry: time.Now().Add(time.Hour), TS: 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveContacts(ctx, 37, []string{"919812340036"}, false); err != nil { // 37 watches 36
		t.Fatal(err)
	}
	release := s.HoldProfileAnnouncements("919812340036")
	status := "gone"
	type result struct {
		queued bool
		err    error
	}
	done := make(chan result, 1)
	go func() {
		due, err := s.UpdateOwnProfile(ctx, fmt.Sprintf("%064d", 36), store.ProfileChange{Status: &status}, time.Now(), 0)
		done <- result{!due.IsZero(), err}
	}()
	for deadline := time.Now().Add(10 * time.Second); count(t, db, "SELECT COUNT(*) FROM users WHERE uid = 36 AND status = 'gone'") == 0; {
		select {
		case r := <-done:
			t.Fatalf("UpdateOwnProfile = %v, %v before the change was seen written", r.queued, r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the change was not written")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Logout(ctx, 36); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM tokens WHERE uid = 36"); n != 0 {
		t.Fatalf("%d tokens of 36 after the logout", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); n != 0 {
		t.Fatalf("%d rows queued while the look was held", n)
	}
	release()
	if r := <-done; r.err != nil || !r.queued {
		t.Fatalf("UpdateOwnProfile = %v, %v; want the change announced", r.queued, r.err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox WHERE from_addr = '919812340036' AND waiting = 919812340036"); n != 1 {
		t.Errorf("%d profile updates of 36 waiting, want 1", n)
	}
}

// TestUpdateOwnProfileDeadlock: the token's way locks the token row its subquery reads;
// when that makes it the victim of a deadlock (a transaction holding the user's row asks
// for the token's), it is tried again once the other transaction is done, and both
// changes stay.
func TestUpdateOwnProfileDeadlock(t *testing.T) {
	testenv.SkipIfEmbedded(t, "SQLite has no row locks to deadlock on")
	s, db := readyStore(t)
	ctx := ctxT(t)
	if _, _, err := s.SaveLogin(ctx, store.Login{UID: 41, Phone: "919812340041", Token: tokenA, Expiry: time.Now().Add(time.Hour), TS: 1}, nil); err != nil {
		t.Fatal(err)
	}
	deadlocks := func() int {
		var name string
		var n int
		if err := db.QueryRow("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'").Scan(&name, &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := deadlocks()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	// Another transaction (heavier: InnoDB keeps it when it breaks a deadlock) holds 41's
	// row, uncommitted.
	if _, err := tx.ExecContext(ctx, "INSERT INTO contacts (uid, phone) VALUES (42, 1), (42, 2), (42, 3), (42, 4), (42, 5)"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE users SET name = 'theirs' WHERE uid = 41"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	status := "mine"
	go func() {
		_, err := s.UpdateOwnProfile(ctx, tokenA, store.ProfileChange{Status: &status}, time.Unix(1_800_000_000, 0), 0)
		done <- err
	}()
	// The change holds the token row and waits for 41's; the transaction then asks for
	// the token row: a cycle.
	for deadline := time.Now().Add(10 * time.Second); count(t, db, `SELECT COUNT(*) FROM information_schema.processlist
		WHERE db = DATABASE() AND info LIKE 'UPDATE users AS u %' AND time_ms > 100`) == 0; {
		select {
		case err := <-done:
			t.Fatalf("UpdateOwnProfile did not wait for the uncommitted users row: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("UpdateOwnProfile was not seen waiting within 10 s")
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE tokens SET ipaddr = ipaddr + 1 WHERE uid = 41"); err != nil {
		t.Fatalf("the heavier transaction was rolled back: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("UpdateOwnProfile as a deadlock's victim = %v; want tried again, no error", err)
	}
	if n := deadlocks() - before; n < 1 {
		t.Fatalf("%d deadlocks: the change did not deadlock with the transaction", n)
	}
	var name, stored string
	if err := db.QueryRow("SELECT name, COALESCE(status, '') FROM users WHERE uid = 41").Scan(&name, &stored); err != nil || name != "theirs" || stored != "mine" {
		t.Fatalf("user 41: %q %q (%v), want both changes", name, stored, err)
	}
}

// TestUpdateProfileNotifiesWatchersOnly: a profile change queues one profile update when
// anybody has the caller among their contacts and none waits yet, composed when sent of
// the profile and those users, and none for a user nobody watches.
func TestUpdateProfileNotifiesWatchersOnly(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	for uid, phone := range map[int64]string{21: "919812340021", 22: "919812340022", 23: "919812340023"} {
		if _, _, err := s.SaveLogin(ctx, store.Login{UID: uid, Phone: phone, Name: "N" + phone, Token: fmt.Sprintf("%064d", uid),
			Expiry: time.Now().Add(time.Hour), TS: 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveContacts(ctx, 22, []string{"919812340021"}, false); err != nil { // 22 watches 21
		t.Fatal(err)
	}
	if err := s.SaveContacts(ctx, 23, []string{"919812340023"}, false); err != nil { // 23 only itself
		t.Fatal(err)
	}
	users := map[int64]store.Caller{}
	for _, uid := range []int64{21, 22, 23} {
		c, err := s.CallerByToken(ctx, fmt.Sprintf("%064d", uid))
		if err != nil || c.UID != uid {
			t.Fatalf("CallerByToken(%d) = %+v, %v", uid, c, err)
		}
		users[uid] = c
	}
	status := "away"
	for _, uid := range []int64{21, 23} {
		u, due, err := s.UpdateProfile(ctx, users[uid], store.ProfileChange{Status: &status}, time.Unix(1_800_000_000, 0), 0)
		queued := !due.IsZero()
		want := users[uid].User
		want.Status, want.TS = "away", 1_800_000_000
		if err != nil || u != want || queued != (uid == 21) {
			t.Fatalf("UpdateProfile(%d) = %+v, %v, %v; want %+v, queued only for 21", uid, u, queued, err, want)
		}
		// The answer is the row as stored, watched (21) or not (23).
		var name, stored string
		var ts int64
		if err := db.QueryRow("SELECT name, status, ts FROM users WHERE uid = ?", uid).Scan(&name, &stored, &ts); err != nil ||
			name != want.Name || stored != "away" || ts != 1_800_000_000 {
			t.Errorf("user %d stored as %q %q %d (%v), want %+v", uid, name, stored, ts, err, want)
		}
	}
	var from, to string
	if err := db.QueryRow("SELECT from_addr, to_addrs FROM messenger_outbox").Scan(&from, &to); err != nil ||
		from != "919812340021" || to != store.ToContactsOfSender {
		t.Errorf("queued %q %q (%v), want one profile update of 21", from, to, err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); n != 1 {
		t.Errorf("%d notifications queued, want 1", n)
	}
	// What it is composed of when sent: 21 as stored now, to 22 (not 21 itself).
	var id int64
	if err := db.QueryRow("SELECT id FROM messenger_outbox").Scan(&id); err != nil {
		t.Fatal(err)
	}
	p, err := s.ProfileAudience(ctx, "919812340021", id, time.Unix(1_800_000_002, 0))
	if err != nil || p.User.UID != 21 || p.User.Status != "away" || !slices.Equal(p.Watchers, []string{"919812340022"}) || p.Later ||
		p.SentAlready([]byte("away")) {
		t.Errorf("ProfileAudience(21) = %+v, %v; want 21 away, to 22, to be sent", p, err)
	}
	// Once a message is sent, the update that would send it again need not go; another
	// one would.
	if err := s.ProfileSent(ctx, "919812340021", []byte("away"), time.Unix(1_800_000_000, 500_000_000)); err != nil {
		t.Fatal(err)
	}
	if p, err := s.ProfileAudience(ctx, "919812340021", id, time.Unix(1_800_000_002, 0)); err != nil || !p.SentAlready([]byte("away")) || p.SentAlready([]byte("busy")) {
		t.Errorf("ProfileAudience(21) once its message is sent = %+v, %v; want that message sent already, no other", p, err)
	}
	// While it waits, another change queues nothing; once a worker claims it, the next
	// change queues one behind it.
	if _, due, err := s.UpdateProfile(ctx, users[21], store.ProfileChange{Status: &status}, time.Unix(1_800_000_001, 0), 0); err != nil || !due.IsZero() {
		t.Fatalf("UpdateProfile(21) while one waits = %v, %v; want nothing queued", due, err)
	}
	runs, err := s.ClaimOutbox(ctx, 10, 20, time.Minute, time.Unix(1_800_000_001, 0))
	if err != nil || len(runs) != 1 || len(runs[0].Messages) != 1 {
		t.Fatalf("claim = %+v, %v; want the one update", runs, err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox WHERE waiting IS NOT NULL"); n != 0 {
		t.Errorf("%d updates still waiting once claimed", n)
	}
	if _, due, err := s.UpdateProfile(ctx, users[21], store.ProfileChange{Status: &status}, time.Unix(1_800_000_002, 0), 0); err != nil ||
		!due.Equal(time.Unix(1_800_000_002, 0)) {
		t.Fatalf("UpdateProfile(21) once claimed = %v, %v; want queued, due at once", due, err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); n != 2 {
		t.Errorf("%d rows, want the claimed update and the one behind it", n)
	}
	// With the later update queued, the claimed one need not go.
	if p, err := s.ProfileAudience(ctx, "919812340021", id, time.Unix(1_800_000_002, 0)); err != nil || !p.Later {
		t.Errorf("ProfileAudience(21, first update) = later %v, %v; want later, with a second update queued", p.Later, err)
	}
	if _, err := s.ProfileAudience(ctx, "919812340029", id, time.Unix(1_800_000_002, 0)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ProfileAudience(unknown) = %v, want ErrNotFound", err)
	}
	// Name and picture of the unwatched user (upload answers with them): the fields sent
	// change, the status set above stays.
	name, photo := "Cyd", "1800000060-0123456789abcdef.jpg"
	before := users[23]
	before.Status = "away"
	u, _, err := s.UpdateProfile(ctx, before, store.ProfileChange{Name: &name, Photo: &photo}, time.Unix(1_800_000_060, 0), 0)
	want := before.User
	want.Name, want.Photo, want.TS = name, photo, 1_800_000_060
	if err != nil || u != want {
		t.Fatalf("UpdateProfile(23, name and photo) = %+v, %v; want %+v", u, err, want)
	}
	var storedName, storedStatus, storedPhoto string
	if err := db.QueryRow("SELECT name, status, photo FROM users WHERE uid = 23").Scan(&storedName, &storedStatus, &storedPhoto); err != nil ||
		storedName != name || storedStatus != "away" || storedPhoto != photo {
		t.Errorf("user 23 stored as %q %q %q (%v)", storedName, storedStatus, storedPhoto, err)
	}
}

// TestProfileInterval: a change after a quiet spell queues its profile update due at
// once; one made within the interval after an update went out, or while one is on its
// way, queues it due when the interval is over (at most the interval from now), and a
// claim before then leaves it; more changes meanwhile queue nothing; without an
// interval every update is due at once.
func TestProfileInterval(t *testing.T) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	for uid, phone := range map[int64]string{61: "919812340061", 62: "919812340062"} {
		if _, _, err := s.SaveLogin(ctx, store.Login{UID: uid, Phone: phone, Name: "N" + phone, Token: fmt.Sprintf("%064d", uid),
			Expiry: time.Now().Add(time.Hour), TS: 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveContacts(ctx, 62, []string{"919812340061"}, false); err != nil { // 62 watches 61
		t.Fatal(err)
	}
	token := fmt.Sprintf("%064d", 61)
	start := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	change := func(ms int, interval time.Duration) time.Time {
		t.Helper()
		status := fmt.Sprint("at ", ms)
		due, err := s.UpdateOwnProfile(ctx, token, store.ProfileChange{Status: &status}, at(ms), interval)
		if err != nil {
			t.Fatal(err)
		}
		if !due.IsZero() {
			var stored int64
			if err := db.QueryRow("SELECT next_attempt FROM messenger_outbox WHERE waiting = 919812340061").Scan(&stored); err != nil ||
				stored != due.UnixMilli() {
				t.Errorf("change at %d ms: waiting update due at %d (%v), answered %d", ms, stored, err, due.UnixMilli())
			}
		}
		return due
	}
	claim := func(ms int) int {
		t.Helper()
		runs, err := s.ClaimOutbox(ctx, 10, 20, time.Minute, at(ms))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range runs {
			if _, err := s.DeliverRun(ctx, r, func(m store.OutboxMessage) error {
				return s.ProfileSent(ctx, m.From, fmt.Append(nil, m.ID), at(ms+10))
			}, func(int) time.Duration { return time.Second }); err != nil {
				t.Fatal(err)
			}
		}
		return len(runs)
	}
	if due := change(0, time.Second); !due.Equal(at(0)) {
		t.Fatalf("first change: due %v, want at once", due)
	}
	if n := claim(0); n != 1 {
		t.Fatalf("claimed %d runs at 0 ms, want the first update", n)
	}
	// Sent at 10 ms: the next change is held until 1,010 ms, and those after it join it.
	if due := change(300, time.Second); !due.Equal(at(1010)) {
		t.Fatalf("change 290 ms after a send: due %v, want %v", due, at(1010))
	}
	if due := change(600, time.Second); !due.IsZero() {
		t.Fatalf("change while an update waits: due %v, want nothing queued", due)
	}
	if n := claim(1009); n != 0 {
		t.Fatalf("claimed %d runs at 1,009 ms, want none before the interval is over", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); n != 1 {
		t.Fatalf("%d rows queued, want the one waiting update", n)
	}
	if n := claim(1010); n != 1 {
		t.Fatalf("claimed %d runs at 1,010 ms, want the held update", n)
	}
	var sent int64
	if err := db.QueryRow("SELECT sent_ms FROM messenger_profile_sent WHERE phone = 919812340061").Scan(&sent); err != nil ||
		sent != at(1020).UnixMilli() {
		t.Errorf("recorded sent at %d (%v), want %d", sent, err, at(1020).UnixMilli())
	}
	// Without an interval, a change right after a send is due at once; after a quiet
	// spell longer than the interval, too.
	if due := change(1100, 0); !due.Equal(at(1100)) {
		t.Fatalf("change without an interval: due %v, want at once", due)
	}
	if n := claim(1100); n != 1 {
		t.Fatalf("claimed %d runs at 1,100 ms, want the update", n)
	}
	if due := change(5000, time.Second); !due.Equal(at(5000)) {
		t.Fatalf("change after a quiet spell: due %v, want at once", due)
	}
	// A change while that update is on its way (claimed, its time not yet recorded) is
	// held for the interval from now; the update on its way still goes (a held update is
	// no later one that would send for it), and once the held one is due, it would not.
	runs, err := s.ClaimOutbox(ctx, 10, 20, time.Minute, at(5000))
	if err != nil || len(runs) != 1 {
		t.Fatalf("claim at 5,000 ms = %+v, %v; want the update", runs, err)
	}
	if due := change(5050, time.Second); !due.Equal(at(6050)) {
		t.Fatalf("change while an update is on its way: due %v, want %v", due, at(6050))
	}
	onItsWay := runs[0].Messages[0].ID
	if p, err := s.ProfileAudience(ctx, "919812340061", onItsWay, at(5060)); err != nil || p.Later || p.User.Status != "at 5050" {
		t.Errorf("the update on its way at 5,060 ms = %+v, %v; want to go, with the status at 5050", p, err)
	}
	if p, err := s.ProfileAudience(ctx, "919812340061", onItsWay, at(6050)); err != nil || !p.Later {
		t.Errorf("the update on its way at 6,050 ms = later %v, %v; want later: the held one is due", p.Later, err)
	}
	if _, err := s.DeliverRun(ctx, runs[0], func(m store.OutboxMessage) error {
		return s.ProfileSent(ctx, m.From, fmt.Append(nil, m.ID), at(5100))
	}, func(int) time.Duration { return time.Second }); err != nil {
		t.Fatal(err)
	}
	if n := claim(6050); n != 1 {
		t.Fatalf("claimed %d runs at 6,050 ms, want the held update", n)
	}
	// A last update recorded by a clock an hour ahead holds the next one for the
	// interval, not the hour.
	if err := s.ProfileSent(ctx, "919812340061", []byte("ahead"), at(3_600_000)); err != nil {
		t.Fatal(err)
	}
	if due := change(7000, time.Second); !due.Equal(at(8000)) {
		t.Fatalf("change after an update recorded an hour ahead: due %v, want %v", due, at(8000))
	}
}

// TestPreparedStatementsSurviveLostConnections: the store's prepared statements live on
// pooled connections; when the server drops those connections (a restart, a kill), the
// next calls prepare again on new ones instead of failing.
func TestPreparedStatementsSurviveLostConnections(t *testing.T) {
	testenv.SkipIfEmbedded(t, "kills connections on the MySQL server")
	s, db := readyStore(t)
	ctx := ctxT(t)
	if _, _, err := s.SaveLogin(ctx, store.Login{UID: 31, Phone: "919812340031", Token: tokenA,
		Expiry: time.Now().Add(time.Hour), TS: 1}, nil); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		for range 8 { // several pooled connections, each with the statement prepared
			if u, err := s.CallerByToken(ctx, tokenA); err != nil || u.UID != 31 {
				t.Fatalf("round %d: CallerByToken = %+v, %v", round, u, err)
			}
		}
		rows, err := db.QueryContext(ctx, "SELECT id FROM information_schema.processlist WHERE user = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND db = DATABASE() AND id <> CONNECTION_ID()")
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for rows.Next() {
			var id int64
			rows.Scan(&id)
			ids = append(ids, id)
		}
		rows.Close()
		if len(ids) == 0 {
			t.Fatalf("round %d: the store holds no connection to kill", round)
		}
		for _, id := range ids {
			db.ExecContext(ctx, fmt.Sprintf("KILL %d", id))
		}
	}
	if u, err := s.CallerByToken(ctx, tokenA); err != nil || u.UID != 31 {
		t.Fatalf("after the kills: CallerByToken = %+v, %v", u, err)
	}
}

// TestSyncSince: a sync finds the caller by its token and lists the caller's registered
// contacts and its groups changed after since, each in ascending ts then id, cut at the
// limits; with a full page of users the groups wait for the next page. An unknown or
// expired token is ErrNotFound.
func TestSyncSince(t *testing.T) {
	s, _ := readyStore(t)
	ctx := ctxT(t)
	const me = "919812340041"
	phoneOf := func(uid int64) string { return fmt.Sprint(919812340000 + uid) }
	for uid, ts := range map[int64]int64{41: 1, 42: 300, 43: 100, 44: 200, 45: 100, 46: 500} {
		if _, _, err := s.SaveLogin(ctx, store.Login{UID: uid, Phone: phoneOf(uid), Token: fmt.Sprintf("%064d", uid),
			Expiry: time.Now().Add(time.Hour), TS: ts}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// 46 is registered but not in the book; 919812349999 is in it but not registered; the
	// caller's own number is never its own contact.
	book := []string{phoneOf(42), phoneOf(43), phoneOf(44), phoneOf(45), "919812349999", me}
	if err := s.SaveContacts(ctx, 41, book, false); err != nil {
		t.Fatal(err)
	}
	for _, g := range []store.NewGroup{
		{GID: 7001, Name: "G", Owner: me, Members: []string{phoneOf(42)}},
		{GID: 7002, Name: "G", Owner: phoneOf(42), Members: []string{me, phoneOf(43)}},
		{GID: 7003, Name: "G", Owner: phoneOf(44), Members: []string{phoneOf(45)}}, // without the caller
	} {
		ts := map[int64]int64{7001: 150, 7002: 50, 7003: 400}[g.GID]
		if _, err := s.InsertGroup(ctx, g, time.Unix(ts, 0), nil); err != nil {
			t.Fatal(err)
		}
	}
	uids := func(users []store.User) (out []int64) {
		for _, u := range users {
			out = append(out, u.UID)
		}
		return out
	}
	gids := func(groups []store.Group) (out []int64) {
		for _, g := range groups {
			out = append(out, g.GID)
		}
		return out
	}
	for _, c := range []struct {
		name                  string
		since                 int64
		userLimit, groupLimit int
		users, groups         []int64
	}{
		{"everything", 0, 10, 10, []int64{43, 45, 44, 42}, []int64{7002, 7001}},
		{"changed after since", 100, 10, 10, []int64{44, 42}, []int64{7001}},
		{"groups cut at their limit", 0, 10, 1, []int64{43, 45, 44, 42}, []int64{7002}},
		{"a full page of users: groups wait", 0, 4, 10, []int64{43, 45, 44, 42}, nil},
		{"users cut at their limit", 0, 3, 10, []int64{43, 45, 44}, nil},
		{"nothing changed since", 1000, 10, 10, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			caller, users, groups, err := s.SyncSince(ctx, fmt.Sprintf("%064d", 41), c.since, c.userLimit, c.groupLimit)
			if err != nil || caller.UID != 41 || caller.Phone != me || caller.TS != 1 ||
				!slices.Equal(uids(users), c.users) || !slices.Equal(gids(groups), c.groups) {
				t.Errorf("SyncSince(since %d, limits %d/%d) = users %v, groups %v, %v; want %v, %v",
					c.since, c.userLimit, c.groupLimit, uids(users), gids(groups), err, c.users, c.groups)
			}
		})
	}
	_, users, groups, err := s.SyncSince(ctx, fmt.Sprintf("%064d", 41), 0, 10, 10)
	if err != nil || len(users) == 0 || users[0].Phone != phoneOf(43) || users[0].TS != 100 {
		t.Fatalf("first user %+v, %v", users, err)
	}
	if g := groups[0]; g.Name != "G" || g.TS != 50 || g.Members != "1:"+phoneOf(42)+","+me+","+phoneOf(43) ||
		!slices.Equal(g.Phones, []string{phoneOf(42), me, phoneOf(43)}) {
		t.Errorf("group 7002 = %+v", g)
	}
	if _, _, _, err := s.SyncSince(ctx, fmt.Sprintf("%064d", 49), 0, 10, 10); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("sync with an unknown token: %v, want ErrNotFound", err)
	}
	if _, _, err := s.SaveLogin(ctx, store.Login{UID: 41, Phone: me, Token: fmt.Sprintf("%064d", 41),
		Expiry: time.Now().Add(-time.Minute), TS: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if _, users, groups, err := s.SyncSince(ctx, fmt.Sprintf("%064d", 41), 0, 10, 10); !errors.Is(err, store.ErrNotFound) || users != nil || groups != nil {
		t.Errorf("sync with an expired token: %v, %v, %v; want ErrNotFound and nothing", users, groups, err)
	}
}

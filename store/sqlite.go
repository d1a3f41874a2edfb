package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	migratesqlite "github.com/golang-migrate/migrate/v4/database/sqlite"
	"modernc.org/sqlite"
)

// The embedded store is one SQLite file (pure Go, no cgo) for a developer's laptop or a
// single small instance. Its schema is migrations/sqlite, table for table the MySQL one.
//
// Every statement of this package is written once, in MySQL's dialect; the SQLite
// connection rewrites the few forms that differ (toSQLite), so that there is one copy of
// each statement and the handlers never learn which database they talk to.
//
// Locking: every transaction begins IMMEDIATE, taking SQLite's one write lock at its
// start, so write transactions run one after another; that serialises the store's
// read-modify-write changes as MySQL's row locks (SELECT ... FOR UPDATE) do, only more
// coarsely, and SKIP LOCKED has nothing to skip. Reads outside transactions go on
// beside a writer (WAL). A group change asks mesibo outside any transaction, in its
// group's turn (grouplock.go), so no write waits for mesibo.

// sqliteRewrites maps MySQL forms to SQLite's. The longer " FOR UPDATE SKIP LOCKED" comes
// first: a Replacer tries its pairs in argument order at each position.
var sqliteRewrites = strings.NewReplacer(
	"INSERT IGNORE", "INSERT OR IGNORE",
	"ON DUPLICATE KEY UPDATE", "ON CONFLICT DO UPDATE SET",
	" FOR UPDATE SKIP LOCKED", "",
	" FOR UPDATE", "",
	"UTC_TIMESTAMP()", "datetime('now')",
	"GREATEST(", "MAX(", // SQLite's MAX of two or more arguments is a scalar function
)

// insertedValue is MySQL's VALUES(col) inside ON DUPLICATE KEY UPDATE, SQLite's excluded.col.
var insertedValue = regexp.MustCompile(`\bVALUES\((\w+)\)`)

// toSQLite translates one statement of this package into SQLite's dialect.
func toSQLite(query string) string {
	return insertedValue.ReplaceAllString(sqliteRewrites.Replace(query), "excluded.$1")
}

var sqliteMigrations sync.Mutex

// openSQLite opens (creating when missing) the SQLite file at path.
func openSQLite(path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: %s needs a file path without ? or #, not %q", EmbeddedPrefix, path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// WAL lets reads go on while one connection writes; busy_timeout is how long a
	// writer waits for the write lock, and BEGIN IMMEDIATE makes a transaction wait for
	// it at its start rather than fail at its first write. synchronous FULL: a commit is
	// on disk when it returns, as the outbox's promise needs. Times are written as
	// 'YYYY-MM-DD HH:MM:SS...'.
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_time_format=sqlite&_txlock=immediate"
	db := sql.OpenDB(sqliteConnector{dsn: dsn})
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	db.SetConnMaxLifetime(0)
	migrateDB := func(ctx context.Context) error {
		// golang-migrate's SQLite lock is per driver; stores of one process opening the
		// same file (a config reload, the copy command) take turns here.
		sqliteMigrations.Lock()
		defer sqliteMigrations.Unlock()
		plain, err := sql.Open("sqlite", dsn)
		if err != nil {
			return fmt.Errorf("store: migrate: %w", err)
		}
		defer plain.Close()
		if err := plain.PingContext(ctx); err != nil {
			return fmt.Errorf("store: migrate: open %s: %w", path, err)
		}
		driver, err := migratesqlite.WithInstance(plain, &migratesqlite.Config{})
		if err != nil {
			return fmt.Errorf("store: migrate: %w", err)
		}
		return applyMigrations("sqlite", driver)
	}
	return &Store{db: db, fixed: &prepared{db: db}, migrate: migrateDB, embedded: true}, nil
}

// sqliteConnector opens SQLite connections that speak the store's MySQL forms.
type sqliteConnector struct{ dsn string }

func (c sqliteConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := (&sqlite.Driver{}).Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return rewritingConn{conn}, nil
}

func (c sqliteConnector) Driver() driver.Driver { return &sqlite.Driver{} }

// rewritingConn is a modernc.org/sqlite connection that runs every statement through
// toSQLite first.
type rewritingConn struct{ driver.Conn }

func (c rewritingConn) Prepare(query string) (driver.Stmt, error) {
	return c.Conn.Prepare(toSQLite(query))
}

func (c rewritingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, toSQLite(query))
}

func (c rewritingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, toSQLite(query), args)
}

func (c rewritingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, toSQLite(query), args)
}

// ResetSession and IsValid let database/sql drop a connection that a cancelled
// context interrupted, as it would without the wrapper.
func (c rewritingConn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c rewritingConn) IsValid() bool { return c.Conn.(driver.Validator).IsValid() }

func (c rewritingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	// BEGIN IMMEDIATE already serialises write transactions; SQLite has no isolation
	// levels to choose from.
	opts.Isolation = driver.IsolationLevel(sql.LevelDefault)
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

var (
	_ driver.Connector          = sqliteConnector{}
	_ driver.ExecerContext      = rewritingConn{}
	_ driver.QueryerContext     = rewritingConn{}
	_ driver.ConnPrepareContext = rewritingConn{}
	_ driver.ConnBeginTx        = rewritingConn{}
	_ driver.SessionResetter    = rewritingConn{}
	_ driver.Validator          = rewritingConn{}
)

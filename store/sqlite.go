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
// Locking: the pool holds a single connection, so transactions run one after another.
// That is what MySQL's row locks (SELECT ... FOR UPDATE) achieve for the store's
// read-modify-write changes, and SKIP LOCKED has nothing to skip with one outbox worker.

// sqliteRewrites maps MySQL forms to SQLite's. The longer " FOR UPDATE SKIP LOCKED" comes
// first: a Replacer tries its pairs in argument order at each position.
var sqliteRewrites = strings.NewReplacer(
	"INSERT IGNORE", "INSERT OR IGNORE",
	"ON DUPLICATE KEY UPDATE", "ON CONFLICT DO UPDATE SET",
	" FOR UPDATE SKIP LOCKED", "",
	" FOR UPDATE", "",
	"UTC_TIMESTAMP()", "datetime('now')",
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
	if path == "" {
		return nil, fmt.Errorf("store: %s needs a file path", EmbeddedPrefix)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// WAL lets the copy command and tests read while the server writes; busy_timeout
	// covers those other connections, and BEGIN IMMEDIATE makes a transaction wait for
	// the write lock at its start rather than fail at its first write. Times are written
	// as 'YYYY-MM-DD HH:MM:SS...'.
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
		"&_time_format=sqlite&_txlock=immediate"
	db := sql.OpenDB(sqliteConnector{dsn: dsn})
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
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
	return &Store{db: db, migrate: migrateDB, embedded: true}, nil
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

func (c rewritingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	// One connection already serialises transactions; SQLite has no isolation levels
	// to choose from.
	opts.Isolation = driver.IsolationLevel(sql.LevelDefault)
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

var (
	_ driver.Connector          = sqliteConnector{}
	_ driver.ExecerContext      = rewritingConn{}
	_ driver.QueryerContext     = rewritingConn{}
	_ driver.ConnPrepareContext = rewritingConn{}
	_ driver.ConnBeginTx        = rewritingConn{}
)

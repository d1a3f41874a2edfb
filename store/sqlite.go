package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	migratesqlite "github.com/golang-migrate/migrate/v4/database/sqlite"
	_ "modernc.org/sqlite" // the "sqlite" driver
)

// The embedded store is one SQLite file (pure Go, no cgo) for a developer's laptop or a
// single small instance. Its schema is migrations/sqlite, table for table the MySQL one.
//
// Locking: every transaction begins IMMEDIATE, taking SQLite's one write lock at its
// start, so write transactions run one after another; that serialises the store's
// read-modify-write changes as MySQL's row locks (SELECT ... FOR UPDATE) do, only more
// coarsely, and SKIP LOCKED has nothing to skip. Reads outside transactions go on
// beside a writer (WAL). A group change asks mesibo outside any transaction, in its
// group's turn (grouplock.go), so no write waits for mesibo.

// sqliteDialect is SQLite's side of dialect: BEGIN IMMEDIATE already serialises the
// writers that FOR UPDATE and the isolation levels order on MySQL.
var sqliteDialect = dialect{
	insertIgnore:     "INSERT OR IGNORE",
	onConflictUpdate: "ON CONFLICT DO UPDATE SET",
	returningPhone:   " RETURNING phone",
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
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
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
	return &Store{db: db, fixed: &prepared{db: db}, migrate: migrateDB, embedded: true, d: sqliteDialect}, nil
}

// Package store keeps users, tokens, contacts, groups and push tokens in MySQL or
// MariaDB, in the tables of the original PHP backend, or in an embedded SQLite file for a
// single instance (see sqlite.go). Every value is bound as a parameter; no request text
// is ever formatted into SQL. Each statement is one text for both databases but for the
// few pieces they write differently (dialect.go), so callers never learn which database
// they talk to.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	"github.com/golang-migrate/migrate/v4/source"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/migrations"
)

// ErrNotFound means no row matched.
var ErrNotFound = errors.New("not found")

// Store is a pool of connections to one database, shared by every request.
type Store struct {
	db *sql.DB
	// fixed runs the statements whose text does not vary, prepared.
	fixed *prepared
	// migrate brings the schema up to date, in the database's own dialect.
	migrate  func(ctx context.Context) error
	embedded bool
	// d is how this database writes what MySQL and SQLite write differently.
	d dialect
	// groupLocks serialises the changes of each group (grouplock.go); lockPrefix names
	// this database in the MySQL named locks.
	groupLocks groupLocks
	lockPrefix string
	// profileQueues serialises, in this process, the queueing of each user's profile
	// updates; profileAnnouncements lets concurrent changes of one user (by phone) share
	// the look for a waiting one (announceProfile).
	profileQueues        stripedLocks
	profileAnnouncements rounds[string, time.Time]

	migrateMu sync.Mutex
	migrated  atomic.Bool
}

// EmbeddedPrefix starts a database setting that names an SQLite file rather than a
// MySQL DSN, e.g. "sqlite:/var/lib/caddy/messenger.db".
const EmbeddedPrefix = "sqlite:"

// Open prepares a pool for dsn: "sqlite:" and a file path for the embedded store, or a
// MySQL DSN (go-sql-driver/mysql form, e.g. "user:pass@tcp(127.0.0.1:3306)/messenger").
// It does not connect to MySQL: the first query or Ready does, so a configuration can be
// loaded while the database is down.
func Open(dsn string) (*Store, error) {
	if path, ok := CutEmbedded(dsn); ok {
		return openSQLite(path)
	}
	return openMySQL(dsn)
}

// CutEmbedded returns the file path of an embedded-store setting, and whether it is one.
func CutEmbedded(dsn string) (path string, ok bool) { return strings.CutPrefix(dsn, EmbeddedPrefix) }

// UseLogger sends the MySQL driver's own messages (lost connections, bad packets), which
// it otherwise prints to stderr, to logger at warn level. The driver has one logger per
// process: the last config loaded sets it.
func UseLogger(logger *zap.Logger) {
	mysql.SetLogger(driverLogger{logger})
}

// driverLogger is a zap logger as the MySQL driver's Logger.
type driverLogger struct{ *zap.Logger }

func (l driverLogger) Print(v ...any) { l.Warn(strings.TrimSpace(fmt.Sprint(v...))) }

// DefaultMaxConns is the size of a MySQL pool unless LimitConnections says otherwise.
const DefaultMaxConns = 32

// LimitConnections sets the most connections the pool opens to MySQL (and keeps idle).
// The embedded store keeps its own size: SQLite has one writer whatever the number.
func (s *Store) LimitConnections(n int) {
	if s.embedded {
		return
	}
	s.db.SetMaxOpenConns(n)
	s.db.SetMaxIdleConns(n)
	s.groupLocks.setConnBound(n)
}

// Embedded reports whether this is the single-instance SQLite store.
func (s *Store) Embedded() bool { return s.embedded }

// Close closes the pool.
func (s *Store) Close() error {
	s.fixed.close()
	return s.db.Close()
}

// Ready brings the schema up to date once per pool. Every caller before the first
// success tries again, so a database that was down at start is migrated when it comes back.
func (s *Store) Ready(ctx context.Context) error {
	if s.migrated.Load() {
		return nil
	}
	s.migrateMu.Lock()
	defer s.migrateMu.Unlock()
	if s.migrated.Load() {
		return nil
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	s.migrated.Store(true)
	return nil
}

// applyMigrations applies the files of migrations/<dialect> through driver. A database
// already past this build's last migration, cleanly (a newer instance of a rolling
// upgrade migrated it), is left as it is: migrations only add, so this build runs on it,
// where migrate refuses a version it has no file for.
func applyMigrations(dialect string, driver database.Driver) error {
	src, err := iofs.New(migrations.FS, dialect)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, dialect, driver)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	defer m.Close() // releases the driver's dedicated connection
	err = m.Up()
	if errors.Is(err, fs.ErrNotExist) { // "no migration found for version N"
		if current, dirty, verr := m.Version(); verr == nil && !dirty {
			if last, lerr := lastMigration(src); lerr == nil && current > last {
				return nil
			}
		}
	}
	if err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("store: migrate: %w", err)
	}
	return nil
}

// lastMigration is the version of the last migration src has.
func lastMigration(src source.Driver) (uint, error) {
	version, err := src.First()
	if err != nil {
		return 0, err
	}
	for {
		next, err := src.Next(version)
		if errors.Is(err, fs.ErrNotExist) {
			return version, nil
		}
		if err != nil {
			return 0, err
		}
		version = next
	}
}

// Package store keeps users, tokens, contacts, groups and push tokens in MySQL or
// MariaDB, in the tables of the original PHP backend, or in an embedded SQLite file for a
// single instance (see sqlite.go). Every value is bound as a parameter; no request text
// is ever formatted into SQL. Statements are written in MySQL's dialect; the SQLite
// connection translates the few forms that differ, so callers never learn which
// database they talk to.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	migratemysql "github.com/golang-migrate/migrate/v4/database/mysql"
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
	// groupLocks serialises the changes of each group (grouplock.go); lockPrefix names
	// this database in the MySQL named locks.
	groupLocks groupLocks
	lockPrefix string

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

func openMySQL(dsn string) (*Store, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: parse DSN: %w", err)
	}
	// For the statements whose text varies (IN lists), client-side interpolation saves a
	// prepare round trip per query; the driver escapes every bound value for the
	// connection's character set. Fixed statements run prepared (prepared.go).
	cfg.InterpolateParams = true
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	// The driver talks utf8mb4 by default, so 4-byte emoji in names survive.
	// Token expiry times are written and compared in UTC whatever the server's zone.
	cfg.Params["time_zone"] = "'+00:00'"
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(DefaultMaxConns)
	db.SetMaxIdleConns(DefaultMaxConns)
	db.SetConnMaxLifetime(30 * time.Minute)
	s := &Store{db: db, fixed: &prepared{db: db}, migrate: func(ctx context.Context) error { return migrateMySQL(ctx, cfg) },
		lockPrefix: lockPrefix(cfg.DBName)}
	s.groupLocks.setConnBound(DefaultMaxConns)
	return s, nil
}

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

// migrateMySQL applies the embedded migrations under golang-migrate's GET_LOCK, so that
// instances starting together apply each migration once.
func migrateMySQL(ctx context.Context, dsn *mysql.Config) error {
	cfg := dsn.Clone()
	cfg.MultiStatements = true // migration files hold several statements
	cfg.InterpolateParams = false
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("store: migrate: connect: %w", err)
	}
	driver, err := migratemysql.WithInstance(db, &migratemysql.Config{})
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	return applyMigrations("mysql", driver)
}

// applyMigrations applies the files of migrations/<dialect> through driver.
func applyMigrations(dialect string, driver database.Driver) error {
	source, err := iofs.New(migrations.FS, dialect)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", source, dialect, driver)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	defer m.Close() // releases the driver's dedicated connection
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("store: migrate: %w", err)
	}
	return nil
}

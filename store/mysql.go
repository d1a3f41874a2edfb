package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
	migratemysql "github.com/golang-migrate/migrate/v4/database/mysql"
)

// mysqlDialect is MySQL's and MariaDB's side of dialect.
var mysqlDialect = dialect{
	insertIgnore:     "INSERT IGNORE",
	onConflictUpdate: "ON DUPLICATE KEY UPDATE",
	forUpdate:        " FOR UPDATE",
	skipLocked:       " FOR UPDATE SKIP LOCKED",
	keepPhone:        ", phone = LAST_INSERT_ID(phone)",
	readCommitted:    &sql.TxOptions{Isolation: sql.LevelReadCommitted},
}

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
		lockPrefix: lockPrefix(cfg.DBName), d: mysqlDialect}
	s.groupLocks.setConnBound(DefaultMaxConns)
	return s, nil
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

// Package migrations holds the database schema as numbered SQL files
// (golang-migrate naming: NNNN_name.up.sql), embedded into the binary: one folder per
// database dialect, with the same numbers meaning the same tables in both.
package migrations

import "embed"

// FS holds the migration files: mysql/ for MySQL and MariaDB, sqlite/ for the
// embedded store.
//
//go:embed mysql/*.sql sqlite/*.sql
var FS embed.FS

// Package migrations holds the database schema as numbered SQL files
// (golang-migrate naming: NNNN_name.up.sql), embedded into the binary.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS

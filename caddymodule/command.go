package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-messenger/messenger/store"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "messenger-copy",
		Usage: "--to <database> [--from <database>]",
		Short: "Copies the messenger's data into an empty database (embedded store to MySQL)",
		Long: `
Copies users, tokens, contacts, groups, members, push tokens and queued notifications
from one messenger database to another, for a deployment that outgrows the embedded
store. Both are given as the messenger directive's database setting takes them: a MySQL
DSN, or "sqlite:" and a file path. --from defaults to the embedded store Caddy uses when
no database is configured.

Stop the server first. The target is migrated to the current schema and must hold no
messenger rows; the copy is one transaction there, and each table's row count is checked
afterwards. Then set database (and redis) in the Caddyfile and start the server again.

Example:
  caddy messenger-copy --to 'messenger:secret@tcp(127.0.0.1:3306)/messenger'
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("from", defaultDatabase(), "database to copy from")
			cmd.Flags().String("to", "", "database to copy into (required)")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdCopy)
		},
	})
}

// defaultDatabase is the embedded store a messenger without a database setting uses.
func defaultDatabase() string {
	return store.EmbeddedPrefix + filepath.Join(caddy.AppDataDir(), "messenger", "messenger.db")
}

func cmdCopy(fl caddycmd.Flags) (int, error) {
	from, to := fl.String("from"), fl.String("to")
	if to == "" {
		return caddy.ExitCodeFailedStartup, errors.New("--to is required")
	}
	if path, ok := store.CutEmbedded(from); ok {
		// Opening would create an empty file: a wrong path must not copy nothing.
		if _, err := os.Stat(path); err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--from: %w", err)
		}
	}
	counts, err := copyData(context.Background(), from, to)
	if err != nil {
		return caddy.ExitCodeFailedQuit, err
	}
	for _, c := range counts {
		fmt.Printf("%-18s %d rows\n", c.Table, c.Rows)
	}
	return caddy.ExitCodeSuccess, nil
}

// copyData opens both databases and copies from one to the other.
func copyData(ctx context.Context, from, to string) ([]store.TableCount, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	src, err := store.Open(from)
	if err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	}
	defer src.Close()
	dst, err := store.Open(to)
	if err != nil {
		return nil, fmt.Errorf("--to: %w", err)
	}
	defer dst.Close()
	return store.Copy(ctx, src, dst)
}

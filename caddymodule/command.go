package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-messenger/messenger/media"
	"github.com/caddy-messenger/messenger/store"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "messenger-copy",
		Usage: "[--to <database>] [--from <database>] [--files-to <storage>] [--files-from <storage>]",
		Short: "Copies the messenger's data into an empty database (embedded store to MySQL), and its files into another storage",
		Long: `
Copies users, tokens, contacts, groups, members, push tokens and queued notifications
from one messenger database to another, for a deployment that outgrows the embedded
store. Both are given as the messenger directive's database setting takes them: a MySQL
DSN, or "sqlite:" and a file path. --from defaults to the embedded store Caddy uses when
no database is configured.

Stop the server first. The target is migrated to the current schema and must hold no
messenger rows; the copy is one transaction there, and each table's row count is checked
afterwards. Then set database (and redis) in the Caddyfile and start the server again.

With --files-to, it also copies the pictures, thumbnails and attachments from one storage
to another, both given as the storage setting takes them (file:///dir, s3://bucket?...);
--files-from defaults to the default storage, file://./data. Names are never reused, so
files the target already has are skipped: run it once while the server still runs, then
again after stopping it, to copy only what came in between.

Examples:
  caddy messenger-copy --to 'messenger:secret@tcp(127.0.0.1:3306)/messenger'
  caddy messenger-copy --files-from file:///var/lib/messenger --files-to 's3://chat-files?region=eu-central-1'
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("from", defaultDatabase(), "database to copy from")
			cmd.Flags().String("to", "", "database to copy into")
			cmd.Flags().String("files-from", defaultStorage, "storage to copy files from")
			cmd.Flags().String("files-to", "", "storage to copy files into")
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
	filesFrom, filesTo := fl.String("files-from"), fl.String("files-to")
	if to == "" && filesTo == "" {
		return caddy.ExitCodeFailedStartup, errors.New("--to or --files-to is required")
	}
	if path, ok := store.CutEmbedded(from); ok && to != "" {
		// Opening would create an empty file: a wrong path must not copy nothing.
		if _, err := os.Stat(path); err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--from: %w", err)
		}
	}
	if to != "" {
		counts, err := copyData(context.Background(), from, to)
		if err != nil {
			return caddy.ExitCodeFailedQuit, err
		}
		for _, c := range counts {
			fmt.Printf("%-18s %d rows\n", c.Table, c.Rows)
		}
	}
	if filesTo != "" {
		copied, skipped, err := copyFiles(context.Background(), filesFrom, filesTo)
		if err != nil {
			return caddy.ExitCodeFailedQuit, err
		}
		fmt.Printf("%-18s %d copied, %d already there\n", "files", copied, skipped)
	}
	return caddy.ExitCodeSuccess, nil
}

// copyFiles opens both storages and copies the files from one to the other.
func copyFiles(ctx context.Context, from, to string) (copied, skipped int, err error) {
	// A source folder that is not there must fail, not be made empty.
	if u, err := url.Parse(from); err == nil && u.Scheme == "file" && !u.Query().Has("create_dir") {
		q := u.Query()
		q.Set("create_dir", "")
		u.RawQuery = q.Encode()
		from = u.String()
	}
	src, err := media.OpenStorage(ctx, from)
	if err != nil {
		return 0, 0, fmt.Errorf("--files-from: %w", err)
	}
	defer src.Close()
	dst, err := media.OpenStorage(ctx, to)
	if err != nil {
		return 0, 0, fmt.Errorf("--files-to: %w", err)
	}
	defer dst.Close()
	return media.CopyFiles(ctx, src, dst)
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

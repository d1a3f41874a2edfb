package store

import (
	"context"
	"fmt"
	"strings"
)

// copiedTables are the tables Copy moves, with their columns, parents before children.
var copiedTables = []struct {
	name    string
	columns []string
	// binary names the columns kept as bytes; every other value read as bytes is text
	// or a number written as text, and is handed on as a string so that SQLite stores
	// it with its column's type rather than as a BLOB.
	binary map[string]bool
}{
	{name: "users", columns: []string{"uid", "name", "phone", "cc", "status", "photo", "credits", "flag", "ts", "n"}},
	{name: "tokens", columns: []string{"uid", "token", "updatetime", "expirytime", "ipaddr", "device", "createdby"}},
	{name: "contacts", columns: []string{"uid", "phone", "subscribed"}},
	{name: "groups", columns: []string{"gid", "name", "status", "photo", "flag", "type", "ts"}},
	{name: "members", columns: []string{"gid", "phone", "role"}},
	{name: "notifytokens", columns: []string{"uid", "device", "token", "production"}},
	{name: "names", columns: []string{"name", "status"}},
	{name: "messenger_outbox", columns: []string{"id", "queue", "replaceable", "waiting", "from_addr", "to_addrs", "body", "created", "attempts", "next_attempt", "last_error"},
		binary: map[string]bool{"body": true}},
	{name: "messenger_profile_sent", columns: []string{"phone", "fingerprint", "sent_ms"}},
}

// TableCount is how many rows one table holds.
type TableCount struct {
	Table string
	Rows  int64
}

// Copy moves every row of the messenger's tables from one store to another (typically
// the embedded store to MySQL when a deployment grows), in one transaction on the target,
// then checks that each table holds as many rows as the source's. Both schemas are
// migrated first. The target must be empty: Copy refuses to merge into live data.
// The source should not be written meanwhile (stop the server first).
func Copy(ctx context.Context, from, to *Store) ([]TableCount, error) {
	for _, s := range []*Store{from, to} {
		if err := s.Ready(ctx); err != nil {
			return nil, err
		}
	}
	for _, t := range copiedTables {
		if n, err := to.count(ctx, t.name); err != nil {
			return nil, err
		} else if n > 0 {
			return nil, fmt.Errorf("store: copy: the target already holds %d rows in %s; copy only into an empty database", n, t.name)
		}
	}
	tx, err := to.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: copy: %w", err)
	}
	defer tx.Rollback()
	var copied []TableCount
	for _, t := range copiedTables {
		n, err := copyTable(ctx, from, tx, t.name, t.columns, t.binary)
		if err != nil {
			return nil, fmt.Errorf("store: copy %s: %w", t.name, err)
		}
		copied = append(copied, TableCount{Table: t.name, Rows: n})
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: copy: %w", err)
	}
	for _, c := range copied {
		if n, err := to.count(ctx, c.Table); err != nil {
			return nil, err
		} else if n != c.Rows {
			return nil, fmt.Errorf("store: copy: %s holds %d rows after copying %d", c.Table, n, c.Rows)
		}
	}
	return copied, nil
}

func (s *Store) count(ctx context.Context, table string) (int64, error) {
	var n int64
	// table is one of copiedTables' names, never request text.
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+table+"`").Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count %s: %w", table, err)
	}
	return n, nil
}

// copyTable reads table from src and writes its rows into dst in multi-row INSERTs.
func copyTable(ctx context.Context, src *Store, dst querier, table string, columns []string, binary map[string]bool) (int64, error) {
	cols := "`" + strings.Join(columns, "`, `") + "`"
	rows, err := src.db.QueryContext(ctx, "SELECT "+cols+" FROM `"+table+"`")
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	rowPlaceholders := "(" + placeholders(len(columns), "?") + ")"
	var batch []any
	var copied int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n := len(batch) / len(columns)
		_, err := dst.ExecContext(ctx, "INSERT INTO `"+table+"` ("+cols+") VALUES "+placeholders(n, rowPlaceholders), batch...)
		copied += int64(n)
		batch = batch[:0]
		return err
	}
	values := make([]any, len(columns))
	dests := make([]any, len(columns))
	for i := range values {
		dests[i] = &values[i]
	}
	for rows.Next() {
		if err := rows.Scan(dests...); err != nil {
			return 0, err
		}
		for i, v := range values {
			if b, ok := v.([]byte); ok && !binary[columns[i]] {
				v = string(b)
			} else if ok {
				v = append([]byte{}, b...) // the driver reuses its buffer; empty is not NULL
			}
			batch = append(batch, v)
		}
		if len(batch) >= chunkSize*len(columns) {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return copied, nil
}

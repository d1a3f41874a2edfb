package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-sql-driver/mysql"
)

// runStmt is the -stmt mode: the statement in file, prepared once, executed with args
// from o.conns connections for o.duration (a statement under way then is let finish, ctx
// bounding it). It reports executions per second, rows read or changed per execution and,
// for each -watch process, its CPU per execution: what one statement costs the database,
// apart from the HTTP server in front of it.
func runStmt(ctx context.Context, o options, file string, args []string) (string, error) {
	if err := localDSN(o.dsn); err != nil {
		return "", fmt.Errorf("-dsn: %w", err)
	}
	text, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("-stmt: %w", err)
	}
	query := strings.TrimSpace(string(text))
	db, err := sql.Open("mysql", o.dsn)
	if err != nil {
		return "", fmt.Errorf("-stmt: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(o.conns)
	db.SetMaxIdleConns(o.conns)
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return "", fmt.Errorf("-stmt: prepare: %w", err)
	}
	defer st.Close()
	bound := make([]any, len(args))
	for i, a := range args {
		bound[i] = a
	}
	// A SELECT (or WITH) is a query whose rows are read; anything else is executed, and its
	// rows are the ones it changed (MariaDB's affected rows: an UPDATE that writes the
	// values a row already has changes none).
	words := strings.Fields(strings.TrimLeft(query, "("))
	isQuery := len(words) > 0 && (strings.EqualFold(words[0], "SELECT") || strings.EqualFold(words[0], "WITH"))

	var executions, rows atomic.Int64
	var firstErr error
	var once sync.Once
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	cpu0 := sampleCPU(o.watch)
	var wg sync.WaitGroup
	for range o.conns {
		wg.Go(func() {
			for runCtx.Err() == nil {
				n, err := execOnce(ctx, st, isQuery, bound)
				if err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				executions.Add(1)
				rows.Add(n)
			}
		})
	}
	wg.Wait()
	cpu1 := sampleCPU(o.watch)
	if firstErr != nil {
		return "", fmt.Errorf("-stmt: %w", firstErr)
	}
	n := executions.Load()
	if n == 0 {
		return "", fmt.Errorf("-stmt: no execution finished in %v", o.duration)
	}
	secs := cpu1.at.Sub(cpu0.at).Seconds()
	var sb strings.Builder
	fmt.Fprintf(&sb, "stmt executions=%d per_s=%.0f rows_per_execution=%.2f", n, float64(n)/secs, float64(rows.Load())/float64(n))
	for i, w := range o.watch {
		if cpu0.procs[i] >= 0 && cpu1.procs[i] >= 0 {
			fmt.Fprintf(&sb, " cpu_us_per_execution_%s=%.0f", w.name, 1e6*(cpu1.procs[i]-cpu0.procs[i])/float64(n))
		}
	}
	return sb.String() + cpuReport(o.watch, cpu0, cpu1), nil
}

// execOnce runs st once and returns the rows it read, or changed.
func execOnce(ctx context.Context, st *sql.Stmt, isQuery bool, args []any) (int64, error) {
	if !isQuery {
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return 0, err
	}
	defer rs.Close()
	var n int64
	for rs.Next() {
		n++
	}
	return n, rs.Err()
}

// localDSN checks that dsn reaches MySQL over a unix socket or a loopback address: -stmt
// runs any statement, writes too, as fast as it can.
func localDSN(dsn string) error {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return err
	}
	if cfg.Net == "unix" {
		return nil
	}
	return loopbackHostPort(cfg.Addr)
}

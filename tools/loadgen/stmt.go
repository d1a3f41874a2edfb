package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// runStmt is the -stmt mode: the statement in file, prepared once, executed with args
// from o.conns connections for o.duration, rows read and dropped. It reports executions
// per second, rows per execution and, for each -watch process, its CPU per execution:
// what one statement costs the database, apart from the HTTP server in front of it.
func runStmt(ctx context.Context, o options, file string, args []string) (string, error) {
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
	// An UPDATE or INSERT is executed; anything else is a query whose rows are read.
	verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimLeft(query, "( \t\n")), " ")
	isQuery := verb == "SELECT" || verb == "WITH"

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
	fmt.Fprintf(&sb, "stmt executions=%d per_s=%.0f rows_per_execution=%.1f", n, float64(n)/secs, float64(rows.Load())/float64(n))
	for i, w := range o.watch {
		if cpu0.procs[i] >= 0 && cpu1.procs[i] >= 0 {
			fmt.Fprintf(&sb, " cpu_us_per_execution_%s=%.0f", w.name, 1e6*(cpu1.procs[i]-cpu0.procs[i])/float64(n))
		}
	}
	return sb.String() + cpuReport(o.watch, cpu0, cpu1), nil
}

// execOnce runs st once and returns the rows it read (0 for a statement without rows).
func execOnce(ctx context.Context, st *sql.Stmt, isQuery bool, args []any) (int64, error) {
	if !isQuery {
		_, err := st.ExecContext(ctx, args...)
		return 0, err
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

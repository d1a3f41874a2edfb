package handlers

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/store"
)

// TestClientGoneIsNotAnError: a request whose client went away fails its database call
// with the cancelled context; that is logged at debug level, while the same failure for
// a client still waiting (a closed database) is an error.
func TestClientGoneIsNotAnError(t *testing.T) {
	s, err := store.Open(testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	api := &API{Store: s, Logger: zap.New(core), Now: time.Now}
	req := &Request{Op: "getcontacts", fields: map[string]string{"token": "a-token-long-enough-to-look-up"}}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if resp := api.Handle(ctx, req); resp.Body["error"] != "DBERROR" {
		t.Fatalf("answer %v, want DBERROR", resp.Body)
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Errorf("%d error lines for a client that went away: %v", n, logs.All())
	}
	if logs.FilterMessageSnippet("client went away").Len() != 1 {
		t.Errorf("no debug line for the client that went away: %v", logs.All())
	}

	s.Close()
	if resp := api.Handle(context.Background(), req); resp.Body["error"] != "DBERROR" {
		t.Fatalf("answer %v, want DBERROR", resp.Body)
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 1 {
		t.Errorf("%d error lines for a closed database, want 1: %v", n, logs.All())
	}
}

// TestBareRequestLogsAtDebug: load balancers' health checks send a bare GET, which
// answers NOOP with one debug line, not an info line per check.
func TestBareRequestLogsAtDebug(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	api := &API{Logger: zap.New(core), Now: time.Now}
	resp := api.Handle(context.Background(), &Request{fields: map[string]string{}})
	if resp.Body["code"] != CodeNoOp {
		t.Fatalf("answer %v, want code NOOP", resp.Body)
	}
	if logs.Len() != 1 || logs.All()[0].Level != zapcore.DebugLevel {
		t.Fatalf("log lines %v, want one at debug", logs.All())
	}
}

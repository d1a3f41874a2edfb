// Command fakemesibo serves the in-process fake of the mesibo backend API
// (mesiboclient/mesibotest) on a loopback address, for load tests: the real service is
// remote and paid. Point the messenger's `mesibo { endpoint http://ADDR/backend/ }` at it.
//
//	go run ./internal/cmd/fakemesibo -addr 127.0.0.1:18081 -token load-app-token [-latency 80ms]
//
// It stops on SIGINT/SIGTERM, or by itself after -max (default 1h) so that a forgotten
// one does not run forever. The fake keeps every call in memory, which is fine for runs
// of minutes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "loopback address to listen on (host:port)")
	token := flag.String("token", "load-app-token", "the app token the fake accepts")
	maxRun := flag.Duration("max", time.Hour, "stop by itself after this long")
	latency := flag.Duration("latency", 0, "answer every call this much later, like the remote service (e.g. 80ms)")
	flag.Parse()

	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().IsLoopback() {
		log.Fatalf("fakemesibo: -addr must be a loopback host:port, got %q", *addr)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("fakemesibo: %v", err)
	}
	fake := mesibotest.New(*token)
	fake.URL = "http://" + ln.Addr().String() + "/backend/"
	if *latency > 0 {
		fake.FailAll("", mesibotest.Failure{Delay: *latency}) // a delay alone slows calls, then answers them
	}
	srv := &http.Server{Handler: fake.Handler(), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxRun)
	defer cancel()
	go func() {
		<-ctx.Done()
		shut, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		srv.Shutdown(shut)
	}()
	fmt.Fprintf(os.Stderr, "fakemesibo: serving %s\n", fake.URL)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("fakemesibo: %v", err)
	}
	fmt.Fprintf(os.Stderr, "fakemesibo: stopped after %d calls (%d messages)\n", len(fake.Calls()), len(fake.Messages()))
}

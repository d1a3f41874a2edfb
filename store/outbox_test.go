package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/store"
)

func outboxStore(t *testing.T) (*store.Store, string) {
	t.Helper()
	dsn := testenv.Database(t)
	s, err := store.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, dsn
}

// TestOutboxWorkersNeverShareARow: four workers (two stores, as two instances would
// have) drain 300 rows; each is delivered exactly once.
func TestOutboxWorkersNeverShareARow(t *testing.T) {
	s1, dsn := outboxStore(t)
	s2, err := store.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	db := testenv.Open(t, dsn)
	for i := range 300 {
		if _, err := db.Exec("INSERT INTO messenger_outbox (from_addr, to_addrs, body) VALUES ('100', ?, ?)", fmt.Sprint(i), "{}"); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[int64]int{}
	deliver := func(m store.OutboxMessage) error {
		time.Sleep(time.Millisecond) // a network call, so claims overlap
		mu.Lock()
		seen[m.ID]++
		mu.Unlock()
		return nil
	}
	var wg sync.WaitGroup
	for i := range 4 {
		s := []*store.Store{s1, s2}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := s.DeliverDue(context.Background(), 20, time.Now(), deliver, func(int) time.Duration { return time.Second })
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(seen) != 300 {
		t.Fatalf("delivered %d distinct rows, want 300", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("row %d delivered %d times", id, n)
		}
	}
	depth, _, err := s1.OutboxStats(context.Background(), time.Now())
	if err != nil || depth != 0 {
		t.Fatalf("depth %d, %v", depth, err)
	}
}

// TestOutboxFailureReschedules: a failed delivery ends the batch and pushes the row back.
func TestOutboxFailureReschedules(t *testing.T) {
	s, dsn := outboxStore(t)
	db := testenv.Open(t, dsn)
	for i := range 3 {
		db.Exec("INSERT INTO messenger_outbox (from_addr, to_addrs, body) VALUES ('100', ?, '{}')", fmt.Sprint(i))
	}
	calls := 0
	now := time.Now()
	n, err := s.DeliverDue(context.Background(), 10, now, func(store.OutboxMessage) error { calls++; return errors.New("mesibo down") },
		func(attempts int) time.Duration { return time.Duration(attempts) * time.Minute })
	if err != nil || n != 0 || calls != 1 {
		t.Fatalf("n=%d calls=%d err=%v: the batch must stop at the first failure", n, calls, err)
	}
	var attempts int
	var next int64
	var lastErr string
	db.QueryRow("SELECT attempts, next_attempt, last_error FROM messenger_outbox ORDER BY id LIMIT 1").Scan(&attempts, &next, &lastErr)
	if attempts != 1 || next < now.Add(59*time.Second).UnixMilli() || lastErr != "mesibo down" {
		t.Fatalf("attempts %d next %d err %q", attempts, next, lastErr)
	}
	// The failed row is not due; the other two are delivered.
	n, err = s.DeliverDue(context.Background(), 10, now, func(store.OutboxMessage) error { return nil }, nil)
	if err != nil || n != 2 {
		t.Fatalf("delivered %d, %v", n, err)
	}
	depth, oldest, _ := s.OutboxStats(context.Background(), now.Add(time.Hour))
	if depth != 1 || oldest < 59*time.Minute {
		t.Fatalf("depth %d oldest %s", depth, oldest)
	}
}

// TestOutboxClaimDoesNotBlockWriters: while a worker holds a batch (mesibo is slow),
// requests can still queue notifications.
func TestOutboxClaimDoesNotBlockWriters(t *testing.T) {
	s, dsn := outboxStore(t)
	db := testenv.Open(t, dsn)
	db.Exec("INSERT INTO messenger_outbox (from_addr, to_addrs, body) VALUES ('100', '1', '{}')")
	claimed := make(chan struct{})
	release := make(chan struct{})
	go s.DeliverDue(context.Background(), 10, time.Now(), func(store.OutboxMessage) error {
		close(claimed)
		<-release
		return nil
	}, nil)
	<-claimed
	start := time.Now()
	_, err := db.Exec("INSERT INTO messenger_outbox (from_addr, to_addrs, body) VALUES ('100', '2', '{}')")
	took := time.Since(start)
	close(release)
	if err != nil || took > time.Second {
		t.Fatalf("queueing during a claim took %s (%v)", took, err)
	}
}

// TestOutboxStopHandsBatchBack: a worker stopped mid-batch (a config reload cancels its
// context) leaves the undelivered rows due at once for the next worker, not leased, and
// counts no attempt for the one it was sending.
func TestOutboxStopHandsBatchBack(t *testing.T) {
	s, dsn := outboxStore(t)
	db := testenv.Open(t, dsn)
	for i := range 5 {
		db.Exec("INSERT INTO messenger_outbox (from_addr, to_addrs, body) VALUES ('100', ?, '{}')", fmt.Sprint(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now()
	sent := 0
	n, err := s.DeliverDue(ctx, 10, now, func(store.OutboxMessage) error {
		if sent++; sent == 2 {
			cancel() // the reload arrives while the second is on its way
			return ctx.Err()
		}
		return nil
	}, func(int) time.Duration { return time.Hour })
	if err != nil || n != 1 {
		t.Fatalf("delivered %d, %v; want 1", n, err)
	}
	if due := count(t, db, "SELECT COUNT(*) FROM messenger_outbox WHERE next_attempt <= ? AND attempts = 0", now.UnixMilli()); due != 4 {
		t.Errorf("%d rows due again after the stop, want 4", due)
	}
	n, err = s.DeliverDue(context.Background(), 10, now, func(store.OutboxMessage) error { return nil }, nil)
	if err != nil || n != 4 {
		t.Errorf("the next worker delivered %d, %v; want 4", n, err)
	}
}

// TestOutboxStaleWorkerCannotUndoANewClaim: a worker that outlives its lease (its
// delivery hung) finds the row claimed again by another; its late bookkeeping must not
// touch the other's claim.
func TestOutboxStaleWorkerCannotUndoANewClaim(t *testing.T) {
	s, dsn := outboxStore(t)
	db := testenv.Open(t, dsn)
	db.Exec("INSERT INTO messenger_outbox (from_addr, to_addrs, body) VALUES ('100', '1', '{}')")
	db.Exec("INSERT INTO messenger_outbox (from_addr, to_addrs, body) VALUES ('100', '2', '{}')")
	start := time.Now()
	inFirst := make(chan struct{})
	finishFirst := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		// Worker A: its first delivery fails late, after the lease ran out.
		s.DeliverDue(context.Background(), 10, start, func(m store.OutboxMessage) error {
			close(inFirst)
			<-finishFirst
			return errors.New("timed out")
		}, func(int) time.Duration { return time.Hour })
	})
	<-inFirst
	// Worker B, three minutes later by its clock: both leases have run out.
	var claimedByB []int64
	later := start.Add(3 * time.Minute)
	n, err := s.DeliverDue(context.Background(), 10, later, func(m store.OutboxMessage) error {
		claimedByB = append(claimedByB, m.ID)
		if len(claimedByB) == 1 {
			close(finishFirst) // A now reschedules and releases, too late
			wg.Wait()
		}
		return nil
	}, nil)
	if err != nil || n != 2 {
		t.Fatalf("worker B delivered %d, %v; want both", n, err)
	}
	if left := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); left != 0 {
		t.Errorf("%d rows left: worker A's late reschedule or release overwrote B's claim", left)
	}
}

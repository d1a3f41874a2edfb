package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	migratemysql "github.com/golang-migrate/migrate/v4/database/mysql"
	migratesqlite "github.com/golang-migrate/migrate/v4/database/sqlite"
	"github.com/golang-migrate/migrate/v4/source/iofs"

	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/migrations"
	"github.com/caddy-messenger/messenger/store"
)

// queueRow inserts an outbox row of queue to the phones to, due now, and returns its id.
func queueRow(t *testing.T, db *sql.DB, queue, to string, replaceable bool) int64 {
	t.Helper()
	res, err := db.Exec("INSERT INTO messenger_outbox (queue, replaceable, from_addr, to_addrs, body, created) VALUES (?, ?, '100', ?, ?, ?)",
		queue, replaceable, to, fmt.Sprintf(`{"to":%q}`, to), time.Now().Unix())
	if err != nil {
		t.Fatal(err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func never(int) time.Duration { return time.Hour }

// claimAll claims up to runs queues with the default lease at now.
func claimAll(t *testing.T, s *store.Store, runs int, now time.Time) []store.OutboxRun {
	t.Helper()
	out, err := s.ClaimOutbox(context.Background(), runs, 20, store.DefaultOutboxLease, now)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ids(run store.OutboxRun) []int64 {
	var out []int64
	for _, m := range run.Messages {
		out = append(out, m.ID)
	}
	return out
}

// deliveries records what workers deliver, by queue, from rows whose to_addrs is
// "QUEUE NOTE", and fails the test when two rows of one queue are in flight at once.
type deliveries struct {
	t        *testing.T
	mu       sync.Mutex
	inFlight map[string]bool
	notes    map[string][]string
}

func (d *deliveries) deliver(m store.OutboxMessage) error {
	var q, note string
	fmt.Sscanf(m.To, "%s %s", &q, &note)
	d.mu.Lock()
	if d.inFlight[q] {
		d.t.Errorf("two rows of %s in flight at once", q)
	}
	d.inFlight[q] = true
	d.mu.Unlock()
	time.Sleep(time.Millisecond) // a network call, so claims overlap
	d.mu.Lock()
	d.inFlight[q] = false
	d.notes[q] = append(d.notes[q], note)
	d.mu.Unlock()
	return nil
}

// drain runs four workers, two on each of two stores of the migrated database dsn (as
// two instances would), each claiming up to 5 queues' runs of up to runLength rows at a
// time, until queued is closed and the outbox is empty; it returns what was delivered,
// by queue.
func drain(t *testing.T, dsn string, db *sql.DB, runLength int, queued <-chan struct{}) map[string][]string {
	s1, s2 := openStore(t, dsn), openStore(t, dsn)
	d := &deliveries{t: t, inFlight: map[string]bool{}, notes: map[string][]string{}}
	var wg sync.WaitGroup
	for i := range 4 {
		s := []*store.Store{s1, s2}[i%2]
		wg.Go(func() {
			for {
				runs, err := s.ClaimOutbox(context.Background(), 5, runLength, store.DefaultOutboxLease, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				select {
				case <-queued:
					if len(runs) == 0 && count(t, db, "SELECT COUNT(*) FROM messenger_outbox") == 0 {
						return
					}
				default:
				}
				var runners sync.WaitGroup
				for _, r := range runs {
					runners.Go(func() {
						if _, err := s.DeliverRun(context.Background(), r, d.deliver, never); err != nil {
							t.Error(err)
						}
					})
				}
				runners.Wait()
			}
		})
	}
	wg.Wait()
	return d.notes
}

// wantNotes checks that each of queues got the notes 0 to perQueue-1, in that order.
func wantNotes(t *testing.T, got map[string][]string, queues, perQueue int) {
	t.Helper()
	var want []string
	for note := range perQueue {
		want = append(want, fmt.Sprint(note))
	}
	if len(got) != queues {
		t.Errorf("%d queues delivered, want %d", len(got), queues)
	}
	for q, notes := range got {
		if !slices.Equal(notes, want) {
			t.Errorf("%s delivered as %v, want %v", q, notes, want)
		}
	}
}

// TestOutboxWorkersNeverShareARow: four workers of two instances drain 300 rows of 60
// queues (runs of 3, so queues are claimed again); each row is delivered exactly once, a
// queue's rows in the order queued, never two of one queue at the same time.
func TestOutboxWorkersNeverShareARow(t *testing.T) {
	dsn := testenv.Database(t)
	db := testenv.Open(t, dsn)
	if err := openStore(t, dsn).Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		queueRow(t, db, fmt.Sprint("user:", i%60), fmt.Sprintf("user:%d %d", i%60, i/60), false)
	}
	queued := make(chan struct{})
	close(queued)
	wantNotes(t, drain(t, dsn, db, 3, queued), 60, 5)
}

// TestOutboxClaimsWhileQueueing: rows queued while workers claim (a claim's statement
// may lock rows committed after it began, whose earlier rows it cannot see) are still
// delivered once each, a queue's in order, never two of one queue at once.
func TestOutboxClaimsWhileQueueing(t *testing.T) {
	dsn := testenv.Database(t)
	db := testenv.Open(t, dsn)
	if err := openStore(t, dsn).Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	const queues, perQueue = 300, 4
	queued := make(chan struct{})
	go func() { // a queue's rows are queued together, as a notification's chunks of recipients are
		defer close(queued)
		for q := range queues {
			args := []any{}
			for note := range perQueue {
				args = append(args, fmt.Sprint("user:", q), fmt.Sprintf("user:%d %d", q, note))
			}
			if _, err := db.Exec(`INSERT INTO messenger_outbox (queue, from_addr, to_addrs, body) VALUES
				(?, '100', ?, '{}'), (?, '100', ?, '{}'), (?, '100', ?, '{}'), (?, '100', ?, '{}')`, args...); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wantNotes(t, drain(t, dsn, db, 20, queued), queues, perQueue)
}

// TestOutboxLaterRowWaitsForEarlier: a queue's rows are claimed together, from its first
// one; while they are out, or the first backs off, no worker gets a later row of that
// queue, however it is due; another queue goes on.
func TestOutboxLaterRowWaitsForEarlier(t *testing.T) {
	s, db := readyStore(t)
	a1 := queueRow(t, db, "user:1", "2", false)
	b1 := queueRow(t, db, "group:7", "2,3", false)
	a2 := queueRow(t, db, "user:1", "2", false)
	now := time.Now()
	runs := claimAll(t, s, 1, now)
	if len(runs) != 1 || runs[0].Queue != "user:1" || !slices.Equal(ids(runs[0]), []int64{a1, a2}) {
		t.Fatalf("first claim %+v, want user:1's two rows", runs)
	}
	a3 := queueRow(t, db, "user:1", "2", false) // queued while the run is out
	if runs := claimAll(t, s, 10, now); len(runs) != 1 || !slices.Equal(ids(runs[0]), []int64{b1}) {
		t.Fatalf("second claim %+v, want only group:7's row", runs)
	}
	// The first row fails: it backs off, and the rows behind it wait with it.
	n, err := s.DeliverRun(context.Background(), runs[0], func(store.OutboxMessage) error { return errors.New("mesibo down") },
		func(int) time.Duration { return time.Minute })
	if err != nil || n != 0 {
		t.Fatalf("DeliverRun = %d, %v", n, err)
	}
	if runs := claimAll(t, s, 10, now.Add(30*time.Second)); len(runs) != 0 {
		t.Fatalf("claimed %+v while the queue's first row backs off", runs)
	}
	runs = claimAll(t, s, 10, now.Add(90*time.Second)) // group:7's run is still out
	if len(runs) != 1 || !slices.Equal(ids(runs[0]), []int64{a1, a2, a3}) || runs[0].Messages[0].Attempts != 1 {
		t.Fatalf("claim after the backoff %+v, want user:1's three rows, the first tried once", runs)
	}
}

// TestOutboxRunEndsAtRowNotDue: a row not yet due (as one of an older version, parked
// while its change was written) ends its queue's run; the rows behind it wait for it.
func TestOutboxRunEndsAtRowNotDue(t *testing.T) {
	s, db := readyStore(t)
	now := time.Now()
	a1 := queueRow(t, db, "user:1", store.ToContactsOfSender, true)
	a2 := queueRow(t, db, "user:1", store.ToContactsOfSender, true)
	a3 := queueRow(t, db, "user:1", store.ToContactsOfSender, true)
	if _, err := db.Exec("UPDATE messenger_outbox SET next_attempt = ? WHERE id = ?", now.Add(2*time.Minute).UnixMilli(), a2); err != nil {
		t.Fatal(err)
	}
	runs := claimAll(t, s, 10, now)
	if len(runs) != 1 || !slices.Equal(ids(runs[0]), []int64{a1}) || runs[0].Superseded != 0 {
		t.Fatalf("claim %+v, want only the row before the one not due", runs)
	}
	if _, err := s.DeliverRun(context.Background(), runs[0], func(store.OutboxMessage) error { return nil },
		func(int) time.Duration { return time.Minute }); err != nil {
		t.Fatal(err)
	}
	if runs := claimAll(t, s, 10, now); len(runs) != 0 {
		t.Fatalf("claimed %+v while the queue's first row is not due", runs)
	}
	if _, err := db.Exec("UPDATE messenger_outbox SET next_attempt = ? WHERE id = ?", now.UnixMilli(), a2); err != nil {
		t.Fatal(err)
	}
	runs = claimAll(t, s, 10, now)
	if len(runs) != 1 || !slices.Equal(ids(runs[0]), []int64{a3}) || runs[0].Superseded != 1 {
		t.Fatalf("claim once due %+v, want the last row, superseding the other", runs)
	}
}

// TestOutboxOrderAcrossRetries: a queue of ten rows whose deliveries fail now and then is
// delivered in the order queued, every row once after its last failure.
func TestOutboxOrderAcrossRetries(t *testing.T) {
	s, db := readyStore(t)
	var want []int64
	for i := range 10 {
		want = append(want, queueRow(t, db, "user:1", "2", false))
		queueRow(t, db, fmt.Sprintf("user:%d", 100+i), "2", false)
	}
	now := time.Now()
	var got []int64
	calls := 0
	for round := 0; len(got) < 10 && round < 100; round++ {
		now = now.Add(time.Minute) // past every backoff and lease
		for _, r := range claimAll(t, s, 3, now) {
			if _, err := s.DeliverRun(context.Background(), r, func(m store.OutboxMessage) error {
				if calls++; calls%3 == 0 {
					return errors.New("flaky")
				}
				if r.Queue == "user:1" {
					got = append(got, m.ID)
				}
				return nil
			}, func(int) time.Duration { return time.Second }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// TestOutboxCoalescing: of a user's silent updates to the same recipients, a claim keeps
// only the newest; a new-user message (not replaceable), an update to other recipients,
// and other queues' rows are all kept, in order.
func TestOutboxCoalescing(t *testing.T) {
	s, db := readyStore(t)
	joined := queueRow(t, db, "user:1", "2,3", false)
	var renames []int64
	for range 5 {
		renames = append(renames, queueRow(t, db, "user:1", "2,3", true))
	}
	fewer := queueRow(t, db, "user:1", "2", true)
	renames = append(renames, queueRow(t, db, "user:1", "3,2", true)) // the same set in another order
	other := queueRow(t, db, "user:9", "2,3", true)
	runs := claimAll(t, s, 10, time.Now())
	if len(runs) != 2 {
		t.Fatalf("claimed %d runs, want 2", len(runs))
	}
	if want := []int64{joined, fewer, renames[5]}; !slices.Equal(ids(runs[0]), want) || runs[0].Superseded != 5 {
		t.Errorf("user:1's run %v superseding %d, want %v superseding 5", ids(runs[0]), runs[0].Superseded, want)
	}
	if !slices.Equal(ids(runs[1]), []int64{other}) || runs[1].Superseded != 0 {
		t.Errorf("user:9's run %v", ids(runs[1]))
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); n != 4 {
		t.Errorf("%d rows left, want the 4 to send", n)
	}
}

// TestOutboxFailureReschedules: a failed delivery ends the run and pushes its row back,
// counting the attempt and keeping the error; the queue's other rows wait behind it.
func TestOutboxFailureReschedules(t *testing.T) {
	s, db := readyStore(t)
	for i := range 3 {
		queueRow(t, db, "user:1", fmt.Sprint(i), false)
	}
	queueRow(t, db, "user:2", "9", false)
	calls := 0
	now := time.Now()
	runs := claimAll(t, s, 1, now)
	n, err := s.DeliverRun(context.Background(), runs[0], func(store.OutboxMessage) error { calls++; return errors.New("mesibo down") },
		func(attempts int) time.Duration { return time.Duration(attempts) * time.Minute })
	if err != nil || n != 0 || calls != 1 {
		t.Fatalf("n=%d calls=%d err=%v: the run must stop at the first failure", n, calls, err)
	}
	var attempts int
	var next int64
	var lastErr string
	db.QueryRow("SELECT attempts, next_attempt, last_error FROM messenger_outbox ORDER BY id LIMIT 1").Scan(&attempts, &next, &lastErr)
	if attempts != 1 || next < now.Add(59*time.Second).UnixMilli() || lastErr != "mesibo down" {
		t.Fatalf("attempts %d next %d err %q", attempts, next, lastErr)
	}
	if waiting := count(t, db, "SELECT COUNT(*) FROM messenger_outbox WHERE queue = 'user:1' AND attempts = 0 AND next_attempt = ?", next); waiting != 2 {
		t.Errorf("%d of the rows behind the failed one wait with it, want 2", waiting)
	}
	// The failed queue is not due; the other is delivered.
	runs = claimAll(t, s, 10, now)
	if len(runs) != 1 || runs[0].Queue != "user:2" {
		t.Fatalf("claimed %+v, want only user:2", runs)
	}
	if n, err := s.DeliverRun(context.Background(), runs[0], func(store.OutboxMessage) error { return nil }, nil); err != nil || n != 1 {
		t.Fatalf("delivered %d, %v", n, err)
	}
	depth, oldest, _ := s.OutboxStats(context.Background(), now.Add(time.Hour))
	if depth != 3 || oldest < 59*time.Minute {
		t.Fatalf("depth %d oldest %s", depth, oldest)
	}
}

// TestOutboxClaimDoesNotBlockWriters: while a worker holds a run (mesibo is slow),
// requests can still queue notifications, also of the same queue.
func TestOutboxClaimDoesNotBlockWriters(t *testing.T) {
	s, db := readyStore(t)
	queueRow(t, db, "user:1", "1", false)
	claimed := make(chan struct{})
	release := make(chan struct{})
	runs := claimAll(t, s, 10, time.Now())
	go s.DeliverRun(context.Background(), runs[0], func(store.OutboxMessage) error {
		close(claimed)
		<-release
		return nil
	}, nil)
	<-claimed
	start := time.Now()
	_, err := db.Exec("INSERT INTO messenger_outbox (queue, from_addr, to_addrs, body) VALUES ('user:1', '100', '2', '{}')")
	took := time.Since(start)
	close(release)
	if err != nil || took > time.Second {
		t.Fatalf("queueing during a claim took %s (%v)", took, err)
	}
}

// TestOutboxStopHandsRunBack: a worker stopped mid-run (a config reload cancels its
// context) leaves the undelivered rows due at once for the next worker, not leased, and
// counts no attempt for the one it was sending.
func TestOutboxStopHandsRunBack(t *testing.T) {
	s, db := readyStore(t)
	for i := range 5 {
		queueRow(t, db, "group:5", fmt.Sprint(i), false)
	}
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now()
	sent := 0
	runs := claimAll(t, s, 10, now)
	n, err := s.DeliverRun(ctx, runs[0], func(store.OutboxMessage) error {
		if sent++; sent == 2 {
			cancel() // the reload arrives while the second is on its way
			return ctx.Err()
		}
		return nil
	}, never)
	if err != nil || n != 1 {
		t.Fatalf("delivered %d, %v; want 1", n, err)
	}
	if due := count(t, db, "SELECT COUNT(*) FROM messenger_outbox WHERE next_attempt <= ? AND attempts = 0", now.UnixMilli()); due != 4 {
		t.Errorf("%d rows due again after the stop, want 4", due)
	}
	runs = claimAll(t, s, 10, now)
	if len(runs) != 1 || len(runs[0].Messages) != 4 {
		t.Fatalf("the next worker claimed %+v; want the 4 rows", runs)
	}
}

// TestOutboxStaleWorkerCannotUndoANewClaim: a worker that outlives its lease (its
// delivery hung) finds its queue claimed again by another; its late bookkeeping must not
// touch the other's claim.
func TestOutboxStaleWorkerCannotUndoANewClaim(t *testing.T) {
	s, db := readyStore(t)
	queueRow(t, db, "user:1", "1", false)
	queueRow(t, db, "user:1", "2", false)
	start := time.Now()
	inFirst := make(chan struct{})
	finishFirst := make(chan struct{})
	var wg sync.WaitGroup
	runA := claimAll(t, s, 10, start)
	wg.Go(func() {
		// Worker A: its first delivery fails late, after the lease ran out.
		s.DeliverRun(context.Background(), runA[0], func(m store.OutboxMessage) error {
			close(inFirst)
			<-finishFirst
			return errors.New("timed out")
		}, never)
	})
	<-inFirst
	// Worker B, three minutes later by its clock: A's lease has run out.
	runB := claimAll(t, s, 10, start.Add(3*time.Minute))
	if len(runB) != 1 || len(runB[0].Messages) != 2 {
		t.Fatalf("worker B claimed %+v; want both rows", runB)
	}
	var claimedByB []int64
	n, err := s.DeliverRun(context.Background(), runB[0], func(m store.OutboxMessage) error {
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

// TestOutboxMigrationKeepsRows: rows queued before migration 4 (no queue) are kept by
// it, and delivered, in their order, as one queue.
func TestOutboxMigrationKeepsRows(t *testing.T) {
	dsn := testenv.Database(t)
	migrateTo(t, dsn, 3)
	db := testenv.Open(t, dsn)
	for i := range 3 {
		if _, err := db.Exec("INSERT INTO messenger_outbox (from_addr, to_addrs, body, created) VALUES ('100', ?, '{}', ?)",
			fmt.Sprint(i), time.Now().Unix()); err != nil {
			t.Fatal(err)
		}
	}
	s, err := store.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	runs := claimAll(t, s, 10, time.Now())
	if len(runs) != 1 || runs[0].Queue != "" || len(runs[0].Messages) != 3 {
		t.Fatalf("claimed %+v, want the 3 old rows as one run", runs)
	}
	for i, msg := range runs[0].Messages {
		if msg.To != fmt.Sprint(i) {
			t.Errorf("row %d of the run is to %q", i, msg.To)
		}
	}
}

// migrateTo brings the database at dsn to the schema of migration version.
func migrateTo(t *testing.T, dsn string, version uint) {
	t.Helper()
	dialect := "mysql"
	if testenv.Embedded() {
		dialect = "sqlite"
	}
	source, err := iofs.New(migrations.FS, dialect)
	if err != nil {
		t.Fatal(err)
	}
	var driver database.Driver
	if testenv.Embedded() {
		driver, err = migratesqlite.WithInstance(testenv.Open(t, dsn), &migratesqlite.Config{})
	} else {
		cfg, perr := mysql.ParseDSN(dsn)
		if perr != nil {
			t.Fatal(perr)
		}
		cfg.MultiStatements = true // the migration files hold several statements
		driver, err = migratemysql.WithInstance(testenv.Open(t, cfg.FormatDSN()), &migratemysql.Config{})
	}
	if err != nil {
		t.Fatal(err)
	}
	m, err := migrate.NewWithInstance("iofs", source, dialect, driver)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Migrate(version); err != nil {
		t.Fatalf("migrate to %d: %v", version, err)
	}
}

// TestProfileTSGrowsWithEveryChange: every change of a user's profile has a ts of its own,
// growing with the order of the changes, also many in one second, also concurrent ones
// (PROTOCOL.md §4); each queues a profile update; a login does not move ts back.
func TestProfileTSGrowsWithEveryChange(t *testing.T) {
	s, db := readyStore(t)
	ctx := context.Background()
	const second = 1_800_000_000
	for uid, phone := range map[int64]string{31: "919812340031", 32: "919812340032", 33: "919812340033"} {
		if _, _, err := s.SaveLogin(ctx, store.Login{UID: uid, Phone: phone, Token: fmt.Sprintf("%064d", uid),
			Expiry: time.Now().Add(time.Hour), TS: second}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveContacts(ctx, 32, []string{"919812340031"}, false); err != nil { // 32 watches 31
		t.Fatal(err)
	}
	at := time.Unix(second, 0)
	watched, err := s.CallerByToken(ctx, fmt.Sprintf("%064d", 31))
	if err != nil {
		t.Fatal(err)
	}
	var answered []int64
	for i := range 5 { // one after another, all in one second, each request reading its caller
		caller, err := s.CallerByToken(ctx, fmt.Sprintf("%064d", 31))
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprint("name ", i)
		u, due, err := s.UpdateProfile(ctx, caller, store.ProfileChange{Name: &name}, at, 0)
		if err != nil || due.IsZero() != (i > 0) {
			t.Fatalf("UpdateProfile %d = %v, %v; want queued the first time only (then one waits)", i, due, err)
		}
		answered = append(answered, u.TS)
	}
	if want := []int64{second + 1, second + 2, second + 3, second + 4, second + 5}; !slices.Equal(answered, want) {
		t.Errorf("one after another: ts %v, want %v", answered, want)
	}
	var wg sync.WaitGroup
	for i := range 10 { // at once, half of them the token's way
		wg.Go(func() {
			status := fmt.Sprint("status ", i)
			var err error
			if i%2 == 0 {
				_, _, err = s.UpdateProfile(ctx, watched, store.ProfileChange{Status: &status}, at, 0)
			} else {
				_, err = s.UpdateOwnProfile(ctx, fmt.Sprintf("%064d", 31), store.ProfileChange{Status: &status}, at, 0)
			}
			if err != nil {
				t.Errorf("change %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	var queue, from, to, body string
	var replaceable bool
	var waiting, due int64
	if err := db.QueryRow("SELECT queue, replaceable, waiting, from_addr, to_addrs, body, next_attempt FROM messenger_outbox").Scan(
		&queue, &replaceable, &waiting, &from, &to, &body, &due); err != nil {
		t.Fatal(err)
	}
	if queue != "user:919812340031" || !replaceable || waiting != 919812340031 || from != "919812340031" || to != store.ToContactsOfSender || body != "" {
		t.Errorf("queued %q %v %d %q %q %q; want a waiting profile update of 919812340031", queue, replaceable, waiting, from, to, body)
	}
	if due != at.UnixMilli() {
		t.Errorf("profile update due at %d, want %d", due, at.UnixMilli())
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); n != 1 {
		t.Errorf("%d profile updates queued for 15 changes, want the 1 that waits for them all", n)
	}
	var stored int64
	db.QueryRow("SELECT ts FROM users WHERE uid = 31").Scan(&stored)
	if stored != second+15 {
		t.Errorf("stored ts %d, want %d: every change a ts of its own", stored, second+15)
	}

	// Nobody watches 33: the token's way grows ts the same way, and queues nothing.
	for i := range 3 {
		status := fmt.Sprint("alone ", i)
		if due, err := s.UpdateOwnProfile(ctx, fmt.Sprintf("%064d", 33), store.ProfileChange{Status: &status}, at, 0); err != nil || !due.IsZero() {
			t.Fatalf("UpdateOwnProfile = %v, %v; want written, nothing queued", due, err)
		}
	}
	db.QueryRow("SELECT ts FROM users WHERE uid = 33").Scan(&stored)
	if stored != second+3 {
		t.Errorf("unwatched user's ts %d after 3 changes in its login's second, want %d", stored, second+3)
	}
	// A new login in the same second is a change too, not a step back.
	if _, _, err := s.SaveLogin(ctx, store.Login{UID: 33, Phone: "919812340033", Token: fmt.Sprintf("%064d", 34),
		Expiry: time.Now().Add(time.Hour), TS: second}, nil); err != nil {
		t.Fatal(err)
	}
	db.QueryRow("SELECT ts FROM users WHERE uid = 33").Scan(&stored)
	if stored != second+4 {
		t.Errorf("ts %d after a login, want %d", stored, second+4)
	}
}

// TestProfileChangesEndWithTheLastStateSent: while many changes of one watched user come
// at once, some through the token's way and some with the caller known, and a worker
// claims and sends profile updates meanwhile (reading the profile when it sends, as
// outbox.Worker does), the last update sent carries the last change, no state is sent
// twice, and fewer updates than changes are sent; with profile updates spaced or not.
func TestProfileChangesEndWithTheLastStateSent(t *testing.T) {
	for _, interval := range []time.Duration{0, 20 * time.Millisecond} {
		t.Run(fmt.Sprint("interval ", interval), func(t *testing.T) { lastStateSent(t, interval) })
	}
}

func lastStateSent(t *testing.T, interval time.Duration) {
	s, db := readyStore(t)
	ctx := ctxT(t)
	for uid, phone := range map[int64]string{51: "919812340051", 52: "919812340052"} {
		if _, _, err := s.SaveLogin(ctx, store.Login{UID: uid, Phone: phone, Token: fmt.Sprintf("%064d", uid),
			Expiry: time.Now().Add(time.Hour), TS: 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveContacts(ctx, 52, []string{"919812340051"}, false); err != nil { // 52 watches 51
		t.Fatal(err)
	}
	caller, err := s.CallerByToken(ctx, fmt.Sprintf("%064d", 51))
	if err != nil {
		t.Fatal(err)
	}
	var sent []string
	var sentTS []int64
	deliver := func(m store.OutboxMessage) error {
		p, err := s.ProfileAudience(ctx, m.From, m.ID, time.Now())
		if err != nil || !slices.Equal(p.Watchers, []string{"919812340052"}) {
			return fmt.Errorf("audience %v, %v", p.Watchers, err)
		}
		message := fmt.Appendf(nil, "%s %d", p.User.Status, p.User.TS)
		if p.Later || p.SentAlready(message) { // as outbox.Worker
			return nil
		}
		sent, sentTS = append(sent, p.User.Status), append(sentTS, p.User.TS)
		time.Sleep(2 * time.Millisecond) // mesibo answering: changes come meanwhile
		return s.ProfileSent(ctx, p.User.Phone, message, time.Now())
	}
	work := func() int { // one round of a worker: what it claimed
		runs, err := s.ClaimOutbox(ctx, 10, 20, time.Minute, time.Now())
		if err != nil {
			t.Error(err)
			return 0
		}
		n := 0
		for _, r := range runs {
			n += len(r.Messages)
			if _, err := s.DeliverRun(ctx, r, deliver, never); err != nil {
				t.Error(err)
			}
		}
		return n
	}
	done := make(chan struct{})
	worked := make(chan struct{})
	go func() {
		defer close(worked)
		for {
			select {
			case <-done:
				return
			default:
				work()
			}
		}
	}()
	var wg sync.WaitGroup
	const writers, changes = 8, 25
	for w := range writers {
		wg.Go(func() {
			for i := range changes {
				status := fmt.Sprintf("%d-%d", w, i)
				var err error
				if w%2 == 0 {
					_, err = s.UpdateOwnProfile(ctx, fmt.Sprintf("%064d", 51), store.ProfileChange{Status: &status}, time.Now(), interval)
				} else {
					_, _, err = s.UpdateProfile(ctx, caller, store.ProfileChange{Status: &status}, time.Now(), interval)
				}
				if err != nil {
					t.Errorf("change %s: %v", status, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	<-worked
	// The updates queued after the worker's last round, held ones included.
	for deadline := time.Now().Add(10 * time.Second); count(t, db, "SELECT COUNT(*) FROM messenger_outbox") > 0; {
		if work() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the outbox did not drain")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var last string
	if err := db.QueryRow("SELECT status FROM users WHERE uid = 51").Scan(&last); err != nil {
		t.Fatal(err)
	}
	if len(sent) == 0 || sent[len(sent)-1] != last {
		t.Fatalf("%d updates sent, the last %q; want the last change %q sent last", len(sent), sent[max(len(sent)-1, 0):], last)
	}
	for i := 1; i < len(sentTS); i++ {
		if sentTS[i] <= sentTS[i-1] {
			t.Fatalf("state ts %d sent after %d; want every state once, in order", sentTS[i], sentTS[i-1])
		}
	}
	if len(sent) >= writers*changes {
		t.Errorf("%d updates sent for %d changes, want fewer (one waits for many)", len(sent), writers*changes)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM messenger_outbox"); n != 0 {
		t.Errorf("%d rows left in the outbox", n)
	}
	t.Logf("%d changes, %d updates sent", writers*changes, len(sent))
}

package outbox_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
	"github.com/caddy-messenger/messenger/outbox"
	"github.com/caddy-messenger/messenger/store"
)

const appToken = "outbox-test-app-token"

// fake is a mesibo fake behind a server that counts the calls in flight.
type fake struct {
	*mesibotest.Server
	url      string
	inFlight atomic.Int32
	maxSeen  atomic.Int32
}

func newFake(t testing.TB) *fake {
	f := &fake{Server: mesibotest.NewServer(t, appToken)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := f.inFlight.Add(1)
		defer f.inFlight.Add(-1)
		for seen := f.maxSeen.Load(); n > seen && !f.maxSeen.CompareAndSwap(seen, n); seen = f.maxSeen.Load() {
		}
		f.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL + "/backend/"
	return f
}

// sent returns the notes of the messages the fake accepted, by queue, in arrival order.
func (f *fake) sent(t testing.TB) map[string][]int {
	t.Helper()
	out := map[string][]int{}
	for _, c := range f.Messages() {
		var body struct {
			Queue string `json:"queue"`
			Note  int    `json:"note"`
		}
		msg := c.Fields["message"].(map[string]any)
		if err := json.Unmarshal([]byte(msg["message"].(string)), &body); err != nil {
			t.Fatal(err)
		}
		out[body.Queue] = append(out[body.Queue], body.Note)
	}
	return out
}

// open returns a store on a database of the test's own and a pool for its rows.
func open(t testing.TB) (*store.Store, *sql.DB, string) {
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
	return s, testenv.Open(t, dsn), dsn
}

// queue inserts the notification numbered note of queue, as the store queues one.
func queue(t testing.TB, db *sql.DB, q string, note int, replaceable bool) {
	t.Helper()
	body := fmt.Sprintf(`{"queue":%q,"note":%d}`, q, note)
	if _, err := db.Exec(`INSERT INTO messenger_outbox (queue, replaceable, from_addr, to_addrs, body, created, next_attempt)
		VALUES (?, ?, '100', '919800000001,919800000002', ?, ?, ?)`, q, replaceable, body, time.Now().Unix(), time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
}

func worker(t testing.TB, s *store.Store, f *fake, timeout time.Duration) *outbox.Worker {
	t.Helper()
	m, err := mesiboclient.New(mesiboclient.Config{Endpoint: f.url, AppToken: appToken, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	w := outbox.New(s, m, zaptest.NewLogger(t))
	w.Poll, w.MaxBackoff = 100*time.Millisecond, 200*time.Millisecond
	return w
}

// start runs w until the test ends or the returned func is called.
func start(t testing.TB, w *outbox.Worker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return stop
}

func waitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func depth(t testing.TB, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM messenger_outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func upTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestWorkerDeliversQueuesInParallelInOrder: with mesibo slow, a worker has several
// queues' notifications in flight at once, never more than its concurrency, and each
// queue's arrive in the order queued.
func TestWorkerDeliversQueuesInParallelInOrder(t *testing.T) {
	s, db, _ := open(t)
	f := newFake(t)
	f.FailAll("message", mesibotest.Failure{Delay: 50 * time.Millisecond}) // slow, then answered
	for note := range 5 {
		for q := range 12 {
			queue(t, db, fmt.Sprint("group:", q), note, false)
		}
	}
	w := worker(t, s, f, 5*time.Second)
	w.Concurrency = 8
	start(t, w)
	waitFor(t, "60 notifications", 20*time.Second, func() bool { return len(f.Messages()) == 60 })
	for q, notes := range f.sent(t) {
		if !slices.Equal(notes, upTo(5)) {
			t.Errorf("%s arrived as %v", q, notes)
		}
	}
	if most := f.maxSeen.Load(); most < 2 || most > 8 {
		t.Errorf("at most %d deliveries in flight, want 2 to 8", most)
	}
	waitFor(t, "an empty outbox", 5*time.Second, func() bool { return depth(t, db) == 0 })
}

// TestWorkerOutageKeepsOrder: notifications queued while mesibo is down arrive in order
// once it is back: a group's every one, and of a user's silent updates at least the last.
func TestWorkerOutageKeepsOrder(t *testing.T) {
	s, db, _ := open(t)
	f := newFake(t)
	f.FailAll("message", mesibotest.Failure{Status: http.StatusServiceUnavailable})
	w := worker(t, s, f, 5*time.Second)
	start(t, w)
	for note := range 10 {
		queue(t, db, "user:919800000009", note, true)
		queue(t, db, "group:77", note, false)
		w.Wake()
		time.Sleep(30 * time.Millisecond) // the worker tries and fails in between
	}
	waitFor(t, "failed attempts", 5*time.Second, func() bool { return len(f.CallsOf("message")) >= 2 })
	f.Reset()
	waitFor(t, "the group's notifications", 10*time.Second, func() bool { return len(f.sent(t)["group:77"]) == 10 })
	waitFor(t, "an empty outbox", 5*time.Second, func() bool { return depth(t, db) == 0 })
	sent := f.sent(t)
	if !slices.Equal(sent["group:77"], upTo(10)) {
		t.Errorf("the group's arrived as %v", sent["group:77"])
	}
	user := sent["user:919800000009"]
	if len(user) == 0 || user[len(user)-1] != 9 || !slices.IsSorted(user) || len(slices.Compact(slices.Clone(user))) != len(user) {
		t.Errorf("the user's arrived as %v, want growing and ending on 9", user)
	}
}

// TestWorkerProbesWhileMesiboFails: while every delivery fails, the worker tries one
// queue at a time rather than all it could have in flight.
func TestWorkerProbesWhileMesiboFails(t *testing.T) {
	s, db, _ := open(t)
	f := newFake(t)
	f.FailAll("message", mesibotest.Failure{Status: http.StatusBadGateway})
	for q := range 100 {
		queue(t, db, fmt.Sprint("user:", q), 0, true)
	}
	w := worker(t, s, f, 5*time.Second)
	w.Concurrency = 16
	start(t, w)
	time.Sleep(time.Second)
	// The first claim takes 16 queues, which all fail; then one queue at a time, a
	// Poll (100ms) after the last failure. Without that, the worker would keep 16 in
	// flight, each row tried again every MaxBackoff (200ms).
	if calls := len(f.CallsOf("message")); calls < 16 || calls > 16+12 {
		t.Errorf("%d calls to mesibo in its first second down", calls)
	}
	f.Reset()
	waitFor(t, "all 100 after mesibo is back", 10*time.Second, func() bool { return len(f.Messages()) == 100 })
}

// TestWorkerAbandonedRunIsDeliveredByAnother: instance A claims the rows and hangs
// mid-delivery (it died, as far as the others can tell); instance B, on the same
// database, delivers them once A's lease has run out, each queue in order, and A's late
// bookkeeping changes nothing.
func TestWorkerAbandonedRunIsDeliveredByAnother(t *testing.T) {
	sA, db, dsn := open(t)
	for note := range 4 {
		for q := range 3 {
			queue(t, db, fmt.Sprint("group:", q), note, false)
		}
	}
	hung := newFake(t)
	hung.FailAll("message", mesibotest.Failure{Delay: time.Hour}) // never answers
	a := worker(t, sA, hung, time.Minute)
	const lease = 2 * time.Second
	// Its three deliveries hang, so A claims nothing more, as a dead instance would not.
	a.Lease, a.Concurrency = lease, 3
	claimedByA := time.Now()
	stopA := start(t, a)
	waitFor(t, "A's deliveries in flight", 5*time.Second, func() bool { return hung.inFlight.Load() == 3 })

	sB, err := store.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sB.Close() })
	up := newFake(t)
	b := worker(t, sB, up, 5*time.Second)
	start(t, b)
	waitFor(t, "B's deliveries", 10*time.Second, func() bool { return len(up.Messages()) == 12 })
	if took := time.Since(claimedByA); took < lease {
		t.Errorf("B delivered A's rows %s after A claimed them, within A's lease", took)
	}
	for q, notes := range up.sent(t) {
		if !slices.Equal(notes, upTo(4)) {
			t.Errorf("%s arrived as %v", q, notes)
		}
	}
	waitFor(t, "an empty outbox", 5*time.Second, func() bool { return depth(t, db) == 0 })
	stopA() // A's calls end now, long after its lease; its bookkeeping must find nothing
	if n := depth(t, db); n != 0 || len(up.Messages()) != 12 || len(hung.Messages()) != 0 {
		t.Errorf("after A came back: %d rows, B sent %d, A sent %d", n, len(up.Messages()), len(hung.Messages()))
	}
}

// watched logs in the users uid and watcher (phones 9198000000 and the uid, ts 1), and
// puts uid among watcher's contacts.
func watched(t testing.TB, s *store.Store, uid, watcher int64) {
	t.Helper()
	ctx := context.Background()
	for _, id := range []int64{uid, watcher} {
		if _, _, err := s.SaveLogin(ctx, store.Login{UID: id, Phone: fmt.Sprintf("91980000%04d", id), Token: fmt.Sprintf("%064d", id),
			Expiry: time.Now().Add(time.Hour), TS: 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveContacts(ctx, watcher, []string{fmt.Sprintf("91980000%04d", uid)}, false); err != nil {
		t.Fatal(err)
	}
}

// TestWorkerOldProfileUpdateStillGoes: a message older than its expiry is dropped, but a
// profile update of that age is sent (composed when it goes, its row stands for every
// change since it was queued).
func TestWorkerOldProfileUpdateStillGoes(t *testing.T) {
	s, db, _ := open(t)
	watched(t, s, 61, 62)
	old := time.Now().Add(-2 * outbox.MessageExpiry)
	for _, row := range [][]any{{"group:1", 0, "100", "919800000062", `{"queue":"group:1","note":0}`},
		{"user:919800000061", 1, "919800000061", store.ToContactsOfSender, ""}} {
		if _, err := db.Exec(`INSERT INTO messenger_outbox (queue, replaceable, from_addr, to_addrs, body, created, next_attempt)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, append(row, old.Unix(), time.Now().UnixMilli())...); err != nil {
			t.Fatal(err)
		}
	}
	f := newFake(t)
	w := worker(t, s, f, 5*time.Second)
	w.ProfileBody = func(_ context.Context, u store.User) []byte { return []byte(`{"phone":"` + u.Phone + `"}`) }
	start(t, w)
	waitFor(t, "an empty outbox", 10*time.Second, func() bool { return depth(t, db) == 0 })
	msgs := f.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sent %+v; want only the profile update", msgs)
	}
	if msg, _ := msgs[0].Fields["message"].(map[string]any); msg["from"] != "919800000061" || msg["to"] != "919800000062" {
		t.Errorf("sent %+v; want the profile update of 61 to 62", msg)
	}
}

// TestWorkerSendsAProfileStateOnce: a profile update that would send the message the last
// one sent (its change was sent by the update before, which read it) sends nothing; one
// after a change sends it.
func TestWorkerSendsAProfileStateOnce(t *testing.T) {
	s, db, _ := open(t)
	ctx := context.Background()
	watched(t, s, 63, 64)
	queueUpdate := func() {
		t.Helper()
		if _, err := db.Exec(`INSERT INTO messenger_outbox (queue, replaceable, from_addr, to_addrs, body, created, next_attempt)
			VALUES ('user:919800000063', 1, '919800000063', ?, '', ?, ?)`, store.ToContactsOfSender, time.Now().Unix(), time.Now().UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	f := newFake(t)
	w := worker(t, s, f, 5*time.Second)
	w.ProfileBody = func(_ context.Context, u store.User) []byte { return []byte(fmt.Sprintf(`{"status":%q}`, u.Status)) }
	start(t, w)
	sentAll := func(n int) {
		t.Helper()
		waitFor(t, "an empty outbox", 10*time.Second, func() bool { return depth(t, db) == 0 })
		if got := len(f.Messages()); got != n {
			t.Fatalf("%d messages sent, want %d", got, n)
		}
	}
	queueUpdate()
	sentAll(1)
	queueUpdate() // the profile has not changed since
	sentAll(1)
	sum := sha256.Sum256([]byte(`{"status":""}`))
	var recorded int64
	if err := db.QueryRow("SELECT fingerprint FROM messenger_profile_sent WHERE phone = 919800000063").Scan(&recorded); err != nil ||
		recorded != int64(binary.BigEndian.Uint64(sum[:8])) {
		t.Errorf("recorded fingerprint %x (%v), want the message sent's", recorded, err)
	}
	status := "away"
	caller, err := s.CallerByToken(ctx, fmt.Sprintf("%064d", 63))
	if err != nil {
		t.Fatal(err)
	}
	if _, due, err := s.UpdateProfile(ctx, caller, store.ProfileChange{Status: &status}, time.Now(), 0); err != nil || due.IsZero() {
		t.Fatalf("UpdateProfile = %v, %v; want an update queued", due, err)
	}
	w.Wake()
	sentAll(2)
	if msg, _ := f.Messages()[1].Fields["message"].(map[string]any); msg["message"] != `{"status":"away"}` {
		t.Errorf("second message %+v, want the status away", msg)
	}
}

// TestWorkerWakeAt: a row queued to go later is sent once WakeAt's time comes, with no
// poll to find it, and not before.
func TestWorkerWakeAt(t *testing.T) {
	s, db, _ := open(t)
	f := newFake(t)
	w := worker(t, s, f, 5*time.Second)
	w.Poll = time.Hour
	start(t, w)
	due := time.Now().Add(500 * time.Millisecond)
	if _, err := db.Exec(`INSERT INTO messenger_outbox (queue, replaceable, from_addr, to_addrs, body, created, next_attempt)
		VALUES ('user:919800000065', 0, '919800000065', '919800000066', '{}', ?, ?)`, time.Now().Unix(), due.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	w.WakeAt(due)
	w.Wake() // a wake before the row is due finds nothing, and does not lose the later one
	for time.Now().Before(due.Add(-50 * time.Millisecond)) {
		if n := len(f.Messages()); n != 0 {
			t.Fatalf("%d messages sent before the row was due", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "the row to be sent once due", 5*time.Second, func() bool { return depth(t, db) == 0 })
	if n := len(f.Messages()); n != 1 {
		t.Errorf("%d messages sent, want 1", n)
	}
}

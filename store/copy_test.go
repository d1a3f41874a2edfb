package store_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/store"
)

// populatedEmbedded fills an embedded store through the store's own API, as a server
// would: users with tokens, contact lists, a profile change that queues notifications,
// a group, push tokens.
func populatedEmbedded(t *testing.T) *store.Store {
	t.Helper()
	s := openStore(t, store.EmbeddedPrefix+filepath.Join(t.TempDir(), "messenger.db"))
	ctx := ctxT(t)
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	var u105 store.User
	for i := range 30 {
		u, _, err := s.SaveLogin(ctx, store.Login{UID: int64(100 + i), Phone: fmt.Sprint(919800000100 + i), CC: 91,
			Name: fmt.Sprintf("user %d 🙂", i), Token: fmt.Sprintf("%064d", i), Expiry: tokenExpiry(now, i),
			IPv4: uint32(i), Device: 1, TS: now.Unix() + int64(i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if u.UID == 105 {
			u105 = u
		}
		var book []string
		for j := range 40 {
			book = append(book, fmt.Sprint(919800000100+(i+j)%60))
		}
		if err := s.SaveContacts(ctx, int64(100+i), book, false); err != nil {
			t.Fatal(err)
		}
		if err := s.SetNotifyToken(ctx, int64(100+i), "push-"+fmt.Sprint(i), 1, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	status := "busy"
	if _, _, err := s.UpdateProfile(ctx, store.Caller{User: u105}, store.ProfileChange{Status: &status}, now.Add(time.Minute), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.ProfileSent(ctx, "919800000104", []byte("104's profile"), time.UnixMilli(1_800_000_000_123)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.InsertGroup(ctx, store.NewGroup{GID: 7001, Name: "Team", Owner: "919800000101", Members: []string{"919800000102", "919800000103"}},
		now, func(g store.Group) store.Notification {
			return store.Notification{From: "100", To: g.Phones, Body: []byte("{}")}
		}); err != nil {
		t.Fatal(err)
	}
	return s
}

func tokenExpiry(now time.Time, i int) time.Time { return now.Add(time.Duration(i+1) * 24 * time.Hour) }

func TestCopyEmbeddedToMySQL(t *testing.T) {
	src := populatedEmbedded(t)
	dsn := testenv.MySQLDatabase(t)
	dst := openStore(t, dsn)
	ctx := ctxT(t)

	counts, err := store.Copy(ctx, src, dst)
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	got := map[string]int64{}
	for _, c := range counts {
		got[c.Table] = c.Rows
	}
	want := map[string]int64{"users": 30, "tokens": 30, "contacts": 30 * 40, "groups": 1, "members": 3, "notifytokens": 30,
		"messenger_profile_sent": 1}
	for table, n := range want {
		if got[table] != n {
			t.Errorf("copied %d rows of %s, want %d", got[table], table, n)
		}
	}
	if got["messenger_outbox"] == 0 {
		t.Errorf("no queued notification was copied")
	}
	db := testenv.Open(t, dsn)
	for table, n := range got {
		if c := count(t, db, "SELECT COUNT(*) FROM `"+table+"`"); int64(c) != n {
			t.Errorf("MySQL holds %d rows of %s, Copy said %d", c, table, n)
		}
	}

	// Spot checks through the store API on the MySQL side: the same answers as before.
	for _, s := range []*store.Store{src, dst} {
		u, err := s.CallerByToken(ctx, fmt.Sprintf("%064d", 29))
		if err != nil || u.UID != 129 || u.Name != "user 29 🙂" || u.Phone != "919800000129" {
			t.Errorf("CallerByToken after copy = %+v, %v", u, err)
		}
		_, contacts, _, err := s.SyncSince(ctx, fmt.Sprintf("%064d", 1), 0, 1000, 10)
		if err != nil || len(contacts) != 28 { // 1..40 in the book, 0..29 registered, minus itself
			t.Errorf("SyncSince(101) = %d users, %v; want 28", len(contacts), err)
		}
		_, _, groups, err := s.SyncSince(ctx, fmt.Sprintf("%064d", 3), 0, 1000, 10)
		if err != nil || len(groups) != 1 || groups[0].Name != "Team" ||
			!slices.Equal(groups[0].Phones, []string{"919800000101", "919800000102", "919800000103"}) {
			t.Errorf("groups after copy = %+v, %v", groups, err)
		}
	}
	var queue string
	var body []byte
	if err := db.QueryRow("SELECT queue, body FROM messenger_outbox WHERE to_addrs = ? AND from_addr = '919800000105'", store.ToContactsOfSender).Scan(&queue, &body); err != nil ||
		queue != "user:919800000105" || body == nil || len(body) != 0 {
		t.Errorf("queued profile update after copy = %q %q, %v", queue, body, err)
	}
	if p, err := dst.ProfileAudience(ctx, "919800000104", 0, time.Now()); err != nil || !p.SentAlready([]byte("104's profile")) {
		t.Errorf("after copy, the last profile update of 104 = %+v, %v; want its message sent already", p, err)
	}
	var sent int64
	if err := db.QueryRow("SELECT sent_ms FROM messenger_profile_sent WHERE phone = 919800000104").Scan(&sent); err != nil ||
		sent != 1_800_000_000_123 {
		t.Errorf("after copy, 104's last profile update went out at %d (%v), want 1800000000123", sent, err)
	}
	var expiry string
	if err := db.QueryRow("SELECT expirytime FROM tokens WHERE uid = 103").Scan(&expiry); err != nil {
		t.Fatal(err)
	}
	if e, err := time.Parse("2006-01-02 15:04:05", expiry); err != nil || tokenExpiry(time.Now(), 3).Sub(e).Abs() > time.Minute {
		t.Errorf("token expiry after copy = %q, %v; want about %v", expiry, err, tokenExpiry(time.Now(), 3).UTC())
	}

	// A second copy into the now populated database is refused and changes nothing.
	if _, err := store.Copy(ctx, src, dst); err == nil || !strings.Contains(err.Error(), "empty database") {
		t.Errorf("copy into a populated database: %v, want a refusal", err)
	}
	if c := count(t, db, "SELECT COUNT(*) FROM users"); c != 30 {
		t.Errorf("users after the refused copy = %d", c)
	}

	// And back from MySQL into a new embedded store: MySQL's text values (numbers and
	// times as bytes) land with their SQLite column types.
	back := openStore(t, store.EmbeddedPrefix+filepath.Join(t.TempDir(), "back.db"))
	again, err := store.Copy(ctx, dst, back)
	if err != nil {
		t.Fatalf("Copy MySQL to SQLite: %v", err)
	}
	if !slices.Equal(again, counts) {
		t.Errorf("copied back %v, want %v", again, counts)
	}
	if u, err := back.CallerByToken(ctx, fmt.Sprintf("%064d", 29)); err != nil || u.UID != 129 || u.Name != "user 29 🙂" {
		t.Errorf("CallerByToken after the copy back = %+v, %v", u, err)
	}
	if _, contacts, _, err := back.SyncSince(ctx, fmt.Sprintf("%064d", 1), 0, 1000, 10); err != nil || len(contacts) != 28 {
		t.Errorf("SyncSince(101) after the copy back = %d users, %v", len(contacts), err)
	}
}

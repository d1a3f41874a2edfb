package caddymodule_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
)

// roomy lifts the OTP limits so a test can log several users in.
const roomy = "rate_limit otp_phone 100 1m\n\t\trate_limit otp_ip 1000 1m"

// contactsOf answers getcontacts and returns its contact records by phone (or by gid
// for groups).
func contactsOf(t *testing.T, a answer) map[string]map[string]any {
	t.Helper()
	expectOK(t, a, "getcontacts")
	list, ok := a.body["contacts"].([]any)
	if !ok {
		t.Fatalf("contacts is not a list: %s", a.raw)
	}
	out := map[string]map[string]any{}
	for _, item := range list {
		rec := item.(map[string]any)
		key := rec["phone"].(string)
		if key == "" {
			key = "group:" + rec["gid"].(string)
		}
		out[key] = rec
	}
	return out
}

func keys(m map[string]map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestContactSync: three users with overlapping address books written in the forms
// people use; matches, delta sync by ts, reset, and both list encodings.
func TestContactSync(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98123 45001", "919812345001")
	bob := e.login(form, "+91 98123 45002", "919812345002")
	cyd := e.login(jsonBody, "+44 20 7946 0003", "442079460003")
	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": bob, "name": "Bob", "status": "busy"}), "profile")

	// Ada's book: Bob written nationally (her country is India), Cyd with +44 and spaces,
	// a number that is nobody's, her own number, and junk.
	a := e.call(form, map[string]any{"op": "getcontacts", "token": ada, "ts": 0,
		"phones": "098123 45002, +44 20 7946 0003,+91 98123 49999,919812345001,hello,12"})
	got := contactsOf(t, a)
	if !slices.Equal(keys(got), []string{"442079460003", "919812345002"}) {
		t.Fatalf("Ada's matches %v: %s", keys(got), a.raw)
	}
	b := got["919812345002"]
	if b["name"] != "Bob" || b["status"] != "busy" || b["gid"] != "0" || b["photo"] != "" {
		t.Fatalf("Bob's record %v", b)
	}
	if _, err := strconv.ParseInt(b["ts"].(string), 10, 64); err != nil {
		t.Fatalf("ts %v is not a decimal string", b["ts"])
	}
	if got["442079460003"]["name"] != "" || got["442079460003"]["status"] != "" {
		t.Fatalf("a user without name/status must give empty strings: %v", got["442079460003"])
	}
	if u, _ := a.body["u"].(map[string]any); u["phone"] != "919812345001" {
		t.Fatalf("u is not Ada: %v", a.body["u"])
	}
	if n := e.count("SELECT COUNT(*) FROM contacts c JOIN users u ON u.uid = c.uid WHERE u.phone = '919812345001'"); n != 3 {
		t.Fatalf("Ada's stored contacts %d, want 3 (Bob, Cyd, the unregistered number)", n)
	}

	// Cyd's book as a JSON array, numbers as JSON numbers too.
	c := contactsOf(t, e.call(jsonBody, map[string]any{"op": "getcontacts", "token": cyd, "phones": []any{919812345001, "+91 98123 45002"}}))
	if !slices.Equal(keys(c), []string{"919812345001", "919812345002"}) {
		t.Fatalf("Cyd's matches %v", keys(c))
	}

	// Delta: nothing changed since the last sync; then Bob changes his status. The sync
	// resumes from the latest ts it saw: Bob's, when his login and his profile change fell
	// in one second (each change has a ts of its own, so the second is a second ahead).
	last := a.body["ts"].(float64)
	for _, r := range got {
		ts, _ := strconv.ParseFloat(r["ts"].(string), 64)
		last = max(last, ts)
	}
	time.Sleep(1100 * time.Millisecond) // ts has one-second resolution
	if d := contactsOf(t, e.call(query, map[string]any{"op": "getcontacts", "token": ada, "ts": int64(last)})); len(d) != 0 {
		t.Fatalf("delta without changes: %v", keys(d))
	}
	expectOK(t, e.call(multipart_, map[string]any{"op": "profile", "token": bob, "status": "free"}), "profile")
	d := contactsOf(t, e.call(query, map[string]any{"op": "getcontacts", "token": ada, "ts": int64(last)}))
	if !slices.Equal(keys(d), []string{"919812345002"}) || d["919812345002"]["status"] != "free" || d["919812345002"]["name"] != "Bob" {
		t.Fatalf("delta after Bob's change: %v", d)
	}
	// The periodic sync finds its caller in its own statement: u is Ada, the app
	// configuration comes with it, an unknown token is refused.
	p := e.call(jsonBody, map[string]any{"op": "getcontacts", "token": ada, "ts": int64(last)})
	if u, _ := p.body["u"].(map[string]any); u["phone"] != "919812345001" || p.str("uploadurl") == "" {
		t.Fatalf("periodic sync without Ada's u or the app configuration: %s", p.raw)
	}
	expectFail(t, e.call(query, map[string]any{"op": "getcontacts", "token": strings.Repeat("e", 64), "ts": 0}), "AUTHFAIL")

	// delcontacts, then reset.
	expectOK(t, e.call(form, map[string]any{"op": "delcontacts", "token": ada, "phones": "+44 20 7946 0003"}), "delcontacts")
	if all := contactsOf(t, e.call(query, map[string]any{"op": "getcontacts", "token": ada, "ts": 0})); !slices.Equal(keys(all), []string{"919812345002"}) {
		t.Fatalf("after delcontacts: %v", keys(all))
	}
	a = e.call(form, map[string]any{"op": "getcontacts", "token": ada, "reset": 1})
	if r := contactsOf(t, a); len(r) != 0 {
		t.Fatalf("reset without phones answered users: %v", keys(r))
	}
	if n := e.count("SELECT COUNT(*) FROM contacts c JOIN users u ON u.uid = c.uid WHERE u.phone = '919812345001'"); n != 0 {
		t.Fatalf("reset left %d contacts", n)
	}
	if _, isList := a.body["contacts"].([]any); !isList {
		t.Fatalf("contacts must be [] when empty: %s", a.raw)
	}

	// An expired token is refused by a sync and by a reset, which deletes nothing.
	if _, err := e.db.Exec("UPDATE tokens SET expirytime = '2001-01-01' WHERE token = ?", cyd); err != nil {
		t.Fatal(err)
	}
	expectFail(t, e.call(form, map[string]any{"op": "getcontacts", "token": cyd, "ts": 0}), "AUTHFAIL")
	expectFail(t, e.call(form, map[string]any{"op": "getcontacts", "token": cyd, "reset": 1}), "AUTHFAIL")
	if n := e.count("SELECT COUNT(*) FROM contacts c JOIN users u ON u.uid = c.uid WHERE u.phone = '442079460003'"); n != 2 {
		t.Fatalf("Cyd's contacts after refused requests: %d, want 2", n)
	}
}

// TestLargeAddressBook: 5,000 numbers in one request, stored with a bounded number of
// statements, the registered ones found.
func TestLargeAddressBook(t *testing.T) {
	e := startEnv(t, options{extra: roomy + "\n\t\tmax_body_size 1MB"})
	ada := e.login(form, "+91 98123 46001", "919812346001")
	e.login(form, "+91 98123 46002", "919812346002")
	phones := make([]string, 0, 5000)
	for i := range 4999 {
		phones = append(phones, fmt.Sprintf("+9198%08d", 20000000+i))
	}
	phones = append(phones, "+91 98123 46002")
	a := e.call(jsonBody, map[string]any{"op": "getcontacts", "token": ada, "phones": phones})
	if got := contactsOf(t, a); !slices.Equal(keys(got), []string{"919812346002"}) {
		t.Fatalf("matches %v", keys(got))
	}
	if n := e.count("SELECT COUNT(*) FROM contacts c JOIN users u ON u.uid = c.uid WHERE u.phone = '919812346001'"); n != 5000 {
		t.Fatalf("stored %d contacts", n)
	}
	// The same book again is free (all known) and changes nothing.
	contactsOf(t, e.call(jsonBody, map[string]any{"op": "getcontacts", "token": ada, "phones": phones}))
	// One more than the cap is refused.
	phones = append(phones, "+91 98123 46003")
	expectFail(t, e.call(jsonBody, map[string]any{"op": "getcontacts", "token": ada, "phones": phones}), "TOOLARGE")
}

// TestDiscoveryBudget: new numbers cost, known ones are free, the bucket refills.
func TestDiscoveryBudget(t *testing.T) {
	e := startEnv(t, options{extra: roomy + "\n\t\tcontact_discovery {\n\t\t\tbudget 5\n\t\t\trefill 5 2s\n\t\t\tmax_phones 5\n\t\t}"})
	ada := e.login(form, "+91 98123 47001", "919812347001")
	book := func(from, n int) string {
		var p []string
		for i := from; i < from+n; i++ {
			p = append(p, fmt.Sprintf("9198%08d", 30000000+i))
		}
		return strings.Join(p, ",")
	}
	contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": ada, "phones": book(0, 5)}))
	contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": ada, "phones": book(0, 5)})) // known: free
	a := e.call(form, map[string]any{"op": "getcontacts", "token": ada, "phones": book(5, 1)})
	expectFail(t, a, "RATELIMIT")
	if a.resp.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	if n := e.count("SELECT COUNT(*) FROM contacts c JOIN users u ON u.uid = c.uid WHERE u.phone = '919812347001'"); n != 5 {
		t.Fatalf("a refused request stored contacts: %d", n)
	}
	expectFail(t, e.call(form, map[string]any{"op": "getcontacts", "token": ada, "phones": book(0, 6)}), "TOOLARGE") // over max_phones
	time.Sleep(1200 * time.Millisecond)                                                                              // refill at 5 per 2s
	contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": ada, "phones": book(5, 1)}))
}

// TestHostileValues: SQL-looking text, NUL bytes and 4-byte emoji are stored as text,
// never executed.
func TestHostileValues(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98123 48001", "919812348001")
	bob := e.login(form, "+91 98123 48002", "919812348002")
	name := "Ada'); DROP TABLE users; -- 😀\x00z"
	status := `" OR 1=1 -- \`
	expectOK(t, e.call(jsonBody, map[string]any{"op": "profile", "token": ada, "name": name, "status": status}), "profile")
	a := e.call(jsonBody, map[string]any{"op": "getcontacts", "token": bob, "phones": []string{"919812348001", "1) OR 1=1 --", "'; DELETE FROM contacts; --"}})
	got := contactsOf(t, a)
	if got["919812348001"]["name"] != name || got["919812348001"]["status"] != status {
		t.Fatalf("stored %q / %q", got["919812348001"]["name"], got["919812348001"]["status"])
	}
	if n := e.count("SELECT COUNT(*) FROM users"); n != 2 {
		t.Fatalf("users %d", n)
	}
	if n := e.count("SELECT COUNT(*) FROM contacts"); n != 1 {
		t.Fatalf("contacts %d: the payloads must be skipped as invalid numbers", n)
	}
	expectOK(t, e.call(form, map[string]any{"op": "delcontacts", "token": bob, "phones": "0) OR 1=1 --,919812348001"}), "delcontacts")
	if n := e.count("SELECT COUNT(*) FROM users"); n != 2 {
		t.Fatal("delcontacts touched users")
	}
}

func TestSetNotify(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98123 49001", "919812349001")
	expectOK(t, e.call(form, map[string]any{"op": "setnotify", "token": ada, "notifytoken": "fcm-1", "dt": 1, "prod": 1}), "setnotify")
	expectOK(t, e.call(jsonBody, map[string]any{"op": "setnotify", "token": ada, "notifytoken": "fcm-2", "dt": 2, "prod": 0}), "setnotify")
	var token string
	var device, prod int
	if err := e.db.QueryRow("SELECT token, device, production FROM notifytokens").Scan(&token, &device, &prod); err != nil {
		t.Fatal(err)
	}
	if token != "fcm-2" || device != 2 || prod != 0 || e.count("SELECT COUNT(*) FROM notifytokens") != 1 {
		t.Fatalf("notifytokens: %s %d %d", token, device, prod)
	}
	expectOK(t, e.call(form, map[string]any{"op": "logout", "token": ada}), "logout")
	if e.count("SELECT COUNT(*) FROM notifytokens") != 0 {
		t.Fatal("logout left the push token")
	}
}

// pictures are small images of every accepted format.
func pictures(t *testing.T) map[string][]byte {
	img := image.NewRGBA(image.Rect(0, 0, 300, 200))
	for x := range 300 {
		for y := range 200 {
			img.Set(x, y, color.RGBA{uint8(x), 0, 200, 255})
		}
	}
	var p, j, g bytes.Buffer
	png.Encode(&p, img)
	jpeg.Encode(&j, img, nil)
	gif.Encode(&g, img, nil)
	w, err := os.ReadFile("../media/testdata/bands.webp")
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{"png": p.Bytes(), "jpg": j.Bytes(), "gif": g.Bytes(), "webp": w}
}

// upload posts fields with one file part the way the apps do.
func (e *env) upload(fields map[string]any, filename string, data []byte) answer {
	e.t.Helper()
	return e.uploadTo(apiURL, fields, filename, data)
}

// uploadTo is upload to another API URL.
func (e *env) uploadTo(apiURL string, fields map[string]any, filename string, data []byte) answer {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		mw.WriteField(k, fmt.Sprint(v))
	}
	fw, _ := mw.CreateFormFile("photo", filename)
	fw.Write(data)
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, apiURL, &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return e.do(req)
}

func (e *env) fetch(path string) (int, []byte) {
	e.t.Helper()
	resp, err := e.tester.Client.Get(siteURL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

var storedName = regexp.MustCompile(`^[0-9]+-[0-9a-f]{16}\.(jpg|png|gif|webp)$`)

func TestUploadPictures(t *testing.T) {
	e := startEnv(t, options{extra: roomy + "\n\t\tmax_picture_size 60KB\n\t\tmax_body_size 200KB"})
	ada := e.login(form, "+91 98123 50001", "919812350001")
	for ext, data := range pictures(t) {
		a := e.upload(map[string]any{"op": "upload", "token": ada, "profile": 1}, "../../../etc/passwd."+ext, data)
		expectOK(t, a, "upload")
		photo := a.str("photo")
		if !storedName.MatchString(photo) || !strings.HasSuffix(photo, "."+ext) {
			t.Fatalf("%s stored as %q", ext, photo)
		}
		if a.str("file") != siteURL+"/files/"+photo || a.str("phone") != "919812350001" || a.str("gid") != "0" || a.str("profile") != "1" {
			t.Fatalf("%s answer %s", ext, a.raw)
		}
		// The picture and its thumbnail are served by Caddy.
		status, body := e.fetch("/files/" + photo)
		if status != 200 || !bytes.Equal(body, data) {
			t.Fatalf("%s: GET /files/%s: %d, %d bytes", ext, photo, status, len(body))
		}
		status, thumb := e.fetch("/thumbs/" + photo)
		cfg, format, err := image.DecodeConfig(bytes.NewReader(thumb))
		if status != 200 || err != nil || format != "jpeg" || cfg.Width != 100 || cfg.Height != 100 {
			t.Fatalf("%s thumbnail: %d %s %dx%d %v", ext, status, format, cfg.Width, cfg.Height, err)
		}
		if tn, _ := base64.StdEncoding.DecodeString(a.str("tn")); !bytes.Equal(tn, thumb) {
			t.Fatalf("%s: tn is not the thumbnail", ext)
		}
		var stored string
		e.db.QueryRow("SELECT photo FROM users WHERE phone = '919812350001'").Scan(&stored)
		if stored != photo {
			t.Fatalf("users.photo %q, want %q", stored, photo)
		}
	}
	files := func() int {
		entries, _ := os.ReadDir(e.files + "/files")
		return len(entries)
	}
	before := files()
	pngData := pictures(t)["png"]
	bomb := pngBomb()
	for name, tc := range map[string]struct {
		data []byte
		code string
	}{
		"truncated": {pngData[:len(pngData)/2], "BADIMAGE"},
		"bomb":      {bomb, "BADIMAGE"},
		"text":      {[]byte("<svg onload=alert(1)>"), "BADIMAGE"},
		"oversize":  {bytes.Repeat([]byte{0xff}, 70<<10), "TOOLARGE"},
	} {
		t.Run(name, func(t *testing.T) {
			if a := e.upload(map[string]any{"op": "upload", "token": ada, "profile": 1}, "x.png", tc.data); a.str("error") != tc.code {
				t.Errorf("%s, want %s", a.raw, tc.code)
			}
		})
	}
	expectFail(t, e.call(form, map[string]any{"op": "upload", "token": ada, "profile": 1}), "MISSINGFILE")
	if files() != before {
		t.Fatal("a refused upload left a file")
	}
	// Delete: the profile picture is gone from the profile.
	a := e.call(form, map[string]any{"op": "upload", "token": ada, "profile": 1, "delete": 1})
	expectOK(t, a, "upload")
	var stored string
	e.db.QueryRow("SELECT photo FROM users WHERE phone = '919812350001'").Scan(&stored)
	if stored != "" || a.str("photo") != "" {
		t.Fatalf("after delete photo %q, answer %s", stored, a.raw)
	}
}

// pngBomb is a PNG that declares 20000x20000 pixels with almost no data.
func pngBomb() []byte {
	var buf bytes.Buffer
	png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1)))
	b := buf.Bytes()
	// IHDR width and height sit at bytes 16..23; the CRC after them is not checked by
	// DecodeConfig, which is what must refuse the file.
	for _, off := range []int{16, 20} {
		b[off], b[off+1], b[off+2], b[off+3] = 0, 0, 0x4e, 0x20
	}
	return b
}

// TestNotificationsSurviveMesiboOutage: with mesibo down, changes still answer OK at once;
// the notifications arrive once it is back, each once.
func TestNotificationsSurviveMesiboOutage(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98123 51001", "919812351001")
	// Bob and Cyd have Ada in their books.
	for _, p := range []string{"+91 98123 51002", "+91 98123 51003"} {
		digits := "91" + strings.ReplaceAll(p[4:], " ", "")
		tok := e.login(form, p, digits)
		contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": tok, "phones": "919812351001"}))
	}
	e.mesibo.FailAll("message", mesibotest.Failure{Status: 503})
	start := time.Now()
	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": ada, "name": "Ada", "status": "here"}), "profile")
	if took := time.Since(start); took > time.Second {
		t.Fatalf("profile took %s with mesibo down", took)
	}
	waitFor(t, "a failed delivery attempt", func() bool { return len(e.mesibo.CallsOf("message")) > 0 })
	if e.count("SELECT COUNT(*) FROM messenger_outbox") != 1 || len(e.mesibo.Messages()) != 0 {
		t.Fatal("the notification must wait in the outbox")
	}
	e.mesibo.Reset()
	waitFor(t, "the notification after mesibo is back", func() bool { return len(e.mesibo.Messages()) == 1 })
	time.Sleep(300 * time.Millisecond)
	msgs := e.mesibo.Messages()
	if len(msgs) != 1 || e.count("SELECT COUNT(*) FROM messenger_outbox") != 0 {
		t.Fatalf("messages %d, outbox %d", len(msgs), e.count("SELECT COUNT(*) FROM messenger_outbox"))
	}
	m := msgs[0].Fields["message"].(map[string]any)
	to := strings.Split(m["to"].(string), ",")
	slices.Sort(to)
	if m["from"] != "919812351001" || !slices.Equal(to, []string{"919812351002", "919812351003"}) || m["flags"] != float64(4) {
		t.Fatalf("message %v", m)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(m["message"].(string)), &body); err != nil {
		t.Fatal(err)
	}
	if body["name"] != "Ada" || body["status"] != "here" || body["phone"] != "919812351001" || body["type"] != float64(0) {
		t.Fatalf("notification body %v", body)
	}
}

// TestNewUserNotifiesContacts: a user who joins is announced to those who have the number.
func TestNewUserNotifiesContacts(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	bob := e.login(form, "+91 98123 52002", "919812352002")
	contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": bob, "phones": "+91 98123 52001"}))
	e.login(form, "+91 98123 52001", "919812352001")
	waitFor(t, "the new-user notification", func() bool { return len(e.mesibo.Messages()) == 1 })
	m := e.mesibo.Messages()[0].Fields["message"].(map[string]any)
	if m["to"] != "919812352002" || !strings.Contains(m["message"].(string), "is on the messenger now") {
		t.Fatalf("new-user notification %v", m)
	}
	// A second login of the same user is not news.
	e.login(form, "+91 98123 52001", "919812352001")
	time.Sleep(500 * time.Millisecond)
	if len(e.mesibo.Messages()) != 1 {
		t.Fatal("a returning user was announced again")
	}
}

// TestProfileChangesNotifyWatchersOnly: a change of name, status or picture reaches the
// users who have the changed user among their contacts, and nobody else; a user who has
// only itself in its book, or nobody, notifies nobody.
func TestProfileChangesNotifyWatchersOnly(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98123 53001", "919812353001")
	bob := e.login(form, "+91 98123 53002", "919812353002")
	contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": ada, "phones": "919812353001"}))
	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": ada, "status": "alone"}), "profile")
	expectOK(t, e.upload(map[string]any{"op": "upload", "token": ada, "profile": 1}, "a.png", pictures(t)["png"]), "upload")

	contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": bob, "phones": "919812353001"}))
	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": ada, "status": "watched"}), "profile")
	// Sent before the next change, which would otherwise replace it if both waited.
	waitFor(t, "the first notification", func() bool { return len(e.mesibo.Messages()) == 1 })
	picture := e.upload(map[string]any{"op": "upload", "token": ada, "profile": 1}, "b.png", pictures(t)["png"])
	expectOK(t, picture, "upload")
	waitFor(t, "two notifications", func() bool { return len(e.mesibo.Messages()) == 2 })
	time.Sleep(300 * time.Millisecond)
	msgs := e.mesibo.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d notifications, want 2 (the changes before Bob had Ada notify nobody)", len(msgs))
	}
	var bodies []map[string]any
	for _, m := range msgs {
		fields := m.Fields["message"].(map[string]any)
		var body map[string]any
		if err := json.Unmarshal([]byte(fields["message"].(string)), &body); err != nil {
			t.Fatal(err)
		}
		if fields["to"] != "919812353002" || fields["from"] != "919812353001" {
			t.Fatalf("notification %v, want from Ada to Bob", fields)
		}
		bodies = append(bodies, body)
	}
	newPicture := 0
	for _, body := range bodies {
		if body["status"] != "watched" || body["phone"] != "919812353001" {
			t.Fatalf("notification body %v, want Ada's status after Bob had her", body)
		}
		if body["photo"] == picture.str("photo") {
			newPicture++
		}
	}
	if newPicture != 1 {
		t.Fatalf("notification bodies %v: want one with the new picture %s", bodies, picture.str("photo"))
	}
}

// TestProfileOfUnwatchedUser: a change of a user nobody has as a contact (one statement
// that also proves the token) in every encoding: the answer carries the app configuration,
// only the fields sent change; an expired or unknown token is refused and changes nothing.
func TestProfileOfUnwatchedUser(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98123 53101", "919812353101")
	row := func() string { return e.dump("SELECT name, status, ts FROM users WHERE phone = 919812353101") }
	for i, enc := range encodings {
		status := fmt.Sprintf("status %d ✓ '; --", i)
		a := e.call(enc, map[string]any{"op": "profile", "token": ada, "status": status})
		expectOK(t, a, "profile")
		if a.str("uploadurl") == "" || a.str("downloadurl") == "" {
			t.Fatalf("%s: answer without the app configuration: %s", enc, a.raw)
		}
		if got := row(); !strings.HasPrefix(got, ":"+status+":") {
			t.Fatalf("%s: row %q, want no name and status %q", enc, got, status)
		}
	}
	// The same change twice at once: MySQL counts no changed row the second time (same
	// values, same second), which must still answer OK.
	for range 2 {
		expectOK(t, e.call(jsonBody, map[string]any{"op": "profile", "token": ada, "name": "Ada"}), "profile")
	}
	before := row()
	if want := fmt.Sprintf("Ada:status %d ✓", len(encodings)-1); !strings.HasPrefix(before, want) {
		t.Fatalf("row %q: want the name set and the last status kept (%q)", before, want)
	}
	expectFail(t, e.call(form, map[string]any{"op": "profile", "token": strings.Repeat("f", 64), "status": "x"}), "AUTHFAIL")
	if _, err := e.db.Exec("UPDATE tokens SET expirytime = '2001-01-01' WHERE token = ?", ada); err != nil {
		t.Fatal(err)
	}
	expectFail(t, e.call(form, map[string]any{"op": "profile", "token": ada, "status": "expired"}), "AUTHFAIL")
	if got := row(); got != before {
		t.Fatalf("row %q after refused changes, want %q", got, before)
	}
	if n := len(e.mesibo.Messages()); n != 0 {
		t.Fatalf("%d notifications of a user nobody has", n)
	}
}

// TestProfileWithPicture: profile takes the picture as a file part, as the apps send it.
func TestProfileWithPicture(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98123 53001", "919812353001")
	a := e.upload(map[string]any{"op": "profile", "token": ada, "name": "Ada", "status": "on a photo"}, "me.png", pictures(t)["png"])
	expectOK(t, a, "profile")
	var name, status, photo string
	e.db.QueryRow("SELECT name, status, photo FROM users WHERE phone = '919812353001'").Scan(&name, &status, &photo)
	if name != "Ada" || status != "on a photo" || !storedName.MatchString(photo) {
		t.Fatalf("profile row: %q %q %q", name, status, photo)
	}
	if code, _ := e.fetch("/thumbs/" + photo); code != 200 {
		t.Fatalf("thumbnail of the profile picture: HTTP %d", code)
	}
	// A broken picture refuses the whole change.
	expectFail(t, e.upload(map[string]any{"op": "profile", "token": ada, "name": "Eve"}, "x.png", []byte("nope")), "BADIMAGE")
	e.db.QueryRow("SELECT name FROM users WHERE phone = '919812353001'").Scan(&name)
	if name != "Ada" {
		t.Fatalf("a refused profile changed the name to %q", name)
	}
}

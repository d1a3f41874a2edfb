package caddymodule_test

import (
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
)

const (
	// fleetSize is how many instances stand behind the balancer.
	fleetSize = 3
	// fleetLease is the instances' outbox lease: short, so that the notifications a lost
	// instance claimed are delivered by the others within the test's time.
	fleetLease = 3 * time.Second
	// mesiboLatency is how long the mesibo fake takes to take a message while an
	// instance is killed: its deliveries are then in flight.
	mesiboLatency = 800 * time.Millisecond
)

// deployment is where a session's requests go: the site the apps are given and the
// instances behind it, with its fakes and database.
type deployment struct {
	e      *env
	front  string   // the site the apps use: the balancer, or the single instance
	sites  []string // the instances, fleetSize of them (the single instance's site each time)
	hook   *hook
	mesibo *mesibotest.Server
	db     *sql.DB
}

// fleet is fleetSize caddy processes with the messenger module behind a further caddy
// process that balances them (scripts/fleet/balancer.Caddyfile), on one MariaDB, one Redis
// and one S3 server, with files in the bucket.
type fleet struct {
	deployment
	procs []*os.Process
	// upstreams are the instances' addresses as the balancer names them in its
	// X-Fleet-Upstream header and its log.
	upstreams []string
	// balancerLog is the balancer's JSON log of reverse_proxy, debug level: one
	// "selected upstream" line for every attempt to reach an instance.
	balancerLog string
}

// TestFleet (issue 16): a fleet answers a whole session exactly as one instance does,
// whichever instance each request reaches; then one instance is killed with SIGKILL
// under load: only requests in flight on it fail, the balancer stops choosing it, and
// the notifications it had claimed are delivered by the others once its lease is over.
func TestFleet(t *testing.T) {
	testenv.SkipIfEmbedded(t, "a SQLite file is one instance's: a fleet shares MySQL, Redis and a bucket")
	s3 := testenv.StartS3(t)
	single := startEnv(t, options{extra: roomy})
	f := startFleet(t, single, s3)
	want := session(t, deployment{e: single, front: siteURL, sites: slices.Repeat([]string{siteURL}, fleetSize),
		hook: single.hook, mesibo: single.mesibo, db: single.db})
	got := session(t, f.deployment)
	if len(got) != len(want) {
		t.Fatalf("the fleet's session took %d steps, the single instance's %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("the fleet answered\n%s\nwhere one instance answered\n%s", got[i], want[i])
		}
	}
	if keys := s3.Keys(t); len(keys) != 5 { // a profile and a group picture with their thumbnails, an attachment
		t.Errorf("the bucket holds %v", keys)
	}
	f.killUnderLoad(t)
}

func startFleet(t *testing.T, e *env, s3 *testenv.S3) *fleet {
	f := &fleet{deployment: deployment{e: e, hook: newHook(t), mesibo: mesibotest.NewServer(t, appToken)}}
	dsn := testenv.Database(t)
	_, prefix := testenv.Redis(t)
	f.front = fmt.Sprintf("http://localhost:%d", basePort+2+fleetSize)
	o := options{extra: roomy + "\n\t\toutbox {\n\t\t\tlease " + fleetLease.String() + "\n\t\t}"}
	block := o.messengerBlock(fmt.Sprintf("\t\tdatabase %q", dsn), fmt.Sprintf("\t\tredis %s\n\t\tredis_key_prefix %s", testenv.RedisURL(), prefix),
		f.mesibo.URL, f.hook.URL, s3.URL())
	for i := range fleetSize {
		port := basePort + 2 + i
		f.upstreams = append(f.upstreams, fmt.Sprintf("127.0.0.1:%d", port))
		f.sites = append(f.sites, "http://"+f.upstreams[i])
		site := fmt.Sprintf(siteTemplate, fmt.Sprintf("http://:%d", port), block, serveStorage(s3.URL()))
		f.procs = append(f.procs, startCaddy(t, site, "", []string{"E2E_SITE=" + f.front}))
	}
	for _, site := range f.sites {
		waitAnswers(t, site+"/api.php")
	}
	balancer, err := os.ReadFile("../scripts/fleet/balancer.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	f.balancerLog = filepath.Join(t.TempDir(), "balancer.log")
	startCaddy(t, string(balancer), "output file "+f.balancerLog+"\n\t\tformat json\n\t\tlevel DEBUG\n\t\tinclude http.handlers.reverse_proxy",
		[]string{"FLEET_SITE=" + f.front, "FLEET_UPSTREAMS=" + strings.Join(f.upstreams, " ")})
	waitAnswers(t, f.front+"/api.php")
	f.db = testenv.Open(t, dsn)
	waitMigrated(t, f.db)
	return f
}

// transcript is what a session was answered, one line a step, with what differs between
// two runs of one session taken out: every ts and token (times, and random), the
// deployment's own site URL, and the names of stored files (time and random), numbered
// in the order they first appear.
type transcript struct {
	front string
	steps []string
	names map[string]string
}

var (
	storedNameIn = regexp.MustCompile(`[0-9]{9,}-[0-9a-f]{16}`)
	// varying are the fields of answers and notifications whose values are times or
	// random.
	varying = map[string]bool{"ts": true, "token": true}
)

// add records step with its answer's body, normalized.
func (tr *transcript) add(step string, body any) {
	raw, err := json.Marshal(dropVarying(body)) // maps marshal with sorted keys
	if err != nil {
		panic(err)
	}
	s := strings.ReplaceAll(step+": "+string(raw), tr.front, "SITE")
	s = storedNameIn.ReplaceAllStringFunc(s, func(name string) string {
		if tr.names[name] == "" {
			tr.names[name] = fmt.Sprint("FILE", len(tr.names)+1)
		}
		return tr.names[name]
	})
	tr.steps = append(tr.steps, s)
}

// dropVarying is v without the varying fields, at any depth.
func dropVarying(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			if !varying[k] {
				out[k] = dropVarying(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = dropVarying(x)
		}
		return out
	}
	return v
}

// file is what a stored file's download answers: status, type and a digest of the body.
func file(f fetched) map[string]any {
	return map[string]any{"status": f.status, "type": f.header.Get("Content-Type"), "sha256": fmt.Sprintf("%x", sha256.Sum256(f.body))}
}

// session is the whole session of three users: login (a code requested through one
// instance and checked through another), sync, a profile picture uploaded through the
// first instance whose picture and thumbnail are read through the others, a group with a
// picture, a member removed, a chat attachment; then the notifications mesibo got. It
// returns the transcript's lines.
func session(t *testing.T, d deployment) []string {
	tr := &transcript{front: d.front, names: map[string]string{}}
	front := d.front + "/api.php"
	api := func(i int) string { return d.sites[i] + "/api.php" }
	call := func(step, url string, enc encoding, fields map[string]any) answer {
		t.Helper()
		a := d.e.callURL(url, enc, fields)
		tr.add(step, a.body)
		return a
	}
	const ada, bob, cyd = "919812366001", "919812366002", "919812366003"
	tok := map[string]string{}
	for _, p := range []string{ada, bob, cyd} {
		call("code for "+p, front, form, map[string]any{"op": "login", "phone": "+" + p, "appid": "com.example.app"})
		tok[p] = call("login "+p, front, jsonBody, map[string]any{"op": "login", "phone": "+" + p, "appid": "com.example.app",
			"otp": d.hook.lastCode(p)}).str("token")
	}
	call("bob syncs", front, form, map[string]any{"op": "getcontacts", "token": tok[bob], "phones": ada + "," + cyd})
	call("cyd syncs", front, query, map[string]any{"op": "getcontacts", "token": tok[cyd], "phones": ada + "," + bob})
	call("ada's profile", front, form, map[string]any{"op": "profile", "token": tok[ada], "name": "Ada", "status": "here"})

	picture := pictures(t)["png"]
	a := d.e.uploadTo(api(0), map[string]any{"op": "upload", "token": tok[ada], "profile": 1}, "me.png", picture)
	tr.add("ada's picture through instance 1", a.body)
	photo := a.str("photo")
	for i := range fleetSize {
		c := call(fmt.Sprint("bob syncs through instance ", i+1), api(i), form, map[string]any{"op": "getcontacts", "token": tok[bob]})
		if rec := contactsOf(t, c)[ada]; rec["photo"] != photo || rec["tn"] != a.str("tn") || a.str("tn") == "" {
			t.Errorf("through instance %d Bob sees Ada as %v", i+1, rec)
		}
		for _, path := range []string{"/files/" + photo, "/thumbs/" + photo} {
			got := d.e.getFrom(d.sites[i], path)
			tr.add(fmt.Sprint(path, " through instance ", i+1), file(got))
			if got.status != http.StatusOK || path == "/files/"+photo && string(got.body) != string(picture) {
				t.Errorf("GET %s through instance %d: %d, %d bytes", path, i+1, got.status, len(got.body))
			}
		}
	}

	a = call("ada makes a group", front, form, map[string]any{"op": "setgroup", "token": tok[ada], "gid": "0", "name": "Team", "m": bob + "," + cyd})
	gid := gidOf(t, a)
	a = d.e.uploadTo(api(1), map[string]any{"op": "upload", "token": tok[ada], "profile": 1, "gid": gid}, "team.jpg", pictures(t)["jpg"])
	tr.add("the group's picture through instance 2", a.body)
	call("cyd reads the group through instance 3", api(2), form, map[string]any{"op": "getgroup", "token": tok[cyd], "gid": gid})
	call("ada removes cyd through instance 1", api(0), form, map[string]any{"op": "editmembers", "token": tok[ada], "gid": gid, "m": cyd, "delete": 1})
	call("bob reads the group through instance 3", api(2), form, map[string]any{"op": "getgroup", "token": tok[bob], "gid": gid})
	call("bob syncs the group", front, form, map[string]any{"op": "getcontacts", "token": tok[bob]})
	call("cyd syncs without the group", front, form, map[string]any{"op": "getcontacts", "token": tok[cyd]})

	doc := []byte("%PDF-1.4 the minutes")
	a = d.e.uploadTo(api(2), map[string]any{"op": "upload", "token": tok[bob], "profile": 0, "mid": 7}, "minutes.pdf", doc)
	tr.add("bob's attachment through instance 3", a.body)
	name := strings.TrimPrefix(a.str("file"), d.front+"/files/")
	for i := range fleetSize {
		got := d.e.getFrom(d.sites[i], "/files/"+name)
		tr.add(fmt.Sprint("the attachment through instance ", i+1), file(got))
		if string(got.body) != string(doc) {
			t.Errorf("the attachment through instance %d: %d %q", i+1, got.status, got.body)
		}
	}

	waitFor(t, "the outbox to drain", func() bool { return countIn(t, d.db, "messenger_outbox") == 0 })
	var sent []string
	for _, m := range d.mesibo.Messages() {
		msg := m.Fields["message"].(map[string]any)
		var body any
		json.Unmarshal([]byte(msg["message"].(string)), &body)
		raw, _ := json.Marshal(map[string]any{"from": msg["from"], "to": msg["to"], "body": dropVarying(body)})
		sent = append(sent, string(raw))
	}
	slices.Sort(sent) // queues are delivered in parallel: only each queue's order holds
	tr.add("notifications", sent)
	return tr.steps
}

// request is one request of the load: when it was sent and answered, and which instance
// the balancer says answered it, or failed to.
type request struct {
	start, end time.Time
	method     string
	ok         bool
	upstream   string
	failure    string
}

// killUnderLoad kills the last instance with SIGKILL while clients send requests
// through the balancer and the instance has notifications on their way to a slow
// mesibo. Only requests in flight on it may fail; the balancer must stop choosing it;
// every notification must reach mesibo once, the killed instance's after its lease.
func (f *fleet) killUnderLoad(t *testing.T) {
	const clients, changers = 6, 8
	victim := fleetSize - 1
	watcher := f.login(t, "919812367000")
	var phones []string
	changer := map[string]string{}
	for i := range changers {
		p := fmt.Sprintf("9198123670%02d", i+1)
		phones = append(phones, p)
		changer[p] = f.login(t, p)
	}
	expectOK(t, f.e.callURL(f.front+"/api.php", form, map[string]any{"op": "getcontacts", "token": watcher, "phones": strings.Join(phones, ",")}), "getcontacts")
	waitFor(t, "the outbox to drain", func() bool { return countIn(t, f.db, "messenger_outbox") == 0 })
	photo := f.e.uploadTo(f.front+"/api.php", map[string]any{"op": "upload", "token": watcher, "profile": 1}, "me.png", pictures(t)["png"]).str("photo")

	f.mesibo.FailAll("message", mesibotest.Failure{Delay: mesiboLatency})
	before := len(f.mesibo.CallsOf("message"))
	stop := make(chan struct{})
	var mu sync.Mutex
	var requests []request
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	for c := range clients {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := f.send(client, watcher, photo, (c+i)%2 == 0)
				mu.Lock()
				requests = append(requests, r)
				mu.Unlock()
			}
		})
	}
	// The load stops after the kill, or when the test fails before.
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	time.Sleep(time.Second) // the load under way
	for i, p := range phones {
		expectOK(t, f.e.callURL(f.sites[victim]+"/api.php", form, map[string]any{"op": "profile", "token": changer[p], "name": fmt.Sprint("Changer ", i)}), "profile")
	}
	waitWithin(t, 5*time.Second, "the killed instance's deliveries to reach mesibo", func() bool {
		return len(f.mesibo.CallsOf("message"))-before >= changers
	})
	signalled := time.Now()
	if err := f.procs[victim].Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	// It is dead, its connections closed, once it can be waited for: the kernel takes a
	// few milliseconds to tear down a busy process, and requests reach it meanwhile.
	if _, err := f.procs[victim].Wait(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	time.Sleep(100 * time.Millisecond)
	takenAtKill := map[string]bool{} // taken by mesibo before the instance could record it
	for _, n := range notificationsOf(f.mesibo) {
		takenAtKill[n.from+" "+fmt.Sprint(n.body["name"])] = true
	}
	time.Sleep(mesiboLatency + 600*time.Millisecond) // deliveries by the others, if any, are over
	held := countIn(t, f.db, "messenger_outbox")
	stopLoad()
	if held == 0 {
		t.Fatal("the killed instance held no claimed notifications: the test proves nothing")
	}

	// Every notification reaches mesibo at least once, and only one that mesibo had
	// taken before the killed instance could record it twice: with the fake, which takes
	// a message at the end of its latency, that is one whose latency ended as the
	// instance died.
	var delivered time.Duration
	waitWithin(t, fleetLease+6*time.Second, "every notification to reach mesibo", func() bool {
		delivered = time.Since(killed)
		got := 0
		for _, n := range notificationsOf(f.mesibo) {
			if name, _ := n.body["name"].(string); strings.HasPrefix(name, "Changer ") {
				got++
			}
		}
		return got >= changers
	})
	time.Sleep(200 * time.Millisecond) // time for a second copy of any
	seen := map[string]int{}
	for _, n := range notificationsOf(f.mesibo) {
		if name, _ := n.body["name"].(string); strings.HasPrefix(name, "Changer ") {
			if !slices.Equal(n.to, []string{"919812367000"}) || n.body["phone"] != n.from {
				t.Errorf("a notification from %s to %v: %v", n.from, n.to, n.body)
			}
			seen[n.from+" "+name]++
		}
	}
	twice := 0
	for i, p := range phones {
		k := p + " " + fmt.Sprint("Changer ", i)
		switch {
		case seen[k] == 2 && takenAtKill[k]:
			twice++
		case seen[k] != 1:
			t.Errorf("%s reached mesibo %d times (taken before the kill: %v)", k, seen[k], takenAtKill[k])
		}
	}
	// The lease, then a poll of the others (every 2s) and the delivery.
	if delivered > fleetLease+2*time.Second+mesiboLatency+time.Second {
		t.Errorf("the killed instance's notifications were delivered %s after it died, with a lease of %s", delivered, fleetLease)
	}

	// Requests: only those in flight on the killed instance failed.
	served := map[string]int{}
	failed := 0
	for _, r := range requests {
		if r.ok {
			served[r.upstream]++
			continue
		}
		failed++
		if r.upstream != f.upstreams[victim] || !r.start.Before(killed) {
			t.Errorf("a %s sent %s after the kill failed on %q: %s", r.method, r.start.Sub(killed), r.upstream, r.failure)
		}
	}
	for _, u := range f.upstreams {
		if served[u] == 0 {
			t.Errorf("instance %s answered none of the load: %v", u, served)
		}
	}
	if failed > clients {
		t.Errorf("%d requests failed, more than the %d clients had in flight", failed, clients)
	}
	chosen, last := f.chosenAfter(t, f.upstreams[victim], signalled)
	if last > 2*time.Second {
		t.Errorf("the balancer still chose the killed instance %s after the SIGKILL", last)
	}
	t.Logf("fleet: %d requests by %d clients, %d failed (in flight on the killed instance, which took %s to die); the balancer chose it %d "+
		"times after the SIGKILL, the last %s after it; the %d notifications it held were delivered by the others %s after the kill (lease %s, "+
		"mesibo latency %s), %d of them twice",
		len(requests), clients, failed, killed.Sub(signalled).Round(time.Millisecond), chosen, last.Round(time.Millisecond), held,
		delivered.Round(10*time.Millisecond), fleetLease, mesiboLatency, twice)
}

// login logs phone in through the balancer and returns the token.
func (f *fleet) login(t *testing.T, phone string) string {
	t.Helper()
	api := f.front + "/api.php"
	expectOK(t, f.e.callURL(api, form, map[string]any{"op": "login", "phone": "+" + phone, "appid": "com.example.app"}), "login")
	a := f.e.callURL(api, form, map[string]any{"op": "login", "phone": "+" + phone, "appid": "com.example.app", "otp": f.hook.lastCode(phone)})
	expectOK(t, a, "login")
	return a.str("token")
}

// send is one request of the load through the balancer: a sync (POST) or a download of
// a picture (GET).
func (f *fleet) send(client *http.Client, token, photo string, sync bool) request {
	r := request{start: time.Now(), method: http.MethodGet}
	var resp *http.Response
	var err error
	if sync {
		r.method = http.MethodPost
		resp, err = client.PostForm(f.front+"/api.php", url.Values{"op": {"getcontacts"}, "token": {token}})
	} else {
		resp, err = client.Get(f.front + "/files/" + photo)
	}
	r.end = time.Now()
	if err != nil {
		r.failure = err.Error()
		return r
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r.upstream = resp.Header.Get("X-Fleet-Upstream")
	r.ok = resp.StatusCode == http.StatusOK && (!sync || strings.Contains(string(body), `"result":"OK"`))
	if !r.ok {
		r.failure = fmt.Sprintf("HTTP %d %.100s", resp.StatusCode, body)
	}
	return r
}

// chosenAfter reads the balancer's log: how many times it chose upstream after t0, and
// when the last time was.
func (f *fleet) chosenAfter(t *testing.T, upstream string, t0 time.Time) (int, time.Duration) {
	t.Helper()
	data, err := os.ReadFile(f.balancerLog)
	if err != nil {
		t.Fatal(err)
	}
	n, last := 0, time.Duration(0)
	for _, line := range strings.Split(string(data), "\n") {
		var entry struct {
			TS   float64 `json:"ts"`
			Msg  string  `json:"msg"`
			Dial string  `json:"dial"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Msg != "selected upstream" || entry.Dial != upstream {
			continue
		}
		at := time.UnixMicro(int64(entry.TS * 1e6))
		if at.After(t0) {
			n++
			last = at.Sub(t0)
		}
	}
	return n, last
}

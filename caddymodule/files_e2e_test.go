package caddymodule_test

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-messenger/messenger/caddymodule"
	"github.com/caddy-messenger/messenger/internal/testenv"
	"github.com/caddy-messenger/messenger/media"
)

// attachmentName is a stored attachment's name: the server's time and random, and an
// extension from the allow-list or bin.
var attachmentName = regexp.MustCompile(`^[0-9]+-[0-9a-f]{16}\.[a-z0-9]+$`)

// fetched is a file fetched from the site, with its headers.
type fetched struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) get(path string, header ...string) fetched {
	e.t.Helper()
	return e.getFrom(siteURL, path, header...)
}

// getFrom is get from another site.
func (e *env) getFrom(site, path string, header ...string) fetched {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, site+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.tester.Client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	return fetched{resp.StatusCode, resp.Header, body.Bytes()}
}

// expectServedSafely fails unless f carries the headers that keep a stored file from
// running as a page: nosniff, the sandbox, and a download for all but pictures, video
// and audio.
func expectServedSafely(t *testing.T, f fetched, name string) {
	t.Helper()
	_, disposition := media.ServedAs(name)
	if f.header.Get("X-Content-Type-Options") != "nosniff" || f.header.Get("Content-Security-Policy") != media.ContentSecurityPolicy ||
		f.header.Get("Content-Disposition") != disposition {
		t.Errorf("%s served with %v, want Content-Disposition %q", name, f.header, disposition)
	}
}

// TestUploadAttachments: a file attached to a chat message (profile 0 or absent, gid 0
// or absent), as the apps' file-transfer helpers send it, is stored whatever its type,
// under a server-chosen name, streamed past max_body_size up to max_attachment_size,
// answered with its download URL, never thumbnailed, nobody notified; and it is served
// so that it cannot run as a page.
func TestUploadAttachments(t *testing.T) {
	spool := t.TempDir()
	e := startEnv(t, options{extra: roomy + "\n\t\tmax_attachment_size 3MiB\n\t\tupload_temp_dir " + spool})
	ada := e.login(form, "+91 98123 56001", "919812356001")
	bob := e.login(form, "+91 98123 56002", "919812356002")
	contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": bob, "phones": "919812356001"}))
	video := append([]byte("\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"), bytes.Repeat([]byte{7}, 2<<20)...)
	for _, tc := range []struct {
		name, client, ext string
		fields            map[string]any
		data              []byte
	}{
		{"video over max_body_size", "VID_20240101.mp4", "mp4", map[string]any{"profile": 0, "mid": 1001}, video},
		{"pdf, no profile field", "report.pdf", "pdf", map[string]any{"mid": 1002}, []byte("%PDF-1.7\n%\xe2\xe3\n1 0 obj<<>>endobj\n")},
		{"photo in a chat", "IMG_1.jpg", "jpg", map[string]any{"profile": 0, "gid": 0, "mid": 1003}, pictures(t)["jpg"]},
		{"html", "page.html", "bin", map[string]any{"profile": "0"}, []byte("<!DOCTYPE html><script>alert(document.cookie)</script>")},
		{"svg", "x.svg", "bin", map[string]any{"profile": 0}, []byte(`<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>`)},
		{"voice note", "note.amr", "amr", map[string]any{"profile": 0}, []byte("#!AMR\n\x3c\x48\xf5\x1f\x96\x66\x79\xe1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fields := map[string]any{"op": "upload", "token": ada}
			for k, v := range tc.fields {
				fields[k] = v
			}
			a := e.upload(fields, tc.client, tc.data)
			expectOK(t, a, "upload")
			url := a.str("file")
			name := strings.TrimPrefix(url, siteURL+"/files/")
			if !attachmentName.MatchString(name) || !strings.HasSuffix(name, "."+tc.ext) || a.body["profile"] != "0" {
				t.Fatalf("answer %s", a.raw)
			}
			if _, ok := a.body["tn"]; ok {
				t.Error("an attachment answered a thumbnail")
			}
			f := e.get("/files/" + name)
			if f.status != 200 || !bytes.Equal(f.body, tc.data) {
				t.Fatalf("GET %s: %d, %d bytes", name, f.status, len(f.body))
			}
			expectServedSafely(t, f, name)
			if f := e.get("/thumbs/" + name); f.status != 404 {
				t.Errorf("an attachment has a thumbnail: %d", f.status)
			}
		})
	}
	if photo := e.dump("SELECT photo FROM users WHERE phone = '919812356001'"); photo != "" {
		t.Errorf("an attachment became the profile picture %q", photo)
	}
	time.Sleep(200 * time.Millisecond) // what the outbox would have sent by now
	if n := len(e.mesibo.Messages()); n != 0 {
		t.Errorf("%d notifications about attachments", n)
	}
	stored := func() int {
		entries, _ := os.ReadDir(filepath.Join(e.files, "files"))
		return len(entries)
	}
	before := stored()
	expectFail(t, e.upload(map[string]any{"op": "upload", "token": ada, "profile": 0}, "big.mp4", bytes.Repeat(video, 2)), "TOOLARGE")
	expectFail(t, e.call(multipart_, map[string]any{"op": "upload", "token": ada, "profile": 0}), "MISSINGFILE")
	expectFail(t, e.upload(map[string]any{"op": "upload", "token": "not-a-token-at-all-000"}, "a.pdf", []byte("%PDF")), "AUTHFAIL")
	if stored() != before {
		t.Error("a refused upload stored a file")
	}
	if entries, _ := os.ReadDir(spool); len(entries) != 0 {
		t.Errorf("spooled uploads left behind: %d", len(entries))
	}
	if entries, _ := os.ReadDir(filepath.Join(e.files, "thumbs")); len(entries) != 0 {
		t.Errorf("thumbnails of attachments: %d", len(entries))
	}
}

// TestUploadBudget: every upload, pictures too, is charged to the user's byte budget;
// over it the answer is RATELIMIT with Retry-After, and nothing is stored. Other users
// have budgets of their own.
func TestUploadBudget(t *testing.T) {
	e := startEnv(t, options{extra: roomy + "\n\t\tupload_budget 100KiB 1h\n\t\tmax_attachment_size 50KiB\n\t\tmax_picture_size 50KiB"})
	ada := e.login(form, "+91 98123 57001", "919812357001")
	bob := e.login(form, "+91 98123 57002", "919812357002")
	picture := noisePNG(t, 90, 90)                             // about 32 KiB
	doc := bytes.Repeat([]byte("a line of text\n"), 40<<10/15) // 40 KiB
	expectOK(t, e.upload(map[string]any{"op": "upload", "token": ada, "profile": 1}, "me.png", picture), "upload")
	expectOK(t, e.upload(map[string]any{"op": "upload", "token": ada}, "a.txt", doc), "upload")
	files := func() []string {
		entries, _ := os.ReadDir(filepath.Join(e.files, "files"))
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	before := files()
	// Two documents alone would fit: the picture was charged too.
	for _, a := range []answer{
		e.upload(map[string]any{"op": "upload", "token": ada}, "b.txt", doc),
		e.upload(map[string]any{"op": "upload", "token": ada, "profile": 1}, "me.png", picture),
	} {
		expectFail(t, a, "RATELIMIT")
		if wait, err := strconv.Atoi(a.resp.Header.Get("Retry-After")); err != nil || wait < 60 || wait > 3600 {
			t.Errorf("Retry-After %q", a.resp.Header.Get("Retry-After"))
		}
	}
	if !slices.Equal(files(), before) {
		t.Error("an upload over the budget was stored")
	}
	expectOK(t, e.upload(map[string]any{"op": "upload", "token": bob, "profile": 1}, "me.png", picture), "upload")
}

// noisePNG is a w×h PNG of random pixels, which do not compress: about 4 bytes a pixel.
func noisePNG(t *testing.T, w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range img.Pix {
		img.Pix[i] = uint8(rng.IntN(256))
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestUploadDecodeBudget: the hardening report's picture, a 16-bit RGBA PNG of
// 6324×6324 (under max_picture_pixels, 320 MB decoded), is refused from its header.
func TestUploadDecodeBudget(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98123 58001", "919812358001")
	bomb := sixteenBitPNG(6324, 6324)
	start := time.Now()
	a := e.upload(map[string]any{"op": "upload", "token": ada, "profile": 1}, "big.png", bomb)
	expectFail(t, a, "BADIMAGE")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("refused after %s", took)
	}
}

// TestS3Storage: with storage on a real S3-compatible server, pictures, thumbnails and
// attachments go to the bucket; sync answers carry the thumbnails; messenger_files
// serves the files with the safety headers, ranges and conditional requests.
func TestS3Storage(t *testing.T) {
	s3 := testenv.StartS3(t)
	e := startEnv(t, options{extra: roomy, storage: s3.URL()})
	ada := e.login(form, "+91 98123 59001", "919812359001")
	bob := e.login(form, "+91 98123 59002", "919812359002")
	picture := pictures(t)["png"]
	a := e.upload(map[string]any{"op": "upload", "token": ada, "profile": 1}, "me.png", picture)
	expectOK(t, a, "upload")
	photo := a.str("photo")
	if !storedName.MatchString(photo) || a.str("tn") == "" {
		t.Fatalf("answer %s", a.raw)
	}
	b := e.upload(map[string]any{"op": "upload", "token": ada, "profile": 0, "mid": 5}, "doc.pdf", []byte("%PDF-1.4 x"))
	expectOK(t, b, "upload")
	doc := strings.TrimPrefix(b.str("file"), siteURL+"/files/")
	if got, want := s3.Keys(t), []string{"files/" + doc, "files/" + photo, "thumbs/" + photo}; !slices.Equal(got, sorted(want)) {
		t.Fatalf("bucket holds %v, want %v", got, want)
	}
	if rec := contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": bob, "phones": "919812359001"}))["919812359001"]; rec["photo"] != photo || rec["tn"] != a.str("tn") {
		t.Errorf("Bob's record of Ada: %v", rec)
	}

	f := e.get("/files/" + photo)
	if f.status != 200 || !bytes.Equal(f.body, picture) || f.header.Get("Content-Type") != "image/png" {
		t.Fatalf("GET the picture: %d %v", f.status, f.header)
	}
	expectServedSafely(t, f, photo)
	if tn := e.get("/thumbs/" + photo); tn.status != 200 || fmt.Sprint(len(tn.body)) != tn.header.Get("Content-Length") {
		t.Errorf("GET the thumbnail: %d %v", tn.status, tn.header)
	}
	pdf := e.get("/files/" + doc)
	if pdf.status != 200 || string(pdf.body) != "%PDF-1.4 x" {
		t.Errorf("GET the attachment: %d %q", pdf.status, pdf.body)
	}
	expectServedSafely(t, pdf, doc)
	if r := e.get("/files/"+photo, "Range", "bytes=0-7"); r.status != 206 || !bytes.Equal(r.body, picture[:8]) {
		t.Errorf("range: %d %q", r.status, r.body)
	}
	if r := e.get("/files/"+photo, "If-None-Match", f.header.Get("ETag")); f.header.Get("ETag") == "" || r.status != 304 {
		t.Errorf("If-None-Match %q: %d", f.header.Get("ETag"), r.status)
	}
	if r := e.get("/files/1700000000-0000000000000000.png"); r.status != 404 {
		t.Errorf("a missing file: %d", r.status)
	}
}

// TestMoveFilesToS3: `caddy messenger-copy --files-from --files-to` moves a
// deployment's files from its folder into a bucket; a server on that bucket then
// serves every picture, thumbnail and attachment, and a second copy skips them all.
func TestMoveFilesToS3(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	ada := e.login(form, "+91 98123 59501", "919812359501")
	bob := e.login(form, "+91 98123 59502", "919812359502")
	picture := pictures(t)["jpg"]
	a := e.upload(map[string]any{"op": "upload", "token": ada, "profile": 1}, "me.jpg", picture)
	expectOK(t, a, "upload")
	b := e.upload(map[string]any{"op": "upload", "token": ada}, "doc.pdf", []byte("%PDF-1.4 x"))
	expectOK(t, b, "upload")
	doc := strings.TrimPrefix(b.str("file"), siteURL+"/files/")

	s3 := testenv.StartS3(t)
	for _, want := range []string{"3 copied, 0 already there", "0 copied, 3 already there"} {
		out := captureStdout(t, func() {
			if code, err := caddymodule.CmdCopy(copyFlags(t, "--files-from", "file://"+e.files, "--files-to", s3.URL())); code != 0 || err != nil {
				t.Fatalf("messenger-copy: exit %d, %v", code, err)
			}
		})
		if !strings.HasPrefix(out, "files ") || !strings.HasSuffix(out, " "+want+"\n") {
			t.Errorf("messenger-copy said %q, want %q", out, want)
		}
	}
	if code, err := caddymodule.CmdCopy(copyFlags(t, "--files-from", "file://"+e.files+"/missing", "--files-to", s3.URL())); code == 0 || err == nil {
		t.Error("a copy from a missing folder succeeded")
	}

	e.config = strings.Replace(strings.Replace(e.config, "storage file://"+e.files, "storage "+s3.URL(), 1), e.serve, serveStorage(s3.URL()), 1)
	e.tester.InitServer(e.config, "caddyfile")
	rec := contactsOf(t, e.call(form, map[string]any{"op": "getcontacts", "token": bob, "phones": "919812359501"}))["919812359501"]
	if rec["photo"] != a.str("photo") || rec["tn"] != a.str("tn") {
		t.Errorf("Bob's record of Ada after the move: %v", rec)
	}
	if f := e.get("/files/" + a.str("photo")); f.status != 200 || !bytes.Equal(f.body, picture) {
		t.Errorf("the picture after the move: %d", f.status)
	}
	if f := e.get("/files/" + doc); f.status != 200 || string(f.body) != "%PDF-1.4 x" {
		t.Errorf("the attachment after the move: %d", f.status)
	}
}

// captureStdout is what f prints.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = stdout }()
	f()
	w.Close()
	out, _ := io.ReadAll(r)
	return string(out)
}

// TestExampleServesFilesSafely: Caddyfile.example, run as it is, serves stored files
// through file_server with nosniff, the sandbox, and Content-Disposition: attachment
// for exactly the types media.ServedAs makes downloads.
func TestExampleServesFilesSafely(t *testing.T) {
	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	t.Setenv("MESSENGER_DATA", data)
	t.Setenv("MESSENGER_SITE", siteURL)
	t.Setenv("MESSENGER_DSN", "")
	t.Setenv("MESSENGER_REDIS", "")
	t.Setenv("MESIBO_APP_TOKEN", "token")
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort})
	// The test's global options replace the example's (ports, admin, log).
	site := string(src)
	if i := strings.Index(site, "\n}\n"); strings.HasPrefix(strings.TrimLeft(stripComments(site), "\n"), "{") && i >= 0 {
		site = site[i+3:]
	}
	tester.InitServer(globalOptions("")+site, "caddyfile")
	e := &env{t: t, tester: tester}
	for _, dir := range []string{"files", "thumbs"} {
		if err := os.Mkdir(filepath.Join(data, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	names := []string{"legacy.html", "legacy.svg", "legacy.xml", "1-a.bin", "noext"}
	for _, ext := range media.AttachmentExtensions() {
		names = append(names, "1-a."+ext)
	}
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(data, "files", name), []byte("<html><script>alert(1)</script>"), 0o644); err != nil {
			t.Fatal(err)
		}
		f := e.get("/files/" + name)
		if f.status != 200 {
			t.Fatalf("GET /files/%s: %d", name, f.status)
		}
		expectServedSafely(t, f, name)
	}
	if err := os.WriteFile(filepath.Join(data, "thumbs", "1-a.png"), []byte{0xFF, 0xD8}, 0o644); err != nil {
		t.Fatal(err)
	}
	expectServedSafely(t, e.get("/thumbs/1-a.png"), "1-a.png")
	if err := os.WriteFile(filepath.Join(data, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if f := e.get("/secret"); bytes.Contains(f.body, []byte("secret")) {
		t.Error("a file outside files/ and thumbs/ was served")
	}
}

// stripComments drops the Caddyfile's comment lines, to find its first block.
func stripComments(src string) string {
	var keep []string
	for _, line := range strings.Split(src, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

package caddymodule_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The client-compatibility suite: each published app's requests replayed byte for byte as that
// app builds them (fields, their order and rendering, content type or none, the URL), framed as
// the mesibo HTTP library frames them, and each answer read the way that app's code reads it,
// failing where the app would crash or give up. docs/clients.md is the catalog it follows: the
// repository, file, commit and line of every request and every read cited below.

// dt is Mesibo.getDeviceType() as the apps send it: the library's value, not the app's.
const (
	dtAndroid = "1"
	dtIOS     = "2"
)

// The people of every flow: the app's user, two friends already on the messenger, and a
// number that never registers.
const (
	compatMe       = "919812345611"
	compatBob      = "919812345612"
	compatCyd      = "919812345613"
	compatStranger = "919812345619"
)

// kv is one request field as an app sets it, in the app's order.
type kv struct{ k, v string }

// attachment is a file an app sends in part "photo". open gives its bytes anew on every call,
// so a large one is made while it is sent and never held in memory.
type attachment struct {
	name string // the client's file name
	size int64
	open func() io.Reader
}

// mesiboBoundary separates the parts of the suite's multipart bodies. The library's own is not
// public; a server must take any.
const mesiboBoundary = "MesiboHttpBoundary9f8e7d6c5b4a"

// mesiboPostBundle frames fields as the mesibo HTTP library (Android Mesibo.Http, iOS
// MesiboHttp) frames a postBundle (docs/clients.md, "The HTTP helper"): urlencoded without a
// file; with one, "multipart/form-data;boundary=…" (no space), every value URL-encoded, and the
// file last in part "photo" with ";filename=" (no space). It returns the content type, the body
// and its length, and with a file a hash that holds the file's bytes once the body is sent.
func mesiboPostBundle(fields []kv, file *attachment) (string, io.Reader, int64, hash.Hash) {
	if file == nil {
		pairs := make([]string, len(fields))
		for i, f := range fields {
			pairs[i] = f.k + "=" + url.QueryEscape(f.v)
		}
		body := strings.Join(pairs, "&")
		return "application/x-www-form-urlencoded", strings.NewReader(body), int64(len(body)), nil
	}
	var head strings.Builder
	for _, f := range fields {
		fmt.Fprintf(&head, "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n", mesiboBoundary, f.k, url.QueryEscape(f.v))
	}
	fmt.Fprintf(&head, "--%s\r\nContent-Disposition: form-data; name=\"photo\";filename=\"%s\"\r\nContent-Type: application/octet-stream\r\n\r\n",
		mesiboBoundary, file.name)
	tail := "\r\n--" + mesiboBoundary + "--\r\n"
	sum := sha256.New()
	body := io.MultiReader(strings.NewReader(head.String()), io.TeeReader(file.open(), sum), strings.NewReader(tail))
	return "multipart/form-data;boundary=" + mesiboBoundary, body, int64(head.Len()) + file.size + int64(len(tail)), sum
}

// jsonText is a JSON object of string values in the given order, compact, as org.json and
// JSONSerialization write it (neither pads; no value here holds a "/" they would escape).
func jsonText(fields ...kv) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		k, _ := json.Marshal(f.k)
		v, _ := json.Marshal(f.v)
		parts[i] = string(k) + ":" + string(v)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// postAsApp sends one request as an app does; contentType "" sends no Content-Type header at all
// (Go's client adds none). The answer must be what PROTOCOL.md §2 promises every app.
func postAsApp(t *testing.T, client *http.Client, target, contentType string, body io.Reader, length int64) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, target, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", target, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: reading the answer: %v", target, err)
	}
	a := answer{resp: resp, raw: string(raw)}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d, which the apps take for \"no internet connection\": %s", resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("PROTOCOL §2: Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("the answer is not a JSON object, which every app's parser needs: %q", raw)
	}
	checkEnvelope(t, a)
	return a
}

// checkEnvelope holds an answer to PROTOCOL.md §2 whatever the app reads: a known result, a
// FAIL with its code, and ts, the server's clock as a JSON number, on every answer but NOOP
// (refusals included).
func checkEnvelope(t *testing.T, a answer) {
	t.Helper()
	if a.body["code"] == "NOOP" {
		return
	}
	switch a.body["result"] {
	case "OK":
	case "FAIL":
		if code, _ := a.body["error"].(string); code == "" {
			t.Errorf("PROTOCOL §2: a FAIL without its error code: %s", a.raw)
		}
	default:
		t.Errorf("PROTOCOL §2: result is neither OK nor FAIL: %s", a.raw)
	}
	if ts, isNumber := a.body["ts"].(float64); !isNumber || ts < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("PROTOCOL §2: every answer but NOOP carries ts, the server's Unix time as a JSON number: %s", a.raw)
	}
}

// appJSON is an answer as the apps' JSON parsers see it: numbers keep their literal text.
func appJSON(t *testing.T, a answer) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(a.raw))
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("answer %q: %v", a.raw, err)
	}
	return body
}

// reading is an answer in the hands of one app's parser.
type reading struct {
	sent string         // the op the app asked for
	body map[string]any // numbers as json.Number
	me   string         // the app user's phone
}

// appParser reads an answer as one app's code does. Its error says how the app fails on it (a
// crash, or giving up on the answer); a FAIL the app handles is no error.
type appParser func(reading) error

// fileParser reads an upload answer as one app's file-transfer helper does and returns the URL
// the app hands to the recipient.
type fileParser func(map[string]any) (string, error)

// appSession is one app on one phone: how it reads what comes back.
type appSession struct {
	e    *env
	me   string
	read appParser
}

// exchange sends one request as the app frames it and reads the answer as the app does.
func (s appSession) exchange(t *testing.T, client *http.Client, sent, target, contentType string, body io.Reader, length int64, read appParser) answer {
	t.Helper()
	a := postAsApp(t, client, target, contentType, body, length)
	if a.body["code"] == "NOOP" {
		t.Fatalf("NOOP: the server found no op in the app's %s request: %s", sent, a.raw)
	}
	if op, _ := a.body["op"].(string); op != sent {
		t.Errorf("PROTOCOL §2: the app asked for %s and the answer names op %q, so the app takes it for another op: %s", sent, op, a.raw)
	}
	if err := read(reading{sent: sent, body: appJSON(t, a), me: s.me}); err != nil {
		t.Errorf("the app fails on the %s answer: %v\nanswer: %s", sent, err, a.raw)
	}
	return a
}

// bundle sends fields (and a file) through the mesibo HTTP library's postBundle.
func (s appSession) bundle(t *testing.T, target string, fields []kv, file *attachment) answer {
	t.Helper()
	contentType, body, length, _ := mesiboPostBundle(fields, file)
	return s.exchange(t, s.e.tester.Client, fields[0].v, target, contentType, body, length, s.read)
}

// attach sends a chat attachment as the app's file-transfer helper does and checks that the URL
// it reads from the answer serves exactly the bytes sent, as the recipient will fetch them.
func (s appSession) attach(t *testing.T, target string, fields []kv, file *attachment, readFile fileParser) {
	t.Helper()
	// A video takes longer than the harness client's timeout on a busy machine.
	client := *s.e.tester.Client
	client.Timeout = 2 * time.Minute
	contentType, body, length, sent := mesiboPostBundle(fields, file)
	var fileURL string
	read := func(r reading) error {
		var err error
		fileURL, err = readFile(r.body)
		return err
	}
	a := s.exchange(t, &client, "upload", target, contentType, body, length, read)
	if fileURL == "" {
		t.Fatalf("%s: no file URL for the recipient: %s", file.name, a.raw)
	}
	if !strings.HasPrefix(fileURL, "http://") && !strings.HasPrefix(fileURL, "https://") {
		// The recipients' download helpers put the download URL before a bare name
		// (MesiboFileTransferHelper.java@94edf32 l. 165–167).
		fileURL = siteURL + "/files/" + fileURL
	}
	resp, err := client.Get(fileURL)
	if err != nil {
		t.Fatalf("GET %s: %v", fileURL, err)
	}
	defer resp.Body.Close()
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d, %v", fileURL, resp.StatusCode, err)
	}
	if n != file.size || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("%s: %s serves %d bytes that differ from the %d sent", file.name, fileURL, n, file.size)
	}
}

// deliveredCode is the code last delivered to phone through the webhook.
func deliveredCode(t *testing.T, h *hook, phone string) string {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.deliveries) - 1; i >= 0; i-- {
		if h.deliveries[i].Phone == phone {
			return h.deliveries[i].Code
		}
	}
	t.Fatalf("no code was delivered to %s", phone)
	return ""
}

// rowCount counts rows in the step's own goroutine (env.count reports to the parent test).
func rowCount(t *testing.T, e *env, query string, args ...any) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// gidIn is the gid of an answer, a decimal string or a number.
func gidIn(t *testing.T, a answer) int64 {
	t.Helper()
	switch v := a.body["gid"].(type) {
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	case float64:
		return int64(v)
	}
	t.Fatalf("no gid in %s", a.raw)
	return 0
}

// The files people send in a chat.

func jpegFile(t *testing.T) *attachment {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 32, 32))
	for x := range 32 {
		for y := range 32 {
			img.Set(x, y, color.RGBA{uint8(x * 8), uint8(y * 8), 128, 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return bytesFile("IMG_20260101_120000.jpg", buf.Bytes())
}

func pdfFile() *attachment {
	return bytesFile("Invoice 2026-01.pdf", []byte("%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"+
		"2 0 obj <</Type /Pages /Kids [3 0 R] /Count 1>> endobj\n3 0 obj <</Type /Page /Parent 2 0 R /MediaBox [0 0 200 200]>> endobj\n"+
		"trailer <</Root 1 0 R>>\n%%EOF\n"))
}

func bytesFile(name string, data []byte) *attachment {
	return &attachment{name: name, size: int64(len(data)), open: func() io.Reader { return bytes.NewReader(data) }}
}

// videoSize is the phone video of issue 13.
const videoSize = 50 << 20

// videoFile is an MP4 of size bytes made while it is read.
func videoFile(size int64) *attachment {
	return &attachment{name: "VID_20260101_120000.mp4", size: size, open: func() io.Reader { return newVideo(size) }}
}

// video is an MP4 file made as it is read: an ftyp box, so that its type can be sniffed, and
// one mdat box of pseudo-random bytes filling the rest.
type video struct {
	head      []byte
	off, size int64
	state     uint64
}

func newVideo(size int64) *video {
	head := []byte("\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41\x00\x00\x00\x00mdat")
	binary.BigEndian.PutUint32(head[32:], uint32(size-32))
	return &video{head: head, size: size, state: 0x9e3779b97f4a7c15}
}

func (v *video) Read(p []byte) (int, error) {
	if v.off >= v.size {
		return 0, io.EOF
	}
	if rest := v.size - v.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n := 0
	if v.off < int64(len(v.head)) {
		n = copy(p, v.head[v.off:])
	}
	var word [8]byte
	for i := n; i < len(p); i += 8 {
		v.state ^= v.state << 13
		v.state ^= v.state >> 7
		v.state ^= v.state << 17
		binary.LittleEndian.PutUint64(word[:], v.state)
		copy(p[i:], word[:])
	}
	v.off += int64(len(p))
	return len(p), nil
}

// attachments are the chat files every flow sends, by subtest name.
func attachments(t *testing.T) []struct {
	name string
	file *attachment
} {
	return []struct {
		name string
		file *attachment
	}{{"jpeg", jpegFile(t)}, {"pdf", pdfFile()}, {"mp4-50MB", videoFile(videoSize)}}
}

// ---- How the apps read answers ----

// Gson (Android): gsonFill fills an app's response class from an answer as Gson's reflective
// adapter does, failing where Gson throws; the app then shows "No Internet Connection".

// gsonType is the Java type of a field Gson fills.
type gsonType int

const (
	gsonString  gsonType = iota // java.lang.String
	gsonLong                    // long
	gsonInt                     // int
	gsonObject                  // a nested class (urls, share)
	gsonObjects                 // an array of a class (contacts)
)

// gsonField is one field of a response class and the value it holds when the answer lacks it
// (a String's initialiser, null, or a primitive's 0).
type gsonField struct {
	typ   gsonType
	init  any
	class gsonClass // the class of a gsonObject or of a gsonObjects element
}

type gsonClass map[string]gsonField

func gStr(init any) gsonField { return gsonField{typ: gsonString, init: init} }

var (
	gLong = gsonField{typ: gsonLong, init: int64(0)}
	gInt  = gsonField{typ: gsonInt, init: int64(0)}
)

func gsonStrings(init any, names ...string) gsonClass {
	c := gsonClass{}
	for _, n := range names {
		c[n] = gStr(init)
	}
	return c
}

func (c gsonClass) with(fields gsonClass) gsonClass {
	out := gsonClass{}
	for k, v := range c {
		out[k] = v
	}
	for k, v := range fields {
		out[k] = v
	}
	return out
}

var (
	// SampleAPI.Contacts (SampleAPI.java@94edf32 l. 186, SampleAPI.kt@9919101, SampleAPI.java@bdf62fc):
	// Strings initialised to "", longs gid and ts.
	gsonContacts = gsonStrings("", "name", "phone", "status", "photo", "tn", "members").with(gsonClass{"gid": gLong, "ts": gLong})
	// The fields every SampleAPI.Response has: Strings null until filled, gid, type, profile, ts.
	gsonResponse = gsonStrings(nil, "result", "op", "error", "token", "name", "status", "members", "photo", "phone", "tn").
			with(gsonClass{"contacts": {typ: gsonObjects, class: gsonContacts}, "gid": gLong, "type": gInt, "profile": gInt, "ts": gLong})
	// SampleAPI.java@94edf32 l. 197.
	gsonResponse2019 = gsonResponse.with(gsonStrings(nil, "uploadurl", "downloadurl"))
	// SampleAPI.kt@9919101 l. 875; SampleAPI.java@bdf62fc l. 186 adds message and title.
	gsonResponse2021 = gsonResponse.with(gsonStrings(nil, "errmsg", "errtitle", "cc")).with(gsonClass{
		"urls":  {typ: gsonObject, class: gsonStrings("", "upload", "download")},
		"share": {typ: gsonObject, class: gsonStrings("", "text", "subject", "title")},
	})
	gsonResponse2023 = gsonResponse2021.with(gsonStrings(nil, "message", "title"))
	// MesiboFileTransferHelper.MesiboUrl (MesiboFileTransferHelper.java@94edf32 l. 52, .kt@9919101).
	gsonMesiboURL = gsonStrings(nil, "op", "file", "result", "xxx")
)

// gsonFill fills class from obj: Strings as string or nil, long/int as int64, objects as maps.
func gsonFill(class gsonClass, obj map[string]any) (map[string]any, error) {
	out := map[string]any{}
	for name, f := range class {
		out[name] = f.init
		v, present := obj[name]
		if !present {
			continue
		}
		got, err := f.read(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if got == nil && (f.typ == gsonLong || f.typ == gsonInt) {
			continue // a null leaves a primitive as it was
		}
		out[name] = got
	}
	return out, nil
}

func (f gsonField) read(v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch f.typ {
	case gsonString:
		switch v := v.(type) {
		case string:
			return v, nil
		case json.Number:
			return v.String(), nil
		case bool:
			return strconv.FormatBool(v), nil
		}
		return nil, fmt.Errorf("JsonSyntaxException: expected a string but was %T", v)
	case gsonLong, gsonInt:
		var text string
		switch v := v.(type) {
		case string:
			text = v
		case json.Number:
			text = v.String()
		default:
			return nil, fmt.Errorf("JsonSyntaxException: expected a number but was %T", v)
		}
		return gsonInteger(text, f.typ == gsonInt)
	case gsonObject:
		m, isObject := v.(map[string]any)
		if !isObject {
			return nil, fmt.Errorf("JsonSyntaxException: expected BEGIN_OBJECT but was %T", v)
		}
		return gsonFill(f.class, m)
	default:
		list, isArray := v.([]any)
		if !isArray {
			return nil, fmt.Errorf("JsonSyntaxException: expected BEGIN_ARRAY but was %T", v)
		}
		out := make([]map[string]any, len(list))
		for i, item := range list {
			if item == nil {
				continue
			}
			m, isObject := item.(map[string]any)
			if !isObject {
				return nil, fmt.Errorf("[%d]: JsonSyntaxException: expected BEGIN_OBJECT but was %T", i, item)
			}
			var err error
			if out[i], err = gsonFill(f.class, m); err != nil {
				return nil, fmt.Errorf("[%d].%w", i, err)
			}
		}
		return out, nil
	}
}

// gsonInteger is JsonReader.nextLong/nextInt on a number or a quoted string: a whole number,
// or a decimal literal equal to one; "" or "12abc" throws.
func gsonInteger(text string, int32Range bool) (any, error) {
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(text, 64)
		if ferr != nil || f != float64(int64(f)) {
			return nil, fmt.Errorf("NumberFormatException: %q is not a whole number", text)
		}
		n = int64(f)
	}
	if int32Range && (n < -1<<31 || n >= 1<<31) {
		return nil, fmt.Errorf("NumberFormatException: %q is out of int range", text)
	}
	return n, nil
}

// androidGroup is createContact's group branch (SampleAPI.java@94edf32 l. 290–298,
// SampleAPI.kt@9919101 l. 126–133): members.contains(myPhone), a NullPointerException on null;
// a group whose members lack the caller is marked deleted.
func androidGroup(members any, me string) error {
	m, isString := members.(string)
	if !isString {
		return errors.New("NullPointerException: members.contains(…) on a group answer without members")
	}
	if !strings.Contains(m, me) {
		return fmt.Errorf("members %q lack the caller: the app marks the group deleted", m)
	}
	return nil
}

// readAndroidOp is what SampleAPI.parseResponse does with an OK answer in the full-API builds
// (SampleAPI.java@94edf32 l. 363–456, SampleAPI.kt@9919101 l. 197–259).
func readAndroidOp(op string, r map[string]any, me string) error {
	switch op {
	case "getcontacts":
		contacts, _ := r["contacts"].([]map[string]any)
		for i, c := range contacts {
			if c == nil {
				return fmt.Errorf("NullPointerException: contacts[%d] is null", i)
			}
			if c["gid"].(int64) > 0 {
				if err := androidGroup(c["members"], me); err != nil {
					return fmt.Errorf("contacts[%d]: %w", i, err)
				}
			}
		}
	case "getgroup", "setgroup":
		if r["gid"].(int64) <= 0 {
			return fmt.Errorf("gid %d: the app has no group to save", r["gid"])
		}
		return androidGroup(r["members"], me)
	case "upload":
		if r["profile"].(int64) > 0 && r["gid"].(int64) > 0 {
			return androidGroup(r["members"], me)
		}
	}
	return nil
}

func gsonFailed(err error) error {
	return fmt.Errorf("Gson throws (%v): the app shows \"No Internet Connection\"", err)
}

// gsonParse fills class from an answer and gives its result; noResult is how the app fails
// on an answer without one.
func gsonParse(class gsonClass, body map[string]any, noResult string) (map[string]any, string, error) {
	r, err := gsonFill(class, body)
	if err != nil {
		return nil, "", gsonFailed(err)
	}
	result, hasResult := r["result"].(string)
	if !hasResult {
		return nil, "", errors.New(noResult)
	}
	return r, result, nil
}

// readAndroidJava2019 is SampleAPI.parseResponse of SampleAPI.java@94edf32, which checks
// nothing for null.
func readAndroidJava2019(rd reading) error {
	r, result, err := gsonParse(gsonResponse2019, rd.body, "NullPointerException: response.result.equalsIgnoreCase (l. 356)")
	if err != nil {
		return err
	}
	if !strings.EqualFold(result, "OK") {
		if r["error"] == nil {
			return errors.New("NullPointerException: response.error.equalsIgnoreCase on a FAIL without error (l. 357)")
		}
		return nil
	}
	op, hasOp := r["op"].(string)
	if !hasOp {
		return errors.New("NullPointerException: response.op.equals (l. 363)")
	}
	return readAndroidOp(op, r, rd.me)
}

// readAndroidKotlin2021 is SampleAPI.parseResponse of SampleAPI.kt@9919101.
func readAndroidKotlin2021(rd reading) error {
	r, result, err := gsonParse(gsonResponse2021, rd.body, "no result: the app shows \"No Internet Connection\" (l. 166)")
	if err != nil || !strings.EqualFold(result, "OK") {
		return err
	}
	op, _ := r["op"].(string)
	if token, _ := r["token"].(string); op == "login" && token != "" {
		for _, k := range []string{"phone", "cc"} {
			if r[k] == nil {
				return fmt.Errorf("login without %s: response.%s.toString() stores the text \"null\" (l. 199–200)", k, k)
			}
		}
	}
	return readAndroidOp(op, r, rd.me)
}

// readAndroid2023 is SampleAPI.parseResponse of SampleAPI.java@bdf62fc: login and logout only.
func readAndroid2023(rd reading) error {
	r, result, err := gsonParse(gsonResponse2023, rd.body, "no result: the app shows \"No Internet Connection\" (l. 254)")
	if err == nil && strings.EqualFold(result, "OK") && r["op"] == nil {
		err = errors.New("NullPointerException: response.op.equals (l. 294)")
	}
	return err
}

// readMesiboURL is MesiboFileTransferHelper's reading (MesiboFileTransferHelper.java@94edf32
// l. 105–116, MesiboFileTransferHelper.kt@9919101 l. 80–91): Gson into MesiboUrl, then file.
func readMesiboURL(body map[string]any) (string, error) {
	r, err := gsonFill(gsonMesiboURL, body)
	if err != nil {
		return "", fmt.Errorf("Gson throws (%v): the transfer is marked failed", err)
	}
	file, isString := r["file"].(string)
	if !isString {
		return "", errors.New("no file: the transfer is marked failed")
	}
	return file, nil
}

// Objective-C (SampleAPI.m): NSJSONSerialization, objectForKeyOrNil (NSNull reads as nil).

// objcString is a value the app sends NSString messages to (isEqualToString:, length,
// containsString:): nil and strings are fine, anything else is an unrecognized selector.
func objcString(m map[string]any, key string) (string, error) {
	switch v := m[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	}
	return "", fmt.Errorf("unrecognized selector: %s is a %T where the app sends it NSString messages", key, m[key])
}

// objcNumber is a value read with intValue/longLongValue/unsignedIntValue: NSNumber and
// NSString both answer (a string by its leading digits), nil is 0, an array or a dictionary
// crashes.
func objcNumber(m map[string]any, key string) (int64, error) {
	switch v := m[key].(type) {
	case nil:
		return 0, nil
	case json.Number:
		f, _ := v.Float64()
		return int64(f), nil
	case bool:
		if v {
			return 1, nil
		}
		return 0, nil
	case string:
		return leadingInt(v), nil
	}
	return 0, fmt.Errorf("unrecognized selector: %s is a %T where the app reads a number", key, m[key])
}

// leadingInt is what C's atoll (and NSString's intValue) makes of a string: the digits after
// blanks and a sign, 0 when there are none.
func leadingInt(s string) int64 {
	s = strings.TrimLeft(s, " \t\n")
	end := 0
	if end < len(s) && (s[0] == '+' || s[0] == '-') {
		end++
	}
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, _ := strconv.ParseInt(s[:end], 10, 64)
	return n
}

// objcDictionary is a value the app reads as an NSDictionary (objectForKeyOrNil: on it).
func objcDictionary(m map[string]any, key string) (map[string]any, error) {
	switch v := m[key].(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return v, nil
	}
	return nil, fmt.Errorf("unrecognized selector: %s is a %T where the app reads a dictionary", key, m[key])
}

// objcEnvelope is the start of parseResponse (SampleAPI.m@2414686 l. 366–403, @43e36a7
// l. 287–322): op, result, error and the configuration, all NSStrings and an NSDictionary.
func objcEnvelope(b map[string]any) (op, result string, err error) {
	if op, err = objcString(b, "op"); err != nil {
		return
	}
	if result, err = objcString(b, "result"); err != nil || result != "OK" {
		for _, k := range []string{"error", "errmsg", "errtitle"} {
			if _, err = objcString(b, k); err != nil {
				return
			}
		}
		return
	}
	if _, err = objcString(b, "invite"); err != nil {
		return
	}
	urls, err := objcDictionary(b, "urls")
	if err != nil {
		return
	}
	for _, k := range []string{"upload", "download"} {
		if _, err = objcString(urls, k); err != nil {
			return
		}
	}
	return
}

// readIOSObjC2021 is parseResponse of SampleAPI.m@2414686.
func readIOSObjC2021(rd reading) error {
	b := rd.body
	op, result, err := objcEnvelope(b)
	if err != nil || result != "OK" {
		return err
	}
	if _, err := objcNumber(b, "ts"); err != nil { // serverts, l. 386
		return err
	}
	switch op {
	case "login": // l. 405–427: the rest only once a token came
		for _, k := range []string{"token", "phone", "cc"} {
			if _, err := objcString(b, k); err != nil {
				return err
			}
		}
		if token, _ := objcString(b, "token"); token == "" {
			return nil
		}
		if _, err := objcNumber(b, "cc"); err != nil {
			return err
		}
		return objcContact(b, true, rd.me)
	case "getcontacts": // l. 429–450
		list, isArray := b["contacts"].([]any)
		if b["contacts"] != nil && !isArray {
			return fmt.Errorf("unrecognized selector: contacts is a %T where the app reads an NSArray", b["contacts"])
		}
		for i, item := range list {
			c, isObject := item.(map[string]any)
			if !isObject {
				return fmt.Errorf("unrecognized selector: contacts[%d] is a %T", i, item)
			}
			if err := objcContact(c, false, rd.me); err != nil {
				return fmt.Errorf("contacts[%d]: %w", i, err)
			}
		}
	case "getgroup", "setgroup": // l. 451–452, and setgroup's callback (SampleAppListeners.m@2414686 l. 148)
		if gid, err := objcNumber(b, "gid"); err != nil || gid <= 0 {
			return fmt.Errorf("gid %v (%v): the app drops the group record and hands the UI group 0", b["gid"], err)
		}
		return objcContact(b, false, rd.me)
	case "editmembers", "setadmin", "delgroup": // l. 453–465
		if _, err := objcNumber(b, "gid"); err != nil {
			return err
		}
		_, err := objcString(b, "members")
		return err
	case "upload": // l. 466–470
		profile, err := objcNumber(b, "profile")
		if err != nil || profile == 0 {
			return err
		}
		return objcContact(b, true, rd.me)
	}
	return nil
}

// objcContact is createContact:serverts:… (SampleAPI.m@2414686 l. 602–717).
func objcContact(c map[string]any, self bool, me string) error {
	for _, k := range []string{"name", "phone", "status", "members", "tn"} {
		if _, err := objcString(c, k); err != nil {
			return err
		}
	}
	if _, err := objcNumber(c, "ts"); err != nil {
		return err
	}
	if self {
		return nil
	}
	gid, err := objcNumber(c, "gid")
	if err != nil {
		return err
	}
	if members, _ := objcString(c, "members"); gid > 0 && !strings.Contains(members, me) {
		return fmt.Errorf("group %d: members %q lack the caller, so the app marks it deleted (l. 672)", gid, members)
	}
	return nil
}

// readIOSObjC2023 is parseResponse of SampleAPI.m@43e36a7: login and logout only.
func readIOSObjC2023(rd reading) error {
	b := rd.body
	op, result, err := objcEnvelope(b)
	if err != nil || result != "OK" {
		return err
	}
	notice, err := objcDictionary(b, "notice") // l. 325
	if err != nil {
		return err
	}
	for _, k := range []string{"title", "desc"} {
		if _, err := objcString(notice, k); err != nil {
			return err
		}
	}
	if op == "login" {
		for _, k := range []string{"token", "phone"} {
			if _, err := objcString(b, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// readObjCFile is the upload callback of SampleAppFileTransferHandler.m@a53cd1a (l. 53):
// [returnedDict valueForKey:@"file"], an NSString, else the transfer fails.
func readObjCFile(body map[string]any) (string, error) {
	file, err := objcString(body, "file")
	if err == nil && file == "" {
		err = errors.New("no file: the transfer is marked failed")
	}
	return file, err
}

// Swift: JSONSerialization into [AnyHashable: Any], read with the casts of the app's source.

// swiftString is `x as? String`: the string, or "" for nil or anything else.
func swiftString(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// swiftForceString is `x as! String`.
func swiftForceString(m map[string]any, key string) (string, error) {
	s, isString := m[key].(string)
	if !isString {
		return "", fmt.Errorf("crash: %s as! String on %s", key, swiftKind(m, key))
	}
	return s, nil
}

// swiftForceOptionalString is `x as! String?`: absent is nil; NSNull or a non-string crashes.
func swiftForceOptionalString(m map[string]any, key string) error {
	v, present := m[key]
	if _, isString := v.(string); present && !isString {
		return fmt.Errorf("crash: %s as! String? on %s", key, swiftKind(m, key))
	}
	return nil
}

// swiftForceInt64 is `x as! Int64` on a JSONSerialization value: an NSNumber holding a whole
// number.
func swiftForceInt64(m map[string]any, key string) (int64, error) {
	if n, isNumber := m[key].(json.Number); isNumber {
		if i, err := n.Int64(); err == nil {
			return i, nil
		}
	}
	return 0, fmt.Errorf("crash: %s as! Int64 on %s", key, swiftKind(m, key))
}

// swiftUInt32 is `UInt32(s)!`.
func swiftUInt32(key, s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "+"), 10, 32)
	if err != nil || s == "" || s[0] == ' ' {
		return 0, fmt.Errorf("crash: UInt32(%s %q)! is nil", key, s)
	}
	return uint32(n), nil
}

func swiftKind(m map[string]any, key string) string {
	v, present := m[key]
	switch v.(type) {
	case nil:
		if present {
			return "NSNull"
		}
		return "nil (absent)"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	}
	return fmt.Sprintf("%T", v)
}

// readIOSSwift2021 is parseResponse of BackendAPI.swift@05535a3.
func readIOSSwift2021(rd reading) error {
	b := rd.body
	op, result := swiftString(b, "op"), swiftString(b, "result")
	if result != "OK" && swiftString(b, "error") == "AUTHFAIL" {
		return nil // logout(true) before anything else, l. 392–396
	}
	if _, err := swiftForceInt64(b, "ts"); err != nil {
		return fmt.Errorf("%w: serverts, read before result is acted on (l. 400)", err)
	}
	if result != "OK" {
		return nil
	}
	switch op {
	case "login": // l. 420–438: the rest only once a token came
		if swiftString(b, "token") == "" {
			return nil
		}
		cc, isString := b["cc"].(string)
		if !isString {
			return fmt.Errorf("crash: mCc! (cc as? String is nil: %s) (l. 431)", swiftKind(b, "cc"))
		}
		if _, err := strconv.ParseInt(cc, 10, 32); err != nil {
			return fmt.Errorf("crash: Int32(cc %q)! is nil (l. 431)", cc)
		}
		return swiftContact(b, true, rd.me)
	case "getcontacts": // l. 439–458
		list, _ := b["contacts"].([]any)
		for i, item := range list {
			c, isObject := item.(map[string]any)
			if !isObject {
				return fmt.Errorf("crash: response! on contacts[%d], a %T", i, item)
			}
			if err := swiftContact(c, false, rd.me); err != nil {
				return fmt.Errorf("contacts[%d]: %w", i, err)
			}
		}
	case "getgroup", "setgroup": // l. 459–460
		return swiftContact(b, false, rd.me)
	case "editmembers", "setadmin", "delgroup": // l. 461–473
		gid, err := swiftForceString(b, "gid")
		if err != nil {
			return err
		}
		_, err = swiftUInt32("gid", gid)
		return err
	case "upload": // l. 474–478
		profile, err := swiftForceString(b, "profile")
		if err != nil {
			return err
		}
		// Int(profile) != 0: a nil Int is not 0 either.
		if n, perr := strconv.Atoi(profile); perr != nil || n != 0 {
			return swiftContact(b, true, rd.me)
		}
	}
	return nil
}

// swiftContact is createContact(_:serverts:…) of BackendAPI.swift@05535a3 (l. 618–653, 693). A
// record's own ts is not read: l. 642 is a subscript whose trailing closure is its default
// value, so the closure never runs.
func swiftContact(c map[string]any, self bool, me string) error {
	if _, err := swiftForceString(c, "name"); err != nil {
		return fmt.Errorf("%w (l. 619)", err)
	}
	for _, k := range []string{"phone", "status", "photo", "members"} {
		if err := swiftForceOptionalString(c, k); err != nil {
			return fmt.Errorf("%w (l. 620–623)", err)
		}
	}
	if self {
		return nil
	}
	s, err := swiftForceString(c, "gid")
	if err != nil {
		return fmt.Errorf("%w (l. 631)", err)
	}
	gid, err := swiftUInt32("gid", s)
	if err != nil {
		return fmt.Errorf("%w (l. 631)", err)
	}
	if members := swiftString(c, "members"); gid > 0 && !strings.Contains(members, me) {
		return fmt.Errorf("group %d: members %q lack the caller, so the app marks it deleted (l. 693)", gid, members)
	}
	return nil
}

// readSwiftFile is the upload callback of SampleAppFileTransferHandler.swift: the URL
// `as? String` under key, else the transfer fails.
func readSwiftFile(key string) fileParser {
	return func(body map[string]any) (string, error) {
		if u := swiftString(body, key); u != "" {
			return u, nil
		}
		return "", fmt.Errorf("no %s (as? String): the transfer is marked failed", key)
	}
}

// readIOSSwiftCurrent is parseResponse of SampleAPI.swift@978ae16 (l. 268–303), which reads
// everything with as? and so cannot crash, and the login screen's handler
// (AppDelegate.swift@978ae16 l. 188–189), which goes on only for op "login".
func readIOSSwiftCurrent(rd reading) error {
	if rd.sent == "login" && swiftString(rd.body, "op") != "login" {
		return errors.New(`op as? String is not "login": the login screen waits forever`)
	}
	return nil
}

// readWeb is the login page's callback (login/login.js@bda029c l. 72–84): JSON.parse, and
// resp.result compared with "OK".
func readWeb(rd reading) error {
	if _, isString := rd.body["result"].(string); !isString {
		return errors.New("resp.result is not a string: the page shows \"Login Error\"")
	}
	return nil
}

// ---- The full-API apps (up to 2021) ----

// fullAPIApp is an app that calls every op through the backend. Its requests are the same in
// every such build but where the fields below say (docs/clients.md has the table).
type fullAPIApp struct {
	name  string
	appid string
	dt    string
	// loginFields are the login request in the app's order, code "" for the first step.
	loginFields func(appid, phone, code string) []kv
	// newGroupGID is the gid the app sends to create a group; nil: none.
	newGroupGID *string
	// fetchSkipsDT: the address-book sync and delcontacts go through fetch, which adds no dt
	// (SampleAPI.m and BackendAPI.swift).
	fetchSkipsDT bool
	// uploadURL is where the app sends chat attachments, from its login answer.
	uploadURL func(login map[string]any) string
	// setnotify are the app's push-token fields after op and token; nil: it registers with
	// mesibo instead.
	setnotify []kv
	// removesGroupPicture: the app removes a group picture with upload delete=1 (Android).
	removesGroupPicture bool
	read                appParser
	readFile            fileParser
}

// androidLogin: SampleAPI.login (SampleAPI.java@94edf32 l. 723, SampleAPI.kt@9919101 l. 480):
// op, appid, phone, code.
func androidLogin(appid, phone, code string) []kv {
	fields := []kv{{"op", "login"}, {"appid", appid}, {"phone", phone}}
	if code != "" {
		fields = append(fields, kv{"code", code})
	}
	return fields
}

// iosLogin: login:code:handler: (SampleAPI.m@2414686 l. 773) and login(_:code:handler:)
// (BackendAPI.swift@05535a3 l. 782): op, phone, code, appid.
func iosLogin(appid, phone, code string) []kv {
	fields := []kv{{"op", "login"}, {"phone", phone}}
	if code != "" {
		fields = append(fields, kv{"code", code})
	}
	return append(fields, kv{"appid", appid})
}

func uploadURLOf(login map[string]any) string {
	urls, _ := login["urls"].(map[string]any)
	u, _ := urls["upload"].(string)
	return u
}

var fullAPIApps = []fullAPIApp{
	{
		name: "android-java-2019", appid: "org.mesibo.messenger", dt: dtAndroid, loginFields: androidLogin,
		// setGroup puts the long groupid (SampleAPI.java@94edf32 l. 859).
		newGroupGID: new("0"),
		// mUploadUrl, from the login answer's uploadurl (l. 367–368).
		uploadURL: func(login map[string]any) string { u, _ := login["uploadurl"].(string); return u },
		// sendGCMToken (l. 1104).
		setnotify:           []kv{{"notifytoken", "fcm-registration-token-2019"}},
		removesGroupPicture: true,
		read:                readAndroidJava2019, readFile: readMesiboURL,
	},
	{
		name: "android-kotlin-2021", appid: "org.mesibo.messenger", dt: dtAndroid, loginFields: androidLogin,
		newGroupGID: new("0"), // SampleAPI.kt@9919101 l. 570
		uploadURL:   uploadURLOf,
		// sendGCMToken adds the FCM sender id (l. 730–732).
		setnotify:           []kv{{"notifytoken", "fcm-registration-token-2021"}, {"fcmid", "470359684336"}},
		removesGroupPicture: true,
		read:                readAndroidKotlin2021, readFile: readMesiboURL,
	},
	{
		name: "ios-objc-2021", appid: "com.mesibo.messengerapp", dt: dtIOS, loginFields: iosLogin,
		// setGroup:members:handler: sends gid only when non-zero (SampleAPI.m@2414686 l. 909).
		newGroupGID: nil, fetchSkipsDT: true, uploadURL: uploadURLOf,
		read: readIOSObjC2021, readFile: readObjCFile,
	},
	{
		name: "ios-swift-2021", appid: "com.mesibo.messengerswift", dt: dtIOS, loginFields: iosLogin,
		// String(describing: profile?.groupid) of an optional UInt32 (BackendAPI.swift@05535a3 l. 922).
		newGroupGID: new("Optional(0)"), fetchSkipsDT: true, uploadURL: uploadURLOf,
		read: readIOSSwift2021, readFile: readSwiftFile("file"),
	},
}

// api is a request through SampleAPI's invokeApi/sendRequest, which adds dt
// (SampleAPI.java@94edf32 l. 155, SampleAPI.kt@9919101 l. 830, SampleAPI.m@2414686 l. 485,
// BackendAPI.swift@05535a3 l. 493).
func (app fullAPIApp) api(fields ...kv) []kv { return append(fields, kv{"dt", app.dt}) }

// fetched is a request through the iOS apps' fetch:, which adds no dt; Android sends these
// through sendRequest too.
func (app fullAPIApp) fetched(fields ...kv) []kv {
	if app.fetchSkipsDT {
		return fields
	}
	return app.api(fields...)
}

// run is the app's life on one phone: login, contact sync, profile and picture, chat
// attachments, groups, push token, logout.
func (app fullAPIApp) run(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	bobToken := e.login(form, "+"+compatBob, compatBob)
	e.login(form, "+"+compatCyd, compatCyd)
	expectOK(t, e.call(form, map[string]any{"op": "profile", "token": bobToken, "name": "Bob"}), "profile")
	s := appSession{e: e, me: compatMe, read: app.read}
	var token, uploadURL string

	if !t.Run("login", func(t *testing.T) {
		expectOK(t, s.bundle(t, apiURL, app.api(app.loginFields(app.appid, compatMe, "")...), nil), "login")
		code := deliveredCode(t, e.hook, compatMe)
		a := s.bundle(t, apiURL, app.api(app.loginFields(app.appid, compatMe, code)...), nil)
		expectOK(t, a, "login")
		if token = a.str("token"); token == "" || token != e.mesibo.Users()[compatMe].Token {
			t.Fatalf("token %q: %s", token, a.raw)
		}
		if uploadURL = app.uploadURL(a.body); uploadURL == "" {
			t.Fatalf("no upload URL for the app's attachments: %s", a.raw)
		}
	}) {
		return
	}

	t.Run("sync", func(t *testing.T) {
		// The first sync after login: reset, ts 0, no phones (SampleAPI.getContacts,
		// SampleAPI.java@94edf32 l. 790; SampleAPI.kt@9919101 l. 528; getContacts:hidden:handler:
		// SampleAPI.m@2414686 l. 837; getContacts(contacts:hidden:handler:) BackendAPI.swift@05535a3 l. 848).
		a := s.bundle(t, apiURL, app.api(kv{"op", "getcontacts"}, kv{"token", token}, kv{"hidden", "0"}, kv{"reset", "1"}, kv{"ts", "0"}), nil)
		if got := contactsOf(t, a); len(got) != 0 {
			t.Fatalf("a reset without phones answers no users: %v", keys(got))
		}
		// The address book, comma-joined, from the contact synchroniser.
		a = s.bundle(t, apiURL, app.fetched(kv{"op", "getcontacts"}, kv{"token", token}, kv{"hidden", "0"}, kv{"ts", "0"},
			kv{"phones", compatBob + "," + compatCyd + "," + compatStranger}), nil)
		book := contactsOf(t, a)
		if !slices.Equal(keys(book), []string{compatBob, compatCyd}) || book[compatBob]["name"] != "Bob" {
			t.Fatalf("address book matches %v: %s", keys(book), a.raw)
		}
		var since int64
		for _, r := range book {
			if ts, _ := strconv.ParseInt(r["ts"].(string), 10, 64); ts > since {
				since = ts
			}
		}
		// A contact deleted from the phone (delcontacts, SampleAPI.java l. 833; .kt l. 553; .m l. 876; .swift l. 888).
		expectOK(t, s.bundle(t, apiURL, app.fetched(kv{"op", "delcontacts"}, kv{"token", token}, kv{"phones", compatCyd}), nil), "delcontacts")
		time.Sleep(1100 * time.Millisecond) // ts has one-second resolution
		ctype, body, n, _ := mesiboPostBundle([]kv{{"op", "profile"}, {"token", bobToken}, {"status", "On holiday"}}, nil)
		expectOK(t, postAsApp(t, e.tester.Client, apiURL, ctype, body, n), "profile")
		// The periodic sync from the newest ts seen.
		a = s.bundle(t, apiURL, app.api(kv{"op", "getcontacts"}, kv{"token", token}, kv{"hidden", "0"}, kv{"ts", strconv.FormatInt(since, 10)}), nil)
		delta := contactsOf(t, a)
		if !slices.Equal(keys(delta), []string{compatBob}) || delta[compatBob]["status"] != "On holiday" {
			t.Fatalf("delta sync %v, want Bob's new status only: %s", keys(delta), a.raw)
		}
	})

	t.Run("profile", func(t *testing.T) {
		// setProfile (SampleAPI.java l. 750; .kt l. 503; .m l. 787; .swift l. 796): gid 0.
		a := s.bundle(t, apiURL, app.api(kv{"op", "profile"}, kv{"token", token}, kv{"name", "Ada"}, kv{"status", "Hi there"}, kv{"gid", "0"}), nil)
		expectOK(t, a, "profile")
		if n := rowCount(t, e, "SELECT COUNT(*) FROM users WHERE phone = ? AND name = 'Ada' AND status = 'Hi there'", compatMe); n != 1 {
			t.Fatal("the profile was not stored")
		}
	})

	t.Run("profile picture", func(t *testing.T) {
		// setProfilePicture (SampleAPI.java l. 767; .kt l. 513; .m l. 802; .swift l. 812).
		a := s.bundle(t, apiURL, app.api(kv{"op", "upload"}, kv{"token", token}, kv{"mid", "0"}, kv{"profile", "1"}, kv{"gid", "0"}), jpegFile(t))
		expectOK(t, a, "upload")
		if a.str("photo") == "" || a.str("tn") == "" || a.str("phone") != compatMe {
			t.Fatalf("upload answer without the new photo, its thumbnail or the phone: %s", a.raw)
		}
		if n := rowCount(t, e, "SELECT COUNT(*) FROM users WHERE phone = ? AND photo = ?", compatMe, a.str("photo")); n != 1 {
			t.Fatal("the picture was not stored")
		}
	})

	for i, f := range attachments(t) {
		t.Run("attachment/"+f.name, func(t *testing.T) {
			// Mesibo_onStartUpload: op, token, mid, profile 0, no dt (MesiboFileTransferHelper.java@94edf32
			// l. 83–94; .kt@9919101 l. 64–73; SampleAppFileTransferHandler.m@a53cd1a l. 30–75;
			// SampleAppFileTransferHandler.swift@05535a3 l. 28–75).
			mid := strconv.FormatInt(1767225600123456+int64(i), 10)
			s.attach(t, uploadURL, []kv{{"op", "upload"}, {"token", token}, {"mid", mid}, {"profile", "0"}}, f.file, app.readFile)
		})
	}

	t.Run("groups", func(t *testing.T) { app.groups(t, s, token) })

	if app.setnotify != nil {
		t.Run("setnotify", func(t *testing.T) {
			a := s.bundle(t, apiURL, app.api(append([]kv{{"op", "setnotify"}, {"token", token}}, app.setnotify...)...), nil)
			expectOK(t, a, "setnotify")
			if n := rowCount(t, e, "SELECT COUNT(*) FROM notifytokens WHERE token = ?", app.setnotify[0].v); n != 1 {
				t.Fatal("the push token was not stored")
			}
		})
	}

	// startLogout (SampleAPI.java l. 693; .kt l. 459; .m l. 719; .swift l. 742).
	logout := app.api(kv{"op", "logout"}, kv{"token", token})
	t.Run("logout", func(t *testing.T) {
		expectOK(t, s.bundle(t, apiURL, logout, nil), "logout")
		if n := rowCount(t, e, "SELECT COUNT(*) FROM tokens t JOIN users u ON u.uid = t.uid WHERE u.phone = ?", compatMe); n != 0 {
			t.Fatal("the token survived logout")
		}
	})
	t.Run("logout with the token gone", func(t *testing.T) {
		expectOK(t, s.bundle(t, apiURL, logout, nil), "logout")
	})
	t.Run("a request after logout", func(t *testing.T) {
		a := s.bundle(t, apiURL, app.api(kv{"op", "getcontacts"}, kv{"token", token}, kv{"hidden", "0"}, kv{"ts", "0"}), nil)
		expectFail(t, a, "AUTHFAIL")
	})
}

// groups is the life of two groups the app's user creates: read, synced, grown, shrunk, an
// admin made, a picture set and removed, deleted.
func (app fullAPIApp) groups(t *testing.T, s appSession, token string) {
	e := s.e
	create := func(name string) []kv {
		fields := []kv{{"op", "setgroup"}, {"token", token}, {"name", name}}
		if app.newGroupGID != nil {
			fields = append(fields, kv{"gid", *app.newGroupGID})
		}
		return fields
	}
	var family, trip int64
	t.Run("setgroup", func(t *testing.T) {
		// setGroup (SampleAPI.java@94edf32 l. 859; .kt@9919101 l. 570; SampleAPI.m@2414686 l. 901;
		// BackendAPI.swift@05535a3 l. 912): name, gid as the app renders a new one, status, m.
		fields := append(create("Family"), kv{"status", ""}, kv{"m", compatBob + "," + compatCyd})
		a := s.bundle(t, apiURL, app.api(fields...), nil)
		expectOK(t, a, "setgroup")
		family = gidIn(t, a)
		if want := members(1, compatMe, compatBob, compatCyd); a.str("members") != want || a.str("name") != "Family" {
			t.Fatalf("setgroup answer %s, want members %q", a.raw, want)
		}
		if n := rowCount(t, e, "SELECT COUNT(*) FROM members WHERE gid = ?", family); n != 3 {
			t.Fatalf("%d members rows, want 3", n)
		}
	})
	if family == 0 {
		return // no group to go on with
	}
	gid := strconv.FormatInt(family, 10)

	t.Run("getgroup", func(t *testing.T) {
		// getGroup (SampleAPI.java l. 892; .kt l. 591; .m l. 940; .swift l. 956).
		a := s.bundle(t, apiURL, app.api(kv{"op", "getgroup"}, kv{"token", token}, kv{"gid", gid}), nil)
		expectOK(t, a, "getgroup")
		if gidIn(t, a) != family || a.str("name") != "Family" {
			t.Fatalf("getgroup answer %s", a.raw)
		}
	})

	t.Run("sync shows the group", func(t *testing.T) {
		a := s.bundle(t, apiURL, app.api(kv{"op", "getcontacts"}, kv{"token", token}, kv{"hidden", "0"}, kv{"ts", "0"}), nil)
		if r := contactsOf(t, a)["group:"+gid]; r == nil || r["name"] != "Family" {
			t.Fatalf("the group is not in the sync: %s", a.raw)
		}
	})

	t.Run("editmembers", func(t *testing.T) {
		// editMembers (SampleAPI.java l. 906; .kt l. 601; .m l. 953; .swift l. 970): add, then remove.
		a := s.bundle(t, apiURL, app.api(kv{"op", "editmembers"}, kv{"token", token}, kv{"gid", gid}, kv{"m", compatStranger}, kv{"delete", "0"}), nil)
		expectOK(t, a, "editmembers")
		if !strings.Contains(a.str("members"), compatStranger) {
			t.Fatalf("member not added: %s", a.raw)
		}
		a = s.bundle(t, apiURL, app.api(kv{"op", "editmembers"}, kv{"token", token}, kv{"gid", gid}, kv{"m", compatCyd}, kv{"delete", "1"}), nil)
		expectOK(t, a, "editmembers")
		if want := members(1, compatMe, compatBob, compatStranger); a.str("members") != want {
			t.Fatalf("members %q after removing Cyd, want %q", a.str("members"), want)
		}
	})

	t.Run("setadmin", func(t *testing.T) {
		// setAdmin (SampleAPI.java l. 922; .kt l. 613; .m l. 973; .swift l. 991).
		a := s.bundle(t, apiURL, app.api(kv{"op", "setadmin"}, kv{"token", token}, kv{"gid", gid}, kv{"m", compatBob}, kv{"admin", "1"}), nil)
		expectOK(t, a, "setadmin")
		if n := rowCount(t, e, "SELECT COUNT(*) FROM members WHERE gid = ? AND phone = ? AND role = 1", family, compatBob); n != 1 {
			t.Fatalf("Bob is not an admin: %s", a.raw)
		}
	})

	t.Run("setgroup with a picture", func(t *testing.T) {
		// setGroup with photoPath: the same fields, multipart, the picture in photo.
		fields := append(create("Trip & Co"), kv{"status", ""}, kv{"m", compatBob})
		a := s.bundle(t, apiURL, app.api(fields...), jpegFile(t))
		expectOK(t, a, "setgroup")
		trip = gidIn(t, a)
		if trip == family || a.str("name") != "Trip & Co" || a.str("photo") == "" {
			t.Fatalf("a second group named \"Trip & Co\" with a picture: %s", a.raw)
		}
	})

	if app.removesGroupPicture && trip > 0 {
		t.Run("remove the group picture", func(t *testing.T) {
			// Mesibo_onSetGroup without name, status and picture → setProfilePicture(null, groupid)
			// (MesiboListeners.kt@9919101 l. 267–271; SampleAPI.java@94edf32 l. 767–783).
			a := s.bundle(t, apiURL, app.api(kv{"op", "upload"}, kv{"token", token}, kv{"mid", "0"}, kv{"profile", "1"},
				kv{"gid", strconv.FormatInt(trip, 10)}, kv{"delete", "1"}), nil)
			expectOK(t, a, "upload")
			if n := rowCount(t, e, "SELECT COUNT(*) FROM `groups` WHERE gid = ? AND (photo = '' OR photo IS NULL)", trip); n != 1 {
				t.Fatalf("the group picture was not removed: %s", a.raw)
			}
		})
	}

	t.Run("delgroup", func(t *testing.T) {
		// deleteGroup (SampleAPI.java l. 877; .kt l. 582; .m l. 927; .swift l. 942).
		for _, g := range []int64{family, trip} {
			if g == 0 {
				continue
			}
			a := s.bundle(t, apiURL, app.api(kv{"op", "delgroup"}, kv{"token", token}, kv{"gid", strconv.FormatInt(g, 10)}), nil)
			expectOK(t, a, "delgroup")
			if gidIn(t, a) != g || rowCount(t, e, "SELECT COUNT(*) FROM `groups` WHERE gid = ?", g) != 0 {
				t.Fatalf("group %d not deleted: %s", g, a.raw)
			}
		}
	})
}

// ---- The JSON apps (2023 on) and the web messenger: login and logout only ----

// jsonApp is an app that sends only login and logout to the backend, as a JSON body to the
// site root.
type jsonApp struct {
	name string
	// contentTypes are the Content-Type headers the app's requests may go out with ("" is
	// none); the later steps use the token of the first that logs in.
	contentTypes []string
	// login is the body of the login request, code "" for the first step.
	login func(phone, code string) string
	// logout is the body of the logout request; nil: the app logs out locally.
	logout func(token string) string
	read   appParser
	// attachment are the fields of the app's chat-attachment upload to the backend after the
	// token; nil: the app uploads elsewhere.
	attachment func(token string) []kv
	readFile   fileParser
}

var jsonApps = []jsonApp{
	{
		// SampleAPI.java@bdf62fc (same since @6507e99, and messenger-app-android-kotlin@f1ac095):
		// org.json in insertion order, dt a string (l. 127), Content-Type application/json (l. 142).
		name: "android-2023", contentTypes: []string{"application/json"},
		login: func(phone, code string) string { // l. 502–508
			fields := []kv{{"op", "login"}, {"appid", "org.mesibo.messenger"}, {"phone", phone}}
			if code != "" {
				fields = append(fields, kv{"otp", code}, kv{"device", "a1b2c3d4e5f60718"})
			}
			return jsonText(append(fields, kv{"dt", dtAndroid})...)
		},
		logout: func(token string) string {
			return jsonText(kv{"op", "logout"}, kv{"token", token}, kv{"dt", dtAndroid})
		}, // l. 488–489
		read: readAndroid2023,
	},
	{
		// SampleAPI.m@43e36a7: NSJSONSerialization of the post dictionary, Content-Type
		// application/json (l. 392).
		name: "ios-objc-2023", contentTypes: []string{"application/json"},
		login: func(phone, code string) string { // l. 468–477
			fields := []kv{{"op", "login"}, {"appid", "com.mesibo.messengerapp"}, {"phone", phone}}
			if code != "" {
				fields = append(fields, kv{"otp", code}, kv{"device", "4F1C0D1E-0000-4000-8000-2B7E151628AE"})
			}
			return jsonText(append(fields, kv{"dt", dtIOS})...)
		},
		logout: func(token string) string { return jsonText(kv{"op", "logout"}, kv{"token", token}, kv{"dt", dtIOS}) }, // l. 436–439
		read:   readIOSObjC2023,
	},
	{
		// SampleAPI.swift@978ae16 (requests unchanged since @76193ca): JSONSerialization into
		// http.post with no content type set (l. 357–363); what the library then labels it is
		// not known, so each candidate is tried.
		name: "ios-swift-current", contentTypes: []string{"application/x-www-form-urlencoded", "", "application/octet-stream"},
		login: func(phone, code string) string { // l. 433–442
			fields := []kv{{"op", "login"}, {"phone", phone}}
			if code != "" {
				fields = append(fields, kv{"otp", code})
			}
			return jsonText(append(fields, kv{"appid", "com.mesibo.messengerswift"}, kv{"dt", dtIOS})...)
		},
		logout: func(token string) string { return jsonText(kv{"op", "logout"}, kv{"token", token}, kv{"dt", dtIOS}) }, // l. 394–402
		read:   readIOSSwiftCurrent,
		// SampleAppFileTransferHandler.swift@978ae16 l. 38–41: the token as auth, a postBundle
		// (multipart) to the login answer's urls.upload; it reads url (l. 59).
		attachment: func(token string) []kv {
			return []kv{{"op", "upload"}, {"auth", token}, {"mid", "1767225600123999"}, {"profile", "0"}}
		},
		readFile: readSwiftFile("url"),
	},
	{
		// login/login.js@bda029c l. 56–69: the phone without "+", otp only when typed; sent by
		// mesibo.js setPostData(p, true) as JSON.
		name: "web", contentTypes: []string{"application/json"},
		login: func(phone, code string) string {
			fields := []kv{{"op", "login"}, {"appid", "com.mesibo.jsdemo"}, {"phone", phone}}
			if code != "" {
				fields = append(fields, kv{"otp", code})
			}
			return jsonText(fields...)
		},
		read: readWeb,
	},
}

func contentTypeName(ct string) string {
	if ct == "" {
		return "no content type"
	}
	return ct
}

// run logs in with each content type the app may use, sends chat attachments where the app
// uploads to the backend, and logs out.
func (app jsonApp) run(t *testing.T) {
	e := startEnv(t, options{extra: roomy})
	var token, uploadURL, contentType string
	var s appSession
	for i, ct := range app.contentTypes {
		variant := appSession{e: e, me: strconv.FormatInt(919812345621+int64(i), 10), read: app.read}
		t.Run("login/"+contentTypeName(ct), func(t *testing.T) {
			send := func(body string) answer {
				return variant.exchange(t, e.tester.Client, "login", siteURL+"/", ct, strings.NewReader(body), int64(len(body)), app.read)
			}
			expectOK(t, send(app.login(variant.me, "")), "login")
			a := send(app.login(variant.me, deliveredCode(t, e.hook, variant.me)))
			expectOK(t, a, "login")
			got := a.str("token")
			if len(got) <= 16 || got != e.mesibo.Users()[variant.me].Token {
				t.Fatalf("token %q (the web page wants more than 16 characters): %s", got, a.raw)
			}
			if token == "" {
				token, uploadURL, contentType, s = got, uploadURLOf(a.body), ct, variant
			}
		})
	}
	if token == "" {
		return
	}
	if app.attachment != nil {
		for _, f := range attachments(t) {
			t.Run("attachment/"+f.name, func(t *testing.T) {
				s.attach(t, uploadURL, app.attachment(token), f.file, app.readFile)
			})
		}
	}
	if app.logout == nil {
		return
	}
	body := app.logout(token)
	logout := func(t *testing.T) answer {
		return s.exchange(t, e.tester.Client, "logout", siteURL+"/", contentType, strings.NewReader(body), int64(len(body)), app.read)
	}
	t.Run("logout", func(t *testing.T) { expectOK(t, logout(t), "logout") })
	t.Run("logout with the token gone", func(t *testing.T) { expectOK(t, logout(t), "logout") })
}

// TestPublishedClients replays each published app's flow, its requests as the app sends them
// and its answers read as the app reads them (docs/clients.md).
func TestPublishedClients(t *testing.T) {
	for _, app := range fullAPIApps {
		t.Run(app.name, app.run)
	}
	for _, app := range jsonApps {
		t.Run(app.name, app.run)
	}
}

package handlers

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func decode(t *testing.T, r *http.Request) *Request {
	t.Helper()
	req, err := Decode(r, Limits{MaxBody: 1 << 20, MaxFile: 1 << 20})
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	t.Cleanup(req.Close)
	return req
}

// fileData reads a decoded file whole.
func fileData(t *testing.T, f *File) string {
	t.Helper()
	data, err := io.ReadAll(io.NewSectionReader(f.Content, 0, f.Size))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestDecodeEncodings(t *testing.T) {
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("op", "Upload")
	mw.WriteField("phones", " 1, 2 ,,3 ")
	fw, _ := mw.CreateFormFile("photo", "../../etc/passwd.jpg")
	fw.Write([]byte("JPEGDATA"))
	mw.Close()

	for name, r := range map[string]*http.Request{
		"query": httptest.NewRequest(http.MethodGet, "/api.php?op=Upload&phones=1,2,,3&ts=7", nil),
		"form": func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api.php?ts=7", strings.NewReader("op=Upload&phones=+1,2,3+"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
			return r
		}(),
		"json": func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api.php", strings.NewReader(`{"op":"Upload","phones":[1,"2"," ",3],"ts":7,"nested":{"a":1},"nothing":null}`))
			r.Header.Set("Content-Type", "application/json")
			return r
		}(),
		"multipart": func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api.php?ts=7", bytes.NewReader(mp.Bytes()))
			r.Header.Set("Content-Type", mw.FormDataContentType())
			return r
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			req := decode(t, r)
			if req.Op != "upload" {
				t.Errorf("op %q", req.Op)
			}
			if got := req.List("phones"); !reflect.DeepEqual(got, []string{"1", "2", "3"}) {
				t.Errorf("phones %q", got)
			}
			if req.Int("ts") != 7 {
				t.Errorf("ts %d", req.Int("ts"))
			}
			if name == "multipart" {
				if req.File == nil || req.File.Field != "photo" || req.File.Name != "passwd.jpg" || fileData(t, req.File) != "JPEGDATA" {
					t.Errorf("file %+v", req.File)
				}
			} else if req.File != nil {
				t.Error("unexpected file")
			}
		})
	}
}

func TestDecodeRules(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/?op=logout&token=fromquery&keep=q", strings.NewReader(`{"op":"login","token":"  frombody  ","gid":12.0,"flag":true,"big":1e3}`))
	r.Header.Set("Content-Type", "application/json")
	req := decode(t, r)
	if req.Op != "login" || req.Get("token") != "frombody" || req.Get("keep") != "q" {
		t.Fatalf("body must win over the query, values trimmed: %+v", req.fields)
	}
	if req.Int("gid") != 12 || req.Get("flag") != "1" || req.Int("big") != 1000 || req.Int("missing") != 0 || !req.Has("gid") || req.Has("missing") {
		t.Fatalf("numbers: %+v", req.fields)
	}
	// The body is still there for a handler later in the route.
	rest, _ := io.ReadAll(r.Body)
	if !strings.Contains(string(rest), `frombody`) {
		t.Fatalf("body consumed: %q", rest)
	}
}

// TestDecodeJSONUnderAnyLabel: a body that is a JSON object is JSON whatever its
// Content-Type says, but multipart (PROTOCOL.md §1); the current iOS app labels its JSON
// as its HTTP library likes.
func TestDecodeJSONUnderAnyLabel(t *testing.T) {
	body := " \n" + `{"op":"Login","phone":"919800000004","appid":"x"}`
	for _, contentType := range []string{"", "application/x-www-form-urlencoded", "application/octet-stream",
		"text/plain;charset=UTF-8", "application/json; charset=utf-8", "application/vnd.api+json", "nonsense/;;"} {
		t.Run(contentType, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			if contentType != "" {
				r.Header.Set("Content-Type", contentType)
			}
			req := decode(t, r)
			if req.Op != "login" || req.Get("phone") != "919800000004" || req.Get("appid") != "x" {
				t.Fatalf("fields %+v", req.fields)
			}
		})
	}
	t.Run("form", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("op=login&phone=%7B1"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if req := decode(t, r); req.Op != "login" || req.Get("phone") != "{1" {
			t.Fatalf("a form is still a form: %+v", req.fields)
		}
	})
	t.Run("multipart", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"op":"x"}`))
		r.Header.Set("Content-Type", "multipart/form-data; boundary=b")
		req, _ := Decode(r, Limits{MaxBody: 1 << 20, MaxFile: 1 << 20})
		defer req.Close()
		if req.Op != "" {
			t.Fatalf("a body labelled multipart is read as multipart only: op %q", req.Op)
		}
	})
}

// multipartBody is a multipart body of fields and one file part.
func multipartBody(t *testing.T, fields map[string]string, file []byte) (body []byte, contentType string) {
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	fw, _ := mw.CreateFormFile("photo", "video.mp4")
	fw.Write(file)
	mw.Close()
	return mp.Bytes(), mw.FormDataContentType()
}

// TestDecodeSpoolsTheFile: a multipart file part goes to a temp file, whatever its size
// up to MaxFile (well over MaxBody), which Close removes; the rest of the limits hold.
func TestDecodeSpoolsTheFile(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	body, contentType := multipartBody(t, map[string]string{"op": "upload", "mid": "7"}, big)
	dir := t.TempDir()
	lim := Limits{MaxBody: 1 << 10, MaxFile: 2 << 20, TempDir: dir}
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	req, err := Decode(r, lim)
	if err != nil {
		t.Fatal(err)
	}
	if req.Op != "upload" || req.Get("mid") != "7" || req.File.Size != int64(len(big)) || fileData(t, req.File) != string(big) {
		t.Fatalf("decoded %q %q, file of %d bytes", req.Op, req.Get("mid"), req.File.Size)
	}
	content := req.File.Content
	req.Close()
	if _, err := content.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("the file can still be read after Close")
	}
	if n := len(listDir(t, dir)); n != 0 {
		t.Errorf("%d temp files left", n)
	}

	for name, tc := range map[string]struct {
		lim  Limits
		body func() ([]byte, string)
		code string
	}{
		"file over MaxFile": {Limits{MaxBody: 1 << 10, MaxFile: 1 << 19, TempDir: dir}, func() ([]byte, string) {
			return multipartBody(t, map[string]string{"op": "upload"}, big)
		}, CodeTooLarge},
		"fields over MaxBody": {Limits{MaxBody: 100, MaxFile: 2 << 20, TempDir: dir}, func() ([]byte, string) {
			return multipartBody(t, map[string]string{"op": "upload", "name": strings.Repeat("x", 200)}, nil)
		}, CodeTooLarge},
		"names over MaxBody": {Limits{MaxBody: 100, MaxFile: 2 << 20, TempDir: dir}, func() ([]byte, string) {
			fields := map[string]string{}
			for i := range 20 {
				fields[fmt.Sprintf("field-%02d", i)] = ""
			}
			return multipartBody(t, fields, nil)
		}, CodeTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			body, contentType := tc.body()
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			r.Header.Set("Content-Type", contentType)
			req, err := Decode(r, tc.lim)
			req.Close()
			if de, ok := err.(*DecodeError); !ok || de.Code != tc.code {
				t.Errorf("%v, want %s", err, tc.code)
			}
		})
	}
	if n := len(listDir(t, dir)); n != 0 {
		t.Errorf("%d temp files left", n)
	}
}

// TestDecodeKeepsMultipartBody: with KeepBody, a multipart body is put back whole for a
// later handler, also when it was refused.
func TestDecodeKeepsMultipartBody(t *testing.T) {
	body, contentType := multipartBody(t, map[string]string{"op": "upload"}, bytes.Repeat([]byte("x"), 5000))
	for _, maxFile := range []int64{1 << 20, 100} {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		req, _ := Decode(r, Limits{MaxBody: 1 << 10, MaxFile: maxFile, TempDir: t.TempDir(), KeepBody: true})
		again, err := io.ReadAll(r.Body)
		req.Close()
		if err != nil || !bytes.Equal(again, body) {
			t.Errorf("MaxFile %d: the body put back differs (%d of %d bytes, %v)", maxFile, len(again), len(body), err)
		}
	}
}

// TestDecodeSpoolFailure: a temp file that cannot be made is the server's failure,
// answered TEMPFAIL, not the client's.
func TestDecodeSpoolFailure(t *testing.T) {
	body, contentType := multipartBody(t, map[string]string{"op": "upload"}, []byte("x"))
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	req, err := Decode(r, Limits{MaxBody: 1 << 10, MaxFile: 1 << 10, TempDir: filepath.Join(t.TempDir(), "missing")})
	defer req.Close()
	if _, isDecodeError := err.(*DecodeError); err == nil || isDecodeError {
		t.Fatalf("error %v, want a server error", err)
	}
	resp := (&API{Now: time.Now, Logger: zap.NewNop()}).Rejected(req, err)
	if resp.Body["error"] != CodeTempFail {
		t.Errorf("answer %v", resp.Body)
	}
}

func listDir(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// TestIntval: numbers are read as the original's PHP intval read them.
func TestIntval(t *testing.T) {
	for in, want := range map[string]int64{
		"": 0, "0": 0, "12": 12, " \t12abc": 12, "+7": 7, "-3": -3, "1.9": 1, "-1.9": -1, "1e3": 1000, ".5": 0,
		"Optional(0)": 0, "Optional(12)": 0, "abc": 0, "0x1A": 0, "99999999999999999999999": math.MaxInt64,
		"-99999999999999999999999": math.MinInt64, "1e400": math.MaxInt64, "007": 7,
	} {
		t.Run(in, func(t *testing.T) {
			req := &Request{fields: map[string]string{"n": in}}
			if got := req.Int("n"); got != want {
				t.Fatalf("Int(%q) = %d, want %d", in, got, want)
			}
		})
	}
}

// TestGID: gid is read by intval, so the Swift app's "Optional(0)" creates a group; a gid
// beyond any group id is BADGROUP, an object or array MISSINGPARA (PROTOCOL.md §2).
func TestGID(t *testing.T) {
	for name, tc := range map[string]struct {
		body string
		gid  int64
		code string
	}{
		"Optional(0)":    {`{"gid":"Optional(0)"}`, 0, ""},
		"Optional(12)":   {`{"gid":"Optional(12)"}`, 12, ""},
		"Optional(nil)":  {`{"gid":"Optional(nil)"}`, 0, ""},
		"number":         {`{"gid":42}`, 42, ""},
		"float":          {`{"gid":42.0}`, 42, ""},
		"string":         {`{"gid":"42"}`, 42, ""},
		"largest":        {`{"gid":4294967295}`, 4294967295, ""},
		"one beyond":     {`{"gid":4294967296}`, 0, CodeBadGroup},
		"overflow":       {`{"gid":"99999999999999999999999"}`, 0, CodeBadGroup},
		"overflow float": {`{"gid":1e30}`, 0, CodeBadGroup},
		"object":         {`{"gid":{}}`, 0, CodeMissingPara},
		"array":          {`{"gid":[1]}`, 0, CodeMissingPara},
		"empty array":    {`{"gid":[]}`, 0, CodeMissingPara},
		"absent":         {`{}`, 0, ""},
		"negative":       {`{"gid":-5}`, -5, ""},
	} {
		t.Run(name, func(t *testing.T) {
			req := decode(t, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body)))
			if gid, code := req.GID(); gid != tc.gid || code != tc.code {
				t.Fatalf("GID() = %d %q, want %d %q", gid, code, tc.gid, tc.code)
			}
		})
	}
}

// TestText: free text is refused before SQL when it is over its size or not UTF-8.
func TestText(t *testing.T) {
	req := &Request{fields: map[string]string{"ok": "Zoë 😀", "empty": "", "long": strings.Repeat("x", 11), "bad": "a\xffb"}}
	if v, code := req.Text("ok", 10); v == nil || *v != "Zoë 😀" || code != "" {
		t.Errorf("ok: %v %q", v, code)
	}
	if v, code := req.Text("empty", 10); v == nil || *v != "" || code != "" {
		t.Errorf("empty: %v %q", v, code)
	}
	if v, code := req.Text("absent", 10); v != nil || code != "" {
		t.Errorf("absent: %v %q", v, code)
	}
	if _, code := req.Text("long", 10); code != CodeTooLarge {
		t.Errorf("long: %q", code)
	}
	if _, code := req.Text("bad", 10); code != CodeMissingPara {
		t.Errorf("bad: %q", code)
	}
}

func TestDecodeErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		contentType, body, code string
	}{
		"bad json":         {"application/json", `{"op":`, "BADREQUEST"},
		"json array":       {"application/json", `[1]`, "BADREQUEST"},
		"no boundary":      {"multipart/form-data", "x", "BADREQUEST"},
		"broken multipart": {"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx", "BADREQUEST"},
		"two files": {"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"a\"; filename=\"1\"\r\n\r\nx\r\n" +
			"--b\r\nContent-Disposition: form-data; name=\"b\"; filename=\"2\"\r\n\r\ny\r\n--b--\r\n", "BADREQUEST"},
		"bad form":  {"application/x-www-form-urlencoded", "op=%zz", "BADREQUEST"},
		"too large": {"application/x-www-form-urlencoded", "op=" + strings.Repeat("x", 1000), "TOOLARGE"},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/?op=login", strings.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.contentType)
			req, err := Decode(r, Limits{MaxBody: 1000, MaxFile: 1000})
			req.Close()
			de, ok := err.(*DecodeError)
			if !ok || de.Code != tc.code {
				t.Fatalf("error %v, want %s", err, tc.code)
			}
			resp := (&API{Now: time.Now}).Rejected(req, err)
			if _, hasTS := resp.Body["ts"].(int64); resp.Body["error"] != tc.code || resp.Body["result"] != "FAIL" || resp.Body["op"] != "login" || !hasTS {
				t.Errorf("answer %v", resp.Body)
			}
		})
	}
}

// FuzzDecode: any request decodes or fails with a protocol code; never a panic, never an
// empty error code, and list items are never empty.
func FuzzDecode(f *testing.F) {
	f.Add("application/json", `{"op":"getcontacts","phones":["+1 650",2,null,true],"ts":"0"}`, "op=login")
	f.Add("application/x-www-form-urlencoded", "op=login&phone=%2B91+98&code=1", "")
	f.Add("multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"op\"\r\n\r\nupload\r\n--b\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n\r\nJPEG\r\n--b--\r\n", "token=x")
	f.Add("", `{"op":1e400}`, "op")
	f.Add("text/plain", "op=x", "op=%ZZ&a=;b")
	f.Add("application/json", `{"m":[[1]],"gid":-0.5}`, "")
	// JSON under any label but multipart (PROTOCOL.md §1), as the current iOS app sends it.
	f.Add("application/x-www-form-urlencoded", ` {"op":"login","phone":"919800000004","appid":"x"}`, "")
	f.Add("application/octet-stream", "\n{\"op\":\"login\",\"gid\":{}}", "")
	f.Add("text/plain; charset=utf-8", `{"op":"setgroup","gid":"Optional(0)","m":"1,2"}`, "")
	f.Add("multipart/form-data;boundary=b", "{\"op\":\"x\"}", "")
	f.Add("application/x-www-form-urlencoded", `{"gid":99999999999999999999999,"token":"\u00e9\u00e9"}`, "")
	f.Fuzz(func(t *testing.T, contentType, body, query string) {
		r := httptest.NewRequest(http.MethodPost, "/api.php", strings.NewReader(body))
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", contentType)
		req, err := Decode(r, Limits{MaxBody: 1 << 16, MaxFile: 1 << 16})
		if req == nil {
			t.Fatal("nil request")
		}
		defer req.Close()
		if err != nil {
			de, ok := err.(*DecodeError)
			if !ok || de.Code == "" {
				t.Fatalf("error without a code: %v", err)
			}
			if (&API{Now: time.Now}).Rejected(req, err).Body["error"] == "" {
				t.Fatal("rejection without a code")
			}
		}
		if req.Op != strings.ToLower(req.Op) {
			t.Fatalf("op %q not lower-cased", req.Op)
		}
		for _, name := range []string{"phones", "m", "op"} {
			for _, item := range req.List(name) {
				if item == "" || item != strings.TrimSpace(item) {
					t.Fatalf("list item %q", item)
				}
			}
		}
		_ = req.Int("ts")
		if gid, code := req.GID(); code == "" && gid > maxGID {
			t.Fatalf("gid %d beyond a group id", gid)
		}
	})
}

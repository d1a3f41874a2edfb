package handlers

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func decode(t *testing.T, r *http.Request) *Request {
	t.Helper()
	req, err := Decode(r, 1<<20)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return req
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
		req := decode(t, r)
		if req.Op != "upload" {
			t.Errorf("%s: op %q", name, req.Op)
		}
		if got := req.List("phones"); !reflect.DeepEqual(got, []string{"1", "2", "3"}) {
			t.Errorf("%s: phones %q", name, got)
		}
		if req.Int("ts") != 7 {
			t.Errorf("%s: ts %d", name, req.Int("ts"))
		}
		if name == "multipart" {
			if req.File == nil || req.File.Field != "photo" || string(req.File.Data) != "JPEGDATA" {
				t.Errorf("multipart file %+v", req.File)
			}
		} else if req.File != nil {
			t.Errorf("%s: unexpected file", name)
		}
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
	// JSON without a content type, as some clients send it.
	r = httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"op":"x"}`))
	if decode(t, r).Op != "x" {
		t.Fatal("untyped JSON body not read")
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
		r := httptest.NewRequest(http.MethodPost, "/?op=login", strings.NewReader(tc.body))
		r.Header.Set("Content-Type", tc.contentType)
		req, err := Decode(r, 1000)
		de, ok := err.(*DecodeError)
		if !ok || de.Code != tc.code {
			t.Errorf("%s: error %v, want %s", name, err, tc.code)
			continue
		}
		resp := Rejected(req, err)
		if resp.Body["error"] != tc.code || resp.Body["result"] != "FAIL" || resp.Body["op"] != "login" {
			t.Errorf("%s: answer %v", name, resp.Body)
		}
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
	f.Fuzz(func(t *testing.T, contentType, body, query string) {
		r := httptest.NewRequest(http.MethodPost, "/api.php", strings.NewReader(body))
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", contentType)
		req, err := Decode(r, 1<<16)
		if req == nil {
			t.Fatal("nil request")
		}
		if err != nil {
			de, ok := err.(*DecodeError)
			if !ok || de.Code == "" {
				t.Fatalf("error without a code: %v", err)
			}
			if Rejected(req, err).Body["error"] == "" {
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
	})
}

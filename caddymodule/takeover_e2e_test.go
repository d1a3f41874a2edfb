package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// oldBackend plays the original PHP backend behind the module: it records what reaches
// it and answers like the original would.
type oldBackend struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	contentType string
	body        []byte
	query       string
}

func newOldBackend(t *testing.T) *oldBackend {
	o := &oldBackend{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		o.mu.Lock()
		o.seen = append(o.seen, seenRequest{r.Header.Get("Content-Type"), body, r.URL.RawQuery})
		o.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"result": "OK", "backend": "php"})
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *oldBackend) last() seenRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.seen) == 0 {
		return seenRequest{}
	}
	return o.seen[len(o.seen)-1]
}

func takeoverSite(old *oldBackend) string {
	return `%[1]s {
	@api path / /api.php
	route @api {
		messenger {
%[2]s
		}
		reverse_proxy ` + strings.TrimPrefix(old.URL, "http://") + `
	}
}
`
}

// TestTakeoverOpByOp: the module answers the ops it was given; every other op reaches
// the old backend with its body exactly as the client sent it, in every encoding.
func TestTakeoverOpByOp(t *testing.T) {
	old := newOldBackend(t)
	e := startEnv(t, options{site: takeoverSite(old), extra: roomy + "\n\t\tops login logout getcontacts"})
	token := e.login(form, "+91 98123 56001", "919812356001")
	expectOK(t, e.call(query, map[string]any{"op": "getcontacts", "token": token}), "getcontacts")
	if len(old.seen) != 0 {
		t.Fatalf("the old backend saw %d requests for ops the module owns", len(old.seen))
	}

	// profile belongs to the old backend: form, JSON and multipart with a file.
	a := e.call(form, map[string]any{"op": "profile", "token": token, "name": "Ada"})
	if a.str("backend") != "php" || !strings.Contains(string(old.last().body), "name=Ada") {
		t.Fatalf("form profile: %s / %q", a.raw, old.last().body)
	}
	jsonBody := `{"op":"profile","token":"` + token + `","status":"x"}`
	req, _ := http.NewRequest(http.MethodPost, apiURL, strings.NewReader(jsonBody))
	req.Header.Set("Content-Type", "application/json")
	if a := e.do(req); a.str("backend") != "php" || string(old.last().body) != jsonBody {
		t.Fatalf("json profile reached the old backend as %q", old.last().body)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("op", "upload")
	mw.WriteField("token", token)
	fw, _ := mw.CreateFormFile("photo", "a.jpg")
	fw.Write(bytes.Repeat([]byte("JPEG"), 1000))
	mw.Close()
	sent := append([]byte(nil), buf.Bytes()...)
	req, _ = http.NewRequest(http.MethodPost, apiURL+"?x=1", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if a := e.do(req); a.str("backend") != "php" || !bytes.Equal(old.last().body, sent) || old.last().query != "x=1" ||
		old.last().contentType != mw.FormDataContentType() {
		t.Fatalf("multipart upload reached the old backend changed (%d bytes of %d)", len(old.last().body), len(sent))
	}
	// A body too large for the module still reaches the old backend whole.
	big := "op=profile&status=" + strings.Repeat("x", 70<<10)
	req, _ = http.NewRequest(http.MethodPost, apiURL, strings.NewReader(big))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if a := e.do(req); a.str("backend") != "php" || string(old.last().body) != big {
		t.Fatalf("large body: %d bytes reached the old backend", len(old.last().body))
	}
	// Unknown ops stay with the module.
	n := len(old.seen)
	expectFail(t, e.call(form, map[string]any{"op": "frobnicate", "token": token}), "BADOP")
	// The module's own ops never reach the backend, and NOOP is still answered here.
	expectOK(t, e.call(form, map[string]any{"op": "logout", "token": token}), "logout")
	req, _ = http.NewRequest(http.MethodGet, apiURL, nil)
	if a := e.do(req); a.str("code") != "NOOP" {
		t.Fatalf("NOOP: %s", a.raw)
	}
	if len(old.seen) != n {
		t.Fatal("an op of the module reached the old backend")
	}
}

func TestTakeoverPassesUnknownOps(t *testing.T) {
	old := newOldBackend(t)
	e := startEnv(t, options{site: takeoverSite(old), extra: "ops login\n\t\tpass_unknown_ops"})
	if a := e.call(form, map[string]any{"op": "frobnicate", "token": "whatever-token-1234567"}); a.str("backend") != "php" {
		t.Fatalf("unknown op: %s", a.raw)
	}
}

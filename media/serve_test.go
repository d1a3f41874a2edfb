package media

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFileServer: files and thumbnails are served with their type from the name, the
// headers that keep them from running as pages, ranges and conditional requests; any
// other path, a missing file or another method is refused.
func TestFileServer(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		picture := encodePNG(t, bandsImage(300, 200))
		name, err := save(t, s, picture)
		if err != nil {
			t.Fatal(err)
		}
		page := []byte("<html><script>alert(1)</script></html>")
		if err := write(ctxT(t), s.files, "legacy.html", bytes.NewReader(page)); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(FileServer{Storage: s.Storage})
		defer srv.Close()
		get := func(method, path string, header ...string) (*http.Response, []byte) {
			t.Helper()
			req, _ := http.NewRequest(method, srv.URL+path, nil)
			for i := 0; i+1 < len(header); i += 2 {
				req.Header.Set(header[i], header[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Content-Security-Policy") != ContentSecurityPolicy {
				t.Errorf("%s %s: headers %v", method, path, resp.Header)
			}
			return resp, body
		}

		resp, body := get("GET", "/files/"+name)
		lastModified, etag := resp.Header.Get("Last-Modified"), resp.Header.Get("ETag")
		if resp.StatusCode != 200 || !bytes.Equal(body, picture) || resp.Header.Get("Content-Type") != "image/png" ||
			resp.Header.Get("Content-Disposition") != "" {
			t.Fatalf("GET picture: %d %v, %d bytes", resp.StatusCode, resp.Header, len(body))
		}
		if resp, body := get("GET", "/thumbs/"+name); resp.StatusCode != 200 || !bytes.HasPrefix(body, []byte{0xFF, 0xD8}) {
			t.Errorf("GET thumbnail: %d, %d bytes", resp.StatusCode, len(body))
		}
		if resp, body := get("GET", "/files/legacy.html"); resp.StatusCode != 200 || !bytes.Equal(body, page) || resp.Header.Get("Content-Disposition") != "attachment" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET page: %d %v", resp.StatusCode, resp.Header)
		}
		if resp, body := get("HEAD", "/files/"+name); resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(picture)) {
			t.Errorf("HEAD: %d, length %d, %d bytes", resp.StatusCode, resp.ContentLength, len(body))
		}
		if resp, body := get("GET", "/files/"+name, "Range", "bytes=10-19"); resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, picture[10:20]) {
			t.Errorf("range: %d, %q", resp.StatusCode, body)
		}
		if resp, body := get("GET", "/files/"+name, "Range", "bytes=-5"); resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, picture[len(picture)-5:]) {
			t.Errorf("suffix range: %d, %q", resp.StatusCode, body)
		}
		if resp, _ := get("GET", "/files/"+name, "If-Modified-Since", lastModified); lastModified == "" || resp.StatusCode != http.StatusNotModified {
			t.Errorf("If-Modified-Since %q: %d", lastModified, resp.StatusCode)
		}
		if etag != "" {
			if resp, _ := get("GET", "/files/"+name, "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
				t.Errorf("If-None-Match %s: %d", etag, resp.StatusCode)
			}
		}
		for _, path := range []string{"/files/1700000000-0123456789abcdef.png", "/files/", "/other/" + name, "/" + name,
			"/files/../thumbs/" + name, "/files/.hidden", "/thumbs/sub/" + name} {
			if resp, _ := get("GET", path); resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
			}
		}
		if resp, _ := get("POST", "/files/"+name); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("POST: %d %v", resp.StatusCode, resp.Header)
		}
	})
}

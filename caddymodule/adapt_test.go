package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestCaddyfileAdapt: each file in testdata/caddyfile_adapt is a Caddyfile, a line of
// dashes, and the JSON config `caddy adapt` must make of it (Caddy's own
// caddyfile_adapt tests' form): the Caddyfile names and the JSON names are the same, and
// nothing the Caddyfile did not set shows up in the JSON. MESSENGER_UPDATE_GOLDEN=1
// rewrites the JSON halves from the adapter's output, for review in the diff.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddyfiletest"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			src, want, _ := strings.Cut(string(raw), "\n----------\n")
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings: %v", warnings)
			}
			var got bytes.Buffer
			if err := json.Indent(&got, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			if os.Getenv("MESSENGER_UPDATE_GOLDEN") == "1" {
				if err := os.WriteFile(file, []byte(src+"\n----------\n"+got.String()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if strings.TrimSpace(got.String()) != strings.TrimSpace(want) {
				t.Errorf("adapted JSON differs from the golden file; got:\n%s", got.String())
			}
		})
	}
}

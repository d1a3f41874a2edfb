package caddymodule_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// processConfigEnv names, for a re-executed test binary, the Caddyfile it is to run as a
// plain caddy process (see startProcess).
const processConfigEnv = "MESSENGER_E2E_CADDY_CONFIG"

func TestMain(m *testing.M) {
	if config := os.Getenv(processConfigEnv); config != "" {
		os.Args = []string{"caddy", "run", "--config", config, "--adapter", "caddyfile"}
		caddycmd.Main() // serves until killed
		return
	}
	os.Exit(m.Run())
}

// processURL is the API of the separate caddy process.
var processURL = fmt.Sprintf("http://localhost:%d/api.php", basePort+2)

// startProcess runs a second, separate caddy process (this test binary re-executed as
// caddy) serving the env's messenger block on basePort+2: another server of the same
// deployment, sharing its database, Redis and mesibo.
func (e *env) startProcess(block string) {
	e.t.Helper()
	dir := e.t.TempDir()
	config := fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	grace_period 1ns
	log {
		level ERROR
	}
}
`, dir) + fmt.Sprintf(siteTemplate, fmt.Sprintf("http://localhost:%d", basePort+2), block, e.serve)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		e.t.Fatal(err)
	}
	self, err := os.Executable() // not os.Args[0]: caddytest rewrites os.Args
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), processConfigEnv+"="+path, "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.process = cmd.Process
	e.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api.php", basePort+2))
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the second caddy process did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

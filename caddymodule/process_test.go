package caddymodule_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
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
	site := fmt.Sprintf(siteTemplate, fmt.Sprintf("http://localhost:%d", basePort+2), block, e.serve)
	e.process = startCaddy(e.t, site, "", nil)
	waitAnswers(e.t, fmt.Sprintf("http://127.0.0.1:%d/api.php", basePort+2))
}

// startCaddy runs this test binary re-executed as a plain caddy process, with the
// Caddyfile sites, log as the body of its global log block (default: errors to stderr)
// and env added to its environment, until the test ends (or the test binary dies).
func startCaddy(t testing.TB, sites, log string, env []string) *os.Process {
	t.Helper()
	dir := t.TempDir()
	if log == "" {
		log = "level ERROR"
	}
	config := fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	grace_period 1ns
	servers {
		trusted_proxies static 127.0.0.1/32 ::1/128
	}
	log {
		%s
	}
}
`, dir, log) + sites
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable() // not os.Args[0]: caddytest rewrites os.Args
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(append(os.Environ(), processConfigEnv+"="+path, "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test binary
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process
}

// waitAnswers waits until a GET of url gets an answer, any answer.
func waitAnswers(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the caddy process serving %s did not answer: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

package caddymodule_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestRedisSentinel: with redis_mode sentinel the module finds the master through a real
// Sentinel (started here, watching the test Redis) and logs a user in.
func TestRedisSentinel(t *testing.T) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (scripts/test.sh installs it)")
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 6379 1\n", port, filepath.Dir(conf))), 0o600)
	cmd := exec.Command(server, conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "the sentinel", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	e := startEnv(t, options{
		redisURL: fmt.Sprintf("redis://127.0.0.1:%d/0?master_name=mymaster", port),
		extra:    "redis_mode sentinel",
	})
	token := e.login(form, "+91 98123 59001", "919812359001")
	if token == "" {
		t.Fatal("no token through sentinel")
	}
	expectFail(t, e.call(form, map[string]any{"op": "login", "phone": "+91 98123 59001", "appid": "a"}), "RATELIMIT")
}

func TestRedisModeValidation(t *testing.T) {
	for mode, valid := range map[string]bool{"cluster": true, "sentinel": true, "single": true, "ring": false} {
		out, err := adapt(t, "{\n admin off\n}\n:0 {\nmessenger {\ndatabase \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nredis_mode "+mode+"\nmesibo {\napp_token x\n}\notp {\nsender log\n}\n}\n}")
		if err != nil {
			t.Fatal(err)
		}
		if err := validateJSON(out); (err == nil) != valid {
			t.Errorf("mode %s: %v", mode, err)
		}
	}
}

package caddymodule_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/caddymodule"
)

func adapt(t *testing.T, src string) ([]byte, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, _, err := adapter.Adapt([]byte(src), nil)
	return out, err
}

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`messenger {
		database "u:p@tcp(db:3306)/m"
		max_db_connections 12
		redis redis://r:6379/1
		redis_key_prefix chat:
		mesibo {
			endpoint https://mesibo.example/backend/
			app_token {env.MESIBO_APP_TOKEN}
			timeout 3s
		}
		otp {
			secret {env.OTP_SECRET}
			ttl 4m
			max_checks 3
			max_failures 50
			failure_window 12h
			test_number +15550100999 424242
			sender log
		}
		rate_limit otp_phone 1 30s
		rate_limit otp_phone 4 1h
		rate_limit otp_ip 10 1h
		rate_limit otp_global 500 1m
		max_body_size 2MB
		download_url https://chat.example/files/
		upload_url https://chat.example/api.php
		invite {
			text "Join"
			subject "Sub"
			title "Title"
		}
		google_maps_key key
		outbox {
			concurrency 16
			max_backoff 30s
			lease 20s
		}
		token_expiry 720h
		revoke_on_logout
		ops login GetContacts
		pass_unknown_ops
		storage "s3://files?region=eu-central-1"
		thumbnail_cache 8MiB
		max_decode_memory 64MiB
		max_attachment_size 200MiB
		upload_temp_dir /var/tmp
		upload_budget 1GiB 2h
	}`)
	var h caddymodule.Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.Database != "u:p@tcp(db:3306)/m" || h.MaxDBConnections != 12 || h.Redis != "redis://r:6379/1" || h.RedisKeyPrefix != "chat:" {
		t.Errorf("connections: %+v", h)
	}
	if h.Mesibo.Endpoint != "https://mesibo.example/backend/" || h.Mesibo.AppToken != "{env.MESIBO_APP_TOKEN}" || time.Duration(h.Mesibo.Timeout) != 3*time.Second {
		t.Errorf("mesibo: %+v", h.Mesibo)
	}
	o := h.OTP
	if o.Secret != "{env.OTP_SECRET}" || time.Duration(o.TTL) != 4*time.Minute || o.MaxChecks != 3 || o.MaxFailures != 50 ||
		time.Duration(o.FailureWindow) != 12*time.Hour || o.TestNumbers["+15550100999"] != "424242" || !strings.Contains(string(o.SenderRaw), `"sender":"log"`) {
		t.Errorf("otp: %+v %s", o, o.SenderRaw)
	}
	rl := h.RateLimit
	if len(rl.OTPPhone) != 2 || rl.OTPPhone[1].Events != 4 || time.Duration(rl.OTPPhone[1].Window) != time.Hour ||
		len(rl.OTPIP) != 1 || len(rl.OTPGlobal) != 1 || rl.OTPGlobal[0].Events != 500 {
		t.Errorf("rate limits: %+v", rl)
	}
	if h.MaxBodySize != 2_000_000 || h.DownloadURL != "https://chat.example/files/" || h.UploadURL != "https://chat.example/api.php" ||
		h.Invite.Text != "Join" || h.Invite.Subject != "Sub" || h.Invite.Title != "Title" || h.GoogleMapsKey != "key" ||
		time.Duration(h.TokenExpiry) != 720*time.Hour || !h.RevokeOnLogout || len(h.Ops) != 2 || h.Ops[1] != "GetContacts" || !h.PassUnknownOps {
		t.Errorf("rest: %+v", h)
	}
	if h.Outbox.Concurrency != 16 || time.Duration(h.Outbox.MaxBackoff) != 30*time.Second || time.Duration(h.Outbox.Lease) != 20*time.Second {
		t.Errorf("outbox: %+v", h.Outbox)
	}
	if h.Storage != "s3://files?region=eu-central-1" || h.ThumbnailCache != 8<<20 || h.MaxDecodeMemory != 64<<20 ||
		h.MaxAttachmentSize != 200<<20 || h.UploadTempDir != "/var/tmp" ||
		h.UploadBudget != (caddymodule.UploadBudget{Bytes: 1 << 30, Window: caddy.Duration(2 * time.Hour)}) {
		t.Errorf("files: %+v", h)
	}
}

// TestOutboxCaddyfileJSON: the outbox block's names are its JSON names.
func TestOutboxCaddyfileJSON(t *testing.T) {
	out, err := adapt(t, "{\n admin off\n}\n:0 {\nmessenger {\nmesibo {\napp_token x\n}\notp {\nsender log\n}\noutbox {\nconcurrency 8\nmax_backoff 1m\nlease 10s\n}\n}\n}")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"outbox":{"concurrency":8,"lease":10000000000,"max_backoff":60000000000}`) {
		t.Errorf("adapted outbox block: %s", out)
	}
}

func TestFilesCaddyfile(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"storage as the argument", "messenger_files s3://b?region=r", "s3://b?region=r"},
		{"storage in a block", "messenger_files {\n storage file:///srv/files\n}", "file:///srv/files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f caddymodule.Files
			if err := f.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.src)); err != nil || f.Storage != tc.want {
				t.Errorf("%q: storage %q, %v", tc.src, f.Storage, err)
			}
		})
	}
	for _, src := range []string{"messenger_files", "messenger_files a b", "messenger_files {\n root x\n}", "messenger_files {\n storage\n}"} {
		var f caddymodule.Files
		if err := f.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src)); err == nil {
			t.Errorf("accepted %q", src)
		}
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for name, src := range map[string]string{
		"unknown":           "messenger {\n bogus 1\n}",
		"unknown in otp":    "messenger {\n otp {\n bogus\n }\n}",
		"unknown in mesibo": "messenger {\n mesibo {\n bogus x\n }\n}",
		"unknown sender":    "messenger {\n otp {\n sender carrier_pigeon\n }\n}",
		"webhook no url":    "messenger {\n otp {\n sender webhook\n }\n}",
		"webhook unknown":   "messenger {\n otp {\n sender webhook https://x {\n bogus\n }\n }\n}",
		"bad scope":         "messenger {\n rate_limit otp_moon 1 1s\n}",
		"bad events":        "messenger {\n rate_limit otp_ip zero 1s\n}",
		"bad window":        "messenger {\n rate_limit otp_ip 1 soon\n}",
		"missing arg":       "messenger {\n database\n}",
		"extra arg":         "messenger {\n redis a b\n}",
		"bad size":          "messenger {\n max_body_size lots\n}",
		"bad connections":   "messenger {\n max_db_connections many\n}",
		"no connections":    "messenger {\n max_db_connections 0\n}",
		"argument":          "messenger foo",
		"bad authenticator": "messenger {\n authenticator password\n}",
		"otp with options":  "messenger {\n authenticator phone_otp {\n x\n }\n}",
		"identity no arg":   "messenger {\n authenticator caddy_identity\n}",
		"ops without ops":   "messenger {\n ops\n}",
		"unknown in outbox": "messenger {\n outbox {\n bogus 1\n }\n}",
		"no concurrency":    "messenger {\n outbox {\n concurrency 0\n }\n}",
		"bad backoff":       "messenger {\n outbox {\n max_backoff later\n }\n}",
		"outbox argument":   "messenger {\n outbox 8\n}",
		"bad lease":         "messenger {\n outbox {\n lease forever\n }\n}",
		"budget one arg":    "messenger {\n upload_budget 1MB\n}",
		"budget bad size":   "messenger {\n upload_budget lots 1h\n}",
		"budget bad window": "messenger {\n upload_budget 1MB soon\n}",
		"bad attachment":    "messenger {\n max_attachment_size big\n}",
	} {
		t.Run(name, func(t *testing.T) {
			var h caddymodule.Handler
			if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src)); err == nil {
				t.Errorf("accepted %q", src)
			}
		})
	}
}

// TestExampleCaddyfile: the shipped example adapts, and it validates (which provisions
// the module) in both its forms: MySQL and Redis set but not listening, and nothing set,
// which makes the embedded store in Caddy's data directory.
func TestExampleCaddyfile(t *testing.T) {
	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MESIBO_APP_TOKEN", "token")
	dataHome := t.TempDir()
	t.Setenv("XDG_DATA_HOME", dataHome)
	t.Setenv("MESSENGER_DATA", t.TempDir())
	for _, form := range []struct{ name, dsn, redis string }{
		{"mysql", "nobody:nothing@tcp(127.0.0.1:1)/none", "redis://127.0.0.1:1/0"},
		{"embedded", "", ""},
	} {
		t.Run(form.name, func(t *testing.T) {
			t.Setenv("MESSENGER_DSN", form.dsn)
			t.Setenv("MESSENGER_REDIS", form.redis)
			out, err := adapt(t, string(src))
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, want := range []string{`"handler":"messenger"`, `"sender":"log"`, `"handler":"file_server"`, `"app_token":"{env.MESIBO_APP_TOKEN}"`,
				`"read_timeout":300000000000`, `"read_header_timeout":10000000000`, `"idle_timeout":120000000000`} {
				if !strings.Contains(string(out), want) {
					t.Errorf("adapted config lacks %s:\n%s", want, out)
				}
			}
			// The messenger handler must come before file_server in the route.
			if strings.Index(string(out), `"handler":"messenger"`) > strings.Index(string(out), `"handler":"file_server"`) {
				t.Error("messenger is ordered after file_server")
			}

			var cfg caddy.Config
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			cfg.Admin = &caddy.AdminConfig{Disabled: true}
			start := time.Now()
			if err := caddy.Validate(&cfg); err != nil {
				t.Fatalf("validate: %v", err)
			}
			// Validation does not wait on a database (an unreachable MySQL above).
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("validate took %s", took)
			}
		})
	}
}

func TestValidateRefusesIncompleteConfig(t *testing.T) {
	t.Chdir(t.TempDir())
	for name, block := range map[string]string{
		"no token":       "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\notp {\nsender log\n}",
		"no sender":      "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}",
		"long ttl":       "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\notp {\nsender log\nttl 11m\n}",
		"unknown op":     "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\notp {\nsender log\n}\nops login frobnicate",
		"pass alone":     "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\notp {\nsender log\n}\npass_unknown_ops",
		"many in flight": "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\notp {\nsender log\n}\noutbox {\nconcurrency 5000\n}",
		"bad test":       "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\notp {\nsender log\ntest_number 12 1234\n}",
		"two storages":   "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\notp {\nsender log\n}\nstorage file:///tmp/x\nfiles_dir /tmp/y",
		"short lease":    "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\ntimeout 10s\n}\notp {\nsender log\n}\noutbox {\nlease 15s\n}",
		"small budget":   "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\notp {\nsender log\n}\nupload_budget 10MiB 1h",
	} {
		t.Run(name, func(t *testing.T) {
			out, err := adapt(t, "{\n admin off\n}\n:0 {\nmessenger {\n"+block+"\n}\n}")
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			if err := validateJSON(out); err == nil {
				t.Error("validated")
			}
		})
	}
}

// TestValidateRefusesNegativeConnections: JSON configs do not pass through the Caddyfile's
// checks; Validate refuses a negative pool size.
func TestValidateRefusesNegativeConnections(t *testing.T) {
	t.Chdir(t.TempDir())
	out, err := adapt(t, "{\n admin off\n}\n:0 {\nmessenger {\ndatabase \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\notp {\nsender log\n}\n}\n}")
	if err != nil {
		t.Fatal(err)
	}
	if err := validateJSON(out); err != nil {
		t.Fatalf("the valid config: %v", err)
	}
	bad := strings.Replace(string(out), `"database":`, `"max_db_connections":-1,"database":`, 1)
	if bad == string(out) {
		t.Fatalf("no database field in %s", out)
	}
	if err := validateJSON([]byte(bad)); err == nil || !strings.Contains(err.Error(), "max_db_connections") {
		t.Errorf("max_db_connections -1 validated: %v", err)
	}
}

func TestAuthenticatorCaddyfile(t *testing.T) {
	t.Chdir(t.TempDir())
	var h caddymodule.Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("messenger {\n authenticator caddy_identity {http.auth.user.id}\n}")); err != nil {
		t.Fatal(err)
	}
	if got := string(h.AuthenticatorRaw); got != `{"method":"caddy_identity","phone":"{http.auth.user.id}"}` {
		t.Fatalf("authenticator %s", got)
	}
	h = caddymodule.Handler{}
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("messenger {\n authenticator phone_otp\n}")); err != nil || string(h.AuthenticatorRaw) != `{"method":"phone_otp"}` {
		t.Fatalf("phone_otp: %s %v", h.AuthenticatorRaw, err)
	}
	// Identity login needs no code sender; a value that is not a placeholder is refused.
	base := "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\n"
	for _, tc := range []struct {
		name, line string
		valid      bool
	}{
		{"identity from a placeholder", "authenticator caddy_identity {http.auth.user.id}", true},
		{"identity a fixed number", "authenticator caddy_identity 919812345678", false},
		{"phone_otp without a sender", "authenticator phone_otp", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := adapt(t, "{\n admin off\n}\n:0 {\nmessenger {\n"+base+tc.line+"\n}\n}")
			if err != nil {
				t.Fatal(err)
			}
			if err := validateJSON(out); (err == nil) != tc.valid {
				t.Errorf("validate error %v, want valid=%v", err, tc.valid)
			}
		})
	}
}

// validateJSON provisions a config, as caddy validate does. A storage it sets up (the
// default is ./data) goes to a temporary working directory.
func validateJSON(out []byte) error {
	var cfg caddy.Config
	if err := json.Unmarshal(out, &cfg); err != nil {
		return err
	}
	return caddy.Validate(&cfg)
}

package caddymodule_test

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/caddymodule"
	"github.com/caddy-messenger/messenger/otpsender/smstest"
)

// TestSMSFailoverLogin: with `failover { twilio; vonage }` and Twilio down, a login's code
// goes out through Vonage, in the app's own text, and logs the user in; every attempt is
// counted. With both down, the login answers TEMPFAIL.
func TestSMSFailoverLogin(t *testing.T) {
	const account = "AC0123456789abcdef0123456789abcdef"
	twilio := smstest.NewTwilio(t, account, account, "twilio-token")
	twilio.Close() // down: nothing listens there any more
	vonage := smstest.NewVonage(t, "abcd1234", "vonage-secret")
	t.Setenv("E2E_TWILIO_TOKEN", "twilio-token")
	t.Setenv("E2E_VONAGE_SECRET", "vonage-secret")
	e := startEnv(t, options{extra: roomy,
		sender: fmt.Sprintf(`sender failover {
				twilio {
					account_sid %s
					auth_token  {env.E2E_TWILIO_TOKEN}
					from        +15005550006
					endpoint    %s
				}
				vonage {
					api_key    abcd1234
					api_secret {env.E2E_VONAGE_SECRET}
					from       Messenger
					endpoint   %s
				}
			}`, account, twilio.URL, vonage.URL),
		otp: `message com.example.app "{code} is your {app} code, valid {minutes} minutes"`,
	})

	fields := map[string]any{"op": "login", "phone": "+91 98123 57101", "appid": "com.example.app"}
	expectOK(t, e.call(form, fields), "login")
	sent := vonage.Sent()
	if len(sent) != 1 || sent[0].To != "919812357101" || sent[0].From != "Messenger" || sent[0].Fields["ttl"] != "300000" {
		t.Fatalf("vonage sent %+v", sent)
	}
	code := regexp.MustCompile(`^([0-9]{6}) is your com\.example\.app code, valid 5 minutes$`).FindStringSubmatch(sent[0].Text)
	if code == nil {
		t.Fatalf("text %q is not the app's template", sent[0].Text)
	}
	fields["otp"] = code[1]
	a := e.call(form, fields)
	expectOK(t, a, "login")
	if a.str("token") == "" || e.count("SELECT COUNT(*) FROM users WHERE phone = ?", "919812357101") != 1 {
		t.Fatalf("the code did not log in: %s", a.raw)
	}
	if e.hook.count() != 0 {
		t.Fatal("the webhook was used")
	}
	for name, want := range map[string]float64{
		`caddy_messenger_otp_deliveries_total{outcome="error",sender="twilio"}`:   3, // unreachable: every retry made
		`caddy_messenger_otp_deliveries_total{outcome="ok",sender="vonage"}`:      1,
		`caddy_messenger_otp_delivery_duration_seconds_count{sender="twilio"}`:    3,
		`caddy_messenger_otp_total{event="sent"}`:                                 1,
		`caddy_messenger_otp_deliveries_total{outcome="refused",sender="vonage"}`: -1,
	} {
		if got := metric(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	vonage.FailAll(smstest.Failure{Status: 500})
	expectFail(t, e.call(form, map[string]any{"op": "login", "phone": "+91 98123 57102", "appid": "com.example.app"}), "TEMPFAIL")
	if got := metric(t, `caddy_messenger_otp_deliveries_total{outcome="error",sender="vonage"}`); got != 1 {
		t.Errorf("vonage's 500 counted %v times, want 1 (not retried: it may have sent)", got)
	}
}

// TestOTPMessageCaddyfile: `message` sets the template of every app or of one; a template
// without the code, or with the client's app id in the shared one, is refused at load.
func TestOTPMessageCaddyfile(t *testing.T) {
	var h caddymodule.Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`messenger {
		otp {
			message "Code {code}, {minutes} min"
			message com.example.app "{app}: {code}"
		}
	}`))
	if err != nil || len(h.OTP.Message) != 2 || h.OTP.Message["*"] != "Code {code}, {minutes} min" || h.OTP.Message["com.example.app"] != "{app}: {code}" {
		t.Fatalf("%v %v", h.OTP.Message, err)
	}
	if err := (&caddymodule.Handler{}).UnmarshalCaddyfile(caddyfile.NewTestDispenser("messenger {\n otp {\n message a b c\n }\n}")); err == nil {
		t.Error("message with three arguments accepted")
	}
	base := "database \"a:b@tcp(127.0.0.1:1)/c\"\nredis redis://127.0.0.1:1\nmesibo {\napp_token x\n}\notp {\nsender log\n"
	for tmpl, valid := range map[string]bool{
		`"{code} in {minutes} min"`: true,
		`"no code"`:                 false,
		`"{code} for {app}"`:        false,
		`com.x "{code} for {app}"`:  true,
	} {
		t.Run(tmpl, func(t *testing.T) {
			out, err := adapt(t, "{\n admin off\n}\n:0 {\nmessenger {\n"+base+"message "+tmpl+"\n}\n}\n}")
			if err != nil {
				t.Fatal(err)
			}
			if err := validateJSON(out); (err == nil) != valid {
				t.Errorf("validate error %v, want valid=%v", err, valid)
			}
		})
	}
}

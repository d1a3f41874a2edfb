package otpsender

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// adaptSender adapts a `sender` line's module and block as the otp block does, to the
// JSON of the sender.
func adaptSender(src string) (string, error) {
	d := caddyfile.NewTestDispenser(src)
	d.Next()
	name := d.Val()
	mod, err := caddyfile.UnmarshalModule(d, "messenger.otp_senders."+name)
	if err != nil {
		return "", err
	}
	return string(caddyconfig.JSONModuleObject(mod, "sender", name, nil)), nil
}

// TestSendersCaddyfile: each sender's Caddyfile block, in, and its JSON, out.
func TestSendersCaddyfile(t *testing.T) {
	for _, c := range []struct{ name, caddyfile, json string }{{
		"twilio with an auth token",
		`twilio {
			account_sid {env.TWILIO_ACCOUNT_SID}
			auth_token  {env.TWILIO_AUTH_TOKEN}
			from        +15005550006
			timeout     3s
			retries     1
		}`,
		`{"account_sid":"{env.TWILIO_ACCOUNT_SID}","auth_token":"{env.TWILIO_AUTH_TOKEN}","from":"+15005550006","retries":1,"sender":"twilio","timeout":3000000000}`,
	}, {
		"twilio with an API key and a regional endpoint",
		`twilio {
			account_sid AC0123
			api_key     {env.TWILIO_API_KEY}
			api_secret  {env.TWILIO_API_SECRET}
			from        MG0123456789abcdef0123456789abcdef
			endpoint    https://api.dublin.ie1.twilio.com
		}`,
		`{"account_sid":"AC0123","api_key":"{env.TWILIO_API_KEY}","api_secret":"{env.TWILIO_API_SECRET}","endpoint":"https://api.dublin.ie1.twilio.com","from":"MG0123456789abcdef0123456789abcdef","sender":"twilio"}`,
	}, {
		"vonage",
		`vonage {
			api_key    {env.VONAGE_API_KEY}
			api_secret {env.VONAGE_API_SECRET}
			from       Messenger
		}`,
		`{"api_key":"{env.VONAGE_API_KEY}","api_secret":"{env.VONAGE_API_SECRET}","from":"Messenger","sender":"vonage"}`,
	}, {
		"messagebird with no retries",
		`messagebird {
			access_key {env.MESSAGEBIRD_ACCESS_KEY}
			from       Messenger
			retries    0
		}`,
		`{"access_key":"{env.MESSAGEBIRD_ACCESS_KEY}","from":"Messenger","retries":0,"sender":"messagebird"}`,
	}, {
		"aws_sns with the default credentials",
		`aws_sns {
			region    eu-west-1
			sender_id Messenger
		}`,
		`{"region":"eu-west-1","sender":"aws_sns","sender_id":"Messenger"}`,
	}, {
		"aws_sns with keys and an endpoint",
		`aws_sns {
			access_key_id      {env.SNS_KEY_ID}
			secret_access_key  {env.SNS_SECRET}
			session_token      {env.SNS_TOKEN}
			origination_number +12065550100
			endpoint           https://sns.eu-west-1.amazonaws.com
		}`,
		`{"access_key_id":"{env.SNS_KEY_ID}","endpoint":"https://sns.eu-west-1.amazonaws.com","origination_number":"+12065550100","secret_access_key":"{env.SNS_SECRET}","sender":"aws_sns","session_token":"{env.SNS_TOKEN}"}`,
	}, {
		"failover over three senders",
		`failover {
			twilio {
				account_sid AC0123
				auth_token  {env.TWILIO_AUTH_TOKEN}
				from        +15005550006
			}
			vonage {
				api_key    k
				api_secret {env.VONAGE_API_SECRET}
				from       Messenger
			}
			webhook https://sms.example/send {
				secret {env.HOOK_SECRET}
			}
		}`,
		`{"sender":"failover","senders":[` +
			`{"account_sid":"AC0123","auth_token":"{env.TWILIO_AUTH_TOKEN}","from":"+15005550006","sender":"twilio"},` +
			`{"api_key":"k","api_secret":"{env.VONAGE_API_SECRET}","from":"Messenger","sender":"vonage"},` +
			`{"secret":"{env.HOOK_SECRET}","sender":"webhook","url":"https://sms.example/send"}]}`,
	}} {
		t.Run(c.name, func(t *testing.T) {
			got, err := adaptSender(c.caddyfile)
			if err != nil {
				t.Error(err)
			} else if got != c.json {
				t.Errorf("got  %s\nwant %s", got, c.json)
			}
		})
	}
}

func TestSendersCaddyfileErrors(t *testing.T) {
	for _, src := range []string{
		"twilio extra",
		"twilio {\n bogus x\n}",
		"twilio {\n from\n}",
		"vonage {\n api_key a b\n}",
		"messagebird {\n timeout soon\n}",
		"messagebird {\n timeout -1s\n}",
		"aws_sns {\n retries -1\n}",
		"failover",
		"failover {\n carrier_pigeon\n}",
		"failover {\n twilio {\n bogus\n }\n}",
		"failover extra {\n log\n}",
	} {
		if _, err := adaptSender(src); err == nil {
			t.Errorf("accepted %q", strings.ReplaceAll(src, "\n", " "))
		}
	}
}

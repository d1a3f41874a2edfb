package otpsender

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-messenger/messenger/otp"
	"github.com/caddy-messenger/messenger/otpsender/smstest"
)

// provisioned provisions and validates m in a Caddy context of its own, whose metrics
// registry it returns.
func provisioned(t *testing.T, m caddy.Provisioner) *prometheus.Registry {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := m.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if v, ok := m.(caddy.Validator); ok {
		if err := v.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	return ctx.GetMetricsRegistry()
}

// deliveries renders the delivery attempts of sender counted in reg as "outcome=n ...",
// outcomes sorted.
func deliveries(reg *prometheus.Registry, sender string) string {
	families, err := reg.Gather()
	if err != nil {
		return err.Error()
	}
	counts := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "caddy_messenger_otp_deliveries_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["sender"] == sender {
				counts[labels["outcome"]] = m.GetCounter().GetValue()
			}
		}
	}
	var out []string
	for _, outcome := range slices.Sorted(maps.Keys(counts)) {
		out = append(out, fmt.Sprintf("%s=%v", outcome, counts[outcome]))
	}
	return strings.Join(out, " ")
}

// gateway is one SMS provider under test: its fake, a sender of it, and what the fake
// must see.
type gateway struct {
	name string
	// start starts the fake, which takes the credential "right-secret", and a sender with
	// g (its endpoint the fake's, unless set) and the credential secret.
	start func(t *testing.T, g Gateway, secret string) (*smstest.Server, otp.Sender, *prometheus.Registry)
	// want is the message the fake must get for delivery.
	want smstest.Message
	// refusal, throttled: failures of the provider's kinds.
	refusal, throttled smstest.Failure
}

// delivery is the code the tests deliver.
var delivery = otp.Delivery{Phone: "919812345678", Code: "482913", AppID: "com.example.app",
	Text: "482913 is your code", TTL: 5 * time.Minute}

const right = "right-secret"

var gateways = []gateway{{
	name: "twilio",
	start: func(t *testing.T, g Gateway, secret string) (*smstest.Server, otp.Sender, *prometheus.Registry) {
		const account = "AC0123456789abcdef0123456789abcdef"
		fake := smstest.NewTwilio(t, account, account, right)
		t.Setenv("TWILIO_AUTH_TOKEN", secret)
		g.Endpoint = cmp.Or(g.Endpoint, fake.URL)
		s := &Twilio{AccountSID: account, AuthToken: "{env.TWILIO_AUTH_TOKEN}", From: "+15005550006", Gateway: g}
		return fake, s, provisioned(t, s)
	},
	want: smstest.Message{To: "+919812345678", From: "+15005550006", Text: "482913 is your code",
		Fields: map[string]string{"ValidityPeriod": "300"}},
	refusal:   smstest.Failure{Status: 400, Code: "21211"},
	throttled: smstest.Failure{Status: 429},
}, {
	name: "vonage",
	start: func(t *testing.T, g Gateway, secret string) (*smstest.Server, otp.Sender, *prometheus.Registry) {
		fake := smstest.NewVonage(t, "abcd1234", right)
		t.Setenv("VONAGE_API_SECRET", secret)
		g.Endpoint = cmp.Or(g.Endpoint, fake.URL)
		s := &Vonage{APIKey: "abcd1234", APISecret: "{env.VONAGE_API_SECRET}", From: "Messenger", Gateway: g}
		return fake, s, provisioned(t, s)
	},
	// Vonage takes numbers without '+'.
	want: smstest.Message{To: "919812345678", From: "Messenger", Text: "482913 is your code",
		Fields: map[string]string{"ttl": "300000"}},
	refusal:   smstest.Failure{Status: 200, Code: "6"},
	throttled: smstest.Failure{Status: 200, Code: "1"},
}, {
	name: "messagebird",
	start: func(t *testing.T, g Gateway, secret string) (*smstest.Server, otp.Sender, *prometheus.Registry) {
		fake := smstest.NewMessageBird(t, right)
		t.Setenv("MESSAGEBIRD_ACCESS_KEY", secret)
		g.Endpoint = cmp.Or(g.Endpoint, fake.URL)
		s := &MessageBird{AccessKey: "{env.MESSAGEBIRD_ACCESS_KEY}", From: "Messenger", Gateway: g}
		return fake, s, provisioned(t, s)
	},
	want: smstest.Message{To: "+919812345678", From: "Messenger", Text: "482913 is your code",
		Fields: map[string]string{"datacoding": "auto", "validity": "300"}},
	refusal:   smstest.Failure{Status: 422, Code: "9"},
	throttled: smstest.Failure{Status: 429},
}, {
	name: "aws_sns",
	start: func(t *testing.T, g Gateway, secret string) (*smstest.Server, otp.Sender, *prometheus.Registry) {
		fake := smstest.NewSNS(t, "eu-west-1", "AKIDEXAMPLE", right)
		t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
		g.Endpoint = cmp.Or(g.Endpoint, fake.URL)
		s := &SNS{Region: "eu-west-1", AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "{env.AWS_SECRET_ACCESS_KEY}",
			SenderID: "Messenger", Gateway: g}
		return fake, s, provisioned(t, s)
	},
	want: smstest.Message{To: "+919812345678", From: "Messenger", Text: "482913 is your code",
		Fields: map[string]string{"AWS.SNS.SMS.SMSType": "Transactional", "AWS.SNS.SMS.SenderID": "Messenger"}},
	refusal:   smstest.Failure{Status: 400, Code: "InvalidParameter"},
	throttled: smstest.Failure{Status: 429, Code: "Throttled"},
}}

// forEachGateway runs test for every provider.
func forEachGateway(t *testing.T, test func(t *testing.T, gw gateway)) {
	for _, gw := range gateways {
		t.Run(gw.name, func(t *testing.T) { test(t, gw) })
	}
}

// checkFailure fails the test unless err is a failure that carries neither the code nor
// a secret.
func checkFailure(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("delivered")
	}
	for _, secret := range []string{delivery.Code, right, "wrong-secret"} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("the error %q carries %q", err, secret)
		}
	}
}

func TestGatewayDelivers(t *testing.T) {
	forEachGateway(t, func(t *testing.T, gw gateway) {
		fake, s, reg := gw.start(t, Gateway{}, right)
		if err := s.SendOTP(context.Background(), delivery); err != nil {
			t.Fatal(err)
		}
		sent := fake.Sent()
		if len(sent) != 1 || fmt.Sprint(sent[0]) != fmt.Sprint(gw.want) {
			t.Fatalf("sent %+v\nwant %+v", sent, gw.want)
		}
		if got := deliveries(reg, gw.name); got != "ok=1" {
			t.Fatalf("deliveries %s", got)
		}
	})
}

// TestGatewayRefusalIsFinal: a wrong credential and a refused message are not retried.
func TestGatewayRefusalIsFinal(t *testing.T) {
	forEachGateway(t, func(t *testing.T, gw gateway) {
		fake, s, reg := gw.start(t, Gateway{}, "wrong-secret")
		checkFailure(t, s.SendOTP(context.Background(), delivery))
		fake, s, reg2 := gw.start(t, Gateway{}, right)
		fake.FailNext(1, gw.refusal)
		checkFailure(t, s.SendOTP(context.Background(), delivery))
		if fake.Attempts() != 1 || len(fake.Sent()) != 0 {
			t.Fatalf("attempts %d, sent %d: want one refused attempt", fake.Attempts(), len(fake.Sent()))
		}
		if got := deliveries(reg, gw.name) + " / " + deliveries(reg2, gw.name); got != "refused=1 / refused=1" {
			t.Fatalf("deliveries %s", got)
		}
	})
}

// TestGatewayRetriesWhatWasNotTaken: throttled and unavailable answers are retried, and
// the third attempt delivers.
func TestGatewayRetriesWhatWasNotTaken(t *testing.T) {
	forEachGateway(t, func(t *testing.T, gw gateway) {
		fake, s, reg := gw.start(t, Gateway{}, right)
		fake.FailNext(1, gw.throttled)
		fake.FailNext(1, smstest.Failure{Status: 503})
		if err := s.SendOTP(context.Background(), delivery); err != nil {
			t.Fatal(err)
		}
		if fake.Attempts() != 3 || len(fake.Sent()) != 1 {
			t.Fatalf("attempts %d, sent %d", fake.Attempts(), len(fake.Sent()))
		}
		if got := deliveries(reg, gw.name); got != "error=2 ok=1" {
			t.Fatalf("deliveries %s", got)
		}

		none := 0
		fake, s, _ = gw.start(t, Gateway{Retries: &none}, right)
		fake.FailNext(1, smstest.Failure{Status: 503})
		checkFailure(t, s.SendOTP(context.Background(), delivery))
		if fake.Attempts() != 1 {
			t.Fatalf("retries 0: %d attempts", fake.Attempts())
		}
	})
}

// TestGatewayDoesNotRepeatWhatMayHaveBeenSent: a 500 and a timeout may come after the
// provider took the message; sending again could deliver the code twice.
func TestGatewayDoesNotRepeatWhatMayHaveBeenSent(t *testing.T) {
	forEachGateway(t, func(t *testing.T, gw gateway) {
		fake, s, reg := gw.start(t, Gateway{Timeout: caddy.Duration(300 * time.Millisecond)}, right)
		fake.FailNext(1, smstest.Failure{Status: 500})
		checkFailure(t, s.SendOTP(context.Background(), delivery))
		fake.FailNext(1, smstest.Failure{Hang: true})
		start := time.Now()
		checkFailure(t, s.SendOTP(context.Background(), delivery))
		if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
			t.Fatalf("a hanging provider took %s, want the timeout", took)
		}
		if fake.Attempts() != 2 {
			t.Fatalf("attempts %d, want 2 (no retry)", fake.Attempts())
		}
		if got := deliveries(reg, gw.name); got != "error=2" {
			t.Fatalf("deliveries %s", got)
		}
	})
}

// TestGatewayRetriesUnreachable: a provider that cannot be reached got nothing, so every
// attempt is made.
func TestGatewayRetriesUnreachable(t *testing.T) {
	closed := httptest.NewServer(nil)
	closed.Close()
	forEachGateway(t, func(t *testing.T, gw gateway) {
		_, s, reg := gw.start(t, Gateway{Endpoint: closed.URL}, right)
		err := s.SendOTP(context.Background(), delivery)
		checkFailure(t, err)
		if !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("error %q", err)
		}
		if got := deliveries(reg, gw.name); got != "error=3" {
			t.Fatalf("deliveries %s", got)
		}
	})
}

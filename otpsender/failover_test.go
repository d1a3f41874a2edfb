package otpsender

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-messenger/messenger/otpsender/smstest"
)

// failoverOf provisions a Failover of a Twilio sender and a Vonage sender with their fakes.
func failoverOf(t *testing.T) (*Failover, *smstest.Server, *smstest.Server, *prometheus.Registry) {
	const account = "AC0123456789abcdef0123456789abcdef"
	twilio := smstest.NewTwilio(t, account, account, "token")
	vonage := smstest.NewVonage(t, "abcd1234", "secret")
	f := &Failover{SendersRaw: []json.RawMessage{
		json.RawMessage(fmt.Sprintf(`{"sender":"twilio","account_sid":%q,"auth_token":"token","from":"+15005550006","endpoint":%q,"timeout":"300ms"}`, account, twilio.URL)),
		json.RawMessage(fmt.Sprintf(`{"sender":"vonage","api_key":"abcd1234","api_secret":"secret","from":"Messenger","endpoint":%q}`, vonage.URL)),
	}}
	reg := provisioned(t, f)
	return f, twilio, vonage, reg
}

// TestFailoverMovesOn: every way the first sender fails, refusals and answers that may
// follow a delivery included, ends with the second delivering.
func TestFailoverMovesOn(t *testing.T) {
	for name, fault := range map[string]smstest.Failure{
		"down":    {Status: 503},
		"refused": {Status: 401, Code: "20003"},
		"error":   {Status: 500},
		"hanging": {Hang: true},
	} {
		t.Run(name, func(t *testing.T) {
			f, twilio, vonage, reg := failoverOf(t)
			twilio.FailAll(fault)
			if err := f.SendOTP(context.Background(), delivery); err != nil {
				t.Fatal(err)
			}
			if len(twilio.Sent()) != 0 || len(vonage.Sent()) != 1 || vonage.Sent()[0].Text != delivery.Text {
				t.Fatalf("twilio sent %v, vonage sent %v", twilio.Sent(), vonage.Sent())
			}
			want := map[string]string{"down": "error=3", "refused": "refused=1", "error": "error=1", "hanging": "error=1"}[name]
			if got := deliveries(reg, "twilio"); got != want || deliveries(reg, "vonage") != "ok=1" {
				t.Fatalf("deliveries twilio %s, vonage %s; want twilio %s", got, deliveries(reg, "vonage"), want)
			}
		})
	}
}

// TestFailoverStopsAtTheFirstDelivery: the second sender is not asked when the first
// delivers.
func TestFailoverStopsAtTheFirstDelivery(t *testing.T) {
	f, twilio, vonage, _ := failoverOf(t)
	if err := f.SendOTP(context.Background(), delivery); err != nil {
		t.Fatal(err)
	}
	if len(twilio.Sent()) != 1 || vonage.Attempts() != 0 {
		t.Fatalf("twilio sent %d, vonage asked %d times", len(twilio.Sent()), vonage.Attempts())
	}
}

// TestFailoverAllFail: the error names every sender's failure, and nothing secret.
func TestFailoverAllFail(t *testing.T) {
	f, twilio, vonage, _ := failoverOf(t)
	twilio.FailAll(smstest.Failure{Status: 400})
	vonage.FailAll(smstest.Failure{Status: 200, Code: "7"})
	err := f.SendOTP(context.Background(), delivery)
	checkFailureOf(t, err, "otp twilio: status 400")
	for _, want := range []string{"otp vonage: message status 7", "no sender delivered"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q lacks %q", err, want)
		}
	}
	for _, secret := range []string{"token", "secret"} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error %q carries %q", err, secret)
		}
	}
}

// TestFailoverStopsWhenTheRequestEnds: once the request's context is over, no further
// sender is asked.
func TestFailoverStopsWhenTheRequestEnds(t *testing.T) {
	f, twilio, vonage, _ := failoverOf(t)
	twilio.FailAll(smstest.Failure{Hang: true})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := f.SendOTP(ctx, delivery); err == nil {
		t.Fatal("delivered")
	}
	if vonage.Attempts() != 0 {
		t.Fatalf("vonage asked %d times after the request ended", vonage.Attempts())
	}
}

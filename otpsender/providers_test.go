package otpsender

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-messenger/messenger/otp"
	"github.com/caddy-messenger/messenger/otpsender/smstest"
)

// TestTwilioMessagingServiceAndAPIKey: a From that is a Messaging Service SID goes as
// MessagingServiceSid, and an API key replaces the auth token in basic auth.
func TestTwilioMessagingServiceAndAPIKey(t *testing.T) {
	const account, key, service = "AC0123456789abcdef0123456789abcdef", "SK0123456789abcdef0123456789abcdef", "MG0123456789abcdef0123456789abcdef"
	fake := smstest.NewTwilio(t, account, key, "key-secret")
	s := &Twilio{AccountSID: account, AuthToken: "unused", APIKey: key, APISecret: "key-secret", From: service,
		Gateway: Gateway{Endpoint: fake.URL}}
	provisioned(t, s)
	if err := s.SendOTP(context.Background(), otp.Delivery{Phone: "15551234567", Code: "123456"}); err != nil {
		t.Fatal(err)
	}
	if sent := fake.Sent(); len(sent) != 1 || sent[0].Fields["MessagingServiceSid"] != service || sent[0].Fields["ValidityPeriod"] != "" {
		t.Fatalf("sent %+v", sent)
	}
}

// TestVonageUnicodeAndInternalError: a text beyond ASCII goes as type unicode; Vonage's
// internal error is an error, not a refusal, and not retried.
func TestVonageUnicodeAndInternalError(t *testing.T) {
	fake := smstest.NewVonage(t, "abcd1234", "secret")
	s := &Vonage{APIKey: "abcd1234", APISecret: "secret", From: "+4915112345678", Gateway: Gateway{Endpoint: fake.URL}}
	reg := provisioned(t, s)
	d := otp.Delivery{Phone: "4915198765432", Code: "123456", Text: "Dein Code: 123456 – gültig 5 Minuten"}
	if err := s.SendOTP(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if sent := fake.Sent(); len(sent) != 1 || sent[0].Fields["type"] != "unicode" || sent[0].From != "4915112345678" || sent[0].Text != d.Text {
		t.Fatalf("sent %+v", sent)
	}
	fake.FailNext(1, smstest.Failure{Status: 200, Code: "5"})
	checkFailureOf(t, s.SendOTP(context.Background(), d), "message status 5")
	if fake.Attempts() != 2 || deliveries(reg, "vonage") != "error=1 ok=1" {
		t.Fatalf("attempts %d, deliveries %s", fake.Attempts(), deliveries(reg, "vonage"))
	}
}

// TestSNSRegionAndOriginationNumber: the region comes from the SDK's chain when unset,
// and an origination number goes as its SMS attribute.
func TestSNSRegionAndOriginationNumber(t *testing.T) {
	fake := smstest.NewSNS(t, "ap-south-1", "AKIDEXAMPLE", "secret")
	t.Setenv("AWS_REGION", "ap-south-1")
	s := &SNS{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret", OriginationNumber: "+12065550100",
		Gateway: Gateway{Endpoint: fake.URL}}
	provisioned(t, s)
	if err := s.SendOTP(context.Background(), otp.Delivery{Phone: "919812345678", Code: "123456", TTL: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if sent := fake.Sent(); len(sent) != 1 || sent[0].Fields["AWS.MM.SMS.OriginationNumber"] != "+12065550100" ||
		!strings.Contains(sent[0].Text, "123456") || !strings.Contains(sent[0].Text, "5 min.") {
		t.Fatalf("sent %+v", sent)
	}

	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := (&SNS{}).Provision(ctx); err == nil || !strings.Contains(err.Error(), "region") {
		t.Fatalf("no region: %v", err)
	}
}

// TestGatewayValidation: a sender without its credentials or its sender is refused at load.
func TestGatewayValidation(t *testing.T) {
	negative := -1
	for name, m := range map[string]interface {
		caddy.Provisioner
		caddy.Validator
	}{
		"twilio no account":    &Twilio{AuthToken: "t", From: "+1"},
		"twilio no token":      &Twilio{AccountSID: "AC1", From: "+1"},
		"twilio half a key":    &Twilio{AccountSID: "AC1", APIKey: "SK1", From: "+1"},
		"twilio no from":       &Twilio{AccountSID: "AC1", AuthToken: "t"},
		"twilio bad endpoint":  &Twilio{AccountSID: "AC1", AuthToken: "t", From: "+1", Gateway: Gateway{Endpoint: "ftp://x"}},
		"vonage no secret":     &Vonage{APIKey: "k", From: "x"},
		"vonage no from":       &Vonage{APIKey: "k", APISecret: "s"},
		"messagebird no key":   &MessageBird{From: "x"},
		"messagebird no from":  &MessageBird{AccessKey: "k"},
		"messagebird retries":  &MessageBird{AccessKey: "k", From: "x", Gateway: Gateway{Retries: &negative}},
		"sns bad endpoint":     &SNS{Region: "eu-west-1", Gateway: Gateway{Endpoint: "sns.example"}},
		"webhook relative url": &Webhook{URL: "/send"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			err := m.Provision(ctx)
			if err == nil {
				err = m.Validate()
			}
			cancel()
			if err == nil {
				t.Error("accepted")
			}
		})
	}
}

// checkFailureOf is checkFailure for an error that also says want.
func checkFailureOf(t *testing.T, err error, want string) {
	t.Helper()
	checkFailure(t, err)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

package smstest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// recorder is a testing.TB whose Errorf only records, so that a test can see a fake
// flag a breach of the protocol.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	breach []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.breach = append(r.breach, fmt.Sprintf(format, args...))
}

func (r *recorder) breaches() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.breach
}

// request is one request to a fake at base.
type request func(base string) *http.Request

func form(method, path, user, password string, fields url.Values) request {
	return func(base string) *http.Request {
		r, _ := http.NewRequest(method, base+path, strings.NewReader(fields.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" {
			r.SetBasicAuth(user, password)
		}
		return r
	}
}

func jsonPost(path, authorization, body string) request {
	return func(base string) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", authorization)
		return r
	}
}

// signed is an SNS Query request signed with SigV4 by secret.
func signed(secret string, fields url.Values) request {
	return func(base string) *http.Request {
		body := fields.Encode()
		r, _ := http.NewRequest(http.MethodPost, base+"/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		sum := sha256.Sum256([]byte(body))
		v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: secret},
			r, hex.EncodeToString(sum[:]), "sns", "eu-west-1", time.Now())
		return r
	}
}

// TestFakesCheckTheRequest: each fake accepts a request as its provider documents it,
// answers a wrong credential as its provider does, and flags every breach of the
// protocol.
func TestFakesCheckTheRequest(t *testing.T) {
	const account = "AC0123"
	twilio := url.Values{"To": {"+919812345678"}, "From": {"+15005550006"}, "Body": {"code 123456"}}
	vonage := url.Values{"api_key": {"k"}, "api_secret": {"s"}, "from": {"Messenger"}, "to": {"919812345678"}, "text": {"code 123456"}}
	sns := url.Values{"Action": {"Publish"}, "Version": {"2010-03-31"}, "PhoneNumber": {"+919812345678"}, "Message": {"code 123456"},
		"MessageAttributes.entry.1.Name": {"AWS.SNS.SMS.SMSType"}, "MessageAttributes.entry.1.Value.DataType": {"String"},
		"MessageAttributes.entry.1.Value.StringValue": {"Transactional"}}
	with := func(v url.Values, key, value string) url.Values {
		c := url.Values{}
		for k, vs := range v {
			c[k] = vs
		}
		if value == "" {
			c.Del(key)
		} else {
			c.Set(key, value)
		}
		return c
	}
	const bird = `{"recipients":["+919812345678"],"originator":"Messenger","body":"code 123456","datacoding":"auto","validity":300}`
	for _, c := range []struct {
		name   string
		start  func(t testing.TB) *Server
		req    request
		status int // 0: a breach, flagged
	}{
		{"twilio", twilioFake, form("POST", "/2010-04-01/Accounts/"+account+"/Messages.json", account, "token", twilio), 201},
		{"twilio wrong token", twilioFake, form("POST", "/2010-04-01/Accounts/"+account+"/Messages.json", account, "nope", twilio), 401},
		{"twilio GET", twilioFake, form("GET", "/2010-04-01/Accounts/"+account+"/Messages.json", account, "token", twilio), 0},
		{"twilio other account", twilioFake, form("POST", "/2010-04-01/Accounts/AC9/Messages.json", account, "token", twilio), 0},
		{"twilio number without +", twilioFake, form("POST", "/2010-04-01/Accounts/"+account+"/Messages.json", account, "token", with(twilio, "To", "919812345678")), 0},
		{"twilio no sender", twilioFake, form("POST", "/2010-04-01/Accounts/"+account+"/Messages.json", account, "token", with(twilio, "From", "")), 0},
		{"twilio unknown field", twilioFake, form("POST", "/2010-04-01/Accounts/"+account+"/Messages.json", account, "token", with(twilio, "Bogus", "1")), 0},
		{"twilio validity too long", twilioFake, form("POST", "/2010-04-01/Accounts/"+account+"/Messages.json", account, "token", with(twilio, "ValidityPeriod", "36001")), 0},
		{"vonage", vonageFake, form("POST", "/sms/json", "", "", vonage), 200},
		{"vonage number with +", vonageFake, form("POST", "/sms/json", "", "", with(vonage, "to", "+919812345678")), 0},
		{"vonage unicode as text", vonageFake, form("POST", "/sms/json", "", "", with(vonage, "text", "Code 123456 – gültig")), 0},
		{"vonage short ttl", vonageFake, form("POST", "/sms/json", "", "", with(vonage, "ttl", "1000")), 0},
		{"vonage JSON", vonageFake, jsonPost("/sms/json", "", `{"api_key":"k"}`), 0},
		{"messagebird", birdFake, jsonPost("/messages", "AccessKey key", bird), 201},
		{"messagebird wrong key", birdFake, jsonPost("/messages", "AccessKey nope", bird), 401},
		{"messagebird bearer", birdFake, jsonPost("/messages", "Bearer key", bird), 401},
		{"messagebird number without +", birdFake, jsonPost("/messages", "AccessKey key", strings.Replace(bird, `"+919812345678"`, `"919812345678"`, 1)), 0},
		{"messagebird unknown field", birdFake, jsonPost("/messages", "AccessKey key", strings.Replace(bird, `"validity"`, `"bogus"`, 1)), 0},
		{"messagebird long originator", birdFake, jsonPost("/messages", "AccessKey key", strings.Replace(bird, `"Messenger"`, `"MessengerApp1"`, 1)), 0},
		{"sns", snsFake, signed("secret", sns), 200},
		{"sns wrong secret", snsFake, signed("nope", sns), 403},
		{"sns unsigned", snsFake, form("POST", "/", "", "", sns), 0},
		{"sns number without +", snsFake, signed("secret", with(sns, "PhoneNumber", "919812345678")), 0},
		{"sns to a topic", snsFake, signed("secret", with(sns, "TopicArn", "arn:aws:sns:eu-west-1:1:t")), 0},
		{"sns unknown attribute", snsFake, signed("secret", with(sns, "MessageAttributes.entry.1.Name", "AWS.SNS.SMS.Bogus")), 0},
		{"sns other action", snsFake, signed("secret", with(sns, "Action", "CreateTopic")), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			fake := c.start(rec)
			resp, err := http.DefaultClient.Do(c.req(fake.URL))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			breaches := rec.breaches()
			switch {
			case c.status == 0 && len(breaches) == 0:
				t.Fatalf("not flagged (status %d)", resp.StatusCode)
			case c.status != 0 && (len(breaches) > 0 || resp.StatusCode != c.status):
				t.Fatalf("status %d, want %d; breaches %q", resp.StatusCode, c.status, breaches)
			case c.status/100 == 2 && len(fake.Sent()) != 1:
				t.Fatalf("accepted but not recorded: %v", fake.Sent())
			}
		})
	}
}

func twilioFake(t testing.TB) *Server { return NewTwilio(t, "AC0123", "AC0123", "token") }
func vonageFake(t testing.TB) *Server { return NewVonage(t, "k", "s") }
func birdFake(t testing.TB) *Server   { return NewMessageBird(t, "key") }
func snsFake(t testing.TB) *Server    { return NewSNS(t, "eu-west-1", "AKID", "secret") }

package smstest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// NewSNS starts a fake of Amazon SNS in region for the credentials accessKeyID and
// secretAccessKey.
//
// It follows the SNS API reference for Publish (https://docs.aws.amazon.com/sns/latest/api/API_Publish.html)
// in the Query protocol (https://docs.aws.amazon.com/sns/latest/api/CommonParameters.html):
// POST / with form fields Action=Publish, Version=2010-03-31, PhoneNumber (E.164), Message
// and MessageAttributes.entry.N.{Name,Value.DataType,Value.StringValue} holding the SMS
// attributes of "Publishing SMS messages to a mobile phone"
// (https://docs.aws.amazon.com/sns/latest/dg/sms_publish-to-phone.html); signed with
// Signature Version 4 (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html),
// which the fake verifies by signing the request again with the secret; answered 200
// with an XML PublishResponse, errors as an XML ErrorResponse
// (https://docs.aws.amazon.com/sns/latest/api/CommonErrors.html): 403
// InvalidClientTokenId for an unknown key, SignatureDoesNotMatch for a wrong signature.
func NewSNS(t testing.TB, region, accessKeyID, secretAccessKey string) *Server {
	authorization := regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/]+)/([0-9]{8})/([^/]+)/sns/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$`)
	attributes := map[string]bool{
		"AWS.SNS.SMS.SMSType": true, "AWS.SNS.SMS.SenderID": true, "AWS.MM.SMS.OriginationNumber": true,
		"AWS.SNS.SMS.MaxPrice": true, "AWS.MM.SMS.EntityId": true, "AWS.MM.SMS.TemplateId": true,
	}
	check := func(r *http.Request, body []byte) (Message, *Failure, error) {
		if r.Method != http.MethodPost || r.URL.Path != "/" {
			return Message{}, nil, fmt.Errorf("want POST /")
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
			return Message{}, nil, fmt.Errorf("content type %q", r.Header.Get("Content-Type"))
		}
		auth := authorization.FindStringSubmatch(r.Header.Get("Authorization"))
		if auth == nil {
			return Message{}, nil, fmt.Errorf("authorization %q is not SigV4 for sns", r.Header.Get("Authorization"))
		}
		signedAt, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
		if err != nil || signedAt.Format("20060102") != auth[2] {
			return Message{}, nil, fmt.Errorf("X-Amz-Date %q does not match the credential scope", r.Header.Get("X-Amz-Date"))
		}
		if auth[3] != region {
			return Message{}, nil, fmt.Errorf("signed for region %s, want %s", auth[3], region)
		}
		if auth[1] != accessKeyID {
			return Message{}, &Failure{Status: http.StatusForbidden, Code: "InvalidClientTokenId"}, nil
		}
		creds := aws.Credentials{AccessKeyID: accessKeyID, SecretAccessKey: secretAccessKey}
		if !signatureMatches(r, body, auth[4], auth[5], creds, region, signedAt) {
			return Message{}, &Failure{Status: http.StatusForbidden, Code: "SignatureDoesNotMatch"}, nil
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return Message{}, nil, err
		}
		m := Message{Fields: map[string]string{}}
		entries := map[string]map[string]string{}
		for name, values := range form {
			if len(values) != 1 {
				return Message{}, nil, fmt.Errorf("field %q given %d times", name, len(values))
			}
			entry, part, isAttribute := strings.Cut(strings.TrimPrefix(name, "MessageAttributes.entry."), ".")
			if isAttribute && strings.HasPrefix(name, "MessageAttributes.entry.") {
				if entries[entry] == nil {
					entries[entry] = map[string]string{}
				}
				entries[entry][part] = values[0]
				continue
			}
			switch name {
			case "Action", "Version", "PhoneNumber", "Message":
			default:
				return Message{}, nil, fmt.Errorf("unknown field %q (publishing to a phone, there is no topic or target)", name)
			}
		}
		if form.Get("Action") != "Publish" || form.Get("Version") != "2010-03-31" {
			return Message{}, nil, fmt.Errorf("Action %q Version %q: want Publish 2010-03-31", form.Get("Action"), form.Get("Version"))
		}
		if m.To = form.Get("PhoneNumber"); !e164.MatchString(m.To) {
			return Message{}, nil, fmt.Errorf("PhoneNumber %q is not E.164", m.To)
		}
		if m.Text = form.Get("Message"); m.Text == "" {
			return Message{}, nil, fmt.Errorf("Message missing")
		}
		for _, e := range entries {
			if len(e) != 3 || !attributes[e["Name"]] || e["Value.DataType"] != "String" || e["Value.StringValue"] == "" {
				return Message{}, nil, fmt.Errorf("message attribute %v: want a documented SMS attribute as Name, Value.DataType String, Value.StringValue", e)
			}
			m.Fields[e["Name"]] = e["Value.StringValue"]
		}
		m.From = m.Fields["AWS.SNS.SMS.SenderID"] + m.Fields["AWS.MM.SMS.OriginationNumber"]
		return m, nil, nil
	}
	accept := func(w http.ResponseWriter, m Message) {
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult><MessageId>%s</MessageId></PublishResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></PublishResponse>`,
			randomHex(16), randomHex(16))
	}
	refuse := func(w http.ResponseWriter, f Failure) {
		code, kind := f.Code, "Sender"
		if code == "" {
			code = map[int]string{400: "InvalidParameter", 403: "AuthorizationError", 429: "Throttled", 500: "InternalError", 503: "ServiceUnavailable"}[f.Status]
		}
		if f.Status >= 500 {
			kind = "Receiver"
		}
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, `<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>%s</Type><Code>%s</Code><Message>The request failed</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
			kind, xmlEscape(code), randomHex(16))
	}
	return newServer(t, "aws_sns", check, accept, refuse)
}

// signatureMatches signs again, with creds, the headers that r says it signed, and
// compares the signature with r's.
func signatureMatches(r *http.Request, body []byte, signedHeaders, signature string, creds aws.Credentials, region string, signedAt time.Time) bool {
	again, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return false
	}
	for _, name := range strings.Split(signedHeaders, ";") {
		if name != "host" && name != "content-length" {
			again.Header[http.CanonicalHeaderKey(name)] = r.Header.Values(name)
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, again, hex.EncodeToString(sum[:]), "sns", region, signedAt); err != nil {
		return false
	}
	_, resigned, _ := strings.Cut(again.Header.Get("Authorization"), "Signature=")
	return resigned == signature
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

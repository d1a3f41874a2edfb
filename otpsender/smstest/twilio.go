package smstest

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"testing"
)

// NewTwilio starts a fake of the Messages resource of Twilio account accountSID, which
// takes basic auth as user and password: the account SID and its auth token, or an API
// key's SID and secret.
//
// It follows Twilio's "Message resource" page, section "Create a Message resource"
// (https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource):
// POST /2010-04-01/Accounts/{AccountSid}/Messages.json, form fields To (E.164), Body,
// From or MessagingServiceSid, ValidityPeriod (1 to 36000 seconds), answered 201 with the
// Message as JSON; and its error answers (https://www.twilio.com/docs/usage/twilios-response),
// JSON {code, message, more_info, status}: 20003 for a wrong credential.
func NewTwilio(t testing.TB, accountSID, user, password string) *Server {
	path := "/2010-04-01/Accounts/" + accountSID + "/Messages.json"
	check := func(r *http.Request, body []byte) (Message, *Failure, error) {
		if r.Method != http.MethodPost || r.URL.Path != path {
			return Message{}, nil, fmt.Errorf("want POST %s", path)
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
			return Message{}, nil, fmt.Errorf("content type %q", r.Header.Get("Content-Type"))
		}
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			return Message{}, &Failure{Status: http.StatusUnauthorized, Code: "20003"}, nil
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return Message{}, nil, err
		}
		if err := onlyFields(form, []string{"To", "Body"}, "From", "MessagingServiceSid", "ValidityPeriod"); err != nil {
			return Message{}, nil, err
		}
		if !e164.MatchString(form.Get("To")) {
			return Message{}, nil, fmt.Errorf("To %q is not E.164", form.Get("To"))
		}
		if (form.Get("From") == "") == (form.Get("MessagingServiceSid") == "") {
			return Message{}, nil, errors.New("want exactly one of From and MessagingServiceSid")
		}
		m := Message{To: form.Get("To"), From: form.Get("From") + form.Get("MessagingServiceSid"), Text: form.Get("Body"),
			Fields: map[string]string{}}
		if v := form.Get("ValidityPeriod"); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 36000 {
				return Message{}, nil, fmt.Errorf("ValidityPeriod %q is not 1 to 36000", v)
			}
			m.Fields["ValidityPeriod"] = v
		}
		if form.Get("MessagingServiceSid") != "" {
			m.Fields["MessagingServiceSid"] = form.Get("MessagingServiceSid")
		}
		return m, nil, nil
	}
	accept := func(w http.ResponseWriter, m Message) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{
			"sid": "SM" + randomHex(16), "account_sid": accountSID, "to": m.To, "from": m.From, "body": m.Text,
			"status": "queued", "num_segments": "1", "direction": "outbound-api", "api_version": "2010-04-01",
			"error_code": nil, "error_message": nil, "uri": path,
		})
	}
	refuse := func(w http.ResponseWriter, f Failure) {
		code := f.Code
		if code == "" {
			code = map[int]string{400: "21211", 429: "20429", 500: "20500", 503: "20503"}[f.Status]
		}
		n, _ := strconv.Atoi(code)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		json.NewEncoder(w).Encode(map[string]any{
			"code": n, "message": "The request failed", "more_info": "https://www.twilio.com/docs/errors/" + code, "status": f.Status,
		})
	}
	return newServer(t, "twilio", check, accept, refuse)
}

// randomHex is n random bytes in hex, for ids.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

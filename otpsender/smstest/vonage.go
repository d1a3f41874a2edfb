package smstest

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"unicode/utf8"
)

// NewVonage starts a fake of Vonage's SMS API for the account of apiKey and apiSecret.
//
// It follows the SMS API reference, "Send an SMS" (https://developer.vonage.com/en/api/sms#send-an-sms):
// POST /sms/json with form fields api_key, api_secret, from, to, text, type (text or
// unicode, which a text beyond ASCII needs), ttl (20000 to 604800000 ms); numbers in E.164
// form without a leading + (https://api.support.vonage.com/hc/en-us/articles/206515367);
// answered 200 with {"message-count", "messages": [{"status", ...}]}, where status "0" is
// accepted and any other a failure, 4 a wrong credential
// (https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms).
func NewVonage(t testing.TB, apiKey, apiSecret string) *Server {
	check := func(r *http.Request, body []byte) (Message, *Failure, error) {
		if r.Method != http.MethodPost || r.URL.Path != "/sms/json" {
			return Message{}, nil, fmt.Errorf("want POST /sms/json")
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
			return Message{}, nil, fmt.Errorf("content type %q", r.Header.Get("Content-Type"))
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return Message{}, nil, err
		}
		if err := onlyFields(form, []string{"api_key", "api_secret", "from", "to", "text"}, "type", "ttl"); err != nil {
			return Message{}, nil, err
		}
		if form.Get("api_key") != apiKey || form.Get("api_secret") != apiSecret {
			return Message{}, &Failure{Status: http.StatusOK, Code: "4"}, nil
		}
		if !digits.MatchString(form.Get("to")) {
			return Message{}, nil, fmt.Errorf("to %q is not E.164 without +", form.Get("to"))
		}
		m := Message{To: form.Get("to"), From: form.Get("from"), Text: form.Get("text"), Fields: map[string]string{}}
		ascii := len(m.Text) == utf8.RuneCountInString(m.Text)
		switch typ := form.Get("type"); {
		case typ != "" && typ != "text" && typ != "unicode":
			return Message{}, nil, fmt.Errorf("type %q", typ)
		case !ascii && typ != "unicode":
			return Message{}, nil, fmt.Errorf("a text beyond ASCII without type unicode would arrive garbled")
		case typ != "":
			m.Fields["type"] = typ
		}
		if v := form.Get("ttl"); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < 20000 || n > 604800000 {
				return Message{}, nil, fmt.Errorf("ttl %q is not 20000 to 604800000", v)
			}
			m.Fields["ttl"] = v
		}
		return m, nil, nil
	}
	accept := func(w http.ResponseWriter, m Message) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"message-count": "1", "messages": []map[string]string{{
			"to": m.To, "message-id": randomHex(8), "status": "0", "remaining-balance": "15.53590000",
			"message-price": "0.03330000", "network": "23410",
		}}})
	}
	refuse := func(w http.ResponseWriter, f Failure) {
		if f.Status != http.StatusOK {
			w.WriteHeader(f.Status)
			return
		}
		code := f.Code
		if code == "" {
			code = "3" // invalid parameters
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"message-count": "1", "messages": []map[string]string{{
			"status": code, "error-text": "The message failed",
		}}})
	}
	return newServer(t, "vonage", check, accept, refuse)
}

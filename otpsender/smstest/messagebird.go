package smstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NewMessageBird starts a fake of MessageBird's SMS API for the account of accessKey.
//
// It follows the SMS API reference, "Send outbound SMS"
// (https://developers.messagebird.com/api/sms-messaging/#send-outbound-sms): POST /messages
// with the header "Authorization: AccessKey {key}" and a JSON body of recipients (numbers in
// international form), originator (a number, or at most 11 alphanumeric characters),
// body, datacoding (plain, unicode or auto) and validity (seconds), answered 201 with the
// message object; errors as {"errors": [{code, description, parameter}]}, 401 with code 2 for
// a wrong access key (https://developers.messagebird.com/api/#api-errors).
func NewMessageBird(t testing.TB, accessKey string) *Server {
	alphanumeric := regexp.MustCompile(`^[A-Za-z0-9 ]{1,11}$`)
	check := func(r *http.Request, body []byte) (Message, *Failure, error) {
		if r.Method != http.MethodPost || r.URL.Path != "/messages" {
			return Message{}, nil, fmt.Errorf("want POST /messages")
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			return Message{}, nil, fmt.Errorf("content type %q", r.Header.Get("Content-Type"))
		}
		if r.Header.Get("Authorization") != "AccessKey "+accessKey {
			return Message{}, &Failure{Status: http.StatusUnauthorized, Code: "2"}, nil
		}
		var msg struct {
			Recipients []string `json:"recipients"`
			Originator string   `json:"originator"`
			Body       string   `json:"body"`
			DataCoding string   `json:"datacoding"`
			Validity   *int     `json:"validity"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&msg); err != nil {
			return Message{}, nil, fmt.Errorf("body: %v", err)
		}
		if len(msg.Recipients) != 1 || !e164.MatchString(msg.Recipients[0]) {
			return Message{}, nil, fmt.Errorf("recipients %q: want one number in international form", msg.Recipients)
		}
		if !e164.MatchString(msg.Originator) && !alphanumeric.MatchString(msg.Originator) {
			return Message{}, nil, fmt.Errorf("originator %q: want a number or at most 11 alphanumeric characters", msg.Originator)
		}
		if msg.Body == "" {
			return Message{}, nil, fmt.Errorf("body missing")
		}
		m := Message{To: msg.Recipients[0], From: msg.Originator, Text: msg.Body, Fields: map[string]string{}}
		switch msg.DataCoding {
		case "":
		case "plain", "unicode", "auto":
			m.Fields["datacoding"] = msg.DataCoding
		default:
			return Message{}, nil, fmt.Errorf("datacoding %q", msg.DataCoding)
		}
		if msg.Validity != nil {
			if *msg.Validity < 1 {
				return Message{}, nil, fmt.Errorf("validity %d", *msg.Validity)
			}
			m.Fields["validity"] = strconv.Itoa(*msg.Validity)
		}
		return m, nil, nil
	}
	accept := func(w http.ResponseWriter, m Message) {
		id := randomHex(16)
		recipient, _ := strconv.ParseInt(strings.TrimPrefix(m.To, "+"), 10, 64)
		now := time.Now().UTC().Format(time.RFC3339)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{
			"id": id, "href": "https://rest.messagebird.com/messages/" + id, "direction": "mt", "type": "sms",
			"originator": m.From, "body": m.Text, "reference": nil, "gateway": 10, "typeDetails": map[string]any{},
			"datacoding": "plain", "mclass": 1, "scheduledDatetime": nil, "createdDatetime": now,
			"recipients": map[string]any{"totalCount": 1, "totalSentCount": 1, "totalDeliveredCount": 0,
				"totalDeliveryFailedCount": 0, "items": []map[string]any{{"recipient": recipient, "status": "sent", "statusDatetime": now}}},
		})
	}
	refuse := func(w http.ResponseWriter, f Failure) {
		code := f.Code
		if code == "" {
			code = map[int]string{401: "2", 422: "9", 500: "10"}[f.Status]
		}
		n, _ := strconv.Atoi(code)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"code": n, "description": "The request failed", "parameter": nil}}})
	}
	return newServer(t, "messagebird", check, accept, refuse)
}

// Package smstest runs in-process fakes of the SMS gateways' HTTP APIs for tests: Twilio's
// Messages resource, Vonage's SMS API, MessageBird's SMS API and Amazon SNS's Publish.
// Each fake checks every request against the provider's documented protocol (method,
// path, authentication, field names, the number's form) and fails the test on a
// mismatch; it answers a wrong credential as the provider does, records the messages it
// accepted, and can be told to fail the ways the provider fails.
package smstest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
)

// Server is a running fake. Use URL as the sender's endpoint.
type Server struct {
	*httptest.Server

	t        testing.TB
	provider string
	// check validates a request: an error is a breach of the protocol (the test fails
	// and the answer is a 400), a *Failure the provider's own refusal (a wrong credential).
	check  func(r *http.Request, body []byte) (Message, *Failure, error)
	accept func(w http.ResponseWriter, m Message)
	refuse func(w http.ResponseWriter, f Failure)
	done   chan struct{} // closed at cleanup, so that hanging answers end

	mu       sync.Mutex
	attempts int
	sent     []Message
	failNext []Failure
	failAll  *Failure
}

// Message is a message a fake accepted.
type Message struct {
	// To is the number as the provider got it.
	To string
	// From is the sender as the provider got it.
	From string
	// Text is the text of the SMS.
	Text string
	// Fields are the request's other fields, secrets left out (validity, encoding,
	// attributes), by the provider's names.
	Fields map[string]string
}

// Failure is how a fake fails a request.
type Failure struct {
	// Status is the HTTP status of the answer. Vonage answers most errors with 200 and a
	// message status in Code.
	Status int
	// Code is the provider's error code in the answer: Twilio's or MessageBird's number,
	// Vonage's message status, SNS's error code. Empty: one fitting Status.
	Code string
	// Hang answers nothing until the client gives up.
	Hang bool
}

func newServer(t testing.TB, provider string, check func(*http.Request, []byte) (Message, *Failure, error),
	accept func(http.ResponseWriter, Message), refuse func(http.ResponseWriter, Failure)) *Server {
	s := &Server{t: t, provider: provider, check: check, accept: accept, refuse: refuse, done: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(s.done) }) // runs first
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.attempts++
	var fault *Failure
	switch {
	case len(s.failNext) > 0:
		fault = &s.failNext[0]
		s.failNext = s.failNext[1:]
	case s.failAll != nil:
		fault = s.failAll
	}
	s.mu.Unlock()

	m, refusal, err := s.check(r, body)
	switch {
	case err != nil:
		s.t.Errorf("%s fake: %s %s: %v", s.provider, r.Method, r.URL.Path, err)
		s.refuse(w, Failure{Status: http.StatusBadRequest})
		return
	case refusal != nil:
		s.refuse(w, *refusal)
		return
	case fault != nil && fault.Hang:
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	case fault != nil:
		s.refuse(w, *fault)
		return
	}
	s.mu.Lock()
	s.sent = append(s.sent, m)
	s.mu.Unlock()
	s.accept(w, m)
}

// FailNext fails the next n requests with f.
func (s *Server) FailNext(n int, f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failNext = append(s.failNext, f)
	}
}

// FailAll fails every request from now on with f.
func (s *Server) FailAll(f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAll = &f
}

// Attempts is how many requests the fake got, failed ones included.
func (s *Server) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// Sent are the messages the fake accepted, in order.
func (s *Server) Sent() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.sent...)
}

// e164 is a number in E.164 form with '+'; digits is one without, as Vonage takes it.
var (
	e164   = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
	digits = regexp.MustCompile(`^[1-9][0-9]{6,14}$`)
)

// onlyFields checks that form has only the allowed fields, each once, and the required
// ones.
func onlyFields(form map[string][]string, required []string, optional ...string) error {
	allowed := map[string]bool{}
	for _, name := range append(required, optional...) {
		allowed[name] = true
	}
	for name, values := range form {
		if !allowed[name] {
			return fmt.Errorf("unknown field %q", name)
		}
		if len(values) != 1 {
			return fmt.Errorf("field %q given %d times", name, len(values))
		}
	}
	for _, name := range required {
		if form[name] == nil || form[name][0] == "" {
			return fmt.Errorf("field %q missing", name)
		}
	}
	return nil
}

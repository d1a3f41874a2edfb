package handlers

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// Response is one answer of the API: a JSON object, always sent with HTTP 200 (the apps
// read a non-200 as "no internet connection").
type Response struct {
	Body map[string]any
	// RetryAfter, when set, is sent as the Retry-After header of a RATELIMIT answer.
	RetryAfter time.Duration
}

// The error codes of FAIL answers (PROTOCOL.md §2). The apps know the first group; the
// second was added by this project for situations the original did not have.
const (
	CodeNoOp        = "NOOP"
	CodeAuthFail    = "AUTHFAIL"
	CodeBadOp       = "BADOP"
	CodeMissingApp  = "MISSINGAPPID"
	CodeBadPhone    = "BADPHONE"
	CodeBadCode     = "BADCODE"
	CodeBadAKToken  = "BADAKTOKEN"
	CodeBadUser     = "BADUSER"
	CodeBadApp      = "BADAPP"
	CodeMissingPara = "MISSINGPARA"
	CodeMissingFile = "MISSINGFILE"
	CodeBadImage    = "BADIMAGE"
	CodeBadGroup    = "BADGROUP"
	CodeNotMember   = "NOTMEMBER"
	CodeDBError     = "DBERROR"

	// CodeBadRequest: the body could not be decoded (malformed JSON, form or multipart).
	CodeBadRequest = "BADREQUEST"
	// CodeTooLarge: the body, a file or a field is over its limit.
	CodeTooLarge = "TOOLARGE"
	// CodeTempFail: a shared service (Redis, the OTP delivery) is unavailable; retry later.
	CodeTempFail = "TEMPFAIL"
	// CodeRateLimit: too many requests; errmsg says when to retry.
	CodeRateLimit = "RATELIMIT"
)

func noop() *Response {
	return &Response{Body: map[string]any{"code": CodeNoOp, "result": "FAIL"}}
}

func ok(op string, now time.Time) *Response {
	return &Response{Body: map[string]any{"op": op, "ts": now.Unix(), "result": "OK"}}
}

// fail is a FAIL answer; errmsg is optional, and op is left out when the request did not
// get as far as naming one. Like every answer but NOOP it carries ts: Swift builds of the
// apps read ts before they look at result.
func fail(op string, now time.Time, code, errmsg string) *Response {
	r := &Response{Body: map[string]any{"ts": now.Unix(), "error": code, "result": "FAIL"}}
	if op != "" {
		r.Body["op"] = op
	}
	if errmsg != "" {
		r.Body["errmsg"] = errmsg
	}
	return r
}

// tempFail is the answer when a shared service (Redis, the code delivery) is unavailable.
func tempFail(op string, now time.Time, msg string) *Response {
	if msg == "" {
		msg = "Service temporarily unavailable. Please try again later."
	}
	return fail(op, now, CodeTempFail, msg)
}

func rateLimited(op string, now time.Time, wait time.Duration) *Response {
	secs := int64((wait + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	r := fail(op, now, CodeRateLimit, "Too many attempts. Please try again in "+humanDuration(secs)+".")
	r.RetryAfter = time.Duration(secs) * time.Second
	return r
}

func humanDuration(secs int64) string {
	switch {
	case secs < 90:
		return strconv.FormatInt(secs, 10) + " seconds"
	case secs < 90*60:
		return strconv.FormatInt((secs+59)/60, 10) + " minutes"
	default:
		return strconv.FormatInt((secs+3599)/3600, 10) + " hours"
	}
}

// setHeaders writes the headers every answer carries: no caching, and open CORS, since the
// web messenger calls from its own origin.
func setHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")
	h.Set("Access-Control-Allow-Origin", "*")
}

// Write sends resp.
func Write(w http.ResponseWriter, resp *Response) error {
	setHeaders(w.Header())
	if resp.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(resp.RetryAfter/time.Second), 10))
	}
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(resp.Body)
}

// WritePreflight answers a CORS preflight: the methods the API takes and whatever headers
// the browser asks for.
func WritePreflight(w http.ResponseWriter, r *http.Request) {
	setHeaders(w.Header())
	w.Header().Del("Content-Type")
	w.Header().Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	if asked := r.Header.Get("Access-Control-Request-Headers"); asked != "" {
		w.Header().Set("Access-Control-Allow-Headers", asked)
	}
	w.Header().Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

// IsPreflight tells a CORS preflight (any OPTIONS request) from an API call.
func IsPreflight(r *http.Request) bool { return r.Method == http.MethodOptions }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// Rejected is the answer to a request whose body could not be decoded: the client's
// fault, or the server's (a temp file could not be written), which is logged.
func (a *API) Rejected(req *Request, err error) *Response {
	var de *DecodeError
	if errors.As(err, &de) {
		return fail(req.Op, a.Now(), de.Code, de.Msg)
	}
	a.Logger.Error("reading a request failed", zap.Error(err))
	return tempFail(req.Op, a.Now(), "")
}

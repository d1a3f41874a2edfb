package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// File is the one file part a multipart request may carry, spooled to a temp file as
// it arrived so that a large video never sits in memory. It is removed by the Request's
// Close.
type File struct {
	// Field is the part's form name (the apps use "photo").
	Field string
	// Name is the client's file name; never used to name a stored file.
	Name string
	// Size is the file's length in bytes.
	Size int64
	// Content reads the file; it is valid until the Request is closed.
	Content io.ReaderAt
}

// Request is an API call decoded from any of the protocol's encodings.
type Request struct {
	// Op is the requested op, lower-cased.
	Op     string
	fields map[string]string
	lists  map[string][]string
	// objects are the fields that came as JSON objects, which no field of the protocol is.
	objects  map[string]bool
	File     *File
	ClientIP string
	// Expand replaces the server's placeholders (such as {http.auth.user.id}) in a string,
	// as they stand for this request; nil leaves strings as they are.
	Expand func(string) string
	// spools are the temp files of this request, removed by Close.
	spools []*spool
}

// DecodeError is a request that could not be read; Code is the protocol error code.
type DecodeError struct {
	Code string
	Msg  string
}

func (e *DecodeError) Error() string { return e.Code + ": " + e.Msg }

// Limits bound what Decode reads of a body.
type Limits struct {
	// MaxBody bounds a body that is not multipart, and the fields of a multipart body
	// together.
	MaxBody int64
	// MaxFile bounds the file part of a multipart body.
	MaxFile int64
	// TempDir is where a file part is spooled; "" is the system's temp folder.
	TempDir string
	// KeepBody keeps a multipart body for a handler later in the route: it is spooled
	// as it arrives, next to its file part, and put back as r.Body. Without it a
	// multipart body is consumed by decoding. Other bodies are always put back.
	KeepBody bool
}

// Decode reads the fields of r from its query string and its body (urlencoded, multipart
// with at most one file, or a JSON object), body fields winning over query fields. At
// most lim.MaxBody bytes of a body are read, except a multipart body's file part, which
// is spooled to a temp file up to lim.MaxFile bytes. The body is put back afterwards
// (a multipart one only with lim.KeepBody), so a handler later in the route sees it
// intact. The Request is returned even with an error; Close it when the request ends.
// An error that is not a *DecodeError is the server's: a temp file could not be written.
func Decode(r *http.Request, lim Limits) (*Request, error) {
	req := &Request{fields: map[string]string{}, lists: map[string][]string{}, objects: map[string]bool{}}
	for k, v := range r.URL.Query() {
		if len(v) > 0 {
			req.fields[k] = strings.TrimSpace(v[0])
		}
	}
	if r.Body == nil || r.Body == http.NoBody {
		return req.finish(), nil
	}
	mediaType, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mediaType == "multipart/form-data" {
		err := req.decodeMultipart(r, params["boundary"], lim)
		return req.finish(), err
	}
	orig := r.Body
	body, err := io.ReadAll(io.LimitReader(orig, lim.MaxBody+1))
	// Put the body back whole (what was read, then whatever was not), so a handler
	// later in the route can read it as the client sent it.
	r.Body = readCloser{io.MultiReader(bytes.NewReader(body), orig), orig}
	if err != nil {
		return req.finish(), &DecodeError{CodeBadRequest, "could not read the request body"}
	}
	if int64(len(body)) > lim.MaxBody {
		return req.finish(), &DecodeError{CodeTooLarge, fmt.Sprintf("request body over %d bytes", lim.MaxBody)}
	}
	if err := req.decodeBody(mediaType, body); err != nil {
		return req.finish(), err
	}
	return req.finish(), nil
}

// Close removes the request's temp files.
func (req *Request) Close() {
	for _, s := range req.spools {
		s.remove()
	}
	req.spools = nil
}

// readCloser is a body put back after decoding.
type readCloser struct {
	io.Reader
	io.Closer
}

func (req *Request) finish() *Request {
	req.Op = strings.ToLower(req.fields["op"])
	return req
}

// decodeBody reads the fields of a body that is not multipart by PROTOCOL.md §1: one
// that starts with "{" is a JSON object whatever its label (the current iOS app posts
// JSON that its HTTP library labels as it likes, and the original decoded the raw body
// as JSON first); the rest follows the Content-Type's mediaType.
func (req *Request) decodeBody(mediaType string, body []byte) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil
	}
	switch {
	case trimmed[0] == '{', mediaType == "application/json", strings.HasSuffix(mediaType, "+json"):
		return req.decodeJSON(body)
	case mediaType == "application/x-www-form-urlencoded", mediaType == "":
		return req.decodeForm(body)
	}
	return nil // another body type carries no fields; the query still counts
}

func (req *Request) decodeForm(body []byte) error {
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return &DecodeError{CodeBadRequest, "malformed form body"}
	}
	for k, v := range values {
		if len(v) > 0 {
			req.fields[k] = strings.TrimSpace(v[0])
		}
	}
	return nil
}

func (req *Request) decodeJSON(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return &DecodeError{CodeBadRequest, "malformed JSON body: an object is expected"}
	}
	for k, v := range obj {
		if list, ok := v.([]any); ok {
			items := make([]string, 0, len(list))
			for _, item := range list {
				if s, ok := scalar(item); ok && s != "" {
					items = append(items, s)
				}
			}
			req.lists[k] = items
			delete(req.fields, k)
			continue
		}
		if s, ok := scalar(v); ok {
			req.fields[k] = s
			delete(req.lists, k)
			continue
		}
		if _, ok := v.(map[string]any); ok {
			req.objects[k] = true
		}
	}
	return nil
}

// scalar renders a JSON string, number or boolean as the form encoding would carry it.
func scalar(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return strings.TrimSpace(v), true
	case json.Number:
		return v.String(), true
	case bool:
		if v {
			return "1", true
		}
		return "0", true
	}
	return "", false
}

// decodeMultipart reads a multipart body part by part as it arrives: fields into
// memory, up to lim.MaxBody bytes together, the one file part into a spool.
func (req *Request) decodeMultipart(r *http.Request, boundary string, lim Limits) error {
	if boundary == "" {
		return &DecodeError{CodeBadRequest, "multipart body without a boundary"}
	}
	// Parts' headers and boundaries come on top of the fields and the file.
	const framing = 64 << 10
	var body io.Reader = http.MaxBytesReader(nil, r.Body, lim.MaxBody+lim.MaxFile+framing)
	if lim.KeepBody {
		raw, err := req.newSpool(lim.TempDir)
		if err != nil {
			return err
		}
		body = io.TeeReader(body, raw)
		orig := r.Body
		defer func() { r.Body = readCloser{io.MultiReader(raw.reader(), orig), orig} }()
	}
	mr := multipart.NewReader(body, boundary)
	var fieldBytes int64
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return readFailure(err, lim)
		}
		if part.FileName() == "" {
			// Names count too: many empty fields with long names would fill the map.
			name := part.FormName()
			data, err := io.ReadAll(io.LimitReader(part, max(lim.MaxBody-fieldBytes-int64(len(name)), 0)+1))
			if err != nil {
				return readFailure(err, lim)
			}
			if fieldBytes += int64(len(name) + len(data)); fieldBytes > lim.MaxBody {
				return &DecodeError{CodeTooLarge, fmt.Sprintf("fields over %d bytes", lim.MaxBody)}
			}
			if name != "" {
				req.fields[name] = strings.TrimSpace(string(data))
			}
			continue
		}
		if req.File != nil {
			return &DecodeError{CodeBadRequest, "only one file may be sent"}
		}
		file, err := req.newSpool(lim.TempDir)
		if err != nil {
			return err
		}
		n, err := io.Copy(file, io.LimitReader(part, lim.MaxFile+1))
		if err != nil {
			return readFailure(err, lim)
		}
		if n > lim.MaxFile {
			return &DecodeError{CodeTooLarge, fmt.Sprintf("file over %d bytes", lim.MaxFile)}
		}
		req.File = &File{Field: part.FormName(), Name: part.FileName(), Size: n, Content: file.f}
	}
}

// readFailure is the error of a multipart body that could not be read: too large, a
// temp file that could not be written (the server's), or a malformed body.
func readFailure(err error, lim Limits) error {
	var tooLarge *http.MaxBytesError
	var spooling *spoolError
	switch {
	case errors.As(err, &tooLarge):
		return &DecodeError{CodeTooLarge, fmt.Sprintf("file over %d bytes", lim.MaxFile)}
	case errors.As(err, &spooling):
		return spooling
	}
	return &DecodeError{CodeBadRequest, "malformed multipart body"}
}

// Get is a field's trimmed value, "" when absent; a list field reads as its
// comma-joined items.
func (req *Request) Get(name string) string {
	if v, ok := req.fields[name]; ok {
		return v
	}
	return strings.Join(req.lists[name], ",")
}

// Has reports whether the field was sent non-empty.
func (req *Request) Has(name string) bool { return req.Get(name) != "" }

// Int is a field as an integer, read as the original's PHP intval read it: the number
// at the start of the value ("12abc" is 12, "1.9" is 1, "1e3" is 1000), 0 when there is
// none or the field is absent, and the nearest int64 when it does not fit.
func (req *Request) Int(name string) int64 {
	n, _ := intval(req.Get(name))
	return n
}

// leadingNumber is the part of a value that PHP's intval reads: white space, then a
// decimal integer or float.
var leadingNumber = regexp.MustCompile(`^[ \t\n\r\v\f]*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)`)

// intval is PHP's intval of s; exact is false when the number did not fit an int64.
func intval(s string) (n int64, exact bool) {
	m := leadingNumber.FindStringSubmatch(s)
	if m == nil {
		return 0, true
	}
	if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
		return n, true
	} else if errors.Is(err, strconv.ErrRange) {
		return n, false // ParseInt answers the nearest int64
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64, false
	case f <= math.MinInt64:
		return math.MinInt64, false
	}
	return int64(f), true
}

// maxGID is the largest group id: the groups table's unsigned 32-bit gid.
const maxGID = math.MaxUint32

// GID reads the gid field (PROTOCOL.md §2) as Int reads any number, inside the 2021
// Swift app's "Optional(…)": "Optional(0)" is 0 (a new group), "Optional(12)" group 12.
// code is the answer to a gid that is no group id: MISSINGPARA for a JSON object or
// array, BADGROUP for a number beyond any gid.
func (req *Request) GID() (gid int64, code string) {
	if req.objects["gid"] || req.lists["gid"] != nil {
		return 0, CodeMissingPara
	}
	v := req.Get("gid")
	if inner, ok := strings.CutPrefix(v, "Optional("); ok {
		// The 2021 Swift app sends String(describing: groupid): Optional(0) for a new
		// group, Optional(123) for group 123. The original read both as 0 (a new group);
		// the app means group 123.
		v = inner
	}
	n, exact := intval(v)
	if !exact || n > maxGID {
		return 0, CodeBadGroup
	}
	return n, ""
}

// List is a list field: a JSON array, or a comma-separated string; empty items dropped.
// A string is split once per request (getcontacts asks before and after the token
// look-up, for up to thousands of numbers).
func (req *Request) List(name string) []string {
	if items, ok := req.lists[name]; ok {
		return items
	}
	items := splitList(req.fields[name])
	if items != nil && req.lists != nil { // nothing kept for an absent field: Sent stays false
		req.lists[name] = items
	}
	return items
}

// Sent reports whether the field was in the request at all, even empty.
func (req *Request) Sent(name string) bool {
	_, inFields := req.fields[name]
	_, inLists := req.lists[name]
	return inFields || inLists
}

// maxTextBytes bounds a name or a status: far more than the apps let a person type, and
// small enough that a notification carrying name and status stays a small row.
const maxTextBytes = 4096

// Text is a free-text field (a name, a status) when it was sent, even empty; nil when it
// was not. code refuses a value over max bytes (TOOLARGE) or one that is not UTF-8 text
// (MISSINGPARA), before it reaches a column that could not hold it.
func (req *Request) Text(name string, max int) (value *string, code string) {
	if !req.Sent(name) {
		return nil, ""
	}
	v := req.Get(name)
	switch {
	case len(v) > max:
		return nil, CodeTooLarge
	case !utf8.ValidString(v):
		return nil, CodeMissingPara
	}
	return &v, ""
}

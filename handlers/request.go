package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// File is the one file part a multipart request may carry.
type File struct {
	// Field is the part's form name (the apps use "photo").
	Field string
	// Name is the client's file name; never used to name a stored file.
	Name string
	Data []byte
}

// Request is an API call decoded from any of the protocol's encodings.
type Request struct {
	// Op is the requested op, lower-cased.
	Op       string
	fields   map[string]string
	lists    map[string][]string
	File     *File
	ClientIP string
	// Expand replaces the server's placeholders (such as {http.auth.user.id}) in a string,
	// as they stand for this request; nil leaves strings as they are.
	Expand func(string) string
}

// DecodeError is a request that could not be read; Code is the protocol error code.
type DecodeError struct {
	Code string
	Msg  string
}

func (e *DecodeError) Error() string { return e.Code + ": " + e.Msg }

// Decode reads the fields of r from its query string and its body (urlencoded, multipart
// with at most one file, or a JSON object), body fields winning over query fields. At
// most maxBody bytes of body are read. The body is put back afterwards, so a handler
// later in the route sees it intact.
func Decode(r *http.Request, maxBody int64) (*Request, error) {
	req := &Request{fields: map[string]string{}, lists: map[string][]string{}}
	for k, v := range r.URL.Query() {
		if len(v) > 0 {
			req.fields[k] = strings.TrimSpace(v[0])
		}
	}
	if r.Body != nil && r.Body != http.NoBody {
		orig := r.Body
		body, err := io.ReadAll(io.LimitReader(orig, maxBody+1))
		// Put the body back whole (what was read, then whatever was not), so a handler
		// later in the route can read it as the client sent it.
		r.Body = readCloser{io.MultiReader(bytes.NewReader(body), orig), orig}
		if err != nil {
			return req.finish(), &DecodeError{"BADREQUEST", "could not read the request body"}
		}
		if int64(len(body)) > maxBody {
			return req.finish(), &DecodeError{"TOOLARGE", fmt.Sprintf("request body over %d bytes", maxBody)}
		}
		if err := req.decodeBody(r.Header.Get("Content-Type"), body); err != nil {
			return req.finish(), err
		}
	}
	return req.finish(), nil
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

func (req *Request) decodeBody(contentType string, body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	mediaType, params, _ := mime.ParseMediaType(contentType)
	switch {
	case mediaType == "multipart/form-data":
		return req.decodeMultipart(body, params["boundary"])
	case mediaType == "application/json" || strings.HasSuffix(mediaType, "+json"):
		return req.decodeJSON(body)
	case mediaType == "application/x-www-form-urlencoded":
		return req.decodeForm(body)
	case (mediaType == "" || mediaType == "text/plain") && bytes.TrimSpace(body)[0] == '{':
		// Some clients post JSON without a content type, or as text/plain (which spares
		// browsers a CORS preflight).
		return req.decodeJSON(body)
	case mediaType == "":
		return req.decodeForm(body)
	}
	return nil // another body type carries no fields; the query still counts
}

func (req *Request) decodeForm(body []byte) error {
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return &DecodeError{"BADREQUEST", "malformed form body"}
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
		return &DecodeError{"BADREQUEST", "malformed JSON body: an object is expected"}
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

func (req *Request) decodeMultipart(body []byte, boundary string) error {
	if boundary == "" {
		return &DecodeError{"BADREQUEST", "multipart body without a boundary"}
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &DecodeError{"BADREQUEST", "malformed multipart body"}
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return &DecodeError{"BADREQUEST", "malformed multipart body"}
		}
		if part.FileName() == "" {
			if name := part.FormName(); name != "" {
				req.fields[name] = strings.TrimSpace(string(data))
			}
			continue
		}
		if req.File != nil {
			return &DecodeError{"BADREQUEST", "only one file may be sent"}
		}
		req.File = &File{Field: part.FormName(), Name: part.FileName(), Data: data}
	}
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

// Int is a field as an integer: 0 when absent or not a number; a JSON number with a
// fraction is truncated.
func (req *Request) Int(name string) int64 {
	v := req.Get(name)
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && f > -1e18 && f < 1e18 {
		return int64(f)
	}
	return 0
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

package media

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// FileServer serves the files of a Storage over HTTP, as file_server serves a local
// folder: GET and HEAD of /files/NAME and /thumbs/NAME (the request path, relative to
// where the route mounts it), with ranges and conditional requests, 404 for anything
// else. Every answer carries the headers of SetServingHeaders.
type FileServer struct {
	Storage *Storage
	// Logger takes failures of the store; nil logs nothing.
	Logger *zap.Logger
}

// ServeHTTP implements http.Handler.
func (fs FileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, name, ok := fs.Storage.locate(r.URL.Path)
	SetServingHeaders(w.Header(), name)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	attrs, err := a.bucket.Attributes(r.Context(), a.key(name))
	switch {
	case gcerrors.Code(err) == gcerrors.NotFound:
		http.NotFound(w, r)
		return
	case err != nil:
		if fs.Logger != nil && !errors.Is(r.Context().Err(), context.Canceled) {
			fs.Logger.Error("reading a stored file failed", zap.String("key", a.key(name)), zap.Error(err))
		}
		http.Error(w, http.StatusText(http.StatusBadGateway), http.StatusBadGateway)
		return
	}
	if attrs.ETag != "" {
		w.Header().Set("ETag", attrs.ETag)
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	content := &objectReader{ctx: r.Context(), bucket: a.bucket, key: a.key(name), size: attrs.Size}
	defer content.Close()
	http.ServeContent(w, r, name, attrs.ModTime, content)
}

// locate maps a request path, /files/NAME or /thumbs/NAME, to its area and name.
func (s *Storage) locate(path string) (area, string, bool) {
	folder, name, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !validName(name) {
		return area{}, "", false
	}
	switch folder + "/" {
	case FilesPrefix:
		return s.files, name, true
	case ThumbsPrefix:
		return s.thumbs, name, true
	}
	return area{}, "", false
}

// objectReader reads an object as an io.ReadSeeker for http.ServeContent. Seeking
// costs nothing; a read opens a range reader from the current offset, so a HEAD, a
// 304 or a range reads only what is sent.
type objectReader struct {
	ctx    context.Context
	bucket *blob.Bucket
	key    string
	size   int64
	offset int64
	r      *blob.Reader
}

func (o *objectReader) Read(p []byte) (int, error) {
	if o.offset >= o.size {
		return 0, io.EOF
	}
	if o.r == nil {
		r, err := o.bucket.NewRangeReader(o.ctx, o.key, o.offset, o.size-o.offset, nil)
		if err != nil {
			return 0, err
		}
		o.r = r
	}
	n, err := o.r.Read(p)
	o.offset += int64(n)
	return n, err
}

func (o *objectReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += o.offset
	case io.SeekEnd:
		offset += o.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start")
	}
	if offset != o.offset {
		o.Close()
		o.offset = offset
	}
	return offset, nil
}

func (o *objectReader) Close() error {
	if o.r == nil {
		return nil
	}
	err := o.r.Close()
	o.r = nil
	return err
}

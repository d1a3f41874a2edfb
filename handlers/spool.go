package handlers

import (
	"io"
	"os"
)

// spool is a temp file that holds part of a request body: a file part, or the raw body
// kept for a later handler.
type spool struct {
	f       *os.File
	written int64
	// unlinked: the name is gone already, and the data with the last descriptor.
	unlinked bool
}

// newSpool creates a spool in dir ("" = the system's temp folder), removed by the
// request's Close.
func (req *Request) newSpool(dir string) (*spool, error) {
	f, err := os.CreateTemp(dir, "messenger-upload-*")
	if err != nil {
		return nil, &spoolError{err}
	}
	// Unlinked at once where the system allows it, so that not even a crash leaves it
	// behind; elsewhere (Windows) it is removed when closed.
	s := &spool{f: f, unlinked: os.Remove(f.Name()) == nil}
	req.spools = append(req.spools, s)
	return s, nil
}

func (s *spool) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.written += int64(n)
	if err != nil {
		return n, &spoolError{err}
	}
	return n, nil
}

// reader reads what was written, from the start.
func (s *spool) reader() io.Reader { return io.NewSectionReader(s.f, 0, s.written) }

func (s *spool) remove() {
	s.f.Close()
	if !s.unlinked {
		os.Remove(s.f.Name())
	}
}

// spoolError is a temp file that could not be written: the server's failure (a full
// disk), not the client's.
type spoolError struct{ err error }

func (e *spoolError) Error() string { return "spooling an upload: " + e.err.Error() }
func (e *spoolError) Unwrap() error { return e.err }

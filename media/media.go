// Package media stores what apps upload (PROTOCOL.md §3 "upload"): profile and group
// pictures with their 100×100 JPEG thumbnails, and chat attachments of any type, in a
// Storage (a local folder or an object store), and serves them back.
//
// Uploads are hostile until proven otherwise. A picture's size is capped; its pixel
// count and the memory its decoder will take (from the bytes per pixel of its header's
// color model) are checked before anything is decoded, and decodes wait for their
// share of a DecodeGate, so that neither a tiny file declaring a huge canvas nor many
// honest large pictures at once can exhaust memory; the whole image is decoded (so
// truncated files are caught). An attachment is never decoded. Every stored name and
// extension comes from the server: a picture's from the detected format, an
// attachment's from a short allow-list, and files appear whole or not at all.
package media

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/image/webp"
)

// Defaults used when the Store fields are zero.
const (
	DefaultMaxBytes  = 5 << 20    // 5 MiB
	DefaultMaxPixels = 40_000_000 // about 7300×5500
)

// maxJPEGScans bounds the number of scans of a progressive JPEG. The decoder walks
// every block of the image once per scan, so a small file that repeats a near-empty
// scan costs minutes of CPU. Real encoders write at most about 10 scans.
const maxJPEGScans = 32

// sniffBytes is how much of an attachment its type is detected from.
const sniffBytes = 3072

// cleanupTimeout bounds the removal of a thumbnail whose picture could not be stored.
const cleanupTimeout = 10 * time.Second

// ErrBadImage reports data that is not a complete, decodable JPEG, PNG, GIF or
// WebP image: empty, truncated or corrupt data and other formats (BMP, SVG, …).
var ErrBadImage = errors.New("media: not a decodable JPEG, PNG, GIF or WebP image")

// ErrTooManyPixels reports an image whose header declares more than MaxPixels
// pixels, or whose decoding would take more memory than the DecodeGate has,
// typically a decompression bomb. It wraps ErrBadImage because to the app such a
// file is simply a bad image (error code BADIMAGE).
var ErrTooManyPixels = fmt.Errorf("%w: too many pixels", ErrBadImage)

// ErrTooLarge reports an upload of more than MaxBytes bytes.
var ErrTooLarge = errors.New("media: upload too large")

// ErrBadName reports a file name that is not a plain file name (see Remove), so it
// could point outside the storage's folders.
var ErrBadName = errors.New("media: invalid file name")

// Store saves uploads in its Storage by the rules of PROTOCOL.md §3. Its methods may
// be called from several goroutines at once.
type Store struct {
	*Storage
	// Cache holds thumbnails read for answers; required.
	Cache *ThumbnailCache
	// Gate bounds decoding; nil is a gate of the defaults shared by the process.
	Gate     *DecodeGate
	MaxBytes int64 // largest accepted picture; 0 = DefaultMaxBytes
	// MaxPixels is the largest accepted width*height, checked from the header
	// before decoding; 0 = DefaultMaxPixels.
	MaxPixels int64
	// Logger takes what goes wrong outside of a request's answer; nil logs nothing.
	Logger *zap.Logger
}

func (s *Store) logger() *zap.Logger {
	if s.Logger == nil {
		return zap.NewNop()
	}
	return s.Logger
}

// sharedGate is the gate of Stores that have none.
var sharedGate = NewDecodeGate(0, 0)

// format is one accepted image format. Decoding goes through the decoder of
// the format that DecodeConfig detected, never through the global image
// registry again, so a format registered elsewhere in the binary (BMP, TIFF…)
// can't slip in.
type format struct {
	ext    string
	decode func(io.Reader) (image.Image, error)
}

var formats = map[string]format{
	"jpeg": {"jpg", jpeg.Decode},
	"png":  {"png", png.Decode},
	"gif":  {"gif", gif.Decode}, // first frame only
	"webp": {"webp", webp.Decode},
}

// SavePicture validates the picture in the first size bytes of r, fully decodes it,
// and stores the original bytes as files/NAME and a 100×100 centre-cropped JPEG
// thumbnail (quality 50) as thumbs/NAME. The thumbnail keeps the picture's NAME,
// extension included, as the original backend did, although it is always a JPEG.
//
// NAME is "UNIXTIME-RANDOM16HEX.EXT" with the Unix time of now and EXT from the
// detected format (jpg, png, gif or webp), never from a client file name. Errors are
// ErrTooLarge, ErrBadImage (errors.Is also holds for ErrTooManyPixels), ErrBusy when
// ctx ends while other decodes hold the gate, or a storage error; on error nothing is
// left behind.
func (s *Store) SavePicture(ctx context.Context, r io.ReaderAt, size int64, now time.Time) (name string, err error) {
	if size > orDefault(s.MaxBytes, DefaultMaxBytes) {
		return "", ErrTooLarge
	}
	img, ext, release, err := s.decode(ctx, r, size)
	if err != nil {
		return "", err
	}
	thumb := thumbnail(img)
	img = nil
	release()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, thumb, &jpeg.Options{Quality: thumbQuality}); err != nil {
		return "", err
	}

	name = newName(now, ext)
	// The thumbnail first: a picture whose name is answered always has one.
	if err := write(ctx, s.thumbs, name, bytes.NewReader(buf.Bytes())); err != nil {
		return "", err
	}
	if err := write(ctx, s.files, name, io.NewSectionReader(r, 0, size)); err != nil {
		// Also when ctx is what ended the write.
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		deleteIfAny(cleanup, s.thumbs, name)
		return "", err
	}
	s.Cache.c.Set(name, base64.StdEncoding.EncodeToString(buf.Bytes()))
	return name, nil
}

// decode checks the header (format, dimensions, memory, scan count) before paying
// for a full decode, waits for the gate, then decodes the whole image so truncation
// is detected. release gives the gate back.
func (s *Store) decode(ctx context.Context, r io.ReaderAt, size int64) (img image.Image, ext string, release func(), err error) {
	cfg, kind, err := image.DecodeConfig(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	f, ok := formats[kind]
	if !ok {
		return nil, "", nil, fmt.Errorf("%w: format %q", ErrBadImage, kind)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, "", nil, fmt.Errorf("%w: %dx%d", ErrBadImage, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > orDefault(s.MaxPixels, DefaultMaxPixels) {
		return nil, "", nil, fmt.Errorf("%w (%dx%d)", ErrTooManyPixels, cfg.Width, cfg.Height)
	}
	cost, err := decodeCost(kind, cfg, io.NewSectionReader(r, 0, size))
	if err != nil {
		if errors.Is(err, ErrBadImage) {
			return nil, "", nil, err
		}
		return nil, "", nil, fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	gate := s.Gate
	if gate == nil {
		gate = sharedGate
	}
	if cost > gate.capacity {
		return nil, "", nil, fmt.Errorf("%w (%dx%d would take %d MB to decode)", ErrTooManyPixels, cfg.Width, cfg.Height, cost>>20)
	}
	release, err = gate.enter(ctx, cost)
	if err != nil {
		return nil, "", nil, err
	}
	img, err = f.decode(io.NewSectionReader(r, 0, size))
	if err == nil && img.Bounds().Empty() {
		err = errors.New("empty image")
	}
	if err != nil {
		release()
		return nil, "", nil, fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	return img, f.ext, release, nil
}

// SaveAttachment stores the first size bytes of r, a file attached to a chat message,
// as files/NAME without looking into it beyond its first bytes: NAME is
// "UNIXTIME-RANDOM16HEX.EXT", with EXT chosen from an allow-list by the detected type
// or the client's file name clientName, else "bin". It is never thumbnailed.
func (s *Store) SaveAttachment(ctx context.Context, r io.ReaderAt, size int64, clientName string, now time.Time) (name string, err error) {
	head := make([]byte, min(size, sniffBytes))
	if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading an attachment: %w", err)
	}
	name = newName(now, attachmentExt(head, clientName))
	if err := write(ctx, s.files, name, io.NewSectionReader(r, 0, size)); err != nil {
		return "", err
	}
	return name, nil
}

// newName is a fresh server-chosen name: "UNIXTIME-RANDOM16HEX.EXT".
func newName(now time.Time, ext string) string {
	var random [8]byte
	rand.Read(random[:]) // never fails (crypto/rand crashes the program instead)
	return fmt.Sprintf("%d-%s.%s", now.Unix(), hex.EncodeToString(random[:]), ext)
}

func validName(name string) bool {
	return name != "" && name[0] != '.' && !strings.ContainsAny(name, "/\\\x00")
}

func orDefault(v, def int64) int64 {
	if v > 0 {
		return v
	}
	return def
}

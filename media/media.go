// Package media stores the profile and group pictures that apps upload
// (PROTOCOL.md §3 "upload") together with their 100×100 JPEG thumbnails.
//
// Uploads are hostile until proven otherwise: the size is capped, the pixel
// count is checked from the image header before anything is decoded (so a
// tiny file that declares a huge canvas cannot exhaust memory), the whole
// image is decoded (so truncated files are caught), the stored name and
// extension come from the server and the detected format only, and files are
// written atomically so readers never see half a picture.
package media

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/image/draw"
	"golang.org/x/image/webp"
)

// Defaults used when the Store fields are zero.
const (
	DefaultMaxBytes  = 5 << 20    // 5 MiB
	DefaultMaxPixels = 40_000_000 // about 7300×5500; a decoded RGBA of this size is 160 MB
)

const (
	thumbSize    = 100
	thumbQuality = 50
	// maxJPEGScans bounds the number of scans of a progressive JPEG. The
	// decoder walks every block of the image once per scan, so a small file
	// that repeats a near-empty scan costs minutes of CPU (measured: a 200 kB
	// 36-megapixel file with 1000 scans took 67 s to decode). Real encoders
	// write at most about 10 scans, plus an embedded EXIF thumbnail's.
	maxJPEGScans = 32
)

// ErrBadImage reports data that is not a complete, decodable JPEG, PNG, GIF or
// WebP image: empty, truncated or corrupt data and other formats (BMP, SVG, …).
var ErrBadImage = errors.New("media: not a decodable JPEG, PNG, GIF or WebP image")

// ErrTooManyPixels reports an image whose header declares more than MaxPixels
// pixels, typically a decompression bomb. It wraps ErrBadImage because to the
// app such a file is simply a bad image (error code BADIMAGE).
var ErrTooManyPixels = fmt.Errorf("%w: too many pixels", ErrBadImage)

// ErrTooLarge reports an upload of more than MaxBytes bytes.
var ErrTooLarge = errors.New("media: upload too large")

// ErrBadName reports a picture name that is not a plain file name (see
// Remove), so it could point outside the picture folders.
var ErrBadName = errors.New("media: invalid picture name")

// Store keeps pictures in FilesDir and their thumbnails in ThumbsDir.
// Its methods may be called from several goroutines at once.
type Store struct {
	FilesDir  string // created on first save if missing (0o755)
	ThumbsDir string // created on first save if missing (0o755)
	MaxBytes  int64  // largest accepted upload; 0 = DefaultMaxBytes
	// MaxPixels is the largest accepted width*height, checked from the header
	// before decoding; 0 = DefaultMaxPixels.
	MaxPixels int64
}

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

// SavePicture validates data, fully decodes it, and stores the original bytes
// as FilesDir/NAME and a 100×100 centre-cropped JPEG thumbnail (quality 50) as
// ThumbsDir/NAME. The thumbnail keeps the picture's NAME, extension included,
// as the original backend did, although it is always a JPEG.
//
// NAME is "UNIXTIME-RANDOM16HEX.EXT" with the Unix time of now and EXT from
// the detected format (jpg, png, gif or webp), never from a client file name.
// Errors are ErrTooLarge, ErrBadImage (errors.Is also holds for
// ErrTooManyPixels), or a file system error; on error nothing is left behind.
func (s *Store) SavePicture(data []byte, now time.Time) (name string, err error) {
	if int64(len(data)) > orDefault(s.MaxBytes, DefaultMaxBytes) {
		return "", ErrTooLarge
	}
	img, ext, err := s.decode(data)
	if err != nil {
		return "", err
	}
	thumb, err := thumbnail(img)
	if err != nil {
		return "", err
	}

	var random [8]byte
	rand.Read(random[:]) // never fails (crypto/rand crashes the program instead)
	name = fmt.Sprintf("%d-%s.%s", now.Unix(), hex.EncodeToString(random[:]), ext)

	// Both temp files are written before either is renamed, so a failure
	// can't leave a picture without its thumbnail.
	tmpFile, err := writeTemp(s.FilesDir, data)
	if err != nil {
		return "", err
	}
	defer removeIfSet(&tmpFile)
	tmpThumb, err := writeTemp(s.ThumbsDir, thumb)
	if err != nil {
		return "", err
	}
	defer removeIfSet(&tmpThumb)

	file := filepath.Join(s.FilesDir, name)
	if err := os.Rename(tmpFile, file); err != nil {
		return "", err
	}
	tmpFile = ""
	if err := os.Rename(tmpThumb, filepath.Join(s.ThumbsDir, name)); err != nil {
		os.Remove(file)
		return "", err
	}
	tmpThumb = ""
	return name, nil
}

// decode checks the header (format, dimensions, scan count) before paying for
// a full decode, then decodes the whole image so truncation is detected.
func (s *Store) decode(data []byte) (image.Image, string, error) {
	cfg, kind, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	f, ok := formats[kind]
	if !ok {
		return nil, "", fmt.Errorf("%w: format %q", ErrBadImage, kind)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, "", fmt.Errorf("%w: %dx%d", ErrBadImage, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > orDefault(s.MaxPixels, DefaultMaxPixels) {
		return nil, "", fmt.Errorf("%w (%dx%d)", ErrTooManyPixels, cfg.Width, cfg.Height)
	}
	// 0xFF 0xDA (start of scan) can't occur inside entropy-coded data, where
	// 0xFF is always stuffed, so counting it bounds the number of scans.
	if kind == "jpeg" && bytes.Count(data, []byte{0xFF, 0xDA}) > maxJPEGScans {
		return nil, "", fmt.Errorf("%w: too many JPEG scans", ErrBadImage)
	}
	img, err := f.decode(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	if img.Bounds().Empty() {
		return nil, "", fmt.Errorf("%w: empty image", ErrBadImage)
	}
	return img, f.ext, nil
}

// thumbnail scales the largest centred square of img to 100×100 over a white
// background (so transparency turns white, not black) and encodes it as JPEG.
func thumbnail(img image.Image) ([]byte, error) {
	b := img.Bounds()
	side := min(b.Dx(), b.Dy())
	x0 := b.Min.X + (b.Dx()-side)/2
	y0 := b.Min.Y + (b.Dy()-side)/2
	crop := image.Rect(x0, y0, x0+side, y0+side)

	dst := image.NewRGBA(image.Rect(0, 0, thumbSize, thumbSize))
	draw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, crop, draw.Over, nil)

	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: thumbQuality}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Thumbnail returns the standard base64 encoding of the thumbnail of the
// picture name, or "" when name is empty, not a valid name (see Remove), or
// has no thumbnail.
func (s *Store) Thumbnail(name string) string {
	if !validName(name) {
		return ""
	}
	root, err := os.OpenRoot(s.ThumbsDir)
	if err != nil {
		return ""
	}
	defer root.Close()
	data, err := root.ReadFile(name)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(data)
}

// Remove deletes the picture name and its thumbnail. Missing files are not an
// error, and an empty name (no picture) is a no-op.
//
// A valid name is a plain file name: no "/" or "\", no NUL, and no leading "."
// (which also excludes ".." and the temp files of SavePicture). This is looser
// than the names SavePicture makes (^[0-9]+-[0-9a-f]{16}\.(jpg|png|gif|webp)$)
// because pictures stored by the original PHP backend have names of its own
// format. Any other name returns ErrBadName and deletes nothing; on top of
// that, files are reached through os.Root, so even a symbolic link can't lead
// outside FilesDir or ThumbsDir.
func (s *Store) Remove(name string) error {
	if name == "" {
		return nil
	}
	if !validName(name) {
		return ErrBadName
	}
	return errors.Join(removeIn(s.FilesDir, name), removeIn(s.ThumbsDir, name))
}

func validName(name string) bool {
	return name != "" && name[0] != '.' && !strings.ContainsAny(name, "/\\\x00")
}

// removeIn deletes dir/name, treating a missing file or folder as success.
func removeIn(dir, name string) error {
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// writeTemp writes data to a new, synced temp file in dir (created if
// missing) and returns its path. The leading dot keeps temp files out of the
// valid picture names. Renaming within the same dir is atomic.
func writeTemp(dir string, data []byte) (path string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".upload-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return "", err
	}
	// CreateTemp makes 0o600 files; the pictures are public static files.
	if err := f.Chmod(0o644); err != nil {
		return "", err
	}
	// Sync so a crash can't leave a renamed but empty picture behind.
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}

// removeIfSet removes the temp file *path unless it was renamed (cleared).
func removeIfSet(path *string) {
	if *path != "" {
		os.Remove(*path)
	}
}

func orDefault(v, def int64) int64 {
	if v > 0 {
		return v
	}
	return def
}

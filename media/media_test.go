package media

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	// Registers BMP in the global image registry, as any other package in
	// the binary might: SavePicture must still refuse it.
	"golang.org/x/image/bmp"
)

var (
	green  = color.NRGBA{0, 255, 0, 255}
	red    = color.NRGBA{255, 0, 0, 255}
	blue   = color.NRGBA{0, 0, 255, 255}
	yellow = color.NRGBA{255, 255, 0, 255}
	white  = color.NRGBA{255, 255, 255, 255}
)

var nameRE = regexp.MustCompile(`^(\d+)-[0-9a-f]{16}\.(jpg|png|gif|webp)$`)

var testNow = time.Unix(1_700_000_000, 0)

// bandsImage is w×h with four bands along the longer side: 1/6 green,
// 1/3 red, 1/3 blue, 1/6 yellow. Its centred square is exactly red|blue, so
// green or yellow in the thumbnail means it was squashed instead of cropped.
func bandsImage(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	long := max(w, h)
	for y := range h {
		for x := range w {
			p := x
			if h > w {
				p = y
			}
			c := green
			switch {
			case p >= long*5/6:
				c = yellow
			case p >= long/2:
				c = blue
			case p >= long/6:
				c = red
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// encodeGIF uses an exact palette so no dithering blurs the bands.
func encodeGIF(t testing.TB, img image.Image, pal color.Palette) []byte {
	t.Helper()
	p := image.NewPaletted(img.Bounds(), pal)
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			p.Set(x, y, img.At(x, y))
		}
	}
	var b bytes.Buffer
	if err := gif.Encode(&b, p, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newStore(t testing.TB) *Store {
	dir := t.TempDir()
	// Not created yet: SavePicture must create them.
	return &Store{FilesDir: filepath.Join(dir, "files", "pics"), ThumbsDir: filepath.Join(dir, "thumbs")}
}

// listDir returns the names in dir; a missing dir is empty.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func assertNoFiles(t *testing.T, s *Store) {
	t.Helper()
	if n := append(listDir(t, s.FilesDir), listDir(t, s.ThumbsDir)...); len(n) > 0 {
		t.Errorf("files left behind: %v", n)
	}
}

// near reports whether c is within tol of want in every channel (JPEG is lossy).
func near(c color.Color, want color.NRGBA, tol int) bool {
	r, g, b, _ := c.RGBA()
	d := func(a uint32, b uint8) bool { return abs(int(a>>8)-int(b)) <= tol }
	return d(r, want.R) && d(g, want.G) && d(b, want.B)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// checkSaved asserts the stored original, the thumbnail file, and Thumbnail().
func checkSaved(t *testing.T, s *Store, data []byte, name, ext string) image.Image {
	t.Helper()
	m := nameRE.FindStringSubmatch(name)
	if m == nil {
		t.Fatalf("name %q does not match %s", name, nameRE)
	}
	if m[1] != strconv.FormatInt(testNow.Unix(), 10) || m[2] != ext {
		t.Errorf("name %q: want time %d and ext %q", name, testNow.Unix(), ext)
	}
	orig, err := os.ReadFile(filepath.Join(s.FilesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(orig, data) {
		t.Error("stored original differs from the upload")
	}
	if fi, err := os.Stat(filepath.Join(s.FilesDir, name)); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("original mode: %v %v", fi.Mode(), err)
	}
	thumbBytes, err := os.ReadFile(filepath.Join(s.ThumbsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	thumb, err := jpeg.Decode(bytes.NewReader(thumbBytes))
	if err != nil {
		t.Fatalf("thumbnail is not a JPEG: %v", err)
	}
	if got := thumb.Bounds(); got != image.Rect(0, 0, 100, 100) {
		t.Errorf("thumbnail bounds %v, want 100x100", got)
	}
	if got, want := s.Thumbnail(name), base64.StdEncoding.EncodeToString(thumbBytes); got != want {
		t.Error("Thumbnail() is not the base64 of the thumbnail file")
	}
	if f, th := listDir(t, s.FilesDir), listDir(t, s.ThumbsDir); len(f) != 1 || len(th) != 1 {
		t.Errorf("want exactly one file in each dir (no temp files), got %v and %v", f, th)
	}
	return thumb
}

func TestSavePictureFormats(t *testing.T) {
	landscape := bandsImage(300, 200)
	pal := color.Palette{green, red, blue, yellow}
	tests := []struct {
		name, ext string
		data      []byte
	}{
		{"png", "png", encodePNG(t, landscape)},
		{"jpeg", "jpg", encodeJPEG(t, landscape)},
		{"gif", "gif", encodeGIF(t, landscape, pal)},
		{"webp", "webp", readTestdata(t, "bands.webp")},
		{"progressive jpeg", "jpg", readTestdata(t, "bands-progressive.jpg")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			name, err := s.SavePicture(tt.data, testNow)
			if err != nil {
				t.Fatal(err)
			}
			thumb := checkSaved(t, s, tt.data, name, tt.ext)
			// Centre crop of red|blue: left edge red, right edge blue, never
			// the green/yellow outer bands.
			for y := 5; y < 100; y += 45 {
				if c := thumb.At(3, y); !near(c, red, 60) {
					t.Errorf("thumb(3,%d) = %v, want red", y, c)
				}
				if c := thumb.At(96, y); !near(c, blue, 60) {
					t.Errorf("thumb(96,%d) = %v, want blue", y, c)
				}
			}
		})
	}
}

func TestSavePicturePortraitCrop(t *testing.T) {
	s := newStore(t)
	data := encodePNG(t, bandsImage(200, 300))
	name, err := s.SavePicture(data, testNow)
	if err != nil {
		t.Fatal(err)
	}
	thumb := checkSaved(t, s, data, name, "png")
	if c := thumb.At(50, 3); !near(c, red, 60) {
		t.Errorf("top = %v, want red", c)
	}
	if c := thumb.At(50, 96); !near(c, blue, 60) {
		t.Errorf("bottom = %v, want blue", c)
	}
}

func TestSavePictureTransparentBecomesWhite(t *testing.T) {
	clear := image.NewNRGBA(image.Rect(0, 0, 120, 80)) // all transparent black
	tests := map[string][]byte{
		"png": encodePNG(t, clear),
		"gif": encodeGIF(t, clear, color.Palette{color.NRGBA{}, red}),
	}
	for format, data := range tests {
		t.Run(format, func(t *testing.T) {
			s := newStore(t)
			name, err := s.SavePicture(data, testNow)
			if err != nil {
				t.Fatal(err)
			}
			thumb := checkSaved(t, s, data, name, format)
			for _, p := range []image.Point{{0, 0}, {50, 50}, {99, 99}} {
				if c := thumb.At(p.X, p.Y); !near(c, white, 8) {
					t.Errorf("thumb%v = %v, want white", p, c)
				}
			}
		})
	}
}

// bombPNG is a valid-looking PNG header declaring w×h RGBA pixels with a
// tiny image body: decoding it would allocate w*h*4 bytes.
func bombPNG(t testing.TB, w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0) // depth 8, RGBA, deflate, no filter, no interlace
	chunk("IHDR", ihdr)
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(make([]byte, 64))
	zw.Close()
	chunk("IDAT", z.Bytes())
	chunk("IEND", nil)
	return b.Bytes()
}

func TestSavePictureBomb(t *testing.T) {
	s := newStore(t)
	data := bombPNG(t, 20000, 20000)
	if cfg, err := png.DecodeConfig(bytes.NewReader(data)); err != nil || cfg.Width != 20000 {
		t.Fatalf("crafted header is not a valid PNG header: %v %v", cfg, err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := s.SavePicture(data, testNow)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrBadImage) || !errors.Is(err, ErrTooManyPixels) {
		t.Errorf("err = %v, want ErrBadImage and ErrTooManyPixels", err)
	}
	if elapsed > time.Second {
		t.Errorf("took %v", elapsed)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 50<<20 {
		t.Errorf("allocated %d MB", alloc>>20)
	}
	assertNoFiles(t, s)
}

// scanBomb repeats the last scan of a progressive JPEG: every decoder pass
// walks the whole image, so thousands of such tiny scans cost minutes of CPU.
func scanBomb(t testing.TB, repeat int) []byte {
	data := readTestdata(t, "bands-progressive.jpg")
	last := bytes.LastIndex(data, []byte{0xFF, 0xDA})
	eoi := len(data) - 2
	if last < 0 || !bytes.Equal(data[eoi:], []byte{0xFF, 0xD9}) {
		t.Fatal("unexpected fixture layout")
	}
	out := bytes.Clone(data[:eoi])
	for range repeat {
		out = append(out, data[last:eoi]...)
	}
	return append(out, 0xFF, 0xD9)
}

func TestSavePictureRejects(t *testing.T) {
	png300 := encodePNG(t, bandsImage(300, 200))
	jpg300 := encodeJPEG(t, bandsImage(300, 200))
	gif300 := encodeGIF(t, bandsImage(300, 200), color.Palette{green, red, blue, yellow})
	webp300 := readTestdata(t, "bands.webp")
	var bmpBuf bytes.Buffer
	if err := bmp.Encode(&bmpBuf, bandsImage(30, 20)); err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 4096)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(random)

	tests := []struct {
		name  string
		store Store
		data  []byte
		want  error
	}{
		{"empty", Store{}, nil, ErrBadImage},
		{"random bytes", Store{}, random, ErrBadImage},
		{"truncated png", Store{}, png300[:len(png300)/2], ErrBadImage},
		{"truncated jpeg", Store{}, jpg300[:len(jpg300)/2], ErrBadImage},
		{"truncated gif", Store{}, gif300[:len(gif300)/2], ErrBadImage},
		{"truncated webp", Store{}, webp300[:len(webp300)/2], ErrBadImage},
		{"png header only", Store{}, png300[:33], ErrBadImage},
		{"bmp (registered decoder)", Store{}, bmpBuf.Bytes(), ErrBadImage},
		{"svg", Store{}, []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`), ErrBadImage},
		{"text", Store{}, []byte("hello, this is not a picture\n"), ErrBadImage},
		{"zero-size png", Store{}, bombPNG(t, 0, 10), ErrBadImage},
		{"jpeg scan bomb", Store{}, scanBomb(t, 40), ErrBadImage},
		{"over MaxPixels", Store{MaxPixels: 100 * 100}, png300, ErrTooManyPixels},
		{"over MaxBytes", Store{MaxBytes: int64(len(png300)) - 1}, png300, ErrTooLarge},
		{"over default MaxBytes", Store{}, append(bytes.Clone(png300), make([]byte, DefaultMaxBytes)...), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			s.MaxBytes, s.MaxPixels = tt.store.MaxBytes, tt.store.MaxPixels
			name, err := s.SavePicture(tt.data, testNow)
			if !errors.Is(err, tt.want) || name != "" {
				t.Errorf("SavePicture = %q, %v; want error %v", name, err, tt.want)
			}
			assertNoFiles(t, s)
		})
	}
}

func TestSavePictureAtLimits(t *testing.T) {
	data := encodePNG(t, bandsImage(300, 200))
	s := newStore(t)
	s.MaxBytes, s.MaxPixels = int64(len(data)), 300*200
	if _, err := s.SavePicture(data, testNow); err != nil {
		t.Errorf("exactly at the limits: %v", err)
	}
	// A progressive JPEG with a few extra scans is still fine.
	if _, err := newStore(t).SavePicture(scanBomb(t, 5), testNow); err != nil {
		t.Errorf("15 scans: %v", err)
	}
}

// A failure after the original's temp file was written must remove it.
func TestSavePictureCleansUpOnWriteError(t *testing.T) {
	s := newStore(t)
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s.ThumbsDir = filepath.Join(blocker, "thumbs")
	if _, err := s.SavePicture(encodePNG(t, bandsImage(30, 20)), testNow); err == nil {
		t.Fatal("want an error when ThumbsDir can't be created")
	}
	if n := listDir(t, s.FilesDir); len(n) > 0 {
		t.Errorf("files left behind: %v", n)
	}
}

func TestSavePictureConcurrent(t *testing.T) {
	s := newStore(t)
	data := encodePNG(t, bandsImage(60, 40))
	names := make([]string, 8)
	var wg sync.WaitGroup
	for i := range names {
		wg.Go(func() {
			var err error
			if names[i], err = s.SavePicture(data, testNow); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if f := listDir(t, s.FilesDir); len(f) != len(names) {
		t.Errorf("want %d distinct files, got %v", len(names), f)
	}
	if th := listDir(t, s.ThumbsDir); len(th) != len(names) {
		t.Errorf("want %d thumbnails, got %v", len(names), th)
	}
}

func TestThumbnail(t *testing.T) {
	base := t.TempDir()
	s := &Store{FilesDir: filepath.Join(base, "files"), ThumbsDir: filepath.Join(base, "thumbs")}
	name, err := s.SavePicture(encodePNG(t, bandsImage(30, 20)), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if s.Thumbnail(name) == "" {
		t.Fatal("no thumbnail for a saved picture")
	}
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(base, "secret"), "secret")
	write(filepath.Join(s.ThumbsDir, ".hidden"), "hidden")
	write(filepath.Join(s.ThumbsDir, "u123_photo.jpeg"), "legacy")
	if err := os.Symlink("../secret", filepath.Join(s.ThumbsDir, "escape.jpg")); err != nil {
		t.Fatal(err)
	}

	// Names in the original PHP backend's own format are still served.
	if got := s.Thumbnail("u123_photo.jpeg"); got != base64.StdEncoding.EncodeToString([]byte("legacy")) {
		t.Errorf("legacy name: got %q", got)
	}
	for _, bad := range []string{
		"", "1700000000-0123456789abcdef.jpg", "../../etc/passwd", "../secret", "a/b.jpg",
		`..\secret`, ".hidden", "..", ".", "/etc/passwd", "escape.jpg", "x\x00.jpg",
		strings.Replace(name, ".png", "", 1),
	} {
		if got := s.Thumbnail(bad); got != "" {
			t.Errorf("Thumbnail(%q) = %q, want \"\"", bad, got)
		}
	}
	// A Store whose folders don't exist yet has no thumbnails.
	if got := (&Store{ThumbsDir: filepath.Join(base, "missing")}).Thumbnail(name); got != "" {
		t.Errorf("missing ThumbsDir: got %q", got)
	}
}

func TestRemove(t *testing.T) {
	base := t.TempDir()
	s := &Store{FilesDir: filepath.Join(base, "files"), ThumbsDir: filepath.Join(base, "thumbs")}
	name, err := s.SavePicture(encodePNG(t, bandsImage(30, 20)), testNow)
	if err != nil {
		t.Fatal(err)
	}
	keep, err := s.SavePicture(encodePNG(t, bandsImage(30, 20)), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(name); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(s.FilesDir, name), filepath.Join(s.ThumbsDir, name)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists (%v)", p, err)
		}
	}
	if s.Thumbnail(keep) == "" {
		t.Error("Remove deleted another picture's thumbnail")
	}
	// Missing files, a missing picture, or missing folders are not errors.
	if err := s.Remove(name); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := s.Remove(""); err != nil {
		t.Errorf("Remove(\"\"): %v", err)
	}
	if err := (&Store{FilesDir: filepath.Join(base, "no1"), ThumbsDir: filepath.Join(base, "no2")}).Remove(name); err != nil {
		t.Errorf("missing folders: %v", err)
	}

	// Traversal: nothing outside the folders may be deleted.
	secret := filepath.Join(base, "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(s.FilesDir, "sub")
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inner, "x.jpg"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"../secret", "../../secret", "..", ".", `..\secret`, secret, "sub/x.jpg", ".hidden", "a\x00b"} {
		if err := s.Remove(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("Remove(%q) = %v, want ErrBadName", bad, err)
		}
	}
	// A symlink is removed as a link; its target outside survives.
	if err := os.Symlink("../secret", filepath.Join(s.FilesDir, "link.jpg")); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("link.jpg"); err != nil {
		t.Errorf("Remove(link): %v", err)
	}
	for _, p := range []string{secret, filepath.Join(inner, "x.jpg"), filepath.Join(s.FilesDir, keep)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was deleted: %v", p, err)
		}
	}
}

func BenchmarkSavePicture(b *testing.B) {
	// A photo-like 2000×1500 JPEG: smooth gradients plus noise.
	img := image.NewYCbCr(image.Rect(0, 0, 2000, 1500), image.YCbCrSubsampleRatio420)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range img.Y {
		img.Y[i] = uint8(i%2000/8 + rng.IntN(16))
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = uint8(i/1000), uint8(i%1000/4)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	s := newStore(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		name, err := s.SavePicture(data, testNow)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Remove(name)
		b.StartTimer()
	}
}

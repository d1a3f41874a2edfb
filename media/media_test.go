package media

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob"
	// Registers BMP in the global image registry, as any other package in
	// the binary might: SavePicture must still refuse it.
	"golang.org/x/image/bmp"

	"github.com/caddy-messenger/messenger/internal/testenv"
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

// stores runs test on a Store of each kind of storage: local folders, and a bucket of a
// real S3-compatible server.
func stores(t *testing.T, test func(t *testing.T, s *Store)) {
	t.Run("file", func(t *testing.T) { test(t, newStore(t)) })
	t.Run("s3", func(t *testing.T) { test(t, newS3Store(t)) })
}

// newStore is a Store on local folders that do not exist yet: saving must create them.
func newStore(t testing.TB) *Store {
	dir := t.TempDir()
	storage, err := OpenFolders(filepath.Join(dir, "files", "pics"), filepath.Join(dir, "thumbs"))
	if err != nil {
		t.Fatal(err)
	}
	return storeOn(t, storage)
}

// newS3Store is a Store on a fresh bucket of an S3 server of the test's own.
func newS3Store(t testing.TB) *Store {
	storage, err := OpenStorage(context.Background(), testenv.StartS3(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	return storeOn(t, storage)
}

func storeOn(t testing.TB, storage *Storage) *Store {
	cache := NewThumbnailCache(0)
	t.Cleanup(func() { cache.Close(); storage.Close() })
	return &Store{Storage: storage, Cache: cache}
}

// keys lists what s holds, as "files/NAME" and "thumbs/NAME".
func keys(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	for folder, a := range map[string]area{"files/": s.files, "thumbs/": s.thumbs} {
		iter := a.bucket.List(&blob.ListOptions{Prefix: a.prefix})
		for {
			obj, err := iter.Next(context.Background())
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, folder+strings.TrimPrefix(obj.Key, a.prefix))
		}
	}
	slices.Sort(out)
	return out
}

func read(t *testing.T, a area, name string) []byte {
	t.Helper()
	data, err := a.bucket.ReadAll(context.Background(), a.key(name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func assertNoFiles(t *testing.T, s *Store) {
	t.Helper()
	if k := keys(t, s); len(k) > 0 {
		t.Errorf("files left behind: %v", k)
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

// checkSaved asserts the stored original, the thumbnail, and Thumbnail().
func checkSaved(t *testing.T, s *Store, data []byte, name, ext string) image.Image {
	t.Helper()
	m := nameRE.FindStringSubmatch(name)
	if m == nil {
		t.Fatalf("name %q does not match %s", name, nameRE)
	}
	if m[1] != strconv.FormatInt(testNow.Unix(), 10) || m[2] != ext {
		t.Errorf("name %q: want time %d and ext %q", name, testNow.Unix(), ext)
	}
	if !bytes.Equal(read(t, s.files, name), data) {
		t.Error("stored original differs from the upload")
	}
	thumbBytes := read(t, s.thumbs, name)
	thumb, err := jpeg.Decode(bytes.NewReader(thumbBytes))
	if err != nil {
		t.Fatalf("thumbnail is not a JPEG: %v", err)
	}
	if got := thumb.Bounds(); got != image.Rect(0, 0, 100, 100) {
		t.Errorf("thumbnail bounds %v, want 100x100", got)
	}
	if got, want := s.Thumbnail(ctxT(t), name), base64.StdEncoding.EncodeToString(thumbBytes); got != want {
		t.Error("Thumbnail() is not the base64 of the thumbnail file")
	}
	if k := keys(t, s); !slices.Equal(k, []string{"files/" + name, "thumbs/" + name}) {
		t.Errorf("want exactly the picture and its thumbnail (no temp files), got %v", k)
	}
	return thumb
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// save is SavePicture of data.
func save(t testing.TB, s *Store, data []byte) (string, error) {
	return s.SavePicture(ctxT(t), bytes.NewReader(data), int64(len(data)), testNow)
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
		// Larger than the prescale step: cropped, reduced cheaply, then filtered.
		{"large png", "png", encodePNG(t, bandsImage(1200, 800))},
	}
	stores(t, func(t *testing.T, s *Store) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				name, err := save(t, s, tt.data)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Remove(context.Background(), name) // the next format finds the store empty
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
	})
}

func TestSavePicturePortraitCrop(t *testing.T) {
	s := newStore(t)
	data := encodePNG(t, bandsImage(200, 300))
	name, err := save(t, s, data)
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
		"png":       encodePNG(t, clear),
		"gif":       encodeGIF(t, clear, color.Palette{color.NRGBA{}, red}),
		"large png": encodePNG(t, image.NewNRGBA(image.Rect(0, 0, 1200, 800))),
	}
	for format, data := range tests {
		t.Run(format, func(t *testing.T) {
			s := newStore(t)
			name, err := save(t, s, data)
			if err != nil {
				t.Fatal(err)
			}
			thumb := checkSaved(t, s, data, name, strings.TrimPrefix(format, "large "))
			for _, p := range []image.Point{{0, 0}, {50, 50}, {99, 99}} {
				if c := thumb.At(p.X, p.Y); !near(c, white, 8) {
					t.Errorf("thumb%v = %v, want white", p, c)
				}
			}
		})
	}
}

// bombPNG is a valid-looking PNG header declaring w×h RGBA pixels of depth bits
// per channel (8 or 16) with a tiny image body: decoding it would allocate w*h*4 or
// w*h*8 bytes.
func bombPNG(t testing.TB, w, h uint32, depth byte) []byte {
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(make([]byte, 64))
	zw.Close()
	return testenv.PNG(w, h, depth, z.Bytes())
}

// TestSavePictureBomb: headers that declare more than the pixel limit, or a canvas
// whose decoding would take more memory than the gate has (the hardening report's
// 16-bit RGBA PNG of 6324×6324, just under the pixel limit: 320 MB decoded), are
// refused from the header, fast and without allocating.
func TestSavePictureBomb(t *testing.T) {
	for name, data := range map[string][]byte{
		"pixels":      bombPNG(t, 20000, 20000, 8),
		"16-bit RGBA": bombPNG(t, 6324, 6324, 16),
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			if cfg, err := png.DecodeConfig(bytes.NewReader(data)); err != nil || cfg.Width < 6000 {
				t.Fatalf("crafted header is not a valid PNG header: %v %v", cfg, err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := save(t, s, data)
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
		})
	}
}

// TestDecodeCost: the cost a header announces covers what decoding really allocates,
// and not by much more, for each format and color model.
func TestDecodeCost(t *testing.T) {
	const w, h = 800, 600
	gray := image.NewGray(image.Rect(0, 0, w, h))
	gray16 := image.NewGray16(image.Rect(0, 0, w, h))
	rgba64 := image.NewNRGBA64(image.Rect(0, 0, w, h))
	paletted := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{red, blue})
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range gray.Pix {
		gray.Pix[i] = uint8(rng.IntN(256))
		paletted.Pix[i] = uint8(i % 2)
	}
	for i := range gray16.Pix {
		gray16.Pix[i] = uint8(rng.IntN(256))
	}
	for i := range rgba64.Pix {
		rgba64.Pix[i] = uint8(rng.IntN(256))
	}
	for name, data := range map[string][]byte{
		"png gray":         encodePNG(t, gray),
		"png gray16":       encodePNG(t, gray16),
		"png rgba":         encodePNG(t, bandsImage(w, h)),
		"png rgba64":       encodePNG(t, rgba64),
		"png paletted":     encodePNG(t, paletted),
		"jpeg 4:2:0":       encodeJPEG(t, bandsImage(w, h)),
		"jpeg gray":        encodeJPEG(t, gray),
		"gif":              encodeGIF(t, bandsImage(w, h), color.Palette{green, red, blue, yellow}),
		"progressive jpeg": readTestdata(t, "bands-progressive.jpg"),
		"webp lossless":    readTestdata(t, "bands.webp"),
	} {
		t.Run(name, func(t *testing.T) {
			cfg, kind, err := image.DecodeConfig(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			cost, err := decodeCost(kind, cfg, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			if _, err := formats[kind].decode(bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			alloc := int64(after.TotalAlloc - before.TotalAlloc)
			if cost < alloc*9/10 || cost > 2*alloc+decodeOverhead {
				t.Errorf("cost %d bytes, decoding allocated %d", cost, alloc)
			}
		})
	}
}

// TestDecodeGate: decodes wait for their memory and a slot, in any order of release,
// and give up with ErrBusy when their context ends first.
func TestDecodeGate(t *testing.T) {
	g := NewDecodeGate(100, 2)
	first, err := g.enter(ctxT(t), 60)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := g.enter(short, 60); !errors.Is(err, ErrBusy) {
		t.Fatalf("over the memory: %v, want ErrBusy", err)
	}
	second, err := g.enter(ctxT(t), 40) // fits beside the first
	if err != nil {
		t.Fatal(err)
	}
	short, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := g.enter(short, 1); !errors.Is(err, ErrBusy) {
		t.Fatalf("over the slots: %v, want ErrBusy", err)
	}
	entered := make(chan func())
	go func() {
		release, err := g.enter(context.Background(), 100)
		if err != nil {
			t.Error(err)
		}
		entered <- release
	}()
	first()
	select {
	case <-entered:
		t.Fatal("entered while the second decode held memory")
	case <-time.After(50 * time.Millisecond):
	}
	second()
	(<-entered)()
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
		{"zero-size png", Store{}, bombPNG(t, 0, 10, 8), ErrBadImage},
		{"jpeg scan bomb", Store{}, scanBomb(t, 40), ErrBadImage},
		{"over MaxPixels", Store{MaxPixels: 100 * 100}, png300, ErrTooManyPixels},
		{"over the gate's memory", Store{Gate: NewDecodeGate(300*200*4, 1)}, png300, ErrTooManyPixels},
		{"over MaxBytes", Store{MaxBytes: int64(len(png300)) - 1}, png300, ErrTooLarge},
		{"over default MaxBytes", Store{}, append(bytes.Clone(png300), make([]byte, DefaultMaxBytes)...), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			s.MaxBytes, s.MaxPixels, s.Gate = tt.store.MaxBytes, tt.store.MaxPixels, tt.store.Gate
			name, err := save(t, s, tt.data)
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
	s.Gate = NewDecodeGate(300*200*4+decodeOverhead, 1)
	if _, err := save(t, s, data); err != nil {
		t.Errorf("exactly at the limits: %v", err)
	}
	// A progressive JPEG with a few extra scans is still fine.
	if _, err := save(t, newStore(t), scanBomb(t, 5)); err != nil {
		t.Errorf("15 scans: %v", err)
	}
}

// A failure to store the original must remove the thumbnail stored before it.
func TestSavePictureCleansUpOnWriteError(t *testing.T) {
	base := t.TempDir()
	blocker := filepath.Join(base, "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	storage, err := OpenFolders(filepath.Join(base, "files"), filepath.Join(base, "thumbs"))
	if err != nil {
		t.Fatal(err)
	}
	s := storeOn(t, storage)
	// The files folder is replaced by a file: storing the original fails.
	os.Remove(filepath.Join(base, "files"))
	if err := os.Rename(blocker, filepath.Join(base, "files")); err != nil {
		t.Fatal(err)
	}
	if _, err := save(t, s, encodePNG(t, bandsImage(30, 20))); err == nil {
		t.Fatal("want an error when the files folder is not a folder")
	}
	if n := listDir(t, filepath.Join(base, "thumbs")); len(n) > 0 {
		t.Errorf("files left behind: %v", n)
	}
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

func TestSavePictureConcurrent(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		data := encodePNG(t, bandsImage(60, 40))
		names := make([]string, 8)
		var wg sync.WaitGroup
		for i := range names {
			wg.Go(func() {
				var err error
				if names[i], err = save(t, s, data); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if k := keys(t, s); len(k) != 2*len(names) {
			t.Errorf("want %d distinct files and thumbnails, got %v", len(names), k)
		}
	})
}

// TestLocalLayout: a local storage is a plain static site: the files and thumbnails
// under their names, no metadata files beside them, no temp files left.
func TestLocalLayout(t *testing.T) {
	dir := t.TempDir()
	storage, err := OpenStorage(context.Background(), "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	s := storeOn(t, storage)
	data := encodePNG(t, bandsImage(30, 20))
	name, err := save(t, s, data)
	if err != nil {
		t.Fatal(err)
	}
	attachment, err := s.SaveAttachment(ctxT(t), strings.NewReader("%PDF-1.4 hello"), 14, "a.pdf", testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, filepath.Join(dir, "files")); !slices.Equal(got, sorted(name, attachment)) {
		t.Errorf("files/ holds %v", got)
	}
	if got := listDir(t, filepath.Join(dir, "thumbs")); !slices.Equal(got, []string{name}) {
		t.Errorf("thumbs/ holds %v", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "files", name)); !bytes.Equal(got, data) {
		t.Error("the file on disk is not the upload")
	}
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

func TestThumbnail(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		name, err := save(t, s, encodePNG(t, bandsImage(30, 20)))
		if err != nil {
			t.Fatal(err)
		}
		if s.Thumbnail(ctxT(t), name) == "" {
			t.Fatal("no thumbnail for a saved picture")
		}
		// Names in the original PHP backend's own format are still served.
		if err := write(ctxT(t), s.thumbs, "u123_photo.jpeg", strings.NewReader("legacy")); err != nil {
			t.Fatal(err)
		}
		if got := s.Thumbnail(ctxT(t), "u123_photo.jpeg"); got != base64.StdEncoding.EncodeToString([]byte("legacy")) {
			t.Errorf("legacy name: got %q", got)
		}
		for _, bad := range []string{
			"", "1700000000-0123456789abcdef.jpg", "../../etc/passwd", "../secret", "a/b.jpg",
			`..\secret`, ".hidden", "..", ".", "/etc/passwd", "x\x00.jpg",
			strings.Replace(name, ".png", "", 1),
		} {
			if got := s.Thumbnail(ctxT(t), bad); got != "" {
				t.Errorf("Thumbnail(%q) = %q, want \"\"", bad, got)
			}
		}
		tns := s.Thumbnails(ctxT(t), []string{name, "u123_photo.jpeg", "1700000000-0123456789abcdef.jpg", "", "../x"})
		if len(tns) != 2 || tns[name] == "" || tns["u123_photo.jpeg"] == "" {
			t.Errorf("Thumbnails: %v", tns)
		}
	})
}

// TestThumbnailCache: thumbnails read once are answered from memory, many at once as a
// sync asks (1,000 contacts do not make 1,000 reads); a missing one is remembered for a
// while; Remove evicts; the cache keeps to its size.
func TestThumbnailCache(t *testing.T) {
	base := t.TempDir()
	storage, err := OpenFolders(filepath.Join(base, "files"), filepath.Join(base, "thumbs"))
	if err != nil {
		t.Fatal(err)
	}
	s := storeOn(t, storage)
	var names []string
	for i := range 1000 {
		name := fmt.Sprintf("1700000000-%016x.jpg", i)
		if err := write(ctxT(t), s.thumbs, name, strings.NewReader("tn"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if tns := s.Thumbnails(ctxT(t), append(names, "1700000000-ffffffffffffffff.jpg")); len(tns) != 1000 {
		t.Fatalf("%d thumbnails, want 1000", len(tns))
	}
	// With the folder gone, every answer still comes from memory.
	if err := os.RemoveAll(filepath.Join(base, "thumbs")); err != nil {
		t.Fatal(err)
	}
	if err := write(ctxT(t), s.thumbs, "1700000000-ffffffffffffffff.jpg", strings.NewReader("late")); err != nil {
		t.Fatal(err)
	}
	tns := s.Thumbnails(ctxT(t), names)
	for i, name := range names {
		if tns[name] != base64.StdEncoding.EncodeToString([]byte("tn"+strconv.Itoa(i))) {
			t.Fatalf("%s: %q", name, tns[name])
		}
	}
	if got := s.Thumbnail(ctxT(t), "1700000000-ffffffffffffffff.jpg"); got != "" {
		t.Errorf("a thumbnail found missing a moment ago: %q", got)
	}
	if err := s.Remove(ctxT(t), names[0]); err != nil {
		t.Fatal(err)
	}
	if got := s.Thumbnail(ctxT(t), names[0]); got != "" {
		t.Errorf("a removed thumbnail: %q", got)
	}

	small := NewThumbnailCache(10 << 10)
	defer small.Close()
	s.Cache = small
	s.Thumbnails(ctxT(t), names)
	if w := small.c.WeightedSize(); w > 10<<10 {
		t.Errorf("cache of 10 KiB holds %d bytes", w)
	}
}

// TestSaveAttachment: any type is stored as it came, under a server-chosen name whose
// extension is allowed and agrees with the content, never thumbnailed.
func TestSaveAttachment(t *testing.T) {
	mp4 := append([]byte{0, 0, 0, 0x18}, []byte("ftypmp42\x00\x00\x00\x00mp42isom")...)
	pdf := []byte("%PDF-1.7\n1 0 obj\n<<>>\nendobj\n")
	html := []byte("<!DOCTYPE html><html><script>alert(1)</script></html>")
	svg := []byte(`<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>`)
	zipData := []byte("PK\x03\x04" + strings.Repeat("\x00", 40))
	for _, tc := range []struct {
		name, client, ext string
		data              []byte
	}{
		{"video", "VID_0001.mp4", "mp4", mp4},
		{"video named wrongly", "clip.pdf", "mp4", mp4},
		{"pdf", "report.pdf", "pdf", pdf},
		{"pdf without a name", "", "pdf", pdf},
		{"picture", "x.png", "png", encodePNG(t, bandsImage(30, 20))},
		{"text as csv", "list.csv", "csv", []byte("a,b\n1,2\n")},
		{"text", "notes", "txt", []byte("hello\n")},
		{"docx sniffed as zip", "letter.docx", "docx", zipData},
		{"html", "page.html", "bin", html},
		{"html named as text", "page.txt", "txt", html},
		{"svg", "logo.svg", "bin", svg},
		{"unknown bytes", "data.xyz", "bin", []byte{0x01, 0x02, 0x03, 0xfe}},
		{"path in the name", `C:\\x\\..\\y.pdf`, "pdf", []byte{1, 2, 3}},
		{"empty", "e.txt", "txt", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			name, err := s.SaveAttachment(ctxT(t), bytes.NewReader(tc.data), int64(len(tc.data)), tc.client, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if !attachmentRE.MatchString(name) || !strings.HasSuffix(name, "."+tc.ext) {
				t.Errorf("stored as %q, want extension %s", name, tc.ext)
			}
			if !bytes.Equal(read(t, s.files, name), tc.data) {
				t.Error("stored bytes differ")
			}
			if k := keys(t, s); !slices.Equal(k, []string{"files/" + name}) {
				t.Errorf("stored %v", k)
			}
		})
	}
}

var attachmentRE = regexp.MustCompile(`^1700000000-[0-9a-f]{16}\.[a-z0-9]+$`)

// TestSaveAttachmentStreams: a large attachment goes to the store as it is read, never
// whole in memory: what storing it allocates does not grow with its size. (A file
// store copies through a small buffer; an S3 bucket gets one PutObject that reads the
// spooled file as it sends it.)
func TestSaveAttachmentStreams(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		allocated := func(size int64) int64 {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			name, err := s.SaveAttachment(ctxT(t), patternReader{}, size, "big.mp4", testNow)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			attrs, err := s.files.bucket.Attributes(ctxT(t), s.files.key(name))
			if err != nil || attrs.Size != size {
				t.Fatalf("stored %v, %v", attrs, err)
			}
			return int64(after.TotalAlloc - before.TotalAlloc)
		}
		small, large := allocated(32<<20), allocated(128<<20)
		if large > 16<<20 || large > 2*small+(4<<20) {
			t.Errorf("allocated %d MB storing 32 MB, %d MB storing 128 MB", small>>20, large>>20)
		}
	})
}

// patternReader is a large file that exists nowhere: byte i is i%251.
type patternReader struct{}

// pattern is 251 bytes of the pattern, twice, for a copy from any phase.
var pattern = func() []byte {
	p := make([]byte, 2*251)
	for i := range p {
		p[i] = byte(i % 251)
	}
	return p
}()

func (patternReader) ReadAt(p []byte, off int64) (int, error) {
	for n := 0; n < len(p); {
		n += copy(p[n:], pattern[(off+int64(n))%251:])
	}
	return len(p), nil
}

func TestServedAs(t *testing.T) {
	for name, want := range map[string][2]string{
		"1-a.jpg":     {"image/jpeg", ""},
		"1-a.webp":    {"image/webp", ""},
		"1-a.mp4":     {"video/mp4", ""},
		"1-a.m4a":     {"audio/mp4", ""},
		"1-a.pdf":     {"application/pdf", "attachment"},
		"1-a.txt":     {"text/plain", "attachment"},
		"1-a.bin":     {"application/octet-stream", "attachment"},
		"legacy.svg":  {"image/svg+xml", "attachment"},
		"legacy.html": {"text/html; charset=utf-8", "attachment"},
		"legacy.xml":  {"text/xml; charset=utf-8", "attachment"},
		"noext":       {"application/octet-stream", "attachment"},
	} {
		t.Run(name, func(t *testing.T) {
			ct, cd := ServedAs(name)
			if ct != want[0] || cd != want[1] {
				t.Errorf("%q %q, want %q %q", ct, cd, want[0], want[1])
			}
		})
	}
}

func TestRemove(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		name, err := save(t, s, encodePNG(t, bandsImage(30, 20)))
		if err != nil {
			t.Fatal(err)
		}
		keep, err := save(t, s, encodePNG(t, bandsImage(30, 20)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctxT(t), name); err != nil {
			t.Fatal(err)
		}
		if k := keys(t, s); !slices.Equal(k, []string{"files/" + keep, "thumbs/" + keep}) {
			t.Errorf("after Remove: %v", k)
		}
		if s.Thumbnail(ctxT(t), keep) == "" {
			t.Error("Remove deleted another picture's thumbnail")
		}
		// Missing files or a missing picture are not errors.
		if err := s.Remove(ctxT(t), name); err != nil {
			t.Errorf("second Remove: %v", err)
		}
		if err := s.Remove(ctxT(t), ""); err != nil {
			t.Errorf("Remove(\"\"): %v", err)
		}
		for _, bad := range []string{"../secret", "../../secret", "..", ".", `..\secret`, "/etc/x", "sub/x.jpg", ".hidden", "a\x00b"} {
			if err := s.Remove(ctxT(t), bad); !errors.Is(err, ErrBadName) {
				t.Errorf("Remove(%q) = %v, want ErrBadName", bad, err)
			}
		}
	})
}

// TestRemoveStaysInside: nothing outside the folders can be deleted through a name.
func TestRemoveStaysInside(t *testing.T) {
	base := t.TempDir()
	storage, err := OpenFolders(filepath.Join(base, "files"), filepath.Join(base, "thumbs"))
	if err != nil {
		t.Fatal(err)
	}
	s := storeOn(t, storage)
	secret := filepath.Join(base, "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(base, "files", "sub")
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inner, "x.jpg"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"../secret", "..", `..\secret`, secret, "sub/x.jpg"} {
		s.Remove(ctxT(t), bad)
	}
	for _, p := range []string{secret, filepath.Join(inner, "x.jpg")} {
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
		name, err := save(b, s, data)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Remove(context.Background(), name)
		b.StartTimer()
	}
}

// TestCopyFiles: a folder's files and thumbnails are copied into a bucket, each as it
// was; a second copy skips them all; what is not a plain name stays behind.
func TestCopyFiles(t *testing.T) {
	from, to := newStore(t), newS3Store(t)
	picture := encodePNG(t, bandsImage(30, 20))
	name, err := save(t, from, picture)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := from.SaveAttachment(ctxT(t), strings.NewReader("%PDF-1.4"), 8, "a.pdf", testNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := write(ctxT(t), from.files, "tn/legacy.jpg", strings.NewReader("nested")); err != nil {
		t.Fatal(err)
	}
	copied, skipped, err := CopyFiles(ctxT(t), from.Storage, to.Storage)
	if err != nil || copied != 3 || skipped != 0 {
		t.Fatalf("CopyFiles = %d copied, %d skipped, %v", copied, skipped, err)
	}
	if got := keys(t, to); !slices.Equal(got, sorted("files/"+name, "files/"+doc, "thumbs/"+name)) {
		t.Errorf("the bucket holds %v", got)
	}
	if !bytes.Equal(read(t, to.files, name), picture) || !bytes.Equal(read(t, to.thumbs, name), read(t, from.thumbs, name)) {
		t.Error("copies differ")
	}
	if copied, skipped, err := CopyFiles(ctxT(t), from.Storage, to.Storage); err != nil || copied != 0 || skipped != 3 {
		t.Errorf("again: %d copied, %d skipped, %v", copied, skipped, err)
	}
}

// TestObjectAttributes: objects in a bucket carry how they are to be served, for a
// download_url that points at the bucket or a CDN: type, disposition, and a long cache
// life, names being never reused.
func TestObjectAttributes(t *testing.T) {
	s := newS3Store(t)
	picture, err := save(t, s, encodePNG(t, bandsImage(30, 20)))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := s.SaveAttachment(ctxT(t), strings.NewReader("%PDF-1.4"), 8, "a.pdf", testNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                       string
		a                          area
		object, ctype, disposition string
	}{
		{"picture", s.files, picture, "image/png", ""},
		{"thumbnail", s.thumbs, picture, "image/png", ""},
		{"attachment", s.files, doc, "application/pdf", "attachment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs, err := tc.a.bucket.Attributes(ctxT(t), tc.a.key(tc.object))
			if err != nil {
				t.Fatal(err)
			}
			if attrs.ContentType != tc.ctype || attrs.ContentDisposition != tc.disposition || attrs.CacheControl != "public, max-age=31536000, immutable" {
				t.Errorf("%s: %q %q %q", tc.a.key(tc.object), attrs.ContentType, attrs.ContentDisposition, attrs.CacheControl)
			}
		})
	}
}

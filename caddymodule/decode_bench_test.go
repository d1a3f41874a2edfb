package caddymodule_test

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-messenger/messenger/internal/testenv"
)

// sixteenBitPNG is a real, complete w×h PNG of 16-bit RGBA pixels, as the hardening
// report's decode bomb: each row repeats the one above (filter Up), so it compresses a
// thousandfold, and it is written row by row without ever holding the picture.
func sixteenBitPNG(w, h int) []byte {
	var idat bytes.Buffer
	z, _ := zlib.NewWriterLevel(&idat, zlib.BestCompression)
	row := make([]byte, 1+8*w)
	for x := range w { // a grey gradient, opaque
		v := byte(x * 255 / w)
		copy(row[1+8*x:], []byte{v, v, v, v, v, v, 0xFF, 0xFF})
	}
	z.Write(row)
	same := make([]byte, 1+8*w)
	same[0] = 2 // Up: every byte as above
	for range h - 1 {
		z.Write(same)
	}
	z.Close()
	return testenv.PNG(uint32(w), uint32(h), 16, idat.Bytes())
}

// BenchmarkParallelPictureUploads measures what 20 users uploading large pictures in
// parallel, once or again and again for 5 s, do to a separate caddy process: its resident
// memory before, at the peak (VmHWM) and after, and the latency of another user's cheap
// requests (the periodic sync) before and during the uploads. Not a CI test: run it alone on an idle machine, on MySQL, e.g.
//
//	MESSENGER_TEST_STORE=mysql go test -run '^$' -bench ParallelPictureUploads -benchtime 1x ./caddymodule/
//
// Its figures are in docs/performance.md.
func BenchmarkParallelPictureUploads(b *testing.B) {
	for _, tc := range []struct {
		name string
		data func() []byte
		// phase is how long each user goes on uploading; 0 is one upload each.
		phase time.Duration
	}{
		// The hardening report's file: under max_picture_pixels, 320 MB decoded.
		{"16-bit 6324x6324 once", func() []byte { return sixteenBitPNG(6324, 6324) }, 0},
		{"16-bit 6324x6324 for 5s", func() []byte { return sixteenBitPNG(6324, 6324) }, 5 * time.Second},
		// The largest 16-bit RGBA picture the default decode memory admits (98 MB decoded).
		{"16-bit 3500x3500 for 5s", func() []byte { return sixteenBitPNG(3500, 3500) }, 5 * time.Second},
		// A 12-megapixel phone photo.
		{"jpeg 4000x3000 for 5s", func() []byte { return photoJPEG(b, 4000, 3000) }, 5 * time.Second},
	} {
		b.Run(tc.name, func(b *testing.B) {
			data := tc.data()
			for b.Loop() {
				measureUploads(b, data, tc.phase)
			}
		})
	}
}

func measureUploads(b *testing.B, picture []byte, phase time.Duration) {
	e := startEnv(b, options{extra: benchLimits + "\n\t\tupload_budget 4GiB 1h", process: true})
	apiURL := processURL
	client := &http.Client{Timeout: time.Minute}
	login := func(phone string) string {
		e.t.Helper()
		a := e.callURL(apiURL, form, map[string]any{"op": "login", "phone": "+" + phone, "appid": "a"})
		expectOK(b, a, "login")
		a = e.callURL(apiURL, form, map[string]any{"op": "login", "phone": "+" + phone, "appid": "a", "otp": e.hook.lastCode(phone)})
		expectOK(b, a, "login")
		return a.str("token")
	}
	watcher := login("919812360000")
	var uploaders []string
	for i := range 20 {
		uploaders = append(uploaders, login(fmt.Sprintf("9198123600%02d", i+1)))
	}
	contactSync := func() time.Duration {
		start := time.Now()
		if err := postTo(client, apiURL, url.Values{"op": {"getcontacts"}, "token": {watcher}}); err != nil {
			b.Error(err)
		}
		return time.Since(start)
	}
	idle := make([]time.Duration, 200)
	for i := range idle {
		idle[i] = contactSync()
	}
	rssBefore := procStatus(b, e.process.Pid, "VmRSS")

	// Each uploader uploads again and again until phase has passed, at least once.
	var wg sync.WaitGroup
	codes := make([][]string, len(uploaders))
	start := time.Now()
	for i, token := range uploaders {
		wg.Go(func() {
			for len(codes[i]) == 0 || time.Since(start) < phase {
				codes[i] = append(codes[i], uploadTo(b, client, apiURL, token, picture))
			}
		})
	}
	uploaded := make(chan time.Duration)
	go func() { wg.Wait(); uploaded <- time.Since(start) }()
	var busy []time.Duration
	var elapsed time.Duration
	for elapsed == 0 {
		busy = append(busy, contactSync())
		select {
		case elapsed = <-uploaded:
		case <-time.After(10 * time.Millisecond):
		}
	}
	peak := procStatus(b, e.process.Pid, "VmHWM")
	rssAfter := procStatus(b, e.process.Pid, "VmRSS")

	b.ReportMetric(float64(rssBefore)/1024, "rss-before-MB")
	b.ReportMetric(float64(peak)/1024, "rss-peak-MB")
	b.ReportMetric(float64(rssAfter)/1024, "rss-after-MB")
	b.ReportMetric(elapsed.Seconds(), "uploads-s")
	b.ReportMetric(float64(len(slices.Concat(codes...)))/elapsed.Seconds(), "uploads/s")
	b.ReportMetric(ms(percentile(idle, 50)), "sync-idle-p50-ms")
	b.ReportMetric(ms(percentile(idle, 99)), "sync-idle-p99-ms")
	b.ReportMetric(ms(percentile(busy, 50)), "sync-busy-p50-ms")
	b.ReportMetric(ms(percentile(busy, 99)), "sync-busy-p99-ms")
	b.Logf("%d bytes per upload; answers %v; %d syncs during the uploads", len(picture), tally(slices.Concat(codes...)), len(busy))
}

func postTo(client *http.Client, apiURL string, fields url.Values) error {
	resp, err := client.Post(apiURL, "application/x-www-form-urlencoded", strings.NewReader(fields.Encode()))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	if !bytes.Contains(body.Bytes(), []byte(`"result":"OK"`)) {
		return fmt.Errorf("answer %.300s", body.Bytes())
	}
	return nil
}

// uploadTo uploads a profile picture and returns the answer's code, "OK" for success.
func uploadTo(b *testing.B, client *http.Client, apiURL, token string, picture []byte) string {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("op", "upload")
	mw.WriteField("token", token)
	mw.WriteField("profile", "1")
	fw, _ := mw.CreateFormFile("photo", "big.png")
	fw.Write(picture)
	mw.Close()
	resp, err := client.Post(apiURL, mw.FormDataContentType(), &buf)
	if err != nil {
		b.Error(err)
		return "error"
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	if bytes.Contains(body.Bytes(), []byte(`"result":"OK"`)) {
		return "OK"
	}
	if i := bytes.Index(body.Bytes(), []byte(`"error":"`)); i >= 0 {
		code, _, _ := strings.Cut(string(body.Bytes()[i+9:]), `"`)
		return code
	}
	return "?"
}

func tally(codes []string) map[string]int {
	out := map[string]int{}
	for _, c := range codes {
		out[c]++
	}
	return out
}

// procStatus is a field of /proc/PID/status in kB.
func procStatus(b *testing.B, pid int, field string) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return kb
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// photoJPEG is a photo-like w×h JPEG (4:2:0): smooth gradients plus noise.
func photoJPEG(b *testing.B, w, h int) []byte {
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range img.Y {
		img.Y[i] = uint8(i%w/16 + rng.IntN(16))
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = uint8(i/w), uint8(i%w/8)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkAttachmentUploadMemory measures a separate caddy process's resident memory
// before and at the peak (VmHWM) of one 100 MB chat attachment, sent as the apps send
// it, stored in a folder or in an S3 bucket. Figures in docs/performance.md.
func BenchmarkAttachmentUploadMemory(b *testing.B) {
	for _, store := range []string{"file", "s3"} {
		b.Run(store, func(b *testing.B) {
			for b.Loop() {
				o := options{extra: benchLimits + "\n\t\tupload_budget 4GiB 1h", process: true}
				if store == "s3" {
					o.storage = testenv.StartS3(b).URL()
				}
				e := startEnv(b, o)
				a := e.callURL(processURL, form, map[string]any{"op": "login", "phone": "+919812361001", "appid": "a"})
				expectOK(b, a, "login")
				a = e.callURL(processURL, form, map[string]any{"op": "login", "phone": "+919812361001", "appid": "a", "otp": e.hook.lastCode("919812361001")})
				expectOK(b, a, "login")
				before := procStatus(b, e.process.Pid, "VmRSS")
				body, contentType := streamedUpload(a.str("token"), 100<<20)
				start := time.Now()
				resp, err := http.Post(processURL, contentType, body)
				if err != nil {
					b.Fatal(err)
				}
				var answer bytes.Buffer
				answer.ReadFrom(resp.Body)
				resp.Body.Close()
				if !bytes.Contains(answer.Bytes(), []byte(`"result":"OK"`)) {
					b.Fatalf("answer %s", answer.Bytes())
				}
				b.ReportMetric(time.Since(start).Seconds(), "upload-s")
				b.ReportMetric(float64(before)/1024, "rss-before-MB")
				b.ReportMetric(float64(procStatus(b, e.process.Pid, "VmHWM"))/1024, "rss-peak-MB")
			}
		})
	}
}

// streamedUpload is a multipart upload of an attachment of size bytes, generated as it
// is sent.
func streamedUpload(token string, size int64) (io.Reader, string) {
	r, w := io.Pipe()
	mw := multipart.NewWriter(w)
	go func() {
		mw.WriteField("op", "upload")
		mw.WriteField("token", token)
		mw.WriteField("profile", "0")
		fw, _ := mw.CreateFormFile("photo", "video.mp4")
		fw.Write([]byte("\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"))
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
		for n := int64(0); n < size; n += int64(len(chunk)) {
			fw.Write(chunk)
		}
		w.CloseWithError(mw.Close())
	}()
	return r, mw.FormDataContentType()
}

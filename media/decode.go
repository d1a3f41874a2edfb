package media

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"runtime"

	"golang.org/x/image/draw"
	"golang.org/x/sync/semaphore"
)

// DefaultDecodeMemory is the memory that pictures being decoded may take at once
// when none is given, and so the most one picture may take.
const DefaultDecodeMemory = 96 << 20

// decodeOverhead is what one decode takes besides its pixels and coefficients:
// decoder state, row buffers, the thumbnail.
const decodeOverhead = 1 << 20

// ErrBusy reports that a picture could not get its share of decoding memory before
// the request's context ended: the server is decoding other pictures.
var ErrBusy = errors.New("media: busy decoding other pictures")

// DecodeGate bounds what decoding pictures takes at once: memory, by the size each
// picture's header announces, and processors, so that other requests keep a core.
// One gate serves a process, whatever number of configs share it.
type DecodeGate struct {
	memory   *semaphore.Weighted
	capacity int64
	slots    *semaphore.Weighted
}

// NewDecodeGate returns a gate of memory bytes (0: DefaultDecodeMemory) and slots
// decodes at a time (0: one less than the processors Go uses, at least one).
func NewDecodeGate(memory int64, slots int) *DecodeGate {
	if memory <= 0 {
		memory = DefaultDecodeMemory
	}
	if slots <= 0 {
		slots = max(1, runtime.GOMAXPROCS(0)-1)
	}
	return &DecodeGate{memory: semaphore.NewWeighted(memory), capacity: memory, slots: semaphore.NewWeighted(int64(slots))}
}

// enter waits for a slot and cost bytes of memory; release gives both back.
func (g *DecodeGate) enter(ctx context.Context, cost int64) (release func(), err error) {
	if err := g.slots.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBusy, err)
	}
	if err := g.memory.Acquire(ctx, cost); err != nil {
		g.slots.Release(1)
		return nil, fmt.Errorf("%w: %v", ErrBusy, err)
	}
	return func() {
		if cost >= g.capacity/4 {
			// The picture just decoded is garbage as large as a good part of the gate.
			// The collector would wait for the heap to double before reclaiming it, so the
			// next decode would grow the process by as much again: collect it now, and the
			// next one reuses its memory (docs/performance.md).
			runtime.GC()
		}
		g.memory.Release(cost)
		g.slots.Release(1)
	}, nil
}

// decodeCost is the memory the decoder of kind takes for the picture whose header
// is cfg, from the bytes per pixel of its color model (a 16-bit RGBA PNG takes eight
// per pixel, a baseline 4:2:0 JPEG one and a half), before anything is decoded.
func decodeCost(kind string, cfg image.Config, r io.ReaderAt) (int64, error) {
	pixels := int64(cfg.Width) * int64(cfg.Height)
	switch kind {
	case "jpeg":
		return jpegCost(r, cfg)
	case "png":
		// An interlaced PNG is decoded pass by pass into images of its own, then copied.
		var ihdr [29]byte
		if _, err := r.ReadAt(ihdr[:], 0); err != nil {
			return 0, err
		}
		cost := pixels * bytesPerPixel(cfg.ColorModel)
		if ihdr[28] != 0 {
			cost *= 2
		}
		return cost + decodeOverhead, nil
	case "webp":
		perPixel := float64(bytesPerPixel(cfg.ColorModel))
		switch cfg.ColorModel {
		case color.NRGBAModel: // lossless: ARGB words, then the picture
			perPixel = 8
		case color.YCbCrModel: // lossy 4:2:0
			perPixel = 1.5
		}
		return int64(float64(pixels)*perPixel) + decodeOverhead, nil
	}
	return pixels*bytesPerPixel(cfg.ColorModel) + decodeOverhead, nil // gif: palette indices
}

// bytesPerPixel is what one pixel of a picture of model takes in memory.
func bytesPerPixel(model color.Model) int64 {
	switch model {
	case color.GrayModel, color.AlphaModel:
		return 1
	case color.Gray16Model, color.Alpha16Model:
		return 2
	case color.RGBA64Model, color.NRGBA64Model:
		return 8
	case color.YCbCrModel:
		return 3
	case color.NYCbCrAModel:
		return 4
	}
	if _, ok := model.(color.Palette); ok {
		return 1
	}
	return 4 // RGBA, NRGBA, CMYK
}

// JPEG markers that matter to the cost.
const (
	markerSOF0 = 0xC0 // baseline
	markerSOF1 = 0xC1 // extended sequential
	markerSOF2 = 0xC2 // progressive
	markerSOS  = 0xDA
)

// jpegCost is what image/jpeg allocates: a plane per component at its sampling,
// plus a black plane and a CMYK picture for four components, plus, for a progressive
// JPEG, every block's 64 coefficients as int32 (4 bytes per sample) until the end.
func jpegCost(r io.ReaderAt, cfg image.Config) (int64, error) {
	sof, progressive, err := jpegFrame(r)
	if err != nil {
		return 0, err
	}
	// Frame header: precision, height, width, count, then 3 bytes per component.
	n := int(sof[5])
	if n < 1 || len(sof) < 6+3*n {
		return 0, errors.New("short frame header")
	}
	hmax, vmax := 1, 1
	for i := range n {
		hv := sof[6+3*i+1]
		hmax, vmax = max(hmax, int(hv>>4)), max(vmax, int(hv&15))
	}
	// The decoder rounds planes up to whole MCUs.
	mcuW := int64((cfg.Width + 8*hmax - 1) / (8 * hmax))
	mcuH := int64((cfg.Height + 8*vmax - 1) / (8 * vmax))
	var samples int64
	for i := range n {
		hv := sof[6+3*i+1]
		samples += mcuW * 8 * int64(hv>>4) * mcuH * 8 * int64(hv&15)
	}
	cost := samples
	if n == 4 {
		cost += 4 * int64(cfg.Width) * int64(cfg.Height)
	}
	if progressive {
		cost += 4 * samples
	}
	return cost + decodeOverhead, nil
}

// jpegFrame reads the segments up to the frame header (SOF0, SOF1 or SOF2, the ones
// image/jpeg decodes) and returns its payload and whether the JPEG is progressive.
// Segments before it are skipped by their length, so an EXIF thumbnail's own frame
// header is not taken for the picture's. It then refuses a JPEG with more than
// maxJPEGScans scans: 0xFF 0xDA (start of scan) cannot occur inside entropy-coded
// data, where 0xFF is always stuffed, so counting it bounds the number of scans.
func jpegFrame(r io.ReaderAt) (sof []byte, progressive bool, err error) {
	br := bufio.NewReader(io.NewSectionReader(r, 0, 1<<62))
	if _, err := br.Discard(2); err != nil { // SOI, checked by DecodeConfig
		return nil, false, err
	}
	for sof == nil {
		marker, err := nextMarker(br)
		if err != nil {
			return nil, false, err
		}
		var length [2]byte
		if _, err := io.ReadFull(br, length[:]); err != nil {
			return nil, false, err
		}
		payload := max(int(binary.BigEndian.Uint16(length[:]))-2, 0)
		switch marker {
		case markerSOF0, markerSOF1, markerSOF2:
			sof = make([]byte, payload)
			if _, err := io.ReadFull(br, sof); err != nil {
				return nil, false, err
			}
			progressive = marker == markerSOF2
		case markerSOS:
			return nil, false, errors.New("scan before the frame header")
		default:
			if _, err := br.Discard(payload); err != nil {
				return nil, false, err
			}
		}
	}
	if len(sof) < 6 {
		return nil, false, errors.New("short frame header")
	}
	scans := 0
	for prevFF := false; ; {
		b, err := br.ReadByte()
		if errors.Is(err, io.EOF) {
			return sof, progressive, nil
		}
		if err != nil {
			return nil, false, err
		}
		if prevFF && b == markerSOS {
			if scans++; scans > maxJPEGScans {
				return nil, false, fmt.Errorf("%w: too many JPEG scans", ErrBadImage)
			}
		}
		prevFF = b == 0xFF
	}
}

// nextMarker skips to the next marker and returns its code: 0xFF, any fill bytes
// 0xFF, then the code. Markers without a payload (RSTn, TEM) are skipped.
func nextMarker(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != 0xFF {
			continue
		}
		for b == 0xFF {
			if b, err = br.ReadByte(); err != nil {
				return 0, err
			}
		}
		if b != 0 && b != 0x01 && (b < 0xD0 || b > 0xD7) {
			return b, nil
		}
	}
}

// Thumbnail steps: a picture much larger than the thumbnail is first reduced with a
// cheap filter to prescaleSide, so the fine filter's work does not grow with the
// picture (measured in docs/performance.md).
const (
	thumbSize    = 100
	thumbQuality = 50
	prescaleSide = 4 * thumbSize
)

// thumbnail scales the largest centred square of img to 100×100 over a white
// background (so transparency turns white, not black).
func thumbnail(img image.Image) *image.RGBA {
	b := img.Bounds()
	side := min(b.Dx(), b.Dy())
	x0 := b.Min.X + (b.Dx()-side)/2
	y0 := b.Min.Y + (b.Dy()-side)/2
	var src image.Image = img
	crop := image.Rect(x0, y0, x0+side, y0+side)
	if side > prescaleSide {
		small := image.NewRGBA(image.Rect(0, 0, prescaleSide, prescaleSide))
		draw.ApproxBiLinear.Scale(small, small.Bounds(), img, crop, draw.Src, nil)
		src, crop = small, small.Bounds()
	}
	dst := image.NewRGBA(image.Rect(0, 0, thumbSize, thumbSize))
	draw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, crop, draw.Over, nil)
	return dst
}

package testenv

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
)

// PNG is a PNG of w×h RGBA pixels of depth bits per channel (8 or 16) whose image data
// is idat, a zlib stream of filtered rows as the format has them: a file whose header
// can declare more than idat holds, as decode bombs do.
func PNG(w, h uint32, depth byte, idat []byte) []byte {
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
	chunk("IHDR", append(ihdr, depth, 6, 0, 0, 0)) // RGBA, deflate, no filter, no interlace
	chunk("IDAT", idat)
	chunk("IEND", nil)
	return b.Bytes()
}

package media

import (
	"context"
	"fmt"
	"io"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// CopyFiles copies the files and thumbnails of from into to, each streamed from one to
// the other (a deployment moving from a folder to a bucket, or between buckets). Names
// are never reused, so one that to already holds with the same size is skipped: a copy
// that was interrupted, or that runs again just before the switch, copies only what is
// new. Only plain names are copied (what Remove would take); anything else in the
// folders, such as the original backend's files/tn/, is left alone.
func CopyFiles(ctx context.Context, from, to *Storage) (copied, skipped int, err error) {
	for _, pair := range [][2]area{{from.files, to.files}, {from.thumbs, to.thumbs}} {
		src, dst := pair[0], pair[1]
		iter := src.bucket.List(&blob.ListOptions{Prefix: src.prefix, Delimiter: "/"})
		for {
			obj, err := iter.Next(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				return copied, skipped, fmt.Errorf("listing %s: %w", src.prefix, err)
			}
			name := strings.TrimPrefix(obj.Key, src.prefix)
			if obj.IsDir || !validName(name) {
				continue
			}
			attrs, err := dst.bucket.Attributes(ctx, dst.key(name))
			switch {
			case err == nil && attrs.Size == obj.Size:
				skipped++
				continue
			case err != nil && gcerrors.Code(err) != gcerrors.NotFound:
				return copied, skipped, fmt.Errorf("checking %s: %w", dst.key(name), err)
			}
			if err := copyObject(ctx, src, dst, name); err != nil {
				return copied, skipped, err
			}
			copied++
		}
	}
	return copied, skipped, nil
}

func copyObject(ctx context.Context, src, dst area, name string) error {
	r, err := src.bucket.NewReader(ctx, src.key(name), nil)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src.key(name), err)
	}
	defer r.Close()
	return write(ctx, dst, name, r)
}

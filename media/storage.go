package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"

	// s3:// besides file://. gs:// and azblob:// come with the packages media/gs and
	// media/azblob, left out of the default build for their size (docs/storage.md).
	_ "gocloud.dev/blob/s3blob"
)

// The layout of a storage bucket: pictures and attachments under files/, the
// thumbnails of pictures under thumbs/ with the picture's name. The same as the
// folders files/ and thumbs/ of a local data folder.
const (
	FilesPrefix  = "files/"
	ThumbsPrefix = "thumbs/"
)

// The part size of multipart uploads through blob, the smallest S3 takes, and how many
// are sent at once: what a streamed upload holds in memory.
const (
	partSize          = 5 << 20
	uploadConcurrency = 2
)

// Storage is where one deployment keeps its files: a bucket opened from a URL
// (file://, s3://; gs:// and azblob:// with media/gs and media/azblob), or two local
// folders. Instances that share a bucket share the files. It is safe for concurrent use.
type Storage struct {
	files, thumbs area
	buckets       []*blob.Bucket // to close
}

// area is a part of a bucket: the keys under prefix.
type area struct {
	bucket *blob.Bucket
	prefix string
	// s3 puts uploads of known size into an s3:// bucket in one request.
	s3 *s3Put
}

// s3Put is an S3 bucket's client. Through blob, the AWS transfer manager holds the first
// 16 MiB of every upload in memory (it sends a smaller one in one request) and then
// 5 MiB parts; a PutObject of a body that can be read again streams it instead
// (docs/performance.md). One request takes up to 5 GiB.
type s3Put struct {
	client *s3.Client
	bucket string
}

const maxPutObject = 5 << 30

func (a area) key(name string) string { return a.prefix + name }

// OpenStorage opens the bucket of a storage URL, with files/ and thumbs/ in it. The
// URL may set any parameter of its kind; these defaults apply where it does not:
//   - file://: no .attrs file beside each file (metadata=skip), so the folder stays a
//     plain static site; temp files beside their final name (no_tmp_dir), so the final
//     rename stays on one file system; the folder created when missing (create_dir).
//   - s3://: checksums only where the store requires them (request_ and
//     response_checksum_validation=when_required), which every S3-compatible store
//     takes, and which keeps the AWS SDK from logging each ranged read.
func OpenStorage(ctx context.Context, storageURL string) (*Storage, error) {
	u, err := url.Parse(storageURL)
	if err != nil {
		return nil, fmt.Errorf("storage URL: %w", err)
	}
	q := u.Query()
	for k, v := range urlDefaults[u.Scheme] {
		if !q.Has(k) {
			q.Set(k, v)
		}
	}
	u.RawQuery = q.Encode()
	b, err := blob.OpenBucket(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("storage %s://%s: %w", u.Scheme, u.Host, err)
	}
	var put *s3Put
	if client := (*s3.Client)(nil); b.As(&client) {
		put = &s3Put{client, u.Host}
	}
	return &Storage{files: area{b, FilesPrefix, put}, thumbs: area{b, ThumbsPrefix, put}, buckets: []*blob.Bucket{b}}, nil
}

// urlDefaults are the parameters OpenStorage adds to a URL of a scheme.
var urlDefaults = map[string]map[string]string{
	fileblob.Scheme: {"metadata": "skip", "no_tmp_dir": "1", "create_dir": "1"},
	"s3":            {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"},
}

// OpenFolders opens two local folders as the storage: filesDir for pictures and
// attachments, thumbsDir for thumbnails (the original backend used files/ and
// files/tn/). Both are created when missing.
func OpenFolders(filesDir, thumbsDir string) (*Storage, error) {
	var buckets []*blob.Bucket
	for _, dir := range []string{filesDir, thumbsDir} {
		b, err := fileblob.OpenBucket(dir, &fileblob.Options{
			CreateDir: true, NoTempDir: true, Metadata: fileblob.MetadataDontWrite, DirFileMode: 0o755,
		})
		if err != nil {
			for _, b := range buckets {
				b.Close()
			}
			return nil, fmt.Errorf("storage folder %s: %w", dir, err)
		}
		buckets = append(buckets, b)
	}
	return &Storage{files: area{buckets[0], "", nil}, thumbs: area{buckets[1], "", nil}, buckets: buckets}, nil
}

// Close closes the buckets.
func (s *Storage) Close() error {
	var errs []error
	for _, b := range s.buckets {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

// Remove deletes the file name and its thumbnail, if any. Missing files are not an
// error, and an empty name (no picture) is a no-op.
//
// A valid name is a plain file name: no "/" or "\", no NUL, and no leading "."
// (which also excludes ".." and temp files). This is looser than the names this
// package makes (UNIXTIME-RANDOM16HEX.EXT) because pictures stored by the original
// PHP backend have names of its own format. Any other name returns ErrBadName and
// deletes nothing.
func (s *Storage) Remove(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	if !validName(name) {
		return ErrBadName
	}
	return errors.Join(deleteIfAny(ctx, s.files, name), deleteIfAny(ctx, s.thumbs, name))
}

func deleteIfAny(ctx context.Context, a area, name string) error {
	if err := a.bucket.Delete(ctx, a.key(name)); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return err
	}
	return nil
}

// write stores r under name in a; the object appears whole or not at all (a file
// store renames a finished temp file; an object store commits the upload).
func write(ctx context.Context, a area, name string, r io.Reader) error {
	contentType, disposition := ServedAs(name)
	// Names are never reused: a CDN or browser may keep a file for good.
	const cacheControl = "public, max-age=31536000, immutable"
	var err error
	if sr, ok := r.(*io.SectionReader); ok && a.s3 != nil && sr.Size() <= maxPutObject {
		in := &s3.PutObjectInput{
			Bucket: &a.s3.bucket, Key: aws.String(a.key(name)), Body: sr, ContentLength: aws.Int64(sr.Size()),
			ContentType: &contentType, CacheControl: aws.String(cacheControl),
		}
		if disposition != "" {
			in.ContentDisposition = &disposition
		}
		_, err = a.s3.client.PutObject(ctx, in)
	} else {
		err = a.bucket.Upload(ctx, a.key(name), r, &blob.WriterOptions{
			ContentType: contentType, ContentDisposition: disposition, CacheControl: cacheControl,
			BufferSize: partSize, MaxConcurrency: uploadConcurrency,
		})
	}
	if err != nil {
		return fmt.Errorf("storing %s: %w", a.key(name), err)
	}
	return nil
}

// Check reports whether the storage's buckets can be reached, for a warning at start.
func (s *Storage) Check(ctx context.Context) error {
	for _, b := range s.buckets {
		ok, err := b.IsAccessible(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("the bucket does not exist")
		}
	}
	return nil
}

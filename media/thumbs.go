package media

import (
	"context"
	"encoding/base64"
	"time"

	"github.com/maypok86/otter/v2"
	"go.uber.org/zap"
	"gocloud.dev/gcerrors"
	"golang.org/x/sync/errgroup"
)

// DefaultThumbnailCache is the size of a thumbnail cache when none is given: some
// thousands of thumbnails (a 100×100 JPEG at quality 50 is a few KB).
const DefaultThumbnailCache = 32 << 20

const (
	// missingTTL is how long a thumbnail found missing is remembered as such. Thumbnails
	// are written before their picture's name is stored anywhere, so a miss is usually
	// a legacy picture without one; the short life lets files copied in later show up.
	missingTTL = time.Minute
	// forever is the life of a thumbnail found: names are never reused.
	forever = 100 * 365 * 24 * time.Hour
	// readTimeout bounds one thumbnail read, so a hung store costs an answer its
	// thumbnails, not the answer.
	readTimeout = 5 * time.Second
	// parallelReads is how many thumbnails one answer reads from the store at once.
	parallelReads = 16
	// entryOverhead is what a cache entry costs besides its key and value.
	entryOverhead = 64
)

// ThumbnailCache keeps thumbnails in memory, base64-encoded as the answers carry them,
// up to a number of bytes, so that answers listing many users (a sync of 1,000
// contacts) do not read each thumbnail from the store every time. Names are never
// reused, so an entry never goes stale. It is safe for concurrent use.
type ThumbnailCache struct {
	c *otter.Cache[string, string] // name → base64, or "" for none
}

// NewThumbnailCache returns a cache of bytes (0: DefaultThumbnailCache).
func NewThumbnailCache(bytes int64) *ThumbnailCache {
	if bytes <= 0 {
		bytes = DefaultThumbnailCache
	}
	return &ThumbnailCache{otter.Must(&otter.Options[string, string]{
		MaximumWeight: uint64(bytes),
		Weigher: func(name, tn string) uint32 {
			return uint32(min(len(name)+len(tn)+entryOverhead, 1<<31))
		},
		ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[string, string]) time.Duration {
			if e.Value == "" {
				return missingTTL
			}
			return forever
		}),
	})}
}

// Close stops the cache's background work.
func (c *ThumbnailCache) Close() { c.c.StopAllGoroutines() }

// Thumbnail returns the standard base64 encoding of the thumbnail of the picture
// name, or "" when name is empty, not a valid name (see Remove), has no thumbnail,
// or the store cannot be read (logged).
func (s *Store) Thumbnail(ctx context.Context, name string) string {
	if !validName(name) {
		return ""
	}
	tn, err := s.Cache.c.Get(ctx, name, otter.LoaderFunc[string, string](s.loadThumbnail))
	if err != nil {
		s.logger().Warn("reading a thumbnail failed", zap.String("name", name), zap.Error(err))
		return ""
	}
	return tn
}

// Thumbnails is Thumbnail for many names at once, as a sync answer needs them: the
// cache answers what it holds, and the rest is read from the store in parallel. A
// name without a thumbnail is not in the map.
func (s *Store) Thumbnails(ctx context.Context, names []string) map[string]string {
	valid := make([]string, 0, len(names))
	for _, n := range names {
		if validName(n) {
			valid = append(valid, n)
		}
	}
	if len(valid) == 0 {
		return nil
	}
	tns, err := s.Cache.c.BulkGet(ctx, valid, otter.BulkLoaderFunc[string, string](s.loadThumbnails))
	if err != nil {
		s.logger().Warn("reading thumbnails failed", zap.Error(err))
	}
	for name, tn := range tns {
		if tn == "" {
			delete(tns, name)
		}
	}
	return tns
}

// Remove deletes the file name and its thumbnail (see Storage.Remove), also from
// the cache.
func (s *Store) Remove(ctx context.Context, name string) error {
	err := s.Storage.Remove(ctx, name)
	if err == nil && name != "" {
		s.Cache.c.Invalidate(name)
	}
	return err
}

// loadThumbnail reads one thumbnail: "" (cached for a while) when there is none.
func (s *Store) loadThumbnail(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	data, err := s.thumbs.bucket.ReadAll(ctx, s.thumbs.key(name))
	switch {
	case gcerrors.Code(err) == gcerrors.NotFound:
		return "", nil
	case err != nil:
		return "", err
	}
	return base64.StdEncoding.EncodeToString(data), nil
}

// loadThumbnails reads thumbnails in parallel. A failed read is logged and leaves its
// name out, so that it is not cached.
func (s *Store) loadThumbnails(ctx context.Context, names []string) (map[string]string, error) {
	tns := make([]string, len(names))
	errs := make([]error, len(names))
	var g errgroup.Group
	g.SetLimit(parallelReads)
	for i, name := range names {
		g.Go(func() error {
			tns[i], errs[i] = s.loadThumbnail(ctx, name)
			return nil
		})
	}
	g.Wait()
	out := make(map[string]string, len(names))
	for i, name := range names {
		if errs[i] != nil {
			s.logger().Warn("reading a thumbnail failed", zap.String("name", name), zap.Error(errs[i]))
			continue
		}
		out[name] = tns[i]
	}
	return out, nil
}

package caddymodule

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/media"
	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/otp"
	"github.com/caddy-messenger/messenger/phone"
	"github.com/caddy-messenger/messenger/ratelimit"
	"github.com/caddy-messenger/messenger/store"
)

// pools holds the database pools, Redis clients (or in-memory code stores and limiters),
// mesibo clients, storages, thumbnail caches and decode gates of every loaded config. A
// config reload takes the same ones again (same key) before the old config releases
// them, so connections and caches survive reloads.
var pools = caddy.NewUsagePool()

// pooled adapts a closer to caddy.Destructor.
type pooled[T any] struct {
	v     T
	close func() error
}

func (p pooled[T]) Destruct() error { return p.close() }

var _ caddy.Destructor = pooled[int]{}

// deps are the shared clients one Handler uses.
type deps struct {
	store      *store.Store
	codes      otp.Codes
	limiter    *ratelimit.Limiter
	mesibo     *mesiboclient.Client
	storage    *media.Storage
	thumbnails *media.ThumbnailCache
	decodeGate *media.DecodeGate
}

// take loads or creates the pooled value under key and remembers the key in keys, for
// release.
func take[T any](keys *[]string, key string, open func() (T, func() error, error)) (T, error) {
	v, _, err := pools.LoadOrNew(key, func() (caddy.Destructor, error) {
		v, closeFn, err := open()
		if err != nil {
			return nil, err
		}
		return pooled[T]{v: v, close: closeFn}, nil
	})
	if err != nil {
		var zero T
		return zero, err
	}
	*keys = append(*keys, key)
	return v.(pooled[T]).v, nil
}

func (h *Handler) takePools(ctx context.Context) (deps, error) {
	var d deps
	var err error
	// A MySQL pool of another size is another pool; the embedded store has one size.
	maxConns := cmp.Or(h.MaxDBConnections, store.DefaultMaxConns)
	storeKey := "database\x00" + h.Database
	if _, embedded := store.CutEmbedded(h.Database); !embedded {
		storeKey += fmt.Sprintf("\x00%d", maxConns)
	}
	d.store, err = take(&h.poolKey, storeKey, func() (*store.Store, func() error, error) {
		s, err := store.Open(h.Database)
		if err != nil {
			return nil, nil, err
		}
		s.LimitConnections(maxConns)
		return s, s.Close, nil
	})
	if err != nil {
		return d, fmt.Errorf("database: %w", err)
	}
	if err := h.takeCodesAndLimits(&d); err != nil {
		return d, err
	}
	// The key holds a hash of the app token, not the token, in case pools are ever dumped.
	tokenHash := sha256.Sum256([]byte(h.Mesibo.AppToken))
	mesiboKey := fmt.Sprintf("mesibo\x00%s\x00%s\x00%d", h.Mesibo.Endpoint, hex.EncodeToString(tokenHash[:]), h.Mesibo.Timeout)
	d.mesibo, err = take(&h.poolKey, mesiboKey, func() (*mesiboclient.Client, func() error, error) {
		c, err := mesiboclient.New(mesiboclient.Config{
			Endpoint: h.Mesibo.Endpoint, AppToken: h.Mesibo.AppToken, Timeout: time.Duration(h.Mesibo.Timeout),
		})
		if err != nil {
			return nil, nil, err
		}
		return c, func() error { c.Close(); return nil }, nil
	})
	if err != nil {
		return d, fmt.Errorf("mesibo: %w", err)
	}
	return d, h.takeMedia(ctx, &d)
}

// takeMedia gives d the storage, its thumbnail cache (pooled with the storage, since
// names are never reused) and the process's decode gate.
func (h *Handler) takeMedia(ctx context.Context, d *deps) error {
	var err error
	var storageKey string
	d.storage, storageKey, err = takeStorage(ctx, &h.poolKey, h.Storage, h.FilesDir, h.ThumbsDir)
	if err != nil {
		return err
	}
	cacheKey := fmt.Sprintf("thumbnails\x00%s\x00%d", storageKey, h.ThumbnailCache)
	d.thumbnails, err = take(&h.poolKey, cacheKey, func() (*media.ThumbnailCache, func() error, error) {
		c := media.NewThumbnailCache(h.ThumbnailCache)
		return c, func() error { c.Close(); return nil }, nil
	})
	if err != nil {
		return err
	}
	d.decodeGate, err = take(&h.poolKey, fmt.Sprintf("decode-gate\x00%d", h.MaxDecodeMemory), func() (*media.DecodeGate, func() error, error) {
		return media.NewDecodeGate(h.MaxDecodeMemory, 0), func() error { return nil }, nil
	})
	return err
}

// takeStorage takes the pooled storage of a URL, or of two local folders, and returns
// its pool key. The messenger handler and messenger_files share it.
func takeStorage(ctx context.Context, keys *[]string, storageURL, filesDir, thumbsDir string) (*media.Storage, string, error) {
	key := "storage\x00" + storageURL
	open := func() (*media.Storage, error) { return media.OpenStorage(ctx, storageURL) }
	if storageURL == "" {
		key = "storage-folders\x00" + filesDir + "\x00" + thumbsDir
		open = func() (*media.Storage, error) { return media.OpenFolders(filesDir, thumbsDir) }
	}
	s, err := take(keys, key, func() (*media.Storage, func() error, error) {
		s, err := open()
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("storage: %w", err)
	}
	return s, key, nil
}

// takeCodesAndLimits gives d the code store and the rate limiter: in Redis when one is
// configured, else in this process's memory, pooled so that codes and counters survive
// config reloads.
func (h *Handler) takeCodesAndLimits(d *deps) error {
	secret, err := h.otpSecret()
	if err != nil {
		return err
	}
	fixed := map[string]string{}
	for number, code := range h.OTP.TestNumbers {
		fixed[phone.Digits(number)] = code
	}
	cfg := otp.Config{
		Secret: secret, TTL: time.Duration(h.OTP.TTL), MaxChecks: h.OTP.MaxChecks,
		FixedCodes: fixed, KeyPrefix: h.RedisKeyPrefix,
	}
	if h.Redis == "" {
		d.limiter, err = take(&h.poolKey, "memory-limits\x00"+h.RedisKeyPrefix, func() (*ratelimit.Limiter, func() error, error) {
			return ratelimit.NewMemory(h.RedisKeyPrefix + "rl:"), func() error { return nil }, nil
		})
		if err != nil {
			return err
		}
		// The codes and failure counts are pooled, the rules are this config's: a reload
		// keeps lock-outs and codes in flight, as Redis would.
		codes, err := take(&h.poolKey, "memory-codes\x00"+h.RedisKeyPrefix, func() (*otp.MemoryStore, func() error, error) {
			return otp.NewMemoryStore(cfg), func() error { return nil }, nil
		})
		if err != nil {
			return err
		}
		d.codes = codes.WithConfig(cfg)
		return nil
	}
	rdb, err := take(&h.poolKey, "redis\x00"+h.RedisMode+"\x00"+h.Redis, func() (redis.UniversalClient, func() error, error) {
		c, err := newRedisClient(h.RedisMode, h.Redis)
		if err != nil {
			return nil, nil, err
		}
		return c, c.Close, nil
	})
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	d.codes = otp.NewStore(rdb, cfg)
	d.limiter = ratelimit.New(rdb, h.RedisKeyPrefix+"rl:")
	return nil
}

// otpSecret is the configured OTP secret or, when none is set, a random one made once per
// process (pooled, so that codes issued before a config reload still verify after it).
func (h *Handler) otpSecret() ([]byte, error) {
	if h.OTP.Secret != "" {
		return []byte(h.OTP.Secret), nil
	}
	h.logger.Warn("otp secret not set: codes verify only on the instance that issued them, and not after a restart")
	return take(&h.poolKey, "otp-random-secret", func() ([]byte, func() error, error) {
		secret := make([]byte, 32)
		_, err := rand.Read(secret)
		return secret, func() error { return nil }, err
	})
}

func (h *Handler) releasePools() { releasePools(&h.poolKey, h.logger) }

// releasePools releases the pooled values of keys.
func releasePools(keys *[]string, logger *zap.Logger) {
	for _, key := range *keys {
		if _, err := pools.Delete(key); err != nil && logger != nil {
			logger.Error("releasing a shared pool", zap.Error(err))
		}
	}
	*keys = nil
}

// newRedisClient connects to one Redis, a Sentinel-managed failover set, or a Cluster.
// Unless the URL sets them, timeouts are short: with Redis down, code sending must fail
// fast, not hang.
func newRedisClient(mode, url string) (redis.UniversalClient, error) {
	const dial, rw = 2 * time.Second, time.Second
	orDefault := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	switch mode {
	case "", "single":
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, err
		}
		orDefault(&opts.DialTimeout, dial)
		orDefault(&opts.ReadTimeout, rw)
		orDefault(&opts.WriteTimeout, rw)
		return redis.NewClient(opts), nil
	case "sentinel":
		opts, err := redis.ParseFailoverURL(url)
		if err != nil {
			return nil, err
		}
		orDefault(&opts.DialTimeout, dial)
		orDefault(&opts.ReadTimeout, rw)
		orDefault(&opts.WriteTimeout, rw)
		return redis.NewFailoverClient(opts), nil
	case "cluster":
		opts, err := redis.ParseClusterURL(url)
		if err != nil {
			return nil, err
		}
		orDefault(&opts.DialTimeout, dial)
		orDefault(&opts.ReadTimeout, rw)
		orDefault(&opts.WriteTimeout, rw)
		return redis.NewClusterClient(opts), nil
	}
	return nil, fmt.Errorf("unknown redis mode %q (want single, sentinel or cluster)", mode)
}

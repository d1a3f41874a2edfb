package caddymodule

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/otp"
	"github.com/caddy-messenger/messenger/phone"
	"github.com/caddy-messenger/messenger/ratelimit"
	"github.com/caddy-messenger/messenger/store"
)

// pools holds the database pools, Redis clients (or in-memory code stores and limiters)
// and mesibo clients of every loaded
// config. A config reload takes the same ones again (same key) before the old config
// releases them, so connections survive reloads.
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
	store   *store.Store
	codes   otp.Codes
	limiter *ratelimit.Limiter
	mesibo  *mesiboclient.Client
}

// take loads or creates the pooled value under key and remembers the key for release.
func take[T any](h *Handler, key string, open func() (T, func() error, error)) (T, error) {
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
	h.poolKey = append(h.poolKey, key)
	return v.(pooled[T]).v, nil
}

func (h *Handler) takePools() (deps, error) {
	var d deps
	var err error
	// A MySQL pool of another size is another pool; the embedded store has one size.
	maxConns := cmp.Or(h.MaxDBConnections, store.DefaultMaxConns)
	storeKey := "database\x00" + h.Database
	if _, embedded := store.CutEmbedded(h.Database); !embedded {
		storeKey += fmt.Sprintf("\x00%d", maxConns)
	}
	d.store, err = take(h, storeKey, func() (*store.Store, func() error, error) {
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
	d.mesibo, err = take(h, mesiboKey, func() (*mesiboclient.Client, func() error, error) {
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
	return d, nil
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
		d.limiter, err = take(h, "memory-limits\x00"+h.RedisKeyPrefix, func() (*ratelimit.Limiter, func() error, error) {
			return ratelimit.NewMemory(h.RedisKeyPrefix + "rl:"), func() error { return nil }, nil
		})
		if err != nil {
			return err
		}
		// The codes and failure counts are pooled, the rules are this config's: a reload
		// keeps lock-outs and codes in flight, as Redis would.
		codes, err := take(h, "memory-codes\x00"+h.RedisKeyPrefix, func() (*otp.MemoryStore, func() error, error) {
			return otp.NewMemoryStore(cfg), func() error { return nil }, nil
		})
		if err != nil {
			return err
		}
		d.codes = codes.WithConfig(cfg)
		return nil
	}
	rdb, err := take(h, "redis\x00"+h.RedisMode+"\x00"+h.Redis, func() (redis.UniversalClient, func() error, error) {
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
	return take(h, "otp-random-secret", func() ([]byte, func() error, error) {
		secret := make([]byte, 32)
		_, err := rand.Read(secret)
		return secret, func() error { return nil }, err
	})
}

func (h *Handler) releasePools() {
	for _, key := range h.poolKey {
		if _, err := pools.Delete(key); err != nil && h.logger != nil {
			h.logger.Error("releasing a shared pool", zap.Error(err))
		}
	}
	h.poolKey = nil
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

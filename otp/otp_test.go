package otp

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-messenger/messenger/internal/testenv"
)

const testPhone = "919812345678"

func testConfig(prefix string, mutate func(*Config)) Config {
	cfg := Config{
		Secret:    []byte("test-secret-A"),
		TTL:       time.Minute,
		MaxChecks: 5,
		KeyPrefix: prefix,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

// newTestStore returns a Store on the test Redis, for tests of what only Redis has.
func newTestStore(t *testing.T, mutate func(*Config)) (*Store, *redis.Client, string) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	return NewStore(rdb, testConfig(prefix, mutate)), rdb, prefix
}

// testStore is one kind of Codes under test, with the means to look at its state.
type testStore struct {
	Codes
	// checks is the code's check count, as Redis would show it.
	checks func(phone string) (string, bool)
	// mac is the code as stored, and how long it has left.
	mac func(phone string) (string, time.Duration, bool)
	// stored is every name and value the store holds.
	stored func() []string
	// withSecret is another store over the same state (two instances of a deployment)
	// with another secret.
	withSecret func(secret []byte) Codes
}

// kinds are the implementations every behaviour test runs against.
var kinds = []struct {
	name string
	open func(t *testing.T, mutate func(*Config)) *testStore
}{
	{"redis", openRedis},
	{"memory", openMemory},
}

// eachKind runs test against a fresh store of every kind.
func eachKind(t *testing.T, mutate func(*Config), test func(t *testing.T, s *testStore)) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) { test(t, k.open(t, mutate)) })
	}
}

func openRedis(t *testing.T, mutate func(*Config)) *testStore {
	s, rdb, prefix := newTestStore(t, mutate)
	return &testStore{
		Codes: s,
		checks: func(phone string) (string, bool) {
			return hashField(t, rdb, s.codeKey(phone), "checks")
		},
		mac: func(phone string) (string, time.Duration, bool) {
			codeKey := s.codeKey(phone)
			mac, ok := hashField(t, rdb, codeKey, "mac")
			pttl, err := rdb.PTTL(ctxT(t), codeKey).Result()
			if err != nil {
				t.Fatal(err)
			}
			return mac, pttl, ok
		},
		stored: func() []string { return redisValues(t, rdb, prefix) },
		withSecret: func(secret []byte) Codes {
			return NewStore(rdb, testConfig(prefix, func(c *Config) {
				if mutate != nil {
					mutate(c)
				}
				c.Secret = secret
			}))
		},
	}
}

func openMemory(t *testing.T, mutate func(*Config)) *testStore {
	s := NewMemoryStore(testConfig("", mutate))
	// look runs f on the state as a step of the store would see it.
	look := func(f func(now time.Time)) {
		s.mem.mu.Lock()
		defer s.mem.mu.Unlock()
		f(s.mem.now())
	}
	return &testStore{
		Codes: s,
		checks: func(phone string) (checks string, ok bool) {
			look(func(now time.Time) {
				var c memCode
				if c, ok = s.mem.codes.get(phone, now); ok {
					checks = strconv.Itoa(c.checks)
				}
			})
			return checks, ok
		},
		mac: func(phone string) (mac string, ttl time.Duration, ok bool) {
			look(func(now time.Time) {
				var c memCode
				if c, ok = s.mem.codes.get(phone, now); ok {
					mac, ttl = c.mac, s.mem.codes[phone].until.Sub(now)
				}
			})
			return mac, ttl, ok
		},
		stored: func() (all []string) {
			look(func(time.Time) {
				for phone, e := range s.mem.codes {
					all = append(all, phone, e.v.mac, strconv.Itoa(e.v.checks))
				}
			})
			return all
		},
		withSecret: func(secret []byte) Codes {
			cfg := s.cfg
			cfg.Secret = secret
			return &MemoryStore{cfg: cfg, mem: s.mem}
		},
	}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustIssue(t *testing.T, s Codes, phone string) string {
	t.Helper()
	code, err := s.Issue(ctxT(t), phone)
	if err != nil {
		t.Fatalf("Issue(%s): %v", phone, err)
	}
	return code
}

// wrongCode returns a 6-digit code different from code.
func wrongCode(code string) string {
	n, _ := strconv.Atoi(code)
	return pad6((n + 1) % 1_000_000)
}

func pad6(n int) string {
	s := strconv.Itoa(n)
	return strings.Repeat("0", 6-len(s)) + s
}

// keysUnder lists every Redis key starting with prefix.
func keysUnder(t *testing.T, rdb *redis.Client, prefix string) []string {
	t.Helper()
	ctx := ctxT(t)
	var keys []string
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan: %v", err)
	}
	return keys
}

// redisValues lists every key name, hash field and value under prefix.
func redisValues(t *testing.T, rdb *redis.Client, prefix string) []string {
	t.Helper()
	ctx := ctxT(t)
	var values []string
	for _, k := range keysUnder(t, rdb, prefix) {
		values = append(values, k)
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case "hash":
			m, err := rdb.HGetAll(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			for f, v := range m {
				values = append(values, f, v)
			}
		case "string":
			v, err := rdb.Get(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			values = append(values, v)
		default:
			t.Errorf("unexpected key type %s for %s", typ, k)
		}
	}
	return values
}

func hashField(t *testing.T, rdb *redis.Client, key, field string) (string, bool) {
	t.Helper()
	v, err := rdb.HGet(ctxT(t), key, field).Result()
	if errors.Is(err, redis.Nil) {
		return "", false
	}
	if err != nil {
		t.Fatalf("HGET %s %s: %v", key, field, err)
	}
	return v, true
}

// guessWrong checks n wrong codes for testPhone, next to code, each refused with ErrBadCode.
func guessWrong(t *testing.T, s Codes, code string, n int) {
	t.Helper()
	for i := range n {
		if err := s.Verify(ctxT(t), testPhone, wrongCode(code)); !errors.Is(err, ErrBadCode) {
			t.Fatalf("wrong guess %d = %v, want ErrBadCode", i+1, err)
		}
	}
}

var sixDigits = regexp.MustCompile(`^[0-9]{6}$`)

func TestIssueVerifySingleUseAndNoPlainCode(t *testing.T) {
	eachKind(t, nil, func(t *testing.T, s *testStore) {
		ctx := ctxT(t)

		code := mustIssue(t, s, testPhone)
		if !sixDigits.MatchString(code) {
			t.Fatalf("code %q is not 6 digits", code)
		}

		// Nothing stored may reveal the code: not a key name, not a value, not a hash field.
		values := s.stored()
		if len(values) == 0 {
			t.Fatal("Issue stored nothing")
		}
		for _, v := range values {
			if strings.Contains(v, code) {
				t.Errorf("the store holds the plain code %s in %q", code, v)
			}
		}
		mac, ttl, ok := s.mac(testPhone)
		if !ok {
			t.Fatalf("no mac stored for %s", testPhone)
		}
		if mac != codeMAC([]byte("test-secret-A"), testPhone, code) {
			t.Errorf("stored mac %q is not HMAC(secret, phone, 0, code)", mac)
		}
		if ttl <= 0 || ttl > time.Minute {
			t.Errorf("code TTL = %v, want in (0, 1m]", ttl)
		}

		if err := s.Verify(ctx, testPhone, code); err != nil {
			t.Fatalf("first Verify with the right code: %v", err)
		}
		if err := s.Verify(ctx, testPhone, code); !errors.Is(err, ErrBadCode) {
			t.Fatalf("second Verify with the same code = %v, want ErrBadCode (single use)", err)
		}
		if _, _, ok := s.mac(testPhone); ok {
			t.Errorf("code still stored after use")
		}
	})
}

// TestKeyLayout: both keys of a phone carry the phone as a hash tag (the scripts touch
// both on Redis Cluster) and start with the prefix.
func TestKeyLayout(t *testing.T) {
	s, rdb, prefix := newTestStore(t, nil)
	guessWrong(t, s, mustIssue(t, s, testPhone), 1)
	keys := keysUnder(t, rdb, prefix)
	want := map[string]bool{prefix + "{" + testPhone + "}:otp": true}
	if len(keys) != len(want) {
		t.Fatalf("keys = %q, want %d keys", keys, len(want))
	}
	for _, k := range keys {
		if !want[k] {
			t.Errorf("unexpected key %q", k)
		}
	}
}

func TestVerifyOtherPhoneFails(t *testing.T) {
	eachKind(t, nil, func(t *testing.T, s *testStore) {
		ctx := ctxT(t)
		code := mustIssue(t, s, testPhone)
		if err := s.Verify(ctx, "919800000000", code); !errors.Is(err, ErrBadCode) {
			t.Fatalf("Verify of the code for another phone = %v, want ErrBadCode", err)
		}
		if err := s.Verify(ctx, testPhone, code); err != nil {
			t.Fatalf("Verify for the right phone: %v", err)
		}
	})
}

func TestCodeExpires(t *testing.T) {
	eachKind(t, func(c *Config) { c.TTL = time.Second }, func(t *testing.T, s *testStore) {
		code := mustIssue(t, s, testPhone)
		time.Sleep(1200 * time.Millisecond)
		if err := s.Verify(ctxT(t), testPhone, code); !errors.Is(err, ErrBadCode) {
			t.Fatalf("Verify after TTL = %v, want ErrBadCode", err)
		}
	})
}

func TestResendReplacesCode(t *testing.T) {
	eachKind(t, nil, func(t *testing.T, s *testStore) {
		ctx := ctxT(t)
		first := mustIssue(t, s, testPhone)
		// One wrong check on the first code: the resend must reset the check count too.
		guessWrong(t, s, first, 1)
		var second string
		for i := 0; ; i++ {
			second = mustIssue(t, s, testPhone)
			if second != first {
				break
			}
			if i > 5 {
				t.Fatal("Issue keeps returning the same code")
			}
		}
		if checks, _ := s.checks(testPhone); checks != "0" {
			t.Errorf("checks after resend = %q, want 0", checks)
		}
		if err := s.Verify(ctx, testPhone, first); !errors.Is(err, ErrBadCode) {
			t.Fatalf("Verify with the replaced code = %v, want ErrBadCode", err)
		}
		if err := s.Verify(ctx, testPhone, second); err != nil {
			t.Fatalf("Verify with the new code: %v", err)
		}
	})
}

func TestMaxChecks(t *testing.T) {
	eachKind(t, nil, func(t *testing.T, s *testStore) {
		ctx := ctxT(t)
		code := mustIssue(t, s, testPhone)
		guessWrong(t, s, code, 5)
		if err := s.Verify(ctx, testPhone, code); !errors.Is(err, ErrBadCode) {
			t.Fatalf("right code after 5 wrong checks = %v, want ErrBadCode", err)
		}
	})
}

func TestFourWrongThenRightStillWorks(t *testing.T) {
	eachKind(t, nil, func(t *testing.T, s *testStore) {
		ctx := ctxT(t)
		code := mustIssue(t, s, testPhone)
		guessWrong(t, s, code, 4)
		if err := s.Verify(ctx, testPhone, code); err != nil {
			t.Fatalf("right code as 5th check: %v", err)
		}
		if _, ok := s.checks(testPhone); ok {
			t.Error("the code outlived its use")
		}
	})
}

// parallel runs verify n times at once and returns the errors.
func parallel(n int, verify func() error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			errs[i] = verify()
		}(i)
	}
	close(start)
	wg.Wait()
	return errs
}

func TestParallelWrongGuesses(t *testing.T) {
	eachKind(t, nil, func(t *testing.T, s *testStore) {
		ctx := ctxT(t)
		code := mustIssue(t, s, testPhone)

		const n = 50
		errs := parallel(n, func() error { return s.Verify(ctx, testPhone, wrongCode(code)) })
		for i, err := range errs {
			if !errors.Is(err, ErrBadCode) {
				t.Errorf("guess %d = %v, want ErrBadCode", i, err)
			}
		}
		// Every call was counted before it could see the MAC, so only the calls that got
		// check numbers 1..5 could compare: the counter shows each of the 50 took a number.
		checks, ok := s.checks(testPhone)
		if !ok || checks != strconv.Itoa(n) {
			t.Fatalf("checks = %q (present %v), want %d", checks, ok, n)
		}
		// The code is spent: even the right answer is refused now.
		if err := s.Verify(ctx, testPhone, code); !errors.Is(err, ErrBadCode) {
			t.Fatalf("right code after 50 wrong checks = %v, want ErrBadCode", err)
		}
	})
}

func TestParallelRightCodeExactlyOneWins(t *testing.T) {
	eachKind(t, nil, func(t *testing.T, s *testStore) {
		ctx := ctxT(t)
		code := mustIssue(t, s, testPhone)

		const n = 50
		errs := parallel(n, func() error { return s.Verify(ctx, testPhone, code) })
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrBadCode):
			default:
				t.Errorf("call %d = %v, want nil or ErrBadCode", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d of %d parallel right answers succeeded, want exactly 1", wins, n)
		}
	})
}

// TestStrangerCannotLockOwnerOut: hardening defect 1. Someone who never saw the code
// checks a number's code over and over (codes they make the server send, and no code at
// all); the owner still asks for a fresh code and uses it. A code compares only its first
// MaxChecks checks, so a guesser's chance is MaxChecks in 900,000 per code sent: after
// those, even the right code is refused (the review number's fixed code makes that
// visible).
func TestStrangerCannotLockOwnerOut(t *testing.T) {
	eachKind(t, func(c *Config) { c.FixedCodes = map[string]string{testPhone: "424242"} }, func(t *testing.T, s *testStore) {
		ctx := ctxT(t)
		for range 3 { // three codes the stranger had sent, each checked 101 times
			mustIssue(t, s, testPhone)
			guessWrong(t, s, "424242", 5)
			for i := range 96 {
				if err := s.Verify(ctx, testPhone, "424242"); !errors.Is(err, ErrBadCode) {
					t.Fatalf("check %d of a used-up code = %v, want ErrBadCode without comparing", 6+i, err)
				}
			}
		}
		for range 10 {
			if err := s.Verify(ctx, "919812345679", "123456"); !errors.Is(err, ErrBadCode) {
				t.Fatalf("Verify without a code: %v", err)
			}
		}
		if err := s.Verify(ctx, testPhone, mustIssue(t, s, testPhone)); err != nil {
			t.Fatalf("the owner's fresh code after a stranger's 303 checks: %v", err)
		}
		if code := mustIssue(t, s, "919812345679"); code[0] == '0' || len(code) != 6 {
			t.Fatalf("code %q must be 6 digits without a leading zero", code)
		}
	})
}

func TestFixedCodes(t *testing.T) {
	const review = "15550001111"
	eachKind(t, func(c *Config) { c.FixedCodes = map[string]string{review: "424242"} }, func(t *testing.T, s *testStore) {
		ctx := ctxT(t)
		if c, ok := s.FixedCode(review); !ok || c != "424242" {
			t.Errorf("FixedCode = %q, %v", c, ok)
		}
		if _, ok := s.FixedCode(testPhone); ok {
			t.Errorf("FixedCode for an ordinary phone reported a code")
		}
		code := mustIssue(t, s, review)
		if code != "424242" {
			t.Fatalf("Issue for the review number = %q, want 424242", code)
		}
		if err := s.Verify(ctx, review, "424243"); !errors.Is(err, ErrBadCode) {
			t.Fatalf("wrong code for the review number = %v, want ErrBadCode", err)
		}
		if err := s.Verify(ctx, review, "424242"); err != nil {
			t.Fatalf("Verify fixed code: %v", err)
		}
		// Used up like any code, and issued again on the next request.
		if err := s.Verify(ctx, review, "424242"); !errors.Is(err, ErrBadCode) {
			t.Fatalf("reuse of the fixed code = %v, want ErrBadCode", err)
		}
		if code := mustIssue(t, s, review); code != "424242" {
			t.Fatalf("second Issue for the review number = %q", code)
		}
		if err := s.Verify(ctx, review, "424242"); err != nil {
			t.Fatalf("Verify fixed code again: %v", err)
		}
	})
}

func TestDifferentSecrets(t *testing.T) {
	eachKind(t, nil, func(t *testing.T, a *testStore) {
		b := a.withSecret([]byte("test-secret-B"))
		ctx := ctxT(t)
		code := mustIssue(t, a, testPhone)
		if err := b.Verify(ctx, testPhone, code); !errors.Is(err, ErrBadCode) {
			t.Fatalf("Verify under another secret = %v, want ErrBadCode", err)
		}
		// Same key space: the other secret's check is counted, but the code lives on.
		if n, _ := a.checks(testPhone); n != "1" {
			t.Errorf("checks = %s, want 1", n)
		}
		if err := a.Verify(ctx, testPhone, code); err != nil {
			t.Fatalf("Verify under the issuing secret: %v", err)
		}
	})
}

func TestSharedSecretAcrossInstances(t *testing.T) {
	a, rdb, prefix := newTestStore(t, nil)
	opts := *rdb.Options()
	rdb2 := redis.NewClient(&opts)
	t.Cleanup(func() { rdb2.Close() })
	b := NewStore(rdb2, Config{
		Secret: []byte("test-secret-A"), TTL: time.Minute, MaxChecks: 5, KeyPrefix: prefix,
	})
	code := mustIssue(t, a, testPhone)
	if err := b.Verify(ctxT(t), testPhone, code); err != nil {
		t.Fatalf("Verify on another instance with the same secret: %v", err)
	}
}

func TestRedisDown(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	s := NewStore(rdb, Config{Secret: []byte("x"), TTL: time.Minute, MaxChecks: 5})
	ctx := ctxT(t)
	if code, err := s.Issue(ctx, testPhone); err == nil || code != "" {
		t.Errorf("Issue with Redis down = (%q, %v), want an error and no code", code, err)
	}
	err := s.Verify(ctx, testPhone, "123456")
	if err == nil || errors.Is(err, ErrBadCode) {
		t.Errorf("Verify with Redis down = %v, want an infrastructure error", err)
	}
}

func TestSubMillisecondTTL(t *testing.T) {
	eachKind(t, func(c *Config) { c.TTL = time.Microsecond }, func(t *testing.T, s *testStore) {
		code := mustIssue(t, s, testPhone)
		if err := s.Verify(ctxT(t), testPhone, code); !errors.Is(err, ErrBadCode) {
			t.Fatalf("Verify = %v, want ErrBadCode", err)
		}
		if _, ok := s.checks(testPhone); ok {
			t.Error("a code stored for a microsecond is still there")
		}
	})
}

package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3 is a real S3-compatible server for one test: VersityGW (Apache-2.0), an S3 gateway
// over a folder of its own, with one fresh bucket. Its dependencies stay out of the
// product's go.mod: tools/go.mod pins it, and S3Server builds it once per version into
// the user's cache folder.
type S3 struct {
	// Endpoint is the server's URL, http://127.0.0.1:PORT.
	Endpoint string
	// Bucket is the test's bucket, empty at the start.
	Bucket string
	// AccessKey and SecretKey are the root credentials; StartS3 puts them in the
	// environment as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, where the AWS SDK (and
	// so a storage URL) finds them.
	AccessKey, SecretKey string
	// Region is the one the server answers for.
	Region string
	// Dir is the folder the server keeps its buckets in, one subfolder each.
	Dir string
	// Client speaks to the server as the root user.
	Client *s3.Client
	cmd    *exec.Cmd
}

// URL is the bucket's storage URL, as a storage setting takes it.
func (s *S3) URL() string {
	q := url.Values{"endpoint": {s.Endpoint}, "region": {s.Region}, "use_path_style": {"true"}}
	return "s3://" + s.Bucket + "?" + q.Encode()
}

// StartS3 starts an S3 server on a free port of 127.0.0.1 with a fresh bucket, and stops
// it when the test ends. It sets the AWS credential variables for the test, so it may
// not be used in parallel tests.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := S3Server(t)
	s := &S3{AccessKey: "messenger-test", SecretKey: "messenger-test-secret", Region: "us-east-1", Bucket: "messenger-test", Dir: t.TempDir()}
	port, err := freePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
	var out bytes.Buffer
	s.cmd = exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", port), "--region", s.Region, "--quiet", "posix", s.Dir)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test binary
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("testenv: starting the S3 server: %v", err)
	}
	t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	t.Setenv("AWS_ACCESS_KEY_ID", s.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretKey)
	s.Client = s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint), Region: s.Region, UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := s.Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)})
		if err == nil {
			return s
		}
		if ctx.Err() != nil {
			t.Fatalf("testenv: the S3 server did not come up: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Keys lists the keys in the test's bucket.
func (s *S3) Keys(t testing.TB) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.Client, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("testenv: listing the bucket: %v", err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

var s3Build struct {
	once sync.Once
	path string
	err  error
}

// S3Server is the path of the S3 server's binary: $MESSENGER_TEST_S3_SERVER, or the
// one built from tools/go.mod into the user's cache folder, built now if missing (a
// few minutes the first time; the build is locked, so parallel test packages wait for
// one build).
func S3Server(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("MESSENGER_TEST_S3_SERVER"); bin != "" {
		return bin
	}
	s3Build.once.Do(func() { s3Build.path, s3Build.err = buildS3Server() })
	if s3Build.err != nil {
		t.Fatalf("testenv: building the S3 server: %v", s3Build.err)
	}
	return s3Build.path
}

func buildS3Server() (string, error) {
	tools, err := toolsDir()
	if err != nil {
		return "", err
	}
	// The version is what tools/go.mod and go.sum pin.
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(tools, f))
		if err != nil {
			return "", err
		}
		h.Write(data)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "caddy-messenger-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "versitygw-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil { // built while we waited
		return bin, nil
	}
	tmp := bin + ".tmp"
	cmd := exec.Command("go", "build", "-o", tmp, "github.com/versity/versitygw/cmd/versitygw")
	cmd.Dir = tools
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %v\n%s", tools, err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// toolsDir finds tools/ of the repository, upwards from the working directory.
func toolsDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "tools", "go.mod")); err == nil {
			return filepath.Join(dir, "tools"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no tools/go.mod above the working directory")
		}
		dir = parent
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

package outbox_test

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/mesiboclient/mesibotest"
	"github.com/caddy-messenger/messenger/metrics"
	"github.com/caddy-messenger/messenger/outbox"
	"github.com/caddy-messenger/messenger/store"
)

// The delivery benchmarks run a worker against the mesibo fake answering every call
// 100 ms late (a round trip to mesibo's cloud API), on the store of the run
// (MESSENGER_TEST_STORE), and report notifications per second with the peaks of the
// outbox gauges (caddy_messenger_outbox_depth, _lag_seconds) sampled while they run.
// docs/performance.md has the figures and the command.

const benchLatency = 100 * time.Millisecond

// benchQueueLength is how many notifications each queue gets: a queue's go one after
// another, as a group's changes do.
const benchQueueLength = 4

// BenchmarkOutboxDrain: b.N notifications wait in the outbox (b.N/4 queues of 4); the
// time is how long a worker with the given concurrency takes to deliver them all.
func BenchmarkOutboxDrain(b *testing.B) {
	for _, n := range []int{1, 8, 32, 64, 128} {
		b.Run(fmt.Sprint("concurrency=", n), func(b *testing.B) {
			s, db, _ := open(b)
			f := benchFake(b)
			if err := fill(db, 0, b.N); err != nil {
				b.Fatal(err)
			}
			w, g := benchWorker(b, s, f)
			w.Concurrency = n
			b.ResetTimer()
			stop := start(b, w)
			sampled := g.sample(b, func() bool { return len(f.Messages()) >= b.N })
			b.StopTimer()
			stop()
			report(b, sampled, len(f.Messages()))
		})
	}
}

// BenchmarkOutboxSteady: notifications are queued at 500 a second (b.N in all, queues of
// 4) while a worker of the default concurrency delivers them; the gauges show whether
// it keeps up.
func BenchmarkOutboxSteady(b *testing.B) {
	const rate = 500
	s, db, _ := open(b)
	f := benchFake(b)
	w, g := benchWorker(b, s, f)
	b.ResetTimer()
	start(b, w)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		begin := time.Now()
		for queued := 0; queued < b.N; <-tick.C {
			due := min(b.N, int(time.Since(begin).Seconds()*rate))
			if err := fill(db, queued, due-queued); err != nil {
				b.Errorf("N=%d queued=%d due=%d: %v", b.N, queued, due, err)
				return
			}
			w.Wake()
			queued = due
		}
	}()
	sampled := g.sample(b, func() bool { return len(f.Messages()) >= b.N })
	b.StopTimer()
	report(b, sampled, len(f.Messages()))
}

func benchFake(b *testing.B) *fake {
	f := newFake(b)
	f.FailAll("message", mesibotest.Failure{Delay: benchLatency}) // answered, 100 ms late
	return f
}

// fill queues n notifications, numbered from first, benchQueueLength to a queue.
func fill(db *sql.DB, first, n int) error {
	const perInsert = 500
	for done := 0; done < n; done += perInsert {
		rows := min(perInsert, n-done)
		args := make([]any, 0, 3*rows)
		for i := first + done; i < first+done+rows; i++ {
			q := fmt.Sprint("user:", i/benchQueueLength)
			args = append(args, q, fmt.Sprintf(`{"queue":%q,"note":%d}`, q, i%benchQueueLength), time.Now().Unix())
		}
		if _, err := db.Exec(`INSERT INTO messenger_outbox (queue, from_addr, to_addrs, body, created, next_attempt)
			VALUES `+strings.TrimSuffix(strings.Repeat("(?, '100', '919800000001', ?, ?, 0),", rows), ","), args...); err != nil {
			return err
		}
	}
	return nil
}

// gauges reads the outbox gauges of a worker's metrics.
type gauges struct{ reg *prometheus.Registry }

func benchWorker(b *testing.B, s *store.Store, f *fake) (*outbox.Worker, gauges) {
	m, err := mesiboclient.New(mesiboclient.Config{Endpoint: f.url, AppToken: appToken, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Close)
	reg := prometheus.NewRegistry()
	w := outbox.New(s, m, zap.NewNop())
	w.Metrics, w.StatsEvery = metrics.New(reg), 250*time.Millisecond
	return w, gauges{reg}
}

// peaks are the highest values the gauges showed.
type peaks struct {
	depth, lag float64
	took       time.Duration
}

// sample reads the gauges until done, and returns their peaks.
func (g gauges) sample(b *testing.B, done func() bool) peaks {
	var p peaks
	begin := time.Now()
	for !done() {
		time.Sleep(50 * time.Millisecond)
		families, err := g.reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				switch f.GetName() {
				case "caddy_messenger_outbox_depth":
					p.depth = max(p.depth, m.GetGauge().GetValue())
				case "caddy_messenger_outbox_lag_seconds":
					p.lag = max(p.lag, m.GetGauge().GetValue())
				}
			}
		}
		if b.Failed() || time.Since(begin) > 5*time.Minute {
			b.Fatal("not done")
		}
	}
	p.took = time.Since(begin)
	return p
}

func report(b *testing.B, p peaks, delivered int) {
	b.ReportMetric(float64(delivered)/p.took.Seconds(), "notifications/s")
	b.ReportMetric(p.depth, "peak_depth")
	b.ReportMetric(p.lag, "peak_lag_s")
}

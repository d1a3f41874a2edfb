package store

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRounds: a lone caller runs at once; callers that come while a key's run goes share
// one later run that starts after they all joined, and get its result; other keys do not
// wait; a run that panics does not leave its key's callers waiting.
func TestRounds(t *testing.T) {
	var r rounds[string, bool]
	if ok, err := r.join("a", func() (bool, error) { return true, nil }); !ok || err != nil {
		t.Fatalf("lone caller = %v, %v", ok, err)
	}

	release := make(chan struct{})
	started := make(chan struct{})
	go r.join("a", func() (bool, error) { // a run going on
		close(started)
		<-release
		return false, nil
	})
	<-started
	var runs atomic.Int32
	var joinedAll atomic.Bool
	boom := errors.New("boom")
	var wg sync.WaitGroup
	results := make([]error, 10)
	for i := range results {
		wg.Go(func() {
			_, results[i] = r.join("a", func() (bool, error) {
				runs.Add(1)
				if !joinedAll.Load() {
					t.Error("the next round ran before all its callers had joined")
				}
				return true, boom
			})
		})
	}
	// Another key runs at once, whatever key a does.
	if ok, err := r.join("b", func() (bool, error) { return true, nil }); !ok || err != nil {
		t.Fatalf("other key = %v, %v", ok, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		r.mu.Lock()
		joined := 0
		if r.next["a"] != nil {
			joined = r.next["a"].callers
		}
		r.mu.Unlock()
		if joined == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no round opened for the callers")
		}
		time.Sleep(time.Millisecond)
	}
	joinedAll.Store(true)
	close(release)
	wg.Wait()
	if n := runs.Load(); n != 1 {
		t.Errorf("%d runs for 10 callers that came during one run, want 1", n)
	}
	for i, err := range results {
		if !errors.Is(err, boom) {
			t.Errorf("caller %d got %v, want the round's error", i, err)
		}
	}
	func() {
		defer func() { _ = recover() }()
		r.join("a", func() (bool, error) { panic("boom") })
	}()
	if _, err := r.join("a", func() (bool, error) { return true, nil }); err != nil {
		t.Errorf("after a panicking run: %v", err)
	}
	if len(r.running) != 0 || len(r.next) != 0 {
		t.Errorf("rounds left behind: running %v, next %v", r.running, r.next)
	}
}

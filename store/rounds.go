package store

import (
	"errors"
	"sync"
)

// rounds runs a function once for many callers of one key: a caller joins the next round
// of its key, which starts once the key's running round (if any) has ended, and gets
// that round's result. So every caller is served by a run that started after it joined,
// and a key has at most one run going, however many callers come meanwhile.
//
// It serves work that is idempotent and only has to happen after something each caller
// did, such as looking for a waiting profile update after a profile change
// (announceProfile): the changes of one user coming together share one look.
type rounds[K comparable, V any] struct {
	mu      sync.Mutex
	running map[K]*round[V] // the key's round that has started
	next    map[K]*round[V] // the key's round that callers join
}

// round is one run of a rounds key, and its result once done is closed.
type round[V any] struct {
	after   *round[V] // the round running when this one was opened; it starts once that ends
	callers int       // how many callers joined it
	done    chan struct{}
	result  V
	err     error
}

// join runs run in the next round of key, or waits for that round's run, and returns its
// result.
func (r *rounds[K, V]) join(key K, run func() (V, error)) (V, error) {
	r.mu.Lock()
	if r.running == nil {
		r.running, r.next = map[K]*round[V]{}, map[K]*round[V]{}
	}
	this, joined := r.next[key]
	if !joined {
		this = &round[V]{after: r.running[key], done: make(chan struct{})}
		r.next[key] = this
	}
	this.callers++
	r.mu.Unlock()
	if joined {
		<-this.done
		return this.result, this.err
	}
	// The caller that opened the round runs it.
	if this.after != nil {
		<-this.after.done
	}
	r.mu.Lock()
	delete(r.next, key) // from now on, callers join a later round
	r.running[key] = this
	r.mu.Unlock()
	defer func() { // also when run panics: the callers and later rounds must not wait forever
		r.mu.Lock()
		if r.running[key] == this {
			delete(r.running, key)
		}
		r.mu.Unlock()
		this.after = nil
		close(this.done)
	}()
	this.err = errRoundFailed // what the joined callers get if run panics
	this.result, this.err = run()
	return this.result, this.err
}

// errRoundFailed is the result of a round whose run panicked.
var errRoundFailed = errors.New("store: the shared run failed")

package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// A group lock serialises the changes of one group, so that a change can read the group,
// ask the messaging service and then write, with nobody else's change in between, while
// the changes waiting in this process hold no transaction and no connection
// (docs/groups.md):
//
//   - in this process, one change per group at a time, the others queued in arrival
//     order without a connection;
//   - on MySQL, one connection per change holding a named lock (GET_LOCK), which other
//     instances' changes of the group wait for: at most one waiter per group and
//     instance holds a connection. Changes holding connections are bounded per Store
//     (a quarter of the pool), so that a burst of changes leaves the pool to everyone
//     else;
//   - the embedded store serves a single instance, so the queue in this process is all
//     it needs. Its one write lock is taken only by the short transactions that write.
//
// The reads and the writes of a locked change go through its connection, so a change
// whose MySQL session died (and with it the named lock) cannot write.

// ErrGroupBusy means a group's lock was not granted before the context ended: other
// changes of the group were ahead.
var ErrGroupBusy = errors.New("group busy with other changes")

// defaultLockWait bounds the wait for a group's lock under a context without a deadline.
const defaultLockWait = 30 * time.Second

// groupLocks is the queue of each group's changes in this process, and the bound on
// the changes that hold a MySQL connection.
type groupLocks struct {
	mu     sync.Mutex
	groups map[int64]*groupQueue
	// conns has a slot per change that may hold a connection at once; nil on the
	// embedded store.
	conns chan struct{}
}

// groupQueue is the turn of one group: whoever sent into turn holds it. Blocked senders
// are served in the order they came.
type groupQueue struct {
	turn    chan struct{}
	waiters int // holder included; the queue is dropped at 0
}

// setConnBound lets a quarter of a pool of poolSize (at least one) be held by changes.
func (l *groupLocks) setConnBound(poolSize int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conns = make(chan struct{}, max(1, poolSize/4))
}

// connSlots is the bound on changes holding connections.
func (l *groupLocks) connSlots() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns
}

// acquire waits for gid's turn in this process.
func (l *groupLocks) acquire(ctx context.Context, gid int64) error {
	l.mu.Lock()
	if l.groups == nil {
		l.groups = map[int64]*groupQueue{}
	}
	q := l.groups[gid]
	if q == nil {
		q = &groupQueue{turn: make(chan struct{}, 1)}
		l.groups[gid] = q
	}
	q.waiters++
	l.mu.Unlock()
	select {
	case q.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		l.leave(gid, q)
		return fmt.Errorf("%w: %w", ErrGroupBusy, ctx.Err())
	}
}

// release ends gid's turn.
func (l *groupLocks) release(gid int64) {
	l.mu.Lock()
	q := l.groups[gid]
	l.mu.Unlock()
	<-q.turn
	l.leave(gid, q)
}

func (l *groupLocks) leave(gid int64, q *groupQueue) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if q.waiters--; q.waiters == 0 {
		delete(l.groups, gid)
	}
}

// GroupLock is the right to change one group, until Release. Its methods read and write
// the group; they are not safe for concurrent use.
type GroupLock struct {
	s   *Store
	gid int64
	// q runs the change's statements: the connection holding the named lock on MySQL,
	// the pool on the embedded store.
	q interface {
		querier
		BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
	}
	conn     *sql.Conn     // nil on the embedded store
	slot     chan struct{} // the bound conn counts against
	lockName string
}

// LockGroup waits for the right to change group gid, in turn with the other changes of
// it, here and on other instances. Waiting ends with ctx (ErrGroupBusy); the lock, once
// granted, does not depend on ctx. The caller must Release it.
func (s *Store) LockGroup(ctx context.Context, gid int64) (*GroupLock, error) {
	if err := s.groupLocks.acquire(ctx, gid); err != nil {
		return nil, err
	}
	l := &GroupLock{s: s, gid: gid, q: s.db}
	if s.embedded {
		return l, nil
	}
	if err := l.lockShared(ctx); err != nil {
		s.groupLocks.release(gid)
		return nil, err
	}
	return l, nil
}

// lockShared takes a connection slot, a connection and the group's named lock, which
// every instance using this database takes for the group.
func (l *GroupLock) lockShared(ctx context.Context) error {
	slots := l.s.groupLocks.connSlots()
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrGroupBusy, ctx.Err())
	}
	conn, err := l.s.db.Conn(ctx)
	if err != nil {
		<-slots
		return fmt.Errorf("store: lock group: %w", err)
	}
	wait := defaultLockWait
	if deadline, ok := ctx.Deadline(); ok {
		wait = time.Until(deadline)
	}
	// Named locks are server-wide: the name carries the database's, hashed to fit.
	name := fmt.Sprintf("messenger-group-%s-%d", l.s.lockPrefix, l.gid)
	var granted sql.NullInt64
	err = conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, max(wait.Seconds(), 0)).Scan(&granted)
	switch {
	case err == nil && granted.Int64 == 1:
		l.q, l.conn, l.slot, l.lockName = conn, conn, slots, name
		return nil
	case ctx.Err() != nil:
		err = fmt.Errorf("%w: %w", ErrGroupBusy, ctx.Err())
	case err == nil: // GET_LOCK timed out just before ctx
		err = fmt.Errorf("%w: %w", ErrGroupBusy, context.DeadlineExceeded)
	default:
		err = fmt.Errorf("store: lock group: %w", err)
	}
	// A connection whose GET_LOCK ran into ctx may still get the lock later: drop it.
	discard(conn)
	<-slots
	return err
}

// lockPrefix names the database in the named locks of its groups.
func lockPrefix(database string) string {
	sum := sha256.Sum256([]byte(database))
	return hex.EncodeToString(sum[:8])
}

// Release gives the group to the next change.
func (l *GroupLock) Release() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := l.conn.ExecContext(ctx, "DO RELEASE_LOCK(?)", l.lockName)
		cancel()
		if err != nil {
			// The session may still hold the lock: it must not go back to the pool.
			discard(l.conn)
		} else {
			l.conn.Close()
		}
		<-l.slot
	}
	l.s.groupLocks.release(l.gid)
}

// discard closes conn instead of returning it to the pool.
func discard(conn *sql.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

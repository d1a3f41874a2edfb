// Package sweep paces the sweeps of the in-memory maps that stand in for Redis when a
// single instance runs without it (codes, rate-limit counters): maps whose entries expire
// but are only dropped when somebody looks at them again, or by a sweep.
package sweep

// Every is the least number of steps between two sweeps.
const Every = 1024

// Countdown says when a map is due a sweep. Waiting as many steps as the last sweep left
// entries (but at least Every) keeps a step's average cost constant, and the map at most
// about twice its live entries, or Every more. The zero Countdown is due at once.
type Countdown struct{ left int }

// Due counts one step and reports whether the map should be swept now; after sweeping,
// call Swept.
func (c *Countdown) Due() bool {
	c.left--
	return c.left <= 0
}

// Swept starts the count to the next sweep, after one that left size entries.
func (c *Countdown) Swept(size int) { c.left = max(Every, size) }

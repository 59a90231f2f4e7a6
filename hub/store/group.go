package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// groupMax bounds how many writes share one commit.
const groupMax = 256

// ErrClosed is returned for writes after Close.
var ErrClosed = errors.New("store: closed")

type groupWrite struct {
	query string
	args  []any
	n     int64
	err   error
	done  chan struct{}
}

// group commits small independent writes together. With synchronous=FULL
// every commit costs an fsync; concurrent sales' payment records would each
// pay one and queue for the single SQLite write lock.
type group struct {
	once   sync.Once
	mu     sync.Mutex
	closed bool
	queue  chan *groupWrite
	exited chan struct{}
}

// GroupExec runs a write that must be durable but need not commit alone:
// it joins the writes already waiting, all committed in one transaction,
// and returns the rows it affected once that commit is done. A write that
// fails does not fail the others: the batch is then redone one by one.
func (d *DB) GroupExec(ctx context.Context, query string, args ...any) (int64, error) {
	g := &d.group
	g.once.Do(func() {
		g.queue = make(chan *groupWrite, groupMax)
		g.exited = make(chan struct{})
		go d.groupLoop()
	})
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	// Prepared here, outside the batch's transaction, so the batch finds it
	// cached instead of parsing it again on every commit.
	if _, err := d.Stmt(ctx, query); err != nil {
		return 0, err
	}
	w := &groupWrite{query: query, args: args, done: make(chan struct{})}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return 0, ErrClosed
	}
	select {
	case g.queue <- w:
		g.mu.Unlock()
	case <-ctx.Done():
		g.mu.Unlock()
		return 0, ctx.Err()
	}
	// Once queued the write will be tried, so wait for its outcome rather
	// than report an error for a write that may land.
	<-w.done
	return w.n, w.err
}

func (d *DB) groupLoop() {
	g := &d.group
	defer close(g.exited)
	for w := range g.queue {
		batch := []*groupWrite{w}
	drain:
		for len(batch) < groupMax {
			select {
			case next, ok := <-g.queue:
				if !ok {
					break drain
				}
				batch = append(batch, next)
			default:
				break drain
			}
		}
		if err := d.commitGroup(batch); err != nil {
			for _, w := range batch { // redo alone: each gets its own answer
				if w.err = d.commitGroup([]*groupWrite{w}); w.err != nil {
					w.n, w.err = 0, fmt.Errorf("store: write: %w", w.err)
				}
			}
		}
		for _, w := range batch {
			close(w.done)
		}
	}
}

func (d *DB) commitGroup(batch []*groupWrite) error {
	ctx := context.Background()
	return d.InBatchTx(ctx, func(tx *Tx) error {
		var b Batch
		for _, w := range batch {
			b.Exec(&w.n, w.query, w.args...)
		}
		return tx.Commit(ctx, &b)
	})
}

// Close finishes the queued group writes and closes the database.
func (d *DB) Close() error {
	g := &d.group
	g.once.Do(func() {}) // a group never started stays unstarted
	g.mu.Lock()
	wasClosed := g.closed
	g.closed = true
	g.mu.Unlock()
	if !wasClosed && g.queue != nil {
		close(g.queue)
		<-g.exited
	}
	return d.DB.Close()
}

// Write is a statement its table's owner hands to another package to
// commit in that package's transaction, e.g. a payment's state with the
// sale it pays for. Stale is the error to give when it changed no row.
type Write struct {
	Query string
	Args  []any
	Stale error
}

package store

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
)

// A SQLite connection that commits checkpoints its WAL into the database
// file itself once the WAL passes wal_autocheckpoint pages: a copy of a
// thousand pages and an fsync of the database, inside that commit, while
// the process's writers queue on d.writer. The checkpointer does it on a
// connection of its own instead, about as often, so no sale waits for it.
const (
	// ckptFrames is how many WAL frames a checkpoint aims to copy:
	// SQLite's own default.
	ckptFrames = 1000
	// writerAutoCheckpoint is the writing connection's own threshold, a
	// backstop for a checkpointer that falls behind.
	writerAutoCheckpoint = 8 * ckptFrames
)

type checkpointer struct {
	kick chan struct{} // buffered: a checkpoint is due
	stop chan struct{}
	done chan struct{}
	// every is how many commits fill about ckptFrames frames, learnt from
	// the last checkpoint; last is d.commits when it started.
	every atomic.Uint64
	last  atomic.Uint64
	runs  atomic.Uint64 // checkpoints done
	once  sync.Once
}

// startCheckpoints runs d's checkpointer until Close.
func (d *DB) startCheckpoints() {
	c := &d.ckpt
	c.kick, c.stop, c.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	c.every.Store(64)
	go d.checkpoints()
}

// committed is told of each commit on the writing connection, numbered n.
func (d *DB) committed(n uint64) {
	c := &d.ckpt
	if c.kick == nil || n-c.last.Load() < c.every.Load() {
		return
	}
	select {
	case c.kick <- struct{}{}:
	default: // one is due already
	}
}

func (d *DB) checkpoints() {
	c := &d.ckpt
	defer close(c.done)
	var conn *sql.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	ctx := context.Background()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		start := d.commits.Load()
		since := start - c.last.Swap(start)
		if conn == nil {
			var err error
			if conn, err = d.Conn(ctx); err != nil {
				continue // the writer's own checkpoints go on meanwhile
			}
		}
		// PASSIVE: it copies what no reader still needs and never waits
		// for the writer, which goes on appending meanwhile.
		var busy, frames, copied int64
		if err := conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied); err != nil {
			conn.Close()
			conn = nil
			continue
		}
		c.runs.Add(1)
		// The last checkpoint copied everything (the WAL then starts over),
		// so the frames now are about what since commits wrote.
		if since > 0 && frames > 0 {
			every := max(8, min(4096, uint64(ckptFrames)*since/uint64(frames)))
			c.every.Store(every)
		}
	}
}

// stopCheckpoints ends the checkpointer, if it runs.
func (d *DB) stopCheckpoints() {
	c := &d.ckpt
	if c.stop == nil {
		return
	}
	c.once.Do(func() {
		close(c.stop)
		<-c.done
	})
}

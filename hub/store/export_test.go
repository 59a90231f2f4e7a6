package store

// WALState is, on SQLite, how many write transactions the writing
// connection committed, how many of them are known to be on disk, and how
// many fsyncs that took.
func (d *DB) WALState() (commits, synced, syncs uint64) {
	d.wal.mu.Lock()
	defer d.wal.mu.Unlock()
	return d.commits.Load(), d.wal.done, d.wal.syncs
}

// SessionName is the application_name of a hub's leader session.
var SessionName = sessionName

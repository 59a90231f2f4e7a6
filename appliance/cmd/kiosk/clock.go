package main

import (
	"context"
	"log/slog"
	"os"
	"time"
)

// clockFloor is earlier than any clock a working kiosk can read: this
// release was built after it. A Raspberry Pi has no real-time clock and
// boots in 1970 until NTP sets the time; a stamp dated then, or a journal
// that runs backwards, must never happen.
var clockFloor = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// trustedFloor is the earliest time the kiosk may believe: the release
// floor, or the last write to its journal (less a minute of slack for a
// clock that NTP nudged back), whichever is later.
func trustedFloor(journalPath string) time.Time {
	floor := clockFloor
	for _, p := range []string{journalPath, journalPath + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			if t := fi.ModTime().Add(-time.Minute); t.After(floor) {
				floor = t
			}
		}
	}
	return floor
}

// waitForClock returns once now() is no earlier than floor, polling every
// poll, or ctx's error when it ends first.
func waitForClock(ctx context.Context, now func() time.Time, floor time.Time, poll time.Duration, log *slog.Logger) error {
	if !now().Before(floor) {
		return nil
	}
	log.Warn("the clock is not set yet; waiting before trusting it", "now", now().UTC(), "not_before", floor.UTC())
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if !now().Before(floor) {
				log.Info("the clock is set", "now", now().UTC())
				return nil
			}
		}
	}
}

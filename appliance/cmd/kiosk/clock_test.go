package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitForClock(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var now atomic.Int64
	now.Store(time.Date(1970, 1, 1, 0, 0, 42, 0, time.UTC).UnixNano()) // a Pi just booted
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	done := make(chan error, 1)
	go func() { done <- waitForClock(context.Background(), clock, clockFloor, time.Millisecond, log) }()
	select {
	case err := <-done:
		t.Fatalf("trusted a 1970 clock: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	now.Store(time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC).UnixNano()) // NTP set it
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after the clock was set")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := waitForClock(ctx, func() time.Time { return time.Unix(0, 0) }, clockFloor, time.Millisecond, log); err == nil {
		t.Fatal("no error when stopped while waiting")
	}
}

func TestTrustedFloorFollowsTheJournal(t *testing.T) {
	j := filepath.Join(t.TempDir(), "journal.db")
	if got := trustedFloor(j); !got.Equal(clockFloor) {
		t.Fatalf("no journal: %v", got)
	}
	last := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	os.WriteFile(j, []byte("x"), 0o600)
	os.Chtimes(j, last, last)
	if got := trustedFloor(j); !got.Equal(last.Add(-time.Minute)) {
		t.Fatalf("journal written %v: floor %v", last, got)
	}
}

package scanner

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"
)

// plugLine is a line that serves one chunk a read, fails with EIO at an
// "unplug" chunk, and is then up again once the test says so.
type plugLine struct {
	reads     chan string
	unplugged chan struct{} // a read saw the unplug
	mu        sync.Mutex
	up        chan struct{} // closed while the line is up
}

func (l *plugLine) Read(b []byte) (int, error) {
	s := <-l.reads
	if s == "unplug" {
		l.mu.Lock()
		l.up = make(chan struct{})
		l.mu.Unlock()
		l.unplugged <- struct{}{}
		return 0, syscall.EIO
	}
	return copy(b, s), nil
}

func (l *plugLine) WaitUp(ctx context.Context) error {
	l.mu.Lock()
	up := l.up
	l.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *plugLine) plugIn() {
	l.mu.Lock()
	close(l.up)
	l.mu.Unlock()
}

// Follow reads on across an unplugged line: the read failure is not a
// scan, and a code cut short by it is not glued to the next one.
func TestFollowReadsOnAfterUnplug(t *testing.T) {
	up := make(chan struct{})
	close(up)
	l := &plugLine{reads: make(chan string, 8), unplugged: make(chan struct{}, 2), up: up}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	scans := Follow(ctx, l)
	next := func() Scan {
		t.Helper()
		select {
		case s, ok := <-scans:
			if !ok {
				t.Fatal("scans ended")
			}
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no scan")
			return Scan{}
		}
	}
	l.reads <- "1966-F8CF\r"
	if s := next(); s.Code != "1966-F8CF" || s.Err != nil {
		t.Fatalf("scan %+v", s)
	}
	l.reads <- "1966-F" // cut short
	l.reads <- "unplug"
	<-l.unplugged
	l.plugIn()
	l.reads <- "STAFF-AB12\r"
	if s := next(); s.Code != "STAFF-AB12" || s.Err != nil {
		t.Fatalf("scan after the line came back: %+v", s)
	}
	cancel()
	l.reads <- "unplug" // the blocked read ends, as closing the line ends it
	for s := range scans {
		t.Fatalf("scan after cancel: %+v", s)
	}
}

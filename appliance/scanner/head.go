package scanner

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// ErrNoLabelRead is a label the head scanner did not read in time: no
// label under the head, or an unreadable serial.
var ErrNoLabelRead = errors.New("scanner: no label serial read under the print head")

// ErrHeadGone is a head scanner whose scans ended (its port failed): no
// label will be read under the head again until it is opened anew.
var ErrHeadGone = errors.New("scanner: the head scanner is gone")

// Head is a fixed scanner aimed at the label under the print head, in
// presentation mode: it reads the pre-printed serial of each label as the
// feed brings it under the head. The kiosk asks it before printing, so that
// wrongly loaded stock is caught before a stamp lands on the wrong label.
type Head struct {
	Wait time.Duration // for a fresh read; default 3 s

	mu      sync.Mutex
	last    string
	fresh   bool          // read since the last UnderHead
	changed chan struct{} // closed and replaced on each read
	done    chan struct{} // closed when Run returns
}

// NewHead returns a head scanner fed by Run.
func NewHead() *Head { return &Head{changed: make(chan struct{}), done: make(chan struct{})} }

// Done is closed once Run has returned: the scans ended, so every later
// stamp would fail label_unread; the kiosk stops selling instead.
func (h *Head) Done() <-chan struct{} { return h.done }

// Run takes the scans until the channel closes; a code is kept as the
// label under the head, upper-cased as serials are printed in either case.
// Call it once.
func (h *Head) Run(scans <-chan Scan) {
	defer close(h.done)
	for s := range scans {
		if s.Err != nil || s.Code == "" {
			continue
		}
		h.mu.Lock()
		h.last, h.fresh = strings.ToUpper(strings.TrimSpace(s.Code)), true
		close(h.changed)
		h.changed = make(chan struct{})
		h.mu.Unlock()
	}
}

// UnderHead is the serial of the label under the head now: a read made
// since the last call (the previous label has been fed out), waiting up to
// Wait for one.
func (h *Head) UnderHead(ctx context.Context) (string, error) {
	wait := h.Wait
	if wait <= 0 {
		wait = 3 * time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		h.mu.Lock()
		if h.fresh {
			h.fresh = false
			last := h.last
			h.mu.Unlock()
			return last, nil
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-h.done:
			return "", ErrHeadGone
		case <-t.C:
			return "", ErrNoLabelRead
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

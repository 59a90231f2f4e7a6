package front

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// What one kiosk's messages may write to the log: KioskLines lines a
// LineWindow. A stolen kiosk within its message budget (20 a second) would
// otherwise write a line for every message refused, and journald, past
// its rate limit, drops the hub's other lines with them. The first line
// after some were left out says how many.
const (
	KioskLines = 10
	LineWindow = time.Minute
	// lineKiosks bounds the kiosks counted before the ended windows are
	// dropped.
	lineKiosks = 10_000
)

// logBudget counts the lines about each kiosk in its window.
type logBudget struct {
	mu  sync.Mutex
	now func() time.Time
	by  map[string]*lineWindow
}

type lineWindow struct {
	start   time.Time
	n       int // lines written in the window
	skipped int // lines left out since the last one written
}

// take reports whether a line about kiosk may be written now, and how
// many were left out before it.
func (b *logBudget) take(kiosk string) (ok bool, skipped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	w := b.by[kiosk]
	if w == nil {
		if len(b.by) >= lineKiosks {
			for k, w := range b.by {
				if now.Sub(w.start) >= LineWindow {
					delete(b.by, k)
				}
			}
		}
		w = &lineWindow{start: now}
		b.by[kiosk] = w
	}
	if now.Sub(w.start) >= LineWindow {
		w.start, w.n = now, 0
	}
	if w.n >= KioskLines {
		w.skipped++
		return false, 0
	}
	w.n++
	skipped, w.skipped = w.skipped, 0
	return true, skipped
}

// kioskLog writes a line about a message from kiosk, within its budget.
func (f *Front) kioskLog(level slog.Level, kiosk, msg string, args ...any) {
	ok, skipped := f.lines.take(kiosk)
	if !ok {
		return
	}
	args = append([]any{"kiosk", kiosk}, args...)
	if skipped > 0 {
		args = append(args, "lines_left_out", skipped)
	}
	f.log.Log(context.Background(), level, msg, args...)
}

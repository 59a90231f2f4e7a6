package kiosk_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/appliance/scale"
	"github.com/frank-postage/frank/appliance/scanner"
	"github.com/frank-postage/frank/appliance/serialport"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// fakeLine is a serial line the test unplugs and plugs back in, as
// serialport.Line reports it.
type fakeLine struct {
	mu      sync.Mutex
	up      bool
	changed chan struct{}
}

func newFakeLine() *fakeLine { return &fakeLine{up: true, changed: make(chan struct{})} }

func (l *fakeLine) Up() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up
}

func (l *fakeLine) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

func (l *fakeLine) set(up bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.up = up
	close(l.changed)
	l.changed = make(chan struct{})
}

// plugScale is a scale whose line the test unplugs: it then fails as a
// serialport.Line does while the device is gone.
type plugScale struct {
	mu   sync.Mutex
	gone bool
}

func (s *plugScale) Read(context.Context) (scale.Reading, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return scale.Reading{}, fmt.Errorf("scale: nci: read: %w", serialport.ErrGone)
	}
	return scale.Reading{WeightMg: 20_000, Stable: true}, nil
}

func (s *plugScale) Zero(context.Context) error { return nil }

func (s *plugScale) unplug(gone bool) {
	s.mu.Lock()
	s.gone = gone
	s.mu.Unlock()
}

// heard waits for a heartbeat that ok accepts. The hub's heartbeat period
// is 30 s: one within the wait was sent because something changed.
func heard(t *testing.T, beats <-chan protocol.Telemetry, what string, ok func(protocol.Telemetry) bool) {
	t.Helper()
	wait.For(t, 10*time.Second, what, func() bool {
		for {
			select {
			case tm := <-beats:
				if ok(tm) {
					return true
				}
			default:
				return false
			}
		}
	})
}

// A handheld scanner unplugged is offline on the screen and the hub hears
// at once (scanner_offline, the last error); the kiosk sells on, as it
// needs the handheld only for staff. Plugged back in, it is ok again.
func TestHandheldScannerGoneAndBack(t *testing.T) {
	l := newFakeLine()
	fh := &fakeHub{answer: vectorAnswer, beats: make(chan protocol.Telemetry, 256),
		devices: &kiosk.Devices{Scans: make(chan scanner.Scan), ScannerLine: l}}
	k, _ := setupWith(t, fh, nil)
	if _, err := k.LoadStock(context.Background(), []string{"1966-F8CF"}); err != nil {
		t.Fatal(err)
	}
	if st := k.Status(); !st.InService || st.Scanner != "ok" {
		t.Fatalf("status with the scanner plugged in: %+v", st)
	}
	l.set(false)
	heard(t, fh.beats, "the hub to hear scanner_offline", func(tm protocol.Telemetry) bool {
		return tm.LastError == "scanner_offline" && tm.InService
	})
	if st := k.Status(); !st.InService || st.Scanner != "offline" || st.LastError != "scanner_offline" || slices.Contains(st.Reasons, "scanner_offline") {
		t.Fatalf("status with the scanner unplugged: %+v; want in service, scanner offline", st)
	}
	l.set(true)
	wait.For(t, 10*time.Second, "the scanner back", func() bool { return k.Status().Scanner == "ok" })
	if st := k.Status(); !st.InService {
		t.Fatalf("status with the scanner back: %+v", st)
	}
}

// A serial scale unplugged reads offline, and the hub hears at once, not
// at the next heartbeat; plugged back in, it reads again and the hub
// hears that too.
func TestScaleUnpluggedToldAtOnce(t *testing.T) {
	s := &plugScale{}
	fh := &fakeHub{answer: vectorAnswer, beats: make(chan protocol.Telemetry, 256), devices: &kiosk.Devices{Scale: s}}
	k, _ := setupWith(t, fh, nil)
	wait.For(t, 10*time.Second, "a reading", func() bool { return k.Weight().State == "ok" })
	s.unplug(true)
	heard(t, fh.beats, "the hub to hear the scale offline", func(tm protocol.Telemetry) bool { return tm.Scale == "offline" })
	if st := k.Status(); st.Scale != "offline" {
		t.Fatalf("status with the scale unplugged: %+v", st)
	}
	s.unplug(false)
	heard(t, fh.beats, "the hub to hear the scale back", func(tm protocol.Telemetry) bool { return tm.Scale == "ok" })
	if w := k.Weight(); w.State != "ok" || w.WeightMg != 20_000 {
		t.Fatalf("weight with the scale back: %+v", w)
	}
}

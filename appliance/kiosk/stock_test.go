package kiosk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/wait"
)

// Labels go out in the order their sheets were loaded, a sheet loaded
// again keeps its place, held labels are passed over, and a used label
// leaves the stock.
func TestLabelStock(t *testing.T) {
	var st labelStock
	st.load([]protocol.SheetState{{Sheet: "0000-0002", Free: []int{9, 10}}, {Sheet: "0000-0001", Free: []int{1, 2, 3}}})
	st.load([]protocol.SheetState{{Sheet: "0000-0002", Free: []int{10}}}) // reloaded after a restart
	if n := st.left(); n != 4 {
		t.Fatalf("%d labels left, want 4", n)
	}
	got, err := st.next(3, map[string]bool{"0000-0001-01": true})
	if err != nil || !slices.Equal(got, []string{"0000-0002-10", "0000-0001-02", "0000-0001-03"}) {
		t.Fatalf("next: %v %v", got, err)
	}
	st.consume("0000-0002-10")
	st.consume("not a label")
	if n := st.left(); n != 3 || len(st.sheets) != 1 {
		t.Fatalf("after a use: %d left on %d sheets", n, len(st.sheets))
	}
	if _, err := st.next(4, nil); !errors.Is(err, &protocol.Error{Code: protocol.CodeServiceUnavailable}) {
		t.Fatalf("more labels than loaded: %v", err)
	}
}

// A sheet of the journal the hub has not answered for keeps its place:
// labels before it go out, none after it; loaded, it is counted where it
// was, and dropped, it is gone.
func TestLabelStockUnknownSheet(t *testing.T) {
	var st labelStock
	st.load([]protocol.SheetState{{Sheet: "0000-0001", Free: []int{10}}})
	st.await([]string{"0000-0001", "0000-0002", "00000003", "not a sheet"})
	st.load([]protocol.SheetState{{Sheet: "0000-0003", Free: []int{5}}})
	if w := st.waiting(); !slices.Equal(w, []string{"0000-0002"}) {
		t.Fatalf("waiting for %v, want 0000-0002", w)
	}
	if got, err := st.next(1, nil); err != nil || !slices.Equal(got, []string{"0000-0001-10"}) {
		t.Fatalf("next before the unknown sheet: %v %v", got, err)
	}
	if got, err := st.next(2, nil); err == nil {
		t.Fatalf("next past the unknown sheet: %v", got)
	}
	st.consume("0000-0001-10")
	if s := st.serials(); !slices.Equal(s, []string{"0000-0002", "0000-0003"}) || st.left() != 1 {
		t.Fatalf("after a use: %v, %d left", s, st.left())
	}
	st.load([]protocol.SheetState{{Sheet: "0000-0002", Free: []int{1, 2}}})
	if got, err := st.next(3, nil); err != nil || !slices.Equal(got, []string{"0000-0002-01", "0000-0002-02", "0000-0003-05"}) {
		t.Fatalf("next once the sheet is known: %v %v", got, err)
	}
	st.await([]string{"0000-0004"})
	st.drop("00000004")
	if w, s := st.waiting(), st.serials(); len(w) != 0 || !slices.Equal(s, []string{"0000-0002", "0000-0003"}) {
		t.Fatalf("after a drop: waiting %v, stock %v", w, s)
	}
}

// stockHub is a hub in memory that answers only stock loads, by answer
// (nil: no answer), and hands the kiosk its config.
type stockHub struct {
	mu      sync.Mutex
	deliver func(suffix string, payload []byte)
	up      atomic.Bool
	answer  func(sheet string) *protocol.StockResult
}

func (h *stockHub) Open(deliver func(string, []byte)) {
	h.mu.Lock()
	h.deliver = deliver
	h.mu.Unlock()
	h.up.Store(true)
	b, _ := json.Marshal(protocol.KioskConfig{KioskID: "k1", HeartbeatS: 30, Rates: prototest.Rates})
	go deliver(protocol.TopicConfig, b)
}

func (h *stockHub) Up() bool { return h.up.Load() }

func (h *stockHub) Send(suffix string, payload []byte, _ time.Duration) bool {
	if !h.up.Load() {
		return false
	}
	if suffix != protocol.TopicStock {
		return true
	}
	r, err := protocol.DecodeStockLoad(payload)
	if err != nil || len(r.Sheets) != 1 {
		panic(fmt.Sprintf("stock load %s: %v", payload, err))
	}
	go func() {
		res := h.answer(r.Sheets[0])
		if res == nil {
			return
		}
		res.RequestID = r.RequestID
		b, _ := json.Marshal(res)
		h.mu.Lock()
		deliver := h.deliver
		h.mu.Unlock()
		deliver(protocol.TopicStockResult, b)
	}()
	return true
}

func (h *stockHub) Close() { h.up.Store(false) }

type nopPrinter struct{}

func (nopPrinter) Print(image.Image) error { return nil }

// A kiosk that starts while the hub cannot answer for one of its sheets
// (its store failed: internal_error, service_unavailable; ops locked the
// kiosk; no answer at all) keeps that sheet, in its place before the
// sheets loaded after it, says checking_stock and sells none of its
// labels meanwhile, and asks again until the hub answers: then it counts
// the sheet's labels, and hands them out first. A sheet the hub refuses
// for good (moved, used up, never issued, another store's) is forgotten.
func TestReloadKeepsSheetTheHubCannotAnswerFor(t *testing.T) {
	const a, b, c = "1966-F8CF", "1966-F8D0", "1966-F8D1"
	final := []protocol.Code{protocol.CodeLabelAssignedElsewhere, protocol.CodeLabelUsed, protocol.CodeLabelUnknown, protocol.CodeLabelNotAssigned}
	for i, transient := range []protocol.Code{protocol.CodeInternal, protocol.CodeServiceUnavailable, protocol.CodeKioskLocked, ""} {
		name := string(transient)
		if name == "" {
			name = "no_answer"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			j, err := journal.Open(t.TempDir() + "/journal.db")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { j.Close() })
			for _, s := range []string{a, b, c} { // in this order
				if err := j.AddSheets(ctx, []string{s}); err != nil {
					t.Fatal(err)
				}
			}
			release := make(chan struct{})
			var asked atomic.Int32 // loads of a
			hub := &stockHub{answer: func(sheet string) *protocol.StockResult {
				ok := &protocol.StockResult{Status: protocol.ResultOK, Sheets: []protocol.SheetState{{Sheet: sheet, Free: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}}}
				switch sheet {
				case a:
					asked.Add(1)
					select {
					case <-release:
						ok.Sheets[0].Free = []int{3, 4, 5, 6, 7, 8, 9, 10}
						return ok
					default:
					}
					if transient == "" {
						return nil
					}
					return &protocol.StockResult{Status: protocol.ResultRejected, Error: protocol.Errorf(transient, "not now")}
				case c:
					return &protocol.StockResult{Status: protocol.ResultRejected, Error: protocol.Errorf(final[i], "not yours")}
				}
				return ok
			}}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			if testing.Verbose() {
				log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			}
			k, err := New(Config{ID: "k1", Link: hub, OriginZIP: "94544", ResendEvery: 20 * time.Millisecond, Deadline: 300 * time.Millisecond}, nopPrinter{}, log)
			if err != nil {
				t.Fatal(err)
			}
			k.UseJournal(j)
			if err := k.Connect(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(k.Close)
			select {
			case <-k.Recovered():
			case <-time.After(10 * time.Second):
				t.Fatal("the kiosk did not finish its start")
			}

			// The hub has not answered for a: the kiosk still holds it, and
			// asks again.
			if kept, err := j.Sheets(ctx); err != nil || !slices.Contains(kept, a) || !slices.Contains(kept, b) {
				t.Fatalf("the journal holds %v (%v) after the hub could not answer for %s, want %s and %s", kept, err, a, a, b)
			}
			wait.For(t, 10*time.Second, "the kiosk to say its stock unknown, and ask about "+a+" again", func() bool {
				return k.stockUnknown.Load() && asked.Load() >= 2
			})
			if r := k.Status().Reasons; !slices.Contains(r, "checking_stock") {
				t.Fatalf("with %s not answered for the kiosk says %v, want checking_stock", a, r)
			}
			if tm := k.Telemetry(); !tm.LabelsUnknown {
				t.Fatalf("with %s not answered for the heartbeat says labels known, %d left", a, tm.LabelsLeft)
			}
			if got, err := k.stock.next(1, nil); err == nil {
				t.Fatalf("with %s not answered for, the kiosk hands out %v (of a sheet loaded after it)", a, got)
			}

			// The hub answers: a's labels are counted, first in line.
			close(release)
			wait.For(t, 10*time.Second, "the kiosk to count "+a+"'s labels", func() bool {
				return !k.stockUnknown.Load() && k.LabelsLeft() == 18
			})
			if kept, err := j.Sheets(ctx); err != nil || !slices.Equal(kept, []string{a, b}) {
				t.Fatalf("the journal holds %v (%v), want %s %s, and %s (%s) forgotten", kept, err, a, b, c, final[i])
			}
			if s := k.stock.serials(); !slices.Equal(s, []string{a, b}) {
				t.Fatalf("stock in the order %v, want %s %s", s, a, b)
			}
			if got, err := k.stock.next(1, nil); err != nil || !slices.Equal(got, []string{a + "-03"}) {
				t.Fatalf("next label %v %v, want %s-03", got, err, a)
			}
			if r := k.Status().Reasons; slices.Contains(r, "checking_stock") {
				t.Fatalf("with its stock known the kiosk still says %v", r)
			}
		})
	}
}

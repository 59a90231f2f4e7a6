package kiosk_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/wait"
)

// The settler lists the open sales, then spends a round trip on each. A
// customer's sale listed while in hand may be answered, printed and
// reported before the settler reaches it; acting on the old copy, the
// settler sent it again, marked its printed label failed, reported it and
// refunded it: a stamp in the customer's hand voided. It now reads each
// sale again once it has it in hand.
func TestSettlerLeavesAFinishedSaleAlone(t *testing.T) {
	var mu sync.Mutex
	var first, second string
	var firstAfter atomic.Int32 // sends of the first sale since the second began
	var firstLater atomic.Int32 // and since the second was answered
	answered := make(chan struct{})
	release := make(chan struct{})
	var once, answeredOnce sync.Once
	fh := &fakeHub{journal: openJournal(t), confirm: func(protocol.PrintReport) bool { return true }}
	fh.answer = func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
		mu.Lock()
		if first == "" {
			first = req.RequestID
		} else if second == "" && req.RequestID != first {
			second = req.RequestID
		}
		f, s := first, second
		mu.Unlock()
		switch req.RequestID {
		case f:
			select {
			case <-answered:
				firstLater.Add(1)
			default:
			}
			if s != "" && firstAfter.Add(1) >= 2 {
				once.Do(func() { close(release) }) // the settler's round listed the second sale in hand
			}
			return nil // the hub never answers the first sale
		case s:
			<-release
			defer answeredOnce.Do(func() { close(answered) })
			return vectorAnswer(req)
		}
		return vectorAnswer(req)
	}
	k, p := setupWith(t, fh, func(c *kiosk.Config) { c.Deadline = time.Second })
	if _, err := k.Sell(context.Background(), order("1966-F8CF-02")); protocol.AsError(err).Code != protocol.CodeServiceUnavailable {
		t.Fatalf("first sale: %v, want service_unavailable (no answer)", err)
	}
	rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
	if err != nil || rc.Status != protocol.ResultOK || rc.Labels[0].Outcome != protocol.Printed || p.count() != 1 {
		t.Fatalf("second sale: %+v %v", rc, err)
	}
	// The round that listed the second sale has gone past it once the
	// first is sent again in the next.
	wait.For(t, 20*time.Second, "the settler's next round", func() bool { return firstLater.Load() >= 2 })
	s, err := fh.journal.Get(context.Background(), rc.RequestID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Labels[0].State != journal.Printed {
		t.Errorf("the printed label is %s (%s) in the journal", s.Labels[0].State, s.Labels[0].Reason)
	}
	for len(fh.prints) > 0 {
		r := <-fh.prints
		for _, l := range r.Labels {
			if r.RequestID == rc.RequestID && l.Outcome != protocol.Printed {
				t.Errorf("the printed label was reported %s (%s): the hub voids a stamp the customer holds", l.Outcome, l.Reason)
			}
		}
	}
	for len(fh.refunds) > 0 {
		if r := <-fh.refunds; r.Label.RequestID == rc.RequestID {
			t.Errorf("a refund was asked for the printed label %s", r.Label.LabelSerial)
		}
	}
}

// brokenJournal is a journal whose writes of one kind fail after the
// sale's Begin went in: a full or failing SD card.
type brokenJournal struct {
	*journal.Journal
	answers, labels atomic.Bool
}

func (b *brokenJournal) Answer(ctx context.Context, id string, result []byte) error {
	if b.answers.Load() {
		return errors.New("disk I/O error")
	}
	return b.Journal.Answer(ctx, id, result)
}

func (b *brokenJournal) SetLabel(ctx context.Context, id, serial string, st journal.LabelState, reason string) error {
	if b.labels.Load() {
		return errors.New("disk I/O error")
	}
	return b.Journal.SetLabel(ctx, id, serial, st, reason)
}

// A label is printed only once the journal holds the hub's answer and that
// the label is printing: printed unrecorded, a power cut would have it
// reported failed and refunded while in the customer's hand. Unprinted, it
// is reported failed; a sale whose answer was not recorded is settled as
// one the hub did not answer, and refunded, once the journal writes again.
func TestNothingPrintedUnrecorded(t *testing.T) {
	for _, c := range []struct {
		name            string
		answers, labels bool
	}{{"answer", true, false}, {"printing", false, true}} {
		t.Run(c.name, func(t *testing.T) {
			j := openJournal(t)
			fh := &fakeHub{answer: vectorAnswer, confirm: func(protocol.PrintReport) bool { return true }, t: t,
				prints: make(chan protocol.PrintReport, 64), refunds: make(chan protocol.RefundRequest, 16)}
			fh.link = &memLink{hub: fh.handle}
			fh.link.push(protocol.TopicConfig, protocol.KioskConfig{KioskID: "k1", HeartbeatS: 30, Rates: prototest.Rates})
			p := &fakePrinter{}
			kc := kiosk.Config{ID: "k1", Link: fh.link, OriginZIP: "94544", ResendEvery: 200 * time.Millisecond, Deadline: 5 * time.Second}
			bj := &brokenJournal{Journal: j}
			k := startKiosk(t, kc, p, slog.New(slog.NewTextHandler(io.Discard, nil)), func(k *kiosk.Kiosk) { k.UseJournal(bj) })
			<-k.Recovered()
			bj.answers.Store(c.answers)
			bj.labels.Store(c.labels)
			rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
			bj.answers.Store(false) // the card works again: the settler can record what it learns
			bj.labels.Store(false)
			if p.count() != 0 {
				t.Fatalf("printed %d label(s) the journal did not record", p.count())
			}
			switch {
			case c.answers && protocol.AsError(err).Code != protocol.CodeServiceUnavailable:
				t.Fatalf("answer not recorded: %+v %v; want service_unavailable", rc, err)
			case c.labels && (err != nil || rc.Labels[0].Outcome != protocol.PrintFailed || rc.Labels[0].Reason != "journal_error"):
				t.Fatalf("printing not recorded: %+v %v; want the label failed, journal_error", rc, err)
			}
			select {
			case r := <-fh.prints:
				if r.Labels[0].Outcome != protocol.PrintFailed {
					t.Fatalf("reported %+v; want failed", r.Labels)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the unprinted label was never reported")
			}
			if c.answers { // the customer was told nothing printed: the settler refunds
				select {
				case r := <-fh.refunds:
					if r.Label.LabelSerial != "1966-F8CF-01" {
						t.Fatalf("refund of %s", r.Label.LabelSerial)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the unprinted label was never refunded")
				}
			}
		})
	}
}

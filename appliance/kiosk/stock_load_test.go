package kiosk_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/protocol"
)

// A power cut as the hub loads a sheet staff scanned must not leave it
// loaded at the hub and unknown to the kiosk: the kiosk asks the hub at
// start only about the sheets its journal holds, so the journal records
// the sheet before the hub is asked. Started again, the kiosk has the
// sheet's labels without staff scanning it again.
func TestSheetLoadedAtTheHubSurvivesACut(t *testing.T) {
	const sheet = "1966-F8CF"
	j := openJournal(t)
	var mu sync.Mutex
	var journaled []string // what the journal held as the hub took the load in
	asked := make(chan struct{})
	never := make(chan struct{}) // the answer the cut keeps from the kiosk
	defer close(never)
	fh := &fakeHub{answer: vectorAnswer, journal: j, stockGate: never, onStock: func(*protocol.StockLoad) {
		held, err := j.Sheets(context.Background())
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		journaled = held
		mu.Unlock()
		close(asked)
	}}
	k, _ := setup(t, fh)
	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan error, 1)
	go func() {
		_, err := k.LoadStock(ctx, []string{sheet})
		loaded <- err
	}()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the hub was not asked to load the sheet")
	}
	// --- the hub has loaded the sheet; the power goes ---
	cancel()
	<-loaded
	k.Close()
	mu.Lock()
	held := journaled
	mu.Unlock()
	if !slices.Contains(held, sheet) {
		t.Errorf("as the hub loaded %s the journal held %v: a cut now loses it", sheet, held)
	}

	// The kiosk starts again, on the same journal.
	fh2 := &fakeHub{answer: vectorAnswer, journal: j}
	k2, _ := setup(t, fh2)
	if n := k2.LabelsLeft(); n != 10 {
		t.Fatalf("after the cut the kiosk has %d labels, want the 10 of %s, loaded at the hub", n, sheet)
	}
}

// A sheet the hub refuses to load is not kept: the next start does not ask
// about it, and the shift report does not count it loaded.
func TestSheetRefusedNotKept(t *testing.T) {
	j := openJournal(t)
	fh := &fakeHub{answer: vectorAnswer, journal: j, stockRefuse: protocol.Errorf(protocol.CodeLabelAssignedElsewhere, "not yours")}
	k, _ := setup(t, fh)
	from := time.Now().Add(-time.Minute)
	res, err := k.LoadStock(context.Background(), []string{"1966-F8CF"})
	if err != nil || res.Status != protocol.ResultRejected {
		t.Fatalf("load: %+v %v; want refused", res, err)
	}
	held, err := j.Sheets(context.Background())
	if err != nil || len(held) != 0 {
		t.Fatalf("the journal holds %v (%v) after the hub refused the sheet", held, err)
	}
	if n, err := j.LoadedSince(context.Background(), from); err != nil || n != 0 {
		t.Fatalf("%d sheets counted loaded (%v) after the hub refused the only one", n, err)
	}
}

// A stock load by staff can overlap a sale: the hub's answer, from before
// the sale took its label, counts that label free. The kiosk must not offer
// it again: the hub would refuse it as label_used, a false alarm of a label
// used twice.
func TestStockAnswerFromBeforeASaleFreesNoSoldLabel(t *testing.T) {
	const sheet = "1966-F8CF"
	var loads atomic.Int32
	asked, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	sold := map[string]bool{}
	var second []string
	fh := &fakeHub{
		onStock: func(*protocol.StockLoad) {
			if loads.Add(1) == 2 { // staff's second load: the hub has answered, the answer is on its way
				close(asked)
				<-release
			}
		},
		answer: func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
			mu.Lock()
			defer mu.Unlock()
			l := req.Items[0].LabelSerial
			if sold[l] {
				return &protocol.PurchaseResult{RequestID: req.RequestID, Status: protocol.ResultRejected, Error: protocol.Errorf(protocol.CodeLabelUsed, "label %s used already", l)}
			}
			if l == sheet+"-01" {
				sold[l] = true
				return vectorAnswer(req)
			}
			second = append(second, l)
			return &protocol.PurchaseResult{RequestID: req.RequestID, Status: protocol.ResultRejected, Error: protocol.Errorf(protocol.CodePaymentDeclined, "declined")}
		},
	}
	k, _ := setup(t, fh)
	ctx := context.Background()
	if res, err := k.LoadStock(ctx, []string{sheet}); err != nil || res.Status != protocol.ResultOK || k.LabelsLeft() != 10 {
		t.Fatalf("first load: %+v %v, %d labels", res, err, k.LabelsLeft())
	}
	next := kiosk.Order{RateClass: "1100", WeightMg: 20_000, Payment: protocol.Payment{Method: protocol.PayCardToken, Token: "tok"}}

	loaded := make(chan error, 1)
	go func() { // staff scan the sheet again
		_, err := k.LoadStock(ctx, []string{sheet})
		loaded <- err
	}()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the hub was not asked to load the sheet again")
	}
	rc, err := k.Sell(ctx, next) // takes -01 meanwhile
	if err != nil || rc.Status != protocol.ResultOK || len(rc.Labels) != 1 || rc.Labels[0].LabelSerial != sheet+"-01" {
		t.Fatalf("sale during the load: %+v %v", rc, err)
	}
	close(release)
	select {
	case err := <-loaded:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second load did not end")
	}
	if n := k.LabelsLeft(); n != 9 {
		t.Errorf("after the sale and the load it overlapped the kiosk counts %d labels free, want 9", n)
	}
	rc, err = k.Sell(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Error != nil && rc.Error.Code == protocol.CodeLabelUsed {
		t.Fatalf("the next sale offered the sold label again: %v", rc.Error)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(second) != 1 || second[0] != sheet+"-02" {
		t.Fatalf("the next sale offered %v, want %s-02", second, sheet)
	}
}

// Two staff loads of the same new sheet at once: the first refused for a
// passing reason, the second loaded. The sheet stays in the journal: the
// refused load does not forget a sheet the other one loaded.
func TestRefusedLoadKeepsASheetAnotherLoaded(t *testing.T) {
	const sheet = "1966-F8CF"
	j := openJournal(t)
	var loads atomic.Int32
	var first atomic.Value // the first load's request id
	atHub, second := make(chan struct{}), make(chan struct{})
	fh := &fakeHub{answer: vectorAnswer, journal: j,
		onStock: func(r *protocol.StockLoad) {
			switch loads.Add(1) {
			case 1:
				first.Store(r.RequestID)
				close(atHub)
				select { // the second load's arrival, if it comes before this answer
				case <-second:
				case <-time.After(2 * time.Second):
				}
			case 2:
				close(second)
			}
		},
		stockRefuseIf: func(r *protocol.StockLoad) *protocol.Error {
			if first.Load() == r.RequestID {
				return protocol.Errorf(protocol.CodeServiceUnavailable, "a passing fault")
			}
			return nil
		},
	}
	k, _ := setup(t, fh)
	var wg sync.WaitGroup
	wg.Go(func() { k.LoadStock(context.Background(), []string{sheet}) })
	<-atHub
	var res *protocol.StockResult
	var err error
	wg.Go(func() { res, err = k.LoadStock(context.Background(), []string{sheet}) })
	wg.Wait()
	if err != nil || res.Status != protocol.ResultOK {
		t.Fatalf("the second load: %+v %v", res, err)
	}
	if held, err := j.Sheets(context.Background()); err != nil || !slices.Contains(held, sheet) {
		t.Fatalf("the journal holds %v (%v): the refused load forgot the sheet the other loaded", held, err)
	}
}

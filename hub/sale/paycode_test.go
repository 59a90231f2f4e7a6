package sale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// codes is a pay code store with one code, used by at most one purchase.
type codes struct {
	usedBy   string
	released int
}

func (c *codes) AccountID(context.Context, string) (int64, error) { return 7, nil }
func (c *codes) RedeemPayCode(_ context.Context, _, purchase string, _ protocol.Mills) (int64, error) {
	if c.usedBy != "" && c.usedBy != purchase {
		return 0, errors.New("used")
	}
	c.usedBy = purchase
	return 7, nil
}
func (c *codes) ReleasePayCode(_ context.Context, _, purchase string) error {
	if c.usedBy == purchase {
		c.usedBy, c.released = "", c.released+1
	}
	return nil
}

// A sale paid with a one-time pay code that was refused gives the code
// back; one whose commit the hub could not confirm may stand (settlement
// then captures its account hold), so its code stays used: another
// purchase must not spend it again.
func TestPayCodeKeptWhileTheSaleMayStand(t *testing.T) {
	req := strings.Replace(prototest.GoodPurchase, `{"method":"card_token","token":"tok_approve","brand":"visa","last4":"4242"}`,
		`{"method":"account","pay_code":"PAY-ABCD-EFGH-2345-67QR"}`, 1)
	for _, c := range []struct {
		commit   error
		code     protocol.Code
		released int
	}{
		{errors.New("driver: bad connection"), protocol.CodeOutcomeUnknown, 0},
		{protocol.Errorf(protocol.CodeFundsUnavailable, "the postage fund is short"), protocol.CodeFundsUnavailable, 1},
	} {
		pc := &codes{}
		s := &Service{Seller: fakeSeller{c.commit}, Book: &fakeBook{}, Kiosks: fakeKiosks{}, Rates: fakeRates{},
			Money: &fakeMoney{}, Accounts: pc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
		_, perr := s.Purchase(context.Background(), "kiosk-1", []byte(req))
		if perr == nil || perr.Code != c.code {
			t.Fatalf("commit %v: answer %v, want %s", c.commit, perr, c.code)
		}
		if pc.released != c.released {
			t.Errorf("commit %v: the pay code was given back %d times, want %d (used by %q)", c.commit, pc.released, c.released, pc.usedBy)
		}
	}
}

// laterBook is a ledger where an answer to the request appears after the
// sale's own precheck: another hub, which held the request until its lease
// lapsed, recorded it meanwhile.
type laterBook struct {
	fakeBook
	prechecks int
	prior     []byte
}

func (b *laterBook) Precheck(context.Context, string, string, []byte, []protocol.LabelSerial, ledger.Owner) ([]byte, *protocol.Error, error) {
	b.prechecks++
	if b.prechecks > 1 {
		return b.prior, nil, nil
	}
	return nil, nil, nil
}

// alertsSeen counts the alerts raised, in all and by kind and subject.
type alertsSeen struct {
	n  int
	by map[string]int // "kind subject"
}

func (a *alertsSeen) Raise(_ context.Context, kind, subject, _ string) {
	if a.by == nil {
		a.by = map[string]int{}
	}
	a.n++
	a.by[kind+" "+subject]++
}

// Past a kiosk's budget of recorded refusals, a refusal is not recorded,
// but an answer recorded meanwhile still wins over it, as Reject's look
// for one does within the budget.
func TestRefusalPastTheBudgetReplaysAnAnswerRecorded(t *testing.T) {
	prior := []byte(`{"request_id":"r-0001","status":"ok"}`)
	book := &laterBook{prior: prior}
	s := &Service{Seller: fakeSeller{protocol.Errorf(protocol.CodeLabelUsed, "label used")}, Book: book, Kiosks: fakeKiosks{},
		Rates: fakeRates{}, Money: &fakeMoney{}, Alerts: &alertsSeen{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
	for range RefusalBurst {
		s.mayRecordRefusal(context.Background(), "kiosk-1")
	}
	out, perr := s.Purchase(context.Background(), "kiosk-1", []byte(prototest.GoodPurchase))
	if perr != nil || string(out) != string(prior) {
		t.Fatalf("answer %s %v, want the one recorded meanwhile", out, perr)
	}
}

// usedBook finds every label offered used, and counts the reuse records.
type usedBook struct {
	fakeBook
	records int
}

func (b *usedBook) UsedLabels(_ context.Context, labels []protocol.LabelSerial) ([]protocol.LabelSerial, error) {
	return labels, nil
}

func (b *usedBook) RecordReuse(context.Context, protocol.LabelSerial, string, string) error {
	b.records++
	return nil
}

// A kiosk offering used labels over and over writes a reuse record and a
// fraud alert for each only within its budget (RefusalBurst labels, then one
// every RefusalEvery), and past it one alert that it is over; with time it
// has its budget back. Before, every label of every offer wrote a row and
// an alert, at whatever rate the kiosk sent.
func TestLabelReuseRecordsBounded(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	book, seen := &usedBook{}, &alertsSeen{}
	s := &Service{Book: book, Alerts: seen, Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }}
	labels := []protocol.LabelSerial{{Sheet: 0x1966F8CF, Position: 1}, {Sheet: 0x1966F8CF, Position: 2}}
	for i := range RefusalBurst {
		s.fraud(context.Background(), "kiosk-1", fmt.Sprintf("r-%d", i), labels)
	}
	if book.records != RefusalBurst || seen.n != RefusalBurst+1 {
		t.Fatalf("%d reuse records and %d alerts after %d offers of 2 used labels; want %d records and %d alerts (one per label, then the kiosk's)",
			book.records, seen.n, RefusalBurst, RefusalBurst, RefusalBurst+1)
	}
	// Each is a fraud alert: one per label recorded, and one that the
	// kiosk is over its budget, under the subject ops' rules match.
	want := map[string]int{
		alerts.Fraud + " label/" + labels[0].String(): RefusalBurst / 2,
		alerts.Fraud + " label/" + labels[1].String(): RefusalBurst / 2,
		alerts.Fraud + " kiosk/kiosk-1/reuse":         1,
	}
	if !maps.Equal(seen.by, want) {
		t.Fatalf("alerts by kind and subject %v, want %v", seen.by, want)
	}
	s.fraud(context.Background(), "kiosk-2", "r-1", labels)
	if book.records != RefusalBurst+2 {
		t.Fatalf("another kiosk's offer: %d records, want its 2 recorded", book.records-RefusalBurst)
	}
	if n := seen.by[alerts.Fraud+" kiosk/kiosk-2/reuse"]; n != 0 {
		t.Fatalf("kiosk-2, within its budget, raised %d reuse alerts", n)
	}
	now = now.Add(2 * RefusalEvery)
	s.fraud(context.Background(), "kiosk-1", "r-late", labels)
	if book.records != RefusalBurst+4 {
		t.Fatalf("an offer once the budget came back: %d records, want 2", book.records-RefusalBurst-2)
	}
	if n := seen.by[alerts.Fraud+" kiosk/kiosk-1/reuse"]; n != 1 {
		t.Fatalf("kiosk-1 back within its budget: %d reuse alerts, want still 1", n)
	}
}

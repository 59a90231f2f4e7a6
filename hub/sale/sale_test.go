package sale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

type fakeSeller struct{ err error }

func (f fakeSeller) Issue(context.Context, *ledger.Sale) (ledger.Answer, error) {
	return ledger.Answer{}, f.err
}

// fakeBook is a ledger with no earlier answers; what else it is asked
// panics.
type fakeBook struct{ saleRecords }

func (b *fakeBook) Stopped() error { return nil }
func (b *fakeBook) Precheck(context.Context, string, string, []byte, []protocol.LabelSerial, ledger.Owner) ([]byte, *protocol.Error, error) {
	return nil, nil, nil
}
func (b *fakeBook) PrecheckRead(string, string, []byte, []protocol.LabelSerial, ledger.Owner) *ledger.Check {
	return &ledger.Check{}
}
func (b *fakeBook) Reject(_ context.Context, _, requestID string, _ []byte, perr *protocol.Error) ([]byte, error) {
	return json.Marshal(protocol.Rejected(requestID, perr))
}

type fakeKiosks struct{}

func (fakeKiosks) InService(_ context.Context, id string) (fleet.Kiosk, error) {
	return fleet.Kiosk{ID: id, UserID: 1, ZIP: "94544"}, nil
}

type fakeRates struct{}

func (fakeRates) Current(time.Time) (protocol.RateTable, error) { return prototest.Rates, nil }

// fakeMoney holds every payment, and says what became of the hold.
type fakeMoney struct {
	releaseErr error
	released   int
	captured   int
	refundErr  error
}

func (m *fakeMoney) Hold(_ context.Context, key payments.Key, _ payments.Source, amount protocol.Mills) (*payments.Payment, error) {
	return &payments.Payment{Key: key, Method: "card", Ref: "auth-1", Amount: amount, State: "authorizing"}, nil
}

// HoldChecked finds a payment there already: the sale goes the long way.
func (m *fakeMoney) HoldChecked(context.Context, payments.Key, string, protocol.Mills, *store.Read, func() bool) (*payments.Payment, bool, error) {
	return nil, false, nil
}

// PaidRead leaves the read as it is: every hold goes through Hold.
func (m *fakeMoney) PaidRead(_ payments.Key, r *store.Read) (*store.Read, *int) { return r, nil }
func (m *fakeMoney) HoldFirst(context.Context, payments.Key, string, protocol.Mills) (*payments.Payment, error) {
	panic("HoldFirst without a payment count")
}
func (m *fakeMoney) Release(context.Context, *payments.Payment) error {
	m.released++
	return m.releaseErr
}
func (m *fakeMoney) CaptureLater(*payments.Payment) { m.captured++ }
func (m *fakeMoney) Refund(context.Context, payments.Key, protocol.Mills, string) error {
	return m.refundErr
}

// A sale whose commit the hub cannot confirm may stand: the kiosk is told
// outcome_unknown, which is not recorded (a resend runs again and finds
// the sale if it stood), and the hold is neither voided nor captured
// here: settlement captures it if the sale stood and voids it if not.
// Only outcome_unknown says so; a kiosk keeps such a sale open.
func TestUnknownOutcomeIsNotFinal(t *testing.T) {
	for _, tc := range []struct {
		name       string
		issue      error
		releaseErr error
		released   int
		captured   int
	}{
		{name: "commit not confirmed", issue: errors.New("driver: bad connection")},
		{name: "refused, but the hold was its own sale's", issue: protocol.Errorf(protocol.CodeLabelUsed, "label used"),
			releaseErr: payments.ErrRecorded, released: 1, captured: 1},
		{name: "another hub settled the attempt", issue: payments.ErrOtherHub, released: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			book, money := &fakeBook{}, &fakeMoney{releaseErr: tc.releaseErr}
			s := &Service{Seller: fakeSeller{tc.issue}, Book: book, Kiosks: fakeKiosks{}, Rates: fakeRates{}, Money: money,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
			out, perr := s.Purchase(context.Background(), "kiosk-1", []byte(prototest.GoodPurchase))
			res, err := protocol.DecodePurchaseResult(out)
			if err != nil {
				t.Fatal(err)
			}
			if perr == nil || perr.Code != protocol.CodeOutcomeUnknown || res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeOutcomeUnknown {
				t.Fatalf("answer %s (%v), want outcome_unknown", out, perr)
			}
			if !ledger.Retryable(protocol.CodeOutcomeUnknown) {
				t.Fatal("the ledger would record outcome_unknown as final")
			}
			if money.released != tc.released || money.captured != tc.captured {
				t.Fatalf("hold released %d times and captured %d, want %d and %d", money.released, money.captured, tc.released, tc.captured)
			}
		})
	}
}

// refundBook reserves every refund, and counts the reservations dropped.
type refundBook struct {
	fakeBook
	released int
}

func (b *refundBook) ReserveRefund(_ context.Context, _, saleID string, label protocol.LabelSerial, _ string) (*ledger.Spoiled, error) {
	return &ledger.Spoiled{Label: label, RateClass: "1100", Postage: 780, PaidBy: saleID}, nil
}
func (b *refundBook) ReleaseRefund(context.Context, string, protocol.LabelSerial) error {
	b.released++
	return nil
}

// A refund is recorded before its money moves. If the payment refuses it
// for good, nothing moved: the record goes, and the label may have its
// reprint. If the outcome is unknown, the record stays (no reprint), and
// the kiosk's next request finishes the refund.
func TestRefundReservationKeptUnlessRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		code     protocol.Code
		released int
	}{
		{name: "refunded"},
		{name: "nothing to refund", err: fmt.Errorf("payments: refund: %w", protocol.Errorf(protocol.CodeRemedyNotAllowed, "nothing left to refund")),
			code: protocol.CodeRemedyNotAllowed, released: 1},
		{name: "gateway silent", err: errors.New("payments: gateway /v1/refund: 502 Bad Gateway"), code: protocol.CodeInternal},
		{name: "gateway timed out", err: protocol.Errorf(protocol.CodePaymentTimeout, "no answer"), code: protocol.CodePaymentTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			book := &refundBook{}
			s := &Service{Book: book, Kiosks: fakeKiosks{}, Money: &fakeMoney{refundErr: tc.err}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
			req, _ := json.Marshal(protocol.RefundRequest{RequestID: "f-1", KioskID: "kiosk-1", Label: protocol.LabelRef{RequestID: "r-1", LabelSerial: "1966-F8CF-01"}})
			out, perr := s.Refund(context.Background(), "kiosk-1", req)
			var res protocol.RefundResult
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.code == "" && (perr != nil || res.Status != protocol.ResultOK || res.AmountMills != 780):
				t.Fatalf("answer %s (%v), want ok 780", out, perr)
			case tc.code != "" && (perr == nil || perr.Code != tc.code):
				t.Fatalf("answer %s (%v), want %s", out, perr, tc.code)
			}
			if book.released != tc.released {
				t.Fatalf("reservation released %d times, want %d", book.released, tc.released)
			}
		})
	}
}

// A stamp the HSM could not sign comes back from the pool as
// service_unavailable (wrapped in the pool's and the ledger's errors): the
// sale is refused as such, retryable, and its card hold released, as
// other failures before the commit are; not outcome_unknown.
func TestSigningFailureReleasesTheHold(t *testing.T) {
	signing := errors.Join(fmt.Errorf("psdm: worker 1: signing failed: %w: %w",
		errors.New("pkcs11: sign: hsm: session lost: CKR_DEVICE_REMOVED"),
		protocol.Errorf(protocol.CodeServiceUnavailable, "signing unavailable; try again")))
	book, money := &fakeBook{}, &fakeMoney{}
	s := &Service{Seller: fakeSeller{signing}, Book: book, Kiosks: fakeKiosks{}, Rates: fakeRates{}, Money: money,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
	_, perr := s.Purchase(context.Background(), "kiosk-1", []byte(prototest.GoodPurchase))
	if perr == nil || perr.Code != protocol.CodeServiceUnavailable {
		t.Fatalf("answer %v, want service_unavailable", perr)
	}
	if !ledger.Retryable(protocol.CodeServiceUnavailable) {
		t.Fatal("the ledger would record service_unavailable as final")
	}
	if money.released != 1 || money.captured != 0 {
		t.Fatalf("hold released %d times and captured %d, want 1 and 0", money.released, money.captured)
	}
}

// soldElsewhereBook's Reject fails as the ledger's does when another hub's
// sale of the same request committed meanwhile and its answer could not be
// read back.
type soldElsewhereBook struct{ fakeBook }

func (b *soldElsewhereBook) Reject(context.Context, string, string, []byte, *protocol.Error) ([]byte, error) {
	return nil, errors.New(`ledger: reject r-1: ERROR: duplicate key value violates unique constraint "sales_pkey" (SQLSTATE 23505)`)
}

type decliningMoney struct{ fakeMoney }

func (m *decliningMoney) Hold(context.Context, payments.Key, payments.Source, protocol.Mills) (*payments.Payment, error) {
	return nil, protocol.Errorf(protocol.CodePaymentDeclined, "declined")
}

// claimsDBDown fails every claim as a database failing over does.
type claimsDBDown struct{}

func (claimsDBDown) TakeReading(context.Context, string, string, *store.Read) (func(), bool, error) {
	return nil, false, errors.New("claims: take kiosk-1/r-0001: store: write: FATAL: terminating connection due to administrator command (SQLSTATE 57P01)")
}

// A refusal that could not be recorded, and a request whose claim (and with
// it its earlier answer) could not be read, are answered outcome_unknown:
// an earlier try, or another hub, may have sold it. The kiosk takes any
// other refusal as final: it would print nothing and ask no refund while
// the sale stood and its card was captured.
func TestUnknownFateNotAnsweredFinal(t *testing.T) {
	for _, c := range []struct {
		name string
		s    *Service
	}{
		{"refusal not recorded", &Service{Book: &soldElsewhereBook{}, Money: &decliningMoney{}}},
		{"claim not taken", &Service{Book: &fakeBook{}, Money: &fakeMoney{}, Claims: claimsDBDown{}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			s.Seller, s.Kiosks, s.Rates, s.Now = fakeSeller{}, fakeKiosks{}, fakeRates{}, time.Now
			s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			out, _ := s.Purchase(context.Background(), "kiosk-1", []byte(prototest.GoodPurchase))
			res, err := protocol.DecodePurchaseResult(out)
			if err != nil {
				t.Fatal(err)
			}
			if res.Error == nil || res.Error.Code != protocol.CodeOutcomeUnknown {
				t.Fatalf("answered %s, want outcome_unknown", out)
			}
		})
	}
}

// A kiosk's sale naming another kiosk's labels holds nothing against that
// kiosk: holds are taken before the labels are checked to be the kiosk's,
// and a rogue kiosk naming a victim's labels had the victim's own sales of
// them refused label_used, final. The kiosk's own sale in flight still
// holds its labels against its next.
func TestForeignKiosksHoldBlocksNoLabel(t *testing.T) {
	s := &Service{Seller: fakeSeller{}, Book: &fakeBook{}, Kiosks: fakeKiosks{}, Rates: fakeRates{}, Money: &fakeMoney{},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
	label := protocol.LabelSerial{Sheet: 0x1966F8CF, Position: 1}
	rogue, err := s.holdLabels(&ledger.Sale{KioskID: "kiosk-2", Items: []ledger.Item{{Label: label}}})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue()
	if out, perr := s.Purchase(context.Background(), "kiosk-1", []byte(prototest.GoodPurchase)); perr != nil {
		t.Fatalf("kiosk-1's sale of its label while kiosk-2 names it: %s", out)
	}
	own, err := s.holdLabels(&ledger.Sale{KioskID: "kiosk-1", Items: []ledger.Item{{Label: label}}})
	if err != nil {
		t.Fatal(err)
	}
	defer own()
	again := strings.Replace(prototest.GoodPurchase, `"r-0001"`, `"r-0002"`, 1)
	if _, perr := s.Purchase(context.Background(), "kiosk-1", []byte(again)); perr == nil || perr.Code != protocol.CodeLabelUsed {
		t.Fatalf("kiosk-1's second sale of a label its sale in flight holds: %v, want label_used", perr)
	}
}

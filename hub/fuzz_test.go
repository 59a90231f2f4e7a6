package hub_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// Message kinds a kiosk sends, as FuzzKioskMessages's first argument.
const (
	fuzzPurchase = iota
	fuzzRefund
	fuzzStock
	fuzzPrint
	fuzzKinds
)

// asKiosk1 rewrites a vector to come from kiosk-1 and name its labels, so
// that seeds reach past the kiosk and label checks.
func asKiosk1(raw string) string {
	var m map[string]any
	if json.Unmarshal([]byte(raw), &m) != nil {
		return raw
	}
	if _, ok := m["kiosk_id"]; ok {
		m["kiosk_id"] = "kiosk-1"
	}
	b, _ := json.Marshal(m)
	s := strings.NewReplacer("0000-0001", "1966-F8CF", "ABCD-0000", "1966-F8D0").Replace(string(b))
	return s
}

// FuzzKioskMessages feeds the purchase service's handlers what a kiosk
// could send on its own topics (purchases, refunds, stock loads, print
// reports), seeded from the protocol's vectors, on a whole hub: SQLite, the
// soft HSM, the card gateway. Every answer is a well-formed result for the
// request id the input carried, every refusal has a documented code and is
// never internal_error, nor outcome_unknown (what a hub fault is answered as
// to a purchase), and the ledger adds up after every sale.
func FuzzKioskMessages(f *testing.F) {
	for _, v := range prototest.PurchaseRequests {
		f.Add(uint8(fuzzPurchase), []byte(v.JSON))
		f.Add(uint8(fuzzPurchase), []byte(asKiosk1(v.JSON)))
	}
	f.Add(uint8(fuzzPurchase), purchase("fz-1", "kiosk-1", "1966-F8CF-01", nil))
	f.Add(uint8(fuzzPurchase), purchase("fz-2", "kiosk-1", "1966-F8CF-02", func(r *protocol.PurchaseRequest) {
		r.Payment = protocol.Payment{Method: protocol.PayAccount, PayCode: "PAY-AAAA-BBBB-CCCC-DDDD"}
	}))
	for _, b := range []any{
		protocol.RefundRequest{RequestID: "fz-r", KioskID: "kiosk-1", Label: protocol.LabelRef{RequestID: "fz-1", LabelSerial: "1966-F8CF-01"}},
	} {
		raw, _ := json.Marshal(b)
		f.Add(uint8(fuzzRefund), raw)
	}
	for _, b := range []any{
		protocol.StockLoad{RequestID: "fz-s", KioskID: "kiosk-1", Sheets: []string{"1966-F8CF", "2222-0001"}},
	} {
		raw, _ := json.Marshal(b)
		f.Add(uint8(fuzzStock), raw)
	}
	for _, outcome := range []string{protocol.Printed, protocol.PrintFailed} {
		raw, _ := json.Marshal(protocol.PrintReport{RequestID: "fz-1", KioskID: "kiosk-1",
			Labels: []protocol.LabelOutcome{{LabelSerial: "1966-F8CF-01", Outcome: outcome, Reason: "jam"}}})
		f.Add(uint8(fuzzPrint), raw)
	}
	e := newEnv(f)
	known := func(c protocol.Code) bool {
		return c != protocol.CodeInternal && slices.ContainsFunc(protocol.Codes, func(ci protocol.CodeInfo) bool { return ci.Code == c })
	}
	// sentID is the request id the input carried, if the hub could read one.
	sentID := func(b []byte) string {
		var id struct {
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(b, &id) != nil || !protocol.ValidRequestID(id.RequestID) {
			return ""
		}
		return id.RequestID
	}
	check := func(t *testing.T) {
		r, err := e.h.Ledger().Check(context.Background())
		if err != nil || !r.OK() {
			t.Fatalf("ledger: %v %v", r.Violations, err)
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		ctx := context.Background()
		switch kind % fuzzKinds {
		case fuzzPurchase:
			out, perr := e.h.Sales().Purchase(ctx, "kiosk-1", b)
			res, err := protocol.DecodePurchaseResult(out)
			if err != nil {
				t.Fatalf("answer %s does not decode: %v", out, err)
			}
			if perr != nil && (res.Status != protocol.ResultRejected || !known(perr.Code) || perr.Code == protocol.CodeOutcomeUnknown) {
				t.Fatalf("refusal %+v in %s", perr, out)
			}
			if id := sentID(b); res.RequestID != id && id != "" && perr == nil {
				t.Fatalf("answer for %q to request %q", res.RequestID, id)
			}
			if res.Status == protocol.ResultOK {
				check(t)
			}
		case fuzzRefund:
			out, perr := e.h.Sales().Refund(ctx, "kiosk-1", b)
			if _, err := protocol.DecodeRefundResult(out); err != nil {
				t.Fatalf("answer %s does not decode: %v", out, err)
			}
			if perr != nil && !known(perr.Code) {
				t.Fatalf("refusal %+v", perr)
			}
		case fuzzStock:
			out, perr := e.h.Stock().Answer(ctx, "kiosk-1", b)
			if _, err := protocol.DecodeStockResult(out); err != nil {
				t.Fatalf("answer %s does not decode: %v", out, err)
			}
			if perr != nil && !known(perr.Code) {
				t.Fatalf("refusal %+v", perr)
			}
		case fuzzPrint:
			r, err := protocol.DecodePrintReport(b)
			if err != nil || r.KioskID != "kiosk-1" {
				return // the front refuses it before the ledger sees it
			}
			if err := e.h.Ledger().RecordPrint(ctx, r); err != nil {
				t.Fatalf("a valid report was not recorded: %v", err)
			}
			check(t)
		}
	})
}

package protocol_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

func checkCode(t *testing.T, err error, want protocol.Code) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("err = %v, want none", err)
		}
		return
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != want {
		t.Fatalf("err = %v, want code %s", err, want)
	}
	if pe.Message == "" {
		t.Errorf("code %s without a message", want)
	}
}

func TestPurchaseRequestVectors(t *testing.T) {
	for _, v := range prototest.PurchaseRequests {
		t.Run(v.Name, func(t *testing.T) {
			r, err := protocol.DecodePurchaseRequest([]byte(v.JSON))
			checkCode(t, err, v.Code)
			if v.Code == "" {
				// A valid request survives a marshal round trip.
				b, _ := json.Marshal(r)
				if _, err := protocol.DecodePurchaseRequest(b); err != nil {
					t.Errorf("round trip: %v", err)
				}
			}
		})
	}
}

func TestMalformedRequestKeepsRequestID(t *testing.T) {
	r, err := protocol.DecodePurchaseRequest([]byte(`{"request_id":"r-77","kiosk_id":"k","bogus":1}`))
	checkCode(t, err, protocol.CodeMalformed)
	if r == nil || r.RequestID != "r-77" {
		t.Fatalf("request = %+v, want the request_id kept for the reply", r)
	}
}

func TestPurchaseResultVectors(t *testing.T) {
	for _, v := range prototest.PurchaseResults {
		t.Run(v.Name, func(t *testing.T) {
			_, err := protocol.DecodePurchaseResult([]byte(v.JSON))
			checkCode(t, err, v.Code)
		})
	}
	r, err := protocol.DecodePurchaseResult([]byte(prototest.PurchaseResults[0].JSON))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.VerifyIndicium(r.Indicia[0].Matrix, &prototest.Key().PublicKey); err != nil {
		t.Fatalf("matrix in result vector: %v", err)
	}
}

func TestOversizeMessage(t *testing.T) {
	big := make([]byte, protocol.MaxMessageBytes+1)
	_, err := protocol.DecodePurchaseRequest(big)
	checkCode(t, err, protocol.CodeMalformed)
}

func TestPrintReport(t *testing.T) {
	good := `{"request_id":"r-1","kiosk_id":"k","labels":[{"label_serial":"1966-F8CF-01","outcome":"printed"},{"label_serial":"1966-F8CF-02","outcome":"failed","reason":"jam"}]}`
	if _, err := protocol.DecodePrintReport([]byte(good)); err != nil {
		t.Fatal(err)
	}
	_, err := protocol.DecodePrintReport([]byte(`{"request_id":"r-1","kiosk_id":"k","labels":[{"label_serial":"1966-F8CF-01","outcome":"smudged"}]}`))
	checkCode(t, err, protocol.CodeInvalidRequest)
}

func TestErrorIs(t *testing.T) {
	err := protocol.Errorf(protocol.CodeLabelUsed, "label %s", "1966-F8CF-01")
	if !errors.Is(err, &protocol.Error{Code: protocol.CodeLabelUsed}) {
		t.Error("errors.Is by code failed")
	}
	if errors.Is(err, &protocol.Error{Code: protocol.CodeLabelUnknown}) {
		t.Error("errors.Is matched another code")
	}
	if got := protocol.AsError(errors.New("disk on fire")); got.Code != protocol.CodeInternal || got.Message == "disk on fire" {
		t.Errorf("AsError leaked or miscoded: %+v", got)
	}
}

func TestPayCode(t *testing.T) {
	code := protocol.FormatPayCode("ABCDEFGH234567QR")
	if code != "PAY-ABCD-EFGH-2345-67QR" {
		t.Fatalf("format: %q", code)
	}
	for _, typed := range []string{code, "pay abcd efgh 2345 67qr", "ABCDEFGH234567QR", " PAY-ABCD-EFGH-2345-67QR "} {
		if got := protocol.NormalizePayCode(typed); got != "ABCDEFGH234567QR" {
			t.Errorf("%q normalizes to %q", typed, got)
		}
	}
	for _, bad := range []string{"", "PAY-ABCD", "PAY-ABCD-EFGH-2345-67Q1", "ABCDEFGH234567QRS", "PAY-ABCD-EFGH-2345-67Q!"} {
		if got := protocol.NormalizePayCode(bad); got != "" {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

// The compatibility rule: a message a kiosk receives may carry fields a
// newer hub added, and is read without them; a message the hub receives may
// not. Both still refuse a key given twice and trailing data.
func TestKioskReadsNewerHubsMessages(t *testing.T) {
	rates, _ := json.Marshal(prototest.Rates)
	newer := map[string]func([]byte) error{
		`{"kiosk_id":"k1","heartbeat_s":30,"screen_language":"es","rates":` + string(rates) + `}`: func(b []byte) error {
			_, err := protocol.DecodeKioskConfig(b)
			return err
		},
		`{"receipt_text":"thanks",` + prototest.PurchaseResults[0].JSON[1:]: func(b []byte) error {
			_, err := protocol.DecodePurchaseResult(b)
			return err
		},
		`{"request_id":"r1","status":"ok","sheets":[],"restock_hint":3}`: func(b []byte) error {
			_, err := protocol.DecodeStockResult(b)
			return err
		},
		`{"request_id":"r1","status":"ok","amount_mills":780,"refund_ref":"x"}`: func(b []byte) error {
			_, err := protocol.DecodeRefundResult(b)
			return err
		},
		`{"request_id":"r1","status":"ok","recorded_at":"2026-12-04T00:00:00Z"}`: func(b []byte) error {
			_, err := protocol.DecodePrintResult(b)
			return err
		},
		`{"certificate":"c","ca_chain":"ca","not_after_hint":1}`: func(b []byte) error {
			_, err := protocol.DecodeRenewResult(b)
			return err
		},
	}
	for msg, decode := range newer {
		if err := decode([]byte(msg)); err != nil {
			t.Errorf("%s: %v", msg, err)
		}
		if err := decode([]byte(msg + `{}`)); err == nil {
			t.Errorf("%s with trailing data accepted", msg)
		}
	}
	if _, err := protocol.DecodePurchaseResult([]byte(`{"request_id":"r1","status":"ok","status":"ok"}`)); err == nil {
		t.Error("a key given twice accepted")
	}
	// What the hub receives stays strict.
	_, err := protocol.DecodeTelemetry([]byte(`{"kiosk_id":"k1","screen":"on"}`))
	checkCode(t, err, protocol.CodeMalformed)
	_, err = protocol.DecodeStockLoad([]byte(`{"request_id":"r1","kiosk_id":"k1","sheets":["1966-F8CF"],"extra":1}`))
	checkCode(t, err, protocol.CodeMalformed)
}

// A staff login carries one well-formed credential; its answer says whose.
func TestStaffLoginMessages(t *testing.T) {
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{`{"request_id":"t-1","kiosk_id":"k1","pin":"1357"}`, true},
		{`{"request_id":"t-1","kiosk_id":"k1","badge":"STAFF-BOB7"}`, true},
		{`{"request_id":"t-1","kiosk_id":"k1"}`, false},
		{`{"request_id":"t-1","kiosk_id":"k1","pin":"1357","badge":"STAFF-BOB7"}`, false},
		{`{"request_id":"t-1","kiosk_id":"k1","pin":"13a7"}`, false},
		{`{"request_id":"t-1","kiosk_id":"k1","pin":"123"}`, false},
		{`{"request_id":"t-1","kiosk_id":"k1","badge":"STAFF-"}`, false},
		{`{"request_id":"t-1","kiosk_id":"k1","badge":"STAFF-B B"}`, false},
		{`{"request_id":"t-1","kiosk_id":"k1","badge":"BADGE-BOB7"}`, false},
		{`{"request_id":"t-1","kiosk_id":"k1","pin":"1357","pin_hash":"x"}`, false},
	} {
		_, err := protocol.DecodeStaffLogin([]byte(c.body))
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.body, err)
		}
		if err != nil && protocol.AsError(err).Code == protocol.CodeInternal {
			t.Errorf("%s: untyped %v", c.body, err)
		}
	}
	r, err := protocol.DecodeStaffLoginResult([]byte(`{"request_id":"t-1","status":"rejected","error":{"code":"unauthorized","message":"too many"},"retry_after_s":300}`))
	if err != nil || r.RetryAfterS != 300 || r.Error.Code != protocol.CodeUnauthorized {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := protocol.DecodeStaffLoginResult([]byte(`{"request_id":"t-1","status":"ok"}`)); err == nil {
		t.Fatal("ok with no name accepted")
	}
}

// A stock answer names sheets and their free positions, 1 to 10, each
// once: a kiosk hands those labels out.
func TestStockResultPositions(t *testing.T) {
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{`{"request_id":"s-1","status":"ok","sheets":[{"sheet":"1966-F8CF","free":[1,2,10]}]}`, true},
		{`{"request_id":"s-1","status":"ok","sheets":[{"sheet":"1966-F8CF","free":[]}]}`, true},
		{`{"request_id":"s-1","status":"ok","sheets":[{"sheet":"1966-F8CF","free":[0]}]}`, false},
		{`{"request_id":"s-1","status":"ok","sheets":[{"sheet":"1966-F8CF","free":[11]}]}`, false},
		{`{"request_id":"s-1","status":"ok","sheets":[{"sheet":"1966-F8CF","free":[3,3]}]}`, false},
		{`{"request_id":"s-1","status":"ok","sheets":[{"sheet":"not a sheet","free":[1]}]}`, false},
	} {
		if _, err := protocol.DecodeStockResult([]byte(c.body)); (err == nil) != c.ok {
			t.Errorf("%s: %v", c.body, err)
		}
	}
}

package payments_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/protocol"
)

// gatewayOps are the Gateway's calls a fuzzed answer is fed to.
var gatewayOps = []string{"authorize", "capture", "captures", "holds", "tokenize", "void", "voidkey", "refund"}

// FuzzGatewayAnswer feeds the card gateway's answer, an HTTP status and a
// body, to each of the Gateway's calls, through one test server for the
// whole run. The answer never panics; a refusal of the card (declined,
// insufficient_funds, invalid) is its typed protocol error whatever the
// status; any other status but 200 is a *StatusError with that status
// (which Capture and VoidKey then judge); and no error's text carries a
// run of 12 or more digits, however spaced: a card number the gateway
// echoes never reaches a log or a kiosk.
func FuzzGatewayAnswer(f *testing.F) {
	var mu sync.Mutex
	var status int
	var body []byte
	var served int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		st, b, n := status, body, served
		served++
		mu.Unlock()
		if n > 0 {
			// Holds asks again while a page names a next one: the rest
			// of the pages are empty.
			w.Write([]byte(`{}`))
			return
		}
		w.WriteHeader(st)
		w.Write(b)
	}))
	f.Cleanup(srv.Close)
	gw := payments.NewGateway(srv.URL)
	gw.HoldsPage = 2

	const card = "4111 1111 1111 1111"
	for _, s := range []struct {
		status int
		body   string
	}{
		{200, `{"auth_id":"a1","brand":"visa","last4":"1111"}`},
		{200, `{"token":"tok_1","brand":"visa","last4":"1111"}`},
		{200, `{"results":[{"auth_id":"a1","status":200},{"auth_id":"a2","status":409,"message":"gone"}]}`},
		{200, `{"holds":[{"auth_id":"a1","key":"k","amount_mills":780}],"next":"a1"}`},
		{200, `not json`},
		{200, ``},
		{402, `{"code":"declined","message":"do not honour"}`},
		{402, `{"code":"insufficient_funds","missing_mills":120}`},
		{400, `{"code":"invalid","message":"card ` + card + ` expired"}`},
		{422, `{"code":"invalid","message":"4111111111111111"}`},
		{409, `{"code":"voided"}`},
		{404, `{"code":"no_such_key"}`},
		{503, `busy`},
		{204, ``},
		{999, `{"code":"x","message":"` + card + `"}`},
		// Card numbers echoed where the text was once passed on whole.
		{500, `{"code":"` + card + `"}`},
		{200, `{"results":[{"auth_id":"a1","status":409,"message":"card ` + card + ` voided"},{"auth_id":"a2","status":200}]}`},
		{200, `{"results":[{"auth_id":"4111111111111111","status":200},{"auth_id":"a2","status":200}]}`},
		{200, `{"results":[{"auth_id":"a1","status":4111111111111111.5},{"auth_id":"a2","status":200}]}`},
		{200, `{"holds":[{"auth_id":"a1","key":"k","amount_mills":4111111111111111e1}]}`},
	} {
		for op := range gatewayOps {
			f.Add(s.status, []byte(s.body), uint8(op))
		}
	}
	f.Fuzz(func(t *testing.T, st int, b []byte, op uint8) {
		// A final status: 1xx are informational, and WriteHeader takes
		// no other three-digit codes.
		if st < 200 || st > 999 {
			st = 200 + (st%800+800)%800
		}
		mu.Lock()
		status, body, served = st, b, 0
		mu.Unlock()
		got := b // as the gateway's client reads it
		if st == http.StatusNoContent || st == http.StatusNotModified {
			got = nil
		}
		if len(got) > 64<<10 {
			got = got[:64<<10]
		}
		ctx := context.Background()
		name := gatewayOps[int(op)%len(gatewayOps)]
		var err error
		var each []error
		switch name {
		case "authorize":
			_, err = gw.Authorize(ctx, "k1", 780, "tok_1", nil)
		case "capture":
			err = gw.Capture(ctx, "a1", 780)
		case "captures":
			each, err = gw.CaptureBatch(ctx, []payments.Capture{{AuthID: "a1", Amount: 780}, {AuthID: "a2", Amount: 780}})
		case "holds":
			_, err = gw.Holds(ctx, 0)
		case "tokenize":
			_, err = gw.Tokenize(ctx, &payments.Card{Number: "4111111111111111", Exp: "12/30", Name: "A"})
		case "void":
			err = gw.Void(ctx, "a1")
		case "voidkey":
			err = gw.VoidKey(ctx, "k1")
		case "refund":
			err = gw.Refund(ctx, "a1", 100, "r1")
		}
		for _, e := range append([]error{err}, each...) {
			if e == nil {
				continue
			}
			if run := cardDigits(e.Error()); run != "" {
				t.Fatalf("%s, %d: the error shows the digits %q: %v", name, st, run, e)
			}
		}
		if st == http.StatusOK {
			switch name {
			case "capture", "void", "voidkey", "refund":
				if err != nil {
					t.Fatalf("%s: 200 with nothing to read is %v", name, err)
				}
			}
			return
		}
		// A refusal of the card is typed whatever the status; anything
		// else is the status, for the caller to judge.
		var e struct {
			Code    string         `json:"code"`
			Missing protocol.Mills `json:"missing_mills"`
		}
		json.Unmarshal(got, &e)
		want := map[string]protocol.Code{"declined": protocol.CodePaymentDeclined,
			"insufficient_funds": protocol.CodeInsufficientFunds, "invalid": protocol.CodePaymentInvalid}[e.Code]
		if want != "" {
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != want {
				t.Fatalf("%s, %d %q: %v, want %s", name, st, got, err, want)
			}
			if want == protocol.CodeInsufficientFunds && pe.MissingMills != e.Missing {
				t.Fatalf("%s: missing %d, want %d", name, pe.MissingMills, e.Missing)
			}
			return
		}
		if name == "voidkey" && st == http.StatusNotFound {
			if err != nil {
				t.Fatalf("voidkey, 404: %v, want nil (never approved)", err)
			}
			return
		}
		var se *payments.StatusError
		if !errors.As(err, &se) || se.Status != st {
			t.Fatalf("%s, %d %q: %v, want a StatusError of %d", name, st, got, err, st)
		}
		if protocol.AsError(err).Code != protocol.CodeInternal {
			t.Fatalf("%s, %d: %v is typed %s: only a refusal of the card is", name, st, err, protocol.AsError(err).Code)
		}
		gone := st == http.StatusPaymentRequired || st == http.StatusNotFound || st == http.StatusConflict || st == http.StatusGone
		if name == "capture" && errors.Is(err, payments.ErrNotCaptured) != gone {
			t.Fatalf("capture, %d: %v: ErrNotCaptured is only for a hold that is gone", st, err)
		}
	})
}

// cardDigits returns the first run of 12 or more digits in s, spaced or
// dashed as gatewayText finds them, or "".
func cardDigits(s string) string {
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	for i := 0; i < len(s); i++ {
		if !digit(s[i]) {
			continue
		}
		j, n := i, 0
		for j < len(s) && (digit(s[j]) || s[j] == ' ' || s[j] == '-') {
			if digit(s[j]) {
				n++
			}
			j++
		}
		if n >= 12 {
			return s[i:j]
		}
		i = j - 1
	}
	return ""
}

package payterm

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
)

func TestDecodeReply(t *testing.T) {
	tests := []struct {
		line string
		ok   bool
		id   string // kept even on error
	}{
		{`{"id":"a1","status":"approved","token":"tok_approve","brand":"visa","last4":"4242"}`, true, "a1"},
		{`{"id":"a1","status":"declined","reason":"insufficient_funds"}`, true, "a1"},
		{`{"id":"a1","status":"cancelled"}`, true, "a1"},
		{`{"id":"a1","status":"approved","token":"tok_x","brand":"visa","last4":"42"}`, false, "a1"},
		{`{"id":"a1","status":"approved","token":"x","brand":"visa","last4":"4242"}`, false, "a1"},
		{`{"id":"a1","status":"maybe"}`, false, "a1"},
		// Tokens the hub takes are at most 128 bytes (MaxToken).
		{`{"id":"a1","status":"approved","token":"tok_` + strings.Repeat("x", MaxToken-4) + `","brand":"visa","last4":"4242"}`, true, "a1"},
		{`{"id":"a1","status":"approved","token":"tok_` + strings.Repeat("x", MaxToken-3) + `","brand":"visa","last4":"4242"}`, false, "a1"},
		{`{"id":"a1","status":"approved","token":"tok_x","brand":"visa","last4":"4242","pan":"4242424242424242"}`, false, "a1"},
		{`{"id":"a1","status":"declined","reason":"card 4242 4242 4242 4242"}`, false, "a1"},
		{`{"id":"a1","status":"declined","reason":"4242-4242-4242-4242"}`, false, "a1"},
		{`{"id":"a1","status":"declined","n":4242424242424242}`, false, "a1"},
		{`{"id":"a1","status":"declined","reason":"\u0034242424242424242"}`, false, "a1"},
		{`{"id":"a1","status":"declined","reason":"call 0800 123 456"}`, true, "a1"},
		// What the hub would refuse (protocol.Payment): a 12-digit run in
		// the token, which hasPAN's 13 lets by, and a brand over 32.
		{`{"id":"a1","status":"approved","token":"tok_424242424242","brand":"visa","last4":"4242"}`, false, "a1"},
		{`{"id":"a1","status":"approved","token":"tok_x","brand":"` + strings.Repeat("v", 33) + `","last4":"4242"}`, false, "a1"},
		{`{"status":"declined"}`, false, ""},
		{`not json 4242424242424242`, false, ""},
	}
	for _, tt := range tests {
		r, err := DecodeReply([]byte(tt.line))
		if (err == nil) != tt.ok || r.ID != tt.id {
			t.Errorf("DecodeReply(%s) = %+v, %v", tt.line, r, err)
		}
		if err != nil && (!errors.Is(err, ErrProtocol) || strings.Contains(err.Error(), "4242")) {
			t.Errorf("error %q: not ErrProtocol or quotes the line", err)
		}
	}
}

func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"id":"a1","status":"approved","token":"tok_approve","brand":"visa","last4":"4242"}`))
	f.Add([]byte(`{"id":"a1","status":"declined","reason":"do_not_honor"}`))
	f.Add([]byte(`{"id":"a1","status":"declined","reason":"4242 4242 4242 4242"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := DecodeReply(line)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error not ErrProtocol: %v", err)
			}
			if r.Status != "" || r.Token != (Token{}) || r.Reason != "" {
				t.Fatalf("error with content %+v", r)
			}
			return
		}
		for _, s := range []string{r.ID, r.Reason, r.Token.Token, r.Brand, r.Last4} {
			if hasPAN([]byte(s)) {
				t.Fatalf("card number let through in %+v", r)
			}
		}
		if r.Status == "approved" && (!strings.HasPrefix(r.Token.Token, "tok_") || !isDigits(r.Last4, 4)) {
			t.Fatalf("bad approval let through: %+v", r)
		}
		if p := (protocol.Payment{Method: protocol.PayCardToken, Token: r.Token.Token, Brand: r.Brand, Last4: r.Last4}); r.Status == "approved" && p.Validate() != nil {
			t.Fatalf("an approval the hub would refuse let through: %+v (%v)", r, p.Validate())
		}
	})
}

// A terminal that answers the first sale late, after the kiosk's cancel:
// the approval must win, as the customer has paid.
func TestApprovedAfterCancel(t *testing.T) {
	kiosk, term := net.Pipe()
	defer kiosk.Close()
	go func() {
		r := bufio.NewReader(term)
		r.ReadString('\n') // sale
		r.ReadString('\n') // cancel
		term.Write([]byte(`{"id":"s1","status":"approved","token":"tok_approve","brand":"visa","last4":"4242"}` + "\n"))
		r.ReadString('\n')
	}()
	pt := New(kiosk, Config{Timeout: 50 * time.Millisecond, CancelWait: time.Second})
	tok, err := pt.Charge(context.Background(), "s1", 780)
	if err != nil || tok != (Token{"tok_approve", "visa", "4242"}) {
		t.Fatalf("got %+v, %v", tok, err)
	}
}

func TestChargeLinkClosed(t *testing.T) {
	kiosk, term := net.Pipe()
	term.Close()
	pt := New(kiosk, Config{Timeout: time.Second})
	if _, err := pt.Charge(context.Background(), "s1", 780); err == nil {
		t.Fatal("charge on a closed link succeeded")
	}
	if _, err := pt.Charge(context.Background(), "1700000000000", 780); err == nil {
		t.Fatal("id with a long digit run accepted")
	}
}

// A line that fails for good (the adapter unplugged) closes Done, so the
// kiosk can stop selling instead of failing each customer at Pay.
func TestDoneWhenTheLineFails(t *testing.T) {
	kiosk, term := net.Pipe()
	pt := New(kiosk, Config{Timeout: time.Second})
	select {
	case <-pt.Done():
		t.Fatal("Done closed on a live line")
	default:
	}
	term.Close()
	select {
	case <-pt.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the line failed")
	}
	if !errors.Is(pt.Err(), ErrClosed) {
		t.Fatalf("Err = %v; want ErrClosed", pt.Err())
	}
}

// Package payterm drives a tokenizing card payment terminal over a serial
// line. The kiosk never sees a card number: the terminal hands back a token
// for the hub's card gateway, the card brand and the last four digits.
//
// Real terminals each speak their own protocol, so the kiosk speaks this one
// and a small adapter (or the terminal's own integration mode) maps to it.
// It is JSON, one object per line, each line ending in "\n", at most 4096
// bytes.
//
// Kiosk to terminal:
//
//	{"op":"sale","id":"<request id>","amount_mills":780}
//	{"op":"cancel","id":"<request id>"}
//
// Terminal to kiosk, once the customer has tapped or inserted a card:
//
//	{"id":"<request id>","status":"approved","token":"tok_...","brand":"visa","last4":"4242"}
//	{"id":"<request id>","status":"declined","reason":"insufficient_funds"}
//
// and in answer to a cancel, unless the sale had already been decided (in
// which case that decision is sent instead):
//
//	{"id":"<request id>","status":"cancelled"}
//
// Rules: amount_mills is in thousandths of the currency unit and positive;
// the id is 1-64 printable ASCII bytes without a run of 13 digits, and the
// terminal echoes it; replies
// for another id are ignored; token starts with "tok_" and is at most
// MaxToken bytes (the hub refuses a longer one); last4 is four
// digits; a reply that carries anything that looks like a full card number
// (13-19 digits in a run, spaces and dashes between digits allowed) is
// refused whole. Unknown fields are ignored.
package payterm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// MaxLine is the longest line either side may send, newline included.
const MaxLine = 4096

// MaxToken is the longest token the hub takes (protocol: payment.token).
const MaxToken = 128

// Errors. A decline comes as a *DeclineError, which matches ErrDeclined.
var (
	ErrDeclined = errors.New("payterm: declined")
	ErrTimeout  = errors.New("payterm: no answer from terminal")
	ErrProtocol = errors.New("payterm: protocol error")
	ErrClosed   = errors.New("payterm: terminal link closed")
)

// DeclineError is a sale the card issuer or terminal refused.
type DeclineError struct {
	Reason string // as sent by the terminal, e.g. insufficient_funds
}

func (e *DeclineError) Error() string { return "payterm: declined: " + e.Reason }

// Unwrap lets errors.Is(err, ErrDeclined) match.
func (e *DeclineError) Unwrap() error { return ErrDeclined }

// Token is what the kiosk keeps of a card: never the number.
type Token struct {
	Token string `json:"token"`
	Brand string `json:"brand"`
	Last4 string `json:"last4"`
}

// Config sets up a terminal. Zero values take the defaults noted.
type Config struct {
	// Timeout bounds the wait for the customer and the issuer; 60 s.
	Timeout time.Duration
	// CancelWait is how long to wait, after sending cancel, for the
	// terminal's last word: a sale approved just before the cancel arrived
	// must still be returned, or the customer pays for nothing; 2 s.
	CancelWait time.Duration
	Log        *slog.Logger
}

// Terminal is one payment terminal. It runs one sale at a time.
type Terminal struct {
	w   io.Writer
	cfg Config

	sale sync.Mutex // one sale at a time

	mu      sync.Mutex
	waitID  string
	replies chan reply // to the sale waiting on waitID
	err     error      // set when the reader stops
	done    chan struct{}
}

// New starts reading replies from rw. It stops reading when rw fails, so
// close the port to stop it.
func New(rw io.ReadWriter, cfg Config) *Terminal {
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.CancelWait == 0 {
		cfg.CancelWait = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	t := &Terminal{w: rw, cfg: cfg, done: make(chan struct{})}
	go t.read(rw)
	return t
}

// Charge asks the terminal to take amount (in mills) and waits for the
// customer. id must be unique per sale; it is what ties replies to the
// sale. On timeout or when ctx ends it cancels the sale on the terminal.
func (t *Terminal) Charge(ctx context.Context, id string, amount int64) (Token, error) {
	if !validID(id) || amount <= 0 {
		return Token{}, fmt.Errorf("payterm: charge %q: bad id or amount %d", id, amount)
	}
	t.sale.Lock()
	defer t.sale.Unlock()
	ch := make(chan reply, 1)
	t.mu.Lock()
	if t.err != nil {
		t.mu.Unlock()
		return Token{}, fmt.Errorf("payterm: charge %s: %w", id, t.err)
	}
	t.waitID, t.replies = id, ch
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.waitID, t.replies = "", nil
		t.mu.Unlock()
	}()

	if err := t.send(request{Op: "sale", ID: id, AmountMills: amount}); err != nil {
		return Token{}, fmt.Errorf("payterm: charge %s: %w", id, err)
	}
	timer := time.NewTimer(t.cfg.Timeout)
	defer timer.Stop()
	var why error
	select {
	case r := <-ch:
		return r.result(id)
	case <-t.done:
		return Token{}, fmt.Errorf("payterm: charge %s: %w", id, t.readErr())
	case <-timer.C:
		why = ErrTimeout
	case <-ctx.Done():
		why = ctx.Err()
	}

	t.cfg.Log.Info("payterm: cancelling sale", "id", id, "why", why)
	if err := t.send(request{Op: "cancel", ID: id}); err != nil {
		return Token{}, fmt.Errorf("payterm: charge %s: cancel: %w", id, errors.Join(why, err))
	}
	wait := time.NewTimer(t.cfg.CancelWait)
	defer wait.Stop()
	select {
	case r := <-ch:
		if r.Status == "approved" || r.err != nil {
			// The sale went through before the cancel: the customer paid.
			return r.result(id)
		}
	case <-wait.C:
		t.cfg.Log.Warn("payterm: no answer to cancel", "id", id)
	case <-t.done:
	}
	return Token{}, fmt.Errorf("payterm: charge %s: %w", id, why)
}

// Done is closed once the terminal's line has failed for good (the port
// went away): every later Charge fails, so the kiosk stops selling.
func (t *Terminal) Done() <-chan struct{} { return t.done }

// Err is why the line failed, once Done is closed; nil before.
func (t *Terminal) Err() error { return t.readErr() }

func (t *Terminal) readErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

type request struct {
	Op          string `json:"op"`
	ID          string `json:"id"`
	AmountMills int64  `json:"amount_mills,omitempty"`
}

func (t *Terminal) send(r request) error {
	b, _ := json.Marshal(r)
	_, err := t.w.Write(append(b, '\n'))
	return err
}

// read delivers replies to the waiting sale until the port fails.
func (t *Terminal) read(r io.Reader) {
	br := bufio.NewReaderSize(r, MaxLine)
	var err error
	for {
		var line []byte
		line, err = readLine(br)
		if errors.Is(err, errLong) {
			t.cfg.Log.Warn("payterm: overlong line discarded")
			continue
		}
		if err != nil {
			break
		}
		if len(line) == 0 {
			continue
		}
		dec, derr := DecodeReply(line)
		// Log the id and the fault only: the raw line could hold a card number.
		if derr != nil && dec.ID == "" {
			t.cfg.Log.Warn("payterm: undecodable reply dropped", "err", derr)
			continue
		}
		rep := reply{Reply: dec, err: derr}
		t.mu.Lock()
		if rep.ID == t.waitID && t.replies != nil {
			select {
			case t.replies <- rep:
			default: // a sale takes one answer; later ones are noise
			}
		} else {
			t.cfg.Log.Info("payterm: reply for another sale ignored", "id", rep.ID)
		}
		t.mu.Unlock()
	}
	t.mu.Lock()
	t.err = fmt.Errorf("%w: %w", ErrClosed, err)
	t.mu.Unlock()
	close(t.done)
}

var errLong = errors.New("line too long")

func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return nil, errLong
	}
	if err != nil {
		return nil, err
	}
	return line[:len(line)-1], nil
}

// Reply is a decoded terminal answer.
type Reply struct {
	ID     string `json:"id"`
	Status string `json:"status"` // approved, declined or cancelled
	Reason string `json:"reason"` // why declined
	Token         // when approved
}

// reply is a Reply on its way to a sale; err is set, and ID kept, when the
// reply was for a known id but broke the protocol.
type reply struct {
	Reply
	err error
}

func (r reply) result(id string) (Token, error) {
	if r.err != nil {
		return Token{}, fmt.Errorf("payterm: charge %s: %w", id, r.err)
	}
	switch r.Status {
	case "approved":
		return r.Token, nil
	case "declined":
		return Token{}, fmt.Errorf("payterm: charge %s: %w", id, &DeclineError{Reason: r.Reason})
	case "cancelled": // by the customer, on the terminal
		return Token{}, fmt.Errorf("payterm: charge %s: %w", id, &DeclineError{Reason: "cancelled"})
	}
	return Token{}, fmt.Errorf("payterm: charge %s: %w: unexpected status %q", id, ErrProtocol, r.Status)
}

// DecodeReply checks and decodes one line from the terminal (without its
// newline). On a protocol error the returned reply still carries the id if
// one could be read, so the sale waiting on it can fail at once. Errors
// never quote the line.
func DecodeReply(line []byte) (Reply, error) {
	if len(line) >= MaxLine {
		return Reply{}, fmt.Errorf("%w: line too long", ErrProtocol)
	}
	var r Reply
	var all any
	// Not the json error itself: it can quote the input.
	if json.Unmarshal(line, &r) != nil || json.Unmarshal(line, &all) != nil {
		return Reply{}, fmt.Errorf("%w: not a JSON object", ErrProtocol)
	}
	if !validID(r.ID) {
		return Reply{}, fmt.Errorf("%w: bad id", ErrProtocol)
	}
	id := Reply{ID: r.ID}
	// The raw line catches numbers; the decoded strings catch digits
	// hidden behind \u escapes.
	if hasPAN(line) || anyPAN(all) {
		return id, fmt.Errorf("%w: reply carries a card number", ErrProtocol)
	}
	switch r.Status {
	case "approved":
		if len(r.Token.Token) <= 4 || r.Token.Token[:4] != "tok_" || r.Brand == "" || !isDigits(r.Last4, 4) {
			return id, fmt.Errorf("%w: approval without token, brand and last4", ErrProtocol)
		}
		if len(r.Token.Token) > MaxToken {
			// The hub would refuse it (payment_invalid): refused here, before a
			// purchase is sent with it.
			return id, fmt.Errorf("%w: token over %d bytes", ErrProtocol, MaxToken)
		}
		// The protocol's own rules (a 12-digit run, a brand over 32
		// characters), so that the kiosk does not refuse what the
		// terminal took.
		if (protocol.Payment{Method: protocol.PayCardToken, Token: r.Token.Token, Brand: r.Brand, Last4: r.Last4}).Validate() != nil {
			return id, fmt.Errorf("%w: approval the hub would refuse (a card number in it, or a brand too long)", ErrProtocol)
		}
		r.Reason = ""
	case "declined", "cancelled":
		r.Token = Token{}
	default:
		return id, fmt.Errorf("%w: unknown status", ErrProtocol)
	}
	return r, nil
}

func anyPAN(v any) bool {
	switch v := v.(type) {
	case string:
		return hasPAN([]byte(v))
	case []any:
		for _, e := range v {
			if anyPAN(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if hasPAN([]byte(k)) || anyPAN(e) {
				return true
			}
		}
	}
	return false
}

// hasPAN reports a run of 13 or more digits, allowing one space or dash
// between digits as card numbers are often printed. Checking the raw line
// also catches numbers in fields we do not decode and JSON numbers.
func hasPAN(b []byte) bool {
	n := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case '0' <= c && c <= '9':
			n++
			if n >= 13 {
				return true
			}
		case (c == ' ' || c == '-') && n > 0 && i+1 < len(b) && '0' <= b[i+1] && b[i+1] <= '9':
		default:
			n = 0
		}
	}
	return false
}

func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validID also refuses ids with long digit runs, which would make the
// terminal's echo look like a card number.
func validID(id string) bool {
	if id == "" || len(id) > 64 || hasPAN([]byte(id)) {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

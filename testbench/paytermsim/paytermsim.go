// Package paytermsim emulates a tokenizing card terminal on a
// pseudo-terminal, speaking the JSON-lines protocol documented in
// appliance/payterm. It shares no code with the driver. Its tokens are the
// ones the testbench card gateway knows (tok_approve, ...).
package paytermsim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"github.com/frank-postage/frank/testbench/ptylink"
)

// Outcome is how the emulated customer and issuer answer a sale.
type Outcome int

// Outcomes. The last two are protocol faults, for one-off use with SetNext.
const (
	Approve Outcome = iota // tok_approve, visa, 4242
	Decline                // declined, reason do_not_honor
	Timeout                // no answer to the sale; a cancel is acknowledged
	OtherID                // a stray reply for another id, then Approve
	LeakPAN                // an approval that carries the full card number
)

// Request is a line the kiosk sent.
type Request struct {
	Op          string `json:"op"`
	ID          string `json:"id"`
	AmountMills int64  `json:"amount_mills"`
}

// Terminal is a running emulator.
type Terminal struct {
	line *ptylink.Line
	log  *slog.Logger
	done chan struct{}

	mu       sync.Mutex
	mode     Outcome
	next     *Outcome
	requests []Request
	pending  map[string]bool // sales not yet answered
}

// Start opens a pseudo-terminal and links its device to link; an empty
// link means none. The terminal starts in Approve mode.
func Start(link string, log *slog.Logger) (*Terminal, error) {
	line, err := ptylink.Open(link)
	if err != nil {
		return nil, fmt.Errorf("paytermsim: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Terminal{line: line, log: log, done: make(chan struct{}), pending: map[string]bool{}}
	go t.run()
	return t, nil
}

// Path is the device the kiosk should open.
func (t *Terminal) Path() string {
	return t.line.Path()
}

// SetMode sets how every sale is answered from now on.
func (t *Terminal) SetMode(o Outcome) {
	t.mu.Lock()
	t.mode = o
	t.mu.Unlock()
}

// SetNext makes only the next sale end in o.
func (t *Terminal) SetNext(o Outcome) {
	t.mu.Lock()
	t.next = &o
	t.mu.Unlock()
}

// Requests returns every line the kiosk sent, in order.
func (t *Terminal) Requests() []Request {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Request(nil), t.requests...)
}

// Close stops the emulator and removes the link.
func (t *Terminal) Close() error {
	t.line.Close()
	<-t.done
	return nil
}

func (t *Terminal) run() {
	defer close(t.done)
	r := bufio.NewReader(t.line.Master)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) && !errors.Is(err, syscall.EIO) {
				t.log.Warn("paytermsim: read", "err", err)
			}
			return
		}
		var req Request
		if err := json.Unmarshal(line, &req); err != nil || req.ID == "" {
			t.log.Warn("paytermsim: bad request", "err", err)
			continue
		}
		t.handle(req)
	}
}

type reply map[string]any

func (t *Terminal) handle(req Request) {
	t.mu.Lock()
	t.requests = append(t.requests, req)
	o := t.mode
	if t.next != nil && req.Op == "sale" {
		o, t.next = *t.next, nil
	}
	wasPending := t.pending[req.ID]
	switch req.Op {
	case "sale":
		t.pending[req.ID] = o == Timeout
	case "cancel":
		delete(t.pending, req.ID)
	}
	t.mu.Unlock()

	approved := reply{"id": req.ID, "status": "approved", "token": "tok_approve", "brand": "visa", "last4": "4242"}
	switch {
	case req.Op == "cancel" && wasPending:
		t.send(reply{"id": req.ID, "status": "cancelled"})
	case req.Op == "cancel":
		// Already answered: nothing to cancel, as a real terminal ignores it.
	case req.Op != "sale":
		t.log.Warn("paytermsim: unknown op", "op", req.Op)
	case o == Approve:
		t.send(approved)
	case o == Decline:
		t.send(reply{"id": req.ID, "status": "declined", "reason": "do_not_honor"})
	case o == OtherID:
		t.send(reply{"id": req.ID + "-other", "status": "declined", "reason": "do_not_honor"})
		t.send(approved)
	case o == LeakPAN:
		approved["pan"] = "4242424242424242"
		t.send(approved)
	case o == Timeout:
	}
}

func (t *Terminal) send(r reply) {
	b, _ := json.Marshal(r)
	if _, err := t.line.Master.Write(append(b, '\n')); err != nil {
		t.log.Warn("paytermsim: write", "err", err)
	}
}

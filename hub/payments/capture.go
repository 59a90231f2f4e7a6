package payments

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Captures run after the customer has the answer. The sale and its
// authorization are already durable in one commit; the capture only moves
// money the card holder already agreed to, as an acquirer's batch
// settlement does. Workers call the gateway over kept-alive connections,
// and their records share group commits. A capture that cannot be done now
// (the queue is full, the hub stops, the gateway does not answer) is left
// authorized: SettleStale, or the settlement of a dead hub, captures it.
const (
	captureWorkers = 16
	captureQueue   = 8192
)

type captures struct {
	once  sync.Once
	mu    sync.Mutex
	shut  bool
	queue chan *Payment
	wg    sync.WaitGroup
}

// CaptureLater queues an authorized payment's capture. It never blocks.
func (p *Payments) CaptureLater(pay *Payment) {
	c := &p.captures
	c.once.Do(func() {
		c.queue = make(chan *Payment, captureQueue)
		for range captureWorkers {
			c.wg.Go(func() {
				for pay := range c.queue {
					p.captureNow(pay)
				}
			})
		}
	})
	pay.State = "authorized"
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut {
		return // settled later
	}
	select {
	case c.queue <- pay:
	default:
		p.log.Warn("capture queue full; the payment is captured when settled", "kiosk", pay.KioskID, "request_id", pay.RequestID)
	}
}

// captureNow captures one payment, without reading it again.
func (p *Payments) captureNow(pay *Payment) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.capture(ctx, pay); err != nil && !errors.Is(err, ErrChanged) {
		// Refused (the hold expired or was voided): the stamp was sold
		// and printed, so the sale stands and ops are told. Otherwise the
		// outcome is unknown, and settlement captures it.
		if errors.Is(err, ErrNotCaptured) {
			if err := p.unpaid(ctx, pay.Key, err); err != nil {
				p.log.Warn("refused capture not recorded; settlement records it", "kiosk", pay.KioskID, "request_id", pay.RequestID, "err", err)
			}
			return
		}
		p.log.Warn("capture not confirmed; settlement captures it", "kiosk", pay.KioskID, "request_id", pay.RequestID, "err", err)
	}
}

// CloseCaptures stops taking captures and waits, until ctx ends, for the
// queued ones. Those left are settled later.
func (p *Payments) CloseCaptures(ctx context.Context) {
	c := &p.captures
	c.once.Do(func() {})
	c.mu.Lock()
	if c.shut || c.queue == nil {
		c.shut = true
		c.mu.Unlock()
		return
	}
	c.shut = true
	close(c.queue)
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

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
	captureWorkers = 8
	captureQueue   = 8192
	// captureBatch is the most captures a worker sends in one call, to a
	// gateway that takes batches: under load a worker finds many queued.
	captureBatch = 128
)

// batchCapturer is a gateway that takes captures in batches.
type batchCapturer interface {
	CaptureBatch(ctx context.Context, cs []Capture) ([]error, error)
}

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
				batch := make([]*Payment, 0, captureBatch)
				for pay := range c.queue {
					batch = append(batch[:0], pay)
				more:
					for len(batch) < captureBatch {
						select {
						case pay, ok := <-c.queue:
							if !ok {
								break more
							}
							batch = append(batch, pay)
						default:
							break more
						}
					}
					p.captureNow(batch)
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

// captureNow captures payments without reading them again: the card
// payments in one call to a gateway that takes batches, and the records
// in shared group commits.
func (p *Payments) captureNow(pays []*Payment) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cs []Capture
	var cards []int
	for i, pay := range pays {
		if pay.Method == "card" {
			cs, cards = append(cs, Capture{AuthID: pay.Ref, Amount: pay.Amount}), append(cards, i)
		}
	}
	gwErrs := make([]error, len(pays))
	if bc, ok := p.gw.(batchCapturer); ok && len(cs) > 1 {
		errs, err := bc.CaptureBatch(ctx, cs)
		for j, i := range cards {
			if gwErrs[i] = err; err == nil {
				gwErrs[i] = errs[j]
			}
		}
	} else {
		for j, i := range cards {
			gwErrs[i] = p.gw.Capture(ctx, cs[j].AuthID, cs[j].Amount)
		}
	}
	var wg sync.WaitGroup
	for i, pay := range pays {
		wg.Go(func() { p.captured(pay, p.recordCapture(ctx, pay, gwErrs[i])) })
	}
	wg.Wait()
}

// captured handles the outcome of a capture after the answer.
func (p *Payments) captured(pay *Payment, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err != nil && !errors.Is(err, ErrChanged) {
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

// Package psdm runs the postal security device module workers of the
// patent (Fig. 7): each worker owns one HSM session and the MPSDs it has
// checked out, and issues indicia one sale at a time. The pool hands work to
// the workers round-robin (claims 7-9) and reports each worker's status as
// the patent's GetStatus does.
package psdm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
)

// Session is one HSM session; never shared between goroutines.
type Session interface {
	Signer(label string) (crypto.Signer, error)
	MAC(label string, data []byte) ([]byte, error)
	Close() error
}

// book is the ledger as the workers use it.
type book interface {
	Sell(ctx context.Context, s *ledger.Sale, mpsd uint32, sess ledger.Session) ([]byte, error)
	AcquireMPSD(ctx context.Context) (uint32, error)
}

// Key names the signing key: its HSM label and certificate serial.
type Key struct {
	Label      string
	CertSerial uint32
}

// Status is one worker's GetStatus.
type Status struct {
	Worker     int      `json:"worker"`
	UptimeS    int64    `json:"uptime_s"`
	Throughput float64  `json:"throughput_per_s"` // indicia per second over the last 10 s
	Load       int      `json:"load"`             // MPSDs checked out
	Total      int64    `json:"total"`            // indicia issued since start
	MPSDs      []uint32 `json:"mpsds"`
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("psdm: pool closed")

// Pool is a set of workers.
type Pool struct {
	workers []*worker
	next    atomic.Uint64
	closed  chan struct{}
	wg      sync.WaitGroup
}

type job struct {
	ctx   context.Context
	sale  *ledger.Sale
	reply chan result
}

type result struct {
	out []byte
	err error
}

type worker struct {
	id      int
	sess    Session
	ls      ledger.Session
	book    book
	log     *slog.Logger
	jobs    chan job
	started time.Time

	mu     sync.Mutex
	mpsd   uint32
	total  int64
	window [10]int64 // indicia per second, ring by unix second
	winAt  [10]int64
}

// Start opens n HSM sessions and starts a worker on each.
func Start(ctx context.Context, n int, open func() (Session, error), key Key, b book, log *slog.Logger) (*Pool, error) {
	if n < 1 {
		return nil, fmt.Errorf("psdm: start: want at least one worker, got %d", n)
	}
	p := &Pool{closed: make(chan struct{})}
	for i := range n {
		sess, err := open()
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("psdm: start worker %d: %w", i, err)
		}
		signer, err := sess.Signer(key.Label)
		if err != nil {
			sess.Close()
			p.Close()
			return nil, fmt.Errorf("psdm: start worker %d: %w", i, err)
		}
		w := &worker{id: i, sess: sess, book: b, log: log.With("worker", i), jobs: make(chan job), started: time.Now(),
			ls: ledger.Session{CertSerial: key.CertSerial, Signer: signer, MAC: sess}}
		if w.mpsd, err = b.AcquireMPSD(ctx); err != nil {
			sess.Close()
			p.Close()
			return nil, fmt.Errorf("psdm: start worker %d: %w", i, err)
		}
		p.workers = append(p.workers, w)
		p.wg.Go(func() { w.run(p.closed) })
	}
	return p, nil
}

// Sell hands the sale to the next worker in turn and waits for its result.
func (p *Pool) Sell(ctx context.Context, s *ledger.Sale) ([]byte, error) {
	w := p.workers[(p.next.Add(1)-1)%uint64(len(p.workers))]
	j := job{ctx: ctx, sale: s, reply: make(chan result, 1)}
	select {
	case w.jobs <- j:
	case <-p.closed:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r := <-j.reply // the worker always answers a job it took
	return r.out, r.err
}

// Status reports every worker.
func (p *Pool) Status() []Status {
	out := make([]Status, 0, len(p.workers))
	for _, w := range p.workers {
		out = append(out, w.status())
	}
	return out
}

// Close stops the workers after their current sale and closes their sessions.
func (p *Pool) Close() {
	select {
	case <-p.closed:
		return
	default:
	}
	close(p.closed)
	p.wg.Wait()
	for _, w := range p.workers {
		w.sess.Close()
	}
}

func (w *worker) run(closed <-chan struct{}) {
	for {
		select {
		case <-closed:
			return
		case j := <-w.jobs:
			out, err := w.sell(j.ctx, j.sale)
			j.reply <- result{out, err}
		}
	}
}

func (w *worker) sell(ctx context.Context, s *ledger.Sale) ([]byte, error) {
	w.mu.Lock()
	mpsd := w.mpsd
	w.mu.Unlock()
	out, err := w.book.Sell(ctx, s, mpsd, w.ls)
	if errors.Is(err, ledger.ErrTamper) || errors.Is(err, ledger.ErrLocked) {
		// That MPSD is out of service; check out another and try once more.
		w.log.Error("mpsd out of service, taking another", "mpsd", mpsd, "err", err)
		next, aerr := w.book.AcquireMPSD(ctx)
		if aerr != nil {
			return nil, fmt.Errorf("psdm: replace mpsd %d: %w", mpsd, aerr)
		}
		w.mu.Lock()
		w.mpsd = next
		w.mu.Unlock()
		out, err = w.book.Sell(ctx, s, next, w.ls)
	}
	if err == nil {
		w.count(int64(len(s.Items)))
	}
	return out, err
}

func (w *worker) count(n int64) {
	now := time.Now().Unix()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.total += n
	i := now % int64(len(w.window))
	if w.winAt[i] != now {
		w.winAt[i], w.window[i] = now, 0
	}
	w.window[i] += n
}

func (w *worker) status() Status {
	now := time.Now().Unix()
	w.mu.Lock()
	defer w.mu.Unlock()
	var recent int64
	for i := range w.window {
		if now-w.winAt[i] < int64(len(w.window)) {
			recent += w.window[i]
		}
	}
	return Status{Worker: w.id, UptimeS: int64(time.Since(w.started).Seconds()),
		Throughput: float64(recent) / float64(len(w.window)), Load: 1, Total: w.total, MPSDs: []uint32{w.mpsd}}
}

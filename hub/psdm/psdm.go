// Package psdm runs the postal security device module workers of the
// patent (Fig. 7). Each worker owns one HSM session and checks out up to
// eight MPSDs through leases; it issues indicia against the registers it
// holds, each stamp on the registers its previous stamp left, and hands
// them to the ledger's committer in issue order. The pool hands stamps to
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
	"github.com/frank-postage/frank/protocol"
)

// Session is one HSM session; never shared between goroutines.
type Session interface {
	Signer(label string) (crypto.Signer, error)
	Close() error
}

// book is the ledger as the workers use it.
type book interface {
	Lease(ctx context.Context, n int) ([]ledger.Slot, error)
	Renew(ctx context.Context, serials []uint32) (map[uint32]ledger.LeaseState, error)
	Release(ctx context.Context, serials []uint32) error
	Reserve(ctx context.Context, amount protocol.Mills) error
	Unreserve(amount protocol.Mills)
	Open(s *ledger.Sale) (*ledger.Ticket, error)
	Submit(p *ledger.Part)
	FundingFor(dr, postage protocol.Mills) protocol.Mills
	MaySell(reported time.Time) error
	Config() ledger.Config
}

// Key names the signing key: its HSM label and certificate serial.
type Key struct {
	Label      string
	CertSerial uint32
}

// Config sizes the pool.
type Config struct {
	Workers        int           // default 2
	MPSDsPerWorker int           // 1 to 8; default 1
	RenewEvery     time.Duration // lease renewal; default a third of the lease TTL
}

// Status is one worker's GetStatus.
type Status struct {
	Worker     int      `json:"worker"`
	UptimeS    int64    `json:"uptime_s"`
	Throughput float64  `json:"throughput_per_s"` // indicia per second over the last 10 s
	Load       int      `json:"load"`             // MPSDs checked out
	InFlight   int      `json:"in_flight"`        // stamps signed, not yet committed
	Total      int64    `json:"total"`            // indicia issued since start
	MPSDs      []uint32 `json:"mpsds"`
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("psdm: pool closed")

// Pool is a set of workers.
type Pool struct {
	cfg     Config
	book    book
	log     *slog.Logger
	workers []*worker
	mu      sync.Mutex // orders Sell's tickets and jobs
	next    uint64     // round-robin position
	closed  chan struct{}
	wg      sync.WaitGroup
	key     atomic.Pointer[Key] // the key new stamps are signed with
}

// Start opens one HSM session per worker, leases each worker's MPSDs, and
// starts the workers and the lease renewal.
func Start(ctx context.Context, cfg Config, open func() (Session, error), key Key, b book, log *slog.Logger) (*Pool, error) {
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.MPSDsPerWorker == 0 {
		cfg.MPSDsPerWorker = 1
	}
	if cfg.Workers < 1 || cfg.MPSDsPerWorker < 1 || cfg.MPSDsPerWorker > 8 {
		return nil, fmt.Errorf("psdm: start: %d workers with %d MPSDs each; want at least 1 worker and 1 to 8 MPSDs", cfg.Workers, cfg.MPSDsPerWorker)
	}
	if cfg.RenewEvery == 0 {
		cfg.RenewEvery = b.Config().LeaseTTL / 3
	}
	p := &Pool{cfg: cfg, book: b, log: log, closed: make(chan struct{})}
	p.key.Store(&key)
	for i := range cfg.Workers {
		w, err := p.startWorker(ctx, i, open, key)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("psdm: start worker %d: %w", i, err)
		}
		p.workers = append(p.workers, w)
	}
	p.wg.Go(p.renewLoop)
	return p, nil
}

func (p *Pool) startWorker(ctx context.Context, id int, open func() (Session, error), key Key) (*worker, error) {
	sess, err := open()
	if err != nil {
		return nil, err
	}
	signer, err := sess.Signer(key.Label)
	if err != nil {
		sess.Close()
		return nil, err
	}
	w := &worker{id: id, pool: p, sess: sess, signer: signer, key: key, log: p.log.With("worker", id),
		jobs: make(chan job, 1024), started: time.Now()}
	slots, err := p.book.Lease(ctx, p.cfg.MPSDsPerWorker)
	if err != nil {
		sess.Close()
		return nil, err
	}
	for _, s := range slots {
		w.slots = append(w.slots, &slot{committed: s, head: s})
	}
	p.wg.Go(w.run)
	return w, nil
}

// Sell issues the sale's stamps and waits for the ledger to commit them.
// Stamps go to the workers round-robin. Tickets and jobs are handed out
// under one lock, so every worker sees sales in the same order as the
// committer, and no two sales can wait on each other.
func (p *Pool) Sell(ctx context.Context, s *ledger.Sale) ([]byte, error) {
	p.mu.Lock()
	select {
	case <-p.closed:
		p.mu.Unlock()
		return nil, ErrClosed
	default:
	}
	t, err := p.book.Open(s)
	if err != nil {
		p.mu.Unlock()
		return nil, err
	}
	byWorker := make([][]int, len(p.workers))
	for i := range s.Items {
		w := p.next % uint64(len(p.workers))
		p.next++
		byWorker[w] = append(byWorker[w], i)
	}
	for w, items := range byWorker {
		if len(items) > 0 {
			p.workers[w].jobs <- job{ticket: t, sale: s, items: items}
		}
	}
	p.mu.Unlock()
	return t.Wait(ctx)
}

// Status reports every worker.
func (p *Pool) Status() []Status {
	out := make([]Status, 0, len(p.workers))
	for _, w := range p.workers {
		out = append(out, w.status())
	}
	return out
}

// Key is the key new stamps are signed with.
func (p *Pool) Key() Key { return *p.key.Load() }

// SetKey has every worker sign with key from its next stamp on, as a key
// rotation asks of a running hub. Stamps already queued are signed with
// the key they were queued under or the new one; both are published.
func (p *Pool) SetKey(key Key) error {
	p.mu.Lock()
	select {
	case <-p.closed:
		p.mu.Unlock()
		return ledger.ErrClosed
	default:
	}
	done := make(chan error, len(p.workers))
	for _, w := range p.workers {
		w.jobs <- job{rekey: &key, done: done}
	}
	p.mu.Unlock()
	var errs []error
	for range p.workers {
		errs = append(errs, <-done)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("psdm: set key %d: %w", key.CertSerial, err)
	}
	p.key.Store(&key)
	p.log.Info("signing with a new key", "cert_serial", key.CertSerial)
	return nil
}

// Close stops the workers after their current job, releases the leases and
// closes the sessions.
func (p *Pool) Close() {
	select {
	case <-p.closed:
		return
	default:
	}
	p.mu.Lock()
	close(p.closed)
	for _, w := range p.workers {
		close(w.jobs) // no Sell can send now
	}
	p.mu.Unlock()
	p.wg.Wait()
	var serials []uint32
	for _, w := range p.workers {
		for _, s := range w.slots {
			serials = append(serials, s.committed.Serial)
		}
		w.sess.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.book.Release(ctx, serials); err != nil {
		p.log.Warn("leases not released; they expire on their own", "err", err)
	}
}

// renewLoop keeps the leases alive and learns of MPSDs that were locked
// or reported meanwhile.
func (p *Pool) renewLoop() {
	t := time.NewTicker(p.cfg.RenewEvery)
	defer t.Stop()
	for {
		select {
		case <-p.closed:
			return
		case <-t.C:
		}
		var serials []uint32
		for _, w := range p.workers {
			w.mu.Lock()
			for _, s := range w.slots {
				serials = append(serials, s.committed.Serial)
			}
			w.mu.Unlock()
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.RenewEvery)
		states, err := p.book.Renew(ctx, serials)
		cancel()
		if err != nil {
			p.log.Error("lease renewal failed", "err", err)
			continue
		}
		for _, w := range p.workers {
			w.apply(states)
		}
	}
}

// RenewNow renews immediately; tests use it with a fake clock.
func (p *Pool) RenewNow(ctx context.Context) error {
	var serials []uint32
	for _, w := range p.workers {
		w.mu.Lock()
		for _, s := range w.slots {
			serials = append(serials, s.committed.Serial)
		}
		w.mu.Unlock()
	}
	states, err := p.book.Renew(ctx, serials)
	if err != nil {
		return err
	}
	for _, w := range p.workers {
		w.apply(states)
	}
	return nil
}

type job struct {
	ticket *ledger.Ticket
	sale   *ledger.Sale
	items  []int
	rekey  *Key       // instead: sign from now on with this key
	done   chan error // the rekey's outcome
}

// slot is an MPSD a worker holds: its registers as committed, and as the
// last stamp issued on it left them.
type slot struct {
	committed ledger.Slot
	head      ledger.Slot
	gen       uint64 // bumped when the chain breaks and head goes back
	inflight  int
	dead      string // lost lease or locked: never used again
}

type worker struct {
	id      int
	pool    *Pool
	sess    Session
	signer  crypto.Signer
	key     Key
	log     *slog.Logger
	jobs    chan job
	started time.Time
	turn    int // round-robin over the worker's MPSDs

	mu     sync.Mutex
	slots  []*slot
	total  int64
	window [10]int64 // indicia per second, ring by unix second
	winAt  [10]int64
}

func (w *worker) run() {
	for j := range w.jobs {
		if j.rekey != nil {
			// On the worker's own goroutine: its HSM session is not shared.
			signer, err := w.sess.Signer(j.rekey.Label)
			if err == nil {
				w.signer, w.key = signer, *j.rekey
			}
			j.done <- err
			continue
		}
		for _, i := range j.items {
			w.pool.book.Submit(w.issue(j.ticket, j.sale, i))
		}
	}
}

// issue signs one stamp on the next of the worker's MPSDs, or returns a
// part that says why it could not.
func (w *worker) issue(t *ledger.Ticket, s *ledger.Sale, i int) *ledger.Part {
	b := w.pool.book
	cfg := b.Config()
	it := s.Items[i]
	part := &ledger.Part{Ticket: t, Index: i}
	sl, err := w.slot()
	if err != nil {
		part.Err = err
		return part
	}
	w.mu.Lock()
	base, gen := sl.head, sl.gen
	w.mu.Unlock()
	if err := b.MaySell(base.ReportedAt); err != nil {
		part.Err = err
		return part
	}
	funding := b.FundingFor(base.DR, it.Postage)
	if funding > 0 {
		if err := b.Reserve(context.Background(), funding); err != nil {
			part.Err = err
			return part
		}
	}
	in := protocol.Indicium{CertSerial: w.key.CertSerial, Vendor: cfg.Vendor, Model: cfg.Model, MPSDSerial: base.Serial,
		AR: base.AR + it.Postage, Postage: it.Postage, Date: protocol.DateOf(cfg.Now()), OriginZIP: s.OriginZIP,
		UserID: s.UserID, SoftwareID: cfg.SoftwareID, Label: it.Label, DR: base.DR + funding - it.Postage, RateCategory: it.RateClass}
	if err := in.Sign(w.signer); err != nil {
		b.Unreserve(funding)
		part.Err = fmt.Errorf("psdm: worker %d: %w", w.id, err)
		return part
	}
	data, err := in.MarshalBinary()
	if err != nil {
		b.Unreserve(funding)
		part.Err = protocol.Errorf(protocol.CodeInternal, "registers of mpsd %d out of range: %v", base.Serial, err)
		return part
	}
	*part = ledger.Part{Ticket: t, Index: i, Serial: base.Serial, Gen: gen, Base: base, Funding: funding,
		AR: in.AR, DR: in.DR, CertSerial: w.key.CertSerial, MeterNumber: in.MeterNumber(), Indicium: data}
	part.Done = w.doneFunc(sl, part)
	w.mu.Lock()
	sl.head = ledger.Slot{Serial: base.Serial, AR: in.AR, DR: in.DR, ReportedAt: base.ReportedAt}
	sl.inflight++
	w.mu.Unlock()
	w.count(1)
	return part
}

// slot picks the next live MPSD, leasing one if none is left.
func (w *worker) slot() (*slot, error) {
	w.mu.Lock()
	live := w.slots[:0]
	for _, s := range w.slots {
		if s.dead == "" || s.inflight > 0 {
			live = append(live, s)
		}
	}
	w.slots = live
	var usable []*slot
	for _, s := range w.slots {
		if s.dead == "" {
			usable = append(usable, s)
		}
	}
	w.mu.Unlock()
	if len(usable) == 0 {
		ss, err := w.pool.book.Lease(context.Background(), 1)
		if err != nil || len(ss) == 0 {
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no postal security device is available: %v", err)
		}
		s := &slot{committed: ss[0], head: ss[0]}
		w.mu.Lock()
		w.slots = append(w.slots, s)
		w.mu.Unlock()
		return s, nil
	}
	w.turn++
	return usable[w.turn%len(usable)], nil
}

// doneFunc is a part's callback from the committer.
func (w *worker) doneFunc(s *slot, p *ledger.Part) func(bool) {
	return func(committed bool) {
		w.mu.Lock()
		defer w.mu.Unlock()
		s.inflight--
		switch {
		case committed:
			s.committed.AR, s.committed.DR = p.AR, p.DR
		case p.Gen == s.gen:
			// The chain broke here: issue again from what is committed.
			s.gen++
			s.head = s.committed
			s.head.ReportedAt = p.Base.ReportedAt
		}
	}
}

func (w *worker) apply(states map[uint32]ledger.LeaseState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.slots {
		st, ok := states[s.committed.Serial]
		if !ok {
			continue
		}
		s.committed.ReportedAt, s.head.ReportedAt = st.ReportedAt, st.ReportedAt
		switch {
		case st.Locked != "":
			s.dead = "locked: " + st.Locked
		case !st.Held:
			s.dead = "lease lost"
		}
		if s.dead != "" {
			w.log.Warn("mpsd out of service", "mpsd", s.committed.Serial, "why", s.dead)
		}
	}
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
	st := Status{Worker: w.id, UptimeS: int64(time.Since(w.started).Seconds()),
		Throughput: float64(recent) / float64(len(w.window)), Total: w.total, MPSDs: []uint32{}}
	for _, s := range w.slots {
		if s.dead == "" {
			st.Load++
			st.MPSDs = append(st.MPSDs, s.committed.Serial)
		}
		st.InFlight += s.inflight
	}
	return st
}

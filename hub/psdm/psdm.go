// Package psdm runs the postal security device module workers of the
// patent (Fig. 7). Each worker owns one HSM session and checks out up to
// eight MPSDs through leases; it issues indicia against the registers it
// holds, one sale per MPSD at a time, and the ledger commits them. The pool
// hands stamps to the workers round-robin (claims 7-9) and reports each
// worker's status as the patent's GetStatus does.
package psdm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"sort"
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
	Abandon(recs []*ledger.Record)
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
	MPSDsPerWorker int           // 1 to 8; default 2
	RenewEvery     time.Duration // lease renewal; default a third of the lease TTL
}

// Status is one worker's GetStatus.
type Status struct {
	Worker     int      `json:"worker"`
	UptimeS    int64    `json:"uptime_s"`
	Throughput float64  `json:"throughput_per_s"` // indicia per second over the last 10 s
	Load       int      `json:"load"`             // MPSDs checked out
	Busy       int      `json:"busy"`             // MPSDs with a sale in flight
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
	next    atomic.Uint64
	closed  chan struct{}
	wg      sync.WaitGroup
}

// Start opens one HSM session per worker, leases each worker's MPSDs, and
// starts the workers and the lease renewal.
func Start(ctx context.Context, cfg Config, open func() (Session, error), key Key, b book, log *slog.Logger) (*Pool, error) {
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.MPSDsPerWorker == 0 {
		cfg.MPSDsPerWorker = 2
	}
	if cfg.Workers < 1 || cfg.MPSDsPerWorker < 1 || cfg.MPSDsPerWorker > 8 {
		return nil, fmt.Errorf("psdm: start: %d workers with %d MPSDs each; want at least 1 worker and 1 to 8 MPSDs", cfg.Workers, cfg.MPSDsPerWorker)
	}
	if cfg.RenewEvery == 0 {
		cfg.RenewEvery = b.Config().LeaseTTL / 3
	}
	p := &Pool{cfg: cfg, book: b, log: log, closed: make(chan struct{})}
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
		jobs: make(chan job), started: time.Now()}
	w.cond = sync.NewCond(&w.mu)
	slots, err := p.book.Lease(ctx, p.cfg.MPSDsPerWorker)
	if err != nil {
		sess.Close()
		return nil, err
	}
	for _, s := range slots {
		w.slots = append(w.slots, &slot{Slot: s})
	}
	p.wg.Go(w.run)
	return w, nil
}

// Issue signs the sale's stamps and returns the records for the ledger to
// commit. Stamps go to the workers round-robin; a sale visits the workers
// in ascending order, holding at most one MPSD on each, so two sales never
// wait on each other.
func (p *Pool) Issue(ctx context.Context, s *ledger.Sale) ([]*ledger.Record, error) {
	byWorker := map[int][]int{} // worker -> item indexes
	for i := range s.Items {
		w := int((p.next.Add(1) - 1) % uint64(len(p.workers)))
		byWorker[w] = append(byWorker[w], i)
	}
	order := make([]int, 0, len(byWorker))
	for w := range byWorker {
		order = append(order, w)
	}
	sort.Ints(order)
	recs := make([]*ledger.Record, len(s.Items))
	var issued []*ledger.Record
	for _, wi := range order {
		j := job{ctx: ctx, sale: s, items: byWorker[wi], reply: make(chan result, 1)}
		select {
		case p.workers[wi].jobs <- j:
		case <-p.closed:
			p.book.Abandon(issued)
			return nil, ErrClosed
		case <-ctx.Done():
			p.book.Abandon(issued)
			return nil, ctx.Err()
		}
		r := <-j.reply // a worker answers every job it takes
		if r.err != nil {
			p.book.Abandon(issued)
			return nil, r.err
		}
		for k, idx := range byWorker[wi] {
			recs[idx] = r.recs[k]
		}
		issued = append(issued, r.recs...)
	}
	return recs, nil
}

// Status reports every worker.
func (p *Pool) Status() []Status {
	out := make([]Status, 0, len(p.workers))
	for _, w := range p.workers {
		out = append(out, w.status())
	}
	return out
}

// Close stops the workers after their current job, releases the leases and
// closes the sessions.
func (p *Pool) Close() {
	select {
	case <-p.closed:
		return
	default:
	}
	close(p.closed)
	for _, w := range p.workers {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	}
	p.wg.Wait()
	var serials []uint32
	for _, w := range p.workers {
		for _, s := range w.slots {
			serials = append(serials, s.Serial)
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
				serials = append(serials, s.Serial)
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
			serials = append(serials, s.Serial)
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
	ctx   context.Context
	sale  *ledger.Sale
	items []int
	reply chan result
}

type result struct {
	recs []*ledger.Record
	err  error
}

// slot is an MPSD a worker holds.
type slot struct {
	ledger.Slot        // committed registers
	busy        int    // records in flight
	dead        string // lost lease or locked: never used again
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

	mu     sync.Mutex
	cond   *sync.Cond
	slots  []*slot
	total  int64
	window [10]int64 // indicia per second, ring by unix second
	winAt  [10]int64
}

func (w *worker) run() {
	for {
		select {
		case <-w.pool.closed:
			return
		case j := <-w.jobs:
			recs, err := w.issue(j.ctx, j.sale, j.items)
			j.reply <- result{recs, err}
		}
	}
}

// issue signs the given items of a sale on one of the worker's MPSDs.
func (w *worker) issue(ctx context.Context, s *ledger.Sale, items []int) ([]*ledger.Record, error) {
	sl, err := w.takeSlot(ctx)
	if err != nil {
		return nil, err
	}
	b := w.pool.book
	cfg := b.Config()
	base := sl.Slot
	date := protocol.DateOf(cfg.Now())
	var recs []*ledger.Record
	defer w.release(sl) // the claim; each record holds the slot on its own
	fail := func(err error) ([]*ledger.Record, error) {
		b.Abandon(recs)
		return nil, err
	}
	if err := b.MaySell(sl.ReportedAt); err != nil {
		return fail(err)
	}
	for _, i := range items {
		it := s.Items[i]
		funding := b.FundingFor(base.DR, it.Postage)
		if funding > 0 {
			if err := b.Reserve(ctx, funding); err != nil {
				return fail(err)
			}
		}
		rec := &ledger.Record{Serial: sl.Serial, Base: base, Funding: funding, Item: it,
			AR: base.AR + it.Postage, DR: base.DR + funding - it.Postage, CertSerial: w.key.CertSerial}
		rec.Done = w.doneFunc(sl, rec)
		in := protocol.Indicium{CertSerial: w.key.CertSerial, Vendor: cfg.Vendor, Model: cfg.Model, MPSDSerial: sl.Serial,
			AR: rec.AR, Postage: it.Postage, Date: date, OriginZIP: s.OriginZIP, UserID: s.UserID,
			SoftwareID: cfg.SoftwareID, Label: it.Label, DR: rec.DR, RateCategory: it.RateClass}
		if err := in.Sign(w.signer); err != nil {
			b.Abandon([]*ledger.Record{{Funding: funding}})
			return fail(fmt.Errorf("psdm: worker %d: %w", w.id, err))
		}
		data, err := in.MarshalBinary()
		if err != nil {
			b.Abandon([]*ledger.Record{{Funding: funding}})
			return fail(protocol.Errorf(protocol.CodeInternal, "registers of mpsd %d out of range: %v", sl.Serial, err))
		}
		rec.Indicium, rec.MeterNumber = data, in.MeterNumber()
		w.hold(sl)
		recs = append(recs, rec)
		base = ledger.Slot{Serial: sl.Serial, AR: rec.AR, DR: rec.DR, ReportedAt: base.ReportedAt}
	}
	w.count(int64(len(recs)))
	return recs, nil
}

// takeSlot waits for an MPSD with no sale in flight, leasing a new one if
// all the worker's MPSDs are gone.
func (w *worker) takeSlot(ctx context.Context) (*slot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		select {
		case <-w.pool.closed:
			return nil, ErrClosed
		default:
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		live := w.slots[:0]
		for _, s := range w.slots {
			if s.dead == "" || s.busy > 0 {
				live = append(live, s)
			}
		}
		w.slots = live
		for _, s := range w.slots {
			if s.dead == "" && s.busy == 0 {
				s.busy = 1 // the claim, released when issue returns
				return s, nil
			}
		}
		if len(w.slots) < w.pool.cfg.MPSDsPerWorker {
			w.mu.Unlock()
			ss, err := w.pool.book.Lease(ctx, 1)
			w.mu.Lock()
			if err != nil {
				return nil, err
			}
			for _, s := range ss {
				w.slots = append(w.slots, &slot{Slot: s})
			}
			continue
		}
		w.cond.Wait()
	}
}

// hold counts one more record in flight on s.
func (w *worker) hold(s *slot) {
	w.mu.Lock()
	s.busy++
	w.mu.Unlock()
}

// release drops one hold on s: a claim, or a record's.
func (w *worker) release(s *slot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s.busy--
	if s.busy == 0 {
		w.cond.Broadcast()
	}
}

// doneFunc is a record's callback from the ledger: on commit the slot's
// registers move to the record's; either way the record's hold ends.
func (w *worker) doneFunc(s *slot, rec *ledger.Record) func(bool) {
	return func(ok bool) {
		if ok {
			w.mu.Lock()
			s.AR, s.DR = rec.AR, rec.DR
			w.mu.Unlock()
		}
		w.release(s)
	}
}

func (w *worker) apply(states map[uint32]ledger.LeaseState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.slots {
		st, ok := states[s.Serial]
		if !ok {
			continue
		}
		s.ReportedAt = st.ReportedAt
		switch {
		case st.Locked != "":
			s.dead = "locked: " + st.Locked
		case !st.Held:
			s.dead = "lease lost"
		}
		if s.dead != "" {
			w.log.Warn("mpsd out of service", "mpsd", s.Serial, "why", s.dead)
		}
	}
	w.cond.Broadcast()
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
			st.MPSDs = append(st.MPSDs, s.Serial)
			if s.busy > 0 {
				st.Busy++
			}
		}
	}
	return st
}
